"""The results of :func:`gwlite.pairwise`: interval matrices and neighbour lists."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from gwlite.errors import GWInputError

__all__ = ["Neighbours", "PairwiseResult"]


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, repr=False)
class Neighbours:
    """Each space's ``k`` nearest neighbours by GW, with what the intervals prove.

    Attributes
    ----------
    indices : ndarray of int ``(N, k)``
        ``indices[i]``: the neighbours of space ``i``, closest first (ranked by upper
        bound, then lower bound, then index).
    lower, upper : ndarray ``(N, k)``
        Their GW intervals.
    proven : ndarray of bool ``(N, k)``
        True when the neighbour's upper bound is at most the lower bound of every space
        left out of the list: no excluded space can be strictly closer, whatever the
        true GW values inside the intervals are.
    names : tuple of str or None
        Names of the spaces, when the inputs had them.
    """

    indices: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    proven: np.ndarray
    names: tuple | None = None

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    @property
    def proven_share(self) -> float:
        """Share of the listed neighbours that the intervals prove."""
        return float(np.mean(self.proven)) if self.proven.size else 1.0

    def __repr__(self) -> str:
        n = self.indices.shape[0]
        return (
            f"Neighbours(spaces={n}, k={self.k}, proven={self.proven_share:.1%} of "
            f"{self.proven.size} listed)"
        )


@dataclass(frozen=True, repr=False)
class PairwiseResult:
    """GW intervals for every pair of a dataset of spaces.

    The invariant of :class:`gwlite.GWResult` holds entry by entry:
    ``lower[i, j] <= GW(space i, space j) <= upper[i, j]``.

    Attributes
    ----------
    lower, upper : ndarray ``(N, N)``
        Symmetric float64 matrices with a zero diagonal (GW of a space with itself is 0,
        attained by the identity coupling).
    certified : ndarray of bool ``(N, N)``
        True where the interval is a single value (``upper - lower`` within round-off,
        or the method certified its optimum); True on the diagonal.
    evaluated : ndarray of bool ``(N, N)``
        Where ``method`` ran; everywhere off the diagonal, except in ``knn`` mode where
        the other pairs keep the cheap sorted bounds (they cannot enter any neighbour
        list).
    method, loss_fun : str
    time_s : float
        Wall-clock time of the whole call.
    names : tuple of str or None
    diagnostics : Mapping
        Engine, store, task and ``knn`` statistics.
    """

    lower: np.ndarray
    upper: np.ndarray
    certified: np.ndarray
    evaluated: np.ndarray
    method: str
    loss_fun: str
    time_s: float
    names: tuple | None = None
    diagnostics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("lower", "upper", "certified", "evaluated"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "diagnostics", MappingProxyType(dict(self.diagnostics)))

    @property
    def n_spaces(self) -> int:
        return int(self.lower.shape[0])

    @property
    def n_pairs(self) -> int:
        """Number of unordered pairs of distinct spaces, ``N (N - 1) / 2``."""
        n = self.n_spaces
        return n * (n - 1) // 2

    @property
    def n_evaluated(self) -> int:
        """Pairs on which ``method`` ran."""
        return int(np.count_nonzero(np.triu(self.evaluated, 1)))

    @property
    def saved(self) -> int:
        """Pairs on which ``method`` did not have to run (``knn`` pruning)."""
        return self.n_pairs - self.n_evaluated

    def knn(self, k: int) -> Neighbours:
        """Each space's ``k`` nearest neighbours, and whether the intervals prove them.

        Examples
        --------
        >>> import numpy as np, gwlite
        >>> points = [np.array([0.0, 1, 3]), np.array([3.0, 1, 0]), np.array([0.0, 1, 4])]
        >>> lines = [np.abs(np.subtract.outer(x, x)) for x in points]
        >>> nb = gwlite.pairwise(lines, engine=1, progress=False).knn(1)
        >>> nb.indices[:, 0].tolist(), nb.proven[:, 0].tolist()
        ([1, 0, 0], [True, True, False])
        """
        n = self.n_spaces
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n - 1:
            raise GWInputError(f"k must be an integer in [1, {n - 1}] (N - 1), got {k!r}")
        U = np.array(self.upper, dtype=np.float64)
        L = np.array(self.lower, dtype=np.float64)
        np.fill_diagonal(U, np.inf)
        np.fill_diagonal(L, np.inf)
        index = np.broadcast_to(np.arange(n), (n, n))
        order = np.lexsort((index, L, U), axis=-1)
        nb = order[:, :k]
        rows = np.arange(n)[:, None]
        excluded = L.copy()
        excluded[rows, nb] = np.inf
        bar = excluded.min(axis=1)
        return Neighbours(
            indices=_frozen(nb),
            lower=_frozen(L[rows, nb]),
            upper=_frozen(U[rows, nb]),
            proven=_frozen(U[rows, nb] <= bar[:, None]),
            names=self.names,
        )

    def __repr__(self) -> str:
        n = self.n_spaces
        off = ~np.eye(n, dtype=bool)
        cert = float(np.mean(self.certified[off])) if n > 1 else 1.0
        return (
            f"PairwiseResult(method={self.method!r}, loss_fun={self.loss_fun!r}, "
            f"spaces={n}, pairs={self.n_pairs}, evaluated={self.n_evaluated}, "
            f"certified={cert:.1%}, time={self.time_s:.2f} s)"
        )
