"""``python -m fusion demo`` and ``python -m fusion study``: argument parsing only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["demo_main", "demo_parser", "study_main", "study_parser"]


def _common(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--out", default=out, help=f"output directory (default {out})")
    parser.add_argument("--seeds", type=int, nargs="+", help="pivot seeds (default: the preset's)")
    parser.add_argument(
        "--workers", type=int, help="parallel worker processes (default 2, or 1 on one core)"
    )
    parser.add_argument("--threads", type=int, help="torch threads per worker (default 1)")
    parser.add_argument(
        "--fresh", action="store_true", help="recompute every job instead of reusing OUT/jobs"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.seeds:
        overrides["seeds"] = tuple(args.seeds)
    if args.workers:
        overrides["workers"] = args.workers
    if args.threads:
        overrides["threads"] = args.threads
    return overrides


def demo_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m fusion demo``."""
    parser = argparse.ArgumentParser(
        prog="python -m fusion demo",
        description="Train two tiny teachers (coin flips; arithmetic), cache them, fuse them "
        "into a pivot three ways (SFT, +ULD, +ULD+GLD) and evaluate every model with "
        "Zero-shot-CoT on held-out items. Offline. Rerunning into the same --out reuses "
        "every finished job.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="3 seeds, 100 held-out items per task, about half the steps (a few minutes)",
    )
    size.add_argument(
        "--tiny",
        action="store_true",
        help="1 seed, narrow models, easier arithmetic (about half a minute): the teachers "
        "learn their own family, the pivots barely train",
    )
    _common(parser, "fusion-demo")
    return parser


def demo_main(argv: Sequence[str] | None = None) -> int:
    """``python -m fusion demo [--quick | --tiny] [--out DIR] [--seeds S ...] [--workers N]``.

    Returns
    -------
    int
        The exit status (2 for invalid sizes).
    """
    from fusion.demo.config import DemoConfig
    from fusion.demo.pipeline import run_demo

    args = demo_parser().parse_args(argv)
    preset = DemoConfig.quick if args.quick else DemoConfig.tiny if args.tiny else DemoConfig.full
    try:
        config = preset(**_overrides(args))
        run_demo(config, args.out, progress=not args.no_progress, fresh=args.fresh)
    except ValueError as err:
        print(f"fusion demo: {err}", file=sys.stderr)
        return 2
    return 0


def study_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m fusion study``."""
    parser = argparse.ArgumentParser(
        prog="python -m fusion study",
        description="Measure when distillation helps: pivots on multistep arithmetic trained "
        "with SFT, SFT+ULD and SFT+ULD+GLD over a grid of regimes (labelled data, teacher "
        "strength, teacher-labelled prompts, loss weights, GLD and ULD options), several "
        "seeds per cell, paired comparisons with 95% intervals. Resumable: rerunning into "
        "the same --out reuses every finished job, so a killed run continues.",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a smoke test of the machinery: 3 cells, 2 seeds, a few steps (learns nothing)",
    )
    parser.add_argument("--cells", nargs="+", metavar="NAME", help="run only these cells")
    parser.add_argument(
        "--list", action="store_true", help="list the cells and their jobs, run nothing"
    )
    _common(parser, "fusion-study")
    return parser


def study_main(argv: Sequence[str] | None = None) -> int:
    """``python -m fusion study [--tiny] [--cells NAME ...] [--list] [--out DIR] ...``.

    Returns
    -------
    int
        The exit status (2 for invalid options or unknown cells).
    """
    from fusion.demo.study import StudyConfig, describe_cells, run_study

    args = study_parser().parse_args(argv)
    preset = StudyConfig.tiny if args.tiny else StudyConfig.full
    try:
        config = preset(**_overrides(args))
        if args.list:
            print(describe_cells(config, args.cells))
            return 0
        run_study(
            config, args.out, cells=args.cells, progress=not args.no_progress, fresh=args.fresh
        )
    except ValueError as err:
        print(f"fusion study: {err}", file=sys.stderr)
        return 2
    return 0
