"""GW interval matrices over a dataset of spaces: :func:`gwlite.pairwise`.

Layout: :mod:`~gwlite.pairs.api` (the function), :mod:`~gwlite.pairs.spaces` (input
checks, hash), :mod:`~gwlite.pairs.prepare` and :mod:`~gwlite.pairs.kernels` (the
batched sorted bounds), :mod:`~gwlite.pairs.clouds` (point clouds, no n x n matrix), :mod:`~gwlite.pairs.tasks` (what a task computes),
:mod:`~gwlite.pairs.engines` (this process, local processes, Dask),
:mod:`~gwlite.pairs.store` (Zarr), :mod:`~gwlite.pairs.knn` (neighbour pruning),
:mod:`~gwlite.pairs.result`, :mod:`~gwlite.pairs.plots` and :mod:`~gwlite.pairs.cli`.

Importing this package imports neither Dask nor Zarr; they are imported on use.
"""

from gwlite.pairs.api import pairwise
from gwlite.pairs.result import Neighbours, PairwiseResult

__all__ = ["Neighbours", "PairwiseResult", "pairwise"]
