"""Cost of the input checks on the cheap paths: this checkout against another one.

Runs the same calls under two source trees in alternating subprocesses (same machine,
same moment) and prints the best-of-k time of each, with the ratio. Usage::

    python benchmarks/bench_checks.py /path/to/baseline/checkout [--sizes 500 2000]

The calls: ``lower_bound`` (mean-row closed form, the one-read path), the sorted method
with and without diagnostics, ``sorted_upper_bound``, ``gw_cost`` of a dense coupling and
``wasserstein_1d`` on 10^5 samples (float64, NumPy, CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np
import gwlite

n, repeat = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
A = rng.random((n, n)); A = A + A.T
B = rng.random((n + 7, n + 7)); B = B + B.T
T = np.full((n, n + 7), 1.0 / (n * (n + 7)))
u, v = rng.normal(size=100_000), rng.normal(size=100_000)
calls = {
    "lower_bound(mean_row)": lambda: gwlite.lower_bound(A, B),
    "sorted": lambda: gwlite.gromov_wasserstein(A, B),
    "sorted, diagnostics=False": lambda: gwlite.gromov_wasserstein(A, B, diagnostics=False),
    "sorted_upper_bound": lambda: gwlite.sorted_upper_bound(A, B),
    "gw_cost(dense)": lambda: gwlite.gw_cost(A, B, T),
    "wasserstein_1d(1e5)": lambda: gwlite.wasserstein_1d(u, v, p=2),
}
out = {}
for name, fn in calls.items():
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    out[name] = best
print(json.dumps(out))
"""


def _run(tree: Path, n: int, repeat: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-c", CHILD, str(n), str(repeat)]
    # run from the tree itself: a script given by -c puts the working directory first
    res = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="checkout to compare against")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="alternating subprocess rounds")
    args = parser.parse_args()
    print("| n | call | baseline (ms) | this (ms) | ratio |\n| --- | --- | --- | --- | --- |")
    for n in args.sizes:
        base, this = {}, {}
        for _ in range(args.rounds):
            for tree, acc in ((args.baseline, base), (HERE, this)):
                for name, t in _run(tree, n, args.repeat).items():
                    acc[name] = min(acc.get(name, float("inf")), t)
        for name in this:
            if name in base:
                ratio = this[name] / base[name]
                print(
                    f"| {n} | {name} | {base[name] * 1e3:.2f} | {this[name] * 1e3:.2f} | {ratio:.2f} |"
                )


if __name__ == "__main__":
    main()
