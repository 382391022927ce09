"""The cluster agents' wire format: sealed JSON envelopes and the schema of every message. Pure.

One datagram carries one envelope::

    b"chv1" | HMAC-SHA256(secret, payload) (32 bytes) | payload
    payload = JSON {"src": ID, "dst": ID or [ID, ...], "seq": INT, "body": {"type": ..., ...}}

A fan-out (an accept or a commit to every member, the pings of a period) is sealed once with
the list of its receivers as ``dst`` and the same bytes go to each of them: one encoding and one
MAC instead of one per receiver, on the path of every view change.

The MAC covers the payload bytes exactly as sent, so the receiver checks it *before* parsing
anything: bytes from someone without the cluster secret never reach the JSON parser. Checks run
cheapest first and a failed one stops the rest:

1. size (``MAX_DATAGRAM`` bytes) -> ``OversizedMessage``; magic and length -> ``MalformedMessage``;
2. MAC -> ``ForgedMessage``;
3. JSON object with the envelope's fields and types -> ``MalformedMessage``; ``dst`` is not us
   and does not list us (an authentic message redirected) -> ``ForgedMessage``;
4. replay: ``seq`` is the sender's clock in nanoseconds, made strictly increasing; a receiver
   keeps the highest ``seq`` per sender and refuses anything not above it, or further than
   ``window_s`` from its own clock (a capture replayed after the receiver restarted) ->
   ``ReplayedMessage``;
5. the body's schema (types, id syntax, list lengths, index ranges) -> ``MalformedMessage``.

Only then does the protocol see the body, so a hostile or broken peer can make us drop its
message and log it, never raise inside the state machine or allocate without bound. Nothing is
ever unpickled: the only decoder is ``jsonline.decode`` (msgspec's strict JSON, bounded size and
depth). Stale-epoch checks need the current view and live in ``stale_reason``.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import msgspec

from .. import jsonline, signing
from ..errors import ForgedMessage, MalformedMessage, OversizedMessage, ReplayedMessage
from ..rules import RuleError, parse_node_id
from .kinds import Change, Msg

MAGIC = b"chv1"
_MAC_LEN = signing.MAC_BYTES
MAX_DATAGRAM = 60_000          # below the 65,507-byte UDP payload limit
MAX_MEMBERS = 1024
MAX_CHANGES = 4096
_INT_MAX = 2 ** 63
MAX_EPOCH = 2 ** 48
MAX_EPOCH_JUMP = 10 ** 6        # views a lagging node can plausibly have missed

PROTOCOL_TYPES = (Msg.HEARTBEAT, Msg.CHANGES, Msg.JOIN, Msg.PREPARE, Msg.PROMISE, Msg.ACCEPT,
                  Msg.ACCEPTED, Msg.COMMIT, Msg.NACK)
MAX_SLOTS = 1024               # worker slots one host may advertise
_ID_CHANGES = {Change.ADD: 2, Change.REMOVE: 2, Change.LEAVE: 2, Change.LINK_UP: 3,
               Change.LINK_DOWN: 3}


def seal_payload(secret: bytes, payload: bytes) -> bytes:
    return MAGIC + signing.mac(secret, payload) + payload


_encode = msgspec.json.Encoder().encode   # the MAC covers the bytes sent: no canonical form needed


def seal(secret: bytes, src: str, dst: str | Sequence[str], seq: int, body: dict) -> bytes:
    """One envelope for `dst`: a receiver id, or the list of every receiver of a fan-out."""
    to = dst if isinstance(dst, str) else list(dst)
    data = seal_payload(secret, _encode({"src": src, "dst": to, "seq": seq, "body": body}))
    if len(data) > MAX_DATAGRAM:
        raise OversizedMessage(f"{body.get('type')} to {str(to)[:80]} is {len(data)} bytes "
                               f"(limit {MAX_DATAGRAM})")
    return data


class ReplayGuard:
    """Highest sequence number seen per sender, plus a freshness window on the sender's clock."""

    def __init__(self, window_s: float = 30.0):
        self.window_ns = int(window_s * 1e9)
        self.last: dict[str, int] = {}

    def check(self, src: str, seq: int, now_ns: int) -> None:
        if abs(now_ns - seq) > self.window_ns:
            raise ReplayedMessage(f"from {src}: seq is {(now_ns - seq) / 1e9:+.1f} s from our "
                                  f"clock (window {self.window_ns / 1e9:.0f} s)")
        if seq <= self.last.get(src, -1):
            raise ReplayedMessage(f"from {src}: seq {seq} already seen (last {self.last[src]})")
        self.last[src] = seq


