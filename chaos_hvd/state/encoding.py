"""Safe encoding of training-state trees: JSON for structure, a side list for tensors. Never pickle.

``encode(obj, tensors)`` turns a tree of plain values into JSON-able data and appends every tensor it
meets to ``tensors`` (replaced in the tree by ``{"$t": index}``); ``decode(node, tensors)`` reverses it.
What can be encoded: None, bool, int, float (incl. nan/inf), str, bytes, list, tuple, dict (any keys of
these scalar kinds), torch tensors, numpy arrays, numpy scalars, torch dtypes. Anything else raises
:class:`UnsupportedStateError` naming the path, so a user learns at construction time, not at a join.

Decoding accepts only these tags, checks tensor indices, and never evaluates or imports anything, so
a manifest received from a peer cannot run code.
"""

from __future__ import annotations

import base64
import math
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import SnapshotError, UnsupportedStateError

# dtypes a snapshot may carry; names are what appear in manifests
DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, name)
    for name in ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                 "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128")
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

_MAX_DEPTH = 64


def _scalar_key(k: Any, path: str) -> Any:
    if k is None or isinstance(k, (bool, int, float, str)):
        return k
    raise UnsupportedStateError(f"{path}: dict key of type {type(k).__name__} cannot be encoded")


def encode(obj: Any, tensors: list[torch.Tensor], path: str = "state", depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise UnsupportedStateError(f"{path}: nested deeper than {_MAX_DEPTH} levels")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)  # IntEnum/IntFlag travel as their value
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"$float": repr(obj)}
    if isinstance(obj, torch.Tensor):
        if obj.dtype not in DTYPE_NAMES:
            raise UnsupportedStateError(f"{path}: tensor dtype {obj.dtype} is not supported")
        tensors.append(obj)
        return {"$t": len(tensors) - 1}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise UnsupportedStateError(f"{path}: numpy object arrays cannot be encoded")
        tensors.append(torch.from_numpy(np.ascontiguousarray(obj)))
        return {"$np": len(tensors) - 1}
    if isinstance(obj, np.generic):
        return {"$npscalar": obj.dtype.str, "v": encode(obj.item(), tensors, path, depth + 1)}
    if isinstance(obj, torch.dtype):
        if obj not in DTYPE_NAMES:
            raise UnsupportedStateError(f"{path}: dtype {obj} is not supported")
        return {"$dtype": DTYPE_NAMES[obj]}
    if isinstance(obj, bytes):
        return {"$bytes": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, tuple):
        return {"$tuple": [encode(v, tensors, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    if isinstance(obj, set):
        items = sorted(obj, key=repr)
        return {"$set": [encode(v, tensors, f"{path}{{}}", depth + 1) for v in items]}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: encode(v, tensors, f"{path}.{k}", depth + 1) for k, v in obj.items()}
        return {"$dict": [[_scalar_key(k, path), encode(v, tensors, f"{path}[{k!r}]", depth + 1)]
                          for k, v in obj.items()]}
    raise UnsupportedStateError(
        f"{path}: objects of type {type(obj).__module__}.{type(obj).__qualname__} cannot be encoded "
        "safely (chaos_hvd never pickles); store plain values, tensors or state_dict()s instead")


def check_encodable(obj: Any, path: str) -> None:
    """Raise UnsupportedStateError now if `obj` could not be snapshotted later."""
    encode(obj, [], path)


def decode(node: Any, tensors: Sequence[torch.Tensor], depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise SnapshotError("state tree nested too deeply")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [decode(v, tensors, depth + 1) for v in node]
    if not isinstance(node, dict):
        raise SnapshotError(f"unexpected JSON node of type {type(node).__name__}")
    tags = [k for k in node if k.startswith("$")]
    if not tags:
        return {k: decode(v, tensors, depth + 1) for k, v in node.items()}
    tag = tags[0]
    try:
        if tag in ("$t", "$np"):
            idx = node[tag]
            if not isinstance(idx, int) or not 0 <= idx < len(tensors):
                raise SnapshotError(f"tensor reference {idx!r} out of range")
            t = tensors[idx]
            return t if tag == "$t" else t.numpy()
        if tag == "$float":
            if node[tag] not in ("nan", "inf", "-inf"):
                raise SnapshotError(f"bad float {node[tag]!r}")
            return float(node[tag])
        if tag == "$npscalar":
            return np.dtype(node[tag]).type(decode(node["v"], tensors, depth + 1))
        if tag == "$dtype":
            return DTYPES[node[tag]]
        if tag == "$bytes":
            return base64.b64decode(node[tag], validate=True)
        if tag == "$tuple":
            return tuple(decode(v, tensors, depth + 1) for v in node[tag])
        if tag == "$set":
            return {decode(v, tensors, depth + 1) for v in node[tag]}
        if tag == "$dict":
            return {decode(k, tensors, depth + 1): decode(v, tensors, depth + 1) for k, v in node[tag]}
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise SnapshotError(f"malformed {tag} node: {e}") from e
    raise SnapshotError(f"unknown tag {tag!r}")
