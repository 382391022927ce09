"""Event records: the one contract between everything that writes and reads an event log.

Every event the system handles is one JSON line with a monotonic and a wall-clock timestamp.
Writers (ChaosState, the cluster agent, the example training script, the testbed's timeline)
build the records below and hand them to :class:`EventLog`; readers (CI checks, benches, tests,
the testbed's step triggers) get the same types back from :func:`read_events`, so a renamed or
retyped field fails at once, where it is written or read, instead of silently.

A line's ``event`` field names its record type. Decoding is strict about the fields a record
declares (missing or mistyped -> :class:`~chaos_hvd.errors.EventLogError`) and ignores fields it
does not know, so an older reader can read a newer log.

Records, by writer:

========================  =========================================================================
ChaosState                ``sync`` / ``sync_failed`` (one per rank per sync), ``peer_dead`` (fast
                          crash detection fired), ``world_aborted`` (a new world waited for a dead
                          member), ``state_commit``, ``diverged``, ``shard_request_rejected``
training script           ``resumed`` (training (re)started at a world size), ``step``, ``commit``,
                          ``final``
cluster agent             ``start``, ``stop``, ``install`` (a new view), ``suspect``,
                          ``removed``, ``join_request``, ``lease``, ``leave``, ``leave_timeout``,
                          ``link_down`` / ``link_up`` (a ping observation), ``probe``, ``rejected``,
                          ``send_failed``
standby joiner            ``standby_pulling`` / ``standby_pull`` (a background pull of the running
                          workers' state starts / ended), ``standby_switch`` (told to join: it
                          resets into the job)
chaos-hvdrun launcher     ``standby_started``, ``standby_ready``, ``standby_switched``,
                          ``standby_joined``, ``standby_dropped``
testbed timeline          ``capability``, ``up``, ``down``, ``agent_start``, ``agents_up``,
                          ``command_start``, ``command_timeout``, ``command_exit``, ``fault``,
                          ``fault_error``
========================  =========================================================================

Ranks are integers everywhere (``bytes_per_source`` maps a source rank to its bytes). Pure apart
from the file append in :meth:`EventLog.write`.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Annotated, Iterator, TypeVar, Union

import msgspec

from .errors import EventLogError
from .files import NotAFile, read_regular

Rank = int


# a clock reading: never negative, never absurd (a record that says otherwise is not one)
Clock = Annotated[float, msgspec.Meta(ge=0, le=1e11)]


class Event(msgspec.Struct, tag_field="event", kw_only=True):
    """Fields every record has; filled in by :meth:`EventLog.write`."""

    t_mono: Clock = 0.0
    t_unix: Clock = 0.0
    pid: int = 0


# ------------------------------------------------------------------------------ ChaosState

class Sync(Event, tag="sync"):
    """One rank's view of one sync (after every Horovod reset)."""

    rank: Rank
    strategy: str
    size: int                       # world size
    role: str                       # "source" or "needer"
    version: int                    # the committed version everyone ends at
    target: Rank                    # the rank whose snapshot is the target
    state_bytes: int
    sources: list[Rank]
    needers: list[Rank]
    transfer_bytes_total: int
    exchange_s: float = 0.0         # publish + allgather of every rank's record (incl. digest_s)
    digest_s: float = 0.0           # hashing this rank's snapshot for that record
    plan_s: float = 0.0
    transfer_s: float = 0.0
    load_s: float = 0.0
    verify_s: float = 0.0           # re-hash after loading + allgather of full-state digests
    total_s: float = 0.0
    digest: str = ""
    committed_version: int = 0
    first_sync: bool = False        # this process's first sync (a new worker: a joiner after v0)
    # needers that pulled (chaos, single); the checkpoint and broadcast strategies fill some
    algorithm: str | None = None
    predicted_makespan_s: float | None = None
    bound_s: float | None = None
    needed_chunks: int | None = None
    needed_bytes: int | None = None
    planned_bytes_per_source: dict[Rank, int] = {}
    bytes_per_source: dict[Rank, int] = {}
    failed_sources: dict[Rank, str] = {}
    corrupt_chunks: int = 0
    stolen_batches: int = 0
    bandwidth_known: bool | None = None
    bandwidth_source: str | None = None   # none / static / agent
    agent_epoch: int | None = None
    agent_error: str | None = None
    measured_to_me: dict[str, float] = {}
    checkpoint_write_s: float | None = None


