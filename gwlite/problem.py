"""Validated GW inputs: the one place where every input check lives.

A :class:`GWProblem` holds two structure matrices, their node weights and the loss,
already checked and cast to a floating dtype. Solvers take a problem and never
re-validate.

The input contract (``docs/guide/input_contract.md``): NumPy, CuPy and torch arrays are
used as they are; anything NumPy converts cleanly to a real numeric array (lists,
``np.matrix``, SciPy sparse matrices, unmasked masked arrays, object arrays of numbers,
pandas frames) is converted; the rest (``None``, complex, strings, masked entries) is
refused with a :class:`~gwlite.GWInputError`, as are non-finite entries and matrices
whose losses would leave the floating-point range (see ``check_range``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gwlite import _xp
from gwlite.errors import GWInputError

# the validation helpers (as_input_array, check_range, check_weights, checked_features)
# are shared by gwlite's modules; users call make_problem
__all__ = [
    "GWProblem",
    "LOSS_EXPONENTS",
    "check_alpha",
    "check_cost_matrix",
    "check_features",
    "check_loss",
    "make_problem",
]

#: ``loss_fun`` name -> exponent ``r`` of the loss ``L(a, b) = |a - b|^r``.
LOSS_EXPONENTS = {"square_loss": 2, "abs_loss": 1}

# headroom above the largest loss, as a power of two: sums of n^2 weighted losses and
# the unnormalised sums of the exact solver stay below the dtype's maximum
_HEADROOM_LOG2 = 4


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
    top : float or None
        Largest absolute entry of either matrix: set by :func:`make_problem`, computed on
        first use otherwise (see :meth:`entry_scale`).
    """

    C1: Any
    C2: Any
    p: Any
    q: Any
    loss_fun: str
    uniform: bool
    # not init fields: dataclasses.replace() (new matrices) must not carry them over
    top: float | None = field(default=None, init=False, compare=False, repr=False)
    # abs_loss: the sorted distinct entries of both matrices (gwlite.solvers._operators)
    levels: list | None = field(default=None, init=False, compare=False, repr=False)

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

    def entry_scale(self) -> float:
        """Largest absolute entry of either matrix (0.0 when both are zero)."""
        if self.top is None:
            top = max(_largest_abs(self.C1), _largest_abs(self.C2))
            object.__setattr__(self, "top", top)
        return self.top

    def scale(self) -> float:
        r"""The loss scale :math:`\max(|C_1|, |C_2|)^r`, the unit every tolerance is
        relative to: multiplying both matrices by :math:`s > 0` multiplies it, and every
        GW value, by :math:`s^r`."""
        try:
            return self.entry_scale() ** self.exponent
        except OverflowError:  # only for problems built around make_problem's checks
            return math.inf

    @property
    def unit(self) -> float:
        """A power of two at the scale of the entries: ``C / unit`` has its largest
        absolute entry in ``[0.5, 1)`` (1.0 for all-zero matrices). Dividing by it is exact,
        so solvers with absolute tolerances (POT) see the same numbers at every scale."""
        top = self.entry_scale()
        return 1.0 if top == 0 else math.ldexp(1.0, math.frexp(top)[1])


def check_loss(loss_fun: str) -> str:
    """Return ``loss_fun`` if it is a known loss, else raise :class:`~gwlite.GWInputError`."""
    if not isinstance(loss_fun, str) or loss_fun not in LOSS_EXPONENTS:
        raise GWInputError(f"unknown loss_fun {loss_fun!r}; choose one of {sorted(LOSS_EXPONENTS)}")
    return loss_fun


# ---------------------------------------------------------------- array conversion
def _is_scipy_sparse(x: Any) -> bool:
    # scipy.sparse is not imported for the check: gwlite's import stays light
    return type(x).__module__.startswith("scipy.sparse") and hasattr(x, "toarray")


