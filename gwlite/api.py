"""The one public entry point, :func:`gromov_wasserstein`."""

from __future__ import annotations

import dataclasses
import inspect
import time

from gwlite.bounds import LOWER_BOUNDS
from gwlite.errors import GWInputError
from gwlite.problem import make_problem
from gwlite.result import GWResult
from gwlite.solvers import SOLVERS

__all__ = ["gromov_wasserstein", "METHODS"]

METHODS = tuple(SOLVERS)


def _check_options(method: str, solver, options: dict) -> None:
    accepted = [name for name in inspect.signature(solver).parameters if name != "problem"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise GWInputError(
            f"unknown option(s) {unknown} for method={method!r}; it accepts {accepted}"
        )
    # checked before any work: a bad name must not surface after a long solve
    if "lower" in options and options["lower"] not in LOWER_BOUNDS:
        raise GWInputError(
            f"unknown lower bound {options['lower']!r}; choose one of {list(LOWER_BOUNDS)}"
        )


def gromov_wasserstein(
    C1,
    C2,
    p=None,
    q=None,
    *,
    method: str = "sorted",
    loss_fun: str = "square_loss",
    **options,
) -> GWResult:
    r"""Gromov-Wasserstein between two metric-measure spaces, with proven bounds.

    .. math::

        \mathrm{GW}(C_1, C_2, p, q) = \min_{\pi \in \Pi(p, q)}
        \sum_{i,j,k,l} L(C_{1,ik}, C_{2,jl}) \, \pi_{ij} \pi_{kl},

    with :math:`L(a, b) = |a - b|^2` (``"square_loss"``) or :math:`|a - b|`
    (``"abs_loss"``); POT's convention (no 1/2, no root).

    Parameters
    ----------
    C1, C2 : array ``(n, n)`` and ``(m, m)``
        Structure matrices (distances, adjacency, kernels), NumPy, CuPy or torch;
        sizes may differ. Integer inputs are cast to float.
    p, q : array, optional
        Node weights (non-negative, summing to 1); uniform by default.
    method : {"sorted", "cg", "entropic", "exact"}
        ``"sorted"``: the InfiGFusion closed form, O(n^2) for the features and
        O(n log n) after, with the sorted coupling's cost as ``upper``.
        ``"cg"``: POT's conditional gradient (a local optimum).
        ``"entropic"``: POT's entropic GW, plan rounded onto the polytope.
        ``"exact"``: branch and bound over permutations (small problems).
    loss_fun : {"square_loss", "abs_loss"}
    **options
        Method-specific options (see :mod:`gwlite.solvers`); unknown names raise.

    Returns
    -------
    GWResult
        ``lower <= GW <= upper`` always; see :class:`gwlite.GWResult`.

    Raises
    ------
    GWInputError
        Invalid inputs or options (a ``ValueError``).

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> C = np.array([[0., 1., 3.], [1., 0., 2.], [3., 2., 0.]])
    >>> res = gwlite.gromov_wasserstein(C, C[::-1, ::-1])  # the same space, relabelled
    >>> res.lower, res.upper, res.certified
    (0.0, 0.0, True)
    >>> K2 = np.array([[0., 1.], [1., 0.]])
    >>> gwlite.gromov_wasserstein(K2, np.eye(2), method="cg").upper  # beats both permutations (1.0)
    0.5
    """
    if method not in SOLVERS:
        raise GWInputError(f"unknown method {method!r}; choose one of {list(SOLVERS)}")
    solver = SOLVERS[method]
    _check_options(method, solver, options)
    if method in ("cg", "entropic"):
        import ot  # noqa: F401  (POT's first import takes ~1 s: keep it off the clock)
    start = time.perf_counter()
    problem = make_problem(C1, C2, p, q, loss_fun, symmetric=options.get("symmetric"))
    result = solver(problem, **options)
    return dataclasses.replace(result, time_s=time.perf_counter() - start)
