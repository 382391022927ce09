"""Versioned flat snapshot of a training state, and its manifest.

A snapshot is one contiguous CPU byte buffer that holds every tensor of the state (each aligned to
64 bytes) plus a JSON *tree* that describes the non-tensor structure (see :mod:`encoding`). The
:class:`Manifest` is what peers exchange: version, sizes, tensor layout, the tree, and a BLAKE2b digest
per fixed-size *chunk* of the buffer. The manifest's own digest therefore identifies the whole state:
two ranks with equal manifest digests hold bit-identical states.

Why a flat buffer: a commit becomes one pass of ``copy_`` into memory that is reused between commits
(Horovod's ``TorchState`` deep-copies every state_dict, allocating each time), serving a byte range is a
zero-copy ``sendall`` of a memoryview, and a joiner receives straight into its buffer. Chunk digests are
computed lazily, only when a sync needs them, so commits stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CorruptShardError, SnapshotError
from .encoding import DTYPE_NAMES, DTYPES, decode, encode

FORMAT = "chaos-hvd/1"
ALIGN_BYTES = 64
DEFAULT_CHUNK_BYTES = 256 * 1024
MAX_TENSORS = 1_000_000
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_DIGEST_BYTES = 16
_HASH_THREADS = 2  # hashlib releases the GIL on large buffers


def chunk_digest(data) -> str:
    return hashlib.blake2b(data, digest_size=_DIGEST_BYTES).hexdigest()


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Manifest:
    version: int
    size_bytes: int
    chunk_bytes: int
    tensors: tuple[TensorEntry, ...]
    tree: Any
    chunk_digests: tuple[str, ...]

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_digests)

    def chunk_range(self, i: int) -> tuple[int, int]:
        start = i * self.chunk_bytes
        return start, min(start + self.chunk_bytes, self.size_bytes)

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": self.version,
            "size_bytes": self.size_bytes,
            "chunk_bytes": self.chunk_bytes,
            "tensors": [[t.dtype, list(t.shape), t.offset, t.nbytes] for t in self.tensors],
            "tree": self.tree,
            "chunk_digests": list(self.chunk_digests),
        }
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()

    def digest(self) -> str:
        return hashlib.blake2b(self.to_bytes(), digest_size=_DIGEST_BYTES).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        """Parse and validate a manifest received from a peer (JSON only; bounded sizes)."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise SnapshotError(f"manifest of {len(data)} bytes exceeds {MAX_MANIFEST_BYTES}")
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise SnapshotError("a manifest is a JSON object")
            if doc.get("format") != FORMAT:
                raise SnapshotError(f"unknown manifest format {doc.get('format')!r}")
            size, chunk, version = doc["size_bytes"], doc["chunk_bytes"], doc["version"]
            if not all(_count(v) for v in (size, chunk, version)) or chunk <= 0:
                raise SnapshotError("manifest sizes must be integers in 0..2**62")
            if not isinstance(doc["tensors"], list) or len(doc["tensors"]) > MAX_TENSORS:
                raise SnapshotError("manifest tensors must be a list of at most "
                                    f"{MAX_TENSORS} entries")
            tensors = []
            for entry in doc["tensors"]:
                if not isinstance(entry, list) or len(entry) != 4:
                    raise SnapshotError("a tensor entry is [dtype, shape, offset, nbytes]")
                dtype, shape, offset, nbytes = entry
                if not isinstance(dtype, str) or dtype not in DTYPES \
                        or not isinstance(shape, list) or len(shape) > 32 \
                        or not all(_count(d) for d in shape) \
                        or not _count(offset) or not _count(nbytes):
                    raise SnapshotError(f"bad tensor entry {str(entry)[:80]}")
                expect = math.prod(shape) * DTYPES[dtype].itemsize
                if nbytes != expect or offset % ALIGN_BYTES or offset < 0 or offset + nbytes > size:
                    raise SnapshotError("tensor entry outside the buffer or misaligned")
                tensors.append(TensorEntry(dtype, tuple(shape), offset, nbytes))
            if not isinstance(doc["chunk_digests"], list):
                raise SnapshotError("chunk_digests must be a list")
            digests = tuple(doc["chunk_digests"])
            if len(digests) != -(-size // chunk) or not all(isinstance(d, str) for d in digests):
                raise SnapshotError("chunk digest count does not match size_bytes / chunk_bytes")
            return cls(version, size, chunk, tuple(tensors), doc["tree"], digests)
        except SnapshotError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError) as e:
            raise SnapshotError(f"malformed manifest: {e}") from e
        except RecursionError:
            raise SnapshotError("malformed manifest: nested too deeply") from None


def _count(x) -> bool:
    """A non-negative integer of sane size (not a bool, not a float)."""
    return type(x) is int and 0 <= x <= 2 ** 62


def _views(buffer: torch.Tensor, entries: tuple[TensorEntry, ...]) -> list[torch.Tensor]:
    return [buffer[e.offset:e.offset + e.nbytes].view(DTYPES[e.dtype]).view(e.shape) for e in entries]


