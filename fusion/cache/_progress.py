"""Which shards of a cache directory are done: resume checks, rank records and the merge.

A single-process build keeps its progress in ``manifest.json`` (rewritten after every
shard, listing the shards completed so far in order). Rank ``r`` of a sharded build over
``W`` ranks owns the shards ``s`` with ``s % W == r`` and keeps its progress in its own
record ``rank-R-of-W.json`` (a manifest-shaped document listing the shards it completed),
so that no two processes ever write the same file. The manifest of a sharded build is
written by the merge, once every shard is listed somewhere: by the last rank to finish,
or by ``python -m fusion.cache merge DIR``.

The merge reads only files written atomically, checks every shard against the hash
recorded for it, and writes a manifest that depends on the records' contents only (not on
which process merges), through an atomic rename: two ranks merging at the same time
write the same bytes, and a reader sees one complete manifest or none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from fusion.cache._format import (
    DIGEST_BYTES,
    MANIFEST_NAME,
    RECORD_FIELDS,
    RESUME_KEYS,
    SHARD_GLOB,
    CacheError,
    CacheFormatError,
    is_cache_file,
    read_example_digests,
    read_manifest,
    read_record,
    record_name,
    record_paths,
    sha256_file,
    shard_index,
    shard_name,
    write_manifest,
)
from gwlite.atomic import temp_target

Source = tuple[Path, dict[str, Any]]  # a manifest or rank record, and where it was read


def _sources(out: Path) -> list[Source]:
    """Rank records (in name order), then the manifest, of a cache directory."""
    found = [(path, read_record(path)) for path in record_paths(out)]
    if (out / MANIFEST_NAME).is_file():
        found.append((out / MANIFEST_NAME, read_manifest(out)))
    return found


def _describe(path: Path) -> str:
    return "its manifest" if path.name == MANIFEST_NAME else f"its rank record {path.name}"


def refuse_other_options(path: Path, old: Mapping[str, Any], header: Mapping[str, Any]) -> None:
    """Raise if ``header`` differs from a manifest or record on a key it holds."""
    diffs = [
        f"{key}: cache has {old[key]!r}, build has {header[key]!r}"
        for key in RESUME_KEYS
        if key in header and old[key] != header[key]
    ]
    if diffs:
        raise CacheError(
            f"cannot resume the cache in {path.parent}: {_describe(path)} was built with "
            f"different options ({'; '.join(diffs)}). Use another directory, or "
            "overwrite=True (--overwrite) to rebuild."
        )


def _visible(out: Path) -> list[str]:
    """Names in ``out`` other than the temporary files of interrupted writes."""
    return sorted(p.name for p in out.iterdir() if temp_target(p.name) is None)


def _refuse_foreign(out: Path) -> None:
    names = _visible(out)
    if names and MANIFEST_NAME not in names and not record_paths(out):
        raise CacheError(
            f"{out} is not empty and has no {MANIFEST_NAME}; refusing to write a cache into "
            "it (choose an empty directory or pass overwrite=True / --overwrite)"
        )


def precheck(out: Path, known: Mapping[str, Any], overwrite: bool) -> None:
    """The checks that need no teacher, done before loading one (minutes for a big model).

    Refuses a path that is a file, a non-empty directory holding no cache, and a cache
    (manifest or rank record) built with other values of the options in ``known``.
    """
    if out.exists() and not out.is_dir():
        raise CacheError(f"{out} is a file, not a directory")
    if overwrite or not out.is_dir():
        return
    _refuse_foreign(out)
    for path, doc in _sources(out):
        refuse_other_options(path, doc, known)


def _remove_temps(out: Path, mine: Collection[int], rank: int, world_size: int) -> None:
    """Delete leftovers of interrupted writes: all of them alone, only our own when sharded.

    With several ranks, another rank may be writing its own temporary file right now.
    """
    for path in out.iterdir():
        target = temp_target(path.name)
        if target is None or not is_cache_file(target):
            continue
        ours = world_size == 1 or shard_index(target) in mine
        if ours or target == record_name(rank, world_size):
            path.unlink(missing_ok=True)


def _entry_index(entry: Mapping[str, Any], eps: int, where: Path) -> int:
    s, offset = divmod(entry["first_example"], eps)
    if offset or entry["file"] != shard_name(s):
        raise CacheError(f"{where}: shard entry {entry['file']!r} does not start a shard")
    return s


def _shard_problem(out: Path, entry: Mapping[str, Any]) -> str | None:
    path = out / entry["file"]
    if not path.is_file() or path.stat().st_size != entry["bytes"]:
        return "is missing or truncated"
    if sha256_file(path) != entry["sha256"]:
        return "fails its sha256 check"
    return None


def prepare(
    out: Path,
    header: Mapping[str, Any],
    overwrite: bool,
    mine: Collection[int],
    rank: int = 0,
    world_size: int = 1,
) -> dict[int, dict[str, Any]]:
    """Create or reopen ``out``; return the verified completed shards among ``mine``.

    A completed shard may be listed in the manifest or in any rank record (a build can be
    resumed with another number of ranks); each one is checked (size and sha256) before
    it is skipped. Raises :class:`CacheError` for a cache built with other options, a
    damaged completed shard or unrelated files.
    """
    out.mkdir(parents=True, exist_ok=True)
    _remove_temps(out, mine, rank, world_size)
    if overwrite:  # single process only (checked by the caller)
        for old in [out / MANIFEST_NAME, *out.glob(SHARD_GLOB), *record_paths(out)]:
            old.unlink(missing_ok=True)
    else:
        _refuse_foreign(out)
    sources = _sources(out)
    for path, doc in sources:
        refuse_other_options(path, doc, header)
    done: dict[int, dict[str, Any]] = {}
    eps = header["examples_per_shard"]
    for path, doc in sources:
        for entry in doc["shards"]:
            s = _entry_index(entry, eps, path)
            if s not in mine or s in done:
                continue
            problem = _shard_problem(out, entry)
            if problem:
                raise CacheError(f"{out / entry['file']}: completed shard {problem}; cannot resume")
            done[s] = dict(entry)
    return done


def contiguous(done: Mapping[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of shards ``0, 1, ...`` up to the first one not done."""
    prefix = []
    while len(prefix) in done:
        prefix.append(done[len(prefix)])
    return prefix


