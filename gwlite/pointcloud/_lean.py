r"""The quantised SLB of :mod:`gwlite.pointcloud.bounds` in bounded memory.

:func:`gwlite.pointcloud.bounds.band_gap_lower` materialises the union of the four
cumulative-weight grids (up to :math:`4k^2` levels for ``k`` clusters) and four band
arrays on it: about 300 MB at ``k = 1000``, the peak of the multiscale solver at
n = 20,000. :func:`band_gap_lower_chunked` computes the same sum cell by cell in
slices of the merged grid: each sorted sample is sorted once, and only one slice of
levels (about :data:`LEVEL_CHUNK`) and its bands exist at a time. The cells, their
inner widths and the band values on them are the same floats as in
:func:`~gwlite.pointcloud.bounds.band_gap_lower`; only the order of the final sum
differs (round-off). The proof of the bound is the one of that function
(``docs/theory_pointcloud.md``).
"""

from __future__ import annotations

import numpy as np

from gwlite.pointcloud.bounds import _cum_error, _gap_power, pair_intervals

__all__ = ["LEVEL_CHUNK", "band_gap_lower_chunked", "quantized_slb_chunked"]

#: about this many levels of the merged grid per slice (a few MB of temporaries)
LEVEL_CHUNK = 1 << 18


class _Sorted:
    """One sample sorted once: values and normalised cumulative weights."""

    def __init__(self, values: np.ndarray, weights: np.ndarray):
        order = np.argsort(values, kind="stable")
        self.v = values[order]
        cum = np.cumsum(weights[order])
        cum /= cum[-1]
        # also the sample's part of the level grid: band_gap_lower clips it to [0, 1],
        # a no-op (a float cumsum of non-negative terms never exceeds its last entry)
        self.cum = cum

    def band(self, levels: np.ndarray, low: bool) -> np.ndarray:
        # bounds._band on a slice of the grid (same expressions, same floats)
        eps = _cum_error(len(self.v))
        at = levels[:-1] + eps if low else levels[1:] - eps
        return self.v[np.minimum(np.searchsorted(self.cum, at, side="left"), len(self.v) - 1)]


def band_gap_lower_chunked(lo1, hi1, w1, lo2, hi2, w2, r: int, chunk: int = LEVEL_CHUNK) -> float:
    r""":func:`gwlite.pointcloud.bounds.band_gap_lower` in slices of the level grid.

    The grid is the union of :math:`\{0, 1\}` and the four normalised cumulative
    weights; the slices are cut at levels of the first sample's grid (each a member of
    the union, and kept in both slices it ends, so that every cell lies in exactly one
    slice). ``chunk`` changes no cell, only the order of the sum.
    """
    size = max(len(lo1), len(lo2))
    samples = [_Sorted(lo1, w1), _Sorted(hi1, w1), _Sorted(lo2, w2), _Sorted(hi2, w2)]
    slack = 4 * _cum_error(size)
    cuts = np.unique(np.concatenate([[0.0, 1.0], samples[0].cum[:: max(1, chunk // 4)]]))
    total = 0.0
    for start, stop in zip(cuts[:-1], cuts[1:]):
        parts = [[start, stop]]
        for s in samples:
            a, b = np.searchsorted(s.cum, [start, stop], side="left")
            parts.append(s.cum[a:b][s.cum[a:b] > start])
        levels = np.unique(np.concatenate(parts))
        widths = np.maximum(np.diff(levels) - slack, 0.0)
        gap = _gap_power(
            samples[0].band(levels, True),
            samples[1].band(levels, False),
            samples[2].band(levels, True),
            samples[3].band(levels, False),
            r,
        )
        total += float(widths @ gap)
    return total


def quantized_slb_chunked(Q1, Q2, metrics, r: int, chunk: int = LEVEL_CHUNK) -> float:
    """The ``quantized_slb`` bound of :func:`gwlite.pointcloud.bounds.cloud_lower` through
    :func:`band_gap_lower_chunked` (same value up to round-off)."""
    sides = []
    for Q, metric in ((Q1, metrics[0]), (Q2, metrics[1])):
        lo, hi = pair_intervals(Q, metric)
        sides.append((lo.ravel(), hi.ravel(), np.outer(Q.masses, Q.masses).ravel()))
    (lo1, hi1, w1), (lo2, hi2, w2) = sides
    return max(0.0, band_gap_lower_chunked(lo1, hi1, w1, lo2, hi2, w2, r, chunk))
