"""Reading a teacher cache: random access by example, memory mapped, hash checked."""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from fusion.cache._compact import decode_rows
from fusion.cache._format import (
    DIGEST_BYTES,
    EXAMPLE_SHA256,
    INDICES,
    LOGPROBS,
    OFFSETS,
    PAYLOAD,
    PAYLOAD_OFFSETS,
    PROMPT_LENGTHS,
    TOKEN_IDS,
    CacheError,
    read_example_digests,
    read_manifest,
    sha256_file,
    shard_name,
)
from fusion.types import TopK

_VERIFY_MODES = ("lazy", "full", "none")
#: manifest dtype names -> safetensors dtype tags
_TAGS = {
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "int32": "I32",
    "int64": "I64",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
}
_CHECK_ELEMENTS = 1 << 22  # values checked at once by verify()


class CacheExample(NamedTuple):
    """Everything a cache holds about one example.

    Attributes
    ----------
    topk : fusion.TopK
        ``logprobs`` ``(T, k)`` float16/bfloat16 and ``indices`` ``(T, k)`` int32, one row
        per response token, entries sorted by decreasing log-probability.
    token_ids : torch.Tensor
        ``(T,)`` int32: the teacher's response token ids; row ``t`` of ``topk`` is the
        teacher's prediction of ``token_ids[t]``.
    prompt_length : int
        Number of teacher tokens before the response (template and BOS included).
    """

    topk: TopK
    token_ids: torch.Tensor
    prompt_length: int


class Collated(NamedTuple):
    """A padded batch of cached examples (see :func:`collate`).

    Attributes
    ----------
    topk : fusion.TopK
        ``logprobs`` ``(B, T, k)`` in the cache's dtype and ``indices`` ``(B, T, k)`` int64.
    mask : torch.Tensor
        ``(B, T)`` bool, True at real (unpadded) positions.
    token_ids : torch.Tensor or None
        ``(B, T)`` int64 teacher token ids, when the inputs were :class:`CacheExample`.
    """

    topk: TopK
    mask: torch.Tensor
    token_ids: torch.Tensor | None


