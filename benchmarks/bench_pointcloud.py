"""GW between point clouds: gwlite's point-cloud path next to POT and OTT-JAX.

Instances (``gwlite.pointcloud.samples``, squared Euclidean distances, uniform weights):
a torus (seed 1) against a trefoil tube (seed 2), and the torus against a rotated,
translated and shuffled copy of itself (GW = 0).

Parts (each cell runs in its own subprocess, so that its peak RSS is its own):

* ``small`` (n = 1500): ``pot_cg`` (``ot.gromov.gromov_wasserstein`` on the two dense
  matrices), ``multiscale`` and ``auto`` (``gwlite.gromov_wasserstein`` on
  ``PointCloud`` inputs);
* ``mid`` (n = 20,000): ``multiscale``, ``ott_lrgw`` (OTT-JAX ``LRGromovWasserstein`` on
  ``PointCloud`` geometries, rank 10) and ``pot_lowrank``
  (``ot.lowrank_gromov_wasserstein_samples``, rank 10);
* ``lean`` (n = 20,000): ``multiscale`` with its defaults, ``multiscale_lean``
  (``n_clusters=300, lower="spectral"``, :data:`LEAN`) and ``pot_lowrank``, for the
  memory comparison;
* ``large`` (n = 100,000): ``multiscale`` on both pairs;
* ``pairwise`` (20 clouds of 2,000 points: tori and trefoils of several radii and tube
  widths, half of them rigidly moved): ``pairwise`` (``gwlite.pairwise`` on the
  ``PointCloud`` list, default ``method="sorted"``, one process) against ``loop`` (one
  ``gwlite.gromov_wasserstein(c_i, c_j, method="sorted")`` call per pair, which builds
  the two distance matrices); the largest difference between the two answers is recorded.

Every plan is priced by the same exact float64 formula
(:func:`gwlite.pointcloud.geometry.gw_cost_sparse`, or ``gw_cost_lowrank`` for the
low-rank plans ``Q diag(1/g) R^T``, which are never formed), outside the timed call.
Each cell records wall time, CPU time of its process (all threads), peak RSS of its
process (``ru_maxrss``) and the RSS after the imports of the libraries it calls (POT's
import brings torch and JAX when installed, about 330 MB here; every cell that calls POT
pays it), ``uptime`` load before and after, and the BLAS threads (threadpoolctl).

Usage::

    python benchmarks/bench_pointcloud.py --part small          # -> results/bench_pointcloud_small.json
    python benchmarks/bench_pointcloud.py --table               # markdown tables of all parts
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PARTS = {
    "small": (1500, [("pair", "pot_cg"), ("pair", "multiscale"), ("pair", "auto")]),
    "mid": (20000, [("pair", "multiscale"), ("pair", "ott_lrgw"), ("pair", "pot_lowrank")]),
    "large": (100_000, [("pair", "multiscale"), ("rigid", "multiscale")]),
    "pairwise": (2000, [("clouds20", "pairwise"), ("clouds20", "loop")]),
    "lean": (20000, [("pair", "multiscale"), ("pair", "multiscale_lean"), ("pair", "pot_lowrank")]),
}
#: the memory-lean settings of ``multiscale_lean``: a smaller coarse problem and the
#: spectral bound alone (the quantised TLB's level grid is this size's next peak)
LEAN = {"n_clusters": 300, "lower": "spectral"}
N_CLOUDS = 20
RANK = 10


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _instance(pair: str, n: int):
    from gwlite.pointcloud.samples import rigid_copy, torus, trefoil

    X = torus(n, seed=1)
    if pair == "rigid":
        Y, perm = rigid_copy(X, seed=3)
        return X, Y, perm
    return X, trefoil(n, seed=2), None


def _clouds(n: int) -> list:
    """Tori and trefoils of several shapes, every other one rigidly moved and shuffled."""
    import gwlite
    from gwlite.pointcloud.samples import rigid_copy, torus, trefoil

    out = []
    for k in range(N_CLOUDS):
        if k % 4 < 2:
            X = torus(n, seed=k, r=0.25 + 0.02 * k)
        else:
            X = trefoil(n, seed=k, tube=0.1 + 0.01 * k)
        if k % 2:
            X = rigid_copy(X, seed=k)[0]
        out.append(gwlite.PointCloud(X, "sqeuclidean"))
    return out


def _pairwise_cell(method: str, n: int) -> dict:
    import numpy as np

    import gwlite

    clouds = _clouds(n)
    if method == "loop":
        import ot  # noqa: F401  (the dense sorted route imports POT: not timed)
    rss0 = _rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    if method == "pairwise":
        res = gwlite.pairwise(clouds, engine=1, progress=False)
        lower, upper = res.lower, res.upper
    else:
        lower, upper = np.zeros((N_CLOUDS, N_CLOUDS)), np.zeros((N_CLOUDS, N_CLOUDS))
        for i in range(N_CLOUDS):
            for j in range(i + 1, N_CLOUDS):
                r = gwlite.gromov_wasserstein(clouds[i], clouds[j], method="sorted")
                lower[i, j] = lower[j, i] = r.lower
                upper[i, j] = upper[j, i] = r.upper
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    out = {}
    saved = RESULTS / "bench_pointcloud_pairwise_answer.npz"
    if method == "pairwise":
        with open(saved, "wb") as fh:
            np.savez(fh, lower=lower, upper=upper)
    elif saved.exists():  # the pairwise cell ran first: how far apart are the answers?
        ref = np.load(saved)
        scale = max(1.0, float(np.max(np.abs(ref["upper"]))))
        out["max_difference_vs_pairwise"] = float(
            max(np.max(np.abs(ref["upper"] - upper)), np.max(np.abs(ref["lower"] - lower))) / scale
        )
    return out | {
        "pair": "clouds20",
        "method": method,
        "n": n,
        "n_clouds": N_CLOUDS,
        "time_s": elapsed,
        "cpu_s": cpu,
        "rss_after_imports_mb": rss0,
        "peak_rss_mb": _rss_mb(),
        "mean_upper": float(upper.sum() / (N_CLOUDS * (N_CLOUDS - 1))),
        "mean_lower": float(lower.sum() / (N_CLOUDS * (N_CLOUDS - 1))),
    }


def _run_cell(pair: str, method: str, n: int) -> dict:
    import numpy as np

    if pair == "clouds20":
        return _pairwise_cell(method, n)

    import gwlite
    from gwlite.pointcloud import geometry

    X, Y, perm = _instance(pair, n)
    c1, c2 = gwlite.PointCloud(X, "sqeuclidean"), gwlite.PointCloud(Y, "sqeuclidean")
    out: dict = {}
    if method == "pot_cg":
        import ot

        rss0 = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        D1, D2 = geometry.distances(X, X, "sqeuclidean"), geometry.distances(Y, Y, "sqeuclidean")
        plan = ot.gromov.gromov_wasserstein(D1, D2, c1.p, c2.p, "square_loss")
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        rows, cols = np.nonzero(plan)
        values = plan[rows, cols]
    elif method in ("multiscale", "auto", "multiscale_lean"):
        import ot  # noqa: F401  (imported by the solver: its RSS belongs to the imports)

        import gwlite.solvers.multiscale  # noqa: F401

        options = LEAN if method == "multiscale_lean" else {}
        rss0 = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        res = gwlite.gromov_wasserstein(
            c1, c2, method=method.removesuffix("_lean"), progress=False, **options
        )
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        out.update(lower=float(res.lower), reported_upper=float(res.upper))
        out["route"] = res.diagnostics.get("route")
        if "stages" in res.diagnostics:
            out["stages"] = res.diagnostics["stages"]
        out["bounds"] = res.diagnostics.get("bounds")
        coo = __import__("scipy.sparse").sparse.coo_array(res.coupling)
        rows, cols, values = coo.row, coo.col, coo.data
    elif method == "ott_lrgw":
        import jax

        jax.config.update("jax_enable_x64", True)
        from ott.geometry import pointcloud
        from ott.problems.quadratic import quadratic_problem
        from ott.solvers.quadratic import gromov_wasserstein_lr

        rss0 = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        prob = quadratic_problem.QuadraticProblem(
            pointcloud.PointCloud(X), pointcloud.PointCloud(Y)
        )
        solver = gromov_wasserstein_lr.LRGromovWasserstein(
            rank=RANK, min_iterations=200, max_iterations=2000
        )
        sol = solver(prob)
        q, r, g = (np.asarray(a) for a in (sol.q, sol.r, sol.g))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        out["settings"] = {"rank": RANK, "min_iterations": 200, "max_iterations": 2000}
        out["converged"] = bool(sol.converged)
        L, R = q / g, r
    elif method == "pot_lowrank":
        import ot

        rss0 = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        Q, R, g = ot.lowrank_gromov_wasserstein_samples(X, Y, rank=RANK, seed_init=0)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        out["settings"] = {"rank": RANK, "defaults": "numItermax=1000, stopThr=1e-4"}
        L = Q / g
    else:
        raise SystemExit(f"unknown method {method}")
    tick = time.perf_counter()
    if method in ("ott_lrgw", "pot_lowrank"):
        upper = geometry.gw_cost_lowrank(c1, c2, L, R)
        a, b = L @ R.sum(axis=0), R @ L.sum(axis=0)
    else:
        upper = geometry.gw_cost_sparse(c1, c2, rows, cols, values, "square_loss")
        a = np.bincount(rows, values, minlength=n)
        b = np.bincount(cols, values, minlength=n)
        if perm is not None:
            truth = np.argsort(perm)
            out["true_partner_mass"] = float(values[truth[rows] == cols].sum())
    out.update(
        pair=pair,
        method=method,
        n=n,
        time_s=elapsed,
        cpu_s=cpu,
        upper=upper,
        price_s=time.perf_counter() - tick,
        marginal_error=float(max(np.abs(a - c1.p).sum(), np.abs(b - c2.p).sum())),
        product_cost=geometry.product_cost(c1, c2),
        rss_after_imports_mb=rss0,
        peak_rss_mb=_rss_mb(),
    )
    return out


def _threads() -> dict:
    from threadpoolctl import threadpool_info

    return {f"{i['internal_api']}": i["num_threads"] for i in threadpool_info()}


def _part(name: str, threads: int) -> None:
    n, cells = PARTS[name]
    rows = []
    for pair, method in cells:
        load_before = os.getloadavg()
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        proc = subprocess.run(
            [sys.executable, __file__, "--cell", pair, method, str(n)],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode:
            row = {"pair": pair, "method": method, "n": n, "error": proc.stderr[-2000:]}
        else:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update(load_before=load_before, load_after=os.getloadavg(), threads=threads)
        print(json.dumps({k: v for k, v in row.items() if k != "stages"}), flush=True)
        rows.append(row)
        _write(name, rows)


def _write(name: str, rows: list) -> None:
    from gwlite.atomic import atomic_write_bytes

    meta = {"machine": "2 cores (load per row: load_before, load_after)", "blas": _threads()}
    path = RESULTS / f"bench_pointcloud_{name}.json"
    atomic_write_bytes(path, json.dumps({"meta": meta, "rows": rows}, indent=1).encode())


def _table() -> None:
    """Markdown tables of every part measured so far (for docs/benchmarks/pointcloud.md)."""
    for name in PARTS:
        path = RESULTS / f"bench_pointcloud_{name}.json"
        if not path.exists():
            continue
        if name == "pairwise":
            print(
                "\n| how | clouds x points | wall (s) | CPU (s) | peak RSS (MB) | difference | load |"
            )
            print("|---|---|---|---|---|---|---|")
            for r in json.loads(path.read_text())["rows"]:
                diff = r.get("max_difference_vs_pairwise")
                print(
                    f"| {r['method']} | {r['n_clouds']} x {r['n']:,} | {r['time_s']:.1f} | "
                    f"{r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                    f"{'' if diff is None else f'{diff:.1e}'} | "
                    f"{r['load_before'][0]:.0f} to {r['load_after'][0]:.0f} |"
                )
            continue
        print(
            "\n| pair | method | n | wall (s) | CPU (s) | peak RSS (MB) | upper | lower "
            "| peak - imports (MB) | upper / product | marginal error | load |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in json.loads(path.read_text())["rows"]:
            if "error" in r:
                print(f"| {r['pair']} | {r['method']} | {r['n']} | failed | | | | | | | | |")
                continue
            low, cpu = r.get("lower"), r.get("cpu_s")
            print(
                f"| {r['pair']} | {r['method']} | {r['n']:,} | {r['time_s']:.0f} | "
                f"{'n/a' if cpu is None else f'{cpu:.1f}'} | {r['peak_rss_mb']:.0f} | "
                f"{r['upper']:.5g} | {'' if low is None else f'{low:.4g}'} | "
                f"{r['peak_rss_mb'] - r['rss_after_imports_mb']:.0f} | "
                f"{r['upper'] / r['product_cost']:.2e} | {r['marginal_error']:.1e} | "
                f"{r['load_before'][0]:.0f} to {r['load_after'][0]:.0f} |"
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=list(PARTS))
    parser.add_argument("--cell", nargs=3, metavar=("PAIR", "METHOD", "N"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args(argv)
    if args.cell:
        pair, method, n = args.cell
        print(json.dumps(_run_cell(pair, method, int(n))))
    elif args.part:
        _part(args.part, args.threads)
    elif args.table:
        _table()


if __name__ == "__main__":
    main()
