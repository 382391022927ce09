"""Horovod's elastic driver, extended so a joining host never stops training while it starts.

The one module of the launcher that touches Horovod's runner (:mod:`chaos_hvd.state.adapter` is
the one on the worker side). Stock Horovod starts a new host's worker only after every running
worker has reset (``WorkerStateRegistry._on_workers_recorded`` -> ``ElasticDriver.resume``), so the
whole job waits for the new process's start, imports, model build and state transfer.
:class:`ChaosDriver` changes four hooks (and sends Horovod's notification to rank 0 from a
thread of its own, so a vanished rank 0 cannot hold the driver's lock for minutes):

* ``_notify_workers_host_changes`` (discovery saw a change): for every new slot it starts a
  *standby* at once -- the user's command in a one-process Horovod world of its own, on its own
  rendezvous server -- and keeps the host out of the rank assignments (``_get_host_assignments``),
  so Horovod's own comparison finds nothing to tell the running workers.
* the standby builds its model, pulls a recent committed state from the running workers in the
  background (ChaosState does this) and reports ready; only then are the running workers
  notified, through Horovod's own path, and they reset at their next commit.
* ``_start_worker_processes`` (after that reset) switches the ready standby in instead of starting a
  process; its re-initialisation asks the job's rendezvous for its rank like any reset worker, and
  ``record_ready`` lets that first request through without counting it in the reset barrier. It
  then registers its notification service with the job's rendezvous like a fresh worker does.
* a standby that is not ready within the timeout, or exits first, is killed and dropped; its host
  stays out of the assignments until it leaves discovery and comes back.

Several standbys starting together are switched in at one reset (a ready one waits up to
``BATCH_WAIT_S`` for the others). Should holding starting standbys back leave the job below
``--min-np`` (a host crashed while its replacement starts), they are assigned at once, as Horovod
would, and switched in as soon as they are up.

A worker that dies while a new world forms (after the reset barrier gave it a rank, before the
sync that follows) holds the others in Gloo's rendezvous until its timeout: no crash watch runs
then. The driver remembers which slots' processes have exited (``_handle_worker_exit``) until a
new process takes the slot, and answers ``chaos_world`` with the members of the current world that
did: the workers ask while they form and sync, and abort that world when one is dead.

If a host is added and another removed in one update, Horovod's behaviour applies to the removal
at once and the addition goes through a standby as above.

A host that vanishes silently (power loss, cut link) would hold every reset for minutes: its
worker can neither record at Horovod's reset barrier nor exit. Once discovery (the cluster agents)
no longer lists it and it is all the barrier waits for, the driver records its slots ready on its
behalf after ``LOST_GRACE_S`` (:mod:`~chaos_hvd.scaleout.lost_slots`), then ends its ssh sessions
through Horovod's own host event; a record from that worker later (a healed partition) is ignored
until the slot is started afresh.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from horovod.runner import gloo_run
from horovod.runner.common.util import hosts as hvd_hosts
from horovod.runner.elastic.discovery import DiscoveredHosts
from horovod.runner.elastic.driver import ElasticDriver
from horovod.runner.elastic.rendezvous import create_rendezvous_handler
from horovod.runner.elastic.worker import HostUpdateResult
from horovod.runner.http.http_server import RendezvousHandler, RendezvousServer

from .. import events
from ..errors import ChaosError, PeerMessageError
from ..events import EventLog
from ..rules import RuleError, parse_int
from ..join import wire
from ..join.wire import Slot
from .lost_slots import LostSlotWatch
from .standbys import Phase, Standby, StandbyTable

log = logging.getLogger(__name__)

RENOTIFY_AFTER_S = 5.0    # Horovod's notifications carry whole seconds: one may be ignored
BATCH_WAIT_S = 10.0       # a ready standby waits this long for others still starting (one reset)
WATCH_INTERVAL_S = 0.25
LOST_GRACE_S = 0.5        # a vanished host's slots alone at the reset barrier this long: recorded
REQUEST_DEADLINE_S = 10.0   # a rendezvous request's line, headers and body must arrive this soon
MAX_CONNECTIONS_PER_ADDR = 64
MAX_CONNECTIONS = 1024
_PORT_RE = re.compile(r"\bHOROVOD_GLOO_RENDEZVOUS_PORT=(\d+)\b")


class LauncherError(ChaosError):
    """The launcher cannot start a standby (Horovod's command line is not what it expects)."""


@dataclass
class StandbySettings:
    secret: bytes
    ready_timeout_s: float
    event_log: str | None = None


@dataclass
class StandbyLaunch:
    """What Horovod's launcher built to start workers, kept to start standbys the same way."""

    exec_command: Callable
    run_command: str
    env: dict
    event: threading.Event
    make_worker_fn: Callable    # gloo_run._create_elastic_worker_fn (Horovod's, unpatched)

    @property
    def main_port(self) -> int:
        ports = _PORT_RE.findall(self.run_command)
        if len(ports) != 1:
            raise LauncherError("Horovod's worker command does not name one rendezvous port")
        return int(ports[0])

    def run(self, sb: Standby, solo_port: int, events_: list[threading.Event]) -> tuple[int, float]:
        """Run the user's command as a standby (blocks until it exits, like Horovod's workers)."""
        main = self.main_port
        command = (f"{wire.SLOT_ENV}={sb.slot} {wire.MAIN_PORT_ENV}={main} "
                   f"{wire.ID_ENV}={sb.instance} "
                   + _PORT_RE.sub(f"HOROVOD_GLOO_RENDEZVOUS_PORT={solo_port}", self.run_command))
        solo = hvd_hosts.SlotInfo(hostname=sb.host, rank=0, local_rank=0, cross_rank=0, size=1,
                                  local_size=1, cross_size=1)
        return self.make_worker_fn(self.exec_command, command, self.env, self.event)(solo, events_)


class ChaosDriver(ElasticDriver):
    def __init__(self, rendezvous, discovery, min_num_proc, max_num_proc, timeout=None,
                 reset_limit=None, cooldown_range=None, verbose=0, *,
                 standby: StandbySettings):
        # set before Horovod's constructor starts the discovery thread that calls our hooks
        self._standby = standby
        self._table = StandbyTable(standby.ready_timeout_s)
        self._launch: StandbyLaunch | None = None
        self._kill: dict[tuple[str, int], threading.Event] = {}
        self._solo: dict[str, RendezvousServer] = {}    # by standby instance
        self._sources: dict[int, bytes] = {}
        self._sources_lock = threading.Lock()
        self._last_notify = 0.0
        self._notified: set[tuple[str, int]] = set()
        self._events = EventLog(standby.event_log)
        self._lost = LostSlotWatch(LOST_GRACE_S)
        self._retired: set[Slot] = set()   # recorded for; their old process must not count again
        self._exit_lock = threading.Lock()
        self._exited: set[Slot] = set()    # slots whose process exited; cleared by a new one
        super().__init__(rendezvous, discovery, min_num_proc, max_num_proc, timeout=timeout,
                         reset_limit=reset_limit, cooldown_range=cooldown_range, verbose=verbose)
        threading.Thread(target=self._watch, name="chaos-launcher-watch", daemon=True).start()

    def enable_standbys(self, launch: StandbyLaunch) -> None:
        launch.main_port  # fail at start, not at the first join  # noqa: B018
        self._launch = launch

    # -- Horovod hooks ----------------------------------------------------------------------------

    def _get_host_assignments(self, current_hosts):
        held = self._table.held_back()
        if held:
            kept = {h: n for h, n in current_hosts.host_slots.items() if h not in held}
            if sum(kept.values()) >= self._min_num_proc:
                current_hosts = DiscoveredHosts(
                    kept, [h for h in current_hosts.host_assignment_order if h not in held])
            else:
                # without them the job is below --min-np: take them now, as Horovod would (a
                # starting standby is then switched in as soon as it is up)
                log.warning("below --min-np without hosts %s: assigning their standbys now",
                            sorted(held))
        return super()._get_host_assignments(current_hosts)

    def _notify_workers_host_changes(self, current_hosts, update_res):
        with self._wait_hosts_cond:
            if self._launch is not None and self._host_assignments:
                self._start_standbys(current_hosts)
            self._notify(current_hosts, update_res)

    def _notify(self, current_hosts, update_res) -> None:
        """Horovod's ``_notify_workers_host_changes``, but the message to rank 0 goes from a
        thread of its own. Horovod sends it holding the driver's lock, with a socket that has
        no timeout and three attempts: when rank 0's host vanished silently that is ~6 minutes
        (three TCP connect timeouts) in which no reset can complete. Call with the lock held."""
        next_assignments = {}
        if current_hosts.count_available_slots() >= self._min_num_proc:
            next_assignments, _ = self._get_host_assignments(current_hosts)
        if next_assignments == self.host_assignments:
            return
        coordinator = self.get_coordinator_info()
        client = self.get_worker_client(coordinator) if coordinator else None
        if client is None:
            return
        timestamp = int(time.time())   # Horovod's _epoch_time_s

        def send() -> None:
            try:
                client.notify_hosts_updated(timestamp, update_res)
            except Exception:  # noqa: BLE001 - Horovod ignores a failed notification too
                log.info("could not notify rank 0 (%s) of host changes", coordinator.hostname)

        threading.Thread(target=send, name="chaos-notify", daemon=True).start()

    def _start_worker_processes(self, pending_slots):
        fresh = []
        with self._wait_hosts_cond:
            for slot_info in pending_slots:
                sb = self._table.get(slot_info.hostname, slot_info.local_rank)
                if sb is not None and self._table.mark_switching(sb.host, sb.slot, force=True):
                    log.info("switching standby %s:%d in as rank %d", sb.host, sb.slot,
                             slot_info.rank)
                    self._events.write(events.StandbySwitched(host=sb.host, slot=sb.slot,
                                                              instance=sb.instance))
                else:
                    fresh.append(slot_info)
            self._retired -= {(s.hostname, s.local_rank) for s in pending_slots}
        with self._exit_lock:
            self._exited -= {(s.hostname, s.local_rank) for s in pending_slots}
        super()._start_worker_processes(fresh)

    def _handle_worker_exit(self, slot_info, exit_code, timestamp):
        # first: Horovod's handler blocks at the reset barrier until the next world forms
        with self._exit_lock:
            self._exited.add((slot_info.hostname, slot_info.local_rank))
        return super()._handle_worker_exit(slot_info, exit_code, timestamp)

    def world_status(self, nonce: str) -> bytes:
        """Members of the current world whose process has exited, for ``chaos_world``."""
        assigned = {(h, s.local_rank) for h, slots in self._host_assignments.items()
                    for s in slots}
        with self._exit_lock:
            dead = sorted(assigned & self._exited)
        return wire.encode_world_status(self._standby.secret, nonce, dead)

    def record_ready(self, host, slot):
        with self._wait_hosts_cond:
            if (host, slot) in self._retired and not self.has_rank_assignment(host, slot):
                # the old worker of a host recorded as lost (a partition healed): it is not in
                # the job any more; Horovod tells it so (no rank) and it exits
                log.warning("worker %s:%d, recorded as lost, came back: ignored", host, slot)
                return
            sb = self._table.get(host, slot)
            joined = sb is not None and self._table.mark_joined(host, slot)
        if joined:
            # the standby's first rendezvous in the job: the running workers' reset barrier is
            # already behind them, so it must not count towards the next one
            rank = self.get_slot_info(host, slot).rank
            self._events.write(events.StandbyJoined(host=host, slot=slot, instance=sb.instance,
                                                    rank=rank))
            return
        return super().record_ready(host, slot)

    def _update_host_assignments(self, current_hosts):
        with self._sources_lock:
            self._sources.clear()   # a new world: sources publish again after their sync
        return super()._update_host_assignments(current_hosts)

    # -- standbys ---------------------------------------------------------------------------------

    def _start_standbys(self, current_hosts) -> None:
        available = set(current_hosts.available_hosts)
        for host in {sb.host for sb in self._table} - available:
            for sb in self._table.forget_host(host):
                self._stop(sb, "its host left discovery")
        active = {(h, s.local_rank) for h, slots in self._host_assignments.items() for s in slots}
        if current_hosts.count_available_slots() < self._min_num_proc:
            return   # Horovod assigns nothing below --min-np, and neither do we
        wanted, _ = ElasticDriver._get_host_assignments(self, current_hosts)
        for host, slots in wanted.items():
            for slot_info in slots:
                key = (host, slot_info.local_rank)
                sb = self._table.get(*key)
                if key in active or (sb is not None and sb.phase != Phase.JOINED):
                    continue
                self._spawn(host, slot_info.local_rank)

    def _spawn(self, host: str, slot: int) -> None:
        sb = self._table.start(host, slot, uuid.uuid4().hex, time.monotonic())
        kill = self._kill[sb.key] = threading.Event()
        solo = RendezvousServer(self._verbose)
        port = solo.start(RendezvousHandler)   # a plain store: nothing there is decoded
        solo.init([hvd_hosts.SlotInfo(hostname=host, rank=0, local_rank=0, cross_rank=0, size=1,
                                      local_size=1, cross_size=1)])
        self._solo[sb.instance] = solo
        log.info("new slot %s:%d: starting a standby (training goes on)", host, slot)
        self._events.write(events.StandbyStarted(host=host, slot=slot, instance=sb.instance))
        host_event = self._host_manager.get_host_event(host)

        def run() -> None:
            try:
                code, ts = self._launch.run(sb, port, [self._shutdown, kill, host_event])
            except Exception as e:  # noqa: BLE001 - a standby must never take the launcher down
                log.exception("standby %s:%d could not run", host, slot)
                code, ts = 1, time.time()
                why = f"could not start: {e}"
            else:
                why = f"exited with code {code} before joining"
            self._standby_exited(sb, code, ts, why)

        thread = threading.Thread(target=run, name=f"chaos-standby-{host}:{slot}", daemon=True)
        thread.start()
        self._results.expect(thread)

    def _standby_exited(self, sb: Standby, code: int, ts: float, why: str) -> None:
        with self._wait_hosts_cond:
            current = self._table.get(sb.host, sb.slot) is sb
            # switching: the job already counts on its slot, so its exit is a worker's failure
            # (also once the table forgot it: Horovod's barrier still waits for the slot)
            joined = sb.phase in (Phase.SWITCHING, Phase.JOINED)
            if current and not joined and not self._shutdown.is_set():
                self._drop(sb, why)
            solo = self._solo.pop(sb.instance, None)
        if solo is not None:
            # off this thread: RendezvousServer.stop waits for socketserver's poll (0.5 s), and a
            # switched standby's exit must reach the world guard (below) without that wait
            threading.Thread(target=solo.stop, name="chaos-standby-solo-stop", daemon=True).start()
        if joined and self.has_rank_assignment(sb.host, sb.slot):
            # from here on it is one of Horovod's workers, and its exit counts as one's
            self._handle_worker_exit(self.get_slot_info(sb.host, sb.slot), code, ts)

    def _drop(self, sb: Standby, why: str) -> None:
        if self._table.drop(sb.host, sb.slot, why) is None:
            return
        self._stop(sb, why)

    def _stop(self, sb: Standby, why: str) -> None:
        log.warning("standby %s:%d dropped: %s", sb.host, sb.slot, why)
        self._events.write(events.StandbyDropped(host=sb.host, slot=sb.slot, instance=sb.instance,
                                                 why=why))
        kill = self._kill.pop(sb.key, None)
        if kill is not None:
            kill.set()   # Horovod's safe_shell_exec terminates the process tree

    def standby_ready(self, host: str, slot: int, instance: str, version: int) -> None:
        with self._wait_hosts_cond:
            sb = self._table.get(host, slot)
            if sb is None or not self._table.mark_ready(host, slot, instance, version,
                                                        time.monotonic()):
                return
            log.info("standby %s:%d ready at version %d after %.1f s", host, slot, version,
                     sb.ready_at - sb.started)
            self._events.write(events.StandbyReady(host=host, slot=slot, instance=instance,
                                                   version=version,
                                                   seconds=sb.ready_at - sb.started))
            self._maybe_notify(time.monotonic())

    def _maybe_notify(self, now: float) -> None:
        """Tell the workers to take the ready standbys in: once none is still starting (one
        reset for several joiners), or once one has waited BATCH_WAIT_S; again after
        RENOTIFY_AFTER_S if they have not reset yet. Call with the lock held."""
        ready = self._table.in_phase(Phase.READY)
        if not ready:
            return
        oldest = min(sb.ready_at for sb in ready)
        if self._table.in_phase(Phase.STARTING) and now - oldest < BATCH_WAIT_S:
            return
        if now - self._last_notify < RENOTIFY_AFTER_S and self._notified == {sb.key for sb in ready}:
            return
        self._last_notify, self._notified = now, {sb.key for sb in ready}
        # Horovod's own path: rank 0 learns of the change and every worker resets at its next
        # commit; the ready hosts are no longer held back, so the assignments now differ
        self._notify(self._host_manager.current_hosts, HostUpdateResult.added)

    def offers_wanted(self) -> bool:
        with self._wait_hosts_cond:
            return bool(self._table.in_phase(Phase.STARTING))

    def verdict(self, host: str, slot: int) -> bytes | None:
        with self._wait_hosts_cond:
            sb = self._table.get(host, slot)
            if sb is None:
                return None
            if sb.phase in (Phase.SWITCHING, Phase.JOINED):
                verdict = "switch"
            elif sb.phase == Phase.DROPPED:
                verdict = "drop"
            else:
                return None
        return wire.encode_verdict(self._standby.secret, host, slot, sb.instance, verdict)

    def _watch(self) -> None:
        while not self._shutdown.wait(WATCH_INTERVAL_S):
            now = time.monotonic()
            with self._wait_hosts_cond:
                for sb in self._table.overdue(now):
                    self._drop(sb, f"not ready within {self._table.ready_timeout_s:g} s")
                self._maybe_notify(now)
                lost = self._observe_barrier(now)
                self._retired |= lost
            for host, slot in sorted(lost):
                threading.Thread(target=self._record_lost, args=(host, slot, now),
                                 name=f"chaos-lost-{host}:{slot}", daemon=True).start()

    def _observe_barrier(self, now: float) -> frozenset[Slot]:
        registry = self._worker_registry
        try:
            recorded = set(registry.get_recorded_slots())
        except RuntimeError:   # changed while copied: look again next time
            return frozenset()
        assigned = {(h, s.local_rank) for h, slots in self._host_assignments.items()
                    for s in slots}
        discovered = self._host_manager.current_hosts.host_slots
        return self._lost.observe(registry.last_rendezvous(), assigned, recorded, discovered, now)

    def _record_lost(self, host: str, slot: int, since: float) -> None:
        waited = time.monotonic() - since + LOST_GRACE_S
        log.warning("host %s left discovery and its worker %d never reached the reset: "
                    "recording it for the worker", host, slot)
        self._events.write(events.SlotLost(host=host, slot=slot, waited_s=round(waited, 3)))
        # blocks like the worker's own record until the barrier completes and the job resumed
        self._worker_registry.record_ready(host, slot)
        with self._wait_hosts_cond:
            if self._host_assignments.get(host):
                log.info("host %s keeps other slots: its other workers live on", host)
                return
            # Horovod's safe_shell_exec ends every worker process it started there (the event
            # it sets when it blacklists a host); the next process for the host gets a new one
            log.info("ending the ssh sessions of lost host %s", host)
            self._host_manager._hosts_state[host].set_event()

    # -- source directory -------------------------------------------------------------------------

    def put_source(self, key: str, data: bytes) -> None:
        record = wire.decode_source(self._standby.secret, data)
        if key != str(record.rank):
            raise wire.MalformedMessage("source record under another rank's key")
        with self._sources_lock:
            if record.rank not in self._sources and len(self._sources) >= wire.MAX_RECORDS:
                raise wire.MalformedMessage("too many sources")
            self._sources[record.rank] = data

    def sources(self) -> bytes:
        with self._sources_lock:
            return wire.encode_source_list(list(self._sources.values()), self._world_size)


# --------------------------------------------------------------------------------------------------
# HTTP handlers on Horovod's rendezvous servers


def _split(path: str) -> tuple[str, str] | None:
    """(scope, key) of ``/scope/key``; None for any other shape (Horovod's own handler raises
    on more than two parts, so no such path reaches it)."""
    parts = path.split("/")
    return (parts[1], parts[2]) if len(parts) == 3 and not parts[0] else None


def _read_body(handler) -> bytes | None:
    """The request's body; None when Content-Length is missing, not ASCII digits or too large."""
    try:
        n = parse_int(handler.headers.get("Content-Length") or "", "Content-Length", 0,
                      wire.MAX_RECORD_BYTES)
    except RuleError:
        return None
    return handler.rfile.read(n)


class _Connections:
    """Open connections of one server, per peer address: at most MAX_CONNECTIONS_PER_ADDR for
    each address and MAX_CONNECTIONS in all; and one watchdog thread that shuts down the
    connections whose request was not read by its deadline (Horovod's store polls every 10 ms
    while a world forms: no thread per request)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._deadlines: dict[socket.socket, float] = {}
        self._watchdog: threading.Thread | None = None

    def start_deadline(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines[sock] = time.monotonic() + REQUEST_DEADLINE_S
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                                  name="chaos-rendezvous-deadlines")
                self._watchdog.start()

    def request_read(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(sock, None)

    def _watch(self) -> None:
        while True:
            time.sleep(min(0.25, REQUEST_DEADLINE_S / 4))
            now = time.monotonic()
            with self._lock:
                late = [s for s, t in self._deadlines.items() if t <= now]
                for s in late:
                    del self._deadlines[s]
            for s in late:
                log.warning("rendezvous request not read within %.0f s: closed",
                            REQUEST_DEADLINE_S)
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def admit(self, addr: str) -> bool:
        with self._lock:
            if self._open.get(addr, 0) >= MAX_CONNECTIONS_PER_ADDR \
                    or sum(self._open.values()) >= MAX_CONNECTIONS:
                return False
            self._open[addr] = self._open.get(addr, 0) + 1
            return True

    def release(self, addr: str) -> None:
        with self._lock:
            left = self._open.get(addr, 0) - 1
            if left > 0:
                self._open[addr] = left
            else:
                self._open.pop(addr, None)


def chaos_rendezvous_handler(driver: ChaosDriver):
    """Horovod's elastic rendezvous handler plus the scopes of :mod:`~chaos_hvd.join.wire`.

    Anyone on the network reaches it, so besides the scopes' signatures: the request line, the
    headers and the body must all arrive within REQUEST_DEADLINE_S (Horovod's 3 s is per read: a
    byte every 2 s held a thread for ever), at most MAX_CONNECTIONS_PER_ADDR connections per peer
    address and MAX_CONNECTIONS in all, every body is read under one Content-Length rule before
    Horovod's own handler sees it, and nothing but GET, PUT and DELETE of ``/scope/key`` is
    answered (Horovod's handler derives from ``SimpleHTTPRequestHandler``: its HEAD told the size
    and date of files in the launcher's working directory)."""
    base = create_rendezvous_handler(driver)
    connections = _Connections()

    class ChaosRendezvousHandler(base):
        def setup(self):
            super().setup()
            self._peer = self.client_address[0]
            self._admitted = connections.admit(self._peer)
            # a long-polling GET (a worker waiting at Horovod's reset barrier) may wait for its
            # answer as long as it takes; only reading the request is timed
            connections.start_deadline(self.connection)

        def handle(self):
            if not self._admitted:
                log.warning("rendezvous connection from %s refused: too many open", self._peer)
                return
            super().handle()

        def finish(self):
            connections.request_read(self.connection)
            if self._admitted:
                connections.release(self._peer)
            try:
                super().finish()
            except OSError:
                pass

        def _read(self):
            connections.request_read(self.connection)

        def do_HEAD(self):
            self._read()
            self._refuse("HEAD is not served")

        def do_DELETE(self):
            self._read()
            if _split(self.path) is None:
                return self._refuse("not /scope/key")
            return super().do_DELETE()

        def do_GET(self):
            self._read()
            where = _split(self.path)
            if where is None:
                return self._refuse("not /scope/key")
            if where[0] not in wire.GET_SCOPES:
                return super().do_GET()
            scope, key = where
            try:
                if scope == wire.SOURCES:
                    body = driver.sources()
                elif scope == wire.WANTED:
                    body = b"1" if driver.offers_wanted() else None
                elif scope == wire.WORLD:
                    body = driver.world_status(wire.check_nonce(key))
                else:
                    body = driver.verdict(*wire.parse_slot_key(key))
            except PeerMessageError as e:
                return self._refuse(str(e))
            if body is None:
                return self.send_status_code(404)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            where = _split(self.path)
            if where is None:
                self._read()
                return self._refuse("not /scope/key")
            body = _read_body(self)
            self._read()
            if body is None:
                return self._refuse("missing, malformed or too large Content-Length")
            if where[0] not in wire.PUT_SCOPES:
                # Horovod's own scopes: its handler reads the body we already read, checked
                self.rfile = io.BytesIO(body)
                return super().do_PUT()
            scope, key = where
            try:
                if scope == wire.SOURCE:
                    driver.put_source(key, body)
                else:
                    instance, version = wire.decode_ready(driver._standby.secret, key, body)
                    driver.standby_ready(*wire.parse_slot_key(key), instance, version)
            except PeerMessageError as e:
                return self._refuse(str(e))
            self.send_status_code(200)

        def _refuse(self, why: str):
            log.warning("rendezvous request %s %s from %s refused: %s", self.command,
                        self.path[:100], self.client_address[0], why)
            self.send_status_code(400)

    return ChaosRendezvousHandler


def install(standby: StandbySettings) -> None:
    """Make Horovod's Gloo elastic launcher use :class:`ChaosDriver` (for this process)."""
    make_worker_fn = gloo_run._create_elastic_worker_fn
    made: list[ChaosDriver] = []

    def driver_factory(*args, **kwargs) -> ChaosDriver:
        made.append(ChaosDriver(*args, standby=standby, **kwargs))
        return made[-1]

    def worker_fn(exec_command, run_command, env, event):
        made[-1].enable_standbys(StandbyLaunch(exec_command, run_command, env, event,
                                               make_worker_fn))
        return make_worker_fn(exec_command, run_command, env, event)

    gloo_run.ElasticDriver = driver_factory
    gloo_run.create_rendezvous_handler = chaos_rendezvous_handler
    gloo_run._create_elastic_worker_fn = worker_fn
