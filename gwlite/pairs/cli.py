"""``gwlite pairwise``: GW intervals for every pair of a dataset, written to a folder."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

__all__ = ["edge_weights_note", "register_cli"]

EPILOG = """\
inputs:
  builtin:atlas            networkx's graph atlas: the 1,252 graphs with 1-7 nodes
  builtin:atlas:connected  its 996 connected graphs (for --kind shortest_path)
  builtin:families[:COUNT] COUNT (default 200) random graphs with 10-40 nodes
  builtin:NAME             one graph shipped with networkx (karate, florentine, ...)
  FILE.npy                 a square matrix (uniform node weights)
  FILE.graphml/.gml        a graph file
  FILE (other)             an edge list: one 'u v [weight]' per line
  --points METRIC FILE.npy ...  point clouds: each file an (n, d) array of coordinates
                           (gwlite.PointCloud with METRIC; no n x n matrix for the
                           sorted bounds, --method multiscale for large clouds)

written to --out:
  lower.npy, upper.npy     the N x N interval matrices
  pairs.csv                one row per pair: i, j, names, lower, upper, certified, evaluated
  neighbours.csv           with --knn: each space's K nearest neighbours, proven or not
  heatmap.png, mds.png     the intervals, and a 2-D MDS embedding of the upper bounds
  summary.json             what ran, how long, how many pairs were certified / saved

