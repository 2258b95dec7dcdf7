"""Does ``time_limit`` hold on a busy machine? (issue 21, part 2)

``method="proximal"`` on the bench instances (``n`` uniform points in the unit square,
Euclidean distances, uniform weights; the same instances as ``bench_batch.py``, section
``time_limit``) with ``time_limit`` = POT CG's time / 5, POT's conditional gradient
(``ot.gromov.gromov_wasserstein2``, one start) timed in the same run, under the same
thread setting and load, right before. For every ``n``, BLAS thread setting (1, 2) and
load ("as found", and "two busy processes": two spinning processes started next to it),
one row per repeat with:

* ``wall_s``: the whole ``gwlite.gromov_wasserstein`` call (checks, set-up, starts,
  low-rank factorisation, loop, pricing, polish, bounds), and ``within_tolerance``:
  ``wall_s <= limit + max(0.1 limit, 0.1 s)``;
* ``upper`` against POT CG's cost (``no_worse_than_pot``) and the sorted coupling's;
* the solver's diagnostics: ``stop_reason``, iterations of each phase, polish steps,
  ``rank_note``, ``sorted_candidate``, ``coarse`` (the coarse start's samples, coarse
  cost and seconds, or why it was not used);
* ``loadavg`` (``os.getloadavg``) and the BLAS threads (threadpoolctl) at the start of
  the row, and ``solver_threads``: what the solver's default rule
  (:func:`gwlite.solvers._common.blas_threads`) chose at the call (1 when the 1-minute
  load average is at least the core count), or, with ``--force-threads``, the thread
  count passed to the solver as ``threads=`` (the rule overridden).

Usage::

    python benchmarks/bench_time_limit.py --n 1000 3000 --json benchmarks/results/bench_time_limit_cpu.json
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


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def instance(n: int):
    """The bench instance of ``bench_batch.py`` (same seed, same construction)."""
    rng = np.random.default_rng(1)
    X, Y = rng.random((n, 2)), rng.random((n, 2))
    C1 = np.linalg.norm(X[:, None] - X[None], axis=-1)
    C2 = np.linalg.norm(Y[:, None] - Y[None], axis=-1)
    return C1, C2


def _solver_threads(outer: int) -> int:
    busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    return 1 if busy else outer


def run(n: int, repeats: int, thread_settings, loads, force: bool = False) -> list[dict]:
    C1, C2 = instance(n)
    p = ot.unif(n)
    sorted_cost = float(gwlite.gromov_wasserstein(C1, C2, method="sorted").upper)
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for load in loads:
        workers = []
        if load != "as found":
            workers = [ctx.Process(target=_busy, args=(3600.0,)) for _ in range(2)]
            for w in workers:
                w.start()
            time.sleep(2.0)
        try:
            for threads in thread_settings:
                with threadpool_limits(limits=threads, user_api="blas"):
                    c = context()
                    tick = time.perf_counter()
                    cg = float(ot.gromov.gromov_wasserstein2(C1, C2, p, p))
                    cg_s = time.perf_counter() - tick
                    limit = cg_s / 5
                    for rep in range(repeats):
                        c = context()
                        chosen = threads if force else _solver_threads(threads)
                        options = {"threads": threads} if force else {}
                        tick = time.perf_counter()
                        res = gwlite.gromov_wasserstein(
                            C1, C2, method="proximal", time_limit=limit, **options
                        )
                        wall = time.perf_counter() - tick
                        d = res.diagnostics
                        phases = [h[1] for h in d["history"]]
                        rows.append(
                            {
                                "n": n,
                                "load": load,
                                "threads": threads,
                                "solver_threads": chosen,
                                "threads_forced": force,
                                "repeat": rep,
                                "pot_cg_s": cg_s,
                                "pot_cg": cg,
                                "sorted": sorted_cost,
                                "time_limit": limit,
                                "wall_s": wall,
                                "over_s": wall - limit,
                                "within_tolerance": wall <= limit + max(0.1 * limit, 0.1),
                                "upper": float(res.upper),
                                "no_worse_than_pot": float(res.upper) <= cg * (1 + 1e-9),
                                "stop_reason": d["stop_reason"],
                                "n_iter": res.n_iter,
                                "factored_iter": d["factored_iter"],
                                "checks": {ph: phases.count(ph) for ph in set(phases)},
                                "iterate_time_s": d["iterate_time_s"],
                                "polish_steps": d["polish_steps"],
                                "polish_time_s": d["polish_time_s"],
                                "polish_stop": d["polish_stop"],
                                "best_start": d["best_start"],
                                "rank_note": d["rank_note"],
                                "sorted_candidate": d["sorted_candidate"],
                                "coarse": d.get("coarse"),
                                **c,
                            }
                        )
                        print(json.dumps(rows[-1]), flush=True)
        finally:
            for w in workers:
                w.terminate()
                w.join()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json")
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--loads", nargs="+", default=["as found", "two busy processes"], help="row loads"
    )
    parser.add_argument(
        "--force-threads",
        action="store_true",
        help="pass threads= to the solver (overrides its one-thread rule on a busy machine)",
    )
    args = parser.parse_args()
    out = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "args": vars(args),
        "rows": [],
    }
    C1, C2 = instance(60)  # warm-up: imports and first calls off the clock
    gwlite.gromov_wasserstein(C1, C2, method="proximal", time_limit=1.0)
    for n in args.n:
        out["rows"] += run(n, args.repeats, args.threads, args.loads, args.force_threads)
        if args.json:  # after every size: a long run that is cut keeps what it measured
            from gwlite.atomic import atomic_write_bytes

            atomic_write_bytes(args.json, json.dumps(out, indent=1).encode())


if __name__ == "__main__":
    main()
