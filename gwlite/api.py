"""The one public entry point, :func:`gromov_wasserstein`."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import time

from gwlite import _xp
from gwlite.errors import GWInputError
from gwlite.pointcloud import is_point_cloud
from gwlite.problem import make_problem
from gwlite.result import GWResult
from gwlite.solvers import SOLVERS, check_options

__all__ = ["gromov_wasserstein", "METHODS"]

METHODS = tuple(SOLVERS)


def _solver(method: str):
    if method == "multiscale":
        raise GWInputError("method='multiscale' takes point clouds: pass gwlite.PointCloud(X)")
    if not isinstance(method, str) or method not in SOLVERS:
        raise GWInputError(f"unknown method {method!r}; choose one of {list(SOLVERS)}")
    return SOLVERS[method]


def method_options(method: str) -> dict:
    """The options ``method`` accepts, with their defaults (``{name: default}``).

    >>> from gwlite.api import method_options
    >>> sorted(method_options("sorted"))
    ['diagnostics', 'lower', 'return_coupling']
    """
    params = inspect.signature(_solver(method)).parameters
    return {name: par.default for name, par in params.items() if name != "problem"}


def _preload(method: str, options: dict, *arrays) -> None:
    """Import what the call will import on use (a solver's ``imports``, POT for TLB, the
    array-api-compat wrapper of the inputs' library) before the clock starts: POT's
    first import takes about a second and is not part of the computation."""
    _xp.load_namespaces(*arrays)
    modules = set(getattr(SOLVERS[method], "imports", ()))
    if options.get("lower", method_options(method).get("lower")) == "tlb":
        modules.add("ot")
    for name in sorted(modules):
        importlib.import_module(name)


def gromov_wasserstein(
    C1,
    C2,
    p=None,
    q=None,
    *,
    method: str = "auto",
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
    C1, C2 : array ``(n, n)`` and ``(m, m)``, or :class:`gwlite.PointCloud`
        Structure matrices (distances, adjacency, kernels), NumPy, CuPy or torch;
        sizes may differ. Integer inputs are cast to float. Point clouds never become
        matrices with ``method="multiscale"``, nor with ``"auto"`` above
        ``gwlite.pointcloud.dispatch.DENSE_MAX`` points (it then runs ``multiscale`` and
        says so in ``diagnostics["route"]``); other methods use their distance matrices.
    p, q : array, optional
        Node weights (non-negative, summing to 1); uniform by default.
    method : {"auto", "sorted", "proximal", "cg", "entropic", "exact", "sdp", "rlt"}
        ``"auto"`` (default): the tightest proven interval within ``time_limit``
        (10 s by default), escalating from the sorted bounds to TLB, ``proximal``,
        ``exact`` and ``sdp`` or ``rlt`` (see :mod:`gwlite.solvers.auto`); ``value`` is
        its best plan's cost.
        ``"sorted"``: the InfiGFusion closed form, O(n^2) for the features and
        O(n log n) after, with the sorted coupling's cost as ``upper``.
        ``"proximal"``: gwlite's own solver (KL mirror descent, batched starts,
        NumPy/CuPy/torch), a plan and its exact cost as ``upper``.
        ``"cg"``: POT's conditional gradient (a local optimum).
        ``"entropic"``: POT's entropic GW, plan rounded onto the polytope.
        ``"exact"``: branch and bound over permutations (small problems).
        ``"sdp"``: a semidefinite relaxation solved by a conic solver (SCS by
        default; the ``certify`` extra), a rigorous lower bound that certifies many
        small problems (``n * m <= 100`` without ``max_size=``).
        ``"rlt"``: the RLT dual ascent, a proven lower bound above TLB for graphs of
        tens of nodes (``n * m <= 4096``), every iterate a bound.
        ``"multiscale"``: point clouds only (:mod:`gwlite.solvers.multiscale`): quantise,
        solve, lift and refine; a sparse plan priced exactly, with the point-cloud bounds.
    loss_fun : {"square_loss", "abs_loss"}
    **options
        Method-specific options, each checked before any work (unknown names and bad
        values raise; :func:`gwlite.api.method_options` lists a method's options). Among them,
        ``lower`` picks the proven lower bound reported as ``lower``: ``"mean_row"``
        (the closed form, default of the sorted and POT methods), ``"flb"``, ``"slb"``,
        ``"tlb"`` (Memoli's bounds; TLB dominates the others, default of ``"exact"``)
        or ``"rank_one"`` (:func:`gwlite.rank_one_bounds`). ``return_coupling=False``
        skips the coupling.

    Returns
    -------
    GWResult
        ``lower <= GW <= upper`` always; see :class:`gwlite.GWResult`.

    Raises
    ------
    GWInputError
        Invalid inputs or options (a ``ValueError``), always before any work; see the
        input contract in the user guide.
    GWSolverError
        A solver failed numerically (e.g. an entropic ``epsilon`` too small for POT's
        Sinkhorn iterations).

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
    if is_point_cloud(C1) or is_point_cloud(C2):
        from gwlite.pointcloud.dispatch import gromov_wasserstein_clouds

        return gromov_wasserstein_clouds(C1, C2, p, q, method, loss_fun, options)
    solver = _solver(method)
    # every option and input is checked before any work, and before any heavy import
    # (POT imports torch and jax when installed): a refused call must be fast
    start = time.perf_counter()
    options = check_options(method, solver, options, method_options(method))
    problem = make_problem(C1, C2, p, q, loss_fun, symmetric=options.get("symmetric"))
    checked_s = time.perf_counter() - start
    _preload(method, options, C1, C2)  # one-time imports: not part of time_s
    start = time.perf_counter()
    result = solver(problem, **options)
    return dataclasses.replace(result, time_s=checked_s + time.perf_counter() - start)