class SeqClock:
    """A sender's sequence numbers: wall-clock nanoseconds, strictly increasing, so a restarted
    agent starts above everything it sent before."""

    def __init__(self):
        self.last = 0

    def next(self, now_ns: int) -> int:
        self.last = max(self.last + 1, now_ns)
        return self.last


def open_envelope(secret: bytes, me: str, data: bytes, guard: ReplayGuard,
                  now_ns: int) -> tuple[str, dict]:
    """(sender, body) of an authentic, fresh, well-formed datagram; else a PeerMessageError."""
    if len(data) > MAX_DATAGRAM:
        raise OversizedMessage(f"{len(data)}-byte datagram (limit {MAX_DATAGRAM})")
    head = len(MAGIC) + _MAC_LEN
    if len(data) <= head or not data.startswith(MAGIC):
        raise MalformedMessage("not a chaos-hvd agent datagram (magic)")
    mac, payload = data[len(MAGIC):head], data[head:]
    signing.check(secret, payload, mac)
    env = jsonline.decode(payload, MAX_DATAGRAM, MalformedMessage)
    if set(env) != {"src", "dst", "seq", "body"}:
        raise MalformedMessage("not an envelope {src, dst, seq, body}")
    src, dst = env["src"], env["dst"]
    if not (is_id(src) and _is_int(env["seq"]) and isinstance(env["body"], dict)
            and (is_id(dst) or (type(dst) is list and 0 < len(dst) <= MAX_MEMBERS
                                and all(is_id(d) for d in dst)))):
        raise MalformedMessage("envelope fields have the wrong types")
    if dst != me and (type(dst) is not list or me not in dst):
        raise ForgedMessage(f"message from {src} is addressed to {str(dst)[:80]}, not us")
    guard.check(src, env["seq"], now_ns)
    validate_body(env["body"])
    return src, env["body"]


# ------------------------------------------------------------------------------------ schemas

def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and -_INT_MAX < x < _INT_MAX


def _is_epoch(x) -> bool:
    """Epochs grow by one per view: anything near the integer limit is an attack, and would
    overflow the next epoch's validation."""
    return _is_int(x) and 0 <= x <= MAX_EPOCH


def _is_num(x) -> bool:
    return (_is_int(x) or isinstance(x, float)) and not isinstance(x, bool) and x == x \
        and abs(x) < 1e18


def is_id(x) -> bool:
    """An agent id by the one rule (:func:`chaos_hvd.rules.parse_node_id`)."""
    return isinstance(x, str) and _id_ok(x)


@functools.lru_cache(maxsize=4096)     # every datagram names a few ids, nearly always the same
def _id_ok(x: str) -> bool:
    try:
        parse_node_id(x, "id")
    except RuleError:
        return False
    return True


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedMessage(what)


def _ballot(b, what: str, allow_none_id: bool = False) -> None:
    _need(isinstance(b, list) and len(b) == 2 and _is_int(b[0]) and
          (is_id(b[1]) or (allow_none_id and b[1] == "")), f"{what}: ballot must be [int, id]")


def _is_slots(x) -> bool:
    return _is_int(x) and 1 <= x <= MAX_SLOTS


