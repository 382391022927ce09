"""Event log: one JSON object per line, appended, with a monotonic and a wall-clock timestamp.

Experiments, CI suites and plots all read this one record. Lines are written with a single
``write`` on a file opened with O_APPEND, so ranks on one machine can share a file.
"""

from __future__ import annotations

import json
import os
import threading
import time


class EventLog:
    def __init__(self, path: str | None, **common):
        self.path = path
        self.common = common
        self._lock = threading.Lock()

    def write(self, event: str, **fields) -> dict:
        record = {"event": event, "t_mono": time.monotonic(), "t_unix": time.time(),
                  "pid": os.getpid(), **self.common, **fields}
        if self.path:
            line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
        return record


def read_events(path: str, event: str | None = None) -> list[dict]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rec = json.loads(line)
                if event is None or rec.get("event") == event:
                    out.append(rec)
    return out
