"""The coarse start of ``method="proximal"`` against the loop it replaces and POT's
conditional gradient, on many instances (issue 21, part 2).

For each seed: ``n`` uniform points in the unit square on each side (the construction of
``bench_time_limit.py``, one seed per instance), Euclidean distances, uniform weights.
In one process, on one BLAS thread, in this order: POT's
``ot.gromov.gromov_wasserstein2`` (one start, timed: it sets the limit),
``method="proximal"`` with ``time_limit`` = POT's time x ``--fraction`` with the coarse
start (the default from 1,000 nodes) and without it (``coarse=False``: the mirror-descent
loop), then the coarse start with no time limit. Each row: the costs over POT's, the wall
times, the load average and the BLAS threads at its start; the summary per ``n``: median
and maximum ratio, the share no worse than POT (up to a relative 1e-9).

Usage::

    python benchmarks/bench_coarse.py --n 1000 --seeds 8 --json benchmarks/results/bench_coarse_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import ot
from _machine import context
from threadpoolctl import threadpool_limits

import gwlite


def instance(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X, Y = rng.random((n, 2)), rng.random((n, 2))
    C1 = np.linalg.norm(X[:, None] - X[None], axis=-1)
    C2 = np.linalg.norm(Y[:, None] - Y[None], axis=-1)
    return C1, C2


def _timed(call):
    tick = time.perf_counter()
    out = call()
    return out, time.perf_counter() - tick


def row(n: int, seed: int, fraction: float) -> dict:
    C1, C2 = instance(n, seed)
    p = ot.unif(n)
    out = {"n": n, "seed": seed, "fraction": fraction, **context()}
    cg, out["pot_cg_s"] = _timed(lambda: float(ot.gromov.gromov_wasserstein2(C1, C2, p, p)))
    out["pot_cg"] = cg
    limit = fraction * out["pot_cg_s"]
    out["time_limit"] = limit
    runs = {
        "coarse": {"time_limit": limit},
        "loop": {"time_limit": limit, "coarse": False},
        "coarse_untimed": {},
    }
    for name, options in runs.items():
        res, out[f"{name}_s"] = _timed(
            lambda options=options: gwlite.gromov_wasserstein(C1, C2, method="proximal", **options)
        )
        out[name] = float(res.upper)
        out[f"{name}_over_pot"] = float(res.upper) / cg
        out[f"{name}_note"] = res.diagnostics["coarse"]
    return out


def summary(rows: list[dict]) -> dict:
    out = {}
    for name in ("coarse", "loop", "coarse_untimed"):
        ratios = np.array([r[f"{name}_over_pot"] for r in rows])
        out[name] = {
            "median_over_pot": float(np.median(ratios)),
            "max_over_pot": float(ratios.max()),
            "no_worse_share": float(np.mean(ratios <= 1 + 1e-9)),
            "median_s": float(np.median([r[f"{name}_s"] for r in rows])),
        }
    out["median_pot_s"] = float(np.median([r["pot_cg_s"] for r in rows]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json")
    parser.add_argument("--n", type=int, nargs="+", default=[1000])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--fraction", type=float, default=0.2)
    args = parser.parse_args()
    out = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "args": vars(args),
        "rows": [],
        "summary": {},
    }
    with threadpool_limits(1):
        C1, C2 = instance(100, 0)  # warm-up: imports and first calls off the clock
        gwlite.gromov_wasserstein(C1, C2, method="proximal", time_limit=0.5)
        for n in args.n:
            rows = []
            for seed in range(1, args.seeds + 1):
                rows.append(row(n, seed, args.fraction))
                print(json.dumps(rows[-1], default=str), flush=True)
            out["rows"] += rows
            out["summary"][str(n)] = summary(rows)
            print(json.dumps({"n": n, **out["summary"][str(n)]}), flush=True)
            if args.json:
                from gwlite.atomic import atomic_write_bytes

                atomic_write_bytes(args.json, json.dumps(out, indent=1, default=str).encode())


if __name__ == "__main__":
    main()
