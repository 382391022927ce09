"""The objects a ChaosState tracks, and how each becomes (and is rebuilt from) a plain tree.

Kinds, decided once at construction from the object's type (duck-typed, so no Horovod import):

``module``    ``torch.nn.Module``: ``state_dict()`` / ``load_state_dict()`` (copies into parameters).
``stateful``  anything else with ``state_dict()`` and ``load_state_dict()``: optimizers, every torch 2.x
              LR scheduler (Horovod 0.28.1 misses these: it keys on ``_LRScheduler``), Horovod's
              ``ElasticSampler`` (whose ``load_state_dict`` re-partitions for the new world size).
``value``     plain values (epoch, batch, lists, dicts, tensors ...), replaced by attribute assignment.

``rng=True`` adds the torch, CUDA, numpy and Python RNG states, restored with the rest.
Trees handed to objects never alias the snapshot buffer (tensors are cloned), so training in place
cannot corrupt a committed snapshot.
"""

from __future__ import annotations

import random
from enum import StrEnum
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..errors import SnapshotError
from .encoding import check_encodable


class ObjectKind(StrEnum):
    MODULE = "module"
    STATEFUL = "stateful"
    VALUE = "value"


MODULE, STATEFUL, VALUE = ObjectKind.MODULE, ObjectKind.STATEFUL, ObjectKind.VALUE


def kind_of(obj: Any) -> ObjectKind:
    if isinstance(obj, torch.nn.Module):
        return MODULE
    if callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None)):
        return STATEFUL
    return VALUE


def clone_tree(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, np.ndarray):
        return tree.copy()
    if isinstance(tree, list):
        return [clone_tree(v) for v in tree]
    if isinstance(tree, tuple):
        return tuple(clone_tree(v) for v in tree)
    if isinstance(tree, dict):
        return {k: clone_tree(v) for k, v in tree.items()}
    return tree


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].clone())
    np.random.set_state(tuple(state["numpy"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.clone() for t in state["cuda"]])


class TrackedObjects:
    """name -> (kind, getter, setter) for everything a state tracks, in a stable order."""

    def __init__(self, objects: Mapping[str, Any], get: Callable[[str], Any],
                 set_value: Callable[[str, Any], None], rng: bool = False):
        self.kinds = {name: kind_of(obj) for name, obj in objects.items()}
        self._get, self._set = get, set_value
        self.rng = rng
        for name, obj in objects.items():
            if self.kinds[name] == VALUE:
                check_encodable(obj, name)

    def objects(self) -> dict[str, tuple[Any, ObjectKind]]:
        """name -> (the live object, its kind), in tracking order."""
        return {name: (self._get(name), kind) for name, kind in self.kinds.items()}

    def set(self, name: str, value: Any) -> None:
        self._set(name, value)

    def capture(self) -> dict[str, Any]:
        """The live state as a plain tree (tensors are the live ones; the snapshot copies them).

        Module *buffers* (BatchNorm statistics) are not all-reduced, so they differ between ranks;
        they go last (with the per-rank RNG), after everything that is bit-identical on every rank
        at one version. The snapshot lays tensors out in this order, so ranks' snapshots differ only
        in their last chunks and every other chunk can be served by any up-to-date rank.
        """
        objs, buffers = [], []
        for name, kind in self.kinds.items():
            obj = self._get(name)
            if kind == MODULE:
                sd = obj.state_dict(keep_vars=True)
                objs.append([name, kind, {k: v for k, v in sd.items()
                                          if isinstance(v, torch.nn.Parameter)}])
                buffers.append([name, {k: v for k, v in sd.items()
                                       if not isinstance(v, torch.nn.Parameter)}])
            else:
                objs.append([name, kind, obj if kind == VALUE else obj.state_dict()])
        return {"objects": objs, "module_buffers": buffers,
                "rng": rng_state() if self.rng else None}

    def layout(self) -> list[list[str]]:
        return [[name, kind] for name, kind in self.kinds.items()]

    def apply(self, tree: Mapping[str, Any]) -> None:
        """Load a captured tree into the live objects (tensors cloned: no aliasing of the snapshot)."""
        try:
            got = [[name, kind] for name, kind, _ in tree["objects"]]
        except (KeyError, TypeError, ValueError) as e:
            raise SnapshotError(f"state tree has no valid object list: {e}") from e
        if got != self.layout():
            raise SnapshotError(
                f"state layout differs from this worker's: peer has {got}, we have {self.layout()}; "
                "every worker must construct ChaosState with the same named objects")
        buffers = dict((name, b) for name, b in tree.get("module_buffers", []))
        for name, kind, state in tree["objects"]:
            if kind == MODULE:
                # load_state_dict copies into the existing parameters and buffers
                self._get(name).load_state_dict({**state, **buffers.get(name, {})})
            elif kind == STATEFUL:
                self._get(name).load_state_dict(clone_tree(state))
            else:
                self._set(name, clone_tree(state))
        if tree.get("rng") is not None and self.rng:
            set_rng_state(tree["rng"])
