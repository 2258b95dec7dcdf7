r"""``method="multiscale"``: a feasible coupling of two large point clouds, priced exactly.

The stages, each timed in ``diagnostics["stages"]``:

1. **quantise** both clouds into about ``n_clusters`` clusters by k-means
   (SciPy's ``kmeans2`` from random points), as quantized GW does
   (Chowdhury, Miller & Needham 2021);
2. **coarse**: solve GW between the cluster centres (weights: the cluster masses) with
   gwlite's own ``method="proximal"`` (square loss; for ``abs_loss``, which
   ``proximal`` takes only on few distinct distances, the sorted coupling); its plan
   :math:`\Gamma` is a sparse vertex;
3. **lift**: for every pair of clusters :math:`(a, b)` with :math:`\Gamma_{ab} > 0`, move
   the mass :math:`\Gamma_{ab}` from the points of :math:`a` (each in proportion to its
   weight) to those of :math:`b` by an exact linear OT whose cost is the linearisation of
   the GW energy at the block-product coupling. The union is a feasible coupling of
   ``p`` and ``q`` with at most :math:`\sum_{ab} (|a| + |b|)` non-zeros;
4. **refine**: re-linearise at the current coupling and re-solve the blocks (a
   Frank-Wolfe vertex step restricted to the blocks), kept while the energy decreases;
5. **price**: the coupling's exact GW cost (:func:`gwlite.pointcloud.geometry.gw_cost_sparse`,
   chunked, never sampled) is ``upper``;
6. **lower**: the point-cloud lower bounds (:mod:`gwlite.pointcloud.bounds`).

The linearisation uses the rank :math:`d + 2` factors of squared distances: the
gradient of :math:`-2\langle \pi, C^1 \pi C^2 \rangle` is
:math:`-4 A_1 (B_1^\top \pi B_2) A_2^\top`, so a block's cost matrix costs
:math:`O(|a||b| d)`. For ``sqeuclidean`` clouds and the square loss it is the exact
gradient; otherwise it is a surrogate that guides the plan (the plan is still priced
exactly with the true metric and loss), and refinement steps are accepted on the
surrogate energy.

References
----------
S. Chowdhury, D. Miller, T. Needham. Quantized Gromov-Wasserstein. ECML PKDD 2021.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import ot
import scipy.sparse
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from gwlite.api import gromov_wasserstein
from gwlite.pointcloud import geometry
from gwlite.pointcloud._cloud import PointCloud, _entry_bound
from gwlite.pointcloud._lean import quantized_slb_chunked
from gwlite.pointcloud._quantise import Quantisation, quantise
from gwlite.pointcloud.bounds import CLOUD_LOWER_BOUNDS, cloud_lower
from gwlite.pointcloud.spectral import STREAMED_SPECTRAL_MAX
from gwlite.problem import LOSS_EXPONENTS
from gwlite.result import GWResult
from gwlite.solvers._common import (
    certify_threshold,
    flag,
    nonneg_int,
    one_of,
    optional,
    positive_int,
    with_option_checks,
)

__all__ = ["DEFAULT_CLUSTERS", "RIGID_MAX", "STREAMED_MEAN_ROW_MAX", "solve"]

#: representatives per cloud of the coarse problem
DEFAULT_CLUSTERS = 1000
#: ``lower="best"`` includes the streamed (O(n^2 d)) euclidean mean-row bound only when
#: ``n^2 + m^2`` is at most this; the closed forms are always included
STREAMED_MEAN_ROW_MAX = 8 * 10**8
#: the rigid matching (a permutation refinement) is tried up to this many points
RIGID_MAX = 20_000
# the coarse plan is used as it is when its support is at most this many times k1 + k2
_SPARSE_FACTOR = 4
# refinement stops once a step gains less than this share of the energy
_REFINE_RTOL = 1e-2
# candidate partners per point of the rigid matching
_CANDIDATES = 32
# the rigid matching is tried when the Procrustes residual is below this share of the spread
_RIGID_RESIDUAL = 0.05


@dataclass(frozen=True)
class _Sparse:
    """A coupling by its entries (host arrays, no duplicates)."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray


def _blocks(gamma: np.ndarray, P: np.ndarray, Q: np.ndarray, D1, D2) -> np.ndarray:
    """The coarse plan's support as ``(a, b, mass)`` rows; a dense plan is replaced by the
    Frank-Wolfe vertex at it (an exact OT, at most ``k1 + k2 - 1`` entries)."""
    if np.count_nonzero(gamma > 0) > _SPARSE_FACTOR * sum(gamma.shape):
        grad = -(D1 @ gamma @ D2.T)
        gamma = ot.emd(P, Q, grad / np.max(np.abs(grad)), numItermax=10**7, check_marginals=False)
    a, b = np.nonzero(gamma > 0)
    return np.stack([a, b, gamma[a, b]], axis=1)