def _numeric_numpy(a: np.ndarray, name: str) -> np.ndarray:
    kind = a.dtype.kind
    if kind in "biuf":
        return a
    if kind == "c":
        raise GWInputError(
            f"{name} is complex ({a.dtype}); GW needs real matrices and weights. Pass the "
            f"real part explicitly ({name}.real) or the modulus (abs({name})) if that is "
            "what you mean"
        )
    if kind == "O":
        if any(v is None for v in a.flat):
            raise GWInputError(f"{name} has dtype object with None entries; pass numbers")
        try:
            converted = a.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise GWInputError(
                f"{name} has dtype object and entries that are not real numbers ({err}); "
                "pass a numeric array"
            ) from err
        return converted
    raise GWInputError(f"{name} has dtype {a.dtype}, which is not numeric; pass a numeric array")


def as_input_array(x: Any, name: str, *, required: bool = True):
    """``x`` as a real numeric array of a supported library, or a clear refusal.

    NumPy, CuPy and torch arrays pass through (after a dtype check). ``np.matrix``,
    SciPy sparse matrices, masked arrays without masked entries and anything
    ``np.asarray`` turns into a numeric array (lists, tuples, pandas, JAX) become NumPy
    arrays; Python containers of integers become float64.

    Raises
    ------
    GWInputError
        ``None`` where an array is required, complex or non-numeric dtypes, masked
        entries, objects NumPy cannot convert.
    """
    if x is None:
        if required:
            raise GWInputError(f"{name} is None; pass an array")
        return None
    lib = _xp.backend_name(x)
    if lib == "torch":
        if x.is_complex():
            raise GWInputError(
                f"{name} is complex ({x.dtype}); GW needs real matrices and weights. Pass "
                f"{name}.real or {name}.abs() explicitly if that is what you mean"
            )
        return x
    if lib == "cupy":
        _numeric_numpy(np.empty(0, dtype=x.dtype), name)
        return x
    if isinstance(x, np.ma.MaskedArray):
        if np.ma.getmaskarray(x).any():
            raise GWInputError(
                f"{name} has masked entries, which have no value; fill them "
                f"({name}.filled(value)) or drop those nodes"
            )
        return _numeric_numpy(np.ma.getdata(x), name)
    if isinstance(x, np.ndarray):
        return _numeric_numpy(np.asarray(x), name)  # np.matrix -> ndarray
    if _is_scipy_sparse(x):
        return _numeric_numpy(np.asarray(x.toarray()), name)
    try:
        a = np.asarray(x)
    except Exception as err:  # ragged lists, unconvertible objects: many kinds
        raise GWInputError(
            f"{name} of type {type(x).__name__} is not an array NumPy can convert: {err}"
        ) from err
    a = _numeric_numpy(a, name)
    if a.dtype.kind in "biu" and not hasattr(x, "dtype"):
        a = a.astype(np.float64)  # a list of ints is a list of numbers
    return a


# ---------------------------------------------------------------- entries and range
def _largest_abs(C) -> float:
    C = _xp.detach(C)
    xp = _xp.array_namespace(C)
    return max(float(xp.max(C)), -float(xp.min(C)))


def _entry_range(xp, C, name: str) -> float:
    """Largest absolute entry, refusing non-finite ones (one read of the matrix)."""
    C = _xp.detach(C)
    # max and min propagate NaN and +-Inf: two reductions, no temporary array
    hi, lo = float(xp.max(C)), float(xp.min(C))
    if not (math.isfinite(hi) and math.isfinite(lo)):
        count = int(xp.sum(xp.astype(~xp.isfinite(C), xp.int64)))
        raise GWInputError(f"{name} has {count} non-finite entries (NaN or Inf)")
    return max(hi, -lo)


def _fits(dtype_info, log2_top: float, size: int) -> bool:
    """Squares of entry differences (and their sums) are normal numbers with headroom."""
    log2_size = math.log2(max(size, 2))
    high = 2 * (log2_top + 1) + 2 * log2_size + _HEADROOM_LOG2
    low = 2 * log2_top - 2 * log2_size
    return high <= math.log2(dtype_info.max) and low >= math.log2(dtype_info.tiny) - math.log2(
        dtype_info.eps
    )


