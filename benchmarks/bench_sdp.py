"""``method="sdp"`` on general graph pairs: time, share certified and gap, next to ``exact``.

How it is measured: each instance pairs two independent random graphs of one family
(Erdos-Renyi p = 0.5, Barabasi-Albert m = 2, a two-block SBM (0.8 / 0.15), uniform random
trees; seeds ``2 s`` and ``2 s + 1``, redrawn until connected when shortest paths are
asked for) with uniform weights, as adjacency matrices and as shortest-path distance
matrices, square loss. ``method="exact"`` runs first on the same instance (the peer: its
interval is the best gwlite had before); then ``gromov_wasserstein(C1, C2,
method="sdp")`` with its defaults (SCS, ``tol = 1e-6``), timed with ``time.perf_counter``
(wall clock) and ``time.process_time`` (CPU of this process: less sensitive to other jobs
on the machine) around the whole call, one run per instance, after one warm-up solve
(POT's and SCS's imports). BLAS is limited to 2 threads (set below before NumPy loads).

Columns: median and maximum wall time, median CPU time, the share certified, the median
relative gap ``(upper - lower) / upper`` of sdp and of exact, and, where exact leaves a
relative gap above 1e-6, the largest sdp relative gap there (the target is <= 3% at
n = 10).

Run: ``python benchmarks/bench_sdp.py [--sizes 8 10] [--seeds 5] [--large-seeds 2]
[--kinds adjacency shortest_path] [--solver scs] [--json benchmarks/results/bench_sdp_cpu.json]``.
Sizes above ``gwlite.solvers.sdp.DEFAULT_MAX_SIZE`` (n * m = 100) are run with
``max_size`` raised and ``--time-limit`` seconds each.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

import gwlite  # noqa: E402
from gwlite.atomic import atomic_open  # noqa: E402
from gwlite.solvers import sdp  # noqa: E402

FAMILIES = {
    "ER": lambda n, s: nx.gnp_random_graph(n, 0.5, seed=s),
    "BA": lambda n, s: nx.barabasi_albert_graph(n, 2, seed=s),
    "SBM": lambda n, s: nx.stochastic_block_model(
        [n // 2, n - n // 2], [[0.8, 0.15], [0.15, 0.8]], seed=s
    ),
    "tree": lambda n, s: nx.random_labeled_tree(n, seed=s),
}


def structure(family: str, n: int, seed: int, kind: str) -> np.ndarray:
    """One graph's structure matrix; redrawn (seed + 1000 k) until connected if needed."""
    for attempt in range(100):
        G = FAMILIES[family](n, seed + 1000 * attempt)
        if kind == "adjacency" or nx.is_connected(G):
            return gwlite.from_networkx(nx.convert_node_labels_to_integers(G), kind)[0]
    raise RuntimeError(f"no connected {family} graph with n={n}")


def relative_gap(res) -> float:
    return 0.0 if res.upper <= 0 else (res.upper - res.lower) / res.upper


def run_one(family, kind, n, seed, args) -> dict:
    C1, C2 = structure(family, n, 2 * seed, kind), structure(family, n, 2 * seed + 1, kind)
    start = time.perf_counter()
    ex = gwlite.gromov_wasserstein(C1, C2, method="exact", time_limit=args.time_limit)
    exact_s = time.perf_counter() - start
    options = dict(solver=args.solver)
    if n * n > sdp.DEFAULT_MAX_SIZE:
        options.update(max_size=n * n, time_limit=args.time_limit)
    wall, cpu = time.perf_counter(), time.process_time()
    res = gwlite.gromov_wasserstein(C1, C2, method="sdp", **options)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    d = res.diagnostics
    return dict(
        family=family,
        kind=kind,
        n=n,
        seed=seed,
        time_s=wall,
        cpu_s=cpu,
        certified=bool(res.certified),
        lower=float(res.lower),
        upper=float(res.upper),
        rel_gap=relative_gap(res),
        sdp_bound=d["sdp_bound"],
        stop_reason=d["stop_reason"],
        iterations=int(d["iterations"]),
        upper_kind=d["upper_kind"],
        exact_lower=float(ex.lower),
        exact_upper=float(ex.upper),
        exact_rel_gap=relative_gap(ex),
        exact_certified=bool(ex.certified),
        exact_time_s=exact_s,
    )


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for n in sorted({r["n"] for r in rows}):
        sel = [r for r in rows if r["n"] == n]
        open_ = [r for r in sel if r["exact_rel_gap"] > 1e-6]
        out.append(
            dict(
                n=n,
                runs=len(sel),
                median_s=float(np.median([r["time_s"] for r in sel])),
                max_s=float(np.max([r["time_s"] for r in sel])),
                median_cpu_s=float(np.median([r["cpu_s"] for r in sel])),
                certified=sum(r["certified"] for r in sel),
                exact_certified=sum(r["exact_certified"] for r in sel),
                median_rel_gap=float(np.median([r["rel_gap"] for r in sel])),
                exact_median_rel_gap=float(np.median([r["exact_rel_gap"] for r in sel])),
                exact_open=len(open_),
                max_rel_gap_where_exact_open=max((r["rel_gap"] for r in open_), default=0.0),
                median_exact_s=float(np.median([r["exact_time_s"] for r in sel])),
            )
        )
    return out


