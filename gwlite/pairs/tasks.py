"""What one task computes: a set of pairs, on one layer, from the shared work.

A *layer* is one way of computing a pair's interval: the requested ``method`` with its
options (``"main"``), or the cheap sorted bounds that ``knn`` mode computes first
(``"cheap"``). The :class:`Work` object (inputs, layers, per-space precomputation) is
sent to each worker once; a :class:`Task` only names a tile and, in ``knn`` mode, the
pairs of that tile it needs. :func:`run_task` is the function every engine runs.

Each pair's numbers depend on that pair only (never on which pairs share its task or
batch), so every engine, chunking and resumed run gives identical arrays.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gwlite import _xp
from gwlite.errors import GWInputError

__all__ = ["CHEAP_LOWERS", "Layer", "Task", "TaskResult", "Work", "run_task", "tile_pairs"]

#: lower bounds of the cheap layer of ``knn`` mode (their maximum is reported)
CHEAP_LOWERS = ("mean_row", "flb", "slb")
_BATCHED_LOWERS = ("mean_row", "flb", "slb", "tlb")
# per-pair options that make no sense for a matrix of pairs
_REFUSED = {
    "return_coupling": "pairwise returns no couplings",
    "diagnostics": "pairwise keeps no per-pair diagnostics",
    "G0": "an initial coupling belongs to one pair, not to a dataset",
}


@dataclass(frozen=True)
class Layer:
    """One way of computing a pair's interval."""

    method: str
    loss_fun: str
    options: dict
    lowers: tuple = ()  # batched sorted layers: the lower bounds whose maximum is kept

    @property
    def batched(self) -> bool:
        return bool(self.lowers)

    def parts(self) -> set:
        return {"value", "upper"} | {k for k in self.lowers if k != "mean_row"}

    def describe(self) -> dict:
        return {"method": self.method, "loss_fun": self.loss_fun, "options": self.options}


