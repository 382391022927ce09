"""Reading a file named from outside: a regular file only, never more than a limit.

A path may name ``/dev/zero`` (endless), a FIFO (an open that blocks until a writer comes), a
directory or a link loop: each is an error here, not a hang or exhausted memory. Callers turn the
error into their own typed one (a config, schedule, event-log or checkpoint error).
"""

from __future__ import annotations

import os
import stat


class NotAFile(ValueError):
    """The path is not a regular file, or is larger than the limit."""


def read_regular(path: str, limit: int) -> bytes:
    """The file's bytes. OSError when it cannot be opened (missing, a link loop, no access);
    NotAFile when it is not a regular file or holds more than `limit` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)   # a FIFO must not block the open
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotAFile("not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise NotAFile(f"larger than {limit} bytes")
    return data
