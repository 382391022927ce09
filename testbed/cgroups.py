"""CPU share of an emulated host (a Jetson has fewer, slower cores than this machine).

cgroup v2 (``cpu.max``) where the cpu controller is enabled at the root, else cgroup v1
(``cpu.cfs_quota_us``). The testbed's cgroups are named ``<prefix>-<host>`` and removed on
teardown; processes started in a host inherit its cgroup.
"""

from __future__ import annotations

import os

PERIOD_US = 100_000


def cpu_root() -> tuple[str, int] | None:
    """(mount point, cgroup version) of a writable cpu controller, or None."""
    try:
        with open("/sys/fs/cgroup/cgroup.subtree_control") as f:
            if "cpu" in f.read().split():
                return "/sys/fs/cgroup", 2
    except OSError:
        pass
    if os.path.exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"):
        return "/sys/fs/cgroup/cpu", 1
    return None


def create(name: str, cores: float) -> str:
    root = cpu_root()
    if root is None:
        raise OSError("no cgroup cpu controller")
    base, version = root
    path = os.path.join(base, name)
    os.makedirs(path, exist_ok=True)
    quota = max(1000, int(cores * PERIOD_US))
    if version == 2:
        with open(os.path.join(path, "cpu.max"), "w") as f:
            f.write(f"{quota} {PERIOD_US}")
    else:
        with open(os.path.join(path, "cpu.cfs_period_us"), "w") as f:
            f.write(str(PERIOD_US))
        with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as f:
            f.write(str(quota))
    return path


def add_pid(path: str, pid: int) -> None:
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(pid))


def remove(path: str) -> None:
    """Move any remaining processes out (to the parent), then delete the cgroup."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = f.read().split()
        for pid in pids:
            try:
                add_pid(os.path.dirname(path), int(pid))
            except OSError:
                pass
        os.rmdir(path)
    except FileNotFoundError:
        pass
