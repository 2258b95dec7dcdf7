"""How the time ``method="auto"`` needs grows with n (issue 21): one call per size with
the default 10 s budget, the seconds of every stage, which stages were skipped and why.

Random point clouds in 3-D (``n = m``, uniform weights, Euclidean distances), one BLAS
thread; each row records the 1-minute load average at its start, the plan's cost and
where it came from, and with ``--pot`` POT's conditional gradient (one start) on the same
instance in the same run, for comparison.

Usage::

    python benchmarks/bench_auto_growth.py --n 50 100 300 1000 2000 3000 \\
        --json benchmarks/results/auto_time_growth_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

import gwlite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50, 100, 300, 1000, 2000, 3000])
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--json")
    parser.add_argument("--pot", action="store_true", help="time POT's CG on each instance")
    args = parser.parse_args()
    rows = []
    gwlite.gromov_wasserstein(np.eye(5), np.eye(5))  # imports, off the clock
    with threadpool_limits(1, user_api="blas"):
        for n in args.n:
            rng = np.random.default_rng(n)
            X, Y = rng.random((n, 3)), rng.random((n, 3))
            C1 = np.linalg.norm(X[:, None] - X[None], axis=-1)
            C2 = np.linalg.norm(Y[:, None] - Y[None], axis=-1)
            load = os.getloadavg()[0]
            tick = time.perf_counter()
            res = gwlite.gromov_wasserstein(C1, C2, time_limit=args.time_limit, progress=False)
            wall = time.perf_counter() - tick
            stages = [
                (s["stage"], round(s["time_s"], 3), s.get("skipped", ""), s.get("rounds", ""))
                for s in res.diagnostics["stages"]
            ]
            row = {
                "n": n,
                "wall_s": wall,
                "loadavg": load,
                "blas_threads": 1,
                "stages": stages,
                "stop": res.diagnostics["stop_reason"],
                "gap": res.diagnostics["relative_gap"],
                "upper": float(res.upper),
                "upper_by": res.diagnostics["upper_by"],
            }
            if args.pot:
                import ot

                tick = time.perf_counter()
                row["pot_cg"] = float(ot.gromov.gromov_wasserstein2(C1, C2, ot.unif(n), ot.unif(n)))
                row["pot_cg_s"] = time.perf_counter() - tick
                row["upper_over_pot"] = row["upper"] / row["pot_cg"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        from gwlite.atomic import atomic_write_bytes

        atomic_write_bytes(args.json, json.dumps(rows, indent=1).encode())


if __name__ == "__main__":
    main()