def make_layer(method: str, loss_fun: str, options: dict) -> Layer:
    """Check ``method`` and its options (before any work) and build its layer."""
    from gwlite.bounds import LOWER_BOUNDS
    from gwlite.solvers import SOLVERS

    if method not in SOLVERS and method != "multiscale":
        raise GWInputError(
            f"unknown method {method!r}; choose one of {list(SOLVERS) + ['multiscale']}"
        )
    for name, why in _REFUSED.items():
        if name in options:
            raise GWInputError(f"option {name!r} is not accepted by pairwise: {why}")
    accepted = [n for n in _parameters(method) if n not in ("problem", "c1", "c2", "loss_fun")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise GWInputError(
            f"unknown option(s) {unknown} for method={method!r}; it accepts "
            f"{[a for a in accepted if a not in _REFUSED]}"
        )
    if "lower" in options and options["lower"] not in LOWER_BOUNDS:
        raise GWInputError(
            f"unknown lower bound {options['lower']!r}; choose one of {list(LOWER_BOUNDS)}"
        )
    lowers = ()
    if method == "sorted" and set(options) <= {"lower"}:
        lower = options.get("lower", "mean_row")
        if lower in _BATCHED_LOWERS:
            lowers = (lower,)
    return Layer(method, loss_fun, dict(options), lowers)


def _parameters(method: str):
    """The parameters of ``method``'s solver (``multiscale``: the point-cloud solver)."""
    from gwlite.solvers import SOLVERS

    if method == "multiscale":
        from gwlite.solvers import multiscale

        return inspect.signature(multiscale.solve).parameters
    return inspect.signature(SOLVERS[method]).parameters


def cheap_layer(loss_fun: str) -> Layer:
    """The sorted closed form and upper bound with the best of the cheap lower bounds."""
    return Layer(
        "sorted", loss_fun, {"lower": "max(" + ", ".join(CHEAP_LOWERS) + ")"}, CHEAP_LOWERS
    )


@dataclass
class Work:
    """Everything a worker needs, sent once: validated spaces, layers, precomputation."""

    spaces: list  # [(C, p)] validated arrays, one dtype and namespace
    layers: dict  # name -> Layer
    buckets: Any = None  # gwlite.pairs.prepare.Buckets, for batched layers
    stable: np.ndarray = field(default=None)


@dataclass(frozen=True)
class Task:
    """Pairs ``(ii[k], jj[k])`` of tile ``(I, J)`` on ``layer``."""

    layer: str
    tile: tuple
    ii: np.ndarray
    jj: np.ndarray

    @property
    def size(self) -> int:
        return len(self.ii)


@dataclass(frozen=True)
class TaskResult:
    task: Task
    lower: np.ndarray
    upper: np.ndarray
    certified: np.ndarray


def tile_pairs(row_block: int, col_block: int, chunk: int, n: int):
    """All pairs ``i < j`` of a tile of the pair matrix (used by tests and benchmarks)."""
    rows = np.arange(row_block * chunk, min((row_block + 1) * chunk, n))
    cols = np.arange(col_block * chunk, min((col_block + 1) * chunk, n))
    ii, jj = np.meshgrid(rows, cols, indexing="ij")
    keep = ii < jj
    return ii[keep], jj[keep]


def _threshold(work: Work, ii, jj, r: int) -> np.ndarray:
    """The largest certified gap of each pair: relative to its loss scale, no floor
    (the same rule as :func:`gwlite.gromov_wasserstein`'s ``certified``)."""
    from gwlite.solvers import certify_threshold

    return certify_threshold(np.maximum(work.buckets.maxabs[ii], work.buckets.maxabs[jj]), r)


def _certified(lower, upper, threshold):
    return upper - lower <= threshold


def _per_pair(work: Work, layer: Layer, ii, jj):
    """One :func:`gwlite.gromov_wasserstein` call per pair (any method)."""
    from gwlite.api import gromov_wasserstein
    from gwlite.bounds import lower_bound

    accepted = _parameters(layer.method)
    options = dict(layer.options)
    quiet = {k: False for k in ("return_coupling", "diagnostics") if k in accepted}
    lowers = layer.lowers or (None,)
    if layer.lowers:
        options["lower"] = lowers[0]
    lo, up, cert = (np.empty(len(ii)), np.empty(len(ii)), np.zeros(len(ii), dtype=bool))
    for k, (i, j) in enumerate(zip(ii.tolist(), jj.tolist())):
        (C1, p), (C2, q) = work.spaces[i], work.spaces[j]
        try:
            res = gromov_wasserstein(
                C1, C2, p, q, method=layer.method, loss_fun=layer.loss_fun, **options, **quiet
            )
        except GWInputError as err:
            raise GWInputError(f"pair ({i}, {j}): {err}") from err
        lo[k], up[k], cert[k] = _xp.as_float(res.lower), _xp.as_float(res.upper), res.certified
        if len(lowers) > 1:  # the cheap layer: the best of several proven lower bounds
            for kind in lowers[1:]:
                bound = _xp.as_float(lower_bound(C1, C2, p, q, loss_fun=layer.loss_fun, lower=kind))
                lo[k] = max(lo[k], min(bound, up[k]))
            cert[k] = cert[k] or bool(
                _certified(
                    lo[k], up[k], _threshold(work, np.array([i]), np.array([j]), _r(layer))[0]
                )
            )
    return lo, up, cert


def _r(layer: Layer) -> int:
    return 2 if layer.loss_fun == "square_loss" else 1


def _batched(work: Work, layer: Layer, ii, jj):
    from gwlite.bounds import certified_lp_lower
    from gwlite.pairs.kernels import sorted_pairs

    def lp_lower(M, p, q):
        if len(p) == len(q) and np.all(p == p[0]) and np.all(q == q[0]):
            # uniform weights, equal sizes: the LP's vertices are permutations / n
            # (Birkhoff-von Neumann), so the optimal assignment is the LP optimum
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(M)
            return float(M[rows, cols].sum()) / len(p)
        return certified_lp_lower(M, p, q)[0]

    res = sorted_pairs(work.buckets, ii, jj, layer.parts(), lp_lower)
    upper = res["upper"]
    lower = np.max(np.stack([res["value" if k == "mean_row" else k] for k in layer.lowers]), axis=0)
    lower = np.minimum(lower, upper)
    return lower, upper, _certified(lower, upper, _threshold(work, ii, jj, _r(layer)))


def _batch_options(layer: Layer):
    """The layer's options for :func:`gwlite.gromov_wasserstein_batch`, or None when the
    layer runs pair by pair (another method, an option with no batched form)."""
    if layer.method not in ("proximal", "auto"):
        return None
    from gwlite.batch import AUTO_BATCH_OPTIONS
    from gwlite.solvers.batched import BATCH_OPTION_CHECKS

    accepted = AUTO_BATCH_OPTIONS if layer.method == "auto" else BATCH_OPTION_CHECKS
    if set(layer.options) - set(accepted) or isinstance(layer.options.get("polish"), bool):
        return None
    return dict(layer.options)


def _through_batch(work: Work, layer: Layer, ii, jj, options: dict):
    """The pairs as one :func:`gwlite.gromov_wasserstein_batch` call (one stack). A pair's
    numbers depend on that pair only: padding and every per-problem choice follow from
    its own sizes. ``time_limit`` stays per pair: the call gets it times the pairs."""
    from gwlite.batch import _checked_options, solve_problems
    from gwlite.problem import GWProblem

    if options.get("time_limit") is not None:
        options = dict(options, time_limit=options["time_limit"] * len(ii))
    options = _checked_options(layer.method, options)
    # the spaces were validated once (gwlite.pairs.spaces: one dtype and namespace), so a
    # pair's problem is built without checking its matrices again
    used = set(ii.tolist()) | set(jj.tolist())
    uniform = {k: _uniform(work.spaces[k][1]) for k in used}
    top = {k: _largest_entry(work, k) for k in used}
    problems = []
    for i, j in zip(ii.tolist(), jj.tolist()):
        (C1, p), (C2, q) = work.spaces[i], work.spaces[j]
        problem = GWProblem(C1, C2, p, q, layer.loss_fun, uniform[i] and uniform[j])
        # the loss scale (GWProblem.entry_scale) from the spaces, not once per pair
        object.__setattr__(problem, "top", max(top[i], top[j]))
        problems.append(problem)
    results = solve_problems(problems, layer.method, options)
    lower = np.array([_xp.as_float(r.lower) for r in results])
    upper = np.array([_xp.as_float(r.upper) for r in results])
    return lower, upper, np.array([r.certified for r in results], dtype=bool)


def _largest_entry(work: Work, k: int) -> float:
    """Space ``k``'s largest absolute entry (prepared once per space when the sorted
    layer's buckets exist)."""
    if work.buckets is not None:
        return float(work.buckets.maxabs[k])
    from gwlite.problem import _largest_abs

    return _largest_abs(work.spaces[k][0])


def _cloud_layer(work: Work, layer: Layer, ii, jj):
    """A layer on point clouds: the batched sorted layer from the per-space features
    (:mod:`gwlite.pairs.clouds`), any other one pair by pair."""
    from gwlite.pairs.clouds import cloud_lowers, cloud_pairs

    lowers = cloud_lowers(layer.lowers) if layer.batched else None
    if lowers is None:
        options = None if layer.batched else _batch_options(layer)
        if options is not None and len(ii):
            dense = _dense_clouds(work, np.union1d(ii, jj))
            if dense is not None:  # small clouds: the batch, as pairwise on their matrices
                return _through_batch(dense, layer, ii, jj, options)
        return _per_pair(work, layer, ii, jj)
    clouds = [c for c, _ in work.spaces]
    lower, upper = cloud_pairs(clouds, work.buckets, lowers, ii, jj)
    return lower, upper, _certified(lower, upper, _threshold(work, ii, jj, _r(layer)))


def _dense_clouds(work: Work, needed) -> Work | None:
    """The clouds ``needed`` as distance matrices, when all have at most ``DENSE_MAX``
    points (where :func:`gwlite.gromov_wasserstein` turns clouds into matrices too)."""
    from gwlite.pointcloud import geometry
    from gwlite.pointcloud.dispatch import DENSE_MAX

    clouds = {int(i): work.spaces[int(i)][0] for i in needed}
    if max(c.n for c in clouds.values()) > DENSE_MAX:
        return None
    spaces = {i: (geometry.distances(c.X, c.X, c.metric), c.p) for i, c in clouds.items()}
    return Work(spaces, work.layers, work.buckets)


def _uniform(p) -> bool:
    """Equal weights (as :func:`gwlite.problem.make_problem` decides ``uniform``)."""
    return bool(_xp.array_namespace(p).all(p == p[:1]))


def compute_pairs(work: Work, layer_name: str, ii: np.ndarray, jj: np.ndarray):
    """``(lower, upper, certified)`` of the pairs ``(ii[k], jj[k])`` on a layer."""
    from gwlite.pointcloud._cloud import is_point_cloud

    layer = work.layers[layer_name]
    if len(work.spaces) and is_point_cloud(work.spaces[0][0]):
        return _cloud_layer(work, layer, ii, jj)
    if not layer.batched:
        options = _batch_options(layer)
        if options is not None and len(ii):
            return _through_batch(work, layer, ii, jj, options)
        return _per_pair(work, layer, ii, jj)
    lower, upper = np.empty(len(ii)), np.empty(len(ii))
    cert = np.zeros(len(ii), dtype=bool)
    fast = work.buckets.stable[ii] & work.buckets.stable[jj]
    for mask, fn in ((fast, _batched), (~fast, _per_pair)):
        sel = np.nonzero(mask)[0]
        if len(sel):
            lower[sel], upper[sel], cert[sel] = fn(work, layer, ii[sel], jj[sel])
    return lower, upper, cert


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024


@contextmanager
def _heap_for_temporaries():
    """Let glibc keep the batches' temporaries on the heap while a task runs.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes
    glibc's mmap threshold at 128 KiB, and runs tasks in a thread (a separate malloc
    arena): every temporary array of a batch (up to 2 MiB) is then a fresh mmap, paid in
    page faults, about 3x the whole task's CPU time. For the task's duration the
    thresholds are raised; afterwards they are set back to the values the environment
    fixed and the freed memory is returned (``malloc_trim``). Nothing is changed in a
    main thread or where those variables are not set (the thresholds are then glibc's
    adaptive ones).
    """
    libc = None
    if (
        sys.platform.startswith("linux")
        and "MALLOC_TRIM_THRESHOLD_" in os.environ
        and threading.current_thread() is not threading.main_thread()
    ):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
            libc.mallopt(_M_TRIM_THRESHOLD, 128 << 20)
        except (OSError, AttributeError):  # not glibc
            libc = None
    try:
        yield
    finally:
        if libc is not None:
            env = os.environ
            libc.mallopt(_M_TRIM_THRESHOLD, int(env.get("MALLOC_TRIM_THRESHOLD_", 0)))
            mmap = env.get("MALLOC_MMAP_THRESHOLD_", _GLIBC_DEFAULT_THRESHOLD)
            libc.mallopt(_M_MMAP_THRESHOLD, int(mmap))
            libc.malloc_trim(0)


def run_task(work: Work, task: Task) -> TaskResult:
    """Compute one task (the function every engine runs)."""
    with _heap_for_temporaries():
        lower, upper, cert = compute_pairs(work, task.layer, task.ii, task.jj)
    return TaskResult(task, lower, upper, cert)
