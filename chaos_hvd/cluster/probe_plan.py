"""Which bandwidth probes run together: greedy edge colouring of the members graph. Pure.

A probe saturates a link for a moment, so a node in two probes at once would measure half its
rate on each. As in the paper's prototype, the probe schedule is an edge colouring: every member
pair is an edge, each colour class is a matching (no node twice), and the classes run one after
another in fixed slots. Greedy colouring (edges in a fixed order, each takes the lowest colour free
at both ends) uses at most 2*Delta - 1 colours; for a complete graph on n nodes that is about 2n
slots, against n - 1 for an optimal 1-factorisation, which is fine at edge-cluster sizes and needs
no coordination: every member computes the same rounds from the same agreed view.

``first`` edges (those touching a node that just joined) are coloured first, so they land in the
earliest rounds: the joiner's links are measured before anything else.
"""

from __future__ import annotations

from itertools import combinations
from typing import Iterable


def greedy_rounds(edges: Iterable[tuple[str, str]],
                  first: Iterable[str] = ()) -> list[list[tuple[str, str]]]:
    """Rounds of disjoint edges (a, b) with a < b; every edge in exactly one round."""
    first = set(first)
    norm = sorted({(a, b) if a < b else (b, a) for a, b in edges if a != b},
                  key=lambda e: (not (e[0] in first or e[1] in first), e))
    used: dict[str, set[int]] = {}
    rounds: list[list[tuple[str, str]]] = []
    for a, b in norm:
        busy = used.setdefault(a, set()) | used.setdefault(b, set())
        c = next(i for i in range(len(busy) + 1) if i not in busy)
        if c == len(rounds):
            rounds.append([])
        rounds[c].append((a, b))
        used[a].add(c)
        used[b].add(c)
    return rounds


def probe_rounds(members: Iterable[str], first: Iterable[str] = ()) -> list[list[tuple[str, str]]]:
    """The schedule for a view: every member pair, joiners' pairs first."""
    return greedy_rounds(combinations(sorted(set(members)), 2), first)


def my_probes(rounds: list[list[tuple[str, str]]], me: str) -> list[tuple[int, str]]:
    """(round, peer) of the probes this node leads: the lower id of a pair runs it."""
    return [(i, b) for i, rnd in enumerate(rounds) for a, b in rnd if a == me]
