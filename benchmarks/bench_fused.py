"""Fused GW and barycenters on attributed stochastic block models, POT in the same run.

Instances: an attributed SBM graph of ``n`` nodes has 2 or 3 blocks (sizes as equal as
possible), edge probability 0.7 inside a block and 0.1 across, shortest-path structure
(unreachable pairs at distance ``n``), and a 2-D node feature drawn around its block's
centre (unit-spaced centres, N(0, 0.3^2) noise); ``M`` is the squared Euclidean feature
cost. Every pair and every barycenter instance is computed by gwlite and POT in the same
process on the same arrays, one after the other; times are wall-clock
``time.perf_counter()`` around one call each (POT imported before any clock).

Sections (``--sections``):

``fgw``
    per pair: ``gwlite.fused_gromov_wasserstein`` (``method="auto"``, ``time_limit=10``)
    and ``ot.gromov.fused_gromov_wasserstein2`` from its default start; whether
    gwlite's upper <= POT's value (to 1e-12 relative), whether gwlite's lower is below
    every plan's cost (POT's, gwlite's; lower validity), certified share, time.
``barycenter``
    ``gwlite.barycenter`` vs ``ot.gromov.gromov_barycenters`` / ``fgw_barycenters``
    (same lambdas, size, 100 iterations, same random state); POT's objective is the sum
    of lambda_s times the (fused) cost of its own couplings at its barycenter.
``pairwise``
    ``gwlite.pairwise(..., alpha=0.5, knn=10, method="cg")`` over ``--pairwise-graphs``
    attributed graphs: time, pairs evaluated and calls saved.

Run: ``python benchmarks/bench_fused.py --json benchmarks/results/bench_fused_cpu.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import ot  # noqa: E402

import gwlite  # noqa: E402
from gwlite.atomic import atomic_write_bytes  # noqa: E402
from gwlite.coupling import fgw_cost  # noqa: E402


def attributed_sbm(n: int, seed: int) -> gwlite.graphs.AttributedGraph:
    """An SBM graph whose node features depend on the block (see the module docstring)."""
    rng = np.random.default_rng(seed)
    k = 2 + seed % 2
    sizes = [n // k + (b < n % k) for b in range(k)]
    probs = np.full((k, k), 0.1) + np.eye(k) * 0.6
    G = nx.stochastic_block_model(sizes, probs.tolist(), seed=seed)
    centres = np.stack([np.arange(k, dtype=float), np.zeros(k)], axis=1)
    block = np.repeat(np.arange(k), sizes)
    for v in G:
        G.nodes[v]["x"] = (centres[block[v]] + rng.normal(0, 0.3, 2)).tolist()
    lengths = dict(nx.all_pairs_shortest_path_length(G))
    C = np.full((n, n), float(n))
    for u, row in lengths.items():
        for v, d in row.items():
            C[u, v] = d
    return gwlite.graphs.AttributedGraph(
        C, np.full(n, 1.0 / n), gwlite.graphs.node_features(G, "x")
    )


def machine() -> dict:
    from threadpoolctl import threadpool_info

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_1min": os.getloadavg()[0],
        "blas_threads": [i.get("num_threads") for i in threadpool_info()],
        "pot": ot.__version__,
    }


def bench_fgw(sizes, alphas, pairs_per_cell: int, time_limit: float) -> dict:
    rows = []
    for n in sizes:
        for alpha in alphas:
            for k in range(pairs_per_cell if n <= 50 else max(1, pairs_per_cell // 4)):
                a, b = attributed_sbm(n, 1000 * n + 2 * k), attributed_sbm(n, 1000 * n + 2 * k + 1)
                M = ot.dist(a.Y, b.Y)
                t0 = time.perf_counter()
                res = gwlite.fused_gromov_wasserstein(
                    M, a.C, b.C, a.p, b.p, alpha=alpha, time_limit=time_limit
                )
                ours_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    plan = ot.gromov.fused_gromov_wasserstein(M, a.C, b.C, a.p, b.p, alpha=alpha)
                pot_s = time.perf_counter() - t0
                pot_value = float(fgw_cost(M, a.C, b.C, plan, alpha, check=False))
                tol = 1e-12 * max(1.0, abs(pot_value))
                rows.append(
                    dict(
                        n=n,
                        alpha=alpha,
                        lower=res.lower,
                        upper=res.upper,
                        pot=pot_value,
                        upper_le_pot=res.upper <= pot_value + tol,
                        lower_valid=res.lower <= min(pot_value, res.upper) + tol,
                        certified=res.certified,
                        time_s=ours_s,
                        pot_time_s=pot_s,
                        lower_kind=res.diagnostics.get("lower_kind"),
                        upper_kind=res.diagnostics.get("upper_kind"),
                    )
                )
                print(
                    f"fgw n={n:4d} a={alpha:.2f} [{res.lower:.4g}, {res.upper:.4g}] "
                    f"pot {pot_value:.4g} cert {res.certified} {ours_s:.2f}s pot {pot_s:.2f}s",
                    flush=True,
                )
    return {"rows": rows, "summary": summarise_fgw(rows)}


def summarise_fgw(rows) -> dict:
    def share(key, sel):
        sel = [r for r in rows if sel(r)]
        return (sum(r[key] for r in sel) / len(sel)) if sel else None

    small = lambda r: r["n"] <= 6  # noqa: E731
    return {
        "pairs": len(rows),
        "upper_le_pot_share": share("upper_le_pot", lambda r: True),
        "lower_valid_share": share("lower_valid", lambda r: True),
        "certified_share_n_le_6": share("certified", small),
        "certified_share_all": share("certified", lambda r: True),
        "max_time_s_by_n": {
            str(n): max(r["time_s"] for r in rows if r["n"] == n) for n in {r["n"] for r in rows}
        },
        "median_time_s_by_n": {
            str(n): float(np.median([r["time_s"] for r in rows if r["n"] == n]))
            for n in {r["n"] for r in rows}
        },
        "median_pot_time_s_by_n": {
            str(n): float(np.median([r["pot_time_s"] for r in rows if r["n"] == n]))
            for n in {r["n"] for r in rows}
        },
    }


def bench_barycenter(instances: int, size: int, n_inputs: int) -> dict:
    rows = []
    for seed in range(instances):
        graphs = [
            attributed_sbm(10 + (7 * s + seed) % 21, 50_000 + 10 * seed + s)
            for s in range(n_inputs)
        ]
        Cs, Ys = [g.C for g in graphs], [g.Y for g in graphs]
        lam = [1.0 / n_inputs] * n_inputs
        for alpha in (None, 0.5):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                if alpha is None:
                    C, log = ot.gromov.gromov_barycenters(
                        size, Cs, lambdas=lam, max_iter=100, log=True, random_state=seed
                    )
                    Y = None
                else:
                    Y, C, log = ot.gromov.fgw_barycenters(
                        size,
                        Ys,
                        Cs,
                        lambdas=lam,
                        alpha=alpha,
                        max_iter=100,
                        log=True,
                        random_state=seed,
                    )
                pot_s = time.perf_counter() - t0
            a = 1.0 if alpha is None else alpha
            pot = sum(
                lam[s]
                * float(
                    fgw_cost(
                        np.zeros(log["T"][s].shape) if Y is None else ot.dist(Y, Ys[s]),
                        C,
                        Cs[s],
                        log["T"][s],
                        a,
                        check=False,
                    )
                )
                for s in range(n_inputs)
            )
            t0 = time.perf_counter()
            res = gwlite.barycenter(
                Cs,
                size,
                Ys=None if alpha is None else Ys,
                alpha=alpha,
                seed=seed,
                progress=False,
            )
            ours_s = time.perf_counter() - t0
            rows.append(
                dict(
                    seed=seed,
                    kind="gw" if alpha is None else "fgw",
                    objective=res.objective,
                    pot=pot,
                    le_pot=res.objective <= pot * (1 + 1e-12),
                    time_s=ours_s,
                    pot_time_s=pot_s,
                    no_slower=ours_s <= pot_s,
                    gap=[hi - lo for lo, hi in res.intervals],
                )
            )
            print(
                f"bary {rows[-1]['kind']} seed={seed} ours {res.objective:.4g} ({ours_s:.2f}s) "
                f"pot {pot:.4g} ({pot_s:.2f}s)",
                flush=True,
            )
    summary = {
        "instances": len(rows),
        "le_pot_share": float(np.mean([r["le_pot"] for r in rows])),
        "no_slower_share": float(np.mean([r["no_slower"] for r in rows])),
        "total_time_s": float(sum(r["time_s"] for r in rows)),
        "total_pot_time_s": float(sum(r["pot_time_s"] for r in rows)),
    }
    return {"rows": rows, "summary": summary}


def bench_pairwise(n_graphs: int, knn: int) -> dict:
    graphs = [attributed_sbm(8 + k % 8, 90_000 + k) for k in range(n_graphs)]
    t0 = time.perf_counter()
    res = gwlite.pairwise(graphs, alpha=0.5, knn=knn, method="cg", progress=False)
    elapsed = time.perf_counter() - t0
    out = {
        "graphs": n_graphs,
        "knn": knn,
        "pairs": res.n_pairs,
        "evaluated": res.n_evaluated,
        "saved": res.saved,
        "time_s": elapsed,
        "proven_neighbour_share": res.knn(knn).proven_share,
        "diagnostics": {k: v for k, v in res.diagnostics.items()},
    }
    print(f"pairwise {out}", flush=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", default=["fgw", "barycenter", "pairwise"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[4, 5, 6, 10, 25, 50, 100, 200])
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    parser.add_argument("--pairs", type=int, default=8, help="pairs per (n, alpha) cell")
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--bary-instances", type=int, default=10)
    parser.add_argument("--bary-size", type=int, default=10)
    parser.add_argument("--pairwise-graphs", type=int, default=500)
    parser.add_argument("--knn", type=int, default=10)
    parser.add_argument("--json", default=None, help="write the results there (atomically)")
    args = parser.parse_args(argv)
    out = {}
    if args.json and os.path.exists(args.json):
        with open(args.json, encoding="utf-8") as fh:
            out = json.load(fh)  # earlier sections are kept, the ones run now replaced
    for section in args.sections:
        before = machine()
        if section == "fgw":
            result = bench_fgw(args.sizes, args.alphas, args.pairs, args.time_limit)
        elif section == "barycenter":
            result = bench_barycenter(args.bary_instances, args.bary_size, 4)
        elif section == "pairwise":
            result = bench_pairwise(args.pairwise_graphs, args.knn)
        else:
            raise SystemExit(f"unknown section {section!r}")
        out[section] = {"machine_before": before, "machine_after": machine(), **result}
        print(json.dumps(result.get("summary", {}), indent=1), flush=True)
        if args.json:
            data = json.dumps(out, indent=1, default=str).encode()
            atomic_write_bytes(args.json, data)


if __name__ == "__main__":
    main()
