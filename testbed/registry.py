"""What a testbed instance created, written down *before* it is created, and how to remove it.

Every instance has an id and a name prefix ``ctb<id>`` that all its interfaces, bridges,
namespaces, nftables tables, iptables chains and cgroups carry, and a state file
``/run/chaos-testbed/<id>/state.json`` rewritten atomically after each addition. Teardown and
``chaos-testbed clean`` read only that record (plus a scan for names matching our own pattern),
so they remove exactly what we made even after SIGKILL: no ``mn -c``, no killing by process name.
Processes are recorded with their start time, so a recycled pid is never killed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import string
import subprocess
import time

import psutil

RUN_ROOT = os.environ.get("CHAOS_TESTBED_RUN_DIR", "/run/chaos-testbed")
NAME_RE = re.compile(r"^ctb[0-9a-z]{2}[hsw][0-9]+(-p[0-9]+)?$")


def new_id() -> str:
    taken = set(os.listdir(RUN_ROOT)) if os.path.isdir(RUN_ROOT) else set()
    alphabet = string.digits + string.ascii_lowercase
    while True:
        ident = "".join(random.choice(alphabet) for _ in range(2))
        if ident not in taken:
            return ident


def _proc_key(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class Registry:
    def __init__(self, ident: str | None = None, state: dict | None = None):
        self.id = ident or new_id()
        self.dir = os.path.join(RUN_ROOT, self.id)
        self.prefix = f"ctb{self.id}"
        self.state = state or {
            "id": self.id, "prefix": self.prefix, "owner": [os.getpid(), _proc_key(os.getpid())],
            "created": time.time(), "netns": [], "links": [], "pids": [], "nft": [],
            "iptables": [], "cgroups": [], "files": {}, "sysctl": {}, "info": {}}

    # ------------------------------------------------------------ recording
    def open(self) -> "Registry":
        os.makedirs(self.dir, mode=0o700, exist_ok=False)
        self.save()
        return self

    def save(self) -> None:
        tmp = os.path.join(self.dir, "state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, os.path.join(self.dir, "state.json"))

    def add(self, kind: str, value) -> None:
        if value not in self.state[kind]:
            self.state[kind].append(value)
            self.save()

    def add_pid(self, pid: int, what: str) -> None:
        self.add("pids", [pid, _proc_key(pid), what])

    def backup_file(self, path: str) -> None:
        """Keep a copy of a file that a tool we run may change (e.g. ~/.ssh/known_hosts)."""
        if path in self.state["files"]:
            return
        saved = None
        if os.path.exists(path):
            saved = os.path.join(self.dir, "backup-" + re.sub(r"[^A-Za-z0-9]", "_", path))
            shutil.copy2(path, saved)
        self.state["files"][path] = saved
        self.save()

    def set_sysctl(self, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        with open(path) as f:
            old = f.read().strip()
        if key not in self.state["sysctl"]:
            self.state["sysctl"][key] = old
            self.save()
        if old != value:
            with open(path, "w") as f:
                f.write(value)

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, ident: str) -> "Registry":
        with open(os.path.join(RUN_ROOT, ident, "state.json")) as f:
            return cls(ident, json.load(f))

    @classmethod
    def all(cls) -> list["Registry"]:
        if not os.path.isdir(RUN_ROOT):
            return []
        out = []
        for ident in sorted(os.listdir(RUN_ROOT)):
            try:
                out.append(cls.load(ident))
            except (OSError, ValueError):
                out.append(cls(ident))  # a half-written instance: clean by name pattern
        return out

    def owner_alive(self) -> bool:
        pid, key = self.state.get("owner", [None, None])
        return pid is not None and pid != os.getpid() and key is not None \
            and _proc_key(pid) == key

    # ------------------------------------------------------------ removal
    def kill_processes(self, sig: int = signal.SIGKILL) -> None:
        """Recorded processes and all their descendants (workers started through our sshd), and
        any other process inside one of our network namespaces: a worker whose ssh session
        ended (a host cut off, a driver that gave up on it) is re-parented to init and is no
        one's descendant any more, but it still lives in our namespace."""
        procs = self._recorded()
        _kill(procs + _in_namespaces(self.state["netns"], {p.pid for p in procs}), sig)

    def _recorded(self) -> list[psutil.Process]:
        procs = []
        for pid, key, _ in self.state["pids"]:
            if key is not None and _proc_key(pid) == key:
                try:
                    p = psutil.Process(pid)
                    procs.extend(p.children(recursive=True))
                    procs.append(p)
                except psutil.Error:
                    pass
        return procs

    def kill_orphans(self, sig: int = signal.SIGKILL) -> None:
        """Only the processes in our namespaces that nothing recorded leads to (call while the
        namespaces still have their names, i.e. before Mininet removes them)."""
        _kill(_in_namespaces(self.state["netns"], {p.pid for p in self._recorded()}), sig)

    def teardown(self) -> list[str]:
        """Remove everything recorded. Returns what could not be removed (empty = clean)."""
        from pyroute2 import IPRoute, netns

        from . import cgroups
        problems: list[str] = []
        self.kill_processes()
        for name in self.state["netns"]:
            if name in netns.listnetns():
                try:
                    netns.remove(name)
                except OSError as e:
                    problems.append(f"netns {name}: {e}")
        for table in self.state["nft"]:
            subprocess.run(["nft", "delete", "table", "bridge", table], capture_output=True)
        for chain in self.state["iptables"]:
            while subprocess.run(["iptables", "-w", "-t", "mangle", "-D", "FORWARD", "-j", chain],
                                 capture_output=True).returncode == 0:
                pass
            subprocess.run(["iptables", "-w", "-t", "mangle", "-F", chain], capture_output=True)
            subprocess.run(["iptables", "-w", "-t", "mangle", "-X", chain], capture_output=True)
        with IPRoute() as ipr:
            names = set(self.state["links"]) | {
                link.get_attr("IFLA_IFNAME") for link in ipr.get_links()
                if (link.get_attr("IFLA_IFNAME") or "").startswith(self.prefix)}
            for name in sorted(names, key=lambda n: "-p" not in n):  # ports before bridges
                if ipr.link_lookup(ifname=name):
                    try:
                        ipr.link("del", ifname=name)
                    except Exception as e:  # noqa: BLE001 - report, keep cleaning
                        if ipr.link_lookup(ifname=name):
                            problems.append(f"link {name}: {e}")
        for path in self.state["cgroups"]:
            try:
                cgroups.remove(path)
            except OSError as e:
                problems.append(f"cgroup {path}: {e}")
        for path, saved in self.state["files"].items():
            try:
                if saved is None:  # we created it
                    if os.path.isdir(path):
                        os.rmdir(path)
                    elif os.path.exists(path):
                        os.unlink(path)
                else:
                    shutil.copy2(saved, path)
            except OSError as e:
                problems.append(f"restore {path}: {e}")
        for key, old in self.state["sysctl"].items():
            try:
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(old)
            except OSError as e:
                problems.append(f"sysctl {key}: {e}")
        if not problems:
            shutil.rmtree(self.dir, ignore_errors=True)
        return problems


