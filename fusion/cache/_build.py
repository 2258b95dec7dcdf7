"""Writing a teacher cache: run the teacher once, keep its top-k per response token."""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion.cache._data import (
    DataSource,
    Encoded,
    Encoder,
    data_sha256,
    inputs_digest,
    read_examples,
    tokenizer_sha256,
)
from fusion.cache._format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_BYTES,
    INDICES,
    LOGPROB_DTYPES,
    LOGPROBS,
    MANIFEST_NAME,
    OFFSETS,
    PROMPT_LENGTHS,
    RESUME_KEYS,
    SHARD_GLOB,
    TOKEN_IDS,
    CacheError,
    read_manifest,
    sha256_bytes,
    sha256_file,
    shard_name,
    write_manifest,
)
from gwlite.atomic import TEMP_SUFFIX, atomic_write_bytes

# Rows of fp32 log-softmax computed at once: bounds the extra memory to ~64 MiB whatever V is.
_SOFTMAX_ELEMENTS = 1 << 24
_ENCODE_CHUNK = 1024


def _check_options(
    k: Any, temperature: Any, batch_size: Any, max_length: Any, dtype: Any, eps: Any
):
    def positive_int(name: str, value: Any, minimum: int = 1) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

    positive_int("k", k)
    positive_int("batch_size", batch_size)
    positive_int("examples_per_shard", eps)
    if max_length is not None:
        positive_int("max_length", max_length, minimum=2)
    if (
        not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if dtype not in LOGPROB_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(LOGPROB_DTYPES)}, got {dtype!r}")


def _load_teacher(teacher: Any, tokenizer: Any, device: Any, model_dtype: Any):
    """Return ``(model, tokenizer, name)``; loads both from disk when given a path."""
    if isinstance(teacher, str | os.PathLike):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(teacher)
        if not path.exists():
            raise FileNotFoundError(f"teacher checkpoint not found: {path}")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=model_dtype or "auto")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
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


def _default_max_length(model: torch.nn.Module, tokenizer: Any) -> int | None:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 1:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (int(1e30)).
    return value if isinstance(value, int) and 1 < value < 10**7 else None


def _scan(encoder: Encoder, examples: Sequence[tuple[str, str]]):
    """First pass over all data: per-example target counts, stats and the inputs hash."""
    lengths = np.zeros(len(examples), dtype=np.int64)
    stats = {"truncated_examples": 0, "boundary_fixups": 0, "empty_examples": 0}
    h = hashlib.sha256()
    for lo in range(0, len(examples), _ENCODE_CHUNK):
        encoded = encoder.encode(examples[lo : lo + _ENCODE_CHUNK], first_index=lo)
        inputs_digest(encoded, h)
        for j, e in enumerate(encoded):
            lengths[lo + j] = e.num_targets
            stats["truncated_examples"] += e.truncated
            stats["boundary_fixups"] += e.fixup
            stats["empty_examples"] += e.num_targets == 0
    return lengths, stats, h.hexdigest()


def _software() -> dict[str, str]:
    import safetensors

    versions = {"torch": torch.__version__, "safetensors": safetensors.__version__}
    with suppress(ImportError):
        import transformers

        versions["transformers"] = transformers.__version__
    return versions


def _refuse_other_options(out: Path, old: dict[str, Any], header: dict[str, Any]) -> None:
    """Raise if ``header`` differs from an existing manifest on a key it holds."""
    diffs = [
        f"{key}: cache has {old[key]!r}, build has {header[key]!r}"
        for key in RESUME_KEYS
        if key in header and old[key] != header[key]
    ]
    if diffs:
        raise CacheError(
            f"cannot resume the cache in {out}: its manifest was built with different options "
            f"({'; '.join(diffs)}). Use another directory, or overwrite=True (--overwrite) "
            "to rebuild."
        )


def _precheck_resume(out: Path, options: dict[str, Any]) -> None:
    """Compare the options known before loading the teacher with an existing cache.

    Loading a 14B teacher takes minutes; a mistyped ``--k`` on a resume should not.
    """
    if (out / MANIFEST_NAME).is_file():
        _refuse_other_options(out, read_manifest(out), options)


