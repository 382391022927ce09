"""The cluster monitor's I/O: local resources (psutil) and the light bandwidth probe (asyncio TCP).

**Resources** — CPU %, memory %, 1-minute load, CPU count, and GPU count/utilisation where
``nvidia-smi`` exists; gossiped to every member with the probe results.

**Probe** — no iperf3 needed. The lower id of a pair leads, in its slot of the edge-colouring
schedule (``probe_plan``). Two TCP connections to the peer agent's port (the same number as its
UDP port), each opened by a sealed ``probe`` envelope (wire.py: HMAC, replay guard):

    direction "to_me":   the peer streams for ``seconds``; the leader counts -> rate peer>leader
    direction "from_me": the leader streams; the peer counts and answers a sealed
                         ``probe_result`` {bytes, seconds} -> rate leader>peer

The receiver counts bytes after a warm-up of 20 % of the duration (TCP slow start), so the figure
is the link's goodput, the same unit as the testbed's profiles and the scheduler's input. A node
already in a probe refuses a second one (the schedule should prevent that; clocks may not).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import time

import psutil

from ..errors import PeerMessageError
from . import wire
from .kinds import Msg

_LEN = struct.Struct("!I")
_CHUNK = b"\0" * 65536
MAX_FRAME = 4096
WARMUP = 0.2
FIRST_FRAME_TIMEOUT_S = 2.0     # an unauthenticated connection that says nothing is dropped
MAX_PROBE_CONNECTIONS = 16      # probes run one at a time: more open connections is a flood
MAX_PROBE_CONNECTIONS_PER_ADDR = 4   # a peer leads one probe at a time (loopback clusters share one)


def _gpu_query() -> dict:
    if not shutil.which("nvidia-smi"):
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=2).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    rows = [[float(x) for x in line.split(",")] for line in out if line.strip()]
    if not rows:
        return {}
    return {"gpus": len(rows), "gpu_util_pct": sum(r[0] for r in rows) / len(rows),
            "gpu_mem_mib": sum(r[1] for r in rows)}


class Resources:
    def __init__(self):
        psutil.cpu_percent(None)          # prime: the next call reports usage since now
        self._gpu_checked = 0.0
        self._gpu: dict = {}

    def sample(self) -> dict:
        """This node's resources; {} when they cannot be read now (e.g. out of file handles)."""
        try:
            if time.monotonic() - self._gpu_checked > 10:
                self._gpu, self._gpu_checked = _gpu_query(), time.monotonic()
            return {"cpu_pct": psutil.cpu_percent(None),
                    "mem_pct": psutil.virtual_memory().percent,
                    "load1": os.getloadavg()[0], "cpus": float(psutil.cpu_count() or 1),
                    **self._gpu}
        except (OSError, psutil.Error):
            return {}


# ------------------------------------------------------------------------------------- framing

