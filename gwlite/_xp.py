"""The only backend-aware module: array-api-compat plus the few helpers it lacks.

Everything numeric in gwlite is written once against the Python array API standard
(``xp = array_namespace(...)`` at the top of a function, then only ``xp.*``). This
module holds what the standard leaves open: recognising the input's library,
dtype promotion rules, moving to and from NumPy for the code that must run on the
host (POT's CPU solvers, the exact solver), and turning 0-d results into Python
floats unless they carry an autograd graph.
"""

from __future__ import annotations

from typing import Any

import array_api_compat as aac
import numpy as np

from gwlite.errors import GWInputError

__all__ = [
    "array_namespace",
    "backend_name",
    "as_float",
    "compute_dtype",
    "detach",
    "device",
    "eps",
    "requires_grad",
    "scalar",
    "to_numpy",
    "from_numpy",
    "load_namespaces",
]


def backend_name(x: Any) -> str:
    """Short name of the array library of ``x``: ``"numpy"``, ``"torch"`` or ``"cupy"``."""
    if aac.is_torch_array(x):
        return "torch"
    if aac.is_cupy_array(x):
        return "cupy"
    if aac.is_numpy_array(x):
        return "numpy"
    return type(x).__module__.split(".")[0]


def array_namespace(*arrays: Any):
    """Namespace shared by ``arrays`` (``None`` entries ignored); clear error if mixed."""
    present = [a for a in arrays if a is not None]
    names = {backend_name(a) for a in present}
    if len(names) > 1:
        raise GWInputError(
            f"inputs mix array libraries ({', '.join(sorted(names))}); pass all matrices and "
            "weights as the same type (all NumPy, all CuPy or all torch)"
        )
    if "torch" in names:
        devices = {str(a.device) for a in present}
        if len(devices) > 1:
            raise GWInputError(f"torch inputs live on different devices: {sorted(devices)}")
    return aac.array_namespace(*present)


def load_namespaces(*arrays: Any) -> None:
    """Import the array-api-compat wrapper of each supported array's library (done on
    first use otherwise, inside whatever is being timed)."""
    for x in arrays:
        if backend_name(x) in ("numpy", "torch", "cupy"):
            aac.array_namespace(x)


def device(x: Any):
    """The device ``x`` lives on, in the form its library's ``asarray(..., device=)`` takes."""
    return aac.device(x)


def detach(x: Any) -> Any:
    """``x`` without its autograd graph (torch); any other array unchanged."""
    return x.detach() if hasattr(x, "detach") else x


def compute_dtype(xp, dtype):
    """Floating dtype to compute in: float64 for integers, bools and long doubles, float32 for
    half types, the dtype itself otherwise."""
    if xp.isdtype(dtype, ("integral", "bool")):
        return xp.float64
    if dtype in (xp.float32, xp.float64):
        return dtype
    if xp.finfo(dtype).bits > 64:
        return xp.float64  # long double: the widest dtype every backend computes in
    # float16 / bfloat16 (torch) have too little precision for sums of n^2 terms
    return xp.float32


def eps(xp, dtype) -> float:
    """Machine epsilon of a floating dtype."""
    return float(xp.finfo(dtype).eps)


def requires_grad(x: Any) -> bool:
    """True when ``x`` is a torch tensor that takes part in an autograd graph."""
    return bool(getattr(x, "requires_grad", False))


def scalar(x: Any, keep_graph: bool = False):
    """A 0-d array as a Python float, or unchanged when it must carry an autograd graph."""
    if keep_graph and requires_grad(x):
        return x
    if hasattr(x, "item"):
        return float(x.item())
    return float(x)


def as_float(x: Any) -> float:
    """A scalar (Python, NumPy, 0-d array or tensor, with or without a graph) as a float."""
    x = detach(x)
    return float(x.item()) if hasattr(x, "item") else float(x)


def to_numpy(x: Any) -> np.ndarray:
    """Host NumPy copy of any supported array (detached from autograd)."""
    if x is None:
        return None
    name = backend_name(x)
    if name == "torch":
        return x.detach().cpu().numpy()
    if name == "cupy":
        return x.get()
    return np.asarray(x)


def from_numpy(a: np.ndarray, like: Any):
    """``a`` as an array of the same library, device and dtype as ``like``."""
    name = backend_name(like)
    if name == "torch":
        import torch

        return torch.as_tensor(a, dtype=like.dtype, device=like.device)
    if name == "cupy":
        import cupy

        return cupy.asarray(a, dtype=like.dtype)
    return np.asarray(a, dtype=like.dtype)
