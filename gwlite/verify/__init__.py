"""``gwlite verify``: the empirical check of every approximation guarantee.

For every graph family x size x seed (x loss), it runs the exact solver (where it
fits), the semidefinite relaxation (small sizes, when ``gwlite[certify]`` is
installed), conditional gradient, entropic GW, the sorted closed form with its upper
bound, Memoli's FLB/SLB/TLB and the rank-one bound pair, times each, checks every
theorem the library states (``lower <= GW <= upper``, the gap identities, feasibility of
couplings, the permutation-optimum claims, the rank-one containment, the relaxation's
certificate) and reports the tightness of each bound and the share of instances where
GW is certified. Any violation makes the command exit with status 1.

Library entry point: :func:`run_study`; command line: :func:`register_cli`.
"""

from __future__ import annotations

import argparse
import sys

from gwlite.families import FAMILIES
from gwlite.problem import LOSS_EXPONENTS
from gwlite.verify.study import FULL, QUICK, StudyReport, run_study

__all__ = ["FULL", "QUICK", "StudyReport", "register_cli", "run_study", "main"]

DEFAULT_OUT = "gwlite-verify"

EPILOG = """\
what it prints:
  tightness tables (lower/GW and upper/GW by method and family; GW is the certified
  optimum where the exact solver or the semidefinite relaxation certifies it, else the
  best upper bound found), the share certified per family, time per method, and
  every check with its number of violations.
files written to --out:
  results.csv (one row per instance and method), checks.csv (one row per check),
  tightness.png (heatmaps and timings; needs matplotlib).
exit status: 0 when no check failed, 1 otherwise, 2 on bad arguments.
"""


def register_cli(sub) -> argparse.ArgumentParser:
    """Add the ``verify`` subcommand to an argparse ``subparsers`` object."""
    parser = sub.add_parser(
        "verify",
        help="check every bound and theorem against ground truth on random graphs",
        description="The empirical study: every method on families x sizes x seeds, every "
        "theorem checked, tightness reported. --quick takes under a minute.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small study: sizes {list(QUICK['sizes'])}, seeds {list(QUICK['seeds'])}",
    )
    parser.add_argument(
        "--families",
        nargs="+",
        choices=sorted(FAMILIES),
        default=None,
        metavar="FAMILY",
        help="graph families (default: all): " + ", ".join(FAMILIES),
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=None,
        metavar="N",
        help=f"numbers of nodes (default {list(FULL['sizes'])})",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        metavar="S",
        help=f"seeds (default {list(FULL['seeds'])})",
    )
    parser.add_argument(
        "--losses",
        nargs="+",
        choices=sorted(LOSS_EXPONENTS),
        default=None,
        metavar="LOSS",
        help="losses (default: square_loss abs_loss)",
    )
    parser.add_argument(
        "--exact-max-n",
        type=int,
        default=None,
        metavar="N",
        help="run the exact solver up to this size (default 8 with --quick, else 10)",
    )
    parser.add_argument(
        "--sdp-max-n",
        type=int,
        default=None,
        metavar="N",
        help="run the semidefinite relaxation up to this size (default 6 with --quick, "
        "where exact did not certify; else 8; 0 turns it off; needs gwlite[certify])",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"folder for the CSV files and the figure (default ./{DEFAULT_OUT})",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=_run)
    return parser


def _run(args) -> int:
    report = run_study(
        args.families,
        args.sizes,
        args.seeds,
        args.losses,
        quick=args.quick,
        exact_max_n=args.exact_max_n,
        sdp_max_n=args.sdp_max_n,
        out_dir=args.out,
        progress=not args.no_progress,
    )
    print(report.render())
    for name, path in report.settings.get("outputs", {}).items():
        print(f"{name}: {path}")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m gwlite.verify``: the same as ``gwlite verify``."""
    parser = argparse.ArgumentParser(prog="gwlite")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["verify"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)