def _cluster_means(F: np.ndarray, Q: Quantisation, p: np.ndarray) -> np.ndarray:
    """``sum_{i in a} p_i F_i / P_a`` for every cluster ``a``."""
    sums = np.stack(
        [np.bincount(Q.labels, p * F[:, j], minlength=Q.k) for j in range(F.shape[1])], axis=1
    )
    return sums / np.bincount(Q.labels, p, minlength=Q.k)[:, None]


def _block_plan(cost: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if len(u) == 1 or len(v) == 1:
        return np.outer(u, v)
    scale = float(np.max(np.abs(cost)))
    return ot.emd(
        u, v, cost / scale if scale > 0 else cost, numItermax=10**7, check_marginals=False
    )


class _Lifter:
    """The blockwise linear OT of the lift and refine stages."""

    def __init__(self, c1: PointCloud, c2: PointCloud, Q1, Q2, blocks):
        self.c1, self.c2, self.Q1, self.Q2, self.blocks = c1, c2, Q1, Q2, blocks
        # the surrogate problem: both clouds with squared distances
        self.sq1 = PointCloud(c1.X, "sqeuclidean", c1.weights, c1.chunk_entries)
        self.sq2 = PointCloud(c2.X, "sqeuclidean", c2.weights, c2.chunk_entries)
        self.F1, self.F2 = geometry.factors(self.sq1), geometry.factors(self.sq2)
        self.members1, self.members2 = Q1.members(), Q2.members()

    def product_slope(self) -> np.ndarray:
        r""":math:`W = B_1^\top \pi_0 B_2` at the block-product coupling of the blocks."""
        B1 = _cluster_means(self.F1[1], self.Q1, self.c1.p)
        B2 = _cluster_means(self.F2[1], self.Q2, self.c2.p)
        a, b, g = self.blocks[:, 0].astype(int), self.blocks[:, 1].astype(int), self.blocks[:, 2]
        return (B1[a] * g[:, None]).T @ B2[b]

    def slope(self, plan: _Sparse) -> np.ndarray:
        w = plan.values[:, None]
        return (self.F1[1][plan.rows] * w).T @ self.F2[1][plan.cols]

    def solve_blocks(self, W: np.ndarray) -> _Sparse:
        """The blockwise OT against the linearised energy with slope ``W``."""
        AW = self.F1[0] @ W
        rows, cols, values = [], [], []
        for a, b, g in self.blocks:
            a, b = int(a), int(b)
            src, dst = self.members1[a], self.members2[b]
            u = self.c1.p[src] / self.Q1.masses[a]
            v = self.c2.p[dst] / self.Q2.masses[b]
            u, v = u / u.sum(), v / v.sum()
            plan = _block_plan(-(AW[src] @ self.F2[0][dst].T), u, v) * g
            i, j = np.nonzero(plan > 0)
            rows.append(src[i])
            cols.append(dst[j])
            values.append(plan[i, j])
        return _Sparse(np.concatenate(rows), np.concatenate(cols), np.concatenate(values))

    def energy(self, plan: _Sparse) -> float:
        """The (surrogate) square-loss sqeuclidean GW energy of ``plan``."""
        return geometry.gw_cost_sparse(
            self.sq1, self.sq2, plan.rows, plan.cols, plan.values, "square_loss"
        )


def _rigid_matching(lifter: _Lifter, plan: _Sparse) -> _Sparse | None:
    r"""A permutation from the best orthogonal map between the clouds (equal sizes and
    dimensions, uniform weights), or None when the clouds do not look rigidly related.

    The orthogonal Procrustes map :math:`R` of the plan's cross-covariance
    :math:`H = \sum \pi_{ij} u_i v_j^\top` (centred points; :math:`R = U V^\top` from
    :math:`H = U \Sigma V^\top`) moves each :math:`u_i` near its partner; the assignment
    restricted to each point's ``_CANDIDATES`` nearest moved neighbours (SciPy's sparse
    LAPJV) is a permutation. It is tried only when the plan's Procrustes residual is
    below ``_RIGID_RESIDUAL`` of the clouds' spread, where the candidates contain a
    perfect matching in practice, and up to :data:`RIGID_MAX` points (the sparse LAPJV
    ran for over 20 minutes on a rotated copy of a 100,000-point torus, whose symmetry
    leaves many near-ties); its energy decides whether it is kept.
    """
    c1, c2 = lifter.c1, lifter.c2
    if not (c1.n == c2.n <= RIGID_MAX and c1.d == c2.d and c1.uniform and c2.uniform):
        return None
    U, V = c1.centered(), c2.centered()
    H = (U[plan.rows] * plan.values[:, None]).T @ V[plan.cols]
    left, _, right = np.linalg.svd(H)
    moved = U @ (left @ right)
    spread = float(c1.p @ np.einsum("ij,ij->i", U, U) + c2.p @ np.einsum("ij,ij->i", V, V))
    gaps = moved[plan.rows] - V[plan.cols]
    if not plan.values @ np.einsum("ij,ij->i", gaps, gaps) <= _RIGID_RESIDUAL * spread:
        return None
    k = min(_CANDIDATES, c2.n)
    dist, cand = cKDTree(V).query(moved, k=k)
    rows = np.repeat(np.arange(c1.n), k)
    # the matching needs positive weights (zeros are missing edges): shift, same optimum
    graph = scipy.sparse.csr_array(
        (dist.reshape(-1) ** 2 + 1.0, (rows, cand.reshape(-1))), shape=(c1.n, c2.n)
    )
    try:
        r, c = min_weight_full_bipartite_matching(graph)
    except ValueError:  # the candidates admit no perfect matching
        return None
    return _Sparse(r.astype(np.int64), c.astype(np.int64), np.full(len(r), 1.0 / len(r)))


def _refine(lifter: _Lifter, plan: _Sparse, max_refine: int) -> tuple[_Sparse, list[float]]:
    """Local steps kept while the energy decreases: a rigid matching
    (:func:`_rigid_matching`) when it applies, else a blockwise Frank-Wolfe vertex."""
    history = [lifter.energy(plan)]
    for _ in range(max_refine):
        candidate = _rigid_matching(lifter, plan)
        energy = np.inf if candidate is None else lifter.energy(candidate)
        if not energy < history[-1]:
            candidate = lifter.solve_blocks(lifter.slope(plan))
            energy = lifter.energy(candidate)
        if not energy < history[-1]:
            break
        if energy > history[-1] * (1 - _REFINE_RTOL):  # kept, but the steps have stalled
            plan = candidate
            history.append(energy)
            break
        plan = candidate
        history.append(energy)
    return plan, history


def _cloud_lower(c1, c2, kind: str, loss_fun: str, Q1, Q2) -> float:
    """One bound of :func:`~gwlite.pointcloud.bounds.cloud_lower` on the solver's clusters;
    the quantised SLB in slices of its level grid (same value up to round-off, a third
    of the memory: it was this solver's peak at 1,000 clusters)."""
    if kind == "quantized_slb":
        return quantized_slb_chunked(Q1, Q2, (c1.metric, c2.metric), LOSS_EXPONENTS[loss_fun])
    return cloud_lower(c1, c2, kind, loss_fun, quantisations=(Q1, Q2))


def _lower_kinds(c1: PointCloud, c2: PointCloud, lower: str) -> list[str]:
    if lower != "best":
        return [lower]
    kinds = list(CLOUD_LOWER_BOUNDS)
    streamed = "euclidean" in (c1.metric, c2.metric)
    if streamed and c1.n**2 + c2.n**2 > STREAMED_MEAN_ROW_MAX:
        kinds.remove("mean_row")
    if streamed and c1.n**2 + c2.n**2 > STREAMED_SPECTRAL_MAX:
        kinds.remove("spectral")  # about 40 streamed passes (LOBPCG)
    return kinds


@with_option_checks(
    n_clusters=positive_int,
    max_refine=nonneg_int,
    seed=nonneg_int,
    lower=one_of(CLOUD_LOWER_BOUNDS + ("best",)),
    progress=optional(flag),
)
def solve(
    c1: PointCloud,
    c2: PointCloud,
    loss_fun: str = "square_loss",
    *,
    n_clusters: int = DEFAULT_CLUSTERS,
    max_refine: int = 10,
    lower: str = "best",
    seed: int = 0,
    progress: bool | None = None,
    return_coupling: bool = True,
) -> GWResult:
    r"""GW between two point clouds by quantise, solve, lift and refine.

    Parameters
    ----------
    c1, c2 : PointCloud
    loss_fun : {"square_loss", "abs_loss"}
    n_clusters : int
        Representatives per cloud (default 1000); a cloud with at most that many
        points is its own quantisation, and the coarse problem is then the problem.
    max_refine : int
        Most refinement steps (default 10; 0 keeps the lifted coupling).
    lower : {"best", "mean_row", "flb", "quantized_slb", "quantized_tlb", "spectral"}
        The lower bound(s): ``"best"`` (default) computes every bound of
        :data:`gwlite.pointcloud.bounds.CLOUD_LOWER_BOUNDS` (the streamed euclidean
        mean-row bound only up to :data:`STREAMED_MEAN_ROW_MAX`, the euclidean spectral
        bound up to :data:`gwlite.pointcloud.spectral.STREAMED_SPECTRAL_MAX`) and reports
        the largest;
        the quantised ones reuse the solver's clusters.
    seed : int
        Seed of k-means and of the coarse solver.
    progress : bool, optional
        A progress bar over the stages (default: on a terminal).
    return_coupling : bool

    Returns
    -------
    GWResult
        ``coupling``: a ``scipy.sparse.csr_array`` ``(n, m)``, feasible for ``p`` and
        ``q``; ``upper = value``: its exact GW cost; ``lower``: the largest bound
        computed. ``diagnostics``: ``stages`` (name and seconds of each), ``bounds``
        (every lower bound computed), ``lower_by``, ``n_clusters`` (actual, per cloud),
        ``coarse_upper`` (the coarse problem's cost), ``refine_history`` (energy after
        the lift and after each kept step, ``energy_kind`` says exact or surrogate),
        ``coupling_nnz``.
    """
    r = LOSS_EXPONENTS[loss_fun]
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=6, desc="multiscale", disable=not show, leave=False)
    stages: list[dict] = []
    clock = [time.perf_counter()]

    def done(name: str, **note) -> None:
        now = time.perf_counter()
        stages.append({"stage": name, "time_s": now - clock[0], **note})
        clock[0] = now
        bar.update(1)

    Q1, Q2 = quantise(c1, n_clusters, seed), quantise(c2, n_clusters, seed)
    done("quantise", k1=Q1.k, k2=Q2.k)
    D1 = geometry.distances(Q1.centers, Q1.centers, c1.metric)
    D2 = geometry.distances(Q2.centers, Q2.centers, c2.metric)
    # proximal refuses abs_loss on many distinct distances: the sorted coupling there
    coarse_method = "proximal" if r == 2 else "sorted"
    seeded = {"seed": seed} if coarse_method == "proximal" else {}
    coarse = gromov_wasserstein(
        D1, D2, Q1.masses, Q2.masses, method=coarse_method, loss_fun=loss_fun, **seeded
    )
    blocks = _blocks(np.asarray(coarse.coupling), Q1.masses, Q2.masses, D1, D2)
    coarse_upper = float(coarse.upper)
    done("coarse", method=coarse_method, upper=coarse_upper, blocks=len(blocks))
    lifter = _Lifter(c1, c2, Q1, Q2, blocks)
    plan = lifter.solve_blocks(lifter.product_slope())
    done("lift", nnz=len(plan.values))
    plan, history = _refine(lifter, plan, max_refine)
    done("refine", steps=len(history) - 1)
    upper = geometry.gw_cost_sparse(c1, c2, plan.rows, plan.cols, plan.values, loss_fun)
    done("price")
    del D1, D2, coarse, lifter  # the coarse problem's matrices before the bounds' peak
    bounds = {
        kind: _cloud_lower(c1, c2, kind, loss_fun, Q1, Q2) for kind in _lower_kinds(c1, c2, lower)
    }
    done("lower")
    bar.close()
    lower_by = max(bounds, key=bounds.get)
    low = min(bounds[lower_by], upper)
    top = max(_entry_bound(c1.X, c1.metric), _entry_bound(c2.X, c2.metric))
    exact = c1.metric == c2.metric == "sqeuclidean" and loss_fun == "square_loss"
    coupling = scipy.sparse.csr_array((plan.values, (plan.rows, plan.cols)), shape=(c1.n, c2.n))
    a = np.bincount(plan.rows, plan.values, minlength=c1.n)
    b = np.bincount(plan.cols, plan.values, minlength=c2.n)
    return GWResult(
        value=upper,
        lower=low,
        upper=upper,
        coupling=coupling if return_coupling else None,
        method="multiscale",
        loss_fun=loss_fun,
        converged=True,
        n_iter=len(history) - 1,
        marginal_error=float(max(np.abs(a - c1.p).sum(), np.abs(b - c2.p).sum())),
        certified=bool(upper - low <= certify_threshold(top, r)),
        time_s=0.0,
        diagnostics={
            "stages": stages,
            "bounds": bounds,
            "lower_by": lower_by,
            "n_clusters": (Q1.k, Q2.k),
            "coarse_upper": coarse_upper,
            "refine_history": history,
            "energy_kind": "exact" if exact else "surrogate (sqeuclidean, square loss)",
            "coupling_nnz": len(plan.values),
        },
    )
