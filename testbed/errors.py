"""Typed errors of the testbed. Every message names what was wrong and, for files, where."""

from __future__ import annotations


class TestbedError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    __test__ = False  # not a pytest test class
    exit_code = 1


class InputError(TestbedError):
    """A malformed file or argument. ``where`` is 'path:line:column' when known."""

    exit_code = 2

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class TopologyError(InputError):
    """The topology file is malformed or describes an impossible network."""


class ScheduleError(InputError):
    """The fault schedule is malformed or names things the topology does not have."""


class NotRootError(TestbedError):
    exit_code = 77


class CapabilityError(TestbedError):
    """The kernel or the machine lacks something the requested emulation needs."""

    exit_code = 3


class VerificationError(TestbedError):
    """Measured link behaviour is outside tolerance of what was configured."""

    exit_code = 4


class CommandError(TestbedError):
    """A system command the testbed ran failed."""
