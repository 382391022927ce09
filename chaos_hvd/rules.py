"""One rule for each kind of value read from outside: integers, numbers, durations, ports, host
names, agent ids, secrets. Pure.

Command-line arguments, the environment, YAML files and wire messages all read such values; each
reads them through these functions, so no two parsers disagree on one (``٣``, ``²``, ``1_0``,
``-0``, ``0x10`` are integers to Python's ``int()`` or ``str.isdigit()``, and to none of these).
Errors are :class:`RuleError` (a :class:`~chaos_hvd.errors.ConfigError` and a ``ValueError``)
naming what was read; callers that must raise their own type (a wire decoder) wrap it.
"""

from __future__ import annotations

import ipaddress
import math
import re

from .errors import ConfigError

_INT = re.compile(r"[+-]?[0-9]{1,40}")          # re on str: [0-9] is ASCII only
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
MAX_HOST = 253
MIN_SECONDS = 1e-3          # a timeout below a millisecond is a typo, not a setting


class RuleError(ConfigError, ValueError):
    """A value read from outside breaks its rule."""


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise RuleError(f"{what}: expected text, got {type(value).__name__}")
    return value.strip()


def parse_int(value, what: str, lo: int, hi: int) -> int:
    """An integer in lo..hi: a Python int (not a bool), or ASCII digits with a sign only where
    lo < 0 (so ``-0`` is no count)."""
    if isinstance(value, bool):
        raise RuleError(f"{what}: {value!r} is not an integer")
    if isinstance(value, int):
        number = value
    else:
        text = _text(value, what)
        if not _INT.fullmatch(text) or (lo >= 0 and text[0] in "+-"):
            raise RuleError(f"{what}: {value!r} is not an integer"
                            + (" (ASCII digits, no sign)" if lo >= 0 else " (ASCII digits)"))
        number = int(text)
    if not lo <= number <= hi:
        raise RuleError(f"{what}: {number} is outside {lo}..{hi}")
    return number


def parse_number(value, what: str, lo: float, hi: float) -> float:
    """A finite number in [lo, hi]: an int or float, or ASCII decimal text."""
    if isinstance(value, bool):
        raise RuleError(f"{what}: {value!r} is not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = _text(value, what)
        if not _NUMBER.fullmatch(text) or (lo >= 0 and text[0] == "-"):
            raise RuleError(f"{what}: {value!r} is not a finite number"
                            + (" >= 0" if lo >= 0 else "") + " in ASCII decimal notation")
        number = float(text)
    if not math.isfinite(number):
        raise RuleError(f"{what}: {value!r} is not finite")
    if not lo <= number <= hi:
        raise RuleError(f"{what}: {number:g} is outside [{lo:g}, {hi:g}]")
    return number


def parse_seconds(value, what: str, hi: float = 7 * 24 * 3600.0, *,
                  lo: float = MIN_SECONDS) -> float:
    """A duration in seconds, at least a millisecond (``lo=0`` allows zero)."""
    return parse_number(value, what, lo, hi)


def env_seconds(env, name: str, default: float, hi: float) -> float:
    """A duration from the environment: `default` when unset or blank, else at least a
    millisecond and at most `hi` seconds."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return parse_seconds(raw, name, hi)


def parse_port(value, what: str) -> int:
    return parse_int(value, what, 1, 65535)


def check_host(value, what: str) -> str:
    """A host name or dotted IPv4 address: labels of letters, digits, ``-`` and ``_``, at most
    253 characters (no ``:``, ``/``, spaces or non-ASCII)."""
    text = _text(value, what)
    if len(text) > MAX_HOST or not _HOST.fullmatch(text):
        raise RuleError(f"{what}: {str(value)[:80]!r} is not a host name")
    return text


def parse_host_port(value, what: str) -> tuple[str, int]:
    """``host:port``."""
    host, sep, port = _text(value, what).rpartition(":")
    if not sep:
        raise RuleError(f"{what}: {str(value)[:80]!r} is not host:port")
    return check_host(host, what), parse_port(port, what)


def parse_node_id(value, what: str) -> tuple[str, int | None]:
    """A cluster agent's id: ``host``, ``host:port``, an IPv6 address bare or as ``[addr]`` /
    ``[addr]:port``. Returns (host or address, port or None)."""
    text = _text(value, what)
    if len(text) > 255:
        raise RuleError(f"{what}: {text[:80]!r}... is longer than 255 characters")
    if text.startswith("["):
        addr, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise RuleError(f"{what}: {text[:80]!r} is not [address] or [address]:port")
        return _ipv6(addr, what), parse_port(rest[1:], what) if rest else None
    if text.count(":") > 1:
        return _ipv6(text, what), None
    host, sep, port = text.rpartition(":")
    if sep:
        return check_host(host, what), parse_port(port, what)
    return check_host(text, what), None


def _ipv6(text: str, what: str) -> str:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise RuleError(f"{what}: {text[:80]!r} is not an IPv6 address") from None
    return text


def parse_host_slots(value, what: str, max_slots: int = 4096) -> tuple[str, int]:
    """Horovod's ``host:slots`` (``host`` alone: one slot)."""
    text = _text(value, what)
    host, sep, slots = text.rpartition(":")
    if not sep:
        return check_host(text, what), 1
    return check_host(host, what), parse_int(slots, f"{what} (slots)", 1, max_slots)


def parse_secret(value, what: str, min_chars: int = 16) -> str:
    """A shared secret: at least `min_chars` characters that are not white space."""
    text = _text(value, what)
    if len(text) < min_chars or any(c.isspace() for c in text):
        raise RuleError(f"{what}: a secret needs at least {min_chars} characters and no white "
                        "space")
    return text
