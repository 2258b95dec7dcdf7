"""Partitions of a point cloud into clusters: the one quantisation step of the point-cloud path.

Both the multiscale solver (representatives and their masses) and the quantised lower
bounds (cluster radii) start from the same :class:`Quantisation`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.cluster.vq import kmeans2

from gwlite.pointcloud._cloud import PointCloud

__all__ = ["Quantisation", "quantise"]

# k-means steps: the bounds hold for any partition, the solver only needs a good one
_KMEANS_ITER = 10
# relative slack on radii: the triangle inequality must survive the radii's round-off
_RADIUS_SLACK = 1e-9


@dataclass(frozen=True)
class Quantisation:
    r"""A partition of a cloud's points into ``k`` non-empty clusters.

    Attributes
    ----------
    labels : array ``(n,)`` of int
        Cluster of each point, ``0 .. k - 1``.
    centers : array ``(k, d)``
        Weighted mean of each cluster (the representatives).
    masses : array ``(k,)``
        :math:`P_a = \sum_{i \in a} p_i` (positive, summing to 1).
    radii : array ``(k,)``
        :math:`r_a \ge \max_{i \in a} |x_i - c_a|` (Euclidean), rounded up.
    """

    labels: np.ndarray
    centers: np.ndarray
    masses: np.ndarray
    radii: np.ndarray

    @property
    def k(self) -> int:
        return len(self.masses)

    def members(self) -> list[np.ndarray]:
        """The point indices of each cluster."""
        order = np.argsort(self.labels, kind="stable")
        bounds = np.cumsum(np.bincount(self.labels, minlength=self.k))[:-1]
        return np.split(order, bounds)


def quantise(cloud: PointCloud, k: int, seed: int = 0) -> Quantisation:
    """Partition ``cloud`` into at most ``k`` clusters by k-means (SciPy's ``kmeans2``,
    ``_KMEANS_ITER`` Lloyd steps from ``k`` random points, :math:`O(n k d)` each); each
    point is its own cluster when ``k >= n``. Runs on the host (the ``n x d``
    coordinates cross once for torch and CuPy clouds)."""
    cloud = cloud.to_host()
    X, p = cloud.X, cloud.p
    if k >= cloud.n:
        labels = np.arange(cloud.n)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty clusters are dropped below
            # seeds drawn among the points: SciPy's k-means++ seeding costs O(n k^2 d)
            _, labels = kmeans2(X, k, iter=_KMEANS_ITER, minit="points", seed=seed)
        labels = np.unique(labels, return_inverse=True)[1].reshape(-1)
    k = int(labels.max()) + 1
    masses = np.bincount(labels, p, minlength=k)
    centers = (
        np.stack([np.bincount(labels, p * X[:, j], minlength=k) for j in range(cloud.d)], axis=1)
        / masses[:, None]
    )
    gaps = np.sqrt(np.sum((X - centers[labels]) ** 2, axis=1))
    radii = np.zeros(k)
    np.maximum.at(radii, labels, gaps)
    scale = float(np.max(np.abs(X))) if X.size else 0.0
    radii = radii * (1 + _RADIUS_SLACK) + _RADIUS_SLACK * scale * (radii > 0)
    return Quantisation(labels, centers, masses / masses.sum(), radii)