class SyncFailed(Sync, tag="sync_failed", kw_only=True):
    error: str = ""


class PeerDead(Event, tag="peer_dead"):
    """The crash watch saw `peer` die and aborted this rank's collectives."""

    rank: Rank
    peer: Rank
    gloo_sockets_aborted: int       # connections the abort failed (whichever path acted)
    # "horovod": our Horovod build failed every connection of the world from the inside;
    # "socket-scan": an unpatched Horovod, Gloo's sockets shut down from outside;
    # "world-ended": the world had already ended (a reset began): nothing to abort
    abort_path: str = "socket-scan"
    world: int = 0                  # the Horovod world the watch was armed in (0: unknown)


class WorldAborted(Event, tag="world_aborted"):
    """This worker aborted the world it was forming or syncing: the launcher said members of it
    had exited."""

    host: str
    world: int                      # this worker's id of that world
    phase: str                      # "forming" (Gloo rendezvous) or "formed" (syncing)
    dead: list[str]                 # host:slot
    connections: int                # Gloo connections the abort failed


class Diverged(Event, tag="diverged"):
    rank: Rank
    states: list[dict]


class ShardRequestRejected(Event, tag="shard_request_rejected"):
    rank: Rank
    peer: str
    why: str


class StandbyPull(Event, tag="standby_pull"):
    """A standby joiner's background pull of the running workers' committed state."""

    host: str
    slot: int
    attempt: int
    version: int = 0
    state_bytes: int = 0
    needed_bytes: int = 0           # what this attempt moved (planned)
    reused_bytes: int = 0           # kept from an earlier attempt that a source's failure ended
    plan_s: float = 0.0
    transfer_s: float = 0.0
    load_s: float = 0.0
    total_s: float = 0.0
    planned_bytes_per_source: dict[Rank, int] = {}
    bytes_per_source: dict[Rank, int] = {}   # may differ: idle sources steal from slow ones
    failed_sources: dict[Rank, str] = {}
    error: str = ""


class StandbyPulling(Event, tag="standby_pulling"):
    """A standby joiner starts a background pull (written before its bytes move)."""

    host: str
    slot: int
    attempt: int
    version: int
    sources: list[Rank] = []


class StandbySwitch(Event, tag="standby_switch"):
    """The launcher told a ready standby to join: it resets into the job."""

    host: str
    slot: int
    version: int
    waited_s: float                  # ready -> told to switch


# ------------------------------------------------------------------------------ chaos-hvdrun

class LauncherEvent(Event, kw_only=True):
    host: str
    slot: int
    instance: str


class StandbyStarted(LauncherEvent, tag="standby_started"):
    pass


class StandbyReady(LauncherEvent, tag="standby_ready"):
    version: int
    seconds: float                   # process start -> ready


class StandbySwitched(LauncherEvent, tag="standby_switched"):
    pass


class StandbyJoined(LauncherEvent, tag="standby_joined"):
    rank: Rank


class StandbyDropped(LauncherEvent, tag="standby_dropped"):
    why: str


class SlotLost(Event, tag="slot_lost"):
    """The launcher recorded a vanished host's worker at the reset barrier on its behalf."""

    host: str
    slot: int
    waited_s: float                  # the barrier waited this long for it alone


# ------------------------------------------------------------------------------ training script

class TrainingEvent(Event, kw_only=True):
    rank: Rank
    size: int                       # world size
    step: int
    source: str | None = None       # the writing script


class Resumed(TrainingEvent, tag="resumed"):
    """Training (re)started in a new world (after every sync)."""

    epoch: int
    lr: float
    digest: str                     # of the parameters
    host: str | None = None


class Step(TrainingEvent, tag="step"):
    """A training step. Only ``step`` is required, so any script can write one (by hand, or with
    :func:`record_step`): the testbed's step triggers need nothing else, ``size`` (the world
    size) only for ``at_size``. ``rank`` -1 and ``size`` 0 mean "not given"."""

    rank: Rank = -1
    size: int = 0
    epoch: int = 0
    loss: float | None = None
    lr: float | None = None
    host: str | None = None


class Commit(TrainingEvent, tag="commit"):
    """About to commit this step (written first: a commit that raises a hosts-updated interrupt
    has still saved the state)."""


