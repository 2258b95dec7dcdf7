"""Command line: ``python -m fusion.eval --model PATH --tasks ... --method ... --out DIR``.

For every (task, method) pair the CLI writes ``DIR/<task>.<method>.jsonl`` (one record per
item, written atomically), then ``DIR/summary.json``, and prints an accuracy table with
the paper's and the robust cleansing side by side.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from fusion.eval.loaders import DATASETS, load_bbh, load_dataset
from fusion.eval.models import DEFAULT_BATCH_SIZE
from fusion.eval.prompts import (
    CHAT_METHODS,
    DEFAULT_COT_TRIGGER,
    MAX_NEW_TOKENS_ANSWER,
    MAX_NEW_TOKENS_REASONING,
    check_method,
)
from fusion.eval.runner import ContextNeed, EvalResult, context_need, evaluate
from fusion.eval.tasks import GENERATORS, generate_task
from fusion.jsonio import read_json, read_jsonl, write_json_atomic, write_jsonl_atomic

DEFAULT_N = 200


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m fusion.eval``.

    Returns
    -------
    argparse.ArgumentParser
        Parser for the options documented in ``docs/guide/eval.md``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m fusion.eval",
        description="Zero-shot-CoT evaluation (Kojima et al., 2022) of a local causal LM.",
    )
    parser.add_argument(
        "--model",
        help="directory written by save_pretrained (with --gguf-file: the folder holding it)",
    )
    parser.add_argument(
        "--gguf-file",
        help="GGUF model file (absolute, or relative to --model), de-quantised once and cached",
    )
    parser.add_argument(
        "--model-cache",
        help="where de-quantised GGUF models are kept (default: $FUSION_MODEL_CACHE, "
        "else ~/.cache/fusion/models)",
    )
    parser.add_argument(
        "--chat-template",
        action="store_true",
        help="wrap prompts in the tokenizer's chat template (zero-shot methods only)",
    )
    parser.add_argument("--tokenizer", help="tokenizer directory (default: --model)")
    parser.add_argument(
        "--tasks",
        required=True,
        help="comma-separated: generated tasks "
        f"({', '.join(GENERATORS)}) or dataset keys given with --data",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="local file for a task: a dataset key loads the paper's format; a generated "
        "task name loads a BIG-Bench-Hard file instead of generating (repeatable)",
    )
    parser.add_argument("--method", default="zero_shot_cot", help="comma-separated methods")
    parser.add_argument(
        "--n",
        type=int,
        help=f"items per task: generated tasks default to {DEFAULT_N}, files to all items",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated tasks")
    parser.add_argument("--cot-trigger", default=DEFAULT_COT_TRIGGER)
    parser.add_argument(
        "--exemplars", help="JSON list or JSONL of {question, rationale, answer} for few-shot"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"prompts per generate call (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's, OMP_NUM_THREADS)"
    )
    parser.add_argument("--max-new-tokens-reasoning", type=int, default=MAX_NEW_TOKENS_REASONING)
    parser.add_argument("--max-new-tokens-answer", type=int, default=MAX_NEW_TOKENS_ANSWER)
    parser.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--dtype", help="e.g. bfloat16, float16 (default: as saved)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _data_paths(pairs: Sequence[str]) -> dict[str, str]:
    paths = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--data expects NAME=PATH, got {pair!r}")
        paths[name.strip()] = path
    return paths


def load_items(name: str, path: str | None, n: int | None, seed: int) -> tuple[str, list[dict]]:
    """Items for one ``--tasks`` entry and the task key they are scored with.

    Parameters
    ----------
    name : str
        A generated task name or a dataset key.
    path : str, optional
        File from ``--data``; required for dataset keys that are not generated.
    n : int, optional
        Number of items (generated: default 200; files: the first ``n``, default all).
    seed : int
        Seed of generated tasks.

    Returns
    -------
    (str, list of dict)
        Task key and items.

    Raises
    ------
    ValueError
        For an unknown name, a dataset without a file or a negative ``n``.
    """
    if n is not None and n < 0:
        raise ValueError(f"--n must be >= 0, got {n}")
    if path is None:
        if name not in GENERATORS:
            raise ValueError(
                f"task {name!r} is not generated; pass --data {name}=PATH "
                f"(generated: {sorted(GENERATORS)}; datasets: {list(DATASETS)})"
            )
        items = generate_task(name, DEFAULT_N if n is None else n, seed=seed)
        return GENERATORS[name][0], items
    if name in DATASETS:
        items, task = load_dataset(name, path), name
    elif name in GENERATORS:
        task = GENERATORS[name][0]
        items = load_bbh(path, task)
    else:
        raise ValueError(
            f"unknown task {name!r}; expected one of {sorted({*DATASETS, *GENERATORS})}"
        )
    return task, items if n is None else items[:n]


def _exemplars(path: str | None) -> list[dict] | None:
    if path is None:
        return None
    data = read_jsonl(path) if path.endswith(".jsonl") else read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of exemplars")
    return data


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def format_table(rows: Sequence[tuple[str, EvalResult]]) -> str:
    """Plain-text accuracy table, one row per (task, method).

    Parameters
    ----------
    rows : sequence of (str, EvalResult)
        Task name as given on the command line and its result.

    Returns
    -------
    str
        Columns ``task, method, n, paper %, robust %``; ``n/a`` for empty runs.
    """
    header = ("task", "method", "n", "paper %", "robust %")
    body = [
        (name, r.method, str(r.n), _percent(r.accuracy), _percent(r.robust_accuracy))
        for name, r in rows
    ]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _check_model_path(model: str) -> None:
    """Refuse a ``--model`` that is neither a directory nor a model in the local hub cache.

    Parameters
    ----------
    model : str
        The ``--model`` value.

    Raises
    ------
    ValueError
        ``"model directory not found: MODEL"`` (or ``"... is not a directory"``), so that
        a mistyped path reads as one line rather than a hub connection error.
    """
    path = Path(model)
    if path.is_dir():
        return
    if path.exists():
        raise ValueError(f"model path is not a directory: {model}")
    if not _in_hub_cache(model):
        raise ValueError(f"model directory not found: {model}")


def _in_hub_cache(model: str) -> bool:
    """Whether ``model`` names a model already downloaded to the local hub cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json")
    except Exception:  # an invalid repo id (a path, typically) or no huggingface_hub
        return False
    return isinstance(found, str)


