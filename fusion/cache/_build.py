"""Writing a teacher cache: run the teacher once, keep its top-k per target token.

One process writes every shard in order (``manifest.json`` rewritten after each); rank
``r`` of a sharded build over ``W`` ranks writes the shards ``s`` with ``s % W == r`` and
its own progress record, and the last rank to finish merges (see ``_progress``).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion.cache._compact import encode_rows, index_dtype
from fusion.cache._data import (
    DataSource,
    Encoded,
    Encoder,
    encoding_stats,
    example_digest,
    inputs_digest,
    read_examples,
    tokenizer_sha256,
    warn_truncation,
)
from fusion.cache._format import (
    COMPACT_DTYPE,
    DIGEST_BYTES,
    DTYPES,
    EXAMPLE_SHA256,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_BYTES,
    INDICES,
    LOGPROB_DTYPES,
    LOGPROBS,
    OFFSETS,
    PAYLOAD,
    PAYLOAD_OFFSETS,
    PROMPT_LENGTHS,
    TOKEN_IDS,
    TRUNCATIONS,
    CacheError,
    sha256_bytes,
    shard_name,
    write_manifest,
    write_record,
)
from fusion.cache._progress import contiguous, merge_shards, precheck, prepare
from gwlite.atomic import atomic_write_bytes

# Rows of fp32 log-softmax computed at once: bounds the extra memory to ~64 MiB whatever V is.
_SOFTMAX_ELEMENTS = 1 << 24
_ENCODE_CHUNK = 1024


def _check_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_options(
    k: Any,
    temperature: Any,
    batch_size: Any,
    max_length: Any,
    dtype: Any,
    eps: Any,
    truncation: Any,
    rank: Any,
    world_size: Any,
    overwrite: bool,
) -> None:
    _check_int("k", k)
    _check_int("batch_size", batch_size)
    _check_int("examples_per_shard", eps)
    if max_length is not None:
        _check_int("max_length", max_length, minimum=2)
    if (
        not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    _check_int("world_size", world_size)
    _check_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise ValueError(f"rank must be < world_size = {world_size}, got {rank}")
    if overwrite and world_size > 1:
        raise ValueError(
            "overwrite=True (--overwrite) cannot be combined with a sharded build: every rank "
            "would delete the others' shards. Delete the directory first, then start the ranks"
        )


def _default_device(rank: int, world_size: int) -> str:
    if not torch.cuda.is_available():
        return "cpu"
    if world_size == 1:
        return "cuda"
    local = int(os.environ.get("LOCAL_RANK", rank))  # set by torchrun
    return f"cuda:{local % torch.cuda.device_count()}"


def _load_teacher(teacher: Any, tokenizer: Any, device: Any, model_dtype: Any):
    """Return ``(model, tokenizer, name)``; loads both from disk when given a path."""
    if isinstance(teacher, str | os.PathLike):
        from transformers import AutoTokenizer

        from fusion.models import load_causal_lm

        path = Path(teacher)
        if not path.exists():
            raise FileNotFoundError(f"teacher checkpoint not found: {path}")
        model = load_causal_lm(path, dtype=model_dtype or "auto", device=device)
        if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer or path)
        return model, tokenizer, str(teacher)
    if not isinstance(teacher, torch.nn.Module):
        raise TypeError(
            f"teacher must be a path or a torch.nn.Module, got {type(teacher).__name__}"
        )
    if tokenizer is None:
        raise ValueError("a tokenizer is required when the teacher is a model object")
    if isinstance(tokenizer, str | os.PathLike):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    name = getattr(teacher, "name_or_path", "") or type(teacher).__name__
    return teacher, tokenizer, name


def teacher_fingerprint(model: torch.nn.Module) -> str:
    """Cheap identity of a model's weights: names, shapes, dtypes and leading values.

    Hashing every weight of a 14B model would take minutes; the first 64 values of each
    parameter tell two checkpoints (or two random initialisations) apart just as well in
    practice. Parameters on the ``meta`` device (offloaded) contribute their shape only.
    """
    h = hashlib.sha256(type(model).__name__.encode())
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        if p.device.type != "meta":
            h.update(p.detach().reshape(-1)[:64].float().cpu().numpy().tobytes())
    return h.hexdigest()


def _vocab_size(model: torch.nn.Module, tokenizer: Any) -> int:
    # The logits' width can exceed len(tokenizer) (embeddings padded to a multiple of 64).
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    config_size = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(config_size) if config_size else len(tokenizer)


def default_max_length(model: torch.nn.Module, tokenizer: Any) -> int | None:
    """The longest input a model takes: its config's position count (else the tokenizer's)."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 1:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (int(1e30)).
    return value if isinstance(value, int) and 1 < value < 10**7 else None


