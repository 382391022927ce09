"""Fast crash detection: notice a dead peer at once and make Horovod fail over without waiting.

Why: when a worker is SIGKILLed, only its Gloo neighbours see the broken connection; the other ranks
block in their collective until Gloo's timeout (30 s by default; measured here). Lowering the Gloo
timeout would raise false alarms on slow edge links, where one large all-reduce step can take longer.

How: after each sync every rank opens one small "watch" connection to every peer's shard server.
A process that exits normally says ``bye`` first (atexit); a killed one cannot, and its kernel closes
the socket, so the watcher sees EOF/RST within milliseconds -- no timeout involved, so a slow link is
never mistaken for a dead peer. A peer whose server already refuses the watch died between the sync
and the watch: dead too. While armed (training between a sync and the next reset), a death calls
the owner's ``on_dead``: ChaosState aborts its Horovod world from the inside (our Horovod build's
``horovod_chaos_abort``, :class:`~chaos_hvd.state.adapter.WorldAbort`), or, against a Horovod
without that patch, calls :func:`abort_gloo_sockets`: it shuts down this process's established
Gloo TCP connections. Gloo's sockets belong to C++ code: no Python socket object holds them. So
every established connection whose descriptor a live Python socket owns is left alone (the user's
data loaders, loggers and database clients written in Python, our own shard server and watches),
and so are the excluded ports (Horovod's notification service and rendezvous server). Either way
the blocked collective then fails immediately with ``HorovodInternalError`` -- the same path
Gloo's own timeout takes -- and Horovod's elastic loop restores the last commit and resets.
psutil lists the process's connections. From the reset to the end of the next sync
:mod:`world_guard` takes over.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from typing import Callable, Iterable

import psutil

from . import transfer

log = logging.getLogger(__name__)

MEMBERSHIP_POLL_S = 0.2
REPEAT_EVERY_S = 0.5      # after an abort, abort again while the collective has not given up
REPEAT_FOR_S = 15.0


def established_tcp() -> list[tuple[int, int, int]]:
    """(fd, local_port, remote_port) of this process's ESTABLISHED TCP sockets (psutil)."""
    try:
        conns = psutil.Process().net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return []
    return [(c.fd, c.laddr.port, c.raddr.port) for c in conns
            if c.status == psutil.CONN_ESTABLISHED and c.fd >= 0 and c.raddr]


def tcp_connection_summary() -> str:
    """This process's TCP connections as 'status:local->remote[py]' (py: a Python socket owns the
    descriptor), for a log line when a collective outlives an abort."""
    try:
        conns = psutil.Process().net_connections(kind="tcp")
    except (psutil.Error, OSError) as e:
        return f"unavailable ({e})"
    owned = python_socket_fds()
    return " ".join(f"{c.status}:{c.laddr.port}->{c.raddr.port if c.raddr else '-'}"
                    f"{'[py]' if c.fd in owned else ''}" for c in conns
                    if c.status != psutil.CONN_LISTEN)


