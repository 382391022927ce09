"""Waiting for a condition with a deadline: the one poll loop of the project.

Pure apart from the clock and sleeping. :func:`wait_until` returns the condition's first truthy
value; on timeout it raises :class:`~chaos_hvd.errors.WaitTimeout` naming what it waited for.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from .errors import WaitTimeout

T = TypeVar("T")


class Deadline:
    """A point on the monotonic clock."""

    def __init__(self, timeout_s: float):
        self.at = time.monotonic() + timeout_s

    def left_s(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at


def wait_until(condition: Callable[[], T], timeout_s: float, what: str = "condition", *,
               interval_s: float = 0.05, retry_on: tuple[type[BaseException], ...] = (),
               give_up: Callable[[], str | None] | None = None) -> T:
    """Poll `condition` until it returns something truthy.

    `retry_on`: exceptions that count as "not yet". `give_up`: called after each miss; a string
    it returns ends the wait at once with WaitTimeout carrying that reason (e.g. the process
    being waited on exited). The condition is always tried once more after the deadline.
    """
    deadline = Deadline(timeout_s)
    while True:
        try:
            value = condition()
        except retry_on:
            value = None
        if value:
            return value
        reason = give_up() if give_up is not None else None
        if reason:
            raise WaitTimeout(f"gave up waiting for {what}: {reason}")
        if deadline.passed:
            raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(min(interval_s, max(deadline.left_s(), 0.001)))