def _prepare_dir(out: Path, header: dict[str, Any], overwrite: bool) -> list[dict[str, Any]]:
    """Create or reopen ``out``; return the shards a previous run already completed."""
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(f".*{TEMP_SUFFIX}"):
        leftover.unlink()  # half-written files of an interrupted run: never valid
    if overwrite:
        for old in [out / MANIFEST_NAME, *out.glob(SHARD_GLOB)]:
            with suppress(FileNotFoundError):
                old.unlink()
    if not (out / MANIFEST_NAME).exists():
        # overwrite=True leaves unrelated files alone and writes the cache next to them.
        if not overwrite and any(out.iterdir()):
            raise CacheError(
                f"{out} is not empty and has no {MANIFEST_NAME}; refusing to write a cache into "
                "it (choose an empty directory or pass overwrite=True / --overwrite)"
            )
        return []
    old = read_manifest(out)
    _refuse_other_options(out, old, header)
    for shard in old["shards"]:
        path = out / shard["file"]
        if not path.is_file() or path.stat().st_size != shard["bytes"]:
            raise CacheError(f"{path}: completed shard is missing or truncated; cannot resume")
        if sha256_file(path) != shard["sha256"]:
            raise CacheError(f"{path}: completed shard fails its sha256 check; cannot resume")
    return list(old["shards"])