def thread_stacks() -> str:
    """Every thread's Python stack (innermost call last), for a log line when a collective
    outlives an abort: shows which call the main thread is blocked in."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame, limit=12))
        parts.append(f"--- thread {names.get(ident, ident)}\n{stack}")
    return "\n".join(parts)


def native_stacks(timeout_s: float = 60.0) -> str | None:
    """Every thread's C/C++ stack through gdb when CHAOS_NATIVE_STACKS=1 and gdb is installed
    (CI sets it): a collective blocked inside Horovod or Gloo shows only as a wait in Python."""
    gdb = shutil.which("gdb")
    if os.environ.get("CHAOS_NATIVE_STACKS") != "1" or gdb is None:
        return None
    try:
        # symbols of Horovod (with Gloo inside) and libc only: loading torch's takes ~20 s
        done = subprocess.run([gdb, "-batch", "-nx", "-iex", "set auto-solib-add off",
                               "-p", str(os.getpid()), "-ex", "sharedlibrary mpi_lib",
                               "-ex", "sharedlibrary libc.so", "-ex", "thread apply all bt 30"],
                              capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError) as e:
        return f"gdb failed: {e}"
    keep = [ln for ln in done.stdout.splitlines() if ln.startswith(("Thread ", "#"))]
    return "\n".join(keep[:600])


def python_socket_fds() -> set[int]:
    """Descriptors owned by live Python socket objects (never Gloo's: its sockets are C++)."""
    fds = set()
    for obj in gc.get_objects():
        if issubclass(type(obj), socket.socket):   # type(): no __class__ properties run
            try:
                fd = obj.fileno()
            except OSError:
                continue
            if fd >= 0:
                fds.add(fd)
    return fds


def abort_gloo_sockets(exclude_local_ports: Iterable[int], exclude_remote_ports: Iterable[int]) -> int:
    """Shut down this process's established TCP connections that no Python socket owns and that
    are not excluded; returns how many."""
    local, remote = set(exclude_local_ports), set(exclude_remote_ports)
    owned = python_socket_fds()
    n = 0
    for fd, lport, rport in established_tcp():
        if fd in owned or lport in local or rport in remote:
            continue
        try:
            s = socket.socket(fileno=os.dup(fd))
            try:
                s.shutdown(socket.SHUT_RDWR)  # acts on the shared socket, so Gloo's fd sees it too
                n += 1
            finally:
                s.close()
        except OSError:
            pass
    return n


class PeerWatch:
    """Watches peers' shard servers; calls on_dead(peer id) for a peer that vanished without 'bye'."""

    def __init__(self, on_dead: Callable[[transfer.PeerId], None],
                 on_still_blocked: Callable[[], None] | None = None):
        """`on_dead(peer)` runs once per armed period; `on_still_blocked()` then runs every
        REPEAT_EVERY_S until the owner disarms (its reset began) or REPEAT_FOR_S passed: a
        connection the first abort did not list (opened meanwhile, or not yet established when
        it looked) must not leave the collective waiting for Gloo's timeout."""
        self._on_dead = on_dead
        self._on_still_blocked = on_still_blocked
        self._lock = threading.Lock()
        self._generation = 0
        self._socks: list[socket.socket] = []
        self._bye: set[transfer.PeerId] = set()
        # the last armed period, for describe(): when, each watch's state, whom it fired for
        self._armed_at = 0.0
        self._states: dict[transfer.PeerId, str] = {}
        self._fired: transfer.PeerId | None = None

    def arm(self, peers: Iterable[transfer.Peer], version: int, connect_timeout_s: float = 10.0,
            hosts: dict[transfer.PeerId, str] | None = None,
            members: Callable[[], set[str] | None] | None = None,
            poll_s: float = MEMBERSHIP_POLL_S) -> None:
        """Watch `peers`. With `members` (the cluster agents' agreed members, or None when no
        answer can be trusted now) and each peer's `hosts` entry, a peer whose host left the
        agreed membership without saying bye is dead too: a host that vanished silently (power
        loss, cut link) never closes its sockets, but its agents stop hearing it."""
        self.disarm()
        peers = list(peers)
        with self._lock:
            gen = self._generation
            self._bye = set()
            self._armed_at, self._fired = time.monotonic(), None
            self._states = {p.id: "connecting" for p in peers}
        for peer in peers:
            threading.Thread(target=self._watch, args=(peer, version, gen, connect_timeout_s),
                             name=f"chaos-watch-{peer.id}", daemon=True).start()
        if members is not None and hosts:
            watched = {p.id: hosts[p.id] for p in peers if p.id in hosts}
            threading.Thread(target=self._poll_members, args=(watched, members, gen, poll_s),
                             name="chaos-watch-members", daemon=True).start()

    def _poll_members(self, hosts: dict[transfer.PeerId, str],
                      members: Callable[[], set[str] | None], gen: int, poll_s: float) -> None:
        while True:
            with self._lock:
                if gen != self._generation:
                    return
            agreed = members()
            if agreed is not None:
                lost = sorted(p for p, h in hosts.items() if h not in agreed)
                with self._lock:
                    lost = [p for p in lost if p not in self._bye]
                if lost:
                    log.warning("rank(s) %s: host left the agents' view without a goodbye", lost)
                    self._fire(gen, lost[0])
                    return
            time.sleep(poll_s)

    def _fire(self, gen: int, peer: transfer.PeerId) -> None:
        # Act under the lock: disarm() (called by restore/reset before Horovod re-initialises)
        # waits for an abort in progress, so an abort can never hit the next Gloo context.
        with self._lock:
            if gen != self._generation:
                return
            self._generation += 1  # one abort per armed period
            self._fired = peer
            self._on_dead(peer)
        if self._on_still_blocked is not None:
            threading.Thread(target=self._repeat, args=(gen + 1,), name="chaos-watch-repeat",
                             daemon=True).start()

    def _repeat(self, gen: int) -> None:
        deadline = time.monotonic() + REPEAT_FOR_S
        while time.monotonic() < deadline:
            time.sleep(REPEAT_EVERY_S)
            with self._lock:       # disarm() waits for us: never the next Gloo context
                if gen != self._generation:
                    return
                self._on_still_blocked()

    def disarm(self) -> None:
        with self._lock:
            self._generation += 1
            socks, self._socks = self._socks, []
        for s in socks:
            # shutdown first: close() alone from this thread neither wakes the watch thread
            # blocked in recv() nor ends the connection (the blocked call keeps the socket
            # open), so every disarmed watch would stay connected to its peer's server -- a
            # thread here and a connection there per peer and reset -- until that peer exits
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _watch(self, peer: transfer.Peer, version: int, gen: int, timeout_s: float) -> None:
        sock = None
        try:
            sock = socket.create_connection((peer.host, peer.port), timeout=timeout_s)
            transfer.send_frame(sock, transfer.request(peer.token, (peer.host, peer.port),
                                                       "watch", version))
            reply = transfer.recv_reply(sock)
            if not reply.ok:
                raise transfer.AuthenticationError(f"refused: {str(reply.error)[:200]}")
            sock.settimeout(None)
        except (OSError, transfer.AuthenticationError) as e:
            if sock is not None:
                sock.close()
            if isinstance(e, ConnectionError):
                # refused, reset or closed: its process is gone (its server lives as long as it
                # does), and it died between the sync that named it and this watch
                log.warning("rank %s died before its crash watch was set up (%s)", peer.id, e)
                self._note(gen, peer.id, f"gone before set up ({e})")
                self._fire(gen, peer.id)
                return
            # could not establish a watch: Gloo's timeout remains the fallback, so say so
            log.warning("no crash watch on rank %s (%s:%s): %s", peer.id, peer.host, peer.port, e)
            self._note(gen, peer.id, f"not set up ({e})")
            return
        with self._lock:
            if gen != self._generation:
                sock.close()
                return
            self._socks.append(sock)
            self._states[peer.id] = f"watching since {self._since()}"
        try:
            msg = transfer.recv_reply(sock)
            if msg.bye:
                with self._lock:
                    self._bye.add(peer.id)
                self._note(gen, peer.id, "said bye")
                return
            why = "an unexpected reply"
        except (OSError, transfer.AuthenticationError, ConnectionError) as e:
            why = type(e).__name__
        self._note(gen, peer.id, f"ended ({why})")
        self._fire(gen, peer.id)

    def _since(self) -> str:
        return f"+{time.monotonic() - self._armed_at:.3f} s"

    def _note(self, gen: int, peer: transfer.PeerId, what: str) -> None:
        """Record a watch's state for describe() while its period is armed: a disarm (or a
        fire) moves the generation on and freezes the period's story until the next arm, so
        the watches that a disarm's shutdown wakes are not told as peers that ended."""
        with self._lock:
            if gen == self._generation and peer in self._states:
                self._states[peer] = f"{what} at {self._since()}"

    def describe(self) -> str:
        """The last armed period: its age, each watch's state, whom it fired for. Logged when a
        collective failed without this watch's abort, to see why the watch did not act."""
        with self._lock:
            states = ", ".join(f"rank {p}: {s}" for p, s in sorted(self._states.items()))
            return (f"armed {time.monotonic() - self._armed_at:.3f} s ago, fired for "
                    f"{'nobody' if self._fired is None else f'rank {self._fired}'}; {states}")

    @property
    def fired(self) -> bool:
        """Whether the last armed period fired."""
        with self._lock:
            return self._fired is not None