def _check_inputs(args: argparse.Namespace) -> tuple[list[str], list[tuple], list | None]:
    """Methods, ``(name, task, items)`` workload and exemplars; raises before any model load."""
    methods = [check_method(m) for m in _split(args.method)]
    names = _split(args.tasks)
    if not names or not methods:
        raise ValueError("--tasks and --method must name at least one entry")
    for flag in ("batch_size", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.model is None and args.gguf_file is None:
        raise ValueError("give --model DIR or --gguf-file FILE")
    if args.chat_template and set(methods) - set(CHAT_METHODS):
        raise ValueError(f"--chat-template supports the methods {list(CHAT_METHODS)} only")
    paths = _data_paths(args.data)
    unused = set(paths) - set(names)
    if unused:
        raise ValueError(f"--data given for tasks not in --tasks: {sorted(unused)}")
    workload = [(name, *load_items(name, paths.get(name), args.n, args.seed)) for name in names]
    exemplars = _exemplars(args.exemplars)
    if any(m.startswith("few_shot") for m in methods) and not exemplars:
        raise ValueError("few-shot methods need --exemplars")
    if args.gguf_file is None:
        _check_model_path(str(args.model))
    return methods, workload, exemplars


def context_message(name: str, need: ContextNeed) -> str:
    """One line saying which run does not fit the context and what to change.

    Parameters
    ----------
    name : str
        The task as given in ``--tasks``.
    need : ContextNeed
        Its worst case (:func:`fusion.eval.runner.context_need`).

    Returns
    -------
    str
        Names the task, the method, the token counts and the ``--max-new-tokens-*`` flags.
    """
    flags = "--max-new-tokens-answer"
    if need.method in ("zero_shot_cot", "few_shot_cot"):
        flags = "--max-new-tokens-reasoning and/or " + flags
    return (
        f"task {name!r}, method {need.method}: the longest prompt has {need.prompt_tokens} "
        f"tokens and generation adds up to {need.new_tokens}, {need.tokens} > the model's "
        f"context length of {need.context_length}; lower {flags} "
        f"(by at least {need.tokens - need.context_length} in all), or leave the task out"
    )


def run(args: argparse.Namespace) -> tuple[list[tuple[str, EvalResult]], list[str]]:
    """Load the items and the model, evaluate every (task, method), write the outputs.

    Every (task, method) is checked against the model's context length before anything
    is generated; the runs that do not fit are skipped (and listed in ``summary.json``
    under ``"skipped"``), the others run and are written.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of :func:`build_parser`.

    Returns
    -------
    (list of (str, EvalResult), list of str)
        One entry per (task, method) that ran, in command-line order, and one message per
        (task, method) skipped because it does not fit the context.

    Raises
    ------
    ValueError
        For invalid options or inputs, before the model is loaded.
    """
    methods, workload, exemplars = _check_inputs(args)
    from fusion.eval.models import HFModel  # imports torch; only now that inputs are valid

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    model = HFModel(
        args.model,
        args.tokenizer,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        gguf_file=args.gguf_file,
        cache_dir=args.model_cache,
        chat_template=args.chat_template,
    )
    budgets = {
        "cot_trigger": args.cot_trigger,
        "exemplars": exemplars,
        "max_new_tokens_reasoning": args.max_new_tokens_reasoning,
        "max_new_tokens_answer": args.max_new_tokens_answer,
    }
    runs, skipped = [], []
    for name, task, items in workload:
        for method in methods:
            need = context_need(model, items, task=task, method=method, **budgets)
            if need is not None and not need.fits:
                skipped.append(context_message(name, need))
            else:
                runs.append((name, task, items, method))
    out = Path(args.out)
    rows: list[tuple[str, EvalResult]] = []
    for name, task, items, method in runs:
        result = evaluate(
            model,
            items,
            task=task,
            method=method,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            **budgets,
        )
        write_jsonl_atomic(out / f"{name}.{method}.jsonl", (r.to_dict() for r in result.records))
        rows.append((name, result))
    summary = [{**r.summary(), "task": name, "task_key": r.task} for name, r in rows]
    model_name = str(args.gguf_file if args.gguf_file is not None else args.model)
    write_json_atomic(
        out / "summary.json",
        {
            "model": model_name,
            "chat_template": args.chat_template,
            "results": summary,
            "skipped": skipped,
        },
    )
    return rows, skipped


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m fusion.eval``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 for invalid input (one line on stderr; the usage is
        printed only for command-line syntax errors, by argparse) and when a (task, method)
        does not fit the model's context (one line per skipped run, after the others ran
        and were written).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rows, skipped = run(args)
    except (ValueError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    if rows:
        print(format_table(rows))
    print(f"\nper-item records and summary.json written to {args.out}")
    for message in skipped:
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2 if skipped else 0