def _header(doc: Mapping[str, Any]) -> dict[str, Any]:
    drop = {"complete", "shards", *RECORD_FIELDS}
    return {key: value for key, value in doc.items() if key not in drop}


def merge_shards(
    out: Path, header: Mapping[str, Any] | None = None, *, strict: bool = True
) -> dict[str, Any] | None:
    """Write the complete manifest of ``out`` from its rank records and manifest.

    Parameters
    ----------
    out : Path
        The cache directory.
    header : mapping, optional
        The calling rank's own options, which every record must match.
    strict : bool
        Raise when shards are missing (explicit merge); otherwise return ``None`` (a rank
        whose peers are still working).

    Returns
    -------
    dict or None
        The manifest written.
    """
    sources = _sources(out)
    if not sources:
        raise CacheFormatError(f"{out}: no manifest and no rank record: nothing to merge")
    base = _header(sources[0][1])  # the same whichever rank merges
    for path, doc in sources:
        refuse_other_options(path, doc, header if header is not None else base)
    eps, num_shards = base["examples_per_shard"], base["num_shards"]
    candidates: dict[int, list[dict[str, Any]]] = {}
    for path, doc in sources:
        for entry in doc["shards"]:
            candidates.setdefault(_entry_index(entry, eps, path), []).append(entry)
    missing = [s for s in range(num_shards) if s not in candidates]
    if missing:
        if not strict:
            return None
        waiting = [p.name for p, doc in sources if "rank" in doc and not doc["complete"]]
        raise CacheError(
            f"cannot merge {out}: {len(missing)} of {num_shards} shard(s) not written yet "
            f"(first: {shard_name(missing[0])})"
            + (f"; unfinished rank record(s): {', '.join(waiting)}" if waiting else "")
            + "; rerun the build command of the missing ranks (it resumes), then merge"
        )
    entries = [_checked_entry(out, s, candidates[s]) for s in range(num_shards)]
    manifest = {**base, "complete": True, "shards": entries}
    _check_totals(out, manifest)
    write_manifest(out, manifest)
    return manifest


def _checked_entry(out: Path, s: int, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    problems = []
    for entry in candidates:  # a shard rewritten after its first record: the file decides
        problem = _shard_problem(out, entry)
        if problem is None:
            return dict(entry)
        problems.append(problem)
    raise CacheError(
        f"{out / shard_name(s)}: {problems[0]}; cannot merge (rerun the rank that owns it)"
    )


def _check_totals(out: Path, manifest: Mapping[str, Any]) -> None:
    """The shards add up to the header: example and token counts and the content hash."""
    shards = manifest["shards"]
    examples = sum(s["num_examples"] for s in shards)
    tokens = sum(s["num_tokens"] for s in shards)
    if (examples, tokens) != (manifest["num_examples"], manifest["num_tokens"]):
        raise CacheError(
            f"cannot merge {out}: the shards hold {examples} examples and {tokens} tokens, "
            f"the build {manifest['num_examples']} and {manifest['num_tokens']}"
        )
    h = hashlib.sha256()
    for shard in shards:
        digests = read_example_digests(out / shard["file"])
        if len(digests) != DIGEST_BYTES * shard["num_examples"] or (
            hashlib.sha256(digests).hexdigest() != shard["data_sha256"]
        ):
            raise CacheError(f"{out / shard['file']}: example hashes do not match its entry")
        h.update(digests)
    if h.hexdigest() != manifest["data_sha256"]:
        raise CacheError(f"cannot merge {out}: the shards' example hashes are not the data's")