def clean_all(force: bool = False) -> tuple[list[str], list[str]]:
    """Remove every instance whose owner is gone (all of them with ``force``).

    Returns (cleaned instance ids, problems). Interfaces and namespaces matching our name pattern
    but belonging to no instance directory are removed too (an instance killed before its first
    save).
    """
    from pyroute2 import IPRoute, netns
    cleaned, problems = [], []
    live_prefixes = set()
    for reg in Registry.all():
        if reg.owner_alive() and not force:
            live_prefixes.add(reg.prefix)
            continue
        problems += [f"{reg.id}: {p}" for p in reg.teardown()]
        cleaned.append(reg.id)
    for name in netns.listnetns():
        if NAME_RE.match(name) and name[:5] not in live_prefixes:
            netns.remove(name)
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if NAME_RE.match(name) and name[:5] not in live_prefixes and ipr.link_lookup(
                    ifname=name):
                ipr.link("del", ifname=name)
    return cleaned, problems


def _kill(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def _in_namespaces(names: list[str], skip: set[int]) -> list[psutil.Process]:
    """Processes whose network namespace is one of the named ones (ours), except `skip`."""
    inodes = set()
    for name in names:
        try:
            inodes.add(os.stat(os.path.join("/run/netns", name)).st_ino)
        except OSError:
            pass
    if not inodes:
        return []
    found = []
    for p in psutil.process_iter():
        if p.pid in skip or p.pid == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{p.pid}/ns/net").st_ino in inodes:
                found.append(p)
        except OSError:
            pass
    return found
