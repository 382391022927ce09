"""What an agent believes about its links: reachability with hysteresis, RTT, measured rates. Pure.

``LinkWatch`` turns ping/pong arrivals into a per-peer up/down state. A link goes *down* when no
pong came for ``down_after_s``; it comes back *up* only after pongs kept arriving for
``up_after_s`` (hysteresis), so a lossy link does not make both ends report up and down in turn
and churn views; in between it has no opinion. Both ends of a pair report, so a link is noticed
even when one end is cut off.

``RateTable`` holds the measured goodput of each direction (Mbit/s), RTT and when it was measured;
agents gossip their probe results and keep the newest figure per direction.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Peer:
    first_ping: float | None = None  # when we started asking
    first_ok: float | None = None    # start of the current run of pongs
    last_ok: float | None = None
    up: bool = False
    rtt_s: float | None = None


class LinkWatch:
    def __init__(self, down_after_s: float, up_after_s: float, rtt_alpha: float = 0.25):
        if not (down_after_s > 0 and up_after_s >= 0):
            raise ValueError("down_after_s must be positive, up_after_s non-negative")
        self.down_after_s, self.up_after_s, self.alpha = down_after_s, up_after_s, rtt_alpha
        self.peers: dict[str, _Peer] = {}

    def ping(self, peer: str, now: float) -> None:
        p = self.peers.setdefault(peer, _Peer())
        if p.first_ping is None:
            p.first_ping = now

    def pong(self, peer: str, rtt_s: float, now: float) -> None:
        p = self.peers.setdefault(peer, _Peer())
        if p.last_ok is None or now - p.last_ok > self.down_after_s:
            p.first_ok = now              # a new run of replies after silence: was down
            p.up = False
        p.last_ok = now
        p.rtt_s = rtt_s if p.rtt_s is None else (1 - self.alpha) * p.rtt_s + self.alpha * rtt_s

    def state(self, peer: str, now: float) -> str | None:
        """'up' (a steady run of replies), 'down' (silence for down_after_s, or never a reply
        since we began asking that long ago) or None: no opinion yet (replies just resumed, or
        we just began). Only 'up' and 'down' are reported, so the two ends of a link that see
        it at slightly different moments never report opposite things."""
        p = self.peers.get(peer)
        if p is None:
            return None
        if p.last_ok is None:
            late = p.first_ping is not None and now - p.first_ping > self.down_after_s
            return "down" if late else None
        if now - p.last_ok > self.down_after_s:
            p.up = False
            return "down"
        if not p.up and now - p.first_ok >= self.up_after_s:
            p.up = True
        return "up" if p.up else None

    def is_up(self, peer: str, now: float) -> bool:
        return self.state(peer, now) == "up"

    def rtt_ms(self, peer: str) -> float | None:
        p = self.peers.get(peer)
        return None if p is None or p.rtt_s is None else p.rtt_s * 1e3

    def forget(self, keep: set[str]) -> None:
        for peer in set(self.peers) - keep:
            del self.peers[peer]


@dataclass(frozen=True)
class Rate:
    mbps: float
    rtt_ms: float | None
    measured_unix: float


class RateTable:
    """(src, dst) -> newest Rate of that direction."""

    def __init__(self):
        self.rates: dict[tuple[str, str], Rate] = {}

    def update(self, src: str, dst: str, rate: Rate) -> bool:
        old = self.rates.get((src, dst))
        if old is not None and old.measured_unix >= rate.measured_unix:
            return False
        self.rates[(src, dst)] = rate
        return True

    def merge(self, rows: list) -> int:
        """Rows as gossiped: [src, dst, mbps, rtt_ms, unix]. Returns how many were newer."""
        return sum(self.update(s, d, Rate(float(m), r, float(t))) for s, d, m, r, t in rows)

    def rows(self, involving: str | None = None) -> list[list]:
        return [[s, d, r.mbps, r.rtt_ms, r.measured_unix] for (s, d), r in sorted(self.rates.items())
                if involving is None or involving in (s, d)]

    def restrict(self, members: set[str]) -> None:
        self.rates = {k: v for k, v in self.rates.items() if k[0] in members and k[1] in members}
