"""How wide is each point-cloud lower bound? The spectral bound next to the others.

Instances (``gwlite.pointcloud.samples``, uniform weights, the same as
``bench_pointcloud.py``): a torus (seed 1) against a trefoil tube (seed 2) (``pair``),
and the torus against a rotated, translated and shuffled copy of itself (``rigid``,
GW = 0).

For each cell (metric, pair, n) the script computes every lower bound of
:data:`gwlite.pointcloud.bounds.CLOUD_LOWER_BOUNDS` on NumPy clouds (each timed
alone, quantised ones with their default 500 clusters per cloud) and an upper bound:
the exact cost of the multiscale plan (``method="multiscale"``, ``lower="flb"``), and at
n = 1500 also POT's CG on the dense matrices; the smallest upper is the reference. At
n = 10^5 (above ``UPPER_MAX``) no upper is computed here: ``bench_pointcloud.py --part
large`` prices the multiscale plans of the same instances.
The width of a bound is ``upper - lower``; ``lower / upper`` is the share of the
reference it certifies. For ``sqeuclidean`` the closed-form bounds are also timed on
torch-CPU clouds (same numbers, checked to 1e-9 relative).

Each cell runs in its own process; ``uptime`` load before and after and the BLAS
threads (threadpoolctl) are recorded next to the numbers.

``--device BACKEND`` (``torch-cpu``, ``torch-cuda``, ``cupy``; for a GPU session,
``benchmarks/gpu_check.sh``): the bounds and the exact cost of the rigid copy's true
matching at ``--sizes`` (default 10^5 and 10^6, ``sqeuclidean``) and the streamed
``euclidean`` mean-row bound at ``--euclidean-sizes`` (default 2 x 10^4 and 10^5), with
NumPy timed in the same run (``sqeuclidean`` up to ``--numpy-max``, ``euclidean`` up to
2 x 10^4).

Usage::

    python benchmarks/bench_pointcloud_bounds.py --part sq      # -> results/bench_pointcloud_bounds_sq.json
    python benchmarks/bench_pointcloud_bounds.py --table        # markdown tables of all parts
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PARTS = {
    "sq": [("sqeuclidean", pair, n) for n in (1500, 20_000, 100_000) for pair in ("pair", "rigid")],
    "euclid": [
        ("euclidean", "pair", 1500),
        ("euclidean", "rigid", 1500),
        ("euclidean", "pair", 4000),
    ],
}
TORCH_BOUNDS = ("mean_row", "flb", "spectral")
# above this the multiscale upper bound is left to bench_pointcloud.py (minutes per cell)
UPPER_MAX = 50_000


def _instance(pair: str, n: int):
    from gwlite.pointcloud.samples import rigid_copy, torus, trefoil

    X = torus(n, seed=1)
    Y = rigid_copy(X, seed=3)[0] if pair == "rigid" else trefoil(n, seed=2)
    return X, Y


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _uppers(c1, c2, X, Y, metric: str) -> dict:
    import gwlite

    res, wall = _timed(
        lambda: gwlite.gromov_wasserstein(c1, c2, method="multiscale", lower="flb", progress=False)
    )
    uppers = {"multiscale": {"upper": res.upper, "seconds": wall}}
    if len(X) <= 2000:
        import ot

        from gwlite.pointcloud import geometry

        D1, D2 = geometry.distances(X, X, metric), geometry.distances(Y, Y, metric)
        plan, wall = _timed(lambda: ot.gromov.gromov_wasserstein(D1, D2, c1.p, c2.p))
        cost = gwlite.gw_cost(c1, c2, plan)
        uppers["pot_cg"] = {"upper": cost, "seconds": wall}
    return uppers


def _torch_times(X, Y, metric: str, bounds: dict) -> dict:
    import torch

    import gwlite

    c1 = gwlite.PointCloud(torch.as_tensor(X), metric)
    c2 = gwlite.PointCloud(torch.as_tensor(Y), metric)
    out = {}
    for lower in TORCH_BOUNDS:
        value, wall = _timed(lambda lower=lower: gwlite.lower_bound(c1, c2, lower=lower))
        want = bounds[lower]["value"]
        assert abs(value - want) <= 1e-9 * max(1.0, abs(want)), (lower, value, want)
        out[lower] = {"value": value, "seconds": wall}
    return out


def _warm_up(metric: str) -> None:
    """Every bound once on 20 points (imports and first-call set-up are not timed)."""
    import torch

    import gwlite
    from gwlite.pointcloud.bounds import CLOUD_LOWER_BOUNDS

    X, Y = _instance("pair", 20)
    for lib in (lambda a: a, torch.as_tensor):
        c1, c2 = gwlite.PointCloud(lib(X), metric), gwlite.PointCloud(lib(Y), metric)
        for lower in CLOUD_LOWER_BOUNDS:
            gwlite.lower_bound(c1, c2, lower=lower)


def _run_cell(metric: str, pair: str, n: int) -> dict:
    import gwlite
    from gwlite.pointcloud.bounds import CLOUD_LOWER_BOUNDS

    _warm_up(metric)
    X, Y = _instance(pair, n)
    c1, c2 = gwlite.PointCloud(X, metric), gwlite.PointCloud(Y, metric)
    bounds = {}
    for lower in CLOUD_LOWER_BOUNDS:
        value, wall = _timed(lambda lower=lower: gwlite.lower_bound(c1, c2, lower=lower))
        bounds[lower] = {"value": value, "seconds": wall}
    row = {"metric": metric, "pair": pair, "n": n, "bounds": bounds}
    if metric == "sqeuclidean":
        row["torch_cpu"] = _torch_times(X, Y, metric, bounds)
    if n <= UPPER_MAX:
        row["uppers"] = _uppers(c1, c2, X, Y, metric)
        row["upper"] = min(u["upper"] for u in row["uppers"].values())
    return row


def _on_backend(X, backend: str):
    if backend == "numpy":
        return X
    if backend == "cupy":
        import cupy

        return cupy.asarray(X)
    import torch

    return torch.as_tensor(X, device="cuda" if backend == "torch-cuda" else "cpu")


def _device_row(lib: str, metric: str, n: int, bounds) -> dict:
    """Bounds between the torus and the trefoil, and the exact cost of the rigid copy's
    true matching, on ``lib``; each timed alone (the results are Python floats, so every
    timing includes the device's synchronisation)."""
    import numpy as np

    import gwlite
    from gwlite.pointcloud import geometry

    _warm_up_on(lib, metric)
    X, Y = _instance("pair", n)
    c1 = gwlite.PointCloud(_on_backend(X, lib), metric)
    c2 = gwlite.PointCloud(_on_backend(Y, lib), metric)
    row = {"backend": lib, "metric": metric, "n": n}
    for lower in bounds:
        value, wall = _timed(lambda lower=lower: gwlite.lower_bound(c1, c2, lower=lower))
        row[lower] = {"value": value, "seconds": wall}
    if metric == "sqeuclidean":
        Z, perm = _instance_rigid(n)
        moved = gwlite.PointCloud(_on_backend(Z, lib), metric)
        # point i of the torus is point argsort(perm)[i] of its copy
        rows, cols, w = np.arange(n), np.argsort(perm), np.full(n, 1.0 / n)
        cost, wall = _timed(
            lambda: geometry.gw_cost_sparse(c1, moved, rows, cols, w, "square_loss")
        )
        row["rigid_cost"] = {"value": cost, "seconds": wall}
    return row


def _device_cells(backend: str, sizes, euclidean_sizes, numpy_max: int) -> list[dict]:
    """Bounds and exact costs on ``backend`` next to NumPy (same instances, same run;
    NumPy's streamed euclidean bound only up to 2 x 10^4 points)."""
    rows = []
    plan = [("sqeuclidean", n, ("mean_row", "flb", "spectral")) for n in sizes]
    plan += [("euclidean", n, ("mean_row", "flb")) for n in euclidean_sizes]
    for metric, n, bounds in plan:
        limit = numpy_max if metric == "sqeuclidean" else min(numpy_max, 20_000)
        for lib in (backend, "numpy"):
            if lib == "numpy" and n > limit:
                continue
            row = _device_row(lib, metric, n, bounds)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _instance_rigid(n: int):
    from gwlite.pointcloud.samples import rigid_copy, torus

    return rigid_copy(torus(n, seed=1), seed=3)


def _warm_up_on(lib: str, metric: str) -> None:
    import gwlite

    X, Y = _instance("pair", 20)
    c1 = gwlite.PointCloud(_on_backend(X, lib), metric)
    c2 = gwlite.PointCloud(_on_backend(Y, lib), metric)
    for lower in ("mean_row", "flb", "spectral"):
        gwlite.lower_bound(c1, c2, lower=lower)


def _threads() -> dict:
    from threadpoolctl import threadpool_info

    return {f"{i['internal_api']}": i["num_threads"] for i in threadpool_info()}


def _part(name: str) -> None:
    rows = []
    for metric, pair, n in PARTS[name]:
        load_before = os.getloadavg()
        cmd = [sys.executable, __file__, "--cell", metric, pair, str(n)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            row = {"metric": metric, "pair": pair, "n": n, "error": done.stderr[-500:]}
        else:
            row = json.loads(done.stdout.strip().splitlines()[-1])
        row.update(load_before=load_before, load_after=os.getloadavg())
        print(json.dumps(row), flush=True)
        rows.append(row)
    _write(name, rows)


def _write(name: str, rows: list, folder: Path | None = None) -> None:
    from gwlite.atomic import atomic_write_bytes

    meta = {"threads": _threads(), "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    meta["load"] = os.getloadavg()
    path = (folder or RESULTS) / f"bench_pointcloud_bounds_{name}.json"
    atomic_write_bytes(path, json.dumps({"meta": meta, "rows": rows}, indent=1).encode())


def _width_ratio(upper, bounds: dict, names) -> str:
    """(upper - spectral) / (upper - the best other bound): below 1 when spectral helps."""
    if upper is None:
        return "–"
    other = max(bounds[k]["value"] for k in names if k != "spectral")
    denominator = upper - other
    if denominator <= 0:
        return "–"
    return f"{(upper - bounds['spectral']['value']) / denominator:.3f}"


def _table() -> None:
    names = ("mean_row", "flb", "quantized_slb", "quantized_tlb", "spectral")
    print(
        f"| metric | pair | n | upper | {' | '.join(names)} | best | spectral width / best other |"
    )
    print("|" + "---|" * (len(names) + 6))
    for name in PARTS:
        path = RESULTS / f"bench_pointcloud_bounds_{name}.json"
        if not path.exists():
            continue
        for row in json.loads(path.read_text())["rows"]:
            head = f"| {row['metric']} | {row['pair']} | {row['n']} |"
            if "error" in row:
                print(head + " not finished (see the JSON) |" + " |" * (len(names) + 2))
                continue
            upper, b = row.get("upper"), row["bounds"]
            cells = [f"{b[k]['value']:.4g} ({b[k]['seconds']:.2g} s)" for k in names]
            best = max(names, key=lambda k: b[k]["value"])
            shown = "–" if upper is None else f"{upper:.4g}"
            ratio = _width_ratio(upper, b, names)
            print(f"{head} {shown} | " + " | ".join(cells) + f" | {best} | {ratio} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS))
    parser.add_argument("--cell", nargs=3, metavar=("METRIC", "PAIR", "N"))
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--device", choices=("torch-cpu", "torch-cuda", "cupy"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--euclidean-sizes", type=int, nargs="*", default=[20_000, 100_000])
    parser.add_argument("--numpy-max", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.device:
        rows = _device_cells(args.device, args.sizes, args.euclidean_sizes, args.numpy_max)
        _write(f"device_{args.device}", rows, args.out)
    elif args.cell:
        metric, pair, n = args.cell
        print(json.dumps(_run_cell(metric, pair, int(n))))
    elif args.part:
        _part(args.part)
    elif args.table:
        _table()
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
