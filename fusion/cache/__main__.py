"""Command line: ``python -m fusion.cache build|merge|verify ...``.

``build`` may run as several ranks, with ``torchrun --nproc_per_node N -m fusion.cache
build ...`` (``RANK``/``WORLD_SIZE`` from the environment) or ``--rank R --world-size N``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from fusion.cache._build import build, merge
from fusion.cache._format import (
    DTYPES,
    MANIFEST_NAME,
    TRUNCATIONS,
    CacheError,
    CacheFormatError,
    read_manifest,
    read_record,
    record_name,
    record_paths,
)
from fusion.cache._reader import TeacherCache

#: exit statuses
OK, NOT_OK, ERROR = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fusion.cache", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="run a teacher over JSONL data and cache its top-k")
    b.add_argument(
        "--teacher",
        help="local transformers checkpoint directory (with --gguf-file: the folder holding it)",
    )
    b.add_argument(
        "--gguf-file",
        help="teacher as a GGUF file (absolute, or relative to --teacher), de-quantised once",
    )
    b.add_argument(
        "--model-cache",
        help="where de-quantised GGUF models are kept (default: $FUSION_MODEL_CACHE, "
        "else ~/.cache/fusion/models)",
    )
    b.add_argument("--tokenizer", help="tokenizer directory (default: the teacher's)")
    b.add_argument(
        "--data", required=True, help="JSONL file: 'prompt' and 'response', or 'messages'"
    )
    b.add_argument("--out", required=True, help="cache directory (resumed if it holds a cache)")
    b.add_argument("--k", type=int, default=50, help="entries kept per token (default 50)")
    b.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1)")
    b.add_argument(
        "--batch-size", type=int, default=8, help="examples per forward pass (default 8)"
    )
    b.add_argument("--max-length", type=int, help="longest teacher input (default: the model's)")
    b.add_argument(
        "--truncation",
        choices=TRUNCATIONS,
        default="response",
        help="cut the end of the response (default) or the start of the prompt first",
    )
    b.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="fp16",
        help="logprob storage (q8: the compact encoding, ~3x smaller, quantised)",
    )
    b.add_argument("--examples-per-shard", type=int, default=1024, help="default 1024")
    b.add_argument("--no-eos", action="store_true", help="do not append EOS (no chat template)")
    b.add_argument("--on-mismatch", choices=["split", "error"], default="split")
    b.add_argument(
        "--response-only-head",
        action="store_true",
        help="apply the teacher's output layer only where a target is predicted",
    )
    b.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    b.add_argument("--model-dtype", default="auto", help="auto, float32, bfloat16 or float16")
    b.add_argument("--overwrite", action="store_true", help="replace an existing cache")
    b.add_argument("--quiet", action="store_true", help="no size estimate, no progress bar")
    b.add_argument("--rank", type=int, help="this process's rank (default: $RANK, else 0)")
    b.add_argument("--world-size", type=int, help="number of ranks (default: $WORLD_SIZE, else 1)")

    m = sub.add_parser("merge", help="write a sharded build's manifest from its rank records")
    m.add_argument("dir", help="cache directory")

    v = sub.add_parser("verify", help="read a whole cache and check it against its manifest")
    v.add_argument("dir", help="cache directory")
    return parser


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {value!r}") from None


def _ranks(args: argparse.Namespace) -> tuple[int, int]:
    if (args.rank is None) != (args.world_size is None):
        raise ValueError("pass both --rank and --world-size, or neither")
    if args.rank is not None:
        return args.rank, args.world_size
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    return (rank or 0), (world or 1)


def _done(out: Path, rank: int, world_size: int) -> tuple[int, int]:
    """Examples and tokens already in ``out`` for this rank (0, 0 when nothing readable)."""
    path = out / (MANIFEST_NAME if world_size == 1 else record_name(rank, world_size))
    try:
        doc = read_manifest(out) if world_size == 1 else read_record(path)
    except (CacheError, OSError):
        return 0, 0
    shards = doc["shards"]
    return sum(s["num_examples"] for s in shards), sum(s["num_tokens"] for s in shards)


def _report(manifest: dict, before: tuple[int, int], out: str) -> str:
    """D6: the work this run did, then what the cache holds (they differ after a resume)."""
    shards = manifest["shards"]
    examples = sum(s["num_examples"] for s in shards) - before[0]
    tokens = sum(s["num_tokens"] for s in shards) - before[1]
    line = f"wrote {examples} examples, {tokens} tokens to {out}"
    if before != (0, 0):
        line += (
            f" (resumed: {before[0]} examples, {before[1]} tokens were already there; the "
            f"cache holds {manifest['num_examples']} examples, {manifest['num_tokens']} tokens)"
        )
    return line


def _teacher(args: argparse.Namespace) -> tuple[str, str | None]:
    """The teacher's checkpoint folder and, for a GGUF file, its name for the manifest."""
    if args.teacher is None and args.gguf_file is None:
        raise ValueError("give --teacher DIR or --gguf-file FILE")
    if args.gguf_file is None:
        return args.teacher, None
    from fusion.models import resolve_source

    source = resolve_source(args.teacher, gguf_file=args.gguf_file, cache_dir=args.model_cache)
    return source.path, str(source.gguf_file)


