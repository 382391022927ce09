"""Configuration of ChaosState: arguments, or ``CHAOS_*`` environment variables (which horovodrun
forwards to every worker). Pure parsing; no Horovod.

Bandwidth (``CHAOS_BANDWIDTH``, Mbit/s) -- an inline spec or ``@path`` to a YAML file:

    inline:  "default=100, 10.0.0.1=78.3, 10.0.0.2=47.2, 10.0.0.1>10.0.0.6=50, >10.0.0.6=300"
    YAML:    {default: 100, hosts: {10.0.0.1: 78.3}, links: {"10.0.0.1>10.0.0.6": 50},
              ingress: {10.0.0.6: 300}}

``HOST=R`` is the egress rate of a host (as Horovod names it: ``HOROVOD_HOSTNAME``), ``A>B=R`` the rate
of one direction of one pair, ``>B=R`` the ingress cap of B. Hosts without a figure get ``default``;
with no figures at all the sync splits evenly (the issue's rule for "no information").

Measured rates: ``CHAOS_AGENT_SOCKET`` names the local cluster agent's socket (``{host}`` is
replaced by ``HOROVOD_HOSTNAME``); what the agent measured overrides the static figures above.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Mapping

import yaml

from ..errors import ConfigError
from .kinds import Algorithm, Strategy

STRATEGIES = tuple(Strategy)
MBIT = 1e6 / 8  # bytes per second in one Mbit/s


def _rate(text, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {text!r} is not a number of Mbit/s") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: rate must be positive and finite, got {text!r}")
    return value


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
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"bandwidth entry {item!r}: expected KEY=Mbit/s")
            rate = _rate(value.strip(), f"bandwidth entry {item!r}")
            if key in ("default", "*"):
                default = rate
            elif key.startswith(">"):
                host = key[1:].strip()
                if not host or ">" in host:
                    raise ConfigError(f"bandwidth entry {item!r}: ingress must be written >HOST")
                ingress[host] = rate
            elif ">" in key:
                a, b = (p.strip() for p in key.split(">", 1))
                if not a or not b:
                    raise ConfigError(f"bandwidth entry {item!r}: pair must be A>B")
                links[(a, b)] = rate
            else:
                hosts[key] = rate
        return cls(default, hosts, links, ingress)

    @classmethod
    def from_file(cls, path: str) -> "BandwidthMap":
        try:
            with open(path) as f:
                doc = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"bandwidth file {path}: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"bandwidth file {path}: invalid YAML: {e}") from e
        if not isinstance(doc, dict):
            raise ConfigError(f"bandwidth file {path}: expected a mapping at the top")
        unknown = set(doc) - {"default", "hosts", "links", "ingress"}
        if unknown:
            raise ConfigError(f"bandwidth file {path}: unknown keys {sorted(unknown)}")
        default = _rate(doc["default"], f"{path}: default") if "default" in doc else None
        hosts = {str(h): _rate(r, f"{path}: hosts.{h}") for h, r in (doc.get("hosts") or {}).items()}
        ingress = {str(h): _rate(r, f"{path}: ingress.{h}")
                   for h, r in (doc.get("ingress") or {}).items()}
        links = {}
        for k, r in (doc.get("links") or {}).items():
            a, sep, b = str(k).partition(">")
            if not sep or not a.strip() or not b.strip():
                raise ConfigError(f"{path}: link key {k!r} must be 'A>B'")
            links[(a.strip(), b.strip())] = _rate(r, f"{path}: links.{k}")
        return cls(default, hosts, links, ingress)


def _env_int(env, name, default):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    return value


def _env_float(env, name, default):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


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
        if self.chunk_bytes <= 0 or self.chunk_bytes % 64:
            raise ConfigError(f"chunk_bytes must be a positive multiple of 64, got {self.chunk_bytes}")
        if not self.transfer_timeout_s > 0:
            raise ConfigError("transfer_timeout_s must be positive")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} out of range")
        if self.strategy == Strategy.CHECKPOINT and not self.checkpoint_dir:
            raise ConfigError("the checkpoint strategy needs checkpoint_dir (CHAOS_CHECKPOINT_DIR)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "ChaosConfig":
        env = os.environ if env is None else env
        values = dict(
            strategy=env.get("CHAOS_SYNC_STRATEGY", "chaos") or "chaos",
            scheduler=env.get("CHAOS_SCHEDULER", "optimal") or "optimal",
            bandwidth=BandwidthMap.parse(env.get("CHAOS_BANDWIDTH", "")),
            event_log=env.get("CHAOS_EVENT_LOG") or None,
            checkpoint_dir=env.get("CHAOS_CHECKPOINT_DIR") or None,
            chunk_bytes=_env_int(env, "CHAOS_CHUNK_BYTES", 256 * 1024),
            transfer_timeout_s=_env_float(env, "CHAOS_TRANSFER_TIMEOUT_S", 30.0),
            port=_env_int(env, "CHAOS_PORT", 0),
            advertise_addr=env.get("CHAOS_ADVERTISE_ADDR") or None,
            verify=env.get("CHAOS_VERIFY", "1") not in ("0", "false", "no"),
            peer_watch=env.get("CHAOS_PEER_WATCH", "1") not in ("0", "false", "no"),
            agent_socket=env.get("CHAOS_AGENT_SOCKET") or None,
        )
        if isinstance(overrides.get("bandwidth"), str):
            overrides["bandwidth"] = BandwidthMap.parse(overrides["bandwidth"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes) -> "ChaosConfig":
        return replace(self, **changes)