examples:
  gwlite pairwise builtin:atlas --out atlas-gw
  gwlite pairwise builtin:families --method cg --knn 5 --out fam --store fam.zarr
  gwlite pairwise graphs/*.graphml --scheduler tcp://10.0.0.1:8786 --out big
"""


def register_cli(sub) -> argparse.ArgumentParser:
    """Add the ``pairwise`` subcommand to an argparse ``subparsers`` object."""
    from gwlite import graphs
    from gwlite.api import METHODS
    from gwlite.bounds import LOWER_BOUNDS
    from gwlite.problem import LOSS_EXPONENTS

    parser = sub.add_parser(
        "pairwise",
        help="GW intervals for every pair of a dataset (all cores or a Dask cluster)",
        description="Compute the GW interval [lower, upper] of every pair of INPUTS, on all "
        "local cores or a Dask cluster, optionally resumable (--store) and pruned to what "
        "nearest-neighbour lists need (--knn).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUTS", help="graphs, matrices or datasets")
    parser.add_argument("--method", default="sorted", choices=METHODS)
    parser.add_argument("--loss", default="square_loss", choices=sorted(LOSS_EXPONENTS))
    parser.add_argument("--lower", default=None, choices=LOWER_BOUNDS, help="lower bound to report")
    parser.add_argument("--kind", default="adjacency", choices=graphs.KINDS)
    parser.add_argument("--node-weights", default="uniform", choices=graphs.NODE_WEIGHTS)
    parser.add_argument(
        "--weight",
        default=None,
        metavar="ATTR",
        help="edge attribute of the weights (default: ignored, every edge weighs 1)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler, e.g. tcp://host:8786"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="local processes (default: all cores)"
    )
    parser.add_argument("--store", default=None, type=Path, help="Zarr store: resumable results")
    parser.add_argument(
        "--repair",
        action="store_true",
        help="with --store: recompute the tiles of chunks that no longer decode",
    )
    parser.add_argument("--knn", type=int, default=None, metavar="K", help="neighbour pruning")
    parser.add_argument("--chunk", type=int, default=None, help="tile edge (spaces per task)")
    parser.add_argument(
        "--points",
        default=None,
        choices=("euclidean", "sqeuclidean"),
        metavar="METRIC",
        help="read every input as an (n, d) .npy array of points with this metric "
        "(euclidean or sqeuclidean)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)
    return parser


def _client(address):
    if address is None:
        return None
    from gwlite.errors import GWInputError

    try:
        from distributed import Client
    except ImportError as err:  # pragma: no cover - the extra is missing
        raise GWInputError(
            "--scheduler needs dask's distributed scheduler: pip install 'dask[distributed]' "
            "(gwlite's 'pairwise' extra)"
        ) from err
    try:
        return Client(address, timeout="20s")
    except OSError as err:
        raise GWInputError(f"could not reach the Dask scheduler at {address}: {err}") from err


def _run(args) -> int:
    from gwlite.datasets import load_dataset
    from gwlite.pairs.api import pairwise

    if args.points:
        data = _load_points(args.inputs, args.points)
    else:
        data = load_dataset(args.inputs, args.kind, args.node_weights, args.weight)
    options = {"lower": args.lower} if args.lower else {}
    client = _client(args.scheduler)
    try:
        result = pairwise(
            data,
            method=args.method,
            loss_fun=args.loss,
            engine=client if client is not None else args.workers,
            store=args.store,
            progress=not args.quiet,
            knn=args.knn,
            chunk=args.chunk,
            repair=args.repair,
            **options,
        )
    finally:
        if client is not None:
            client.close()
    _write(result, data, args)
    _print_summary(result, args)
    return 0


class _PointFiles(list):
    """Point clouds read from files, with their names and sizes (as a ``Dataset`` has)."""

    def __init__(self, clouds, names):
        super().__init__(clouds)
        self.names = tuple(names)
        self.sizes = np.array([c.n for c in clouds], dtype=np.int64)


def _load_points(inputs, metric: str) -> _PointFiles:
    from gwlite.errors import GWInputError
    from gwlite.pairs.clouds import as_clouds

    arrays = []
    for k, path in enumerate(inputs):
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as err:
            raise GWInputError(f"spaces[{k}] ({path}): cannot read an .npy array: {err}") from None
    return _PointFiles(as_clouds(arrays, metric), [str(x) for x in inputs])


def _write(result, data, args) -> None:
    from gwlite.atomic import atomic_open

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("lower", "upper"):
        with atomic_open(out / f"{name}.npy", "wb") as fh:
            np.save(fh, getattr(result, name))
    names = result.names or tuple(str(i) for i in range(result.n_spaces))
    ii, jj = np.triu_indices(result.n_spaces, 1)
    with atomic_open(out / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["i", "j", "name_i", "name_j", "lower", "upper", "certified", "evaluated"])
        for i, j in zip(ii.tolist(), jj.tolist()):
            w.writerow(
                [
                    i,
                    j,
                    names[i],
                    names[j],
                    repr(float(result.lower[i, j])),
                    repr(float(result.upper[i, j])),
                    int(result.certified[i, j]),
                    int(result.evaluated[i, j]),
                ]
            )
    if args.knn:
        nb = result.knn(args.knn)
        with atomic_open(out / "neighbours.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                ["i", "name", "rank", "neighbour", "neighbour_name", "lower", "upper", "proven"]
            )
            for i in range(result.n_spaces):
                for r in range(nb.k):
                    j = int(nb.indices[i, r])
                    w.writerow(
                        [
                            i,
                            names[i],
                            r + 1,
                            j,
                            names[j],
                            repr(float(nb.lower[i, r])),
                            repr(float(nb.upper[i, r])),
                            int(nb.proven[i, r]),
                        ]
                    )
    if not args.no_plots:
        from gwlite.pairs.plots import interval_heatmap, mds_plot

        sizes = data.sizes
        order = np.argsort(sizes, kind="stable")
        interval_heatmap(result, order=order, path=out / "heatmap.png")
        mds_plot(result, color=sizes, color_label="nodes", path=out / "mds.png")
    with atomic_open(out / "summary.json", "w") as fh:
        json.dump(_summary(result, args), fh, indent=2, default=str)


def edge_weights_note(weight: str | None) -> str:
    """What the edge weights of graph inputs were, in words (printed by both commands)."""
    if weight is None:
        return "weights ignored: every edge weighs 1 (--weight ATTR to use an attribute)"
    return f"weighted by the edge attribute {weight!r} (1 where an edge has none)"


def _summary(result, args) -> dict:
    n = result.n_spaces
    off = ~np.eye(n, dtype=bool)
    return {
        "inputs": args.inputs,
        "edge_weight": args.weight,
        "points": args.points,
        "method": result.method,
        "loss_fun": result.loss_fun,
        "n_spaces": n,
        "n_pairs": result.n_pairs,
        "n_evaluated": result.n_evaluated,
        "saved": result.saved,
        "certified_share": float(np.mean(result.certified[off])) if n > 1 else 1.0,
        "time_s": result.time_s,
        "diagnostics": dict(result.diagnostics),
    }


def _print_summary(result, args) -> None:
    s = _summary(result, args)
    print(f"{s['n_spaces']} spaces, {s['n_pairs']} pairs, method {s['method']} ({s['loss_fun']})")
    if args.points:
        print(f"  inputs      point clouds, metric {args.points}")
    else:
        print(f"  edges       {edge_weights_note(args.weight)}")
    print(f"  engine      {result.diagnostics.get('engine')}")
    print(f"  time        {s['time_s']:.2f} s")
    print(f"  certified   {s['certified_share']:.1%} of the pairs")
    if args.knn:
        print(
            f"  knn         k={args.knn}: {result.saved} of {result.n_pairs} calls saved "
            f"({result.saved / max(1, result.n_pairs):.1%})"
        )
    if result.diagnostics.get("store_repaired"):
        tiles = result.diagnostics["store_repaired"]
        print(f"  repaired    {len(tiles)} damaged tile(s) of the store recomputed: {tiles}")
    print(f"  written to  {args.out}")