def _build(args: argparse.Namespace) -> int:
    rank, world_size = _ranks(args)
    before = (0, 0) if args.overwrite else _done(Path(args.out), rank, world_size)
    teacher, teacher_name = _teacher(args)
    manifest = build(
        teacher,
        args.tokenizer,
        args.data,
        args.out,
        k=args.k,
        temperature=args.temperature,
        batch_size=args.batch_size,
        max_length=args.max_length,
        truncation=args.truncation,
        dtype=args.dtype,
        examples_per_shard=args.examples_per_shard,
        add_eos=not args.no_eos,
        on_mismatch=args.on_mismatch,
        response_only_head=args.response_only_head,
        device=args.device,
        model_dtype=args.model_dtype,
        teacher_name=teacher_name,
        overwrite=args.overwrite,
        progress=not args.quiet,
        rank=rank,
        world_size=world_size,
    )
    if manifest["complete"] and "rank" not in manifest:
        print(_report(manifest, before, args.out))
    else:
        print(
            f"rank {rank} of {world_size}: {_report(manifest, before, args.out)}, its "
            f"{len(manifest['shards'])} shard(s); the last rank to finish writes "
            f"{MANIFEST_NAME} (or run `python -m fusion.cache merge {args.out}`)"
        )
    return OK


def _merge(args: argparse.Namespace) -> int:
    manifest = merge(args.dir)
    print(
        f"ok: {args.dir}: merged {len(manifest['shards'])} shard(s), "
        f"{manifest['num_examples']} examples, {manifest['num_tokens']} tokens"
    )
    return OK


def _unmerged(directory: Path) -> int:
    """Verdict on a sharded build whose manifest is not written yet."""
    records = [read_record(p) for p in record_paths(directory)]
    shards = {entry["file"] for r in records for entry in r["shards"]}
    total = records[0]["num_shards"]
    ranks = ", ".join(
        f"{r['rank']}/{r['world_size']}{'' if r['complete'] else ' (running or stopped)'}"
        for r in records
    )
    print(
        f"incomplete: {directory}: sharded build not merged: {len(shards)} of {total} shards "
        f"recorded by rank(s) {ranks}; run `python -m fusion.cache merge {directory}` once "
        "every rank has finished"
    )
    return NOT_OK


def _verify(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if not (directory / MANIFEST_NAME).is_file() and directory.is_dir():
        if record_paths(directory):
            return _unmerged(directory)
    try:
        cache = TeacherCache(directory, verify="none", allow_incomplete=True)
        cache.verify()
    except CacheFormatError:
        raise  # not a cache this version reads: an error, not a verdict
    except CacheError as err:
        print(f"corrupt: {err}")
        return NOT_OK
    m = cache.manifest
    tokens = sum(s["num_tokens"] for s in m["shards"])
    summary = (
        f"{directory}: {len(cache)} examples, {tokens} tokens, {len(m['shards'])} shard(s), "
        f"k={m['k']}, teacher={m['teacher']!r}"
    )
    if not m["complete"]:
        print(
            f"incomplete: {summary}; {m['num_shards'] - len(m['shards'])} of {m['num_shards']} "
            "shards still to build (rerun the build command to resume); the written ones verify"
        )
        return NOT_OK
    print(f"ok: {summary}")
    return OK


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status.

    ``0``: done (``verify``: ``ok``); ``1``: ``verify`` found the cache ``incomplete`` or
    ``corrupt`` (one line on stdout says which and why); ``2``: bad input or not a cache
    (``error: ...`` on stderr).
    """
    args = _parser().parse_args(argv)
    commands = {"build": _build, "merge": _merge, "verify": _verify}
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # one readable line per warning on stderr
        try:
            return commands[args.command](args)
        except (CacheError, ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return ERROR


if __name__ == "__main__":
    sys.exit(main())
