"""Teacher cache: run a causal LM once over prompt/response data, store its top-k.

The cache is a directory of safetensors shards plus a ``manifest.json``; see
docs/guide/cache.md for the format and its guarantees.

>>> from fusion.cache import build, TeacherCache          # doctest: +SKIP
>>> build("path/to/teacher", None, "train.jsonl", "cache/teacher-a", k=50)  # doctest: +SKIP
>>> cache = TeacherCache("cache/teacher-a")               # doctest: +SKIP
>>> cache[0].logprobs.shape                               # doctest: +SKIP
torch.Size([T_0, 50])
"""

from __future__ import annotations

from fusion.cache._build import build, estimate_bytes, teacher_fingerprint
from fusion.cache._data import Encoder, data_sha256, read_examples, tokenizer_sha256
from fusion.cache._format import FORMAT_VERSION, CacheError, read_manifest
from fusion.cache._reader import CacheExample, Collated, TeacherCache, collate

__all__ = [
    "FORMAT_VERSION",
    "CacheError",
    "CacheExample",
    "Collated",
    "Encoder",
    "TeacherCache",
    "build",
    "collate",
    "data_sha256",
    "estimate_bytes",
    "read_examples",
    "read_manifest",
    "teacher_fingerprint",
    "tokenizer_sha256",
]
