"""Many small problems at once (issue 21): the batched engine against a Python loop of
POT's single-start conditional gradient, in the same run, on the same instances.

Sections (rows in the JSON, a line each on stdout):

* ``dataset``  a stand-in for cell-morphology data (random branching trees in 3-D,
  ``--points`` points sampled along the branches, Euclidean distances), every pair of
  ``--spaces`` spaces: a loop of ``ot.gromov.gromov_wasserstein2`` (one start, the
  product coupling; with the process's BLAS threads, then again on one thread) and ``gwlite.pairwise(method="auto", engine=1)`` (one process, as the
  loop); the share of pairs where gwlite's plan is no worse than POT's, the median
  ``upper / lower``, the wall times;
* ``gap``      which side of the interval is loose, on a sample of pairs: TLB and POT
  CG next to the best of 40 conditional-gradient starts and ``method="rlt"``'s lower
  bound (the Hahn-Grant dual ascent) after a minute;
* ``schemes``  the batched core's two schemes (``"cg"``: conditional gradient from every
  start; ``"proximal"``: mirror descent then conditional gradient) and start counts on
  a sample of the same pairs, next to the POT loop on that sample;
* ``knn``      ``pairwise(method="auto", knn=10)`` on ``--knn-spaces`` spaces: time and
  the share of expensive calls saved;
* ``gpu``      (asked for by ``benchmarks/gpu_check.sh``) 1,000 problems of n = 50 and
  100 of n = 500 in one batch on every backend present (NumPy, torch-CUDA, CuPy), next
  to POT's ``ot.solve_gromov_batch`` (entropic, equal sizes) on the same GPU: problems
  per second and the mean GW cost of the plans (lower is better);
* ``abs``      ``loss_fun="abs_loss"`` on pairs of equal-size connected graphs of the
  networkx atlas (shortest paths): one ``gromov_wasserstein_batch(method="proximal")``
  call against a loop of the single call, and the share of pairs where each reaches
  ``method="exact"``'s value (POT has no absolute loss: the single call is the baseline);
* ``time_limit`` ``method="proximal"`` on one instance of ``n`` points with
  ``time_limit`` = POT CG's time / 5, with 1 and 2 BLAS threads, idle and with two busy
  processes next to it.

Every row records the load average (``os.getloadavg``) and the BLAS threads
(threadpoolctl) at its start: on a shared machine "idle" may not exist.

Usage::

    python benchmarks/bench_batch.py --json benchmarks/results/bench_batch_cpu.json
    python benchmarks/bench_batch.py --quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time

import numpy as np
import ot
from _machine import context
from threadpoolctl import threadpool_limits

import gwlite

SECTIONS = ("dataset", "gap", "schemes", "knn", "abs", "time_limit", "gpu")
DEFAULT_SECTIONS = ("dataset", "schemes", "knn", "time_limit")


def neuron_like(rng, n_points: int) -> np.ndarray:
    """Euclidean distances between ``n_points`` points sampled along a random tree of
    persistent random-walk branches in 3-D (a stand-in for a neuron morphology)."""
    points = [np.zeros(3)]
    for _ in range(rng.integers(3, 8)):
        start = points[rng.integers(len(points))]
        direction = rng.standard_normal(3)
        position = start.copy()
        for _ in range(rng.integers(10, 40)):
            direction = 0.8 * direction / np.linalg.norm(direction) + 0.4 * rng.standard_normal(3)
            position = position + 0.1 * direction / np.linalg.norm(direction)
            points.append(position)
    cloud = np.array(points)
    pick = rng.choice(len(cloud), size=n_points, replace=len(cloud) < n_points)
    X = cloud[pick] + 1e-6 * rng.standard_normal((n_points, 3))
    return np.linalg.norm(X[:, None] - X[None], axis=-1)


def dataset(n_spaces: int, n_points: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [neuron_like(rng, n_points) for _ in range(n_spaces)]


def pot_loop(spaces, pairs) -> tuple[np.ndarray, float]:
    """POT's conditional gradient, one start (the product coupling), one pair at a time."""
    tick = time.perf_counter()
    values = []
    for i, j in pairs:
        p, q = ot.unif(len(spaces[i])), ot.unif(len(spaces[j]))
        values.append(float(ot.gromov.gromov_wasserstein2(spaces[i], spaces[j], p, q)))
    return np.array(values), time.perf_counter() - tick