def _scan(encoder: Encoder, examples: Sequence[Any]):
    """First pass over all data: per-example target counts, stats and the inputs hash."""
    lengths = np.zeros(len(examples), dtype=np.int64)
    stats = dict.fromkeys(encoding_stats([]), 0)
    h = hashlib.sha256()
    for lo in range(0, len(examples), _ENCODE_CHUNK):
        encoded = encoder.encode(examples[lo : lo + _ENCODE_CHUNK], first_index=lo)
        inputs_digest(encoded, h)
        lengths[lo : lo + len(encoded)] = [e.num_targets for e in encoded]
        for key, value in encoding_stats(encoded).items():
            stats[key] += value
    return lengths, stats, h.hexdigest()


def _software() -> dict[str, str]:
    import safetensors

    versions = {"torch": torch.__version__, "safetensors": safetensors.__version__}
    with suppress(ImportError):
        import transformers

        versions["transformers"] = transformers.__version__
    return versions


def topk_rows(rows: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of log_softmax(rows / tau), in fp32 and in chunks of rows to bound memory."""
    step = max(1, _SOFTMAX_ELEMENTS // max(1, rows.shape[-1]))
    values, indices = [], []
    for lo in range(0, rows.shape[0], step):
        logp = torch.log_softmax(rows[lo : lo + step].float() / temperature, dim=-1)
        top = torch.topk(logp, k, dim=-1, sorted=True)
        values.append(top.values)
        indices.append(top.indices)
    return torch.cat(values), torch.cat(indices)


def target_logits(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    keep: torch.Tensor,
    vocab_size: int,
    response_only_head: bool,
) -> torch.Tensor:
    """``(R, V)`` logits at the positions marked in ``keep``, in row-major order."""
    if not response_only_head:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        if logits.shape[-1] != vocab_size:
            raise CacheError(
                f"teacher returned {logits.shape[-1]} logits per position, expected {vocab_size}"
            )
        return logits[keep]
    # Hugging Face causal LMs apply their head (and any soft-capping) to the hidden states
    # selected by a boolean (B, L) `logits_to_keep`, returning them flattened to (R, V).
    try:
        rows = model(
            input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=keep
        ).logits
    except (TypeError, IndexError, RuntimeError) as err:
        rows, reason = None, f"{type(err).__name__}: {err}"
    else:
        reason = f"got logits of shape {tuple(rows.shape)}"
    expected = (int(keep.sum()), vocab_size)
    if rows is None or tuple(rows.shape) != expected:
        raise CacheError(
            f"response_only_head: the teacher ({type(model).__name__}) does not return the "
            f"{expected} logits of a boolean logits_to_keep mask ({reason}); Hugging Face "
            "causal LMs do from transformers 5. Build without response_only_head "
            "(--response-only-head)"
        )
    return rows


def _forward_topk(
    model: torch.nn.Module,
    batch: Sequence[Encoded],
    *,
    k: int,
    temperature: float,
    vocab_size: int,
    pad_id: int,
    response_only_head: bool,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One teacher forward pass over a right-padded batch; top-k per target token.

    Right padding keeps every real token at the positions it has when run alone, and
    the causal mask hides the padding that follows it, so an example's result does not
    depend on the batch it lands in (up to floating point reduction order).
    """
    device = next(model.parameters()).device
    length = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    keep = torch.zeros((len(batch), length), dtype=torch.bool)
    for b, e in enumerate(batch):
        ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[b, : len(e.input_ids)] = 1
        # Standard next-token alignment: the logits at position t - 1 predict the token at t.
        for lo, hi in e.spans:
            keep[b, lo - 1 : hi - 1] = True
    rows = target_logits(
        model, ids.to(device), mask.to(device), keep.to(device), vocab_size, response_only_head
    )
    values, indices = topk_rows(rows, k, temperature)
    sizes = [e.num_targets for e in batch]
    return list(zip(values.cpu().split(sizes), indices.cpu().split(sizes)))


def _shard_bytes(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    digests: Sequence[bytes],
    *,
    batch_size: int,
    layout: _Layout,
    on_batch: Callable[[int], None],
    **forward: Any,
) -> tuple[bytes, int]:
    """Compute one shard and serialise it; returns ``(safetensors bytes, token count)``."""
    from safetensors.torch import save

    k = forward["k"]
    results: list[tuple[torch.Tensor, torch.Tensor]] = [
        (torch.empty((0, k)), torch.empty((0, k), dtype=torch.long)) for _ in encoded
    ]
    # Longest first within the shard: little padding, and a deterministic batch plan that a
    # resumed run reproduces because batches never cross a shard boundary.
    todo = sorted(
        (i for i, e in enumerate(encoded) if e.num_targets),
        key=lambda i: (-len(encoded[i].input_ids), i),
    )
    for lo in range(0, len(todo), batch_size):
        batch = todo[lo : lo + batch_size]
        for i, result in zip(batch, _forward_topk(model, [encoded[i] for i in batch], **forward)):
            results[i] = result
        on_batch(sum(encoded[i].num_targets for i in batch))
    sizes = [e.num_targets for e in encoded]
    targets = [e.input_ids[t] for e in encoded for t in e.target_positions()]
    tensors = {
        **layout.rows(results),
        TOKEN_IDS: torch.from_numpy(np.asarray(targets, dtype=layout.token_ids).reshape(-1)),
        OFFSETS: torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.int64),
        PROMPT_LENGTHS: torch.tensor([e.prompt_length for e in encoded], dtype=torch.int32),
        EXAMPLE_SHA256: torch.frombuffer(bytearray(b"".join(digests)), dtype=torch.uint8).reshape(
            len(encoded), -1
        ),
    }
    # A single metadata key: safetensors writes a multi-key metadata map in a random
    # order, which would break the byte-identical guarantee.
    return save(tensors, metadata={"format": FORMAT_NAME}), int(sum(sizes))