def _topk_rows(rows: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of log_softmax(rows / tau), in fp32 and in chunks of rows to bound memory."""
    step = max(1, _SOFTMAX_ELEMENTS // max(1, rows.shape[-1]))
    values, indices = [], []
    for lo in range(0, rows.shape[0], step):
        logp = torch.log_softmax(rows[lo : lo + step].float() / temperature, dim=-1)
        top = torch.topk(logp, k, dim=-1, sorted=True)
        values.append(top.values)
        indices.append(top.indices)
    return torch.cat(values), torch.cat(indices)


def _forward_topk(
    model: torch.nn.Module,
    batch: Sequence[Encoded],
    *,
    k: int,
    temperature: float,
    vocab_size: int,
    pad_id: int,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One teacher forward pass over a right-padded batch; top-k per response token.

    Right padding keeps every real token at the positions it has when run alone, and
    the causal mask hides the padding that follows it, so an example's result does not
    depend on the batch it lands in (up to floating point reduction order).
    """
    device = next(model.parameters()).device
    length = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for b, e in enumerate(batch):
        ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[b, : len(e.input_ids)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
    if logits.shape[-1] != vocab_size:
        raise CacheError(
            f"teacher returned {logits.shape[-1]} logits per position, expected {vocab_size}"
        )
    # Standard next-token alignment: the logits at position t - 1 predict the token at t.
    rows = torch.cat([logits[b, e.start - 1 : len(e.input_ids) - 1] for b, e in enumerate(batch)])
    values, indices = _topk_rows(rows, k, temperature)
    sizes = [e.num_targets for e in batch]
    return list(zip(values.cpu().split(sizes), indices.cpu().split(sizes)))


def _shard_bytes(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    *,
    batch_size: int,
    out_dtype: torch.dtype,
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
    tensors = {
        LOGPROBS: torch.cat([v for v, _ in results]).to(out_dtype).contiguous(),
        INDICES: torch.cat([ix for _, ix in results]).to(torch.int32).contiguous(),
        TOKEN_IDS: torch.tensor(
            [t for e in encoded for t in e.input_ids[e.start :]], dtype=torch.int32
        ).reshape(-1),
        OFFSETS: torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.int64),
        PROMPT_LENGTHS: torch.tensor([e.prompt_length for e in encoded], dtype=torch.int32),
    }
    # A single metadata key: safetensors writes a multi-key metadata map in a random
    # order, which would break the byte-identical guarantee.
    return save(tensors, metadata={"format": FORMAT_NAME}), int(sum(sizes))


def estimate_bytes(num_tokens: int, num_examples: int, k: int, dtype: str = "fp16") -> int:
    """Tensor bytes of a cache, headers excluded.

    Per response token: ``k`` logprobs (2 bytes) + ``k`` int32 indices + one int32 token id;
    per example: one int64 offset and one int32 prompt length (plus one offset per shard).

    Parameters
    ----------
    num_tokens, num_examples : int
        Response tokens (with a prediction) and examples.
    k : int
        Entries kept per token.
    dtype : {"fp16", "bf16"}
        Logprob dtype (both take 2 bytes).

    Returns
    -------
    int
    """
    per_token = k * (LOGPROB_DTYPES[dtype][2] + INDEX_BYTES) + INDEX_BYTES
    return num_tokens * per_token + num_examples * (8 + 4)


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
    dtype: str = "fp16",
    examples_per_shard: int = 1024,
    add_eos: bool = True,
    on_mismatch: str = "split",
    device: str | None = None,
    model_dtype: str | None = None,
    teacher_name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a causal LM once over prompt/response examples and cache its top-k predictions.

    For every response token the cache holds the teacher's prediction *of* that token,
    i.e. the top-k of ``log_softmax(z / temperature)`` where ``z`` are the logits at the
    previous position. Shards are written atomically and the manifest is updated after
    each one, so calling ``build`` again with the same arguments resumes an interrupted
    run and produces the same bytes as an uninterrupted one.

    Parameters
    ----------
    teacher : str, path-like or transformers.PreTrainedModel
        A local checkpoint directory (loaded with ``AutoModelForCausalLM``) or a model
        object, used as is on its current device.
    tokenizer : transformers.PreTrainedTokenizerBase, str, path-like or None
        The teacher's tokenizer, or where to load it from; ``None`` loads it from
        ``teacher`` when that is a path.
    data : str, path-like or iterable of mapping
        JSONL file (or in-memory objects) with string fields ``prompt`` and ``response``.
    out_dir : str or path-like
        Cache directory: created if missing, resumed if it holds a manifest.
    k : int
        Entries kept per token, ``1 <= k <= vocab_size``.
    temperature : float
        Softmax temperature ``tau > 0``.
    batch_size : int
        Examples per teacher forward pass. May change between a run and its resumption.
    max_length : int or None
        Longest teacher input; longer examples lose the end of their response. ``None``
        uses the model's maximum position count.
    dtype : {"fp16", "bf16"}
        Storage dtype of the log-probabilities.
    examples_per_shard : int
        Examples per shard file (the last shard may hold fewer).
    add_eos : bool
        Without a chat template, append EOS after the response so the teacher's
        end-of-sequence prediction is cached too.
    on_mismatch : {"split", "error"}
        What to do when the prompt's tokens are not a prefix of the full text's tokens
        (see docs/guide/cache.md).
    device : str or None
        Device for a teacher loaded from a path (default: CUDA if available).
    model_dtype : str or None
        ``dtype`` passed to ``from_pretrained`` for a teacher loaded from a path
        (default ``"auto"``: the checkpoint's own).
    teacher_name : str or None
        Name recorded in the manifest (default: the path or the model's ``name_or_path``).
    overwrite : bool
        Delete an existing cache in ``out_dir`` instead of resuming it.
    progress : bool
        Print the size estimate and show a tqdm progress bar.

    Returns
    -------
    dict
        The final manifest (also in ``out_dir/manifest.json``).

    Raises
    ------
    FileNotFoundError
        If the data file or teacher checkpoint does not exist.
    ValueError
        On bad options, bad data lines (naming the line) or ``k`` above the vocabulary.
    CacheError
        If ``out_dir`` holds a cache built with other options, a damaged completed
        shard, or unrelated files.
    """
    _check_options(k, temperature, batch_size, max_length, dtype, examples_per_shard)
    examples, data_path = read_examples(data)
    data_hash = data_sha256(examples)
    out = Path(out_dir)
    if not overwrite:
        known = {"k": k, "temperature": float(temperature), "data_sha256": data_hash}
        known |= {
            "logprobs_dtype": LOGPROB_DTYPES[dtype][0],
            "examples_per_shard": examples_per_shard,
        }
        _precheck_resume(out, known)
    model, tokenizer, name = _load_teacher(teacher, tokenizer, device, model_dtype)
    vocab_size = _vocab_size(model, tokenizer)
    if k > vocab_size:
        raise ValueError(f"k = {k} exceeds the teacher's vocabulary size {vocab_size}")
    if max_length is None:
        max_length = _default_max_length(model, tokenizer)
    encoder = Encoder(tokenizer, max_length=max_length, add_eos=add_eos, on_mismatch=on_mismatch)
    lengths, stats, inputs_sha = _scan(encoder, examples)
    chat_template = getattr(tokenizer, "chat_template", None) if encoder.chat else None
    template_sha = sha256_bytes(str(chat_template).encode()) if chat_template else None

    num_shards = -(-len(examples) // examples_per_shard)
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "complete": False,
        "teacher": teacher_name or name,
        "teacher_fingerprint": teacher_fingerprint(model),
        "teacher_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "tokenizer_sha256": tokenizer_sha256(tokenizer),
        "tokenizer_size": len(tokenizer),
        "chat_template_sha256": template_sha,
        "template": encoder.template,
        "add_eos": bool(add_eos and not encoder.chat),
        "vocab_size": vocab_size,
        "k": k,
        "temperature": float(temperature),
        "logprobs_dtype": LOGPROB_DTYPES[dtype][0],
        "indices_dtype": "int32",
        "token_ids_dtype": "int32",
        "offsets_dtype": "int64",
        "max_length": max_length,
        "examples_per_shard": examples_per_shard,
        "data_path": data_path,
        "data_sha256": data_hash,
        "inputs_sha256": inputs_sha,
        "num_examples": len(examples),
        "num_tokens": int(lengths.sum()),
        "num_shards": num_shards,
        "shards": [],
        "stats": stats,
        "software": _software(),
    }
    manifest["shards"] = _prepare_dir(out, manifest, overwrite)
    write_manifest(out, manifest)

    if progress:
        _announce(manifest, out, dtype)
    _run_shards(model, encoder, examples, manifest, out, batch_size, progress)
    manifest["complete"] = True
    write_manifest(out, manifest)
    return manifest


def _announce(manifest: dict[str, Any], out: Path, dtype: str) -> None:
    """Print the size estimate (to stderr: stdout stays for results)."""
    n, tokens, k = manifest["num_examples"], manifest["num_tokens"], manifest["k"]
    done = len(manifest["shards"])
    print(
        f"fusion.cache: {n} examples, {tokens} response tokens, k={k} -> about "
        f"{_human(estimate_bytes(tokens, n, k, dtype))} in {manifest['num_shards']} shard(s) "
        f"at {out}" + (f" (resuming: {done} shard(s) already done)" if done else ""),
        file=sys.stderr,
    )
    if manifest["stats"]["truncated_examples"] or manifest["stats"]["boundary_fixups"]:
        print(f"fusion.cache: {manifest['stats']}", file=sys.stderr)


def _run_shards(
    model: torch.nn.Module,
    encoder: Encoder,
    examples: Sequence[tuple[str, str]],
    manifest: dict[str, Any],
    out: Path,
    batch_size: int,
    progress: bool,
) -> None:
    """Compute and write the shards the manifest does not list yet, updating it after each."""
    from tqdm.auto import tqdm

    done = len(manifest["shards"])
    done_tokens = sum(s["num_tokens"] for s in manifest["shards"])

    eps = manifest["examples_per_shard"]
    forward = {
        "k": manifest["k"],
        "temperature": manifest["temperature"],
        "vocab_size": manifest["vocab_size"],
        "pad_id": encoder.tokenizer.pad_token_id or 0,  # any id works: padding is masked
    }
    was_training = model.training
    model.eval()
    bar = tqdm(total=manifest["num_tokens"], initial=done_tokens, unit="tok", disable=not progress)
    try:
        with torch.inference_mode():
            for s in range(done, manifest["num_shards"]):
                first = s * eps
                pairs = examples[first : first + eps]
                encoded = encoder.encode(pairs, first_index=first)
                data, n_tokens = _shard_bytes(
                    model,
                    encoded,
                    batch_size=batch_size,
                    out_dtype=getattr(torch, manifest["logprobs_dtype"]),
                    on_batch=bar.update,
                    **forward,
                )
                atomic_write_bytes(out / shard_name(s), data)
                manifest["shards"].append(
                    {
                        "file": shard_name(s),
                        "sha256": sha256_bytes(data),
                        "bytes": len(data),
                        "first_example": first,
                        "num_examples": len(pairs),
                        "num_tokens": n_tokens,
                    }
                )
                write_manifest(out, manifest)
    finally:
        bar.close()
        model.train(was_training)