class Committed(TrainingEvent, tag="committed"):
    """A commit that returned: how long ``state.commit()`` took."""

    seconds: float


class StateCommit(TrainingEvent, tag="state_commit"):
    """ChaosState committed (written by the plugin, so any script using it drives the testbed's
    step triggers): ``step`` is the script's own ``step`` (or ``batch``) value when the state
    tracks one as an int, else the commit count."""

    version: int


class TorchSynced(TrainingEvent, tag="torch_synced"):
    """Horovod's own TorchState finished a sync (the examples' baseline, timed for the benches)."""
    seconds: float
    skipped: bool = False           # nothing moved: no rank had trained and all started equal


class Final(TrainingEvent, tag="final"):
    digest: str
    seconds: float


# ------------------------------------------------------------------------------ cluster agent

class AgentEvent(Event, kw_only=True):
    agent: str = ""                 # the writing agent's id
    epoch: int | None = None        # its view's epoch when it wrote


class AgentStarted(AgentEvent, tag="start"):
    addr: str
    founders: list[str]
    seeds: list[str]
    heartbeat_s: float
    suspect_after_s: float


class AgentStopped(AgentEvent, tag="stop"):
    counters: dict[str, int]


class Install(AgentEvent, tag="install"):
    """A view installed at this agent; ``handled_ms``: per change, arrival here -> installed."""

    members: list[str]
    coordinator: str | None
    added: list[str]
    removed: list[str]
    links_up: list[list[str]]
    links_down: list[list[str]]
    slots: dict[str, int]
    handled_ms: dict[str, float]
    latency_ms: float | None
    in_view: bool


class Suspect(AgentEvent, tag="suspect"):
    node: str


class Removed(AgentEvent, tag="removed"):
    pass


class JoinRequest(AgentEvent, tag="join_request"):
    node: str


class Lease(AgentEvent, tag="lease"):
    held: bool


class Leave(AgentEvent, tag="leave"):
    pass


class LeaveTimeout(AgentEvent, tag="leave_timeout"):
    pass


class LinkDown(AgentEvent, tag="link_down"):
    link: list[str]
    rtt_ms: float | None


class LinkUp(AgentEvent, tag="link_up"):
    link: list[str]
    rtt_ms: float | None


class Probe(AgentEvent, tag="probe"):
    peer: str
    mbps_to_me: float | None
    mbps_from_me: float | None
    rtt_ms: float | None


class Rejected(AgentEvent, tag="rejected"):
    reason: str                     # forged / replayed / stale / oversized / malformed
    peer: str
    detail: str
    suppressed: int


class SendFailed(AgentEvent, tag="send_failed"):
    dst: str
    type: str | None
    error: str


# ------------------------------------------------------------------------------ testbed timeline

class TimelineEvent(Event, kw_only=True):
    t_rel: Clock = 0.0              # seconds since the testbed started


class Capability(TimelineEvent, tag="capability"):
    detail: str


class Up(TimelineEvent, tag="up"):
    id: str
    hosts: int
    links: int
    native_netem: bool
    setup_s: float


class Down(TimelineEvent, tag="down"):
    id: str
    problems: list[str]


class AgentStart(TimelineEvent, tag="agent_start"):
    node: str
    id: str
    pid_started: int
    founders: list[str]
    seeds: list[str]


class AgentsUp(TimelineEvent, tag="agents_up"):
    epoch: int
    members: list[str]
    agree_s: float


class CommandStart(TimelineEvent, tag="command_start"):
    argv: list[str]
    host: str


class CommandTimeout(TimelineEvent, tag="command_timeout"):
    timeout_s: float


class CommandExit(TimelineEvent, tag="command_exit"):
    rc: int
    pending_actions: int


class Fault(TimelineEvent, tag="fault"):
    """One primitive action applied to the emulated network or hosts."""

    action: str
    target: str
    applied_ms: float
    at_step: int | None = None
    at_size: int | None = None      # the step trigger waited for this world size
    at_record: str | None = None    # the trigger waited for the job's first record of this kind
    step_seen: int | None = None    # highest training step seen when it fired
    late_ms: float | None = None
    injected: bool = False          # by `chaos-testbed inject`, not the schedule
    signalled: int | None = None    # processes signalled (crash, leave, pause, resume)
    up: str | None = None           # the link's directions after `degrade`
    down: str | None = None