def check_range(xp, dtype, top: float, size: int, what: str = "C1 and C2"):
    r"""The dtype to compute in so that the losses of entries up to ``top`` are exact.

    Every GW quantity is a weighted sum of losses :math:`|a - b|^r` between entries, so
    gwlite needs the squares of entries of magnitude ``top`` (the square loss, and the
    spectral bounds for both losses) to be normal numbers with room for sums over the
    ``size``-node problem. In float64 this holds for largest entries between about
    ``1e-145`` and ``1e152``. Half and single precision inputs outside their own range are
    computed in float64; float64 inputs outside it are refused before any work: GW is
    homogeneous, :math:`\mathrm{GW}(sC_1, sC_2) = s^r \mathrm{GW}(C_1, C_2)`, so
    rescaling both matrices by the same factor loses nothing.

    Parameters
    ----------
    xp : namespace
    dtype : floating dtype the inputs were cast to
    top : float
        Largest absolute entry (0 for all-zero matrices: always fine).
    size : int
        ``n + m``.
    what : str
        Names for the error message.

    Returns
    -------
    dtype
        ``dtype`` itself, or ``xp.float64`` when only that holds the losses.

    Raises
    ------
    GWInputError
        When not even float64 holds them.
    """
    if top == 0:
        return dtype
    log2_top = math.log2(top)
    if _fits(xp.finfo(dtype), log2_top, size):
        return dtype
    if _fits(np.finfo(np.float64), log2_top, size):
        return xp.float64
    too = "large" if log2_top > 0 else "small"
    factor = 2.0 ** min(1000, max(-1000, -round(log2_top)))
    direction = "overflow" if log2_top > 0 else "underflow"
    raise GWInputError(
        f"{what} have entries of magnitude up to {top:.3g}, too {too} for gwlite to compute "
        f"with: the squared differences of entries would {direction} float64. GW is "
        "homogeneous, GW(s*C1, s*C2) = s^r GW(C1, C2) (r = 2 for square_loss, 1 for "
        f"abs_loss): multiply both matrices by the same factor, e.g. s = {factor:.3g}, and "
        "the result by s^-r"
    )


def _as_matrix(xp, C, name: str, batch: bool):
    if C.ndim < 2 or (C.ndim > 2 and not batch):
        allowed = "(n, n) or a batch (..., n, n)" if batch else "(n, n)"
        raise GWInputError(f"{name} must have shape {allowed}, got {tuple(C.shape)}")
    if C.shape[-1] != C.shape[-2]:
        raise GWInputError(f"{name} must be square, got shape {tuple(C.shape)}")
    if C.shape[-1] == 0 or any(d == 0 for d in C.shape):
        raise GWInputError(f"{name} is empty (shape {tuple(C.shape)}): a graph needs a node")
    # integer inputs are cast to float, never truncated (POT issues #583, #530)
    return xp.astype(C, _xp.compute_dtype(xp, C.dtype), copy=False)


def _check_finite(xp, x, name: str) -> None:
    bad = ~xp.isfinite(_xp.detach(x))
    if bool(xp.any(bad)):
        count = int(xp.sum(xp.astype(bad, xp.int64)))
        raise GWInputError(f"{name} has {count} non-finite entries (NaN or Inf)")