class TeacherCache(Sequence):
    """Random access to a teacher cache written by :func:`fusion.cache.build`.

    ``cache[i]`` is a :class:`fusion.TopK` whose ``logprobs`` (float16 or bfloat16) and
    ``indices`` (int32) have shape ``(T_i, k)``, ``T_i`` being the number of response
    tokens of example ``i`` (in data order). Shards are memory mapped through
    ``safetensors.safe_open`` and only the rows of the requested example are read.

    Parameters
    ----------
    path : str or path-like
        The cache directory.
    verify : {"lazy", "full", "none"}
        ``"lazy"`` hashes each shard the first time it is read; ``"full"`` hashes every
        shard now; ``"none"`` skips hashing. File sizes are checked in every mode.
    expect : mapping or None
        Manifest values the caller relies on, e.g. ``{"tokenizer_sha256": ..., "k": 50,
        "vocab_size": 32000}``; any difference raises :class:`CacheError`.
    allow_incomplete : bool
        Open a cache whose build has not finished, exposing its completed shards only.

    Attributes
    ----------
    manifest : dict
        The validated ``manifest.json``.
    path : pathlib.Path
        The cache directory.

    Raises
    ------
    CacheError
        If the manifest is missing, malformed or too new, ``expect`` does not match, the
        build is incomplete, or a shard is missing, truncated or (when hashed) corrupt.
        The message names the file at fault.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        verify: str = "lazy",
        expect: Mapping[str, Any] | None = None,
        allow_incomplete: bool = False,
    ) -> None:
        if verify not in _VERIFY_MODES:
            raise ValueError(f"verify must be one of {_VERIFY_MODES}, got {verify!r}")
        self.path = Path(path)
        self.verify_mode = verify
        self.manifest = read_manifest(self.path)
        self._check_expect(expect or {})
        self._shards = self.manifest["shards"]
        self._check_layout(allow_incomplete)
        self._starts = [s["first_example"] for s in self._shards]
        self._len = sum(s["num_examples"] for s in self._shards)
        self._handles: dict[int, Any] = {}
        self._offsets: dict[int, np.ndarray] = {}
        self._blobs: dict[int, np.ndarray] = {}  # compact shards: where each example starts
        self._verified: set[int] = set()
        self._digests: np.ndarray | None = None
        for s in range(len(self._shards)):
            self._check_size(s)
        if verify == "full":
            self.verify()

    # -- checks -----------------------------------------------------------------

    def _check_expect(self, expect: Mapping[str, Any]) -> None:
        unknown = [key for key in expect if key not in self.manifest or key == "shards"]
        if unknown:
            raise ValueError(f"expect: unknown manifest field(s) {unknown}")
        diffs = [
            f"{key}: cache has {self.manifest[key]!r}, expected {value!r}"
            for key, value in expect.items()
            if self.manifest[key] != value
        ]
        if diffs:
            raise CacheError(f"{self.path}: cache does not match the caller ({'; '.join(diffs)})")

    def _check_layout(self, allow_incomplete: bool) -> None:
        m = self.manifest
        if not m["complete"] and not allow_incomplete:
            raise CacheError(
                f"{self.path}: build incomplete ({len(m['shards'])} of {m['num_shards']} shards); "
                "rerun the build to resume it, or pass allow_incomplete=True"
            )
        eps, total = m["examples_per_shard"], m["num_examples"]
        expected_first = 0
        for i, shard in enumerate(m["shards"]):
            if shard["first_example"] != expected_first or shard["num_examples"] < 1:
                raise CacheError(
                    f"{self.path / shard['file']}: example range does not follow the previous shard"
                )
            if shard["file"] != shard_name(i) or shard["num_examples"] != min(
                eps, total - expected_first
            ):
                raise CacheError(
                    f"{self.path / shard['file']}: entry {i} does not fit examples_per_shard="
                    f"{eps} and num_examples={total} of the manifest"
                )
            expected_first += shard["num_examples"]
        if m["complete"]:
            tokens = sum(shard["num_tokens"] for shard in m["shards"])
            if expected_first != total or len(m["shards"]) != m["num_shards"]:
                raise CacheError(
                    f"{self.path}: {len(m['shards'])} shards cover {expected_first} examples, "
                    f"manifest says {m['num_shards']} shards and {total} examples"
                )
            if tokens != m["num_tokens"]:
                raise CacheError(
                    f"{self.path}: shards hold {tokens} tokens, manifest says {m['num_tokens']}"
                )

    def _check_size(self, s: int) -> None:
        shard = self._shards[s]
        path = self.path / shard["file"]
        if not path.is_file():
            raise CacheError(f"{path}: shard file is missing")
        size = path.stat().st_size
        if size != shard["bytes"]:
            raise CacheError(
                f"{path}: shard is truncated or altered "
                f"({size} bytes, manifest says {shard['bytes']})"
            )

    def _check_hash(self, s: int) -> None:
        shard = self._shards[s]
        path = self.path / shard["file"]
        if sha256_file(path) != shard["sha256"]:
            raise CacheError(f"{path}: shard is corrupt (sha256 does not match the manifest)")
        self._verified.add(s)

    def verify(self) -> None:
        """Check every shard against the manifest, reading all of it.

        Per shard: size and sha256; tensor names, shapes and dtypes against ``k`` and the
        dtype fields; offsets against the example and token counts; the example hashes
        against the shard's ``data_sha256``; indices and token ids within the vocabulary;
        log-probabilities not NaN, at most 0 and sorted in decreasing order. For a complete
        cache, the example hashes of all shards against the manifest's ``data_sha256``.

        Raises
        ------
        CacheError
            Naming the first shard at fault and the problem.
        """
        h = hashlib.sha256()
        for s in range(len(self._shards)):
            self._check_size(s)
            self._check_hash(s)
            handle = self._open(s)
            self._check_values(s, handle)
            h.update(self._digests_of(s))
        if self.manifest["complete"] and h.hexdigest() != self.manifest["data_sha256"]:
            raise CacheError(
                f"{self.path}: the shards' example hashes do not give the manifest's data_sha256"
            )

    def _check_values(self, s: int, handle: Any) -> None:
        path = self.path / self._shards[s]["file"]
        m = self.manifest
        bounds = {INDICES: m["vocab_size"], TOKEN_IDS: max(m["vocab_size"], m["tokenizer_size"])}
        if m["encoding"] == "compact":
            del bounds[INDICES]  # decoded and checked by _check_compact
        for name, bound in bounds.items():
            values = handle.get_tensor(name).long()
            if values.numel() and (int(values.min()) < 0 or int(values.max()) >= bound):
                raise CacheError(
                    f"{path}: {name} outside [0, {bound}): the manifest's vocab_size or "
                    "tokenizer_size does not describe this shard"
                )
        if handle.get_tensor(PROMPT_LENGTHS).lt(0).any():
            raise CacheError(f"{path}: negative prompt lengths")
        if self.manifest["encoding"] == "compact":
            self._check_compact(s)
            return
        rows = handle.get_slice(LOGPROBS)
        total, k = rows.get_shape()
        step = max(1, _CHECK_ELEMENTS // max(k, 1))
        for lo in range(0, total, step):
            block = rows[lo : lo + step].float()
            if block.isnan().any() or (block > 1e-3).any():
                raise CacheError(f"{path}: log-probabilities are NaN or positive")
            if (block[:, 1:] > block[:, :-1]).any():
                raise CacheError(f"{path}: log-probabilities are not sorted in decreasing order")

    def _check_compact(self, s: int) -> None:
        """Decode every example of a compact shard: ids in range, values sorted and <= 0."""
        path = self.path / self._shards[s]["file"]
        first, vocab = self._starts[s], self.manifest["vocab_size"]
        for local in range(self._shards[s]["num_examples"]):
            top = self[first + local]
            ids, values = top.indices, top.logprobs
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
                raise CacheError(f"{path}: example {first + local} has ids outside [0, {vocab})")
            if values.isnan().any() or (values > 1e-3).any():
                raise CacheError(f"{path}: log-probabilities are NaN or positive")
            if (values[:, 1:] > values[:, :-1]).any():
                raise CacheError(f"{path}: log-probabilities are not sorted in decreasing order")

    def _digests_of(self, s: int) -> bytes:
        """Shard ``s``'s example hashes, checked against its ``data_sha256`` entry."""
        shard = self._shards[s]
        path = self.path / shard["file"]
        self._check_size(s)
        digests = read_example_digests(path)
        if len(digests) != DIGEST_BYTES * shard["num_examples"]:
            raise CacheError(f"{path}: {EXAMPLE_SHA256} does not have one row per example")
        if hashlib.sha256(digests).hexdigest() != shard["data_sha256"]:
            raise CacheError(
                f"{path}: example hashes do not match the manifest's data_sha256 for this shard"
            )
        return digests

    def example_hashes(self) -> np.ndarray:
        """Content hash of every example, ``(N, 32)`` uint8 (raw sha256 digests).

        Row ``i`` is the digest of :func:`fusion.cache.example_sha256` of example ``i``.
        Only the hashes are read (32 bytes per example), each shard's checked against its
        manifest entry, so this is cheap even for a cache of hundreds of GB.
        """
        if self._digests is None:
            parts = [self._digests_of(s) for s in range(len(self._shards))]
            flat = np.frombuffer(b"".join(parts), dtype=np.uint8)
            self._digests = flat.reshape(-1, DIGEST_BYTES)
        return self._digests

    def example_sha256(self, i: int) -> str:
        """Content hash (64 hex digits) of the example at row ``i``."""
        s, local = self._locate(i)
        return self.example_hashes()[self._starts[s] + local].tobytes().hex()

    # -- shard access -----------------------------------------------------------

    def _open(self, s: int) -> Any:
        if s in self._handles:
            return self._handles[s]
        from safetensors import safe_open

        self._check_size(s)
        if self.verify_mode == "lazy" and s not in self._verified:
            self._check_hash(s)
        shard = self._shards[s]
        path = self.path / shard["file"]
        try:
            handle = safe_open(str(path), framework="pt")
            layout = {
                name: (handle.get_slice(name).get_shape(), handle.get_slice(name).get_dtype())
                for name in handle.keys()
            }
            offsets = handle.get_tensor(OFFSETS).numpy() if OFFSETS in layout else None
            blobs = None
            if PAYLOAD_OFFSETS in layout:
                blobs = handle.get_tensor(PAYLOAD_OFFSETS).numpy()
        except Exception as err:  # safetensors raises its own error types for bad files
            raise CacheError(f"{path}: unreadable shard ({err})") from None
        problems = _content_problems(self.manifest, shard, layout, offsets, blobs)
        if problems:
            raise CacheError(f"{path}: shard contents do not match the manifest ({problems})")
        self._handles[s], self._offsets[s] = handle, offsets
        if blobs is not None:
            self._blobs[s] = blobs
        return handle

    def _locate(self, i: int) -> tuple[int, int]:
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise TypeError(f"cache indices must be integers, got {type(i).__name__}")
        n = len(self)
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"example {i} out of range for a cache of {n} examples")
        s = bisect.bisect_right(self._starts, j) - 1
        return s, j - self._starts[s]

    def _rows(self, i: int, names: Sequence[str]) -> list[torch.Tensor]:
        s, local = self._locate(i)
        handle = self._open(s)
        lo, hi = (int(x) for x in self._offsets[s][local : local + 2])
        out = []
        for name in names:
            if name == TOKEN_IDS:  # int32 whatever width is stored
                out.append(handle.get_slice(name)[lo:hi].to(torch.int32))
            elif name in (LOGPROBS, INDICES) and s in self._blobs:
                top = self._decoded(s, local, hi - lo)
                out.append(top.logprobs if name == LOGPROBS else top.indices)
            else:
                out.append(handle.get_slice(name)[lo:hi])
        return out

    def _decoded(self, s: int, local: int, rows: int) -> TopK:
        """The rows of example ``local`` of compact shard ``s``, decoded."""
        start, end = (int(x) for x in self._blobs[s][local : local + 2])
        blob = self._handles[s].get_slice(PAYLOAD)[start:end].numpy().tobytes()
        try:
            values, ids = decode_rows(blob, rows, self.manifest["k"], self.manifest["vocab_size"])
        except ValueError as err:
            path = self.path / self._shards[s]["file"]
            raise CacheError(f"{path}: example {self._starts[s] + local}: {err}") from None
        return TopK(values, ids)

    # -- public reads ---------------------------------------------------------

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> TopK:
        """Teacher top-k of example ``i``: ``TopK(logprobs (T_i, k), indices (T_i, k))``."""
        logprobs, indices = self._rows(i, (LOGPROBS, INDICES))
        return TopK(logprobs, indices)

    def token_ids(self, i: int) -> torch.Tensor:
        """The teacher's ``(T_i,)`` int32 response token ids of example ``i``."""
        return self._rows(i, (TOKEN_IDS,))[0]

    def example(self, i: int) -> CacheExample:
        """Top-k, token ids and prompt length of example ``i``."""
        logprobs, indices, token_ids = self._rows(i, (LOGPROBS, INDICES, TOKEN_IDS))
        s, local = self._locate(i)
        prompt_length = int(self._handles[s].get_slice(PROMPT_LENGTHS)[local : local + 1][0])
        return CacheExample(TopK(logprobs, indices), token_ids, prompt_length)

    def lengths(self) -> np.ndarray:
        """``T_i`` of every example as an int64 array.

        Opens every shard (and so, in lazy mode, hashes each one not yet checked).
        """
        parts = []
        for s in range(len(self._shards)):
            self._open(s)
            parts.append(np.diff(self._offsets[s]))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    @property
    def k(self) -> int:
        """Entries per token."""
        return self.manifest["k"]

    @property
    def vocab_size(self) -> int:
        """Size of the teacher's logit vector (the range of ``indices``)."""
        return self.manifest["vocab_size"]

    @property
    def temperature(self) -> float:
        """The ``tau`` of ``log_softmax(z / tau)``."""
        return float(self.manifest["temperature"])

    def close(self) -> None:
        """Drop the memory maps (they are reopened, without rehashing, on the next read)."""
        self._handles.clear()
        self._offsets.clear()
        self._blobs.clear()

    def __enter__(self) -> TeacherCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps cannot be pickled (DataLoader workers with "spawn"); reopen lazily.
        state = self.__dict__.copy()
        state["_handles"], state["_offsets"], state["_blobs"] = {}, {}, {}
        return state

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"TeacherCache({str(self.path)!r}, examples={len(self)}, k={m['k']}, "
            f"teacher={m['teacher']!r})"
        )