def bench_dataset(spaces) -> list[dict]:
    n = len(spaces)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    row = {"section": "dataset", "spaces": n, "pairs": len(pairs), **context()}
    cpu = time.process_time()
    cg, row["pot_loop_s"] = pot_loop(spaces, pairs)
    row["pot_loop_cpu_s"] = time.process_time() - cpu
    # the loop again on one BLAS thread, the setting gwlite uses for problems this small
    with threadpool_limits(1):
        cpu = time.process_time()
        _, row["pot_loop_1thread_s"] = pot_loop(spaces, pairs)
        row["pot_loop_1thread_cpu_s"] = time.process_time() - cpu
    row["context_auto"] = context()
    tick, cpu = time.perf_counter(), time.process_time()
    res = gwlite.pairwise(spaces, method="auto", engine=1, progress=False)
    row["auto_s"] = time.perf_counter() - tick
    row["auto_cpu_s"] = time.process_time() - cpu
    ii, jj = np.array(pairs).T
    upper, lower = res.upper[ii, jj], res.lower[ii, jj]
    row["no_worse_than_pot_share"] = float(np.mean(upper <= cg * (1 + 1e-9) + 1e-12))
    row["median_upper_over_pot"] = float(np.median(upper / cg))
    ratio = upper / lower
    row["median_upper_over_lower"] = float(np.median(ratio))
    row["max_upper_over_lower"] = float(np.max(ratio))
    row["upper_over_lower_at_most_1.35_share"] = float(np.mean(ratio <= 1.35))
    row["certified_share"] = float(np.mean(res.certified[ii, jj]))
    row["auto_over_pot_time"] = row["auto_s"] / row["pot_loop_s"]
    row["auto_over_pot_cpu"] = row["auto_cpu_s"] / row["pot_loop_cpu_s"]
    row["auto_over_pot_1thread_time"] = row["auto_s"] / row["pot_loop_1thread_s"]
    print(json.dumps(row), flush=True)
    return [row]