def _digests(buffer: torch.Tensor, size: int, chunk: int) -> tuple[str, ...]:
    mv = memoryview(buffer.numpy()) if size else memoryview(b"")
    ranges = [(a, min(a + chunk, size)) for a in range(0, size, chunk)]
    with ThreadPoolExecutor(_HASH_THREADS) as ex:
        return tuple(ex.map(lambda r: chunk_digest(mv[r[0]:r[1]]), ranges))


class Snapshot:
    """The committed state of one rank: a reusable flat buffer plus the encoded tree."""

    def __init__(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        if chunk_bytes <= 0:
            raise SnapshotError("chunk_bytes must be positive")
        self.chunk_bytes = chunk_bytes
        self.version = -1
        self.buffer = torch.empty(0, dtype=torch.uint8)
        self._entries: tuple[TensorEntry, ...] = ()
        self._views: list[torch.Tensor] = []
        self._tree: Any = None
        self._manifest: Manifest | None = None
        self._manifest_lock = threading.Lock()   # prehash() computes it on another thread

    @property
    def size_bytes(self) -> int:
        return int(self.buffer.numel())

    def capture(self, tree: Any, version: int) -> None:
        """Copy the live state into the buffer. Reallocates only when the tensor layout changed."""
        tensors: list[torch.Tensor] = []
        encoded = encode(tree, tensors)
        layout = [(DTYPE_NAMES[t.dtype], tuple(t.shape)) for t in tensors]
        with self._manifest_lock:   # never while a prehash reads the buffer
            if layout != [(e.dtype, e.shape) for e in self._entries]:
                self._allocate(layout, pin=any(t.is_cuda for t in tensors))
            for view, t in zip(self._views, tensors):
                view.copy_(t.detach(), non_blocking=True)  # Parameters come with keep_vars=True
            if any(t.is_cuda for t in tensors):
                torch.cuda.synchronize()
            self._tree = encoded
            self.version = version
            self._manifest = None

    def _allocate(self, layout: list[tuple[str, tuple[int, ...]]], pin: bool) -> None:
        entries, offset = [], 0
        for dtype, shape in layout:
            nbytes = math.prod(shape) * DTYPES[dtype].itemsize
            entries.append(TensorEntry(dtype, shape, offset, nbytes))
            offset += -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES
        self.buffer = torch.zeros(offset, dtype=torch.uint8, pin_memory=pin)
        self._entries = tuple(entries)
        self._views = _views(self.buffer, self._entries)

    def manifest(self) -> Manifest:
        """Manifest of the current version; chunk digests are computed once per version."""
        with self._manifest_lock:
            if self._manifest is None:
                digests = _digests(self.buffer, self.size_bytes, self.chunk_bytes)
                self._manifest = Manifest(self.version, self.size_bytes, self.chunk_bytes,
                                          self._entries, self._tree, digests)
            return self._manifest

    def prehash(self) -> None:
        """Compute the manifest on a background thread (e.g. while Horovod re-forms the
        group before a sync); manifest() then waits for it instead of hashing again."""
        if self._manifest is None:
            threading.Thread(target=self.manifest, name="chaos-prehash", daemon=True).start()

    def holds(self, tree: Any) -> bool:
        """Whether capturing `tree` now would give exactly this snapshot's bytes and structure
        (a byte comparison: no copy, no hashing)."""
        tensors: list[torch.Tensor] = []
        if encode(tree, tensors) != self._tree or len(tensors) != len(self._entries):
            return False
        flat = self.buffer
        for t, e in zip(tensors, self._entries):
            if DTYPE_NAMES.get(t.dtype) != e.dtype or tuple(t.shape) != e.shape:
                return False
            live = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8)
            if not torch.equal(live, flat[e.offset:e.offset + e.nbytes]):
                return False
        return True

    def manifest_cost(self) -> float:
        """Seconds spent computing the manifest now (0 when it was computed already)."""
        if self._manifest is not None:
            return 0.0
        t0 = time.perf_counter()
        self.manifest()
        return time.perf_counter() - t0

    def tree(self) -> Any:
        """The captured tree with tensors as *views into the buffer*: clone before handing out."""
        return decode(self._tree, self._views)

    @classmethod
    def from_manifest(cls, manifest: Manifest, buffer: torch.Tensor,
                      verified: bool = False) -> "Snapshot":
        """Adopt a received buffer after checking every chunk against the manifest.

        ``verified=True`` skips the check for callers that already verified each chunk on arrival.
        """
        if buffer.numel() != manifest.size_bytes:
            raise SnapshotError("received buffer size differs from the manifest")
        if not verified:
            got = _digests(buffer, manifest.size_bytes, manifest.chunk_bytes)
            bad = [i for i, (a, b) in enumerate(zip(got, manifest.chunk_digests)) if a != b]
        else:
            bad = []
        if bad:
            raise CorruptShardError(f"{len(bad)} chunk(s) do not match their digests, e.g. {bad[:5]}")
        snap = cls(manifest.chunk_bytes)
        snap.buffer = buffer
        snap._entries = manifest.tensors
        snap._views = _views(buffer, manifest.tensors)
        snap._tree = manifest.tree
        snap.version = manifest.version
        snap._manifest = manifest
        return snap