def _content_problems(
    manifest: Mapping[str, Any],
    shard: Mapping[str, Any],
    layout: Mapping[str, tuple[list[int], str]],
    offsets: np.ndarray | None,
    blobs: np.ndarray | None = None,
) -> str:
    """What differs between a shard's tensors and what its manifest entry implies."""
    n, t, k = shard["num_examples"], shard["num_tokens"], manifest["k"]
    if manifest["encoding"] == "compact":
        size = int(blobs[-1]) if blobs is not None and len(blobs) else -1
        rows = {PAYLOAD: ([size], "uint8"), PAYLOAD_OFFSETS: ([n + 1], "int64")}
    else:
        rows = {
            LOGPROBS: ([t, k], manifest["logprobs_dtype"]),
            INDICES: ([t, k], manifest["indices_dtype"]),
        }
    expected = {
        **rows,
        TOKEN_IDS: ([t], manifest["token_ids_dtype"]),
        OFFSETS: ([n + 1], manifest["offsets_dtype"]),
        PROMPT_LENGTHS: ([n], "int32"),
        EXAMPLE_SHA256: ([n, DIGEST_BYTES], "uint8"),
    }
    problems = []
    for name, (shape, dtype) in expected.items():
        if name not in layout:
            problems.append(f"no {name} tensor")
        elif layout[name] != (shape, _TAGS.get(dtype, dtype)):
            got_shape, got_dtype = layout[name]
            problems.append(f"{name} is {got_dtype} {got_shape}, expected {dtype} {shape}")
    if offsets is not None and not problems:
        if not (offsets[0] == 0 and offsets[-1] == t and bool(np.all(np.diff(offsets) >= 0))):
            problems.append(f"offsets do not run from 0 to {t} tokens")
    if blobs is not None and not problems:
        if not (blobs[0] == 0 and bool(np.all(np.diff(blobs) >= 0))):
            problems.append("payload offsets do not increase from 0")
    if not problems:
        return ""
    return "; ".join(problems) + f" (the manifest says k={k}, {n} examples, {t} tokens)"