def bench_schemes(spaces, sample: int) -> list[dict]:
    n = len(spaces)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)][:sample]
    C1s = [spaces[i] for i, _ in pairs]
    C2s = [spaces[j] for _, j in pairs]
    rows = []
    cg, pot_s = pot_loop(spaces, pairs)
    for scheme in ("cg", "proximal"):
        for n_starts in (2, 4):
            ctx = context()
            tick = time.perf_counter()
            results = gwlite.gromov_wasserstein_batch(
                C1s, C2s, method="proximal", scheme=scheme, n_starts=n_starts
            )
            wall = time.perf_counter() - tick
            upper = np.array([r.upper for r in results])
            rows.append(
                {
                    "section": "schemes",
                    "scheme": scheme,
                    "n_starts": n_starts,
                    "pairs": len(pairs),
                    "batch_s": wall,
                    "pot_loop_s": pot_s,
                    "no_worse_than_pot_share": float(np.mean(upper <= cg * (1 + 1e-9) + 1e-12)),
                    "median_upper_over_pot": float(np.median(upper / cg)),
                    **ctx,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_gap(spaces, n_pairs: int, starts: int, rlt_pairs: int, rlt_s: float) -> list[dict]:
    """Which side of the interval is loose: on a sample of pairs, TLB and POT CG next to
    a better upper bound (the batched conditional gradient from ``starts`` starts) and,
    on the first ``rlt_pairs``, a stronger proven lower bound (``method="rlt"``, the
    Hahn-Grant dual ascent, for ``rlt_s`` seconds) with its seconds."""
    rng = np.random.default_rng(5)
    rows = []
    for index in range(n_pairs):
        i, j = sorted(int(v) for v in rng.choice(len(spaces), 2, replace=False))
        C1, C2 = spaces[i], spaces[j]
        p, q = ot.unif(len(C1)), ot.unif(len(C2))
        row = {"section": "gap", "i": i, "j": j, **context()}
        row["tlb"] = float(gwlite.lower_bound(C1, C2, lower="tlb"))
        row["pot_cg"] = float(ot.gromov.gromov_wasserstein2(C1, C2, p, q))
        best = gwlite.gromov_wasserstein_batch(
            [C1], [C2], method="proximal", scheme="cg", n_starts=starts
        )[0]
        row["best_of_starts"], row["starts"] = float(best.upper), starts
        if index < rlt_pairs:
            tick = time.perf_counter()
            res = gwlite.gromov_wasserstein(C1, C2, method="rlt", time_limit=rlt_s)
            row["rlt_lower"], row["rlt_s"] = float(res.lower), time.perf_counter() - tick
            row["rlt_iterations"] = int(res.n_iter)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_knn(spaces, k: int) -> list[dict]:
    row = {"section": "knn", "spaces": len(spaces), "k": k, **context()}
    tick = time.perf_counter()
    res = gwlite.pairwise(spaces, method="auto", knn=k, engine=1, progress=False)
    row["wall_s"] = time.perf_counter() - tick
    row["pairs"] = res.n_pairs
    row["evaluated"] = res.n_evaluated
    row["saved_share"] = res.saved / res.n_pairs
    print(json.dumps(row), flush=True)
    return [row]


def atlas_graphs(first: int = 200, last: int = 1253, every: int = 13) -> list[np.ndarray]:
    """Shortest-path matrices of the connected graphs of networkx's atlas (a sample)."""
    import networkx as nx

    graphs = [nx.graph_atlas(i) for i in range(first, last, every)]
    return [np.asarray(nx.floyd_warshall_numpy(g)) for g in graphs if nx.is_connected(g)]


def bench_abs(max_pairs: int, n_starts: int = 4) -> list[dict]:
    """The batched absolute loss against a loop of the single call, same pairs."""
    graphs = atlas_graphs()
    pairs = [
        (i, j)
        for i in range(len(graphs))
        for j in range(i + 1, len(graphs))
        if len(graphs[i]) == len(graphs[j])
    ][:max_pairs]
    C1s, C2s = [graphs[i] for i, _ in pairs], [graphs[j] for _, j in pairs]
    row = {"section": "abs", "pairs": len(pairs), "n_starts": n_starts, **context()}
    with threadpool_limits(1):
        tick = time.perf_counter()
        batch = gwlite.gromov_wasserstein_batch(
            C1s, C2s, loss_fun="abs_loss", method="proximal", n_starts=n_starts
        )
        row["batch_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        loop = [
            gwlite.gromov_wasserstein(a, b, loss_fun="abs_loss", method="proximal")
            for a, b in zip(C1s, C2s)
        ]
        row["loop_s"] = time.perf_counter() - tick
        exact = np.array(
            [
                gwlite.gromov_wasserstein(a, b, loss_fun="abs_loss", method="exact").upper
                for a, b in zip(C1s, C2s)
            ]
        )
    up_batch = np.array([r.upper for r in batch])
    up_loop = np.array([r.upper for r in loop])
    row["sizes"] = sorted({len(a) for a in C1s})
    row["speedup"] = row["loop_s"] / row["batch_s"]
    row["batch_exact_share"] = float(np.mean(up_batch <= exact + 1e-9))
    row["loop_exact_share"] = float(np.mean(up_loop <= exact + 1e-9))
    row["batch_no_worse_than_loop"] = float(np.mean(up_batch <= up_loop + 1e-9))
    row["median_batch_over_exact"] = float(np.median(up_batch / np.maximum(exact, 1e-300)))
    row["median_loop_over_exact"] = float(np.median(up_loop / np.maximum(exact, 1e-300)))
    print(json.dumps(row), flush=True)
    return [row]


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def bench_time_limit(n: int, repeats: int, thread_settings=(1, 2)) -> list[dict]:
    rng = np.random.default_rng(1)
    X, Y = rng.random((n, 2)), rng.random((n, 2))
    C1 = np.linalg.norm(X[:, None] - X[None], axis=-1)
    C2 = np.linalg.norm(Y[:, None] - Y[None], axis=-1)
    p = ot.unif(n)
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for load in ("as found", "two busy processes"):
        workers = []
        if load != "as found":
            workers = [ctx.Process(target=_busy, args=(600.0,)) for _ in range(2)]
            for w in workers:
                w.start()
        try:
            for threads in thread_settings:
                # None: the solver's default (one thread when the machine is busy)
                with threadpool_limits(limits=threads or 2, user_api="blas"):
                    c = context()
                    tick = time.perf_counter()
                    cg = float(ot.gromov.gromov_wasserstein2(C1, C2, p, p))
                    cg_s = time.perf_counter() - tick
                    limit = cg_s / 5
                    for rep in range(repeats):
                        tick = time.perf_counter()
                        res = gwlite.gromov_wasserstein(C1, C2, method="proximal", time_limit=limit)
                        wall = time.perf_counter() - tick
                        rows.append(
                            {
                                "section": "time_limit",
                                "n": n,
                                "load": load,
                                "threads": "default" if threads is None else threads,
                                "repeat": rep,
                                "pot_cg_s": cg_s,
                                "pot_cg": cg,
                                "time_limit": limit,
                                "wall_s": wall,
                                "within_tolerance": wall <= limit + max(0.1 * limit, 0.1),
                                "upper": float(res.upper),
                                "no_worse_than_pot": float(res.upper) <= cg * (1 + 1e-9),
                                "stop_reason": res.diagnostics["stop_reason"],
                                **c,
                            }
                        )
                        print(json.dumps(rows[-1]), flush=True)
        finally:
            for w in workers:
                w.terminate()
                w.join()
    return rows


def _converters() -> dict:
    out = {"numpy": np.asarray}
    try:
        import torch

        if torch.cuda.is_available():
            out["torch-cuda"] = lambda a: torch.as_tensor(a, device="cuda")
    except ImportError:
        pass
    try:
        import cupy

        cupy.zeros(1)
        out["cupy"] = cupy.asarray
    except Exception:  # noqa: BLE001 - no CuPy or no device: the row is left out
        pass
    return out


def _sync(backend: str) -> None:
    if backend == "torch-cuda":
        import torch

        torch.cuda.synchronize()


def bench_gpu(cases) -> list[dict]:
    """Problems per second of one batch on each backend, and POT's batch solver."""
    rows = []
    for B, n in cases:
        spaces = dataset(2 * B, n, seed=2)
        host1, host2 = spaces[:B], spaces[B:]
        for name, to in _converters().items():
            C1s, C2s = [to(C) for C in host1], [to(C) for C in host2]
            gwlite.gromov_wasserstein_batch(C1s[:2], C2s[:2], method="proximal")  # warm-up
            _sync(name)
            tick = time.perf_counter()
            res = gwlite.gromov_wasserstein_batch(C1s, C2s, method="proximal")
            _sync(name)
            wall = time.perf_counter() - tick
            row = {"section": "gpu", "solver": "gwlite batch", "backend": name, "B": B, "n": n}
            row.update(wall_s=wall, problems_per_s=B / wall, **context())
            row["mean_cost"] = float(np.mean([float(r.upper) for r in res]))
            rows.append(row)
            print(json.dumps(row), flush=True)
            if name == "numpy":
                continue
            try:  # POT's batched entropic GW on the same device (equal sizes only)
                stack1, stack2 = to(np.stack(host1)), to(np.stack(host2))
                ot.solve_gromov_batch(stack1[:2], stack2[:2])
                _sync(name)
                tick = time.perf_counter()
                pot = ot.solve_gromov_batch(stack1, stack2)
                _sync(name)
                wall = time.perf_counter() - tick
                plans = [np.asarray(gwlite._xp.to_numpy(T), dtype=np.float64) for T in pot.plan]
                costs = [float(gwlite.gw_cost(a, b, T)) for a, b, T in zip(host1, host2, plans)]
                rows.append(
                    {
                        "section": "gpu",
                        "solver": "ot.solve_gromov_batch",
                        "backend": name,
                        "B": B,
                        "n": n,
                        "wall_s": wall,
                        "problems_per_s": B / wall,
                        "mean_cost": float(np.mean(costs)),
                        **context(),
                    }
                )
            except Exception as err:  # noqa: BLE001 - record why POT's row is missing
                rows.append(
                    {"section": "gpu", "solver": "ot.solve_gromov_batch", "error": repr(err)}
                )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sections", nargs="+", default=list(DEFAULT_SECTIONS), choices=SECTIONS)
    parser.add_argument("--gpu-cases", nargs="+", default=["1000x50", "100x500"])
    parser.add_argument("--spaces", type=int, default=100)
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--gap-pairs", type=int, default=12)
    parser.add_argument("--rlt-pairs", type=int, default=3)
    parser.add_argument("--rlt-seconds", type=float, default=60.0)
    parser.add_argument("--knn-spaces", type=int, default=1000)
    parser.add_argument("--abs-pairs", type=int, default=150)
    parser.add_argument("--n", type=int, nargs="+", default=[1000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--threads", nargs="+", default=["1", "2"], help="BLAS threads: numbers or 'default'"
    )
    args = parser.parse_args()
    if args.quick:
        args.spaces, args.sample, args.knn_spaces, args.n, args.repeats = 20, 50, 60, [300], 1
        args.abs_pairs = 30
    out = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "args": vars(args),
        "rows": [],
    }
    spaces = dataset(args.spaces, args.points)
    # warm-up: imports and first calls off the clock
    gwlite.gromov_wasserstein_batch(spaces[:2], spaces[1:3])
    pot_loop(spaces, [(0, 1)])
    if "dataset" in args.sections:
        out["rows"] += bench_dataset(spaces)
    if "gap" in args.sections:
        out["rows"] += bench_gap(spaces, args.gap_pairs, 40, args.rlt_pairs, args.rlt_seconds)
    if "schemes" in args.sections:
        out["rows"] += bench_schemes(spaces, args.sample)
    if "knn" in args.sections:
        out["rows"] += bench_knn(dataset(args.knn_spaces, args.points, seed=1), 10)
    if "abs" in args.sections:
        out["rows"] += bench_abs(args.abs_pairs)
    if "time_limit" in args.sections:
        for n in args.n:
            settings = [None if t == "default" else int(t) for t in args.threads]
            out["rows"] += bench_time_limit(n, args.repeats, settings)
    if "gpu" in args.sections:
        cases = [tuple(int(v) for v in c.split("x")) for c in args.gpu_cases]
        out["rows"] += bench_gpu(cases)
    if args.json:
        from gwlite.atomic import atomic_write_bytes

        atomic_write_bytes(args.json, json.dumps(out, indent=1).encode())


if __name__ == "__main__":
    main()
