"""On-disk format of a teacher cache: names, manifest schema, hashing and atomic writes.

Everything that both the writer (``_build``) and the reader (``_reader``) must agree on
lives here, so that a format change is made in one place.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gwlite.atomic import atomic_write_bytes

FORMAT_NAME = "fusion.cache"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_PATTERN = "shard-{:05d}.safetensors"
SHARD_GLOB = "shard-*.safetensors"

#: Tensor names inside every shard.
LOGPROBS, INDICES, TOKEN_IDS, OFFSETS, PROMPT_LENGTHS = (
    "logprobs",
    "indices",
    "token_ids",
    "offsets",
    "prompt_lengths",
)

#: ``--dtype`` spelling -> (torch dtype name, safetensors dtype tag, bytes per value).
LOGPROB_DTYPES = {"fp16": ("float16", "F16", 2), "bf16": ("bfloat16", "BF16", 2)}
INDEX_BYTES = 4  # int32 top-k indices and int32 token ids

_HASH_CHUNK = 1 << 22


class CacheError(ValueError):
    """A teacher cache is missing, corrupt, truncated, incomplete or does not match.

    It subclasses :class:`ValueError` so that callers that already catch bad-input
    errors also catch it; the message always names the file at fault.
    """


# Manifest keys and the JSON types they must have. ``None`` in a tuple means "may be null".
MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "format_version": (int,),
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
}

#: Options that change the bytes of a shard: a resumed build must match all of them.
#: Batch size is deliberately absent (see docs/guide/cache.md, "Resuming").
RESUME_KEYS = (
    "format_version",
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
    "examples_per_shard",
    "data_sha256",
    "inputs_sha256",
)


def shard_name(index: int) -> str:
    """File name of shard ``index`` (zero-based)."""
    return SHARD_PATTERN.format(index)


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


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Canonical serialisation (sorted keys, no timestamps) so equal builds give equal bytes."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """Atomically (re)write ``manifest.json`` in ``directory``."""
    atomic_write_bytes(directory / MANIFEST_NAME, manifest_bytes(manifest))


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
        wrong type, or was written by a newer format version than this code reads.
    """
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise CacheError(f"{path}: no manifest (is {Path(directory)} a teacher cache?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheError(f"{path}: not valid JSON ({err})") from None
    if isinstance(manifest, dict) and manifest.get("format") not in (None, FORMAT_NAME):
        raise CacheError(f"{path}: format is {manifest['format']!r}, not {FORMAT_NAME!r}")
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CacheError(
            f"{path}: format version {version} is newer than the {FORMAT_VERSION} this "
            "version of fusion reads; upgrade fusion to read this cache"
        )
    _check_fields(manifest, MANIFEST_FIELDS, str(path))
    for i, shard in enumerate(manifest["shards"]):
        _check_fields(shard, SHARD_FIELDS, f"{path}: shards[{i}]")
    return manifest
