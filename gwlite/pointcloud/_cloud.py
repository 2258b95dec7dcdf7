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
        Coordinates (NumPy, torch or CuPy). They stay in their library and on their
        device, copied once in float64 (the promotion of float32 and float16 is exact):
        every distance block, moment and bound is computed there in float64, and only
        vectors of length ``n`` or matrices of ``n x d`` or ``n x k`` (``k`` a few
        eigenvectors) ever cross to the host. Two clouds compared by GW may have
        different dimensions ``d``.
    metric : {"euclidean", "sqeuclidean"}
        :math:`d(x, y) = |x - y|` or :math:`|x - y|^2`.
    weights : array ``(n,)``, optional
        Positive point masses summing to 1; uniform when omitted. Held in float64 in
        ``X``'s library and device (as the attribute ``p``).
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

    X: Any
    metric: str = "euclidean"
    weights: Any = None
    chunk_entries: int = CHUNK_ENTRIES
    p: Any = field(init=False)

    def __post_init__(self):
        if not isinstance(self.metric, str) or self.metric not in METRICS:
            raise GWInputError(f"unknown metric {self.metric!r}; choose one of {list(METRICS)}")
        chunk = self.chunk_entries
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise GWInputError(f"chunk_entries must be a positive integer, got {chunk!r}")
        X = _coordinates(self.X)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "p", _point_weights(self.weights, X))
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
        return self.weights is None or bool(self.xp.all(self.p == self.p[0]))

    @property
    def xp(self):
        """The array namespace of the coordinates (array-api-compat)."""
        return _xp.array_namespace(self.X)

    @property
    def backend(self) -> str:
        """``"numpy"``, ``"torch"`` or ``"cupy"``."""
        return _xp.backend_name(self.X)

    def centered(self):
        """Coordinates minus their weighted mean (distances unchanged, round-off smaller)."""
        return self.X - self.p @ self.X

    def to_host(self) -> PointCloud:
        """The same cloud with NumPy coordinates and weights (an ``n x d`` copy), for the
        stages that run on the host (k-means, the multiscale solver)."""
        if self.backend == "numpy":
            return self
        weights = None if self.weights is None else _xp.to_numpy(self.p)
        return PointCloud(_xp.to_numpy(self.X), self.metric, weights, self.chunk_entries)

    def __repr__(self) -> str:
        w = "uniform" if self.weights is None else "weighted"
        return f"PointCloud(n={self.n}, d={self.d}, metric={self.metric!r}, {w})"


def is_point_cloud(x: Any) -> bool:
    """True for a :class:`PointCloud` (the public functions dispatch on it)."""
    return isinstance(x, PointCloud)


def _coordinates(X):
    X = _xp.detach(as_input_array(X, "X"))
    xp = _xp.array_namespace(X)
    # a private float64 copy on X's own device (writable-then-frozen for NumPy)
    X = xp.asarray(X, dtype=xp.float64, copy=True)
    if X.ndim != 2:
        hint = " (for 1-D data pass X[:, None])" if X.ndim == 1 else ""
        raise GWInputError(f"X must have shape (n, d), got {tuple(X.shape)}{hint}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise GWInputError(f"X is empty (shape {tuple(X.shape)}): a cloud needs a point")
    bad = int(xp.sum(xp.astype(~xp.isfinite(X), xp.int64)))
    if bad:
        raise GWInputError(f"X has {bad} non-finite coordinates (NaN or Inf)")
    _freeze(X)
    return X


def _freeze(x) -> None:
    if isinstance(x, np.ndarray):
        x.setflags(write=False)


def _point_weights(weights, X):
    xp, n, where = _xp.array_namespace(X), X.shape[0], _xp.device(X)
    if weights is None:
        p = xp.full((n,), 1.0 / n, dtype=xp.float64, device=where)
    else:
        w = _xp.detach(as_input_array(weights, "weights"))
        if _xp.backend_name(w) != _xp.backend_name(X):
            w = _xp.to_numpy(w)  # n numbers cross once to X's library
        wxp = _xp.array_namespace(w)
        if wxp.isdtype(w.dtype, ("integral", "bool")):
            raise GWInputError(f"weights have integer dtype {w.dtype}; point masses are floats")
        if tuple(w.shape) != (n,):
            raise GWInputError(f"weights have shape {tuple(w.shape)} but X has {n} points")
        tol = max(1e-9, math.sqrt(_xp.eps(wxp, w.dtype)))
        p = xp.asarray(w, dtype=xp.float64, device=where, copy=True)
        if not bool(xp.all(xp.isfinite(p))):
            raise GWInputError("weights have non-finite entries (NaN or Inf)")
        bad = int(xp.sum(xp.astype(p <= 0, xp.int64)))
        if bad:
            raise GWInputError(
                f"weights have {bad} zero or negative entries; point masses "
                "must be > 0 (drop the points of zero mass)"
            )
        total = float(xp.sum(p))
        if not abs(total - 1) <= tol:
            raise GWInputError(
                f"weights must sum to 1 (sum {total:.6g}); normalise them, e.g. w / w.sum()"
            )
        p = p / total
    _freeze(p)
    return p


def _entry_bound(X, metric: str) -> float:
    """An upper bound on every distance of the cloud (from the bounding box)."""
    xp = _xp.array_namespace(X)
    with np.errstate(over="ignore"):
        extent = xp.max(X, axis=0) - xp.min(X, axis=0)
        diameter = float(xp.sqrt(xp.sum(extent**2)))
    return diameter if metric == "euclidean" else diameter**2
