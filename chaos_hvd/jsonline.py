"""JSON-line requests over Unix stream sockets: the local control protocol of agents and testbed.

One JSON object per line each way, then the server closes. Requests and replies are bounded in
size and nesting depth; a request that breaks a bound, or is not a JSON object, is answered with
the error envelope ``{"ok": false, "error": "..."}`` and never reaches a handler. Successful
replies carry ``"ok": true``. Nothing is ever unpickled. Used by the cluster agent's local API
(asyncio server), ``chaos-hvd discover/status/leave/observe``, and ``chaos-testbed
inject/show/down``.
"""

from __future__ import annotations

import json
import re
import socket

import msgspec

from .errors import RequestError, ServiceUnavailable

MAX_LINE_BYTES = 64 * 1024
MAX_REPLY_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32
_decode = msgspec.json.Decoder().decode


_INNERMOST = re.compile(rb"[\[{][\]}]")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def text_depth(text: bytes, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of valid JSON text, counting no further than limit + 1: strings dropped,
    then only brackets kept, then innermost pairs removed a layer per pass. A few C-level passes
    instead of a walk over every value (the agents check one message per datagram).

    Strings go without a regex: in valid JSON every backslash starts an escape, so dropping the
    escaped backslashes (left to right), then the escaped quotes, leaves no quote inside a
    string, and the text outside strings is every other piece between quotes."""
    unescaped = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    rest = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    layers = 0
    while rest and layers <= limit:
        rest = _INNERMOST.sub(b"", rest)
        layers += 1
    return layers


def decode(line: bytes, limit: int = MAX_LINE_BYTES,
           error: type[Exception] = RequestError) -> dict:
    """Untrusted bytes -> a JSON object (dict); `error` when they are too long, not JSON, nested
    deeper than MAX_DEPTH or not an object. Every network-facing JSON parser uses this one."""
    if len(line) > limit:
        raise error(f"longer than {limit} bytes")
    try:
        # msgspec: strict JSON (NaN, Infinity and out-of-range numbers are not JSON), UTF-8
        # only, and several times faster than json.loads on every datagram the agents get
        obj = _decode(line)
    except msgspec.DecodeError as e:
        raise error(f"not JSON: {e}") from None
    except RecursionError:
        raise error(f"nested deeper than {MAX_DEPTH}") from None
    if not isinstance(obj, dict):
        raise error("not a JSON object")
    raw = line.encode() if isinstance(line, str) else line
    # no deeper than its brackets count, so most messages skip the exact measure
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and text_depth(raw) > MAX_DEPTH:
        raise error(f"nested deeper than {MAX_DEPTH}")
    return obj


def encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


def ok(**fields) -> dict:
    return {"ok": True, **fields}


def error(message: str) -> dict:
    return {"ok": False, "error": message}


def request(path: str, req: dict, timeout_s: float = 2.0,
            unavailable: type[ServiceUnavailable] = ServiceUnavailable) -> dict:
    """Send one request to the server at `path` and return its reply.

    `unavailable` (a ServiceUnavailable subclass) is raised when nobody answers, the reply is
    malformed, or the reply is the error envelope.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(path)
            s.sendall(encode(req))
            buf = bytearray()
            while not buf.endswith(b"\n") and len(buf) <= MAX_REPLY_BYTES:
                data = s.recv(1 << 16)
                if not data:
                    break
                buf += data
    except OSError as e:
        raise unavailable(f"{path}: {e}") from e
    try:
        reply = decode(bytes(buf), MAX_REPLY_BYTES)
    except RequestError as e:
        raise unavailable(f"{path}: bad reply: {e}") from None
    if reply.get("ok") is False or "error" in reply:
        raise unavailable(f"{path}: {reply.get('error')}")
    return reply
