r""":func:`gwlite.pairwise`: GW intervals for every pair of a dataset of spaces.

This module is imported by ``import gwlite`` and stays light: the precomputation,
the engines (processes, Dask) and the store (Zarr) are imported when a call needs them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gwlite.errors import GWInputError
from gwlite.pairs.result import PairwiseResult
from gwlite.problem import check_loss

__all__ = ["pairwise"]

# default tile edge (spaces) by kind of work: a task should take about a second
_CHUNK_BATCHED = 256
_CHUNK_TLB = 64
_CHUNK_PER_PAIR = 32
# below this many estimated seconds of work, starting processes costs more than it saves
_INLINE_SECONDS = 2.0


def pairwise(
    spaces,
    *,
    method: str = "sorted",
    loss_fun: str = "square_loss",
    engine=None,
    store=None,
    progress: bool = True,
    knn: int | None = None,
    kind: str = "adjacency",
    weight: str | None = None,
    node_weights: str = "uniform",
    chunk: int | None = None,
    repair: bool = False,
    alpha: float | None = None,
    node_attr: str | None = None,
    metric: str = "sqeuclidean",
    **options,
) -> PairwiseResult:
    r"""GW intervals for every pair of a dataset of spaces, on all cores or a cluster.

    For every pair :math:`(i, j)` of distinct spaces this computes what
    :func:`gwlite.gromov_wasserstein` computes for them, ``lower[i, j] <= GW <=
    upper[i, j]``, and fills symmetric matrices (GW is symmetric; each pair is computed
    once, as ``gromov_wasserstein(space_i, space_j)`` with ``i < j``). With the default
    ``method="sorted"`` whole batches of pairs are computed in one vectorised call (the
    closed form, Memoli's FLB/SLB/TLB and the sorted upper bound), padding unequal sizes
    with zero-weight nodes, which changes no bound (see :mod:`gwlite.pairs.kernels`);
    other methods run one call per pair, in batched tasks.

    Parameters
    ----------
    spaces : sequence
        Structure matrices ``C`` (uniform weights), ``(C, p)`` pairs, or networkx graphs
        (converted by :func:`gwlite.from_networkx` with ``kind``, ``weight`` and
        ``node_weights``), or a :class:`gwlite.datasets.Dataset`. NumPy, torch or CuPy,
        one library for all; the dataset is computed in the widest dtype among them.
        Or :class:`gwlite.PointCloud` objects, all of them (mixing clouds and matrices
        is refused): no ``n x n`` matrix is built for the sorted bounds, other methods
        run as :func:`gwlite.gromov_wasserstein` on each pair of clouds (see
        :mod:`gwlite.pairs.clouds`).
    method : str
        Any method of :func:`gwlite.gromov_wasserstein` (``gwlite.METHODS``);
        ``"multiscale"`` for point clouds.
    loss_fun : {"square_loss", "abs_loss"}
    engine : None, int or dask.distributed.Client
        ``None``: all local cores (worker processes; work too small to pay for starting
        them, and GPU inputs, run in this process). An int: that many local processes
        (``1``: this process). A ``Client``: batched tasks on that Dask cluster, the data
        scattered to its workers once; the numbers are identical to a local run.
    store : path, optional
        A Zarr store (needs ``gwlite[pairwise]``): results are written tile by tile
        (atomically per chunk), and rerunning with the same store computes only what is
        missing, with identical results. A store made with other inputs or options is
        refused (its metadata holds their hash).
    progress : bool
        Show a progress bar over pairs (tqdm).
    knn : int, optional
        Neighbour mode: compute the cheap sorted bounds for all pairs (closed form, FLB,
        SLB and the sorted upper bound), then run ``method`` only on pairs that can still
        enter some space's ``knn`` nearest neighbours (see :mod:`gwlite.pairs.knn`);
        ``result.saved`` counts the calls saved.
    kind, weight, node_weights : str
        How graphs become spaces (see :func:`gwlite.from_networkx`).
    chunk : int, optional
        Edge of a tile of the pair matrix (one task, one chunk of the store); chosen
        from the method when omitted, taken from the store when it exists. It changes
        no number.
    repair : bool
        With ``store``: chunks that no longer decode are reset and their pairs
        recomputed (listed in ``diagnostics["store_repaired"]``). Without it such a store
        is refused with the chunks' indices.
    alpha : float in [0, 1], optional
        Fused GW (:func:`gwlite.fused_gromov_wasserstein`) instead of GW: ``spaces`` are
        then attributed, ``(C, p, Y)`` tuples, :class:`gwlite.graphs.AttributedGraph`
        objects or graphs with ``node_attr``; ``M`` is :func:`gwlite.feature_cost` of the
        features with ``metric``; ``method`` is a fused method (``gwlite.FUSED_METHODS``).
        Runs in this process only (no ``engine``, ``store`` or ``chunk`` yet); see
        :mod:`gwlite.pairs.fused`.
    node_attr : str, optional
        The node attribute holding the features of graph inputs (with ``alpha``).
    metric : str
        The feature metric of :func:`gwlite.feature_cost` (with ``alpha``).
    **options
        Options of ``method`` (e.g. ``lower="tlb"``, ``epsilon=...``); unknown names are
        refused before any work starts.

    Returns
    -------
    PairwiseResult
        ``lower``, ``upper``, ``certified`` (N x N), ``knn(k)``, ``time_s``...

    Raises
    ------
    GWInputError
        Invalid options, or a bad space (named by its index), before any work starts; a
        store made with other inputs or options, held by another writer (one writer at a
        time, enforced by a lock file ``STORE.lock``), with damaged metadata, or with
        chunks that do not decode (without ``repair``).

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> points = [np.array([0.0, 1, 3]), np.array([3.0, 1, 0]), np.array([0.0, 1, 4])]
    >>> lines = [np.abs(np.subtract.outer(x, x)) for x in points]
    >>> res = gwlite.pairwise(lines, engine=1, progress=False)
    >>> float(res.upper[0, 1]), bool(res.certified[0, 1])  # the same space, relabelled
    (0.0, True)
    >>> bool(res.lower[0, 2] <= res.upper[0, 2]), res.upper.shape
    (True, (3, 3))
    """
    call = _Call(
        method=method,
        loss_fun=loss_fun,
        engine=engine,
        store=store,
        chunk=chunk,
        progress=progress,
        knn=knn,
        repair=repair,
        graphs={"kind": kind, "weight": weight, "node_weights": node_weights},
        options=options,
    )
    if alpha is not None:
        return _fused(spaces, alpha, node_attr, metric, call)
    if node_attr is not None:
        raise GWInputError("node_attr= reads features for fused GW: pass alpha= too")
    return _gw(spaces, call)


@dataclass(frozen=True)
class _Call:
    """The options both branches of :func:`pairwise` (GW and fused GW) take."""

    method: str
    loss_fun: str
    engine: Any
    store: Any
    chunk: int | None
    progress: bool
    knn: int | None
    repair: bool
    graphs: dict  # how graphs become spaces: kind, weight, node_weights
    options: dict  # the method's own options


def _gw(spaces, call: _Call) -> PairwiseResult:
    start = time.perf_counter()
    from gwlite.pairs.spaces import as_spaces
    from gwlite.pairs.tasks import make_layer

    check_loss(call.loss_fun)
    method, knn, chunk, repair = call.method, call.knn, call.chunk, call.repair
    layer = make_layer(method, call.loss_fun, call.options)
    space_set = as_spaces(spaces, call.loss_fun, **call.graphs)
    n = len(space_set)
    sizes = space_set.sizes
    if method == "multiscale" and not space_set.clouds:
        raise GWInputError("method='multiscale' takes point clouds (gwlite.PointCloud spaces)")
    if method == "exact" and len(set(sizes.tolist())) > 1:
        k = int(np.flatnonzero(sizes != sizes[0])[0])
        raise GWInputError(
            f"method='exact' needs spaces of one size (spaces[0] has {sizes[0]} nodes, "
            f"spaces[{k}] has {sizes[k]}); use method='sorted' with lower='tlb', or 'cg'"
        )
    if knn is not None and (
        not isinstance(knn, (int, np.integer)) or isinstance(knn, bool) or not 1 <= knn <= n - 1
    ):
        raise GWInputError(f"knn must be an integer in [1, {n - 1}] (N - 1), got {knn!r}")
    if chunk is not None and (not isinstance(chunk, (int, np.integer)) or chunk < 1):
        raise GWInputError(f"chunk must be a positive integer, got {chunk!r}")
    if not isinstance(repair, bool):
        raise GWInputError(f"repair must be True or False, got {repair!r}")
    run = _Run(space_set, layer, knn, call.engine, (call.store, repair), call.progress, chunk)
    try:
        return run.execute(start)
    finally:
        run.close()


class _Run:
    """One call of :func:`pairwise`: the work, the engine, the store and the state."""

    def __init__(self, space_set, layer, knn, engine, store, progress, chunk):
        from gwlite import _xp
        from gwlite.pairs.engines import resolve_engine
        from gwlite.pairs.tasks import Work, cheap_layer

        self.space_set = space_set
        self.n = len(space_set)
        self.layer = layer
        self.k = knn
        self.progress = progress
        self.layers = {"main": layer}
        if knn is not None:
            self.layers["cheap"] = cheap_layer(layer.loss_fun)
        first = space_set.spaces[0][0]
        on_device = not space_set.clouds and (
            _xp.backend_name(first) == "cupy"
            or (_xp.backend_name(first) == "torch" and first.device.type != "cpu")
        )
        self.work = Work(space_set.spaces, self.layers, self._buckets(first))
        self.engine = resolve_engine(engine, space_set.backend, on_device)
        if engine is None and getattr(self.engine, "workers", 1) > 1:
            from gwlite.pairs.engines import InlineEngine

            if self._estimated_seconds() < _INLINE_SECONDS:
                self.engine = InlineEngine()
        self.chunk = int(chunk) if chunk is not None else self._default_chunk()
        self.store = None
        try:
            self.store = self._open_store(*store)
            if self.store is not None:
                self.chunk = self.store.chunk
            self.state = {name: self._load(name) for name in self.layers}
        except BaseException:
            self.close()
            raise
        self.stats = {"tasks": 0, "computed": 0, "from_store": 0}

    # -- setup -------------------------------------------------------------------------
    def _buckets(self, like):
        parts = set()
        for layer in self.layers.values():
            if layer.batched:
                parts |= layer.parts()
        if not parts:
            return None
        if self.space_set.clouds:
            from gwlite.pairs.clouds import prepare_clouds

            clouds = [c for c, _ in self.space_set.spaces]
            return prepare_clouds(clouds, self.layer.loss_fun)
        from gwlite.pairs.prepare import build_buckets, prepare_spaces

        prepared = prepare_spaces(self.space_set.host(), parts, self.layer.loss_fun)
        return build_buckets(prepared, parts, self.layer.loss_fun, like)

    def _per_pair_seconds(self, layer) -> float:
        """Rough cost of one pair (2026 laptop core), only to decide whether starting
        worker processes pays off."""
        from gwlite.pairs.prepare import width_of

        n = float(np.mean(self.space_set.sizes))
        if layer.batched and self.space_set.clouds:
            return 1e-4 + 2e-6 * n  # 1-D transports and an O(n d^2) exact price
        if layer.batched:
            T = 2 * width_of(int(np.ceil(n)))
            seconds = 1e-6 + 3e-8 * T * T * (2 if "slb" in layer.lowers else 1)
            return seconds + (5e-5 if "tlb" in layer.lowers else 0.0)
        return 1e-3 * max(1.0, n / 10) ** 2

    def _estimated_seconds(self) -> float:
        pairs = self.n * (self.n - 1) / 2
        return sum(pairs * self._per_pair_seconds(layer) for layer in self.layers.values())

    def _default_chunk(self) -> int:
        layer = self.layer
        if layer.batched:
            edge = _CHUNK_TLB if "tlb" in layer.lowers else _CHUNK_BATCHED
        else:
            edge = _CHUNK_PER_PAIR
        # at least ~8 tiles per axis when the dataset allows, for load balance
        return int(max(8, min(edge, math.ceil(self.n / 8))))

    def _open_store(self, store, repair: bool):
        if store is None:
            return None
        from gwlite.pairs.spaces import digest
        from gwlite.pairs.store import FORMAT, PairStore

        config = {"format": FORMAT, **self.layer.describe()}
        meta = {
            "format": FORMAT,
            "hash": digest(self.space_set, config),
            "n_spaces": self.n,
            "chunk": self.chunk,
            "method": self.layer.method,
            "loss_fun": self.layer.loss_fun,
            "options": self.layer.options,
            "names": list(self.space_set.names) if self.space_set.names else None,
        }
        return PairStore(store, meta, list(self.layers), repair=repair)

    def _load(self, name: str) -> dict:
        if self.store is not None:
            state = self.store.load(name)
            state["done"] = np.triu(state["done"], 1)
            return state
        n = self.n
        return {
            "lower": np.full((n, n), np.nan),
            "upper": np.full((n, n), np.nan),
            "certified": np.zeros((n, n), dtype=bool),
            "done": np.zeros((n, n), dtype=bool),
        }

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        self.engine.close()

    # -- running -----------------------------------------------------------------------
    def _tasks(self, layer_name: str, mask: np.ndarray) -> list:
        from gwlite.pairs.tasks import Task

        c = self.chunk
        ii, jj = np.nonzero(mask)
        if not len(ii):
            return []
        tiles = (ii // c) * (self.n // c + 1) + (jj // c)
        order = np.argsort(tiles, kind="stable")
        ii, jj, tiles = ii[order], jj[order], tiles[order]
        bounds = np.flatnonzero(np.r_[True, tiles[1:] != tiles[:-1], True])
        return [
            Task(layer_name, (int(ii[a] // c), int(jj[a] // c)), ii[a:b], jj[a:b])
            for a, b in zip(bounds[:-1], bounds[1:])
        ]

    def _compute(self, layer_name: str, mask: np.ndarray, desc: str) -> None:
        """Compute the pairs of ``mask`` not yet done on a layer (store first)."""
        from tqdm.auto import tqdm

        state = self.state[layer_name]
        self.stats["from_store"] += int(np.count_nonzero(mask & state["done"]))
        todo = mask & ~state["done"]
        tasks = self._tasks(layer_name, todo)
        total = int(sum(t.size for t in tasks))
        if not tasks:
            return
        bar = tqdm(total=total, unit="pair", desc=desc, disable=not self.progress, smoothing=0.1)

        def on_result(res) -> None:
            t = res.task
            state["lower"][t.ii, t.jj] = res.lower
            state["upper"][t.ii, t.jj] = res.upper
            state["certified"][t.ii, t.jj] = res.certified
            state["done"][t.ii, t.jj] = True
            if self.store is not None:
                self.store.write_tile(layer_name, t.tile, state)
            self.stats["tasks"] += 1
            self.stats["computed"] += t.size
            bar.update(t.size)

        try:
            self.engine.run(self.work, tasks, on_result)
        finally:
            bar.close()

    def execute(self, start: float) -> PairwiseResult:
        upper_tri = np.triu(np.ones((self.n, self.n), dtype=bool), 1)
        diag = {}
        if self.k is None:
            self._compute("main", upper_tri, f"pairwise {self.layer.method}")
            final = self.state["main"]
            ran = upper_tri
        else:
            final, ran, diag = self._knn(upper_tri)
        return self._result(final, ran, start, diag)

    def _knn(self, upper_tri):
        from gwlite.pairs.knn import combine, needed, select_round
        from gwlite.solvers import certify_threshold

        t0 = time.perf_counter()
        self._compute("cheap", upper_tri, "knn: cheap bounds")
        cheap_s = time.perf_counter() - t0
        r = 2 if self.layer.loss_fun == "square_loss" else 1
        top = self.work.buckets.maxabs
        threshold = certify_threshold(np.maximum.outer(top, top), r)
        cheap, main = self.state["cheap"], self.state["main"]
        ran = np.zeros((self.n, self.n), dtype=bool)
        first_need = None
        rounds = 0
        while True:
            state = _symmetric(combine(cheap, main, ran, threshold), upper_tri)
            need = needed(state["lower"], state["upper"], state["certified"], self.k) & ~ran
            if first_need is None:
                first_need = int(np.count_nonzero(need))
            if not need.any():
                break
            rounds += 1
            pick = select_round(need, state["upper"], self.k * 2 ** (rounds - 1))
            self._compute("main", pick, f"knn: {self.layer.method}, round {rounds}")
            ran |= pick
        diag = {
            "knn": self.k,
            "cheap": "sorted with lower = max(" + ", ".join(self._cheap_lowers()) + ")",
            "rounds": rounds,
            "needed_after_cheap": first_need,
            "cheap_time_s": cheap_s,
        }
        return state, ran, diag

    def _cheap_lowers(self) -> tuple:
        from gwlite.pairs.clouds import cloud_lowers
        from gwlite.pairs.tasks import CHEAP_LOWERS

        return cloud_lowers(CHEAP_LOWERS) if self.space_set.clouds else CHEAP_LOWERS

    def _result(self, final, ran, start, diag) -> PairwiseResult:
        n = self.n
        tri = np.triu(np.ones((n, n), dtype=bool), 1)
        lower = _mirror(np.where(tri, final["lower"], 0.0))
        upper = _mirror(np.where(tri, final["upper"], 0.0))
        certified = _mirror(tri & final["certified"]) | np.eye(n, dtype=bool)
        evaluated = _mirror(tri & ran)
        fallback = 0
        if self.work.buckets is not None:
            fallback = int(np.count_nonzero(~self.work.buckets.stable))
        pairs = n * (n - 1) // 2
        diagnostics = {
            "engine": self.engine.describe(),
            "chunk": self.chunk,
            "store": None if self.store is None else self.store.path,
            "tasks": self.stats["tasks"],
            "pairs_computed": self.stats["computed"],
            "pairs_from_store": self.stats["from_store"],
            "store_repaired": [] if self.store is None else list(self.store.repaired),
            "spaces_pair_by_pair": fallback,
            **diag,
        }
        if self.k is not None:
            done = int(np.count_nonzero(tri & ran))
            diagnostics["saved"] = pairs - done
            diagnostics["saved_share"] = (pairs - done) / pairs if pairs else 0.0
        return PairwiseResult(
            lower=lower,
            upper=upper,
            certified=certified,
            evaluated=evaluated,
            method=self.layer.method,
            loss_fun=self.layer.loss_fun,
            time_s=time.perf_counter() - start,
            names=self.space_set.names,
            diagnostics=diagnostics,
        )


def _fused(spaces, alpha, node_attr, metric, call: _Call) -> PairwiseResult:
    from gwlite.pairs.fused import fused_pairwise
    from gwlite.pointcloud._cloud import is_point_cloud

    if call.store is not None or call.chunk is not None or call.engine not in (None, 1):
        raise GWInputError(
            "pairwise with alpha (fused GW) runs in this process: engine, store and chunk "
            "are not supported yet (leave them out)"
        )
    if isinstance(spaces, (list, tuple)) and any(is_point_cloud(x) for x in spaces):
        raise GWInputError("pairwise with alpha (fused GW) takes attributed spaces, not clouds")
    method = "auto" if call.method == "sorted" else call.method  # GW's default has no fused form
    return fused_pairwise(
        spaces,
        alpha=alpha,
        method=method,
        loss_fun=call.loss_fun,
        metric=metric,
        knn=call.knn,
        progress=call.progress,
        node_attr=node_attr,
        **call.graphs,
        **call.options,
    )


def _symmetric(state: dict, tri: np.ndarray) -> dict:
    """Full symmetric matrices from the strict upper triangles of a state."""
    out = {}
    for name, a in state.items():
        out[name] = _mirror(tri & a) if a.dtype == bool else _mirror(np.where(tri, a, 0.0))
    return out


def _mirror(a: np.ndarray) -> np.ndarray:
    """A symmetric matrix from its strict upper triangle (the diagonal kept as given)."""
    if a.dtype == bool:
        return a | a.T
    return a + a.T
