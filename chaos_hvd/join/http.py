"""A bounded HTTP client for the launcher's scopes on Horovod's rendezvous server.

Horovod's own client (``horovod.runner.http.http_client``) unpickles what it reads; this one only
moves bytes, with a timeout and a size limit, and turns every failure into
:class:`~chaos_hvd.errors.ServiceUnavailable`.
"""

from __future__ import annotations

import http.client

from ..errors import ServiceUnavailable
from .wire import MAX_RECORD_BYTES

TIMEOUT_S = 3.0


def _request(method: str, addr: str, port: int, scope: str, key: str, body: bytes | None,
             timeout_s: float, limit: int) -> bytes | None:
    conn = http.client.HTTPConnection(addr, port, timeout=timeout_s)
    try:
        conn.request(method, f"/{scope}/{key}", body=body,
                     headers={"Content-Length": str(len(body or b""))})
        resp = conn.getresponse()
        data = resp.read(limit + 1)
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise ServiceUnavailable(f"{method} /{scope}/{key}: HTTP {resp.status}")
        if len(data) > limit:
            raise ServiceUnavailable(f"{method} /{scope}/{key}: reply longer than {limit} bytes")
        return data
    except (OSError, http.client.HTTPException) as e:
        raise ServiceUnavailable(f"{method} /{scope}/{key} at {addr}:{port}: {e}") from None
    finally:
        conn.close()


def get(addr: str, port: int, scope: str, key: str, timeout_s: float = TIMEOUT_S,
        limit: int = MAX_RECORD_BYTES * 8) -> bytes | None:
    """The body, or None for 404."""
    return _request("GET", addr, port, scope, key, None, timeout_s, limit)


def put(addr: str, port: int, scope: str, key: str, body: bytes,
        timeout_s: float = TIMEOUT_S) -> None:
    _request("PUT", addr, port, scope, key, body, timeout_s, 1024)
