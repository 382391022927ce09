"""Processes inside emulated hosts, reached the way horovodrun reaches real Jetsons: over ssh.

Each host runs its own ``sshd`` (keys and config generated per testbed instance under its run
directory, removed with it) in the host's network namespace plus its own UTS and mount
namespaces: ``hostname`` is the node's name and a private ``/etc/hosts`` maps every node name to
its address. Horovod 0.28.1 needs this: its Gloo process-set setup falls back to
``gethostname()``, which in a shared UTS namespace resolves to 127.0.0.1 (docs/emulation-notes.md).

The launcher host runs the user's command (e.g. ``horovodrun``) the same way, with an ``ssh``
wrapper first on PATH that adds ``-F <our ssh_config>``: our client key, our known_hosts file, no
host-key prompts. ``/root/.ssh/known_hosts`` is therefore never written; it is still backed up
and restored in case a tool bypasses the wrapper.

A ``storage`` node runs the checkpoint server of testbed/storage.py instead of an sshd.

Node faults signal every process below the host's sshd (the ssh sessions and the workers they
started), never the sshd itself, so a crashed host can be joined again.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys

import psutil

from chaos_hvd.errors import WaitTimeout
from chaos_hvd.waiting import Deadline, wait_until

from . import cgroups
from .errors import CommandError
from .registry import Registry

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
STORAGE_PORT = 8470


def _write(path: str, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)  # never readable by others
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)


class HostProcesses:
    def __init__(self, net, registry: Registry):
        self.net, self.reg = net, registry
        self.topo = net.topo
        self.dir = os.path.join(registry.dir, "ssh")
        self.sshd: dict[str, psutil.Process] = {}
        self.daemons: dict[str, list[psutil.Process]] = {}   # e.g. the host's cluster agent
        self.cgroup: dict[str, str] = {}

    # ------------------------------------------------------------ files
    def prepare(self) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        for key in ("host_key", "id_ed25519"):
            done = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                                   f"chaos-testbed-{self.reg.id}", "-f",
                                   os.path.join(self.dir, key)], capture_output=True, text=True)
            if done.returncode != 0:
                raise CommandError(f"ssh-keygen failed: {done.stderr.strip()}")
        with open(os.path.join(self.dir, "id_ed25519.pub")) as f:
            _write(os.path.join(self.dir, "authorized_keys"), f.read())
        _write(os.path.join(self.dir, "sshd_config"), f"""\
