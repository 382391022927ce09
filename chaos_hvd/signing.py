"""HMAC-SHA256 over canonical JSON: the one way this project authenticates a message.

Used by the shard server (per-sync token, the MAC travels inside the JSON request) and the cluster
agents (cluster secret, the MAC precedes the raw payload). Canonical JSON = sorted keys, no
spaces, no NaN or infinity, so both ends hash the same bytes. A bad or missing MAC is always
:class:`~chaos_hvd.errors.ForgedMessage` (an :class:`~chaos_hvd.errors.AuthenticationError`).
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from .errors import ForgedMessage

MAC_BYTES = 32


def canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def mac(key: bytes, payload: bytes) -> bytes:
    return hmac.digest(key, payload, hashlib.sha256)


def check(key: bytes, payload: bytes, tag: object) -> None:
    """Raise ForgedMessage unless `tag` (bytes, or hex text) is the MAC of `payload`."""
    if isinstance(tag, str):
        try:
            tag = bytes.fromhex(tag) if tag.isascii() else None
        except ValueError:
            tag = None
    if not isinstance(tag, bytes) or not hmac.compare_digest(tag, mac(key, payload)):
        raise ForgedMessage("bad or missing MAC: not signed with the shared key, or altered")


def sign_fields(key: bytes, fields: dict) -> dict:
    """`fields` plus ``mac``: the hex MAC of the canonical JSON of `fields`."""
    return dict(fields, mac=mac(key, canonical(fields)).hex())


def check_fields(key: bytes, msg: dict) -> None:
    """The inverse of :func:`sign_fields`: raise ForgedMessage unless ``msg['mac']`` fits."""
    body = {k: v for k, v in msg.items() if k != "mac"}
    try:
        payload = canonical(body)
    except ValueError:   # NaN or infinity: nothing we signed
        raise ForgedMessage("message holds values no signer produces") from None
    check(key, payload, msg.get("mac"))
