"""Proven intervals at the size of real graphs: ``method="sdp"`` (ADMM) and ``method="rlt"``
next to TLB and ``auto``.

Question: how close do the lower bounds get to the best plan on real pairs (the six
pairs of networkx's karate club, Florentine families, Les Miserables and Davis southern
women, shortest paths, uniform weights; n * m = 480-2,618) and on 50-point metric
spaces sampled from random 3-D branching shapes (Euclidean distances, 20 pairs)?

How it is measured, per pair, one run each: the baseline first, ``gromov_wasserstein(C1,
C2, p, q)`` (``auto``, its default sorted -> TLB -> proximal stages, ``--auto-limit``
seconds), which gives TLB and the best plan gwlite had before; then ``method="rlt"``
with ``G0`` = auto's plan and ``time_limit = --time-limit`` seconds; then, with
``--sdp-limit`` > 0, ``method="sdp", solver="admm"`` with ``G0`` = the best plan so far
and ``time_limit = --sdp-limit`` seconds. Wall clock
(``time.perf_counter``) around each call and the solver's own stage times. Each pair's
result is written to the JSON file (atomically) as soon as it is done, and pairs
already in the file are skipped: the run resumes after an interruption. ``uptime``'s
load and the BLAS thread count are recorded with every pair (the machine is shared).

Run: ``python benchmarks/bench_sdp_scale.py real --json benchmarks/results/sdp_scale_real.json``
and ``python benchmarks/bench_sdp_scale.py shapes --pairs 20 --auto-limit 10 --time-limit 110
--json benchmarks/results/sdp_scale_shapes.json``; ``report`` prints the Markdown tables
of both files. ``scs --sizes 10 12 14 17 20 --time-limit 120 --json
benchmarks/results/sdp_scale_scs_timing.json`` times ``method="sdp"`` (SCS) by stage;
``eigh --json benchmarks/results/sdp_scale_eigh.json`` times one symmetric
eigendecomposition (the ADMM iteration's main cost) at orders 501, 1,001 and 2,601.
The ADMM runs of the issue-27 session: ``real --time-limit 120 --sdp-limit 420 --json
benchmarks/results/sdp_scale_admm_real.json`` and ``shapes --pairs 20 --auto-limit 10
--time-limit 40 --sdp-limit 65 --json benchmarks/results/sdp_scale_admm_shapes.json``;
the rerun at a lower load: ``real --only karate-florentine karate-davis --time-limit 60
--sdp-limit 300 --json benchmarks/results/sdp_scale_admm_real_rerun.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

import gwlite  # noqa: E402
from gwlite.atomic import atomic_open  # noqa: E402

GRAPHS = {
    "karate": nx.karate_club_graph,
    "florentine": nx.florentine_families_graph,
    "lesmis": nx.les_miserables_graph,
    "davis": nx.davis_southern_women_graph,
}


def real_pairs():
    """The six pairs of the four graphs, as (name, C1, p, C2, q)."""
    spaces = {
        name: gwlite.from_networkx(nx.convert_node_labels_to_integers(make()), "shortest_path")
        for name, make in GRAPHS.items()
    }
    for a, b in itertools.combinations(GRAPHS, 2):
        yield f"{a}-{b}", *spaces[a], *spaces[b]


def branching_shape(seed: int, n_points: int = 50) -> np.ndarray:
    """Euclidean distances of ``n_points`` sampled by arc length on a random 3-D tree.

    The tree grows from the origin: each branch is 4-8 unit segments whose direction
    turns by a Gaussian angle (0.35 rad), and ends by splitting in two with probability
    0.7 (at most 4 levels): a neuron- or plant-like skeleton.
    """
    rng = np.random.default_rng(seed)
    segments = []

    def grow(start, direction, depth):
        point = start
        for _ in range(rng.integers(4, 9)):
            direction = direction + 0.35 * rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            segments.append((point, point + direction))
            point = point + direction
        if depth < 4 and rng.random() < 0.7:
            for _ in range(2):
                grow(point, direction + 0.8 * rng.normal(size=3), depth + 1)

    grow(np.zeros(3), np.array([0.0, 0.0, 1.0]), 0)
    # uniform by arc length: every segment has length 1
    picks = rng.uniform(0, len(segments), size=n_points)
    idx = picks.astype(int)
    starts = np.array([segments[i][0] for i in idx])
    ends = np.array([segments[i][1] for i in idx])
    points = starts + (picks - idx)[:, None] * (ends - starts)
    return np.linalg.norm(points[:, None] - points[None], axis=-1)


def shape_pairs(count: int):
    uniform = np.full(50, 1 / 50)
    for k in range(count):
        C1, C2 = branching_shape(2 * k), branching_shape(2 * k + 1)
        yield f"shape{k:02d}", C1, uniform, C2, uniform


def scs_timing(sizes, path: Path, time_limit: float) -> None:
    """``method="sdp"`` (SCS) on Barabasi-Albert shortest-path pairs of n x (n + 1) nodes:
    its model build, solver (set-up and iterations) and certificate times."""
    rows = []
    for n in sizes:
        C1 = gwlite.from_networkx(nx.barabasi_albert_graph(n, 2, seed=1), "shortest_path")[0]
        C2 = gwlite.from_networkx(nx.barabasi_albert_graph(n + 1, 2, seed=2), "shortest_path")[0]
        tick = time.perf_counter()
        res = gwlite.gromov_wasserstein(C1, C2, method="sdp", max_size=10**6, time_limit=time_limit)
        d = res.diagnostics
        rows.append(
            dict(
                nm=n * (n + 1),
                wall=time.perf_counter() - tick,
                build=d["build_time_s"],
                solve=d["solve_time_s"],
                certify=d["certify_time_s"],
                iters=d["iterations"],
                lower=float(res.lower),
                upper=float(res.upper),
                stop=d["stop_reason"],
                nonneg=d["nonneg_constraints"],
                order=d["sdp_order"],
                **_machine(),
            )
        )
        print(json.dumps(rows[-1]), flush=True)
        with atomic_open(path, "w") as f:
            json.dump({"rows": rows}, f, indent=1)


def _machine() -> dict:
    from threadpoolctl import threadpool_info

    threads = sorted({info["num_threads"] for info in threadpool_info()})
    return {"load_1min": os.getloadavg()[0], "blas_threads": threads}


def eigh_timing(path: Path, orders=(501, 1001, 2601)) -> None:
    """Seconds of ``numpy.linalg.eigh`` (values and vectors) on a random symmetric matrix."""
    rows = []
    for order in orders:
        A = np.random.default_rng(0).normal(size=(order, order))
        A = A + A.T
        tick = time.perf_counter()
        np.linalg.eigh(A)
        rows.append(dict(order=order, eigh_s=time.perf_counter() - tick, **_machine()))
        print(json.dumps(rows[-1]), flush=True)
    with atomic_open(path, "w") as f:
        json.dump({"rows": rows}, f, indent=1)


def measure_sdp(C1, p, C2, q, G0, time_limit: float) -> dict:
    """``method="sdp", solver="admm"`` from ``G0``: its bound, plan and stage times."""
    tick = time.perf_counter()
    res = gwlite.gromov_wasserstein(
        C1, C2, p, q, method="sdp", solver="admm", G0=G0, time_limit=time_limit
    )
    d = res.diagnostics
    return dict(
        sdp_bound=d["sdp_bound"],
        sdp_lower=float(res.lower),
        sdp_upper=float(res.upper),
        sdp_s=time.perf_counter() - tick,
        sdp_iterations=d["iterations"],
        sdp_stop=d["stop_reason"],
        sdp_iterate_time_s=d["solve_time_s"],
        sdp_certify_time_s=d["certify_time_s"],
        sdp_build_time_s=d["build_time_s"],
        sdp_correction=d["eigenvalue_correction"],
        sdp_history=d["history"],
    )


def measure(name, C1, p, C2, q, auto_limit: float, time_limit: float, sdp_limit=0.0) -> dict:
    tick = time.perf_counter()
    base = gwlite.gromov_wasserstein(C1, C2, p, q, time_limit=auto_limit, lower="tlb")
    auto_s = time.perf_counter() - tick
    tlb = float(gwlite.lower_bound(C1, C2, p, q, lower="tlb"))
    tick = time.perf_counter()
    res = gwlite.gromov_wasserstein(
        C1, C2, p, q, method="rlt", G0=base.coupling, time_limit=time_limit
    )
    rlt_s = time.perf_counter() - tick
    d = res.diagnostics
    return dict(
        pair=name,
        n=len(C1),
        m=len(C2),
        tlb=tlb,
        auto_lower=float(base.lower),
        auto_upper=float(base.upper),
        auto_ratio=float(base.upper) / float(base.lower),
        auto_s=auto_s,
        rlt_bound=d["rlt_bound"],
        lower=float(res.lower),
        upper=float(res.upper),
        ratio=float(res.upper) / float(res.lower),
        lower_over_tlb=float(res.lower) / tlb,
        certified=bool(res.certified),
        iterations=d["iterations"],
        stop_reason=d["stop_reason"],
        rlt_s=rlt_s,
        upper_time_s=d["upper_time_s"],
        ascent_time_s=d["ascent_time_s"],
        polish_time_s=d["polish_time_s"],
        history=d["history"],
        **_machine(),
    ) | (measure_sdp(C1, p, C2, q, res.coupling, sdp_limit) if sdp_limit > 0 else {})


def run(pairs, path: Path, auto_limit: float, time_limit: float, sdp_limit: float) -> None:
    done = json.loads(path.read_text()) if path.exists() else {"pairs": []}
    seen = {row["pair"] for row in done["pairs"]}
    done["setting"] = dict(auto_limit=auto_limit, time_limit=time_limit, sdp_limit=sdp_limit)
    for name, C1, p, C2, q in pairs:
        if name in seen:
            continue
        row = measure(name, C1, p, C2, q, auto_limit, time_limit, sdp_limit)
        brief = {k: v for k, v in row.items() if not k.endswith("history")}
        print(json.dumps(brief), flush=True)
        done["pairs"].append(row)
        with atomic_open(path, "w") as f:
            json.dump(done, f, indent=1)


def report(paths) -> None:
    for path in paths:
        rows = json.loads(Path(path).read_text())["pairs"]
        print(f"\n{path}\n")
        if "sdp_bound" in rows[0]:
            _report_sdp(rows)
            continue
        print(
            "| pair | n x m | TLB | auto upper/lower | RLT lower | lower/TLB | upper "
            "| upper/lower | iterations | stop | RLT s | load |"
        )
        print("|---" * 12 + "|")
        for r in rows:
            print(
                f"| {r['pair']} | {r['n']}x{r['m']} | {r['tlb']:.4f} | {r['auto_ratio']:.3f} "
                f"| {r['lower']:.4f} | {r['lower_over_tlb']:.3f} | {r['upper']:.4f} "
                f"| {r['ratio']:.3f} | {r['iterations']} | {r['stop_reason']} "
                f"| {r['rlt_s']:.0f} | {r['load_1min']:.1f} |"
            )
        ratios = [r["ratio"] for r in rows]
        print(
            f"\nmedian upper/lower {np.median(ratios):.3f}, max {max(ratios):.3f}, "
            f"median before (auto) {np.median([r['auto_ratio'] for r in rows]):.3f}, "
            f"{len(rows)} pairs"
        )


def _report_sdp(rows) -> None:
    """The three bounds side by side; upper/lower from the best of each."""
    print(
        "| pair | n x m | TLB | RLT lower | SDP (ADMM) bound | best upper | upper/lower "
        "| before (auto) | ADMM it. | s / it. | certificates s | auto s | RLT s | ADMM s "
        "| load |"
    )
    print("|---" * 15 + "|")
    ratios = []
    for r in rows:
        lower = max(r["lower"], r["sdp_lower"])
        upper = min(r["upper"], r["sdp_upper"])
        ratios.append(upper / lower)
        per = r["sdp_iterate_time_s"] / max(r["sdp_iterations"], 1)
        print(
            f"| {r['pair']} | {r['n']}x{r['m']} | {r['tlb']:.4f} | {r['rlt_bound']:.4f} "
            f"| {r['sdp_bound']:.4f} | {upper:.4f} | {ratios[-1]:.3f} | {r['auto_ratio']:.3f} "
            f"| {r['sdp_iterations']} | {per:.2f} | {r['sdp_certify_time_s']:.0f} "
            f"| {r['auto_s']:.0f} | {r['rlt_s']:.0f} | {r['sdp_s']:.0f} | {r['load_1min']:.1f} |"
        )
    print(
        f"\nmedian upper/lower {np.median(ratios):.3f}, max {max(ratios):.3f}, "
        f"median before (auto) {np.median([r['auto_ratio'] for r in rows]):.3f}, "
        f"{len(rows)} pairs; ADMM above RLT on "
        f"{sum(r['sdp_bound'] > r['rlt_bound'] for r in rows)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["real", "shapes", "scs", "eigh", "report"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 12, 14, 17, 20])
    parser.add_argument("--json", type=Path, nargs="+")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--auto-limit", type=float, default=20.0)
    parser.add_argument("--time-limit", type=float, default=420.0)
    parser.add_argument("--sdp-limit", type=float, default=0.0)
    parser.add_argument("--only", nargs="+", default=None, help="pair names to run")
    args = parser.parse_args()
    if args.part == "report":
        report(args.json)
        return
    if args.part == "eigh":
        eigh_timing(args.json[0])
        return
    if args.part == "scs":
        scs_timing(args.sizes, args.json[0], args.time_limit)
        return
    pairs = real_pairs() if args.part == "real" else shape_pairs(args.pairs)
    if args.only:
        pairs = [pair for pair in pairs if pair[0] in args.only]
    run(pairs, args.json[0], args.auto_limit, args.time_limit, args.sdp_limit)


if __name__ == "__main__":
    main()
