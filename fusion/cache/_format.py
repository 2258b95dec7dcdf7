"""On-disk format of a teacher cache: names, manifest schema, hashing and atomic writes.

Everything that both the writer (``_build``) and the reader (``_reader``) must agree on
lives here, so that a format change is made in one place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gwlite.atomic import atomic_write_bytes

FORMAT_NAME = "fusion.cache"
#: 2: per-example content hashes (``example_sha256`` in every shard), ``truncation``.
#: 3: ``encoding`` ("dense", the tensors of version 2; or "compact": quantised
#: log-probabilities and delta-coded ids, zlib-compressed per example, see ``_compact``).
FORMAT_VERSION = 3
#: versions this code reads (a version-2 manifest is read as ``encoding="dense"``)
READABLE_VERSIONS = (2, 3)
MANIFEST_NAME = "manifest.json"
SHARD_PATTERN = "shard-{:05d}.safetensors"
SHARD_GLOB = "shard-*.safetensors"
#: Progress record of one rank of a sharded build (see ``_build``).
RECORD_PATTERN = "rank-{:05d}-of-{:05d}.json"
RECORD_GLOB = "rank-*-of-*.json"
_SHARD_RE = re.compile(r"shard-(\d{5,})\.safetensors")
_RECORD_RE = re.compile(r"rank-(\d{5,})-of-(\d{5,})\.json")

#: Tensor names inside every shard.
LOGPROBS, INDICES, TOKEN_IDS, OFFSETS, PROMPT_LENGTHS, EXAMPLE_SHA256 = (
    "logprobs",
    "indices",
    "token_ids",
    "offsets",
    "prompt_lengths",
    "example_sha256",
)
#: Tensors of a compact shard, in place of LOGPROBS and INDICES: the per-example blobs
#: concatenated, and where each starts.
PAYLOAD, PAYLOAD_OFFSETS = "payload", "payload_offsets"
ENCODINGS = ("dense", "compact")
DIGEST_BYTES = 32  # one raw sha256 per example
TRUNCATIONS = ("response", "prompt_left")

#: ``--dtype`` spelling -> (torch dtype name, safetensors dtype tag, bytes per value).
LOGPROB_DTYPES = {"fp16": ("float16", "F16", 2), "bf16": ("bfloat16", "BF16", 2)}
#: ``--dtype`` of the compact encoding: 8-bit codes, read back as float32 log-probabilities
COMPACT_DTYPE = "q8"
DTYPES = (*LOGPROB_DTYPES, COMPACT_DTYPE)
INDEX_BYTES = 4  # int32 top-k indices and int32 token ids

_HASH_CHUNK = 1 << 22


class CacheError(ValueError):
    """A teacher cache is missing, corrupt, truncated, incomplete or does not match.

    It subclasses :class:`ValueError` so that callers that already catch bad-input
    errors also catch it; the message always names the file at fault.
    """


class CacheFormatError(CacheError):
    """The directory holds no cache, or one written in a format this version cannot read."""


# Manifest keys and the JSON types they must have. ``None`` in a tuple means "may be null".
MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "format_version": (int,),
    "encoding": (str,),
    "complete": (bool,),
    "teacher": (str,),
    "teacher_fingerprint": (str,),
    "teacher_dtype": (str,),
    "tokenizer_sha256": (str,),
    "tokenizer_size": (int,),
    "chat_template_sha256": (str, type(None)),
    "template": (str,),
    "add_eos": (bool,),
    "vocab_size": (int,),
    "k": (int,),
    "temperature": (float, int),
    "logprobs_dtype": (str,),
    "indices_dtype": (str,),
    "token_ids_dtype": (str,),
    "offsets_dtype": (str,),
    "max_length": (int, type(None)),
    "truncation": (str,),
    "examples_per_shard": (int,),
    "data_path": (str, type(None)),
    "data_sha256": (str,),
    "inputs_sha256": (str,),
    "num_examples": (int,),
    "num_tokens": (int,),
    "num_shards": (int,),
    "shards": (list,),
    "stats": (dict,),
    "software": (dict,),
}
SHARD_FIELDS: dict[str, tuple[type, ...]] = {
    "file": (str,),
    "sha256": (str,),
    "bytes": (int,),
    "first_example": (int,),
    "num_examples": (int,),
    "num_tokens": (int,),
    "data_sha256": (str,),
}
#: Extra fields of a rank's progress record (a manifest-shaped document).
RECORD_FIELDS: dict[str, tuple[type, ...]] = {"rank": (int,), "world_size": (int,)}

#: Options that change the bytes of a shard: a resumed build must match all of them.
#: Batch size is deliberately absent (see docs/guide/cache.md, "Resuming").
RESUME_KEYS = (
    "format_version",
    "encoding",
    "teacher_fingerprint",
    "tokenizer_sha256",
    "chat_template_sha256",
    "template",
    "add_eos",
    "vocab_size",
    "k",
    "temperature",
    "logprobs_dtype",
    "max_length",
    "truncation",
    "examples_per_shard",
    "data_sha256",
    "inputs_sha256",
)


def shard_name(index: int) -> str:
    """File name of shard ``index`` (zero-based)."""
    return SHARD_PATTERN.format(index)


def record_name(rank: int, world_size: int) -> str:
    """File name of the progress record of ``rank`` in a build over ``world_size`` ranks."""
    return RECORD_PATTERN.format(rank, world_size)


def shard_index(name: str) -> int | None:
    """Index of a shard file name, or ``None`` if ``name`` is not one."""
    match = _SHARD_RE.fullmatch(name)
    return int(match.group(1)) if match else None


def is_cache_file(name: str) -> bool:
    """Whether a file name is one a build writes (manifest, shard, rank record)."""
    return (
        name == MANIFEST_NAME
        or _SHARD_RE.fullmatch(name) is not None
        or _RECORD_RE.fullmatch(name) is not None
    )


def record_paths(directory: Path) -> list[Path]:
    """The rank records in ``directory``, sorted by name (so by world size, then rank)."""
    return sorted(p for p in directory.glob(RECORD_GLOB) if _RECORD_RE.fullmatch(p.name))


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks so that large shards never sit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_example_digests(path: str | os.PathLike) -> bytes:
    """The ``(N, 32)`` ``example_sha256`` tensor of one shard, as bytes (nothing else is read).

    Raises
    ------
    CacheError
        If the shard cannot be parsed or lacks the tensor.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            digests = handle.get_tensor(EXAMPLE_SHA256)
    except Exception as err:  # safetensors raises its own error types for bad files
        raise CacheError(f"{path}: unreadable shard ({err})") from None
    if digests.ndim != 2 or digests.shape[1] != DIGEST_BYTES or digests.dtype.itemsize != 1:
        raise CacheError(f"{path}: {EXAMPLE_SHA256} has shape {list(digests.shape)}")
    return digests.tobytes()


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Canonical serialisation (sorted keys, no timestamps) so equal builds give equal bytes."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """Atomically (re)write ``manifest.json`` in ``directory``."""
    atomic_write_bytes(directory / MANIFEST_NAME, manifest_bytes(manifest))


def write_record(directory: Path, record: Mapping[str, Any]) -> None:
    """Atomically (re)write a rank's progress record in ``directory``."""
    name = record_name(record["rank"], record["world_size"])
    atomic_write_bytes(directory / name, manifest_bytes(record))


