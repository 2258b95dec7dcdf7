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

    from gwlite.fused import feature_cost, fused_gromov_wasserstein
    from gwlite.fused_bounds import make_fused_problem

    start = time.perf_counter()
    items = _as_attributed(spaces, kind, weight, node_weights, node_attr)
    n = len(items)
    if knn is not None and (
        not isinstance(knn, (int, np.integer)) or isinstance(knn, bool) or not 1 <= knn <= n - 1
    ):
        raise GWInputError(f"knn must be an integer in [1, {n - 1}] (N - 1), got {knn!r}")

    def solve(i, j, how, **kw):
        a, b = items[i], items[j]
        M = feature_cost(a.Y, b.Y, metric)
        if how == "cheap":
            return _cheap(make_fused_problem(M, a.C, b.C, a.p, b.p, alpha, loss_fun))
        return fused_gromov_wasserstein(
            M, a.C, b.C, a.p, b.p, alpha=alpha, method=how, loss_fun=loss_fun, **kw
        )

    solve(0, min(1, n - 1), method, **options)  # bad options refused before any work
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