class FaultError(TimelineEvent, tag="fault_error"):
    action: str
    target: str
    error: str


AnyEvent = Union[
    Sync, SyncFailed, PeerDead, WorldAborted, Diverged, ShardRequestRejected, StandbyPulling, StandbyPull,
    StandbySwitch,
    StandbyStarted, StandbyReady, StandbySwitched, StandbyJoined, StandbyDropped, SlotLost,
    Resumed, Step, Commit, Committed, StateCommit, TorchSynced, Final,
    AgentStarted, AgentStopped, Install, Suspect, Removed, JoinRequest, Lease, Leave,
    LeaveTimeout, LinkDown, LinkUp, Probe, Rejected, SendFailed,
    Capability, Up, Down, AgentStart, AgentsUp, CommandStart, CommandTimeout, CommandExit,
    Fault, FaultError,
]
E = TypeVar("E", bound=Event)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


class EventLog:
    """Appends records to a JSON-lines file (or only stamps them, when `path` is None).

    `context` fills fields the records have and the writer does not repeat (the agent's id,
    the script's name). Lines are written with one ``write`` on a file opened with O_APPEND, so
    ranks on one machine can share a file.
    """

    def __init__(self, path: str | None, **context):
        self.path = path
        self.context = context
        self._lock = threading.Lock()

    def write(self, record: E) -> E:
        record.t_mono, record.t_unix, record.pid = time.monotonic(), time.time(), os.getpid()
        for name, value in self.context.items():
            if name in record.__struct_fields__ and not getattr(record, name):
                setattr(record, name, value)
        if self.path:
            line = _encoder.encode(record) + b"\n"
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
        return record


def record_step(step: int, size: int | None = None, path: str | None = None) -> Step:
    """Log one training step for the testbed's step triggers (``at_step``, with `size` also
    ``at_size``) to `path`, default ``CHAOS_EVENT_LOG`` (nothing is written when neither is set).
    One line in a training loop: ``chaos_hvd.record_step(step, hvd.size())``."""
    if type(step) is not int or not 0 <= step < 1 << 62 or (
            size is not None and (type(size) is not int or not 1 <= size <= 1 << 20)):
        raise ValueError(f"record_step: step must be an int in 0..2**62 and size an int in "
                         f"1..2**20 or None, got {step!r}, {size!r}")
    return EventLog(path or os.environ.get("CHAOS_EVENT_LOG")).write(
        Step(step=step, size=size or 0))


def decode(line: bytes | str) -> AnyEvent:
    """One line -> its record; EventLogError if it is not one of the records above."""
    try:
        return _decoder.decode(line)
    except msgspec.DecodeError as e:   # ValidationError included
        raise EventLogError(f"not an event record: {e}") from None


def iter_events(lines: Iterator[bytes | str], source: str = "<events>") -> Iterator[AnyEvent]:
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield decode(line)
            except EventLogError as e:
                raise EventLogError(f"{source}:{n}: {e}") from None


MAX_LOG_BYTES = 1 << 30


def read_events(path: str, *kinds: type[E], max_bytes: int = MAX_LOG_BYTES) -> list[E]:
    """Every record in the file (only those of the given types, when some are given).

    Only a regular file of at most `max_bytes` is read (EventLogError otherwise): a log linked
    to ``/dev/zero`` or a FIFO must not exhaust memory or block the reader."""
    try:
        data = read_regular(path, max_bytes)
    except OSError as e:
        raise EventLogError(f"{path}: cannot open: {e.strerror or e}") from None
    except NotAFile as e:
        raise EventLogError(f"{path}: {e}") from None
    records = list(iter_events(data.split(b"\n"), path))
    return [r for r in records if isinstance(r, kinds)] if kinds else records


def tail_events(path: str, offset: int, partial: bytes = b"",
                on_bad=None) -> tuple[list[AnyEvent], int, bytes]:
    """Records appended since `offset`: (records, new offset, unfinished last line). Lines that
    are not records are skipped (a reader polling a live log must not die of a torn write);
    `on_bad(line, reason)` hears of each."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    lines = (partial + data).split(b"\n")
    rest = lines.pop()
    out = []
    for line in lines:
        try:
            if line.strip():
                out.append(decode(line))
        except EventLogError as e:
            if on_bad is not None:
                on_bad(line, str(e))
    return out, offset + len(data), rest
