"""Pieces every solver shares: the reported bounds, the certification rule and the
checks of the options.

Certification is scale-relative here and only here: a solver reports ``certified`` by
calling :func:`is_certified`, so that multiplying both matrices by any positive factor
never changes it (every GW value scales by the same power of it).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gwlite import _xp
from gwlite.bounds import LOWER_BOUNDS, compute_lower
from gwlite.coupling import marginal_error, round_to_polytope
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem, as_input_array

__all__ = [
    "CERTIFY_RTOL",
    "blas_threads",
    "OPTION_CHECKS",
    "certify_threshold",
    "check_G0",
    "check_options",
    "clamp_lower",
    "clamp_value",
    "flag",
    "is_certified",
    "lower_check",
    "lower_value",
    "nonneg_int",
    "nonneg_real",
    "one_of",
    "optional",
    "positive_int",
    "positive_real",
    "result_scalars",
    "with_option_checks",
]

#: ``upper - lower`` below this times the loss scale (``problem.scale()``, the largest
#: entry to the power r) counts as a proven equality
CERTIFY_RTOL = 1e-12


def machine_load() -> float:
    """How many processes compete for the cores: the larger of the 1-minute load average
    and the processes runnable right now (Linux's ``/proc/loadavg``, this one included).
    The average lags by a minute: two processes started a second ago are in the second
    number only (measured: two spinning processes, load average 1.7 on 2 cores, and a
    2-thread ``proximal`` next to them returned a plan 2.9x POT CG's at n = 1000). 0
    where neither is known."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    try:
        with open("/proc/loadavg") as f:
            load = max(load, float(f.read().split()[3].split("/")[0]))
    except (OSError, IndexError, ValueError):
        pass
    return load


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where known)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@contextlib.contextmanager
def blas_threads(threads: int | None = None, busy_default: bool = True):
    """Limit the BLAS threads for a solve (threadpoolctl); the setting is restored after.

    ``threads=None``: one thread when the machine is busy (:func:`machine_load` at least
    the core count), where more threads only oversubscribe the cores, else unchanged.
    """
    if threads is None:
        busy = busy_default and machine_load() >= usable_cores()
        if not busy:
            yield
            return
        threads = 1
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        yield


def lower_value(problem: GWProblem, kind: str):
    """The lower bound ``kind`` as a scalar (0-d tensor if it carries a graph), >= 0."""
    return _xp.scalar(compute_lower(problem, kind), keep_graph=True)


def is_certified(problem: GWProblem, lower, upper, rtol: float = CERTIFY_RTOL) -> bool:
    r"""``lower == upper`` up to round-off: the value is then proven to be GW.

    The test is :math:`\mathrm{upper} - \mathrm{lower} \le \mathrm{rtol}\,
    \max(|C_1|, |C_2|)^r` (``rtol`` :data:`CERTIFY_RTOL` by default; a solver whose
    bounds carry a known, larger error, e.g. an iterative conic solver's, passes its
    own): relative to the loss scale, with no absolute floor, so it does not depend on
    the unit the matrices are measured in.
    """
    gap = _xp.as_float(upper) - _xp.as_float(lower)
    return bool(gap <= rtol * problem.scale())


def certify_threshold(top, exponent: int, rtol: float = CERTIFY_RTOL):
    """The largest ``upper - lower`` :func:`is_certified` accepts, for largest absolute
    entries ``top`` (a float, or a NumPy array of them: many pairs at once) and loss
    exponent ``r``: ``rtol * top**r``, with no absolute floor."""
    with np.errstate(over="ignore"):
        return rtol * np.asarray(top, dtype=np.float64) ** exponent


def clamp_value(value, lower, upper):
    """``value`` moved into ``[lower, upper]`` (every result's ``value`` lies there).

    The interval is what is proven; an estimate outside it (the sorted closed form below
    TLB) is a weaker bound than the one reported, so the nearest end is the better
    estimate. Tensors stay in the autograd graph (``clamp`` passes the gradient of the
    end that is taken).
    """
    if _xp.as_float(value) < _xp.as_float(lower):
        return lower
    if _xp.as_float(value) > _xp.as_float(upper):
        return upper
    return value


def clamp_lower(lower, upper):
    """``lower`` clamped into ``[0, upper]``.

    Both are bounds, so a lower bound above the upper bound is round-off (e.g. 1e-32 on
    isomorphic inputs) and the upper bound is the valid value; GW >= 0 makes 0 a valid
    lower bound whenever round-off (TLB's dual, -1e-14) dips below it.
    """
    if _xp.as_float(lower) > _xp.as_float(upper):
        lower = upper
    if _xp.as_float(lower) < 0:
        if _xp.requires_grad(lower):
            return lower - lower  # zero, still part of the graph
        return 0.0
    return lower


def result_scalars(problem: GWProblem, *values):
    """``values`` as Python floats, or all as 0-d arrays when an input requires grad.

    A result's ``value``, ``lower`` and ``upper`` are of one kind: with torch inputs that
    require grad, a bound that does not depend on them (a float from the host) becomes a
    0-d tensor without a graph, like its neighbours.
    """
    if not problem.requires_grad:
        return tuple(_xp.as_float(v) for v in values)
    xp, like = problem.xp, problem.C1
    out = []
    for v in values:
        if _xp.backend_name(v) == _xp.backend_name(like) and getattr(v, "ndim", None) == 0:
            out.append(v)
        else:
            out.append(xp.asarray(_xp.as_float(v), dtype=like.dtype, device=_xp.device(like)))
    return tuple(out)


def check_G0(problem: GWProblem, G0, *, coupling: bool = True):
    """A user start as a float64 coupling of ``p`` and ``q`` in the problem's array library.

    The one check every solver applies to ``G0`` (the same rule for ``cg``, ``proximal``,
    ``sdp``, ``rlt``, the batch and the fused solvers): the same array library as ``C1`` and
    ``C2`` (a list or tuple is converted), shape ``(n, m)``, finite, non-negative, marginals
    within ``max(1e-6, sqrt(eps))`` in l1 of ``p`` and ``q``. A plan within that round-off is
    then rounded exactly onto the polytope (Altschuler et al. 2017, Algorithm 2), because some
    solvers (POT) assert its marginals to 1e-8. Callers cast to the dtype or device they need.
    ``coupling=False``: any non-negative plan, returned as given (no marginal check, no
    rounding), for callers that round it onto the polytope themselves (``sdp``, ``rlt``).

    Returns
    -------
    array or None
        ``None`` when ``G0`` is ``None``.
    """
    if G0 is None:
        return None
    xp = problem.xp
    if not isinstance(G0, (list, tuple)):
        G0 = as_input_array(G0, "G0")  # refuses complex, object and masked arrays
    if _xp.backend_name(G0) != problem.backend and not isinstance(G0, (list, tuple)):
        raise GWInputError(
            f"G0 is a {_xp.backend_name(G0)} array but the inputs are {problem.backend}; "
            "pass G0 in the same array library as C1 and C2"
        )
    try:
        G0 = xp.asarray(G0, device=_xp.device(problem.C1))
    except Exception as err:  # noqa: BLE001 - any conversion failure is a bad input
        raise GWInputError(f"G0 is not a numeric array: {err}") from err
    if tuple(G0.shape) != (problem.n, problem.m):
        raise GWInputError(
            f"G0 must have shape (n, m) = ({problem.n}, {problem.m}), got {tuple(G0.shape)}"
        )
    source_eps = _xp.eps(xp, G0.dtype) if _is_floating(xp, G0) else 0.0
    G0 = xp.astype(_xp.detach(G0), xp.float64)
    if not bool(xp.all(xp.isfinite(G0))):
        raise GWInputError("G0 has non-finite entries (NaN or Inf); a coupling is finite")
    if bool(xp.any(G0 < 0)):
        raise GWInputError("G0 has negative entries; a coupling is non-negative")
    p, q = _xp.detach(problem.p), _xp.detach(problem.q)
    error = marginal_error(G0, p, q)
    tol = max(1e-6, math.sqrt(source_eps))
    if coupling and not error <= tol:
        raise GWInputError(
            f"G0 is not a coupling of p and q (marginal l1 error {error:.3g} > {tol:.1g}); "
            "pass a plan with G0.sum(1) == p and G0.sum(0) == q, e.g. the coupling of another "
            "run or gwlite.coupling.round_to_polytope(G0, p, q)"
        )
    if not coupling:
        return G0
    return round_to_polytope(G0, xp.astype(p, xp.float64), xp.astype(q, xp.float64))


def _is_floating(xp, array) -> bool:
    return xp.isdtype(array.dtype, "real floating")


# ---------------------------------------------------------------- options
#: check(name, value) -> the value to use, or GWInputError
OptionCheck = Callable[[str, Any], Any]


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value):
    if not _is_int(value) or value < 1:
        raise GWInputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def nonneg_int(name: str, value):
    if not _is_int(value) or value < 0:
        raise GWInputError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def positive_real(name: str, value):
    if not _is_real(value) or not math.isfinite(value) or not value > 0:
        raise GWInputError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def nonneg_real(name: str, value):
    if not _is_real(value) or not math.isfinite(value) or not value >= 0:
        raise GWInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def flag(name: str, value):
    if not isinstance(value, (bool, np.bool_)):
        raise GWInputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def optional(check: OptionCheck) -> OptionCheck:
    """``check``, with ``None`` also accepted (the solver's own default applies)."""

    def checked(name, value):
        return None if value is None else check(name, value)

    return checked


