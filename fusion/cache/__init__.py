"""Teacher cache: run a causal LM once over training examples, store its top-k.

The cache is a directory of safetensors shards plus a ``manifest.json``; see
docs/guide/cache.md for the format and its guarantees.

>>> from fusion.cache import build, TeacherCache          # doctest: +SKIP
>>> build("path/to/teacher", None, "train.jsonl", "cache/teacher-a", k=50)  # doctest: +SKIP
>>> cache = TeacherCache("cache/teacher-a")               # doctest: +SKIP
>>> cache[0].logprobs.shape                               # doctest: +SKIP
torch.Size([T_0, 50])
"""

from __future__ import annotations

from fusion.cache._align import check_alignment
from fusion.cache._build import (
    build,
    default_max_length,
    estimate_bytes,
    merge,
    target_logits,
    teacher_fingerprint,
    topk_rows,
)
from fusion.cache._data import (
    IGNORE_INDEX,
    Conversation,
    Encoded,
    Encoder,
    Example,
    as_row,
    data_sha256,
    encoding_stats,
    example_sha256,
    parse_example,
    read_examples,
    tokenizer_sha256,
    warn_truncation,
)
from fusion.cache._format import FORMAT_VERSION, CacheError, CacheFormatError, read_manifest
from fusion.cache._reader import CacheExample, Collated, TeacherCache, collate

__all__ = [
    "FORMAT_VERSION",
    "IGNORE_INDEX",
    "CacheError",
    "CacheExample",
    "CacheFormatError",
    "Collated",
    "Conversation",
    "Encoded",
    "Encoder",
    "Example",
    "TeacherCache",
    "as_row",
    "build",
    "check_alignment",
    "collate",
    "data_sha256",
    "default_max_length",
    "encoding_stats",
    "estimate_bytes",
    "example_sha256",
    "merge",
    "parse_example",
    "read_examples",
    "read_manifest",
    "target_logits",
    "teacher_fingerprint",
    "tokenizer_sha256",
    "topk_rows",
    "warn_truncation",
]
