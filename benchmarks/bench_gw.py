"""Sorted bounds vs POT's conditional gradient and entropic GW, on the same instances.

Instances: uniform points in [0, 1]^8, Euclidean distance matrices, seeds 1 and 2 (the
instances of ``../shared/anchors``). For each n, in one run:

* ``sorted``   gwlite's closed form (value = lower) and sorted upper bound;
* ``tlb``      gwlite's sorted method reporting Memoli's TLB as ``lower`` (n <= 1000);
* ``pot_cg``   ``ot.gromov.gromov_wasserstein`` called directly (POT's own time);
* ``cg``       gwlite's ``method="cg"`` (POT + rounding + certified lower bound);
* ``entropic`` gwlite's ``method="entropic"`` (epsilon 5e-3, as in the anchors).

Every number is a wall-clock time from ``time.perf_counter`` (one run per cell after
one warm-up call at n = 50; POT's CG is single-threaded, NumPy's BLAS uses the cores
available). Methods whose expected time exceeds ``--budget-s`` are skipped and
reported as such, never estimated.

Usage::

    python benchmarks/bench_gw.py                      # n = 100 300 1000 3000
    python benchmarks/bench_gw.py --sizes 100 300 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import ot
from tqdm import tqdm

import gwlite


def instance(n: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).random((n, 8))
    return np.linalg.norm(X[:, None, :] - X[None, :, :], axis=-1)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_gwlite(C1, C2, method, **options) -> dict:
    res, seconds = _timed(lambda: gwlite.gromov_wasserstein(C1, C2, method=method, **options))
    return {
        "time_s": seconds,
        "value": float(res.value),
        "lower": float(res.lower),
        "upper": float(res.upper),
        "converged": res.converged,
        "n_iter": res.n_iter,
    }


def run_pot_cg(C1, C2) -> dict:
    (plan, log), seconds = _timed(lambda: ot.gromov.gromov_wasserstein(C1, C2, log=True))
    return {"time_s": seconds, "value": float(log["gw_dist"]), "n_iter": len(log["loss"]) - 1}


# rough cost models (seconds on 2 cores) used only to skip cells that would blow the budget
_EXPECTED = {
    "pot_cg": lambda n: 11.0 * (n / 1000) ** 3,
    "cg": lambda n: 11.0 * (n / 1000) ** 3,
    "entropic": lambda n: 17.5 * (n / 300) ** 2,
    "tlb": lambda n: 0.37 * (n / 300) ** 3,
}


def bench(sizes, budget_s: float, epsilon: float) -> list[dict]:
    rows = []
    warm1, warm2 = instance(50, 1), instance(50, 2)
    for method in ("sorted", "cg", "entropic"):
        gwlite.gromov_wasserstein(warm1, warm2, method=method)
    cells = [(n, m) for n in sizes for m in ("sorted", "tlb", "pot_cg", "cg", "entropic")]
    for n, method in tqdm(cells, desc="bench_gw"):
        C1, C2 = instance(n, 1), instance(n, 2)
        row = {"n": n, "method": method}
        if method in _EXPECTED and _EXPECTED[method](n) > budget_s:
            row["skipped"] = f"expected > {budget_s:.0f} s"
        elif method == "sorted":
            row.update(run_gwlite(C1, C2, "sorted", diagnostics=False, return_coupling=False))
        elif method == "tlb":
            row.update(run_gwlite(C1, C2, "sorted", lower="tlb", diagnostics=False))
        elif method == "pot_cg":
            row.update(run_pot_cg(C1, C2))
        elif method == "cg":
            row.update(run_gwlite(C1, C2, "cg"))
        else:
            row.update(run_gwlite(C1, C2, "entropic", epsilon=epsilon, max_iter=200))
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    by_n: dict[int, dict] = {}
    for row in rows:
        by_n.setdefault(row["n"], {})[row["method"]] = row
    lines = [
        "| n | method | time (s) | value | lower | upper | time / sorted | upper / best upper |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, cells in sorted(by_n.items()):
        uppers = [c["upper"] for c in cells.values() if "upper" in c]
        best = min(uppers) if uppers else float("nan")
        base = cells.get("sorted", {}).get("time_s", float("nan"))
        for method, c in cells.items():
            if "skipped" in c:
                lines.append(f"| {n} | {method} | skipped ({c['skipped']}) | | | | | |")
                continue
            lower = f"{c['lower']:.4g}" if "lower" in c else "-"
            upper = f"{c['upper']:.4g}" if "upper" in c else "-"
            ratio = f"{c['upper'] / best:.2f}" if "upper" in c and best > 0 else "-"
            lines.append(
                f"| {n} | {method} | {c['time_s']:.3g} | {c['value']:.4g} | {lower} | {upper} "
                f"| {c['time_s'] / base:.3g}x | {ratio} |"
            )
    return "\n".join(lines)


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, NumPy {np.__version__}, POT {ot.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 3000])
    parser.add_argument("--budget-s", type=float, default=900.0)
    parser.add_argument("--epsilon", type=float, default=5e-3)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    rows = bench(args.sizes, args.budget_s, args.epsilon)
    print(f"\nmachine: {machine()}\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
