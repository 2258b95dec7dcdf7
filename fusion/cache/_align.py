"""Checking, before training, that the training items are the examples the caches hold."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fusion.cache._data import Conversation, example_digest, read_examples
from fusion.cache._format import DIGEST_BYTES, CacheError
from fusion.cache._reader import TeacherCache


def _positional(data: Any) -> bool:
    """A data file, or a plain list of examples without ``index``: item i is row i."""
    if isinstance(data, str | os.PathLike):
        return True
    if not isinstance(data, list | tuple):
        return False
    first = data[0] if data else None
    return isinstance(first, tuple | Conversation) or (
        isinstance(first, Mapping) and "index" not in first
    )


def _index(item: Any, i: int) -> int:
    index = item.get("index") if isinstance(item, Mapping) else None
    if index is None:
        raise ValueError(
            f"training item {i} has no 'index': every item must carry the row of the teacher "
            "caches it was built from (PromptResponseDataset(..., with_index=True) adds it), "
            "or no teacher entry can be attached to it"
        )
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise ValueError(f"training item {i}: 'index' must be an integer, got {index!r}")
    return int(index)


def _digest(item: Any, i: int) -> bytes:
    try:
        return example_digest(item)
    except ValueError as err:
        raise ValueError(
            f"training item {i} carries no example text to compare with the caches ({err})"
        ) from None


def _items(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(indices (n,), digests (n, 32))`` of the training items."""
    if isinstance(data, str | os.PathLike):
        data, _ = read_examples(data)
    if _positional(data):
        indices = list(range(len(data)))
        digests = [_digest(item, i) for i, item in enumerate(data)]
    else:
        if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
            raise ValueError(
                f"cannot check an iterable dataset ({type(data).__name__}) against teacher "
                "caches before training: use a map-style dataset (len and [i]), or skip the "
                "check (FusionTrainer(check_data=False))"
            )
        items = [data[i] for i in range(len(data))]
        indices = [_index(item, i) for i, item in enumerate(items)]
        digests = [_digest(item, i) for i, item in enumerate(items)]
    flat = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, DIGEST_BYTES)
    return np.asarray(indices, dtype=np.int64), flat


def _fast_path(data: Any, caches: Sequence[TeacherCache]) -> bool:
    """A dataset standing for a whole data file (``data_sha256()``) that every cache matches."""
    digest = getattr(data, "data_sha256", None)
    if not callable(digest) or not len(data):
        return False
    first = data[0]
    if not (isinstance(first, Mapping) and first.get("index") == 0):
        return False
    value = digest()
    return all(len(c) == len(data) and c.manifest["data_sha256"] == value for c in caches)


def check_alignment(data: Any, caches: Sequence[TeacherCache | str | os.PathLike]) -> None:
    """Refuse teacher caches whose rows are not the training items' examples.

    Every cache row carries the content hash (:func:`fusion.cache.example_sha256`) of the
    example the teacher saw; each training item's text is hashed the same way and compared
    with the row it points to. Run it before training: a mismatch otherwise trains
    silently against another example's teacher predictions.

    Parameters
    ----------
    data : path, sequence or dataset
        * A JSONL path, or a list/tuple of examples (pairs, conversations, or rows without
          ``index``): item ``i`` must be row ``i`` of every cache, and the counts equal.
        * A dataset (``len`` and ``[i]``) whose items are mappings holding ``index`` and the
          example's ``prompt``/``response`` or ``messages``: item ``i`` must be row
          ``item["index"]`` of every cache (a subset of the cached rows is fine). An item
          without ``index`` is refused here, not at the first training step.
        * A dataset that also has a ``data_sha256()`` method (such as
          ``fusion.training.PromptResponseDataset``) stands for a whole data file: the
          counts must be equal too, and one hash comparison settles the common case.
    caches : sequence of TeacherCache or path

    Raises
    ------
    CacheError
        Naming the teacher, the first training item that does not match and its index
        (and where its text is in the cache, when it is there).
    ValueError
        For items without ``index`` or without text, or a dataset that cannot be indexed.
    """
    caches = [c if isinstance(c, TeacherCache) else TeacherCache(c) for c in caches]
    if not caches or _fast_path(data, caches):
        return
    whole = _positional(data) or callable(getattr(data, "data_sha256", None))
    indices, digests = _items(data)
    for j, cache in enumerate(caches):
        where = f"teacher {j} ({cache.path})"
        table = cache.example_hashes()
        if whole and len(table) != len(indices):
            raise CacheError(
                f"{where} holds {len(table)} examples, the training data {len(indices)}: "
                "build every cache over the training file itself"
            )
        outside = np.nonzero((indices < 0) | (indices >= len(table)))[0]
        if outside.size:
            i = int(outside[0])
            raise CacheError(
                f"{where}: training item {i} has index {int(indices[i])}, but the cache holds "
                f"{len(table)} examples"
            )
        bad = np.nonzero((table[indices] != digests).any(axis=1))[0]
        if bad.size:
            raise CacheError(_mismatch(where, table, indices, digests, int(bad[0]), whole))


def _mismatch(where, table, indices, digests, i: int, whole: bool) -> str:
    index = int(indices[i])
    found = np.nonzero((table == digests[i]).all(axis=1))[0]
    there = (
        f"its text is the cache's row {int(found[0])}"
        if found.size
        else "its text is in no row of the cache"
    )
    what = "was built over other examples (data_sha256 differs)" if whole else "does not match"
    return (
        f"{where} {what}: training item {i} (index {index}) is not the cache's row {index}: "
        f"{there} (example_sha256 {digests[i].tobytes().hex()[:16]}..., row {index} has "
        f"{table[index].tobytes().hex()[:16]}...). Example i of a cache must be the item "
        "whose 'index' is i"
    )