def one_of(choices) -> OptionCheck:
    choices = tuple(choices)

    def checked(name, value):
        if not isinstance(value, str) or value not in choices:
            raise GWInputError(f"unknown {name} {value!r}; choose one of {list(choices)}")
        return value

    return checked


def lower_check(name, value):
    if not isinstance(value, str) or value not in LOWER_BOUNDS:
        raise GWInputError(f"unknown lower bound {value!r}; choose one of {list(LOWER_BOUNDS)}")
    return value


#: The check of every option name shared across solvers (one name, one meaning).
#: Options that need the problem (``G0``) are checked by their solver before any work.
OPTION_CHECKS: dict[str, OptionCheck] = {
    "max_iter": positive_int,
    "max_nodes": optional(nonneg_int),
    "time_limit": optional(positive_real),
    "tol": nonneg_real,
    "tol_rel": nonneg_real,
    "tol_abs": nonneg_real,
    "marginal_tol": nonneg_real,
    "epsilon": optional(positive_real),
    "armijo": flag,
    "symmetric": optional(flag),
    "return_coupling": flag,
    "diagnostics": flag,
    "lower": lower_check,
}


def with_option_checks(**checks: OptionCheck):
    """Decorate a solver with checks of its own options (they override the shared ones).

    >>> @with_option_checks(solver=one_of(["PGD", "PPA"]))
    ... def solve(problem, *, solver="PGD"): ...
    >>> sorted(solve.option_checks)
    ['solver']
    """

    def decorate(fn):
        fn.option_checks = dict(getattr(fn, "option_checks", {}), **checks)
        return fn

    return decorate


def check_options(method: str, solver, options: Mapping[str, Any], accepted) -> dict:
    """Validated options of ``solver``: unknown names refused, known ones checked.

    Returns the options with their values normalised (``numpy.int64`` -> ``int``...).
    """
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise GWInputError(
            f"unknown option(s) {unknown} for method={method!r}; it accepts {list(accepted)}"
        )
    own = getattr(solver, "option_checks", {})
    out = {}
    for name, value in options.items():
        check = own.get(name, OPTION_CHECKS.get(name))
        out[name] = value if check is None else check(name, value)
    return out
