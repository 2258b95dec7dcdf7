"""Timing of ``method="exact"`` on uniform random symmetric matrices, n = 8..14.

How it is measured: each instance is a pair of independent symmetric matrices with
i.i.d. U(0, 1) off-diagonal entries and a zero diagonal (``seed`` -> draws ``2 seed`` and
``2 seed + 1`` of ``numpy.random.default_rng``); the time is the wall-clock
``time.perf_counter()`` around one ``gwlite.gromov_wasserstein(C1, C2, method="exact")``
call (input validation, incumbent, branch and bound and the certificate included),
one run per instance, in one process with BLAS limited to 2 threads (set below before
NumPy loads, unless already set). The table gives the median and maximum over the
seeds, the median number of expanded nodes and the time per node.

Run: ``python benchmarks/bench_exact.py [--sizes 8 9 10] [--seeds 3] [--loss square_loss]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402

import gwlite  # noqa: E402


def random_symmetric(n: int, seed: int) -> np.ndarray:
    """Symmetric, zero diagonal, i.i.d. U(0, 1) above the diagonal."""
    upper = np.triu(np.random.default_rng(seed).uniform(size=(n, n)), 1)
    return upper + upper.T


def run(n: int, seed: int, loss: str, time_limit: float) -> tuple[float, gwlite.GWResult]:
    C1, C2 = random_symmetric(n, 2 * seed), random_symmetric(n, 2 * seed + 1)
    start = time.perf_counter()
    res = gwlite.gromov_wasserstein(C1, C2, method="exact", loss_fun=loss, time_limit=time_limit)
    return time.perf_counter() - start, res


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=list(range(8, 15)))
    parser.add_argument("--seeds", type=int, default=3, help="instances per size")
    parser.add_argument("--loss", default="square_loss", choices=["square_loss", "abs_loss"])
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per instance")
    args = parser.parse_args(argv)
    print(
        f"# {platform.platform()}, {os.cpu_count()} CPUs visible, BLAS threads "
        f"{os.environ['OMP_NUM_THREADS']}, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, SciPy {scipy.__version__}, loss {args.loss}"
    )
    header = f"{'n':>3} {'runs':>4} {'median s':>9} {'max s':>8} {'nodes':>8} {'us/node':>8} solved"
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        times, nodes, solved = [], [], 0
        for seed in range(args.seeds):
            elapsed, res = run(n, seed, args.loss, args.time_limit)
            times.append(elapsed)
            nodes.append(res.n_iter)
            solved += res.converged
        per_node = 1e6 * np.sum(times) / max(np.sum(nodes), 1)
        print(
            f"{n:>3} {args.seeds:>4} {np.median(times):>9.3f} {np.max(times):>8.3f} "
            f"{int(np.median(nodes)):>8} {per_node:>8.0f} {solved}/{args.seeds}",
            flush=True,
        )


if __name__ == "__main__":
    main()