def check_weights(
    xp, w, n: int, batch_shape: tuple, name: str, dtype, like=None, *, tol=None, empty_ok=False
):
    """Validated node weights ``w`` of an ``n``-node space, cast to ``dtype``.

    ``None`` gives uniform weights (on the device of ``like``). Refuses integer dtypes,
    wrong shapes, non-finite or negative entries and sums off 1 by more than the
    round-off of the dtype the weights were given in.
    """
    if w is None:
        device = None if like is None else _xp.device(like)
        return xp.ones(batch_shape + (n,), dtype=dtype, device=device) / n
    if xp.isdtype(w.dtype, ("integral", "bool")):
        raise GWInputError(f"{name} has integer dtype {w.dtype}; node weights must be floats")
    if w.ndim < 1 or w.shape[-1] != n or (w.ndim > 1 and tuple(w.shape[:-1]) != batch_shape):
        raise GWInputError(
            f"{name} has shape {tuple(w.shape)} but its matrix has {n} nodes"
            + (f" and batch shape {batch_shape}" if batch_shape else "")
        )
    _check_finite(xp, w, name)
    if bool(xp.any(_xp.detach(w) < 0)):
        raise GWInputError(f"{name} has negative entries; node weights must be >= 0")
    # summed in float64 as given, before any cast: a cast to float32 alone moves the
    # sum of n weights by ~n * 6e-8, which is no fault of the caller's. The tolerance and
    # the widening are those of the dtype the weights are given in (float16 1/49 sums to
    # 1 - 4e-4: half types are judged by their own round-off, not float32's)
    given = w.dtype
    total = xp.sum(xp.astype(_xp.detach(w), xp.float64), axis=-1)
    tol = max(1e-9, float(np.sqrt(_xp.eps(xp, given)))) if tol is None else tol
    off = xp.abs(total - 1)
    if empty_ok:
        off = xp.where(total == 0, xp.zeros_like(off), off)
    worst = float(xp.max(off))
    if not worst <= tol:
        raise GWInputError(
            f"{name} must sum to 1 (off by {worst:.3g}, tolerance {tol:.1g}); "
            f"normalise it, e.g. {name} / {name}.sum()"
        )
    w = xp.astype(w, dtype, copy=False)
    if xp.finfo(given).eps > xp.finfo(dtype).eps and not empty_ok:
        # widened (float16 weights computed in float32, float32 weights with float64
        # matrices): renormalised in the compute dtype,
        # so that p and q have one mass to round-off of that dtype, not of float32 (6e-8);
        # on the simplex this changes no gradient (d(w / sum w) is the identity there).
        # Weights given in the compute dtype are used bit for bit.
        w = w / xp.sum(w, axis=-1, keepdims=True)
    return w


