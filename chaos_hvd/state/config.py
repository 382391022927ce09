"""Configuration of ChaosState: arguments, or ``CHAOS_*`` environment variables (which horovodrun
forwards to every worker). Pure parsing; no Horovod.

Bandwidth (``CHAOS_BANDWIDTH``) -- an inline spec or ``@path`` to a YAML file. Rates are read as
in topology files (:mod:`chaos_hvd.units`): a bare number is Mbit/s, or give a unit (``1.2Gbit``):

    inline:  "default=100, 10.0.0.1=78.3, 10.0.0.2=47.2Mbit, 10.0.0.1>10.0.0.6=50, >10.0.0.6=300"
    YAML:    {default: 100, hosts: {10.0.0.1: 78.3}, links: {"10.0.0.1>10.0.0.6": 50Mbit},
              ingress: {10.0.0.6: 300}}

``HOST=R`` is the egress rate of a host (as Horovod names it: ``HOROVOD_HOSTNAME``), ``A>B=R`` the rate
of one direction of one pair, ``>B=R`` the ingress cap of B. Hosts without a figure get ``default``;
with no figures at all the sync splits evenly over the sources (no information, no preference).

Measured rates: ``CHAOS_AGENT_SOCKET`` names the local cluster agent's socket (``{host}`` is
replaced by ``HOROVOD_HOSTNAME``); what the agent measured overrides the static figures above.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Mapping

from ..errors import ConfigError
from ..rules import RuleError, check_host, env_seconds, parse_int, parse_number, parse_seconds
from ..units import UnitError, parse_rate_bps
from ..yamldoc import Reader, load_file
from .checkpoint_store import open_store
from .kinds import Algorithm, Strategy

STRATEGIES = tuple(Strategy)
MBIT = 1e6 / 8  # bytes per second in one Mbit/s
MAX_ENTRIES = 100_000
MAX_CHUNK_BYTES = 64 * 1024 * 1024    # one range request of the shard server at most
MAX_TIMEOUT_S = 24 * 3600.0
MIN_MBPS, MAX_MBPS = 1e-3, 1e7   # 1 kbit/s .. 10 Tbit/s: anything else is a typo


def _rate(value, where: str) -> float:
    """Mbit/s from a bare number (Mbit/s, as in topologies) or a rate with a unit (``100Mbit``)."""
    if isinstance(value, str):
        value = value.strip()
    try:
        mbps = parse_rate_bps(value, "rate") / 1e6
    except UnitError as e:
        raise ConfigError(f"{where}: {e}") from None
    if not MIN_MBPS <= mbps <= MAX_MBPS:
        raise ConfigError(f"{where}: {mbps:g} Mbit/s is outside {MIN_MBPS:g}..{MAX_MBPS:g}")
    return mbps


@dataclass(frozen=True)
class BandwidthMap:
    """Link figures in Mbit/s, keyed by host names."""

    default_mbps: float | None = None
    hosts: Mapping[str, float] = field(default_factory=dict)
    links: Mapping[tuple[str, str], float] = field(default_factory=dict)
    ingress: Mapping[str, float] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.default_mbps is None and not (self.hosts or self.links or self.ingress)

    def egress_mbps(self, host: str) -> float | None:
        return self.hosts.get(host, self.default_mbps)

    @classmethod
    def from_agent_rates(cls, rows: list) -> "BandwidthMap":
        """Agent rate rows [src, dst, mbps, rtt_ms, unix]: each measured direction is a link
        figure, and a host's egress is the best rate measured out of it (a lower bound on what
        it can serve). Ingress caps are not guessed: one probe at a time cannot show them."""
        links = {(s, d): float(m) for s, d, m, _, _ in rows}
        hosts: dict[str, float] = {}
        for (s, _), m in links.items():
            hosts[s] = max(hosts.get(s, 0.0), m)
        return cls(None, hosts, links, {})

    def over(self, static: "BandwidthMap") -> "BandwidthMap":
        """These (measured) figures win; `static` fills what was not measured."""
        return BandwidthMap(static.default_mbps, {**static.hosts, **self.hosts},
                            {**static.links, **self.links}, {**static.ingress, **self.ingress})

    @classmethod
    def parse(cls, spec: str) -> "BandwidthMap":
        spec = spec.strip()
        if not spec:
            return cls()
        if spec.startswith("@"):
            return cls.from_file(spec[1:])
        default, hosts, links, ingress = None, {}, {}, {}
        seen: set[str] = set()
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key or "=" in value:
                raise ConfigError(f"bandwidth entry {item!r}: expected KEY=RATE")
            if len(key) > 511 or not key.isprintable():
                raise ConfigError(f"bandwidth entry {item[:40]!r}: not a host name")
            where = f"bandwidth entry {item[:60]!r}"
            rate = _rate(value, f"bandwidth entry {item!r}")
            if key in seen:
                raise ConfigError(f"bandwidth entry {item!r}: {key!r} is given twice")
            seen.add(key)
            if key in ("default", "*"):
                default = rate
            elif key.startswith(">"):
                host = key[1:].strip()
                if not host or ">" in host:
                    raise ConfigError(f"bandwidth entry {item!r}: ingress must be written >HOST")
                ingress[check_host(host, where)] = rate
            elif ">" in key:
                a, b = (p.strip() for p in key.split(">", 1))
                if not a or not b or ">" in b:
                    raise ConfigError(f"bandwidth entry {item!r}: pair must be A>B")
                links[(check_host(a, where), check_host(b, where))] = rate
            else:
                hosts[check_host(key, where)] = rate
        return cls(default, hosts, links, ingress)

    @classmethod
    def from_file(cls, path: str) -> "BandwidthMap":
        doc = load_file(path, ConfigError, "bandwidth file")
        if doc is None:
            return cls()
        top = Reader(doc, "", path, ConfigError)
        top.check_keys(("default", "hosts", "links", "ingress"))
        default = _rate(doc["default"], top.where("default")) if "default" in doc else None
        tables = {}
        for key in ("hosts", "links", "ingress"):
            if doc.get(key) is None:
                tables[key] = {}
                continue
            sub = top.child(key)
            if len(sub.data) > MAX_ENTRIES:
                sub.fail(f"more than {MAX_ENTRIES} entries")
            tables[key] = {_name(k, sub): _rate(v, sub.where(k)) for k, v in sub.data.items()}
            if key != "links":
                for k in tables[key]:
                    _host(k, k, sub)
        links = {}
        for k, rate in tables["links"].items():
            a, sep, b = k.partition(">")
            if not sep or not a.strip() or not b.strip() or ">" in b:
                top.child("links").fail(f"link key {k!r} must be 'A>B'", k)
            links[(_host(a.strip(), k, top.child("links")),
                   _host(b.strip(), k, top.child("links")))] = rate
        return cls(default, tables["hosts"], links, tables["ingress"])


def _name(key, r: Reader) -> str:
    """A host name or pair key: printable text without NUL, of sane length."""
    if not isinstance(key, (str, int, float)) or isinstance(key, bool):
        r.fail(f"key {key!r} is not a host name")
    key = str(key)
    if not key or len(key) > 255 or not key.isprintable():
        r.fail(f"key {key[:40]!r} is not a host name", key)
    return key


def _host(name: str, key, r: Reader) -> str:
    """A host name by the one rule (:func:`chaos_hvd.rules.check_host`), located at `key`."""
    try:
        return check_host(name, "host")
    except RuleError:
        r.fail(f"key {str(key)[:60]!r}: {name[:40]!r} is not a host name", key)


def env_number(env, name, default, kind: type = float, lo: float = 0, hi: float = 1 << 62):
    """An int or a finite float in [lo, hi] from the environment, by the one rule
    (:mod:`chaos_hvd.rules`: ASCII digits, no ``1_0``); the default when unset or empty."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if kind is int:
        return parse_int(raw, name, int(lo), int(hi))
    return parse_number(raw, name, lo, hi)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _env_bool(env, name, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ConfigError(f"{name}={raw!r}: use one of {', '.join(_TRUE + _FALSE)}")
    return word in _TRUE


@dataclass(frozen=True)
class ChaosConfig:
    strategy: Strategy = Strategy.CHAOS
    scheduler: Algorithm = Algorithm.OPTIMAL
    bandwidth: BandwidthMap = field(default_factory=BandwidthMap)
    event_log: str | None = None
    checkpoint_dir: str | None = None
    chunk_bytes: int = 256 * 1024
    transfer_timeout_s: float = 30.0
    port: int = 0
    advertise_addr: str | None = None
    verify: bool = True
    peer_watch: bool = True
    agent_socket: str | None = None      # measured rates from the local cluster agent

    def __post_init__(self) -> None:
        for name, kind in (("strategy", Strategy), ("scheduler", Algorithm)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                raise ConfigError(f"{name} {value!r}: choose one of "
                                  f"{', '.join(kind)}") from None
        if not 64 <= self.chunk_bytes <= MAX_CHUNK_BYTES or self.chunk_bytes % 64:
            raise ConfigError(f"chunk_bytes must be a multiple of 64 in 64..{MAX_CHUNK_BYTES}, "
                              f"got {self.chunk_bytes}")
        parse_seconds(self.transfer_timeout_s, "transfer_timeout_s", MAX_TIMEOUT_S)
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} out of range")
        if self.strategy == Strategy.CHECKPOINT and not self.checkpoint_dir:
            raise ConfigError("the checkpoint strategy needs checkpoint_dir (CHAOS_CHECKPOINT_DIR)")
        if self.checkpoint_dir:
            open_store(self.checkpoint_dir, self.transfer_timeout_s)   # ConfigError if malformed

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "ChaosConfig":
        env = os.environ if env is None else env
        values = dict(
            strategy=env.get("CHAOS_SYNC_STRATEGY", "chaos") or "chaos",
            scheduler=env.get("CHAOS_SCHEDULER", "optimal") or "optimal",
            bandwidth=BandwidthMap.parse(env.get("CHAOS_BANDWIDTH", "")),
            event_log=env.get("CHAOS_EVENT_LOG") or None,
            checkpoint_dir=env.get("CHAOS_CHECKPOINT_DIR") or None,
            chunk_bytes=env_number(env, "CHAOS_CHUNK_BYTES", 256 * 1024, int, 64,
                                   MAX_CHUNK_BYTES),
            transfer_timeout_s=env_seconds(env, "CHAOS_TRANSFER_TIMEOUT_S", 30.0, MAX_TIMEOUT_S),
            port=env_number(env, "CHAOS_PORT", 0, int, 0, 65535),
            advertise_addr=env.get("CHAOS_ADVERTISE_ADDR") or None,
            verify=_env_bool(env, "CHAOS_VERIFY", True),
            peer_watch=_env_bool(env, "CHAOS_PEER_WATCH", True),
            agent_socket=env.get("CHAOS_AGENT_SOCKET") or None,
        )
        if isinstance(overrides.get("bandwidth"), str):
            overrides["bandwidth"] = BandwidthMap.parse(overrides["bandwidth"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes) -> "ChaosConfig":
        return replace(self, **changes)
