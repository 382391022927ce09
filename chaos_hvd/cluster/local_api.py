"""The agent's local API: one JSON-line request per connection on a Unix socket (mode 0600).

Requests (:mod:`chaos_hvd.jsonline`, bounded): ``view`` (members, links, slots, epoch, coordinator,
whether this agent may train), ``status`` (the view plus pending changes, RTTs, measured rates,
resources, counters), ``bandwidth`` (measured rates of the links the view has up, for ChaosState's scheduler), ``observe``
(report a change as the monitor would), ``leave``. Used by ``chaos-hvd discover|status|leave|
observe`` and ChaosState; a malformed request gets the error envelope.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from .. import jsonline
from ..errors import MalformedMessage, PeerMessageError, RequestError
from . import wire
from .linkstate import LinkWatch, RateTable
from .protocol import Member, link

REQUEST_TIMEOUT_S = 5.0


class AgentSurface(Protocol):
    """What the local API reads and calls on its agent (so this module needs no import of it)."""

    me: str
    member: Member
    watch: LinkWatch
    rates: RateTable
    resources: dict
    counters: dict
    leaving: bool

    @property
    def epoch(self) -> int | None: ...

    def observe(self, change: tuple) -> None: ...

    def leave(self) -> None: ...


class LocalApi:
    def __init__(self, agent: AgentSurface):
        self.agent = agent

    def view_doc(self) -> dict:
        member = self.agent.member
        v = member.view
        return {"id": self.agent.me, "epoch": v.epoch if v else None,
                "members": sorted(v.members) if v else [],
                "links": sorted(map(list, v.links)) if v else [],
                "slots": dict(sorted(v.slots)) if v else {},
                "coordinator": member.coordinator(),
                "can_train": member.can_train(time.monotonic())}

    def status_doc(self) -> dict:
        a = self.agent
        return {**self.view_doc(), "pending": sorted(map(list, a.member.pending)),
                "rtt_ms": {p: a.watch.rtt_ms(p) for p in a.watch.peers},
                "rates": a.rates.rows(), "resources": a.resources,
                "counters": a.counters, "leaving": a.leaving}

    def handle(self, req: dict) -> dict:
        a = self.agent
        op = req.get("op")
        if op == "view":
            return self.view_doc()
        if op == "status":
            return self.status_doc()
        if op == "bandwidth":   # only links the view has up: a down link's old rate misleads
            view = a.member.view
            up = view.links if view is not None else frozenset()
            rates = [r for r in a.rates.rows() if link(r[0], r[1]) in up]
            return {"id": a.me, "epoch": a.epoch, "rates": rates}
        if op == "observe":
            change = req.get("change")
            wire.validate_change(change)
            a.observe(tuple(change))
            return jsonline.ok(epoch=a.epoch)
        if op == "leave":
            a.leave()
            return jsonline.ok()
        raise MalformedMessage(f"unknown op {str(op)[:40]!r}")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
            try:
                reply = self.handle(jsonline.decode(line))
            except (RequestError, PeerMessageError) as e:
                reply = jsonline.error(str(e))
            writer.write(jsonline.encode(reply))
            await writer.drain()
        except (OSError, asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
            pass  # ValueError: asyncio's readline past the stream limit
        finally:
            writer.close()
