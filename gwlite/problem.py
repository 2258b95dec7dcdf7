"""Validated GW inputs: the one place where every input check lives.

A :class:`GWProblem` holds two structure matrices, their node weights and the loss,
already checked and cast to a floating dtype. Solvers take a problem and never
re-validate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gwlite import _xp
from gwlite.errors import GWInputError

__all__ = ["GWProblem", "LOSS_EXPONENTS", "make_problem"]

#: ``loss_fun`` name -> exponent ``r`` of the loss ``L(a, b) = |a - b|^r``.
LOSS_EXPONENTS = {"square_loss": 2, "abs_loss": 1}


@dataclass(frozen=True)
class GWProblem:
    """Validated inputs of a Gromov-Wasserstein problem.

    Attributes
    ----------
    C1, C2 : array
        Structure matrices, shapes ``(..., n, n)`` and ``(..., m, m)``, floating dtype.
    p, q : array
        Node weights, shapes ``(..., n)`` and ``(..., m)``, non-negative, summing to 1.
    loss_fun : str
        ``"square_loss"`` or ``"abs_loss"``.
    uniform : bool
        True when both weight vectors are uniform and need no gradient, so that
        the equal-mass fast paths may be used.
    """

    C1: Any
    C2: Any
    p: Any
    q: Any
    loss_fun: str
    uniform: bool

    @property
    def xp(self):
        return _xp.array_namespace(self.C1)

    @property
    def n(self) -> int:
        return int(self.C1.shape[-1])

    @property
    def m(self) -> int:
        return int(self.C2.shape[-1])

    @property
    def exponent(self) -> int:
        """Exponent ``r`` of the loss ``|a - b|^r``."""
        return LOSS_EXPONENTS[self.loss_fun]

    @property
    def backend(self) -> str:
        return _xp.backend_name(self.C1)

    @property
    def requires_grad(self) -> bool:
        return any(_xp.requires_grad(a) for a in (self.C1, self.C2, self.p, self.q))

    @property
    def batch_shape(self) -> tuple:
        return tuple(self.C1.shape[:-2])

    def is_symmetric(self) -> bool:
        """Both matrices symmetric up to ``sqrt(eps)`` relative to their scale."""
        return _is_symmetric(self.C1) and _is_symmetric(self.C2)

    def scale(self) -> float:
        """Largest absolute entry of either matrix (at least 1): the scale of the losses."""
        xp = self.xp
        C1, C2 = (_xp.detach(C) for C in (self.C1, self.C2))
        top = max(float(xp.max(xp.abs(C1))), float(xp.max(xp.abs(C2))))
        return max(top, 1.0) ** self.exponent


def check_loss(loss_fun: str) -> str:
    """Return ``loss_fun`` if it is a known loss, else raise :class:`~gwlite.GWInputError`."""
    if loss_fun not in LOSS_EXPONENTS:
        raise GWInputError(f"unknown loss_fun {loss_fun!r}; choose one of {sorted(LOSS_EXPONENTS)}")
    return loss_fun


def _as_array(x: Any, name: str):
    """Lists, tuples and scalars become NumPy arrays; arrays pass through."""
    if x is None:
        return None
    if isinstance(x, (list, tuple, int, float)) or np.isscalar(x):
        try:
            return np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise GWInputError(f"{name} is not a numeric array: {err}") from err
    if isinstance(x, np.ndarray) and x.dtype == object:
        raise GWInputError(f"{name} has dtype object; pass a numeric array")
    return x


def _check_finite(xp, x, name: str) -> None:
    bad = ~xp.isfinite(x)
    if bool(xp.any(bad)):
        count = int(xp.sum(xp.astype(bad, xp.int64)))
        raise GWInputError(f"{name} has {count} non-finite entries (NaN or Inf)")


def _as_matrix(xp, C, name: str, batch: bool, check_entries: bool = True):
    if C.ndim < 2 or (C.ndim > 2 and not batch):
        allowed = "(n, n) or a batch (..., n, n)" if batch else "(n, n)"
        raise GWInputError(f"{name} must have shape {allowed}, got {tuple(C.shape)}")
    if C.shape[-1] != C.shape[-2]:
        raise GWInputError(f"{name} must be square, got shape {tuple(C.shape)}")
    if C.shape[-1] == 0 or any(d == 0 for d in C.shape):
        raise GWInputError(f"{name} is empty (shape {tuple(C.shape)}): a graph needs a node")
    # integer inputs are cast to float, never truncated (POT issues #583, #530)
    C = xp.astype(C, _xp.compute_dtype(xp, C.dtype), copy=False)
    if check_entries:
        _check_finite(xp, C, name)
    return C


def _weights(xp, w, C, name: str, dtype):
    n = C.shape[-1]
    batch_shape = tuple(C.shape[:-2])
    if w is None:
        ones = xp.ones(batch_shape + (n,), dtype=dtype, device=_xp.device(C))
        return ones / n
    if xp.isdtype(w.dtype, ("integral", "bool")):
        raise GWInputError(f"{name} has integer dtype {w.dtype}; node weights must be floats")
    # weights are checked to the precision they were given in (float32 sums are off ~1e-7)
    given = _xp.compute_dtype(xp, w.dtype)
    w = xp.astype(w, dtype, copy=False)
    if w.ndim < 1 or w.shape[-1] != n or (w.ndim > 1 and tuple(w.shape[:-1]) != batch_shape):
        raise GWInputError(
            f"{name} has shape {tuple(w.shape)} but its matrix has {n} nodes"
            + (f" and batch shape {batch_shape}" if batch_shape else "")
        )
    _check_finite(xp, w, name)
    if bool(xp.any(w < 0)):
        raise GWInputError(f"{name} has negative entries; node weights must be >= 0")
    total = xp.sum(_xp.detach(w), axis=-1)
    tol = max(1e-9, float(np.sqrt(_xp.eps(xp, given))))
    worst = float(xp.max(xp.abs(total - 1)))
    if worst > tol:
        raise GWInputError(
            f"{name} must sum to 1 (off by {worst:.3g}, tolerance {tol:.1g}); "
            f"normalise it, e.g. {name} / {name}.sum()"
        )
    return w


def _is_symmetric(C) -> bool:
    xp = _xp.array_namespace(C)
    C = _xp.detach(C)
    scale = max(float(xp.max(xp.abs(C))), 1.0)
    tol = float(np.sqrt(_xp.eps(xp, C.dtype))) * scale
    return float(xp.max(xp.abs(C - xp.matrix_transpose(C)))) <= tol


def make_problem(
    C1,
    C2,
    p=None,
    q=None,
    loss_fun: str = "square_loss",
    *,
    batch: bool = False,
    symmetric: bool | None = None,
    check_entries: bool = True,
) -> GWProblem:
    """Validate and cast GW inputs.

    Parameters
    ----------
    C1, C2 : array-like
        Square structure matrices (NumPy, CuPy, torch or nested lists).
    p, q : array-like, optional
        Node weights; uniform when omitted.
    loss_fun : {"square_loss", "abs_loss"}
    batch : bool
        Accept leading batch dimensions.
    symmetric : bool, optional
        When True, refuse matrices that are not symmetric.
    check_entries : bool
        Scan every entry for NaN/Inf. A caller that only needs the row sums passes
        False and checks those instead (:func:`check_features`): a non-finite entry
        always makes its row sum non-finite, and this saves a pass over the matrix.

    Raises
    ------
    GWInputError
        Non-finite entries, non-square, empty or wrongly shaped matrices, weights that
        are negative, of the wrong length or do not sum to 1, mixed array libraries,
        unknown loss, asymmetric matrices when ``symmetric=True``.
    """
    check_loss(loss_fun)
    C1, C2, p, q = (_as_array(x, n) for x, n in ((C1, "C1"), (C2, "C2"), (p, "p"), (q, "q")))
    xp = _xp.array_namespace(C1, C2, p, q)
    C1 = _as_matrix(xp, C1, "C1", batch, check_entries)
    C2 = _as_matrix(xp, C2, "C2", batch, check_entries)
    if tuple(C1.shape[:-2]) != tuple(C2.shape[:-2]):
        raise GWInputError(
            f"batch shapes differ: C1 {tuple(C1.shape[:-2])} vs C2 {tuple(C2.shape[:-2])}"
        )
    dtype = xp.result_type(C1.dtype, C2.dtype)
    C1, C2 = xp.astype(C1, dtype, copy=False), xp.astype(C2, dtype, copy=False)
    uniform = (p is None or _is_uniform(xp, p)) and (q is None or _is_uniform(xp, q))
    p = _weights(xp, p, C1, "p", dtype)
    q = _weights(xp, q, C2, "q", dtype)
    problem = GWProblem(C1, C2, p, q, loss_fun, uniform)
    if symmetric and not problem.is_symmetric():
        raise GWInputError(
            "symmetric=True but C1 or C2 is not symmetric; pass symmetric=False or "
            "symmetrise the input, e.g. (C + C.T) / 2"
        )
    return problem


def _is_uniform(xp, w) -> bool:
    if _xp.requires_grad(w) or w.ndim == 0 or w.shape[-1] == 0:
        return False
    return bool(xp.all(w == w[..., :1]))


def check_features(features, name: str) -> None:
    """Refuse non-finite row sums (the cheap form of the entry check, see make_problem)."""
    xp = _xp.array_namespace(features)
    if not bool(xp.all(xp.isfinite(features))):
        raise GWInputError(
            f"{name} has non-finite entries (NaN or Inf), or entries so large that "
            "their weighted row sums overflow"
        )