@dataclass(frozen=True)
class _Layout:
    """How a shard stores its rows: the encoding, and the dtypes it writes."""

    encoding: str
    logprobs: str  # torch dtype name of dense log-probabilities (float32 when compact)
    indices: str  # numpy dtype name of the stored ids
    token_ids: str
    vocab_size: int

    @classmethod
    def of(cls, dtype: str, vocab_size: int, token_bound: int) -> _Layout:
        if dtype == COMPACT_DTYPE:
            ids, tokens = index_dtype(vocab_size).name, index_dtype(token_bound).name
            return cls("compact", "float32", ids, tokens, vocab_size)
        return cls("dense", LOGPROB_DTYPES[dtype][0], "int32", "int32", vocab_size)

    def rows(self, results: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        """The shard's row tensors: dense logprobs and ids, or the compact blobs."""
        if self.encoding == "dense":
            out_dtype = getattr(torch, self.logprobs)
            return {
                LOGPROBS: torch.cat([v for v, _ in results]).to(out_dtype).contiguous(),
                INDICES: torch.cat([ix for _, ix in results]).to(torch.int32).contiguous(),
            }
        blobs = [encode_rows(v.float().numpy(), ix.numpy(), self.vocab_size) for v, ix in results]
        starts = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        payload = np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()
        return {PAYLOAD: torch.from_numpy(payload), PAYLOAD_OFFSETS: torch.from_numpy(starts)}


def estimate_bytes(num_tokens: int, num_examples: int, k: int, dtype: str = "fp16") -> int:
    """Tensor bytes of a cache, headers excluded.

    Per target token: ``k`` logprobs (2 bytes) + ``k`` int32 indices + one int32 token id;
    per example: one int64 offset, one int32 prompt length and a 32-byte content hash
    (plus one offset per shard). For ``dtype="q8"`` (compact) the size *before* zlib
    with 2-byte ids and token ids: ``k`` codes + ``k`` ids + 8 bytes of row scale + the
    token id, per token; zlib then typically saves a third (docs/benchmarks/fusion_features.md).

    Parameters
    ----------
    num_tokens, num_examples : int
        Target tokens (with a prediction) and examples.
    k : int
        Entries kept per token.
    dtype : {"fp16", "bf16", "q8"}
        Logprob dtype (fp16 and bf16 take 2 bytes; q8 is the compact encoding).

    Returns
    -------
    int

    Examples
    --------
    >>> estimate_bytes(1_000_000, 1000, k=50) / 1e6   # about 304 bytes per token
    304.044
    """
    if dtype == COMPACT_DTYPE:
        per_token = k * (1 + 2) + 8 + 2
        return num_tokens * per_token + num_examples * (8 + 8 + 4 + DIGEST_BYTES)
    per_token = k * (LOGPROB_DTYPES[dtype][2] + INDEX_BYTES) + INDEX_BYTES
    return num_tokens * per_token + num_examples * (8 + 4 + DIGEST_BYTES)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def build(
    teacher: Any,
    tokenizer: Any,
    data: DataSource,
    out_dir: str | os.PathLike,
    *,
    k: int = 50,
    temperature: float = 1.0,
    batch_size: int = 8,
    max_length: int | None = None,
    truncation: str = "response",
    dtype: str = "fp16",
    examples_per_shard: int = 1024,
    add_eos: bool = True,
    on_mismatch: str = "split",
    response_only_head: bool = False,
    device: str | None = None,
    model_dtype: str | None = None,
    teacher_name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    r"""Run a causal LM once over examples and cache its top-k predictions of the targets.

    For every target token (the response of a pair, the assistant turns of a
    conversation) the cache holds the teacher's prediction *of* that token, i.e. the
    top-k of ``log_softmax(z / temperature)`` where ``z`` are the logits at the previous
    position, and every row carries the content hash of its example. Shards are written
    atomically and the progress is recorded after each one, so calling ``build`` again
    with the same arguments resumes an interrupted run and produces the same bytes as an
    uninterrupted one.

    Parameters
    ----------
    teacher : str, path-like or transformers.PreTrainedModel
        A local checkpoint directory (loaded with ``AutoModelForCausalLM``) or a model
        object, used as is on its current device.
    tokenizer : transformers.PreTrainedTokenizerBase, str, path-like or None
        The teacher's tokenizer, or where to load it from; ``None`` loads it from
        ``teacher`` when that is a path.
    data : str, path-like or iterable of mapping
        JSONL file (or in-memory objects) with string fields ``prompt`` and ``response``,
        or a ``messages`` list of ``{"role", "content"}`` (needs a chat template).
    out_dir : str or path-like
        Cache directory: created if missing, resumed if it holds a cache.
    k : int
        Entries kept per token, ``1 <= k <= vocab_size``.
    temperature : float
        Softmax temperature ``tau > 0``.
    batch_size : int
        Examples per teacher forward pass. May change between a run and its resumption.
    max_length : int or None
        Longest teacher input. ``None`` uses the model's maximum position count.
    truncation : {"response", "prompt_left"}
        How longer inputs are cut: the end of the response (default), or the start of the
        prompt first (see :class:`fusion.cache.Encoder`). A warning gives the counts.
    dtype : {"fp16", "bf16", "q8"}
        Storage of the log-probabilities. ``"q8"``: the compact encoding (format 3,
        docs/guide/cache.md): 8-bit log-probabilities on a per-row grid, ids
        delta coded in the narrowest unsigned type the vocabulary allows, zlib per example;
        each log-probability is within :math:`(\ell_{(1)} - \ell_{(k)})/510` nats of the
        exact value (the largest is exact, in float32), ids are exact, and rows are read
        back as float32. About 3x smaller than fp16 at ``k = 128`` (see
        docs/benchmarks/fusion_features.md).
    examples_per_shard : int
        Examples per shard file (the last shard may hold fewer).
    add_eos : bool
        Without a chat template, append EOS after the response so the teacher's
        end-of-sequence prediction is cached too.
    on_mismatch : {"split", "error"}
        What to do when a target boundary falls inside a token of the whole text
        (see docs/guide/cache.md).
    response_only_head : bool
        Apply the teacher's output layer only at the positions that predict a target
        (``logits_to_keep``), instead of at every position: the ``(batch, length,
        vocab)`` logits tensor is never formed. Same values up to floating point rounding;
        may change between a run and its resumption, like ``batch_size``.
    device : str or None
        Device for a teacher loaded from a path (default: CUDA if available; with several
        ranks, GPU ``LOCAL_RANK``).
    model_dtype : str or None
        ``dtype`` passed to ``from_pretrained`` for a teacher loaded from a path
        (default ``"auto"``: the checkpoint's own).
    teacher_name : str or None
        Name recorded in the manifest (default: the path or the model's ``name_or_path``).
    overwrite : bool
        Delete an existing cache in ``out_dir`` instead of resuming it (single process
        only).
    progress : bool
        Print the size estimate and show a tqdm progress bar.
    rank, world_size : int
        Sharded build: this process writes the shards ``s`` with ``s % world_size ==
        rank``; every rank runs the same call with its own ``rank``. The last rank to
        finish writes the manifest (or :func:`fusion.cache.merge` does).

    Returns
    -------
    dict
        The complete manifest (also in ``out_dir/manifest.json``); for a rank whose peers
        are still working, its own progress record (``complete`` true, ``rank`` and
        ``world_size`` set, only its shards listed).

    Raises
    ------
    FileNotFoundError
        If the data file or teacher checkpoint does not exist.
    ValueError
        On bad options, bad data lines (naming the line) or ``k`` above the vocabulary.
    CacheError
        If ``out_dir`` holds a cache built with other options, a damaged completed
        shard, or unrelated files (checked before the teacher is loaded).
    """
    _check_options(
        k,
        temperature,
        batch_size,
        max_length,
        dtype,
        examples_per_shard,
        truncation,
        rank,
        world_size,
        overwrite,
    )
    examples, data_path = read_examples(data)
    digests = [example_digest(e) for e in examples]
    data_hash = sha256_bytes(b"".join(digests))
    out = Path(out_dir)
    known = {"k": k, "temperature": float(temperature), "data_sha256": data_hash}
    known |= {
        "encoding": "compact" if dtype == COMPACT_DTYPE else "dense",
        "logprobs_dtype": "float32" if dtype == COMPACT_DTYPE else LOGPROB_DTYPES[dtype][0],
        "examples_per_shard": examples_per_shard,
        "truncation": truncation,
    }
    precheck(out, known, overwrite)  # before the teacher: loading a 14B model takes minutes
    model, tokenizer, name = _load_teacher(
        teacher, tokenizer, device or _default_device(rank, world_size), model_dtype
    )
    vocab_size = _vocab_size(model, tokenizer)
    if k > vocab_size:
        raise ValueError(f"k = {k} exceeds the teacher's vocabulary size {vocab_size}")
    if max_length is None:
        max_length = default_max_length(model, tokenizer)
    encoder = Encoder(
        tokenizer,
        max_length=max_length,
        add_eos=add_eos,
        on_mismatch=on_mismatch,
        truncation=truncation,
    )
    lengths, stats, inputs_sha = _scan(encoder, examples)
    if rank == 0:
        warn_truncation(stats, len(examples), max_length, truncation, "fusion.cache")
    chat_template = getattr(tokenizer, "chat_template", None) if encoder.chat else None
    layout = _Layout.of(dtype, vocab_size, max(vocab_size, len(tokenizer)))
    header: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "encoding": layout.encoding,
        "teacher": teacher_name or name,
        "teacher_fingerprint": teacher_fingerprint(model),
        "teacher_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "tokenizer_sha256": tokenizer_sha256(tokenizer),
        "tokenizer_size": len(tokenizer),
        "chat_template_sha256": sha256_bytes(str(chat_template).encode())
        if chat_template
        else None,
        "template": encoder.template,
        "add_eos": bool(add_eos and not encoder.chat),
        "vocab_size": vocab_size,
        "k": k,
        "temperature": float(temperature),
        "logprobs_dtype": layout.logprobs,
        "indices_dtype": layout.indices,
        "token_ids_dtype": layout.token_ids,
        "offsets_dtype": "int64",
        "max_length": max_length,
        "truncation": truncation,
        "examples_per_shard": examples_per_shard,
        "data_path": data_path,
        "data_sha256": data_hash,
        "inputs_sha256": inputs_sha,
        "num_examples": len(examples),
        "num_tokens": int(lengths.sum()),
        "num_shards": -(-len(examples) // examples_per_shard),
        "stats": stats,
        "software": _software(),
    }
    job = _Job(
        model, encoder, examples, digests, lengths, header, out, batch_size, response_only_head
    )
    mine = range(rank, header["num_shards"], world_size)
    done = prepare(out, header, overwrite, set(mine), rank, world_size)
    if progress and rank == 0:
        _announce(header, out, dtype, len(done), world_size)
    if world_size == 1:
        return _run_single(job, done, progress)
    return _run_rank(job, done, mine, rank, world_size, progress)


@dataclass
class _Job:
    """Everything needed to compute and write any shard of one build."""

    model: torch.nn.Module
    encoder: Encoder
    examples: Sequence[Any]
    digests: Sequence[bytes]
    lengths: np.ndarray
    header: dict[str, Any]
    out: Path
    batch_size: int
    response_only_head: bool = False
    on_batch: Callable[[int], None] = lambda n: None

    def _range(self, s: int) -> slice:
        eps = self.header["examples_per_shard"]
        return slice(s * eps, (s + 1) * eps)

    def tokens(self, shards: Sequence[int]) -> int:
        """Target tokens of the given shards."""
        return int(sum(self.lengths[self._range(s)].sum() for s in shards))

    def write(self, s: int) -> dict[str, Any]:
        """Compute shard ``s``, write it atomically, return its manifest entry."""
        rows = self._range(s)
        examples, digests = self.examples[rows], self.digests[rows]
        encoded = self.encoder.encode(examples, first_index=rows.start)
        data, n_tokens = _shard_bytes(
            self.model,
            encoded,
            digests,
            batch_size=self.batch_size,
            layout=_Layout(
                self.header["encoding"],
                self.header["logprobs_dtype"],
                self.header["indices_dtype"],
                self.header["token_ids_dtype"],
                self.header["vocab_size"],
            ),
            on_batch=self.on_batch,
            k=self.header["k"],
            temperature=self.header["temperature"],
            vocab_size=self.header["vocab_size"],
            # any id works: padding is masked
            pad_id=self.encoder.tokenizer.pad_token_id or 0,
            response_only_head=self.response_only_head,
        )
        atomic_write_bytes(self.out / shard_name(s), data)
        return {
            "file": shard_name(s),
            "sha256": sha256_bytes(data),
            "bytes": len(data),
            "first_example": rows.start,
            "num_examples": len(examples),
            "num_tokens": n_tokens,
            "data_sha256": sha256_bytes(b"".join(digests)),
        }

    @contextmanager
    def running(self, total: int, initial: int, progress: bool, desc: str | None) -> Iterator:
        """Teacher in eval mode under inference_mode, with a progress bar over tokens."""
        from tqdm.auto import tqdm

        # every submodule's own mode, since a wrapper's may differ from what it wraps
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        bar = tqdm(total=total, initial=initial, unit="tok", disable=not progress, desc=desc)
        self.on_batch = bar.update
        try:
            with torch.inference_mode():
                yield
        finally:
            bar.close()
            for module, training in modes:
                module.training = training


def _run_single(job: _Job, done: dict[int, dict[str, Any]], progress: bool) -> dict[str, Any]:
    """Every shard in order; the manifest lists the completed prefix after each one."""
    shards = contiguous(done)
    # a finished cache stays marked complete for its readers while it is re-checked
    manifest = {**job.header, "complete": len(shards) == job.header["num_shards"]}
    manifest["shards"] = shards
    write_manifest(job.out, manifest)
    shards = range(job.header["num_shards"])
    with job.running(job.tokens(shards), job.tokens(list(done)), progress, None):
        for s in shards:
            if s not in done:
                done[s] = job.write(s)
                manifest["shards"] = contiguous(done)
                write_manifest(job.out, manifest)
    manifest["complete"] = True
    write_manifest(job.out, manifest)
    return manifest


def _run_rank(
    job: _Job,
    done: dict[int, dict[str, Any]],
    mine: Sequence[int],
    rank: int,
    world_size: int,
    progress: bool,
) -> dict[str, Any]:
    """This rank's shards, its record rewritten after each; then merge if it is the last."""
    record = {**job.header, "complete": False, "rank": rank, "world_size": world_size}
    record["shards"] = [done[j] for j in sorted(done)]
    write_record(job.out, record)
    desc = f"rank {rank}/{world_size}"
    with job.running(job.tokens(mine), job.tokens(list(done)), progress, desc):
        for s in mine:
            if s not in done:
                done[s] = job.write(s)
                record["shards"] = [done[j] for j in sorted(done)]
                write_record(job.out, record)
    record["complete"] = True
    write_record(job.out, record)
    # Written before looking: whichever rank writes its record last sees every other one.
    merged = merge_shards(job.out, job.header, strict=False)
    return merged if merged is not None else record


def merge(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write the manifest of a sharded build from its ranks' records.

    The last rank to finish does this by itself; call it when ranks ran as separate jobs
    that may not all see the end (e.g. a scheduler array), or to check a finished build.
    Every shard is checked against the size and sha256 recorded for it, the counts and
    the content hash against the build's, and the manifest is written atomically. The
    result depends only on the files, so concurrent merges write identical bytes.

    Parameters
    ----------
    out_dir : str or path-like
        The cache directory.

    Returns
    -------
    dict
        The complete manifest.

    Raises
    ------
    CacheError
        If shards are missing (naming the first, and the unfinished ranks), damaged, or
        recorded with different options.
    """
    return merge_shards(Path(out_dir), None, strict=True)


def _announce(header: dict[str, Any], out: Path, dtype: str, done: int, world_size: int) -> None:
    """Print the size estimate (to stderr: stdout stays for results)."""
    n, tokens, k = header["num_examples"], header["num_tokens"], header["k"]
    ranks = f" over {world_size} ranks" if world_size > 1 else ""
    print(
        f"fusion.cache: {n} examples, {tokens} response tokens, k={k} -> about "
        f"{_human(estimate_bytes(tokens, n, k, dtype))} in {header['num_shards']} shard(s) "
        f"at {out}{ranks}" + (f" (resuming: {done} shard(s) already done)" if done else ""),
        file=sys.stderr,
    )
    stats = header["stats"]
    if stats["truncated_examples"] or stats["boundary_fixups"]:
        print(f"fusion.cache: {stats}", file=sys.stderr)