async def _send_frame(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(_LEN.pack(len(data)) + data)
    await writer.drain()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if n > MAX_FRAME:
        raise wire.OversizedMessage(f"probe frame of {n} bytes (limit {MAX_FRAME})")
    return await reader.readexactly(n)


class _Counter:
    """Bytes received after the warm-up, and over what time."""

    def __init__(self, seconds: float):
        self.warm = seconds * WARMUP
        self.t_first = self.t_warm = self.t_last = None
        self.bytes = 0

    def add(self, n: int, now: float) -> None:
        if self.t_first is None:
            self.t_first = now
        if now - self.t_first >= self.warm:
            if self.t_warm is None:
                self.t_warm = now
            else:
                self.bytes += n
            self.t_last = now

    @property
    def seconds(self) -> float:
        return 0.0 if self.t_warm is None else self.t_last - self.t_warm


async def _count(reader: asyncio.StreamReader, seconds: float) -> _Counter:
    c = _Counter(seconds)
    while True:
        data = await reader.read(1 << 20)
        if not data:
            return c
        c.add(len(data), time.perf_counter())


async def _stream(writer: asyncio.StreamWriter, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        writer.write(_CHUNK)
        await writer.drain()
    writer.write_eof()
    await writer.drain()


def mbps(c_bytes: int, seconds: float) -> float | None:
    return c_bytes * 8 / seconds / 1e6 if seconds > 0 and c_bytes > 0 else None


class ProbeService:
    """Serves probes (one at a time) and runs the ones this node leads."""

    def __init__(self, me: str, secret: bytes, seq: wire.SeqClock, on_reject):
        self.me, self.secret, self.seq = me, secret, seq
        self.on_reject = on_reject      # (reason, peer, detail) -> None: the agent logs it
        self.guard = wire.ReplayGuard()  # probe channel has its own: TCP and UDP may interleave
        self.busy = False
        self.open = 0                    # connections being served now
        self.open_by_addr: dict[str, int] = {}

    def _seal(self, dst: str, body: dict) -> bytes:
        return wire.seal(self.secret, self.me, dst, self.seq.next(time.time_ns()), body)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr = str(peer[0]) if peer else ""
        self.open += 1
        self.open_by_addr[addr] = self.open_by_addr.get(addr, 0) + 1
        try:
            # a cap per address too: one host's silent connections must not fill the port
            if self.open_by_addr[addr] > MAX_PROBE_CONNECTIONS_PER_ADDR:
                raise wire.OversizedMessage(f"more than {MAX_PROBE_CONNECTIONS_PER_ADDR} probe "
                                            f"connections from {addr}")
            if self.open > MAX_PROBE_CONNECTIONS:
                raise wire.OversizedMessage(f"more than {MAX_PROBE_CONNECTIONS} probe connections")
            frame = await asyncio.wait_for(_read_frame(reader), FIRST_FRAME_TIMEOUT_S)
            src, body = wire.open_envelope(self.secret, self.me, frame, self.guard,
                                           time.time_ns())
            if body["type"] != Msg.PROBE:
                raise wire.MalformedMessage(f"{body['type']} on the probe port")
            if self.busy:
                return
            self.busy = True
            try:
                if body["direction"] == "to_me":   # a peer that stops reading ends it too
                    await asyncio.wait_for(_stream(writer, body["seconds"]), body["seconds"] + 5)
                else:
                    c = await asyncio.wait_for(_count(reader, body["seconds"]),
                                               body["seconds"] + 5)
                    await _send_frame(writer, self._seal(src, {"type": Msg.PROBE_RESULT,
                                                               "bytes": c.bytes,
                                                               "seconds": c.seconds}))
            finally:
                self.busy = False
        except PeerMessageError as e:
            self.on_reject(e.reason, str(peer), str(e))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            self.open -= 1
            left = self.open_by_addr.get(addr, 1) - 1
            if left:
                self.open_by_addr[addr] = left
            else:
                self.open_by_addr.pop(addr, None)
            writer.close()

    async def lead(self, peer: str, host: str, port: int, seconds: float
                   ) -> tuple[float | None, float | None]:
        """(Mbit/s peer>me, Mbit/s me>peer); None where the peer refused or the link failed."""
        if self.busy:
            return None, None
        self.busy = True
        try:
            return (await self._session(peer, host, port, "to_me", seconds),
                    await self._session(peer, host, port, "from_me", seconds))
        finally:
            self.busy = False

    async def _session(self, peer, host, port, direction, seconds) -> float | None:
        """One probe connection: "to_me" counts what the peer streams, "from_me" streams and
        reads the peer's sealed count."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
        except (OSError, asyncio.TimeoutError):
            return None
        try:
            await _send_frame(writer, self._seal(peer, {"type": Msg.PROBE, "direction": direction,
                                                         "seconds": seconds}))
            if direction == "to_me":
                c = await asyncio.wait_for(_count(reader, seconds), seconds + 5)
                return mbps(c.bytes, c.seconds)
            await asyncio.wait_for(_stream(writer, seconds), seconds + 5)
            src, body = wire.open_envelope(self.secret, self.me,
                                           await asyncio.wait_for(_read_frame(reader), 5),
                                           self.guard, time.time_ns())
            if src != peer or body["type"] != Msg.PROBE_RESULT:
                raise wire.MalformedMessage(f"probe reply {body['type']} from {src}")
            return mbps(body["bytes"], body["seconds"])
        except PeerMessageError as e:
            self.on_reject(e.reason, peer, str(e))
            return None
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            return None
        finally:
            writer.close()
