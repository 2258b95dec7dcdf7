"""A Zarr store of pair results: written tile by tile, resumable, refused when stale.

Layout (Zarr v3 group)::

    STORE/zarr.json                  attrs["gwlite_pairwise"]: format, hash, n_spaces,
                                     chunk, method, loss_fun, options, names
    STORE/<layer>/lower, upper       float64 (N, N), chunks (chunk, chunk), NaN = missing
    STORE/<layer>/certified, done    bool (N, N)

``<layer>`` is ``main`` (the requested method) or ``cheap`` (the bounds ``knn`` mode
computes first). Only tiles on or above the diagonal are written; each task fills one
tile. A tile is written chunk by chunk, values first and its ``done`` flags last; Zarr's
local store writes every chunk to a temporary file and renames it into place, so a run
killed at any moment leaves each chunk either old or new, never torn, and a pair
counts as computed only once its values are on disk. Rerunning with the same store
loads what is there and computes only the rest; since a pair's numbers depend on that
pair alone, the result is identical to an uninterrupted run.

The hash covers every input matrix and weight vector and the method, loss and
options: a store made with anything else is refused.
"""

from __future__ import annotations

import os

import numpy as np

from gwlite.errors import GWInputError

__all__ = ["FORMAT", "PairStore"]

FORMAT = 1
_KEY = "gwlite_pairwise"
_ARRAYS = {
    "lower": ("f8", np.nan),
    "upper": ("f8", np.nan),
    "certified": ("bool", False),
    "done": ("bool", False),
}


def _import_zarr():
    try:
        import zarr
    except ImportError as err:  # pragma: no cover - the extra is missing
        raise GWInputError(
            "store= needs zarr: pip install zarr (gwlite's 'pairwise' extra)"
        ) from err
    return zarr


class PairStore:
    """One store on disk (see the module docstring)."""

    def __init__(self, path, meta: dict, layers):
        zarr = _import_zarr()
        self.path = os.fspath(path)
        root = zarr.open_group(self.path, mode="a")
        old = root.attrs.get(_KEY)
        if old is None:
            if len(list(root.keys())):
                raise GWInputError(
                    f"{self.path} is a Zarr store but not one written by gwlite.pairwise; "
                    "choose another path"
                )
            root.attrs[_KEY] = meta
            old = meta
        self._check(old, meta)
        self.chunk = int(old["chunk"])
        self.meta = old
        n = int(meta["n_spaces"])
        self.arrays = {}
        for layer in layers:
            group = root.require_group(layer)
            self.arrays[layer] = {
                name: group.require_array(
                    name,
                    shape=(n, n),
                    chunks=(self.chunk, self.chunk),
                    dtype=dtype,
                    fill_value=fill,
                )
                for name, (dtype, fill) in _ARRAYS.items()
            }

    def _check(self, old: dict, meta: dict) -> None:
        if old.get("format") != FORMAT:
            raise GWInputError(
                f"{self.path} was written by another version of gwlite.pairwise (format "
                f"{old.get('format')}, this one reads {FORMAT}); use a new store path"
            )
        if old.get("hash") != meta["hash"]:
            what = [
                f"{k}: {old.get(k)!r} -> {meta[k]!r}"
                for k in ("n_spaces", "method", "loss_fun", "options")
                if old.get(k) != meta[k]
            ]
            detail = "; ".join(what) if what else "the input matrices or weights differ"
            raise GWInputError(
                f"{self.path} was made with other inputs or options ({detail}; hash "
                f"{str(old.get('hash'))[:12]} vs {meta['hash'][:12]}); pass a new store "
                "path, or delete this one to start over"
            )

    def load(self, layer: str) -> dict:
        """Full in-memory copies of a layer's arrays (missing pairs: NaN, not done)."""
        return {name: np.asarray(arr[...]) for name, arr in self.arrays[layer].items()}

    def write_tile(self, layer: str, tile: tuple, state: dict) -> None:
        """Write tile ``(row_block, col_block)`` of ``state`` (the in-memory arrays), its
        values first and its ``done`` flags last."""
        row_block, col_block = tile
        c = self.chunk
        rows = slice(row_block * c, (row_block + 1) * c)
        cols = slice(col_block * c, (col_block + 1) * c)
        arrays = self.arrays[layer]
        for name in ("lower", "upper", "certified", "done"):
            arrays[name][rows, cols] = state[name][rows, cols]
