"""What a standby joiner, the running workers and the ``chaos-hvdrun`` launcher tell each other.

Pure: no I/O, no Horovod. The messages travel over Horovod's own rendezvous HTTP server (the
launcher serves a few extra scopes on it), which anyone on the network can reach, so every message
is signed with the job secret (``CHAOS_JOB_SECRET``, made by the launcher and given to every
worker) and decoded through the one bounded JSON parser. Shard data itself is never in these
messages: a record only says where a worker serves which committed version (its chunk digests),
and the joiner checks every chunk it pulls against them.

Scopes (``/scope/key`` on the rendezvous server):

``chaos_source/<rank>``     PUT by a running worker: :class:`SourceRecord` of the committed snapshot
                            it serves to standbys.
``chaos_sources/all``       GET by a standby: every current source record and the world size.
``chaos_wanted/all``        GET by a running worker: 200 while a standby is starting (offer a
                            snapshot and publish its record), 404 otherwise.
``chaos_ready/<host>:<slot>``   PUT by a standby once it holds a recent state.
``chaos_switch/<host>:<slot>``  GET by a standby: verdict ``switch`` once the running workers
                            reset to take it in, ``drop`` if the launcher gave up on it; 404 while
                            it should wait.
``chaos_world/<nonce>``     GET by a worker while its new world forms and syncs: the slots of the
                            world the launcher assigned last whose process has exited since
                            (:func:`encode_world_status`). A worker waiting for such a member
                            would wait for Gloo's timeout; it aborts its world instead.

Each message is a msgspec struct here (:class:`SourceRecord`, :class:`Ready`, :class:`Verdict`,
:class:`WorldStatus`): its fields, types and ranges are its schema, and one strict conversion
checks a message after its MAC, as the event records are checked.

Ready messages and verdicts name the standby's instance (``CHAOS_STANDBY_ID``, new for every
standby process), so one recorded for an earlier standby of the same slot means nothing later.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from .. import jsonline, signing
from ..errors import MalformedMessage, OversizedMessage, PeerMessageError
from ..rules import RuleError, check_host, parse_int

SECRET_ENV = "CHAOS_JOB_SECRET"
SLOT_ENV = "CHAOS_STANDBY_SLOT"          # set on a standby: its future local rank
MAIN_PORT_ENV = "CHAOS_MAIN_RENDEZVOUS_PORT"   # set on a standby: the job's rendezvous port
ID_ENV = "CHAOS_STANDBY_ID"              # set on a standby: this standby process's instance
SOURCE, SOURCES, READY, SWITCH = "chaos_source", "chaos_sources", "chaos_ready", "chaos_switch"
WANTED, WORLD = "chaos_wanted", "chaos_world"
GET_SCOPES = (SOURCES, SWITCH, WANTED, WORLD)   # what the launcher answers
PUT_SCOPES = (SOURCE, READY)            # what it accepts
MAX_RECORD_BYTES = 4 * 1024 * 1024
MAX_RECORDS = 4096
MAX_CHUNKS = 1 << 20


def secret_from_hex(text: str | None) -> bytes | None:
    """The job secret from its hex form; None when absent. Too short or not hex: None too (the
    launcher always makes 32 bytes, so anything else was not made by it)."""
    if not text:
        return None
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        return None
    return key if len(key) >= 16 else None


def standby_token(secret: bytes) -> bytes:
    """The token standbys sign shard requests with (derived, so it never travels)."""
    return hmac.digest(secret, b"chaos-hvd standby shard token", hashlib.sha256)


def _check_name(value, what: str) -> str:
    """A host name or IPv4 address, by the one rule (:func:`chaos_hvd.rules.check_host`)."""
    try:
        if not isinstance(value, str) or value != value.strip():
            raise RuleError("not a host name")
        return check_host(value, what)
    except RuleError:
        raise MalformedMessage(f"{what}: not a host name: {str(value)[:80]!r}") from None


def _check_int(value, what: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise MalformedMessage(f"{what}: not an integer in {lo}..{hi}: {value!r}")
    return value


Slot = tuple[str, int]   # (host, local rank): one worker slot of the job


def slot_key(host: str, slot: int) -> str:
    return f"{_check_name(host, 'host')}:{_check_int(slot, 'slot', 0, 4095)}"


def parse_slot_key(key: str) -> Slot:
    host, sep, slot = key.rpartition(":")
    try:
        if not sep:
            raise RuleError("no ':'")
        return _check_name(host, "host"), parse_int(slot, "slot", 0, 4095)
    except RuleError as e:
        raise MalformedMessage(f"not host:slot: {key[:80]!r} ({e})") from None


# Every message is a msgspec struct: field names, types and ranges are its schema, checked by
# one conversion (`_typed`) after the MAC; host names go through the one rule on top.
Digest = Annotated[str, msgspec.Meta(max_length=128)]
Version = Annotated[int, msgspec.Meta(ge=0, le=1 << 62)]
SlotIndex = Annotated[int, msgspec.Meta(ge=0, le=4095)]
Instance = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class SourceRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where one running worker serves its committed snapshot to standbys."""

    rank: Annotated[int, msgspec.Meta(ge=0, le=1 << 20)]
    host: str       # Horovod's host name (bandwidth figures are keyed by it)
    addr: str       # where its shard server listens
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    version: Version
    digest: Digest
    size_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 50)]
    chunk_bytes: Annotated[int, msgspec.Meta(ge=1, le=1 << 40)]
    chunks: Annotated[tuple[Digest, ...], msgspec.Meta(max_length=MAX_CHUNKS)]

    def check(self) -> "SourceRecord":
        _check_name(self.host, "host")
        _check_name(self.addr, "addr")
        if len(self.chunks) != -(-self.size_bytes // self.chunk_bytes):
            raise MalformedMessage("chunks: count differs from size / chunk size")
        return self


class Ready(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str
    slot: SlotIndex
    instance: Instance
    version: Version


class Verdict(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str
    slot: SlotIndex
    instance: Instance
    verdict: Literal["switch", "drop"]


class WorldStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    nonce: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}$")]
    dead: Annotated[list[str], msgspec.Meta(max_length=MAX_RECORDS)]


class _SourceListDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    world: Annotated[int, msgspec.Meta(ge=0, le=MAX_RECORDS)]
    records: Annotated[list, msgspec.Meta(max_length=MAX_RECORDS)]


def _typed(cls, fields):
    """Fields (authenticated, decoded by the bounded parser) -> the struct, or MalformedMessage."""
    try:
        return msgspec.convert(fields, cls, strict=True)
    except msgspec.ValidationError as e:
        raise MalformedMessage(f"not a {cls.__name__.lstrip('_')}: {e}") from None


def _fields(message: msgspec.Struct) -> dict:
    return msgspec.to_builtins(message)


def sign(secret: bytes, fields: dict) -> bytes:
    return jsonline.encode(signing.sign_fields(secret, fields)).rstrip(b"\n")


def open_signed(secret: bytes, data: bytes) -> dict:
    """Decode (bounded) and authenticate one message; the fields without the MAC."""
    if len(data) > MAX_RECORD_BYTES:
        raise OversizedMessage(f"message of {len(data)} bytes (at most {MAX_RECORD_BYTES})")
    msg = jsonline.decode(data, MAX_RECORD_BYTES, MalformedMessage)
    signing.check_fields(secret, msg)
    msg.pop("mac", None)
    return msg


def encode_source(secret: bytes, record: SourceRecord) -> bytes:
    fields = _fields(record)
    _typed(SourceRecord, fields).check()       # never sign what a standby would refuse
    return sign(secret, fields)


def decode_source(secret: bytes, data: bytes) -> SourceRecord:
    return _typed(SourceRecord, open_signed(secret, data)).check()


@dataclass(frozen=True)
class SourceList:
    records: list[SourceRecord]
    rejected: list[str]     # why each bad record was skipped
    world: int              # how many workers the job has now (all of them offer)


def encode_source_list(blobs: list[bytes], world: int) -> bytes:
    """The launcher's answer to ``chaos_sources/all``: the signed records as they came, and the
    current world size (so a standby knows how many offers to wait for)."""
    return msgspec.json.encode(_SourceListDoc(world, [b.decode() for b in blobs[:MAX_RECORDS]]))


def decode_source_list(secret: bytes, data: bytes) -> SourceList:
    """One forged or malformed record costs only itself."""
    if len(data) > MAX_RECORD_BYTES * 8:
        raise OversizedMessage(f"source list of {len(data)} bytes")
    try:
        doc = _typed(_SourceListDoc, jsonline.decode(data, MAX_RECORD_BYTES * 8, MalformedMessage))
    except MalformedMessage as e:
        raise MalformedMessage(f"source list: {e}") from None
    good, bad = [], []
    for item in doc.records:
        try:
            if not isinstance(item, str):
                raise MalformedMessage("not a string")
            good.append(decode_source(secret, item.encode()))
        except PeerMessageError as e:
            bad.append(str(e))
    return SourceList(good, bad, doc.world)


def best_version(records: list[SourceRecord]) -> list[SourceRecord]:
    """The records of the version most ranks offer (the newest among equals), one per rank:
    a standby pulls one consistent version from as many sources as possible."""
    by_version: dict[int, dict[int, SourceRecord]] = {}
    for r in records:
        by_version.setdefault(r.version, {})[r.rank] = r
    if not by_version:
        return []
    _, version = max((len(ranks), v) for v, ranks in by_version.items())
    chosen = by_version[version]
    return [chosen[k] for k in sorted(chosen)]


def encode_ready(secret: bytes, host: str, slot: int, instance: str, version: int) -> bytes:
    return sign(secret, _fields(Ready(host, slot, instance, version)))


def decode_ready(secret: bytes, key: str, data: bytes) -> tuple[str, int]:
    """(instance, version) a standby reports; its host and slot must be the key's."""
    host, slot = parse_slot_key(key)
    ready = _typed(Ready, open_signed(secret, data))
    if (ready.host, ready.slot) != (host, slot):
        raise MalformedMessage("ready message names another slot than its key")
    return ready.instance, ready.version


VERDICTS = ("switch", "drop")


def encode_verdict(secret: bytes, host: str, slot: int, instance: str, verdict: str) -> bytes:
    return sign(secret, _fields(Verdict(host, slot, instance, verdict)))


def decode_verdict(secret: bytes, host: str, slot: int, instance: str, data: bytes) -> str:
    got = _typed(Verdict, open_signed(secret, data))
    if (got.host, got.slot, got.instance) != (host, slot, instance):
        raise MalformedMessage("verdict for another standby")
    return got.verdict


NONCE_HEX = 32


def check_nonce(nonce: str) -> str:
    """A request nonce: 32 lower-case hex digits (the reply must echo it: no replayed reply)."""
    if not isinstance(nonce, str) or len(nonce) != NONCE_HEX \
            or any(c not in "0123456789abcdef" for c in nonce):
        raise MalformedMessage(f"not a nonce: {str(nonce)[:80]!r}")
    return nonce


def encode_world_status(secret: bytes, nonce: str, dead: list[tuple[str, int]]) -> bytes:
    """The launcher's answer to ``chaos_world/<nonce>``: slots of the current world whose
    process has exited, signed and bound to the asker's nonce."""
    return sign(secret, _fields(WorldStatus(
        check_nonce(nonce), [slot_key(h, s) for h, s in sorted(dead)[:MAX_RECORDS]])))


def decode_world_status(secret: bytes, nonce: str, data: bytes) -> list[tuple[str, int]]:
    status = _typed(WorldStatus, open_signed(secret, data))
    if status.nonce != nonce:
        raise MalformedMessage("world status for another request")
    return [parse_slot_key(k) for k in status.dead]
