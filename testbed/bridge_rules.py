"""nftables rules on the testbed's bridges: per-direction loss (no netem) and partitions.

One ``bridge`` table per instance with one ``forward`` chain, regenerated whole and loaded in
one nft transaction, so a change is atomic and takes effect at once. ``render`` is pure.

Loss of link direction X->Y: when X is a host, its packets enter the bridge on Y's port of that
link (``iifname``); when X is a switch, they leave X on its port of that link (``oifname``).
Partitions drop IPv4 between every pair of groups in both directions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import threading

from .errors import CommandError

LOSS_SCALE = 1_000_000  # numgen modulus: loss resolution 1e-6


def render(table: str, loss: dict[tuple[str, str], float],
           partition: tuple[tuple[str, ...], ...] = ()) -> str:
    """loss: (match, port) -> fraction, match in {"iifname", "oifname"}; partition: IP groups."""
    rules = []
    for (match, port), fraction in sorted(loss.items()):
        threshold = int(round(fraction * LOSS_SCALE))
        if threshold > 0:
            rules.append(f'{match} "{port}" numgen random mod {LOSS_SCALE} < {threshold} drop')
    for i, a in enumerate(partition):
        for j, b in enumerate(partition):
            if i != j:
                rules.append(f"ip saddr {{ {', '.join(a)} }} ip daddr {{ {', '.join(b)} }} drop")
    body = "\n".join(f"    {r}" for r in rules)
    return (f"table bridge {table} {{}}\nflush table bridge {table}\n"
            f"table bridge {table} {{\n  chain forward {{\n"
            f"    type filter hook forward priority 0; policy accept;\n{body}\n  }}\n}}\n")


class _LibNftables:
    """libnftables in-process (what Debian's python3-nftables wraps): ~0.5 ms per load where
    spawning ``nft`` costs 15-20 ms, which would break the 50 ms budget of a runtime change."""

    def __init__(self):
        lib = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1")
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        self.lib, self.ctx = lib, lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_error(self.ctx)
        lib.nft_ctx_buffer_output(self.ctx)
        self.lock = threading.Lock()

    def run(self, text: str) -> None:
        with self.lock:
            if self.lib.nft_run_cmd_from_buffer(self.ctx, text.encode()) != 0:
                err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode(errors="replace")
                raise CommandError(f"nft rejected the testbed's rules: {err.strip()}")


_lib: _LibNftables | None = None


def load(text: str) -> None:
    global _lib
    if _lib is None:
        try:
            _lib = _LibNftables()
        except OSError:  # no libnftables: the nft command does the same, slower
            done = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True)
            if done.returncode != 0:
                raise CommandError(f"nft rejected the testbed's rules: {done.stderr.strip()}")
            return
    _lib.run(text)
