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

One writer at a time: opening a store takes an exclusive lock on the sibling file
``STORE.lock`` (the ``filelock`` package; released when the run ends, also when it is
killed, since the operating system drops the lock with the process); a second process
is refused at once with one line. A chunk that no longer decodes (a disk error, a copy cut
short) is reported by array and chunk index; with ``repair=True`` its tile is reset to
missing and recomputed. Metadata that does not parse (a truncated ``zarr.json``) is one
:class:`~gwlite.GWInputError`, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

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


def _lock(path: str):
    """The store's exclusive lock, taken without waiting (a second writer is refused)."""
    try:
        from filelock import FileLock, Timeout
    except ImportError as err:  # pragma: no cover - the extra is missing
        raise GWInputError("store= needs filelock: pip install 'gwlite[pairwise]'") from err
    lock = FileLock(path.rstrip("/\\") + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise GWInputError(
            f"{path} is being written by another process (lock {lock.lock_file} is held): "
            "a store takes one writer at a time; wait for that run, or pass another path"
        ) from None
    return lock


class PairStore:
    """One store on disk (see the module docstring); :meth:`close` releases its lock.

    Parameters
    ----------
    path : path
        The store's folder.
    meta : dict
        What the store must have been made with (format, hash, ...).
    layers : list of str
        Layers to open or create.
    repair : bool
        Reset the tiles of chunks that no longer decode (recomputed by the caller)
        instead of refusing the store.
    """

    def __init__(self, path, meta: dict, layers, *, repair: bool = False):
        self.path = os.fspath(path)
        self.repair = repair
        self.repaired: list[str] = []
        self._lock = _lock(self.path)
        try:
            self._open(meta, layers)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> PairStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self, meta: dict, layers) -> None:
        zarr = _import_zarr()
        try:
            self._open_arrays(zarr, meta, layers)
        except GWInputError:
            raise
        except (ValueError, KeyError, TypeError, OSError) as err:
            # JSONDecodeError is a ValueError; Zarr raises the others on bad metadata
            raise GWInputError(
                f"{self.path} is not a readable Zarr store ({type(err).__name__}: "
                f"{str(err)[:160]}); its metadata is damaged (a truncated zarr.json?): "
                "delete it to start over, or pass another path"
            ) from err

    def _open_arrays(self, zarr, meta: dict, layers) -> None:
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
        """Full in-memory copies of a layer's arrays (missing pairs: NaN, not done).

        Two kinds of damage are found: chunks that do not decode, and pairs flagged done
        whose values are missing (a values chunk deleted: Zarr reads it as its fill).

        Raises
        ------
        GWInputError
            Naming the damaged chunks, unless ``repair``: then their tiles are reset on
            disk and in the copy (missing, not done), listed in ``repaired``.
        """
        arrays = self.arrays[layer]
        try:
            state = {name: np.asarray(arr[...]) for name, arr in arrays.items()}
        except Exception as err:  # noqa: BLE001 - any codec error; the scan names the chunks
            bad = sorted(set(self._bad_chunks(layer)))
            if not bad:  # pragma: no cover - the failure did not come from one chunk
                raise GWInputError(f"{self.path}: layer {layer!r} cannot be read: {err}") from err
            self._damaged(layer, bad, "cannot be read")
            return self.load(layer)
        bad = self._done_without_values(state)
        if bad:
            self._damaged(layer, bad, "hold pairs marked done without values")
            return self.load(layer)
        return state

    def _done_without_values(self, state: dict) -> list[tuple[str, tuple[int, int]]]:
        missing = state["done"] & ~(np.isfinite(state["lower"]) & np.isfinite(state["upper"]))
        tiles = {(int(i) // self.chunk, int(j) // self.chunk) for i, j in np.argwhere(missing)}
        return [("lower/upper", idx) for idx in sorted(tiles)]

    def _damaged(self, layer: str, bad: list, what: str) -> None:
        """Refuse the store naming ``bad`` chunks, or (``repair``) reset their tiles."""
        listed = ", ".join(f"{name}{idx}" for name, idx in bad[:8])
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        if not self.repair:
            raise GWInputError(
                f"{self.path}: {len(bad)} chunk(s) of layer {layer!r} {what} "
                f"(array(chunk row, chunk col): {listed}{more}); rerun with repair=True "
                "(--repair) to recompute their tiles, or delete the store"
            )
        for idx in sorted({idx for _, idx in bad}):
            self._reset_tile(layer, idx)
            self.repaired.append(f"{layer}{idx}")

    def _bad_chunks(self, layer: str) -> Iterator[tuple[str, tuple[int, int]]]:
        for name, arr in self.arrays[layer].items():
            rows, cols = arr.cdata_shape
            for idx in ((i, j) for i in range(rows) for j in range(cols)):
                try:
                    arr.get_block_selection(idx)
                except Exception:  # noqa: BLE001 - zstd, truncation, shape: all mean unreadable
                    yield name, idx

    def _reset_tile(self, layer: str, idx: tuple[int, int]) -> None:
        """Overwrite one tile of every array of a layer with its fill (missing, not done)."""
        for name, arr in self.arrays[layer].items():
            dtype, fill = _ARRAYS[name]
            c = self.chunk
            rows = slice(idx[0] * c, min((idx[0] + 1) * c, arr.shape[0]))
            cols = slice(idx[1] * c, min((idx[1] + 1) * c, arr.shape[1]))
            arr[rows, cols] = np.full((rows.stop - rows.start, cols.stop - cols.start), fill, dtype)

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