def _is_symmetric(C) -> bool:
    xp = _xp.array_namespace(C)
    C = _xp.detach(C)
    # relative to the entries' own scale (an absolute floor would accept any tiny matrix)
    scale = max(float(xp.max(xp.abs(C))), float(np.finfo(np.float64).tiny))
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
        Square structure matrices (NumPy, CuPy, torch, or anything NumPy converts to a
        real numeric array, see ``as_input_array``).
    p, q : array-like, optional
        Node weights; uniform when omitted.
    loss_fun : {"square_loss", "abs_loss"}
    batch : bool
        Accept leading batch dimensions.
    symmetric : bool, optional
        When True, refuse matrices that are not symmetric.
    check_entries : bool
        Scan every entry for NaN/Inf and for the representable range
        (``check_range``). A caller that only needs the row sums passes False and
        checks those instead (``checked_features``): a non-finite entry always makes
        its row sum non-finite, and this saves a pass over the matrix.

    Raises
    ------
    GWInputError
        Non-finite entries, entries too large or too small to compute with,
        non-square, empty or wrongly shaped matrices, complex or non-numeric inputs,
        weights that are negative, of the wrong length or do not sum to 1, mixed array
        libraries, unknown loss, asymmetric matrices when ``symmetric=True``.
    """
    check_loss(loss_fun)
    C1 = as_input_array(C1, "C1")
    C2 = as_input_array(C2, "C2")
    p = as_input_array(p, "p", required=False)
    q = as_input_array(q, "q", required=False)
    xp = _xp.array_namespace(C1, C2, p, q)
    C1 = _as_matrix(xp, C1, "C1", batch)
    C2 = _as_matrix(xp, C2, "C2", batch)
    if tuple(C1.shape[:-2]) != tuple(C2.shape[:-2]):
        raise GWInputError(
            f"batch shapes differ: C1 {tuple(C1.shape[:-2])} vs C2 {tuple(C2.shape[:-2])}"
        )
    dtype = xp.result_type(C1.dtype, C2.dtype)
    top = None
    if check_entries:
        top = max(_entry_range(xp, C1, "C1"), _entry_range(xp, C2, "C2"))
        dtype = check_range(xp, dtype, top, C1.shape[-1] + C2.shape[-1])
    C1, C2 = xp.astype(C1, dtype, copy=False), xp.astype(C2, dtype, copy=False)
    uniform = (p is None or _is_uniform(xp, p)) and (q is None or _is_uniform(xp, q))
    batch_shape = tuple(C1.shape[:-2])
    p = check_weights(xp, p, C1.shape[-1], batch_shape, "p", dtype, like=C1)
    q = check_weights(xp, q, C2.shape[-1], batch_shape, "q", dtype, like=C2)
    problem = GWProblem(C1, C2, p, q, loss_fun, uniform)
    if top is not None:
        object.__setattr__(problem, "top", top)  # already known: no second read
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
    if not bool(xp.all(xp.isfinite(_xp.detach(features)))):
        raise GWInputError(
            f"{name} has non-finite entries (NaN or Inf), or entries so large that "
            "their weighted row sums overflow"
        )


def checked_features(problem: GWProblem, s1, s2):
    """The mean-row features of an unchecked problem, checked (and widened if needed).

    The cheap form of :func:`make_problem`'s entry checks for the closed form, which only
    reads the features: non-finite features mean non-finite entries; features whose
    losses leave the dtype's range are widened to float64 (or refused, as
    ``check_range`` does for the entries). Only when the features are too small to
    tell is the matrix itself read, so that the same inputs are refused by every bound.
    """
    xp = problem.xp
    extremes = []
    for s, name in ((s1, "C1"), (s2, "C2")):
        s = _xp.detach(s)
        hi, lo = float(xp.max(s)), float(xp.min(s))  # NaN and +-Inf propagate
        if not (math.isfinite(hi) and math.isfinite(lo)):
            raise GWInputError(
                f"{name} has non-finite entries (NaN or Inf), or entries so large that "
                "their weighted row sums overflow"
            )
        extremes += [hi, -lo]
    size = problem.n + problem.m
    dtype = s1.dtype
    feature_top = max(extremes)
    if feature_top == 0 or _fits(xp.finfo(dtype), math.log2(feature_top), size):
        return s1, s2
    # the features bound nothing from below: judge small ones by the entries themselves
    top = feature_top if feature_top > 1 else problem.entry_scale()
    wide = check_range(xp, dtype, top, size)
    return xp.astype(s1, wide, copy=False), xp.astype(s2, wide, copy=False)


# ---------------------------------------------------------------- fused GW inputs
def check_alpha(alpha) -> float:
    """``alpha`` as a float in ``[0, 1]`` (the weight of the structure term in fused GW)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise GWInputError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if not (math.isfinite(alpha) and 0 <= alpha <= 1):
        raise GWInputError(f"alpha must be in [0, 1] (0: linear OT on M, 1: GW), got {alpha!r}")
    return float(alpha)


def check_cost_matrix(M, problem: GWProblem, name: str = "M"):
    """The feature cost ``M`` of a fused problem: shape ``(n, m)``, finite, non-negative,
    in the problem's array library and dtype."""
    M = as_input_array(M, name)
    if _xp.backend_name(M) != problem.backend:
        raise GWInputError(
            f"{name} is a {_xp.backend_name(M)} array but C1, C2 are {problem.backend}; "
            "pass all of them in one array library"
        )
    xp = problem.xp
    if tuple(M.shape) != (problem.n, problem.m):
        raise GWInputError(
            f"{name} must have shape (n, m) = {(problem.n, problem.m)} for C1 "
            f"{(problem.n, problem.n)} and C2 {(problem.m, problem.m)}, got {tuple(M.shape)}"
        )
    top = _entry_range(xp, M, name)
    if float(xp.min(_xp.detach(M))) < 0:
        raise GWInputError(
            f"{name} has negative entries; a feature cost is >= 0 (shift it by a constant: "
            "that changes every coupling's cost by the same amount)"
        )
    dtype = problem.C1.dtype
    if top * problem.n * problem.m * 2.0**_HEADROOM_LOG2 > float(xp.finfo(dtype).max):
        raise GWInputError(
            f"{name} has entries up to {top:.3g}, too large to sum in {dtype}; rescale M"
        )
    return xp.astype(M, dtype, copy=False)
