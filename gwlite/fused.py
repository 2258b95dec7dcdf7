r"""Fused Gromov-Wasserstein for attributed graphs: :func:`fused_gromov_wasserstein` and
:func:`feature_cost`.

.. math::

    \mathrm{FGW}_\alpha = \min_{\pi \in \Pi(p, q)} (1 - \alpha) \langle M, \pi \rangle
    + \alpha \sum_{ijkl} L(C^1_{ik}, C^2_{jl}) \pi_{ij} \pi_{kl}

(Vayer et al. 2019; POT's ``fused_gromov_wasserstein2`` convention). The methods are in
:mod:`gwlite.solvers.fused`, the bounds in :mod:`gwlite.fused_bounds`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import time

import numpy as np

from gwlite import _xp
from gwlite.errors import GWInputError
from gwlite.fused_bounds import make_fused_problem
from gwlite.problem import as_input_array
from gwlite.result import GWResult
from gwlite.solvers._common import check_options
from gwlite.solvers.fused import FUSED_SOLVERS

__all__ = [
    "FUSED_METHODS",
    "feature_cost",
    "fused_gromov_wasserstein",
    "fused_method_options",
]

FUSED_METHODS = tuple(FUSED_SOLVERS)

#: metrics of :func:`feature_cost` (those of ``scipy.spatial.distance.cdist`` on reals)
FEATURE_METRICS = ("sqeuclidean", "euclidean", "cityblock", "chebyshev", "cosine", "hamming")


def fused_method_options(method: str) -> dict:
    """The options fused ``method`` accepts, with their defaults (``{name: default}``).

    >>> from gwlite.fused import fused_method_options
    >>> sorted(fused_method_options("exact"))
    ['lower', 'max_nodes', 'return_coupling', 'time_limit']
    """
    params = inspect.signature(FUSED_SOLVERS[method]).parameters
    return {name: par.default for name, par in params.items() if name != "fp"}


def fused_gromov_wasserstein(
    M,
    C1,
    C2,
    p=None,
    q=None,
    *,
    alpha: float = 0.5,
    method: str = "auto",
    loss_fun: str = "square_loss",
    **options,
) -> GWResult:
    r"""Fused Gromov-Wasserstein between two attributed graphs, with proven bounds.

    .. math::

        \mathrm{FGW}_\alpha = \min_{\pi \in \Pi(p, q)} (1 - \alpha) \sum_{ij} M_{ij}\pi_{ij}
        + \alpha \sum_{ijkl} L(C_{1,ik}, C_{2,jl}) \, \pi_{ij} \pi_{kl}

    in POT's convention (``ot.gromov.fused_gromov_wasserstein2``: the same plan has the
    same value), :math:`L` the square (or absolute) loss.

    Parameters
    ----------
    M : array ``(n, m)``
        Feature cost between the nodes, finite and non-negative (e.g.
        :func:`feature_cost` of the node features).
    C1, C2 : array ``(n, n)`` and ``(m, m)``
        Structure matrices, as for :func:`gwlite.gromov_wasserstein`.
    p, q : array, optional
        Node weights; uniform by default.
    alpha : float in [0, 1]
        Weight of the structure term: 0 is linear OT on ``M`` (``ot.emd2``), 1 is GW.
    method : {"auto", "proximal", "cg", "entropic", "exact", "sdp"}
        ``"auto"`` (default): the fused TLB (a bound and its LP plan), POT's conditional
        gradient from POT's start and the bound's plan, the batched ``"proximal"`` stage,
        then ``"exact"`` for small uniform problems and the SDP relaxation (``n m <= 36``,
        when a conic solver is installed) within ``time_limit`` (10 s).
        ``"proximal"``: gwlite's batched mirror descent with the linear term, several
        starts, conditional-gradient polish (``gwlite.solvers.batched``).
        ``"cg"``/``"entropic"``: POT's fused solvers (square loss), the plan rounded
        onto the polytope and priced. ``"exact"``: branch and bound over permutations
        with the linear term (uniform weights, ``n == m``).
        ``"sdp"``: the lifted semidefinite relaxation with the linear term (SCS; the
        ``certify`` extra), a rigorous lower bound for small problems.
    loss_fun : {"square_loss", "abs_loss"}
    **options
        Method options, checked before any work (``lower``: ``"tlb"`` (default),
        ``"mean_row"``, ``"flb"``, ``"slb"``, ``"rank_one"``; ``G0``, ``max_iter``,
        ``tol_rel``, ``tol_abs``, ``armijo``, ``symmetric`` for ``cg``; ``epsilon``,
        ``solver`` for ``entropic``; ``time_limit``, ``max_nodes`` for ``exact``).

    Returns
    -------
    GWResult
        ``lower <= FGW <= upper``; ``upper`` (= ``value``) is the fused cost of the
        returned coupling; ``certified`` when the gap is within round-off of the loss
        scale or a theorem proves the permutation optimal (see ``docs/theory_fused.md``).
        Values are floats (computed on the host in float64, no gradients).

    Raises
    ------
    GWInputError
        Invalid ``M`` (shape, NaN/Inf, negative entries), ``alpha`` outside [0, 1],
        invalid matrices, weights or options.

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> C = np.array([[0., 1., 3.], [1., 0., 2.], [3., 2., 0.]])
    >>> M = gwlite.feature_cost(np.array([[0.], [1.], [2.]]), np.array([[0.], [1.], [2.]]))
    >>> res = gwlite.fused_gromov_wasserstein(M, C, C, alpha=0.5)
    >>> res.lower, res.upper, res.certified
    (0.0, 0.0, True)
    """
    if not isinstance(method, str) or method not in FUSED_SOLVERS:
        raise GWInputError(f"unknown method {method!r}; choose one of {list(FUSED_SOLVERS)}")
    solver = FUSED_SOLVERS[method]
    options = check_options(method, solver, options, fused_method_options(method))
    for name in getattr(solver, "imports", ()):
        importlib.import_module(name)  # POT's first import is not part of the computation
    start = time.perf_counter()
    fp = make_fused_problem(M, C1, C2, p, q, alpha, loss_fun)
    result = solver(fp, **options)
    return dataclasses.replace(result, time_s=time.perf_counter() - start)


def feature_cost(Y1, Y2, metric: str = "sqeuclidean"):
    r"""The feature cost :math:`M_{ij} = d(y^1_i, y^2_j)` between node features.

    Parameters
    ----------
    Y1, Y2 : array ``(n, d)`` and ``(m, d)`` (or ``(n,)``, ``(m,)`` for scalar features)
    metric : str
        One of :data:`FEATURE_METRICS`, computed by ``scipy.spatial.distance.cdist``;
        ``"sqeuclidean"`` (default) is POT's ``ot.dist`` default.

    Returns
    -------
    numpy.ndarray ``(n, m)``
        Non-negative, finite: a valid ``M`` for :func:`fused_gromov_wasserstein`.

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> gwlite.feature_cost(np.array([0., 1.]), np.array([0., 3.])).tolist()
    [[0.0, 9.0], [1.0, 4.0]]
    """
    from scipy.spatial.distance import cdist

    if metric not in FEATURE_METRICS:
        raise GWInputError(f"unknown metric {metric!r}; choose one of {list(FEATURE_METRICS)}")
    X = [_features(Y, name) for Y, name in ((Y1, "Y1"), (Y2, "Y2"))]
    if X[0].shape[1] != X[1].shape[1]:
        raise GWInputError(
            f"Y1 and Y2 have {X[0].shape[1]} and {X[1].shape[1]} feature columns; they "
            "must describe the nodes with the same features"
        )
    M = cdist(X[0], X[1], metric=metric)
    if not np.all(np.isfinite(M)):
        raise GWInputError(f"the {metric} feature cost has non-finite entries (overflow)")
    return np.maximum(M, 0.0)  # cosine may round to -1e-16


def _features(Y, name: str) -> np.ndarray:
    Y = np.asarray(_xp.to_numpy(_xp.detach(as_input_array(Y, name))), dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] == 0:
        raise GWInputError(f"{name} must have shape (nodes, features), got {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise GWInputError(f"{name} has non-finite entries (NaN or Inf)")
    return Y