def table(stats: list[dict]) -> str:
    head = (
        "| n | runs | median (s) | max (s) | median CPU (s) | certified | exact certified "
        "| median rel. gap sdp | median rel. gap exact | max sdp gap where exact open "
        "| median exact (s) |"
    )
    lines = [head, "|" + " --- |" * 11]
    for s in stats:
        lines.append(
            f"| {s['n']} | {s['runs']} | {s['median_s']:.2f} | {s['max_s']:.2f} | "
            f"{s['median_cpu_s']:.2f} | {s['certified']}/{s['runs']} | "
            f"{s['exact_certified']}/{s['runs']} | {s['median_rel_gap']:.1e} | "
            f"{s['exact_median_rel_gap']:.1e} | {s['max_rel_gap_where_exact_open']:.1e} "
            f"({s['exact_open']} open) | {s['median_exact_s']:.3f} |"
        )
    return "\n".join(lines)


def by_family(rows: list[dict]) -> str:
    lines = ["| n | family | structure | certified | median (s) |", "|" + " --- |" * 5]
    keys = sorted({(r["n"], r["family"], r["kind"]) for r in rows})
    for n, fam, kind in keys:
        sel = [r for r in rows if (r["n"], r["family"], r["kind"]) == (n, fam, kind)]
        lines.append(
            f"| {n} | {fam} | {kind} | {sum(r['certified'] for r in sel)}/{len(sel)} | "
            f"{np.median([r['time_s'] for r in sel]):.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 10, 12])
    parser.add_argument("--seeds", type=int, default=5, help="instances per cell, n <= 8")
    parser.add_argument("--large-seeds", type=int, default=2, help="instances per cell, n > 8")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument(
        "--kinds", nargs="+", default=["adjacency", "shortest_path"], choices=gwlite.graphs.KINDS
    )
    parser.add_argument("--solver", default="scs", choices=list(sdp.SOLVERS))
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds, n > 10")
    parser.add_argument("--json", default=None, help="write rows and summary here")
    args = parser.parse_args(argv)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs visible, BLAS threads "
        f"{os.environ['OMP_NUM_THREADS']}, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, load average {os.getloadavg()[0]:.1f} at start"
    )
    print(f"# {machine}, solver {args.solver}")
    warm = structure("tree", 4, 0, "adjacency")
    gwlite.gromov_wasserstein(warm, warm, method="sdp", solver=args.solver)  # imports
    rows = []
    for n in args.sizes:
        seeds = args.seeds if n <= 8 else args.large_seeds
        for family in args.families:
            for kind in args.kinds:
                for seed in range(seeds):
                    row = run_one(family, kind, n, seed, args)
                    rows.append(row)
                    print(
                        f"n={n} {family:4s} {kind:13s} seed={seed} {row['time_s']:7.2f}s "
                        f"cpu {row['cpu_s']:7.2f}s certified={row['certified']!s:5s} "
                        f"[{row['lower']:.6g}, {row['upper']:.6g}] exact "
                        f"[{row['exact_lower']:.6g}, {row['exact_upper']:.6g}] "
                        f"{row['stop_reason']} ({row['iterations']} it)",
                        flush=True,
                    )
    stats = summary(rows)
    print()
    print(table(stats))
    print()
    print(by_family(rows))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        with atomic_open(args.json, "w") as handle:
            json.dump(
                dict(machine=machine, solver=args.solver, rows=rows, summary=stats),
                handle,
                indent=1,
            )


if __name__ == "__main__":
    main()