def _check_fields(obj: Any, fields: Mapping[str, tuple[type, ...]], where: str) -> None:
    if not isinstance(obj, dict):
        raise CacheError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in fields if key not in obj]
    if missing:
        raise CacheError(f"{where}: missing field(s) {', '.join(missing)}")
    for key, types in fields.items():
        value = obj[key]
        # bool is an int in Python; an int field holding true/false is still malformed.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise CacheError(f"{where}: field {key!r} has type {type(value).__name__}")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheError(f"{path}: not valid JSON ({err})") from None


def _check_version(path: Path, doc: Any) -> None:
    if isinstance(doc, dict) and doc.get("format") not in (None, FORMAT_NAME):
        raise CacheFormatError(f"{path}: format is {doc['format']!r}, not {FORMAT_NAME!r}")
    version = doc.get("format_version") if isinstance(doc, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CacheFormatError(
            f"{path}: format version {version} is newer than the {FORMAT_VERSION} this "
            "version of fusion reads; upgrade fusion to read this cache"
        )
    if isinstance(version, int) and not isinstance(version, bool) and version < 2:
        raise CacheFormatError(
            f"{path}: format version {version} predates the per-example content hashes of "
            "version 2, which training needs to check alignment; rebuild the "
            "cache (the same build command with --overwrite, or overwrite=True)"
        )
    if version == 2:  # version 3 added the encoding; every version-2 cache is dense
        doc.setdefault("encoding", "dense")


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``manifest.json`` of a cache directory.

    Parameters
    ----------
    directory : str or path-like
        The cache directory.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    CacheError
        If the manifest is missing, is not JSON, lacks a field, has a field of the
        wrong type, or was written in another format version than the one this code
        reads (:class:`CacheFormatError` for a missing manifest or another version).
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        records = record_paths(directory) if directory.is_dir() else []
        if records:
            raise CacheFormatError(
                f"{path}: no manifest yet: {len(records)} rank record(s) of a sharded build "
                f"are there; once every rank has finished, run `python -m fusion.cache merge "
                f"{directory}` (the last rank to finish does it by itself)"
            )
        raise CacheFormatError(f"{path}: no manifest (is {directory} a teacher cache?)")
    manifest = _load_json(path)
    _check_version(path, manifest)
    _check_fields(manifest, MANIFEST_FIELDS, str(path))
    if manifest["encoding"] not in ENCODINGS:
        raise CacheError(f"{path}: encoding {manifest['encoding']!r} is not one of {ENCODINGS}")
    for i, shard in enumerate(manifest["shards"]):
        _check_fields(shard, SHARD_FIELDS, f"{path}: shards[{i}]")
    return manifest


def read_record(path: Path) -> dict[str, Any]:
    """Read and validate one rank's progress record (see :func:`read_manifest`)."""
    record = _load_json(path)
    _check_version(path, record)
    _check_fields(record, {**MANIFEST_FIELDS, **RECORD_FIELDS}, str(path))
    for i, shard in enumerate(record["shards"]):
        _check_fields(shard, SHARD_FIELDS, f"{path}: shards[{i}]")
    return record
