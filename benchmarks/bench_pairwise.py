"""gwlite.pairwise: pairs per second, Dask scaling, the whole atlas, knn savings.

Sections (each a list of rows in the JSON, and a Markdown table on stdout):

* ``baseline``  one ``gromov_wasserstein`` call per pair (the sorted method) on a sample
  of atlas pairs, and what that rate means for the whole atlas (marked *extrapolated*);
* ``atlas``     the whole atlas (1,252 graphs, 783,126 pairs) with the sorted method, in
  this process (``engine=1``) and on all local cores (``engine=None``);
* ``dask``      pairs/s with a ``LocalCluster`` of 1 and of 2 worker processes (one thread
  each) for ``sorted``, ``tlb`` (sorted with ``lower="tlb"``) and ``proximal`` (``cg``
  in its place when gwlite has no ``proximal`` method yet: the row says which ran); the
  speed-up from 1 to 2 workers, and the CPU seconds of the workers and of the driver;
* ``knn``       the share of expensive calls ``knn`` mode saves, on the atlas and on 200
  random graphs with 10-40 nodes (:func:`gwlite.datasets.families`);
* ``gpu``       (only when asked, from ``benchmarks/gpu_check.sh``) the whole atlas with
  torch-CUDA and CuPy inputs next to NumPy in the same run, and their largest difference.

Wall-clock times come from ``time.perf_counter``, CPU times from ``time.process_time``
(driver, Dask workers) and ``resource.getrusage(RUSAGE_CHILDREN)`` (local worker
processes). On a machine shared with other jobs the wall-clock figures (and the scaling
ratio) are polluted; the CPU seconds say how much work was done.

Usage::

    python benchmarks/bench_pairwise.py --json benchmarks/results/bench_pairwise_cpu.json
    python benchmarks/bench_pairwise.py --quick          # smaller datasets, a smoke test
    python benchmarks/bench_pairwise.py --sections dask knn
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import time

import numpy as np

import gwlite
from gwlite.datasets import atlas, families

SECTIONS = ("baseline", "atlas", "dask", "knn", "gpu")
DEFAULT_SECTIONS = ("baseline", "atlas", "dask", "knn")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _expensive_method() -> tuple[str, dict, str]:
    if "proximal" in gwlite.METHODS:
        return "proximal", {}, "proximal"
    # POT's CG cycles for thousands of iterations on a few atlas pairs (median 4
    # iterations, max 9021 at max_iter=10000): a cap keeps the mean cost near the median
    return (
        "cg",
        {"max_iter": 100},
        ("cg, max_iter=100 (proximal is not in gwlite.METHODS yet: cg measured in its place)"),
    )


def timed_pairwise(spaces, **kwargs) -> tuple[gwlite.PairwiseResult, dict]:
    wall, cpu, child = time.perf_counter(), time.process_time(), _children_cpu()
    res = gwlite.pairwise(spaces, progress=False, **kwargs)
    return res, {
        "wall_s": time.perf_counter() - wall,
        "driver_cpu_s": time.process_time() - cpu,
        "children_cpu_s": _children_cpu() - child,
        "pairs": res.n_pairs,
        "pairs_per_s": res.n_pairs / (time.perf_counter() - wall),
        "engine": res.diagnostics["engine"],
    }


def bench_baseline(data, sample: int) -> list[dict]:
    rng = np.random.default_rng(0)
    n = len(data)
    ii = rng.integers(0, n, size=sample)
    jj = (ii + rng.integers(1, n, size=sample)) % n
    gwlite.gromov_wasserstein(*data[0][:1], *data[1][:1])  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for i, j in zip(ii, jj):
        (C1, p), (C2, q) = data[i], data[j]
        gwlite.gromov_wasserstein(C1, C2, p, q, return_coupling=False, diagnostics=False)
    wall = time.perf_counter() - start
    per_pair = wall / sample
    pairs = n * (n - 1) // 2
    return [
        {
            "what": f"one gromov_wasserstein call per pair, {sample} atlas pairs",
            "per_pair_ms": 1e3 * per_pair,
            "cpu_per_pair_ms": 1e3 * (time.process_time() - cpu) / sample,
            "atlas_extrapolated_s": per_pair * pairs,
        }
    ]


def bench_atlas(data) -> list[dict]:
    rows = []
    for engine in (1, None):
        res, row = timed_pairwise(data, engine=engine)
        row.update(
            what="whole atlas, sorted",
            certified_share=float(np.mean(res.certified[np.triu_indices(len(data), 1)])),
        )
        rows.append(row)
    return rows


def _cluster(workers: int):
    from distributed import Client, LocalCluster

    quiet = {f"POT_BACKEND_DISABLE_{b}": "1" for b in ("PYTORCH", "JAX", "TENSORFLOW")}
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        env=quiet,
    )
    return cluster, Client(cluster)


def bench_dask(cases) -> list[dict]:
    rows = []
    for workers in (1, 2):
        cluster, client = _cluster(workers)
        try:
            for name, spaces, method, options in cases:
                # warm-up: imports (POT for TLB and the expensive method) on every worker
                gwlite.pairwise(spaces[:8], method=method, engine=client, progress=False, **options)
                before = client.run(time.process_time)
                res, row = timed_pairwise(spaces, method=method, engine=client, **options)
                after = client.run(time.process_time)
                row.update(
                    case=name,
                    workers=workers,
                    spaces=len(spaces),
                    workers_cpu_s=float(sum(after[w] - before.get(w, 0.0) for w in after)),
                )
                rows.append(row)
                print(
                    f"  dask {workers} worker(s), {name}: {row['pairs_per_s']:,.0f} pairs/s",
                    flush=True,
                )
        finally:
            client.close()
            cluster.close()
    one = {r["case"]: r for r in rows if r["workers"] == 1}
    for r in rows:
        if r["workers"] == 2:
            r["speedup_vs_1"] = r["pairs_per_s"] / one[r["case"]]["pairs_per_s"]
    return rows


def bench_knn(cases, k: int, method: str, options: dict, label: str) -> list[dict]:
    rows = []
    for name, spaces in cases:
        res, row = timed_pairwise(spaces, method=method, knn=k, **options)
        nb = res.knn(k)
        row.update(
            case=name,
            method=label,
            k=k,
            spaces=len(spaces),
            evaluated=res.n_evaluated,
            saved=res.saved,
            saved_share=res.saved / res.n_pairs,
            needed_after_cheap=res.diagnostics["needed_after_cheap"],
            rounds=res.diagnostics["rounds"],
            proven_share=nb.proven_share,
        )
        rows.append(row)
        print(f"  knn {name}: saved {row['saved_share']:.1%} of {res.n_pairs} calls", flush=True)
    return rows


def bench_gpu(data) -> list[dict]:
    rows = []
    ref, row = timed_pairwise(data, engine=1, lower="slb")
    rows.append({**row, "backend": "numpy (this process)"})
    converters = {}
    try:
        import torch

        if torch.cuda.is_available():
            converters["torch-cuda"] = lambda a: torch.as_tensor(a, device="cuda")
    except ImportError:
        pass
    try:
        import cupy

        converters["cupy"] = cupy.asarray
    except ImportError:
        pass
    for name, to in converters.items():
        spaces = [(to(C), to(p)) for C, p in data]
        gwlite.pairwise(spaces[:50], progress=False)  # warm-up (kernels, allocator)
        res, row = timed_pairwise(spaces, lower="slb")
        diff = float(max(np.abs(res.upper - ref.upper).max(), np.abs(res.lower - ref.lower).max()))
        rows.append({**row, "backend": name, "max_abs_diff_vs_numpy": diff})
    if not converters:
        rows.append({"backend": "no CUDA device or CuPy here: nothing measured"})
    return rows


def _table(title, rows, cols) -> str:
    lines = [
        f"\n### {title}\n",
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:,.3g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="write the results there")
    parser.add_argument("--quick", action="store_true", help="small datasets (smoke test)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(DEFAULT_SECTIONS))
    parser.add_argument("--k", type=int, default=5, help="neighbours in knn mode")
    args = parser.parse_args(argv)

    full = atlas()
    data = list(full)
    if args.quick:
        data = data[::20]
    method, options, label = _expensive_method()
    out = {}
    if args.json and os.path.exists(args.json):
        with open(args.json, encoding="utf-8") as fh:
            out = json.load(fh)  # earlier sections are kept, the ones run now replaced

    def save() -> None:
        if args.json:
            os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(out, fh, indent=2, default=str)

    out |= {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "gwlite": gwlite.__version__,
            "date": time.strftime("%Y-%m-%d"),
        },
        "expensive_method": label,
    }
    if "baseline" in args.sections:
        print("baseline ...", flush=True)
        out["baseline"] = bench_baseline(full, 300 if args.quick else 2000)
        save()
        print(
            _table(
                "one call per pair",
                out["baseline"],
                ["what", "per_pair_ms", "cpu_per_pair_ms", "atlas_extrapolated_s"],
            )
        )
    if "atlas" in args.sections:
        print("atlas ...", flush=True)
        out["atlas"] = bench_atlas(data)
        save()
        print(
            _table(
                "whole atlas, sorted",
                out["atlas"],
                ["engine", "pairs", "wall_s", "driver_cpu_s", "children_cpu_s", "pairs_per_s"],
            )
        )
    if "dask" in args.sections:
        print("dask ...", flush=True)
        small = list(families(12 if args.quick else 40, (10, 20), seed=1))
        cases = [
            ("sorted, atlas", data, "sorted", {}),
            (
                "tlb, half the atlas",
                data[:: 2 if not args.quick else 1],
                "sorted",
                {"lower": "tlb"},
            ),
            (f"{method}, 40 graphs n=10-20", small, method, options),
        ]
        out["dask"] = bench_dask(cases)
        save()
        print(
            _table(
                "Dask LocalCluster",
                out["dask"],
                [
                    "case",
                    "workers",
                    "pairs",
                    "wall_s",
                    "workers_cpu_s",
                    "driver_cpu_s",
                    "pairs_per_s",
                    "speedup_vs_1",
                ],
            )
        )
    if "knn" in args.sections:
        print("knn ...", flush=True)
        rand = list(families(20 if args.quick else 200, (10, 40), seed=0))
        out["knn"] = bench_knn(
            [("atlas", data), ("200 random graphs n=10-40", rand)], args.k, method, options, label
        )
        save()
        print(
            _table(
                f"knn mode, k={args.k}, expensive = {label}",
                out["knn"],
                [
                    "case",
                    "pairs",
                    "needed_after_cheap",
                    "evaluated",
                    "saved_share",
                    "rounds",
                    "proven_share",
                    "wall_s",
                    "children_cpu_s",
                ],
            )
        )
    if "gpu" in args.sections:
        print("gpu ...", flush=True)
        out["gpu"] = bench_gpu(data)
        save()
        print(
            _table(
                "whole atlas, sorted with lower=slb, by backend",
                out["gpu"],
                ["backend", "pairs", "wall_s", "pairs_per_s", "max_abs_diff_vs_numpy"],
            )
        )
    if args.json:
        save()
        print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