def validate_view(v) -> None:
    _need(isinstance(v, dict) and {"epoch", "members", "links"} <= set(v)
          <= {"epoch", "members", "links", "slots"}, "view: fields")
    _need(_is_epoch(v["epoch"]), "view: epoch")
    members = v["members"]
    _need(isinstance(members, list) and len(members) <= MAX_MEMBERS
          and all(is_id(m) for m in members) and len(set(members)) == len(members),
          "view: members must be distinct ids")
    n = len(members)
    _need(isinstance(v["links"], list) and len(v["links"]) <= n * (n - 1) // 2, "view: links")
    # every view message carries these lists; `type(x) is int` (not bool) and the index range
    # say all that _is_int would, at a fraction of the cost
    for ln in v["links"]:
        _need(type(ln) is list and len(ln) == 2 and type(ln[0]) is int and type(ln[1]) is int
              and 0 <= ln[0] < ln[1] < n, "view: a link must be [i, j] with 0 <= i < j < n")
    slots = v.get("slots", [])
    _need(isinstance(slots, list) and len(slots) <= n, "view: slots")
    for sl in slots:
        _need(type(sl) is list and len(sl) == 2 and type(sl[0]) is int and 0 <= sl[0] < n
              and type(sl[1]) is int and 1 <= sl[1] <= MAX_SLOTS,
              "view: slots must be [i, 1..MAX_SLOTS] with 0 <= i < n")
    _need(len({sl[0] for sl in slots}) == len(slots), "view: one slot count per member")


def validate_change(ch) -> None:
    """[kind, id] or [link_up|link_down, id, id]; [add|slots, id, slots]."""
    ok = isinstance(ch, list) and bool(ch) and isinstance(ch[0], str)
    if ok and len(ch) == 3 and ch[0] in (Change.ADD, Change.SLOTS):
        ok = is_id(ch[1]) and _is_slots(ch[2])
    else:
        ok = ok and ch[0] in _ID_CHANGES and len(ch) == _ID_CHANGES[ch[0]] \
            and all(is_id(x) for x in ch[1:]) and len(set(ch[1:])) == len(ch) - 1
    _need(ok, f"change {str(ch)[:80]} is not [kind, id], [link_up|link_down, id, id] (two "
              f"different ends) or [add|slots, id, slots]")


def _fields(body: dict, *names, optional=()) -> None:
    """The body has exactly these fields (besides ``type``), plus any of `optional`."""
    fields = set(body) - {"type"}
    _need(set(names) <= fields <= set(names) | set(optional),
          f"{body.get('type')}: expected fields {sorted(names)} (optional {sorted(optional)}), "
          f"got {sorted(fields)}")


def _heartbeat(body: dict) -> None:
    _fields(body, "epoch", optional=("lease", "back"))
    _need(_is_epoch(body["epoch"]), "heartbeat: epoch")
    _need(isinstance(body.get("lease", False), bool) and isinstance(body.get("back", True), bool),
          "heartbeat: lease and back must be bools")


def _changes(body: dict) -> None:
    _fields(body, "changes")
    _need(isinstance(body["changes"], list) and 0 < len(body["changes"]) <= MAX_CHANGES,
          "changes: list of 1..MAX_CHANGES")
    for ch in body["changes"]:
        validate_change(ch)


def _join(body: dict) -> None:
    _fields(body, optional=("slots",))
    _need(_is_slots(body.get("slots", 1)), "join: slots must be 1..MAX_SLOTS")


def _ping(body: dict) -> None:
    _fields(body, "t")
    _need(_is_int(body["t"]), "ping: t")


def _pong(body: dict) -> None:
    _fields(body, "echo")
    _need(_is_int(body["echo"]), "pong: echo")


def _probe(body: dict) -> None:
    _fields(body, "direction", "seconds")
    _need(body["direction"] in ("to_me", "from_me"), "probe: direction")
    _need(_is_num(body["seconds"]) and 0 < body["seconds"] <= 5, "probe: seconds in (0, 5]")


def _probe_result(body: dict) -> None:
    _fields(body, "bytes", "seconds")
    _need(_is_int(body["bytes"]) and body["bytes"] >= 0 and _is_num(body["seconds"])
          and body["seconds"] >= 0, "probe_result: bytes, seconds")


def _ballot_round(body: dict) -> None:   # prepare, accepted
    _fields(body, "epoch", "ballot")
    _need(_is_epoch(body["epoch"]), f"{body['type']}: epoch")
    _ballot(body["ballot"], body["type"])


def _promise(body: dict) -> None:
    _fields(body, "epoch", "ballot", "accepted")
    _need(_is_epoch(body["epoch"]), "promise: epoch")
    _ballot(body["ballot"], "promise")
    acc = body["accepted"]
    if acc is not None:
        _need(isinstance(acc, dict) and set(acc) == {"ballot", "view"}, "promise: accepted")
        _ballot(acc["ballot"], "promise.accepted")
        validate_view(acc["view"])


def _accept(body: dict) -> None:
    _fields(body, "epoch", "ballot", "view", optional=("adopted", "notify"))
    _need(isinstance(body.get("adopted", False), bool), "accept: adopted must be a bool")
    notify = body.get("notify", [])
    _need(type(notify) is list and len(notify) <= MAX_MEMBERS and all(is_id(m) for m in notify),
          "accept: notify must be a list of ids")
    _need(_is_epoch(body["epoch"]), "accept: epoch")
    _ballot(body["ballot"], "accept")
    validate_view(body["view"])


def _commit(body: dict) -> None:
    _fields(body, "view")
    validate_view(body["view"])


def _nack(body: dict) -> None:
    _fields(body, "epoch", "promised")
    _need(_is_epoch(body["epoch"]), "nack: epoch")
    _ballot(body["promised"], "nack", allow_none_id=True)


def _metrics(body: dict) -> None:
    _fields(body, "links", "resources")
    links, res = body["links"], body["resources"]
    _need(isinstance(links, list) and len(links) <= 2 * MAX_MEMBERS, "metrics: links")
    for ln in links:   # [src, dst, mbit/s, rtt_ms or null, measured_unix]
        _need(isinstance(ln, list) and len(ln) == 5 and is_id(ln[0]) and is_id(ln[1])
              and _is_num(ln[2]) and ln[2] > 0 and (ln[3] is None or _is_num(ln[3]))
              and _is_num(ln[4]), "metrics: a link is [src, dst, mbps, rtt_ms, unix]")
    _need(isinstance(res, dict) and len(res) <= 16 and all(
        isinstance(k, str) and len(k) <= 32 and (v is None or _is_num(v))
        for k, v in res.items()), "metrics: resources must be {name: number}")


_BODY_CHECKS: dict[Msg, Callable[[dict], None]] = {
    Msg.HEARTBEAT: _heartbeat, Msg.CHANGES: _changes, Msg.JOIN: _join, Msg.PING: _ping,
    Msg.PONG: _pong, Msg.PROBE: _probe, Msg.PROBE_RESULT: _probe_result,
    Msg.PREPARE: _ballot_round, Msg.ACCEPTED: _ballot_round, Msg.PROMISE: _promise,
    Msg.ACCEPT: _accept, Msg.COMMIT: _commit, Msg.NACK: _nack, Msg.METRICS: _metrics,
}


def validate_body(body: dict) -> None:
    kind = body.get("type")
    check = _BODY_CHECKS.get(kind) if isinstance(kind, str) else None
    if check is None:
        raise MalformedMessage(f"unknown message type {str(kind)[:40]!r}")
    check(body)


def stale_reason(body: dict, view_epoch: int | None) -> str | None:
    """Why a valid message is about a superseded epoch (to be dropped and logged), else None.

    An accept for an epoch at or below the installed one, replies from a round older than the
    one that made the current view, and commits of a view we have passed can change nothing.
    Late replies of the round just decided are normal (a quorum answered first) and go to the
    protocol, which ignores them. Old-epoch heartbeats and prepares are *not* stale: the
    protocol answers them with the current view so a lagging node catches up.
    """
    if view_epoch is None:
        return None
    kind = body["type"]
    if (kind == Msg.ACCEPT and body["epoch"] <= view_epoch) or \
            (kind in (Msg.PROMISE, Msg.ACCEPTED, Msg.NACK) and body["epoch"] < view_epoch):
        return f"{kind} for epoch {body['epoch']}, current view is epoch {view_epoch}"
    if kind == Msg.COMMIT and body["view"]["epoch"] < view_epoch:
        return f"commit of epoch {body['view']['epoch']}, current view is epoch {view_epoch}"
    return None


def implausible_reason(body: dict, view_epoch: int | None) -> str | None:
    """Why a valid message's epoch is too far ahead of ours to be real, else None: a node can
    miss some views, not a million (a forged-looking jump would freeze membership near the
    epoch limit)."""
    if view_epoch is None:
        return None
    epoch = body["view"]["epoch"] if body["type"] == Msg.COMMIT else body.get("epoch")
    if isinstance(epoch, int) and epoch > view_epoch + MAX_EPOCH_JUMP:
        return f"{body['type']} for epoch {epoch}, ours is {view_epoch}"
    return None