def collate(
    examples: Sequence[TopK | CacheExample],
    *,
    pad_to: int | None = None,
    pad_logprob: float = 0.0,
    pad_index: int = 0,
    pad_token_id: int = 0,
) -> Collated:
    """Right-pad cached examples into a batch.

    Parameters
    ----------
    examples : sequence of TopK or CacheExample
        Per-example ``(T_i, k)`` top-k (``cache[i]``), or ``cache.example(i)`` to also
        batch the token ids. All must share ``k``.
    pad_to : int or None
        Batch length ``T``; default the longest example. Must be >= every ``T_i``.
    pad_logprob, pad_index, pad_token_id : float, int, int
        Fill values at padded positions. They are finite on purpose (``-inf`` turns a
        masked ``p * log p`` into NaN); losses must use ``mask``.

    Returns
    -------
    Collated
        ``topk`` with ``(B, T, k)`` logprobs (cache dtype) and int64 indices (what
        ``torch.gather`` wants), ``mask`` ``(B, T)`` bool, and ``token_ids`` ``(B, T)``
        int64 or None.
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    with_ids = all(isinstance(e, CacheExample) for e in examples)
    tops = [e.topk if isinstance(e, CacheExample) else TopK(*e) for e in examples]
    ks = {t.logprobs.shape[-1] for t in tops}
    if len(ks) != 1:
        raise ValueError(f"examples have different k: {sorted(ks)}")
    longest = max(t.logprobs.shape[0] for t in tops)
    length = longest if pad_to is None else pad_to
    if length < longest:
        raise ValueError(f"pad_to={pad_to} is shorter than the longest example ({longest})")
    batch, k = len(tops), ks.pop()
    logprobs = torch.full((batch, length, k), pad_logprob, dtype=tops[0].logprobs.dtype)
    indices = torch.full((batch, length, k), pad_index, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.bool)
    token_ids = torch.full((batch, length), pad_token_id, dtype=torch.long) if with_ids else None
    for b, t in enumerate(tops):
        n = t.logprobs.shape[0]
        logprobs[b, :n], indices[b, :n], mask[b, :n] = t.logprobs, t.indices, True
        if token_ids is not None:
            token_ids[b, :n] = examples[b].token_ids
    return Collated(TopK(logprobs, indices), mask, token_ids)
