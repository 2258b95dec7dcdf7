"""The ``gwlite`` command line.

``gwlite distance A B`` computes GW between two graphs or matrices and prints the
value with its proven interval; ``gwlite verify`` (see :mod:`gwlite.verify`) runs the
empirical check of every approximation guarantee.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gwlite import graphs
from gwlite.api import METHODS, gromov_wasserstein, method_options
from gwlite.bounds import LOWER_BOUNDS
from gwlite.errors import GWInputError, GWSolverError
from gwlite.pairs.cli import edge_weights_note
from gwlite.pairs.cli import register_cli as register_pairwise
from gwlite.problem import LOSS_EXPONENTS
from gwlite.verify import register_cli as register_verify

#: the method used when --method is not given
DEFAULT_METHOD = "auto"

EPILOG = """\
inputs (A, B):
  builtin:NAME      a graph shipped with networkx: {builtins}
  FILE.npy          a square matrix, used as given (uniform node weights)
  FILE.graphml/.gml a graph file
  FILE (other)      an edge list: one 'u v [weight]' per line, '#' comments

graphs become matrices by --kind, --node-weights and the edge weights: ignored by
default (every edge weighs 1, as in gwlite.from_networkx), for built-in graphs and files
alike; --weight ATTR uses an edge attribute (e.g. --weight weight). The output says which.

method options (--lower, --epsilon, --time-limit, --max-iter) are passed to the method;
one it does not take is refused with the options it does take.

examples:
  gwlite distance builtin:karate builtin:florentine --kind shortest_path
  gwlite distance a.npy b.npy --method cg --json
  gwlite distance builtin:petersen builtin:dodecahedral --method exact --lower tlb
  gwlite verify --quick
"""

#: method option -> its flag (the flag's dest is the option name)
METHOD_FLAGS = {
    "lower": "--lower",
    "epsilon": "--epsilon",
    "time_limit": "--time-limit",
    "max_iter": "--max-iter",
}
#: how a graph becomes a matrix: meaningless for a .npy input
GRAPH_FLAGS = {
    "kind": "--kind",
    "node_weights": "--node-weights",
    "weight": "--weight",
    "unweighted": "--unweighted",
}


def _add_distance(sub) -> None:
    parser = sub.add_parser(
        "distance",
        help="GW between two graphs or matrices, with its proven interval",
        description="Compute the Gromov-Wasserstein value between A and B and print it with "
        "the interval [lower, upper] that provably contains the true GW value.",
        epilog=EPILOG.format(builtins=", ".join(sorted(graphs.BUILTIN_GRAPHS))),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("A", help="first graph or matrix (see 'inputs' below)")
    parser.add_argument("B", help="second graph or matrix")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS)
    parser.add_argument("--loss", default="square_loss", choices=sorted(LOSS_EXPONENTS))
    graph = parser.add_argument_group("graphs (not for .npy inputs)")
    graph.add_argument(
        "--kind", default=None, choices=graphs.KINDS, help="structure matrix (default adjacency)"
    )
    graph.add_argument(
        "--node-weights", default=None, choices=graphs.NODE_WEIGHTS, help="default uniform"
    )
    weights = graph.add_mutually_exclusive_group()
    weights.add_argument(
        "--weight",
        default=None,
        metavar="ATTR",
        help="edge attribute of the weights (default: ignored)",
    )
    weights.add_argument(
        "--unweighted", action="store_true", help="every edge weighs 1 (the default)"
    )
    method = parser.add_argument_group("method options (refused by methods without them)")
    method.add_argument("--lower", default=None, choices=LOWER_BOUNDS, help="lower bound to report")
    method.add_argument("--epsilon", type=float, default=None, help="entropic regularisation")
    method.add_argument("--time-limit", type=float, default=None, metavar="SECONDS")
    method.add_argument("--max-iter", type=int, default=None, metavar="N")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=_run_distance)


def _is_matrix_file(source: str) -> bool:
    return not source.startswith("builtin:") and Path(source).suffix.lower() == ".npy"


def _graph_settings(args) -> dict:
    """How graphs become matrices; refused when every input is a matrix already."""
    given = [flag for dest, flag in GRAPH_FLAGS.items() if getattr(args, dest) not in (None, False)]
    if given and all(_is_matrix_file(x) for x in (args.A, args.B)):
        verb = "describes" if len(given) == 1 else "describe"
        raise GWInputError(
            f"{', '.join(given)} {verb} how a graph becomes a matrix, but both inputs are "
            ".npy matrices, used as given; drop the option"
        )
    return {
        "kind": args.kind or "adjacency",
        "node_weights": args.node_weights or "uniform",
        "weight": args.weight,  # None with --unweighted too (mutually exclusive)
    }


def _method_settings(args) -> dict:
    """The method options given on the command line, each one the method takes."""
    accepted = method_options(args.method)
    options = {}
    for name, flag in METHOD_FLAGS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if name not in accepted:
            takes = [METHOD_FLAGS[n] for n in accepted if n in METHOD_FLAGS]
            raise GWInputError(
                f"{flag} does not apply to --method {args.method}: it has no {name!r} option "
                f"(its options here: {', '.join(takes) or 'none'})"
            )
        options[name] = value
    return options


def _run_distance(args) -> int:
    graph = _graph_settings(args)
    options = _method_settings(args)
    C1, p = graphs.load(args.A, **graph)
    C2, q = graphs.load(args.B, **graph)
    res = gromov_wasserstein(C1, C2, p, q, method=args.method, loss_fun=args.loss, **options)
    both_matrices = all(_is_matrix_file(x) for x in (args.A, args.B))
    value, lower, upper = float(res.value), float(res.lower), float(res.upper)
    record = {
        "A": args.A,
        "B": args.B,
        "n": int(C1.shape[0]),
        "m": int(C2.shape[0]),
        "method": res.method,
        "loss_fun": res.loss_fun,
        "value": value,
        "lower": lower,
        "upper": upper,
        "closed_form": res.diagnostics.get("closed_form"),
        "edge_weight": graph["weight"] if not both_matrices else None,
        "certified": res.certified,
        "converged": res.converged,
        "n_iter": res.n_iter,
        "time_s": res.time_s,
    }
    if args.json:
        print(json.dumps(record))
        return 0
    what = "certified optimum" if res.certified else "GW lies in the interval"
    print(f"{args.A} (n={record['n']}) vs {args.B} (m={record['m']}), {res.loss_fun}")
    print(f"  method   {res.method}")
    edges = "matrices used as given" if both_matrices else edge_weights_note(graph["weight"])
    print(f"  edges    {edges}")
    print(f"  value    {value:.6g}  (the method's estimate; always within the interval)")
    print(f"  interval [{lower:.6g}, {upper:.6g}]  ({what})")
    print(f"  time     {res.time_s * 1e3:.1f} ms  (checks and solve; no imports, no loading)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``gwlite`` argument parser, with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="gwlite",
        description="Gromov-Wasserstein distances with proven bounds: every number printed "
        "comes with what it provably is (a lower bound, an upper bound, or a certified "
        "optimum).",
        epilog="Run 'gwlite COMMAND --help' for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_distance(sub)
    register_verify(sub)
    register_pairwise(sub)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run ``gwlite`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Every expected failure is one line on stderr and exit status 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (GWInputError, GWSolverError, OSError) as err:
        print(f"gwlite: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gwlite: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
