""":class:`PointCloud`: a metric-measure space given by coordinates, never by a matrix."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gwlite import _xp
from gwlite.errors import GWInputError
from gwlite.problem import as_input_array, check_range

__all__ = ["CHUNK_ENTRIES", "METRICS", "PointCloud", "is_point_cloud"]

#: the distances a point cloud can carry: ``|x - y|`` and ``|x - y|^2``
METRICS = ("euclidean", "sqeuclidean")

#: entries of one block of distances (``2**22`` float64 = 32 MiB): the memory bound of
#: every streamed computation on point clouds
CHUNK_ENTRIES = 1 << 22


@dataclass(frozen=True, eq=False, repr=False)
class PointCloud:
    r"""A metric-measure space given by its points: :math:`C_{ik} = d(x_i, x_k)`.

    Pass it wherever :func:`gwlite.gromov_wasserstein`, :func:`gwlite.lower_bound` or
    :func:`gwlite.gw_cost` take a structure matrix: the ``n x n`` matrix is never held.
    Distances are computed in blocks of at most ``chunk_entries`` entries; for
    ``"sqeuclidean"`` the square-loss terms factor exactly through the rank ``d + 2``
    decomposition :math:`|x_i - x_k|^2 = |x_i|^2 + |x_k|^2 - 2 x_i^\top x_k`.

    Parameters
    ----------
    X : array ``(n, d)``
        Coordinates (NumPy, torch or CuPy; copied to the host in float64). Two clouds
        compared by GW may have different dimensions ``d``.
    metric : {"euclidean", "sqeuclidean"}
        :math:`d(x, y) = |x - y|` or :math:`|x - y|^2`.
    weights : array ``(n,)``, optional
        Positive point masses summing to 1; uniform when omitted.
    chunk_entries : int
        Largest number of distances held at once (default :data:`gwlite.pointcloud.CHUNK_ENTRIES`). It
        changes memory and speed, never a result beyond round-off.

    Raises
    ------
    GWInputError
        ``X`` not 2-D, empty, complex, non-numeric, with NaN or infinite coordinates or
        coordinates too large to square; weights of the wrong length, not finite, zero or
        negative, or not summing to 1; an unknown metric.

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> X = np.random.default_rng(0).normal(size=(50, 3))
    >>> moved = X @ np.linalg.qr(np.ones((3, 3)) + np.eye(3))[0] + 5.0  # rotated, shifted
    >>> res = gwlite.gromov_wasserstein(gwlite.PointCloud(X), gwlite.PointCloud(moved[::-1]))
    >>> res.lower <= res.upper < 1e-9
    True
    """

    X: np.ndarray
    metric: str = "euclidean"
    weights: Any = None
    chunk_entries: int = CHUNK_ENTRIES
    p: np.ndarray = field(init=False)

    def __post_init__(self):
        if not isinstance(self.metric, str) or self.metric not in METRICS:
            raise GWInputError(f"unknown metric {self.metric!r}; choose one of {list(METRICS)}")
        chunk = self.chunk_entries
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise GWInputError(f"chunk_entries must be a positive integer, got {chunk!r}")
        X = _coordinates(self.X)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "p", _point_weights(self.weights, X.shape[0]))
        if self.weights is not None:
            object.__setattr__(self, "weights", self.p)
        top = _entry_bound(X, self.metric)
        if not math.isfinite(top):
            raise GWInputError(
                "the distances of X overflow float64; rescale the coordinates (GW is "
                "homogeneous: GW(s C1, s C2) = s^r GW(C1, C2))"
            )
        # the same range rule as for matrices: squared distances and their n^2 sums fit
        check_range(np, np.float64, top, 2 * X.shape[0], what="the distances of X")

    @property
    def n(self) -> int:
        """Number of points."""
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        """Dimension of the ambient space."""
        return int(self.X.shape[1])

    @property
    def uniform(self) -> bool:
        return self.weights is None or bool(np.all(self.p == self.p[0]))

    def centered(self) -> np.ndarray:
        """Coordinates minus their weighted mean (distances unchanged, round-off smaller)."""
        return self.X - self.p @ self.X

    def __repr__(self) -> str:
        w = "uniform" if self.weights is None else "weighted"
        return f"PointCloud(n={self.n}, d={self.d}, metric={self.metric!r}, {w})"


def is_point_cloud(x: Any) -> bool:
    """True for a :class:`PointCloud` (the public functions dispatch on it)."""
    return isinstance(x, PointCloud)


def _coordinates(X) -> np.ndarray:
    X = as_input_array(X, "X")
    X = np.array(_xp.to_numpy(X), dtype=np.float64)  # a private, writable-then-frozen copy
    if X.ndim != 2:
        hint = " (for 1-D data pass X[:, None])" if X.ndim == 1 else ""
        raise GWInputError(f"X must have shape (n, d), got {tuple(X.shape)}{hint}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise GWInputError(f"X is empty (shape {tuple(X.shape)}): a cloud needs a point")
    bad = ~np.isfinite(X)
    if bad.any():
        raise GWInputError(f"X has {int(bad.sum())} non-finite coordinates (NaN or Inf)")
    X.setflags(write=False)
    return X


def _point_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        p = np.full(n, 1.0 / n)
    else:
        w = as_input_array(weights, "weights")
        w = np.asarray(_xp.to_numpy(w))
        if w.dtype.kind in "biu":
            raise GWInputError(f"weights have integer dtype {w.dtype}; point masses are floats")
        if w.shape != (n,):
            raise GWInputError(f"weights have shape {tuple(w.shape)} but X has {n} points")
        p = w.astype(np.float64)
        if not np.all(np.isfinite(p)):
            raise GWInputError("weights have non-finite entries (NaN or Inf)")
        if np.any(p <= 0):
            raise GWInputError(
                f"weights have {int(np.sum(p <= 0))} zero or negative entries; point masses "
                "must be > 0 (drop the points of zero mass)"
            )
        total = float(p.sum())
        if not abs(total - 1) <= max(1e-9, math.sqrt(np.finfo(w.dtype).eps)):
            raise GWInputError(
                f"weights must sum to 1 (sum {total:.6g}); normalise them, e.g. w / w.sum()"
            )
        p = p / total
    p.setflags(write=False)
    return p


def _entry_bound(X: np.ndarray, metric: str) -> float:
    """An upper bound on every distance of the cloud (from the bounding box)."""
    with np.errstate(over="ignore"):
        diameter = float(np.sqrt(np.sum((X.max(axis=0) - X.min(axis=0)) ** 2)))
    return diameter if metric == "euclidean" else diameter**2
