r"""Point clouds in :func:`gwlite.pairwise`: the sorted bounds without any ``n x n`` matrix.

A dataset is either all :class:`gwlite.PointCloud` objects or all matrices (mixing is
refused: a cloud would have to become a matrix, which is the user's call to make). For
clouds:

* **per-pair methods** (``cg``, ``proximal``, ``auto``, ``multiscale``, ...) run as one
  :func:`gwlite.gromov_wasserstein` call per pair on the two clouds: the same numbers as
  a loop of single calls (dense matrices up to ``DENSE_MAX`` points where the method
  needs them, ``multiscale`` above it for ``auto``);
* the **batched sorted layer** (the default ``method="sorted"`` with ``lower`` in
  :data:`CLOUD_LOWERS`, and the cheap layer of ``knn`` mode) is computed from per-space
  precomputation, :class:`CloudFeatures`: for every cloud once, the mean-row features
  :math:`s = C p`, the eccentricities and the tie-refinement keys of the sorted
  coupling (closed forms in :math:`O(n d^2)` for ``sqeuclidean``, streamed
  :math:`O(n^2 d)` for ``euclidean``, :mod:`gwlite.pointcloud.geometry`); then per pair
  the 1-D transports between sorted features (the mean-row bound and FLB, proofs in
  ``docs/theory_pointcloud.md``) and the sorted coupling priced exactly by
  :func:`gwlite.pointcloud.geometry.gw_cost_sparse`.

The sorted coupling is the one of :func:`gwlite.bounds.sorted_sparse_coupling` on the
clouds' distance matrices (the same features, keys and tie rule, with the bounding-box
diameter as the scale of the tolerances), so at small n the numbers equal those of
``pairwise`` on the dense matrices up to round-off. SLB and TLB need every distance and
are not in this layer: ``lower="slb"``/``"tlb"`` run pair by pair (dense matrices up to
``MATERIALISE_MAX`` points), and ``knn`` mode's cheap layer is ``max(mean_row, flb)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gwlite.errors import GWInputError
from gwlite.pointcloud import geometry
from gwlite.pointcloud._cloud import PointCloud, _entry_bound, is_point_cloud
from gwlite.problem import LOSS_EXPONENTS
from gwlite.univariate import monotone_coupling, wasserstein_1d

__all__ = [
    "CLOUD_LOWERS",
    "CloudFeatures",
    "CloudSpace",
    "as_clouds",
    "check_clouds",
    "cloud_lowers",
    "cloud_pairs",
    "prepare_clouds",
    "sorted_upper",
]

#: lower bounds of the batched sorted layer on clouds (no n x n matrix)
CLOUD_LOWERS = ("mean_row", "flb")
# the tie rule of gwlite.bounds._key_tol: features within ~1024 ulp of their scale tie
_TIE_ULPS = 1024


def check_clouds(spaces: list) -> bool:
    """True when ``spaces`` are point clouds, False when none is; mixing is refused."""
    flags = [is_point_cloud(x) for x in spaces]
    if not any(flags):
        for k, item in enumerate(spaces):
            if isinstance(item, (tuple, list)) and any(is_point_cloud(x) for x in item):
                raise GWInputError(
                    f"spaces[{k}] holds a gwlite.PointCloud in a tuple: pass the cloud itself "
                    "(weights go in PointCloud(X, weights=...))"
                )
        return False
    if not all(flags):
        k = flags.index(not flags[0])
        kinds = ("a matrix, graph or (C, p) pair", "a gwlite.PointCloud")
        raise GWInputError(
            f"spaces[{k}] is {kinds[flags[k]]} but spaces[0] is {kinds[flags[0]]}: pass all "
            "point clouds or all matrices (a small cloud becomes a matrix with "
            "scipy.spatial.distance.cdist(X, X, metric))"
        )
    return True


def as_clouds(arrays, metric: str = "sqeuclidean", weights=None) -> list[PointCloud]:
    """Point clouds from coordinate arrays ``(n_k, d_k)``, a bad one named by its index.

    ``weights``: None (uniform) or one weight vector per cloud.
    """
    arrays = list(arrays)
    if weights is not None and len(weights) != len(arrays):
        raise GWInputError(f"{len(weights)} weight vectors for {len(arrays)} clouds")
    out = []
    for k, X in enumerate(arrays):
        try:
            out.append(PointCloud(X, metric, None if weights is None else weights[k]))
        except GWInputError as err:
            raise GWInputError(f"spaces[{k}]: {err}") from None
    return out


def _apply(cloud: PointCloud, v: np.ndarray) -> np.ndarray:
    """:math:`C v` without ``C``: factors for ``sqeuclidean``, blocks for ``euclidean``."""
    if cloud.metric == "sqeuclidean":
        A, B = geometry.factors(cloud)
        return A @ (B.T @ v)
    out = np.empty(cloud.n)
    for rows in geometry.row_blocks(cloud.n, cloud.n, cloud.chunk_entries):
        out[rows] = geometry.distances(cloud.X[rows], cloud.X, cloud.metric) @ v
    return out


@dataclass(frozen=True)
class CloudSpace:
    """The per-space parts of one cloud (host arrays)."""

    s: np.ndarray  # mean-row features C p
    ecc: np.ndarray  # eccentricities (sum_k p_k d_ik^r)^(1/r)
    keys: tuple  # tie-refinement keys C (p s), C (p C (p s)), (C o C) p
    maxabs: float  # an upper bound on every distance (bounding box)


def _prepare_one(cloud: PointCloud, r: int) -> CloudSpace:
    s = geometry.mean_row_features(cloud)
    sq_ecc = geometry.squared_eccentricities(cloud)  # (C o C) p, closed form
    ecc = np.sqrt(sq_ecc) if r == 2 else s
    k1 = _apply(cloud, cloud.p * s)
    k2 = _apply(cloud, cloud.p * k1)
    return CloudSpace(s, ecc, (k1, k2, sq_ecc), _entry_bound(cloud.X, cloud.metric))


@dataclass
class CloudFeatures:
    """Every cloud's :class:`CloudSpace`; stands where the matrices' ``Buckets`` stand
    (``maxabs`` and ``stable`` are read by the tasks and ``knn`` mode)."""

    spaces: list
    maxabs: np.ndarray
    stable: np.ndarray
    loss_fun: str


def prepare_clouds(clouds: list[PointCloud], loss_fun: str) -> CloudFeatures:
    """The per-space precomputation of a dataset of clouds (once, before any pair)."""
    r = LOSS_EXPONENTS[loss_fun]
    spaces = [_prepare_one(c, r) for c in clouds]
    return CloudFeatures(
        spaces=spaces,
        maxabs=np.array([sp.maxabs for sp in spaces]),
        stable=np.ones(len(spaces), dtype=bool),
        loss_fun=loss_fun,
    )


def cloud_lowers(lowers: tuple) -> tuple | None:
    """The lower bounds a batched sorted layer computes on clouds, or None when the layer
    must run pair by pair (SLB or TLB asked for alone)."""
    from gwlite.pairs.tasks import CHEAP_LOWERS

    if lowers == CHEAP_LOWERS:
        return CLOUD_LOWERS
    return lowers if set(lowers) <= set(CLOUD_LOWERS) else None


def _one_d(u, v, c1: PointCloud, c2: PointCloud, r: int) -> float:
    if c1.uniform and c2.uniform and c1.n == c2.n:
        return float(wasserstein_1d(u, v, p=r, check=False))
    return float(wasserstein_1d(u, v, c1.p, c2.p, p=r, check=False))


def _tol(scale: float) -> float:
    return _TIE_ULPS * float(np.finfo(np.float64).eps) * max(scale, np.finfo(np.float64).tiny)


def sorted_upper(c1: PointCloud, c2: PointCloud, f1: CloudSpace, f2: CloudSpace, loss_fun):
    """The exact cost of the sorted coupling of two clouds (a feasible plan: an upper
    bound on GW)."""
    keys = []
    for u, v in zip(f1.keys, f2.keys):
        keys.append((u, v, _tol(max(float(np.max(np.abs(u))), float(np.max(np.abs(v)))))))
    plan = monotone_coupling(
        f1.s, f2.s, c1.p, c2.p, tie_tol=_tol(max(f1.maxabs, f2.maxabs)), tie_break=tuple(keys)
    )
    rows, cols = np.asarray(plan.rows), np.asarray(plan.cols)
    values = np.asarray(plan.values, dtype=np.float64)
    return geometry.gw_cost_sparse(c1, c2, rows, cols, values, loss_fun)


def cloud_pairs(clouds: list, features: CloudFeatures, lowers: tuple, ii, jj):
    """``(lower, upper)`` of the pairs ``(ii[k], jj[k])``: the largest of ``lowers``
    (clamped to the upper bound) and the sorted coupling's exact cost."""
    loss_fun = features.loss_fun
    r = LOSS_EXPONENTS[loss_fun]
    lower, upper = np.empty(len(ii)), np.empty(len(ii))
    for k, (i, j) in enumerate(zip(np.asarray(ii).tolist(), np.asarray(jj).tolist())):
        (c1, c2), (f1, f2) = (clouds[i], clouds[j]), (features.spaces[i], features.spaces[j])
        upper[k] = sorted_upper(c1, c2, f1, f2, loss_fun)
        best = 0.0
        for kind in lowers:
            u, v = (f1.s, f2.s) if kind == "mean_row" else (f1.ecc, f2.ecc)
            best = max(best, _one_d(u, v, c1, c2, r))
        lower[k] = min(best, upper[k])
    return lower, upper
