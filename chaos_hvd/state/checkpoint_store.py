"""Where the ``checkpoint`` strategy keeps its checkpoint: a directory or an HTTP storage host.

``CHAOS_CHECKPOINT_DIR`` is either a path (local disk, or a shared mount such as NFS) or an
``http://host:port/prefix/`` URL of a storage host that accepts ``PUT``, ``GET`` and ``DELETE`` of
flat names (the testbed's ``storage`` nodes run one: ``testbed/storage.py``). Over HTTP the
checkpoint crosses the network like the Pollux / Autoscaling-style restore it stands for.

The store is not trusted: a reader checks the manifest against the digest every rank agreed on
and every chunk against the manifest (``Snapshot.from_manifest``), so a tampered or stale file
is refused, never loaded. Sizes are bounded before anything is allocated.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.parse
from typing import Protocol

from ..errors import ConfigError, TransferError
from ..files import NotAFile, read_regular

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BLOCK = 1 << 20


class CheckpointStore(Protocol):
    def put(self, name: str, data: memoryview | bytes) -> None: ...
    def read_into(self, name: str, buffer: memoryview) -> None: ...
    def read_small(self, name: str, limit: int) -> bytes: ...
    def delete(self, name: str) -> None: ...


def open_store(location: str, timeout_s: float) -> CheckpointStore:
    """A directory path or an ``http://`` URL (ConfigError for anything else)."""
    if "://" not in location:
        return DirectoryStore(location)
    url = urllib.parse.urlsplit(location)
    if url.scheme != "http":
        raise ConfigError(f"checkpoint store {location!r}: only http:// URLs or paths are supported")
    try:
        port = url.port or 80
    except ValueError as e:
        raise ConfigError(f"checkpoint store {location!r}: {e}") from None
    if not url.hostname or url.query or url.fragment:
        raise ConfigError(f"checkpoint store {location!r}: expected http://host:port/prefix/")
    return HttpStore(url.hostname, port, url.path.rstrip("/"), timeout_s)


def _check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(f"not a checkpoint name: {name!r}")
    return name


class DirectoryStore:
    """Files in a directory, each written to a temporary name, fsynced, then renamed."""

    def __init__(self, path: str):
        self.path = path

    def _path(self, name: str) -> str:
        return os.path.join(self.path, _check_name(name))

    def put(self, name, data) -> None:
        path = self._path(name)
        try:
            os.makedirs(self.path, exist_ok=True)
            with open(path + ".tmp", "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(path + ".tmp", path)
        except OSError as e:
            raise TransferError(f"checkpoint {path}: {e}") from e

    def read_into(self, name, buffer) -> None:
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size != len(buffer):
                    raise TransferError(f"checkpoint {path}: size differs from its manifest")
                f.readinto(buffer)
        except OSError as e:
            raise TransferError(f"checkpoint {path}: {e}") from e

    def read_small(self, name, limit) -> bytes:
        path = self._path(name)
        try:
            return read_regular(path, limit)
        except (OSError, NotAFile) as e:
            raise TransferError(f"checkpoint {path}: {e}") from e

    def delete(self, name) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise TransferError(f"checkpoint {self._path(name)}: {e}") from e


def _early_refusal(conn: http.client.HTTPConnection) -> str | None:
    """The status a server sent before it stopped reading our body (e.g. 413), if one arrived."""
    if conn.sock is None:          # never connected
        return None
    try:
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException):
        return None
    return f"HTTP {resp.status} {resp.reason[:80]}"


class HttpStore:
    """One HTTP/1.1 request per call (no keep-alive: a checkpoint is a few large requests)."""

    def __init__(self, host: str, port: int, prefix: str, timeout_s: float):
        self.host, self.port, self.prefix, self.timeout_s = host, port, prefix, timeout_s

    def __repr__(self) -> str:   # the prefix can be a capability: never logged
        return f"HttpStore({self.host}:{self.port})"

    def _request(self, method: str, name: str, body=None) -> tuple[http.client.HTTPResponse,
                                                                   http.client.HTTPConnection]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        path = f"{self.prefix}/{_check_name(name)}"
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            conn.putheader("Content-Length", str(len(body) if body is not None else 0))
            conn.endheaders()
            if body is not None:
                view = memoryview(body).cast("B")
                for i in range(0, len(view), _BLOCK):
                    conn.send(view[i:i + _BLOCK])
            return conn.getresponse(), conn
        except (OSError, http.client.HTTPException) as e:
            why = _early_refusal(conn) or repr(e)
            conn.close()
            raise TransferError(f"checkpoint store {self.host}:{self.port} {method} {name}: "
                                f"{why}") from e

    def _expect(self, resp, conn, method, name, ok: tuple[int, ...]) -> None:
        if resp.status not in ok:
            conn.close()
            raise TransferError(f"checkpoint store {self.host}:{self.port} {method} {name}: "
                                f"HTTP {resp.status} {resp.reason[:80]}")

    def put(self, name, data) -> None:
        resp, conn = self._request("PUT", name, data)
        try:
            self._expect(resp, conn, "PUT", name, (200, 201, 204))
        finally:
            conn.close()

    def _get(self, name: str, limit: int):
        resp, conn = self._request("GET", name)
        self._expect(resp, conn, "GET", name, (200,))
        length = resp.getheader("Content-Length", "")
        if not length.isdigit() or int(length) > limit:
            conn.close()
            raise TransferError(f"checkpoint store {self.host}:{self.port} GET {name}: "
                                f"length {length[:20]!r} missing or over {limit} bytes")
        return resp, conn, int(length)

    def read_into(self, name, buffer) -> None:
        resp, conn, length = self._get(name, len(buffer))
        try:
            if length != len(buffer):
                raise TransferError(f"checkpoint store GET {name}: {length} bytes, "
                                    f"expected {len(buffer)}")
            got = 0
            view = memoryview(buffer).cast("B")
            while got < length:
                n = resp.readinto(view[got:got + _BLOCK])
                if not n:
                    raise TransferError(f"checkpoint store GET {name}: closed after {got} bytes")
                got += n
        except (OSError, http.client.HTTPException) as e:
            raise TransferError(f"checkpoint store GET {name}: {e!r}") from e
        finally:
            conn.close()

    def read_small(self, name, limit) -> bytes:
        resp, conn, length = self._get(name, limit)
        try:
            data = resp.read(length)
        except (OSError, http.client.HTTPException) as e:
            raise TransferError(f"checkpoint store GET {name}: {e!r}") from e
        finally:
            conn.close()
        if len(data) != length:
            raise TransferError(f"checkpoint store GET {name}: short body")
        return data

    def delete(self, name) -> None:
        resp, conn = self._request("DELETE", name)
        try:
            self._expect(resp, conn, "DELETE", name, (200, 204, 404))
        finally:
            conn.close()
