r"""Fused GW for every pair of a dataset of attributed spaces (``pairwise(..., alpha=)``).

Each pair gets what :func:`gwlite.fused_gromov_wasserstein` gives it, an interval
``lower <= FGW <= upper``. With ``knn``, the cheap layer is the fused mean-row bound (a
linear program, :mod:`gwlite.fused_bounds`) with its LP plan priced as the upper bound,
and ``method`` runs only on the pairs that can still enter a neighbour list
(:mod:`gwlite.pairs.knn`, the same rounds as for GW). Pairs run one after the other in
this process (``engine=1``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from gwlite.errors import GWInputError
from gwlite.graphs import AttributedGraph
from gwlite.pairs.knn import combine, needed, select_round
from gwlite.pairs.result import PairwiseResult

__all__ = ["fused_pairwise"]


def _as_attributed(spaces, kind, weight, node_weights, node_attr) -> list[AttributedGraph]:
    import networkx as nx

    from gwlite.graphs import from_networkx

    out = []
    for k, item in enumerate(spaces):
        if isinstance(item, nx.Graph):
            if node_attr is None:
                raise GWInputError("graphs need node_attr= (the node attribute with features)")
            item = from_networkx(item, kind, weight, node_weights, node_attr=node_attr)
        if isinstance(item, AttributedGraph):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 3:
            out.append(AttributedGraph(*item))
        else:
            raise GWInputError(
                f"spaces[{k}] is a {type(item).__name__}; with alpha, pass (C, p, Y) tuples, "
                "AttributedGraph objects or networkx graphs with node_attr="
            )
    return out


@dataclass(frozen=True)
class _Interval:
    lower: float
    upper: float
    certified: bool


def _cheap(fp) -> _Interval:
    """The fused mean-row bound and the fused cost of its LP plan (a coupling)."""
    from gwlite.fused_bounds import fused_lower

    bound = fused_lower(fp, "mean_row")
    upper = fp.cost(bound.plan)
    lower = min(bound.value, upper)
    return _Interval(lower, upper, fp.is_certified(lower, upper))


def _validated(item: AttributedGraph, k: int, alpha, loss_fun) -> AttributedGraph:
    """One space checked as fused GW checks its inputs (float64, on the host); errors
    name the space."""
    from gwlite.fused import feature_cost
    from gwlite.fused_bounds import make_fused_problem

    try:
        M = feature_cost(item.Y, item.Y)
        fp = make_fused_problem(M, item.C, item.C, item.p, item.p, alpha, loss_fun)
    except GWInputError as err:
        raise GWInputError(f"spaces[{k}]: {err}") from None
    Y = np.asarray(item.Y, dtype=np.float64)
    return AttributedGraph(fp.gw.C1, fp.gw.p, Y[:, None] if Y.ndim == 1 else Y)


def fused_pairwise(
    spaces,
    *,
    alpha: float,
    method: str = "auto",
    loss_fun: str = "square_loss",
    metric: str = "sqeuclidean",
    knn: int | None = None,
    progress: bool = True,
    kind: str = "adjacency",
    weight: str | None = None,
    node_weights: str = "uniform",
    node_attr: str | None = None,
    **options,
) -> PairwiseResult:
    """Fused GW intervals for every pair (see :func:`gwlite.pairwise`)."""
    from tqdm.auto import tqdm

    from gwlite.fused import feature_cost, fused_method_options
    from gwlite.fused_bounds import FusedProblem
    from gwlite.problem import GWProblem
    from gwlite.solvers._common import check_options
    from gwlite.solvers.fused import FUSED_SOLVERS

    start = time.perf_counter()
    items = _as_attributed(spaces, kind, weight, node_weights, node_attr)
    n = len(items)
    if knn is not None and (
        not isinstance(knn, (int, np.integer)) or isinstance(knn, bool) or not 1 <= knn <= n - 1
    ):
        raise GWInputError(f"knn must be an integer in [1, {n - 1}] (N - 1), got {knn!r}")

    spaces64 = [_validated(item, k, alpha, loss_fun) for k, item in enumerate(items)]
    solver = FUSED_SOLVERS.get(method)
    if solver is None:
        raise GWInputError(f"unknown method {method!r}; choose one of {list(FUSED_SOLVERS)}")
    options = check_options(method, solver, options, fused_method_options(method))

    def solve(i, j, how, **kw):
        # every space was validated once: a pair is built, not re-checked
        a, b = spaces64[i], spaces64[j]
        M = feature_cost(a.Y, b.Y, metric)
        uniform = bool(np.all(a.p == a.p[0]) and np.all(b.p == b.p[0]))
        gw = GWProblem(a.C, b.C, a.p, b.p, loss_fun, uniform)
        fp = FusedProblem(gw, M, alpha, a.C)
        return _cheap(fp) if how == "cheap" else solver(fp, **kw)

    shape = (n, n)
    main = {k: np.zeros(shape) for k in ("lower", "upper")}
    main["certified"] = np.zeros(shape, dtype=bool)

    def run(pairs, layer, how, desc, **kw):
        for i, j in tqdm(list(zip(*np.nonzero(pairs))), desc=desc, disable=not progress):
            res = solve(i, j, how, **kw)
            for key in ("lower", "upper"):
                layer[key][i, j] = layer[key][j, i] = getattr(res, key)
            layer["certified"][i, j] = layer["certified"][j, i] = res.certified

    upper_tri = np.triu(np.ones(shape, dtype=bool), 1)
    diagnostics: dict = {"alpha": alpha, "metric": metric, "engine": "this process"}
    if knn is None:
        run(upper_tri, main, method, "fused pairs", **options)
        ran = upper_tri | upper_tri.T
        final = main
    else:
        cheap = {k: np.zeros(shape) for k in ("lower", "upper")}
        cheap["certified"] = np.zeros(shape, dtype=bool)
        t0 = time.perf_counter()
        # the fused mean-row LP: a bound and, priced, its plan as the upper bound
        run(upper_tri, cheap, "cheap", "knn: cheap bounds")
        diagnostics["cheap_time_s"] = time.perf_counter() - t0
        ran = np.zeros(shape, dtype=bool)
        rounds, threshold = 0, np.zeros(shape)
        while True:
            final = combine(cheap, main, ran | ran.T, threshold)
            need = needed(final["lower"], final["upper"], final["certified"], knn) & ~ran
            if not need.any():
                break
            rounds += 1
            pick = select_round(need, final["upper"], knn * 2 ** (rounds - 1))
            run(pick, main, method, f"knn: {method}, round {rounds}", **options)
            ran |= pick
        ran = ran | ran.T
        diagnostics.update(knn=knn, rounds=rounds)
    np.fill_diagonal(final["certified"], True)
    for key in ("lower", "upper"):
        np.fill_diagonal(final[key], 0.0)
    return PairwiseResult(
        lower=final["lower"],
        upper=final["upper"],
        certified=final["certified"],
        evaluated=ran,
        method=f"fused:{method}",
        loss_fun=loss_fun,
        time_s=time.perf_counter() - start,
        diagnostics=diagnostics,
    )