Port 22
HostKey {self.dir}/host_key
PidFile none
AuthorizedKeysFile {self.dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
AcceptEnv HOROVOD_* GLOO_* CHAOS_*
MaxStartups 200
MaxSessions 200
""")
        _write(os.path.join(self.dir, "ssh_config"), f"""\
Host *
  IdentityFile {self.dir}/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile {self.dir}/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking no
  BatchMode yes
  LogLevel ERROR
""")
        bindir = os.path.join(self.reg.dir, "bin")
        os.makedirs(bindir, exist_ok=True)
        _write(os.path.join(bindir, "ssh"),
               f'#!/bin/sh\nexec {SSH} -F {self.dir}/ssh_config "$@"\n', 0o755)
        self._write_hosts()
        self.reg.backup_file(os.path.expanduser("~/.ssh/known_hosts"))
        if not os.path.isdir("/run/sshd"):  # sshd's privilege-separation directory
            self.reg.backup_file("/run/sshd")
            os.makedirs("/run/sshd", mode=0o755)

    def _write_hosts(self) -> None:
        """The /etc/hosts every host sees (bind-mounted by _wrap)."""
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{n.ip} {n.name}" for n in self.topo.nodes]
        _write(os.path.join(self.reg.dir, "hosts"), "\n".join(lines) + "\n", 0o644)

    @property
    def bin_dir(self) -> str:
        return os.path.join(self.reg.dir, "bin")

    def _wrap(self, host: str, argv: list[str]) -> list[str]:
        """argv run in the host's netns, with its own hostname and /etc/hosts."""
        ns = self.net.host_ns[host]
        script = (f"hostname {shlex.quote(host)} && "
                  f"mount --bind {shlex.quote(os.path.join(self.reg.dir, 'hosts'))} /etc/hosts"
                  ' && exec "$@"')
        return ["ip", "netns", "exec", ns, "unshare", "--uts", "--mount",
                "--propagation", "private", "sh", "-c", script, "sh"] + argv

    # ------------------------------------------------------------ sshd
    def start_sshd(self) -> None:
        for n in self.topo.nodes:
            if n.role != "worker":
                continue
            log = open(os.path.join(self.reg.dir, f"sshd-{n.name}.log"), "ab")
            p = subprocess.Popen(self._wrap(n.name, [SSHD, "-D", "-e", "-f",
                                                     os.path.join(self.dir, "sshd_config")]),
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
            log.close()
            self.reg.add_pid(p.pid, f"sshd {n.name}")
            self.sshd[n.name] = psutil.Process(p.pid)
            if n.cpu is not None:
                path = os.path.join(cgroups.cpu_root()[0], f"{self.reg.prefix}-{n.name}")
                self.reg.add("cgroups", path)
                cgroups.create(os.path.basename(path), n.cpu)
                cgroups.add_pid(path, p.pid)
                self.cgroup[n.name] = path
        deadline = Deadline(10)
        for name, proc in self.sshd.items():
            try:
                wait_until(lambda: self._listening(name), deadline.left_s(), f"sshd in {name}",
                           interval_s=0.02,
                           give_up=lambda: None if proc.is_running() else "sshd exited")
            except WaitTimeout:
                raise CommandError(f"sshd did not start in host {name}; see "
                                   f"{self.reg.dir}/sshd-{name}.log") from None

    def _listening(self, host: str, port: int = 22) -> bool:
        done = subprocess.run(["ip", "netns", "exec", self.net.host_ns[host], "ss", "-ltnH",
                               f"sport = :{port}"], capture_output=True, text=True)
        return bool(done.stdout.strip())

    # ------------------------------------------------------------ storage hosts
    def start_storage(self, host: str, port: int = STORAGE_PORT) -> str:
        """Run testbed.storage in `host`; returns its URL (with the run's path token)."""
        if not os.path.exists(os.path.join(self.reg.dir, "hosts")):   # no sshd prepared it
            self._write_hosts()
        root = os.path.join(self.reg.dir, f"storage-{host}")
        token = secrets.token_hex(16)
        token_file = os.path.join(self.reg.dir, f"storage-{host}.token")
        _write(token_file, token)
        # a storage device has its own CPU; here it shares the workers' cores, whose Horovod
        # threads busy-wait: a higher priority keeps its link, not the scheduler, the limit
        p = self.launch(host, ["nice", "-n", "-10", sys.executable, "-m", "testbed.storage",
                               "--dir", root,
                               "--port", str(port), "--token-file", token_file], {},
                        os.path.join(self.reg.dir, f"storage-{host}.log"))
        try:
            wait_until(lambda: self._listening(host, port), 10, f"storage server in {host}",
                       interval_s=0.05,
                       give_up=lambda: None if p.poll() is None else "it exited")
        except WaitTimeout:
            raise CommandError(f"the storage server did not start in host {host}; see "
                               f"{self.reg.dir}/storage-{host}.log") from None
        return f"http://{self.topo.node(host).ip}:{port}/{token}"

    # ------------------------------------------------------------ launcher
    def launch(self, host: str, argv: list[str], env: dict, log_path: str | None = None,
               ) -> subprocess.Popen:
        full_env = dict(os.environ)
        full_env.update(env)
        full_env["PATH"] = os.pathsep.join([self.bin_dir, os.path.dirname(sys.executable),
                                            full_env.get("PATH", "")])
        out = open(log_path, "ab") if log_path else None
        p = subprocess.Popen(self._wrap(host, argv), env=full_env, stdout=out,
                             stderr=subprocess.STDOUT if out else None, start_new_session=True)
        if out:
            out.close()
        self.reg.add_pid(p.pid, f"launcher command in {host}")
        return p

    # ------------------------------------------------------------ faults on nodes
    def start_daemon(self, host: str, argv: list[str], env: dict, log_path: str
                     ) -> subprocess.Popen:
        """A process that belongs to the host (its cluster agent): node faults signal it too."""
        p = self.launch(host, argv, env, log_path)      # registered for teardown there
        self.daemons.setdefault(host, []).append(psutil.Process(p.pid))
        return p

    def workers_of(self, host: str) -> list[psutil.Process]:
        procs: list[psutil.Process] = []
        for root in [self.sshd.get(host)] + self.daemons.get(host, []):
            if root is None:
                continue
            try:
                procs += root.children(recursive=True)
                if root is not self.sshd.get(host) and root.is_running():
                    procs.append(root)
            except psutil.Error:
                pass
        return procs

    def signal(self, host: str, sig: int) -> int:
        procs = self.workers_of(host)
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass
        return len(procs)

    def crash(self, host: str) -> int:
        return self.signal(host, signal.SIGKILL)

    def leave(self, host: str) -> int:
        return self.signal(host, signal.SIGTERM)

    def pause(self, host: str) -> int:
        return self.signal(host, signal.SIGSTOP)

    def resume(self, host: str) -> int:
        return self.signal(host, signal.SIGCONT)
