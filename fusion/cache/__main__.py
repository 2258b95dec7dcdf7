"""Command line: ``python -m fusion.cache build ...`` and ``python -m fusion.cache verify DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fusion.cache._build import build
from fusion.cache._format import LOGPROB_DTYPES, CacheError
from fusion.cache._reader import TeacherCache


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fusion.cache", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="run a teacher over JSONL data and cache its top-k")
    b.add_argument("--teacher", required=True, help="local transformers checkpoint directory")
    b.add_argument("--tokenizer", help="tokenizer directory (default: the teacher's)")
    b.add_argument("--data", required=True, help="JSONL file with 'prompt' and 'response'")
    b.add_argument("--out", required=True, help="cache directory (resumed if it holds a cache)")
    b.add_argument("--k", type=int, default=50, help="entries kept per token (default 50)")
    b.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1)")
    b.add_argument(
        "--batch-size", type=int, default=8, help="examples per forward pass (default 8)"
    )
    b.add_argument("--max-length", type=int, help="longest teacher input (default: the model's)")
    b.add_argument(
        "--dtype", choices=sorted(LOGPROB_DTYPES), default="fp16", help="logprob storage"
    )
    b.add_argument("--examples-per-shard", type=int, default=1024, help="default 1024")
    b.add_argument("--no-eos", action="store_true", help="do not append EOS (no chat template)")
    b.add_argument("--on-mismatch", choices=["split", "error"], default="split")
    b.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    b.add_argument("--model-dtype", default="auto", help="auto, float32, bfloat16 or float16")
    b.add_argument("--overwrite", action="store_true", help="replace an existing cache")
    b.add_argument("--quiet", action="store_true", help="no size estimate, no progress bar")

    v = sub.add_parser("verify", help="check a cache's manifest and every shard's sha256")
    v.add_argument("dir", help="cache directory")
    return parser


def _build(args: argparse.Namespace) -> int:
    manifest = build(
        args.teacher,
        args.tokenizer,
        args.data,
        args.out,
        k=args.k,
        temperature=args.temperature,
        batch_size=args.batch_size,
        max_length=args.max_length,
        dtype=args.dtype,
        examples_per_shard=args.examples_per_shard,
        add_eos=not args.no_eos,
        on_mismatch=args.on_mismatch,
        device=args.device,
        model_dtype=args.model_dtype,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"wrote {manifest['num_examples']} examples, {manifest['num_tokens']} tokens to {args.out}"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    cache = TeacherCache(args.dir, verify="full", allow_incomplete=True)
    m = cache.manifest
    tokens = sum(s["num_tokens"] for s in m["shards"])
    state = (
        "complete" if m["complete"] else f"INCOMPLETE ({len(m['shards'])}/{m['num_shards']} shards)"
    )
    print(
        f"ok: {args.dir}: {len(cache)} examples, {tokens} tokens, "
        f"{len(m['shards'])} shard(s), k={m['k']}, teacher={m['teacher']!r}, {state}"
    )
    return 0 if m["complete"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 incomplete cache, 2 error)."""
    args = _parser().parse_args(argv)
    try:
        return _build(args) if args.command == "build" else _verify(args)
    except (CacheError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
