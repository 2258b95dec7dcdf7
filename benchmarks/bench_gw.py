"""gwlite's solvers next to POT and OTT-JAX on the same instances, priced the same way.

Two parts, both in one run so that every ratio compares like with like:

**Point clouds** (the instances of ``../shared/anchors``): uniform points in [0, 1]^8,
Euclidean distance matrices, NumPy seeds 1 and 2. For each n:

* ``sorted``        gwlite's closed form (value = lower) and sorted upper bound;
* ``tlb``           the sorted method reporting Memoli's TLB as ``lower``;
* ``pot_cg``        ``ot.gromov.gromov_wasserstein`` called directly (the baseline);
* ``cg``            gwlite's ``method="cg"`` (POT + rounding + a lower bound), n <= 1000;
* ``pot_entropic``  gwlite's ``method="entropic"`` (POT, epsilon 5e-3, 200 iterations);
* ``ott_5e-3``, ``ott_5e-2``  OTT-JAX entropic GW (float64, jit-compiled; the compile
  call is timed separately as ``compile_s``), plan rounded onto the polytope;
* ``proximal_cg/5`` gwlite's ``method="proximal"`` with ``time_limit`` = 1/5 of this
  run's ``pot_cg`` time (the issue's first target);
* ``proximal_cg``   the same with ``time_limit`` = ``pot_cg``'s time (second target);
* ``proximal``      defaults (its own stopping rule), capped at max(3 x pot_cg, 60 s);
* ``auto``          ``gromov_wasserstein`` defaults (``method="auto"``, 10 s budget).

Every plan is priced by the same float64 function, :func:`gwlite.gw_cost`, after
rounding onto the polytope when the solver does not return a feasible plan.

**Real graphs** (networkx's karate club, Florentine families, Les Miserables, Davis
southern women; shortest-path matrices, uniform weights), every pair: the default
``auto`` interval against the best of 30 random-start POT CG plans with TLB as the
lower bound.

Threads are pinned (``--threads``, default 2) for NumPy's BLAS, torch and XLA before
any of them is imported. Cells whose expected time exceeds ``--budget-s`` are skipped
and reported as skipped, never estimated.

Usage::

    python benchmarks/bench_gw.py                         # n = 100 300 1000 3000 + graphs
    python benchmarks/bench_gw.py --sizes 300 1000 --no-ott
    python benchmarks/bench_gw.py --sizes 1000 --no-graphs --json /tmp/out.json
"""

from __future__ import annotations

import argparse
import os
import sys


def _pin_threads(argv) -> int:
    threads = 2
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            threads = int(argv[i + 1])
        elif arg.startswith("--threads="):
            threads = int(arg.split("=", 1)[1])
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
        + f" intra_op_parallelism_threads={threads}"
    ).strip()
    return threads


THREADS = _pin_threads(sys.argv)

import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import ot  # noqa: E402
from tqdm import tqdm  # noqa: E402

import gwlite  # noqa: E402
from gwlite.coupling import round_to_polytope  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: best plans known on these instances (POT entropic, eps 5e-3, 200 iterations; anchors)
BEST_KNOWN = {300: 0.0396, 1000: 0.0329}
GRAPHS = ("karate", "florentine", "les_miserables", "davis")


def instance(n: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).random((n, 8))
    return np.linalg.norm(X[:, None, :] - X[None, :, :], axis=-1)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def price(C1, C2, plan, p=None, q=None) -> tuple[float, float]:
    """Cost of the plan rounded onto the polytope (float64), and its marginal error."""
    plan = np.asarray(plan, dtype=np.float64)
    p = np.full(len(C1), 1 / len(C1)) if p is None else p
    q = np.full(len(C2), 1 / len(C2)) if q is None else q
    error = gwlite.coupling.marginal_error(plan, p, q)
    return float(gwlite.gw_cost(C1, C2, round_to_polytope(plan, p, q))), error


def run_gwlite(C1, C2, method=None, **options) -> dict:
    kwargs = {} if method is None else {"method": method}
    res, seconds = _timed(lambda: gwlite.gromov_wasserstein(C1, C2, **kwargs, **options))
    row = {
        "time_s": seconds,
        "lower": float(res.lower),
        "upper": float(res.upper),
        "converged": res.converged,
        "n_iter": res.n_iter,
    }
    if res.coupling is not None:
        row["upper_repriced"] = price(C1, C2, res.coupling)[0]
    d = res.diagnostics
    for key in ("rank", "factored_iter", "stop_reason", "polish_steps", "lower_by", "upper_by"):
        if key in d:
            row[key] = d[key]
    return row


def run_pot_cg(C1, C2) -> dict:
    (plan, log), seconds = _timed(lambda: ot.gromov.gromov_wasserstein(C1, C2, log=True))
    upper, error = price(C1, C2, plan)
    return {"time_s": seconds, "upper": upper, "n_iter": len(log["loss"]) - 1, "marg": error}


class OTT:
    """OTT-JAX entropic GW, one jit-compiled function per epsilon (float64)."""

    def __init__(self):
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        from ott.geometry import geometry
        from ott.problems.quadratic import quadratic_problem
        from ott.solvers.linear import sinkhorn
        from ott.solvers.quadratic import gromov_wasserstein

        self.jnp, self.jax = jnp, jax
        self.version = __import__("ott").__version__, jax.__version__
        self._fns = {}

        def make(eps):
            solver = gromov_wasserstein.GromovWasserstein(sinkhorn.Sinkhorn(), epsilon=eps)

            def solve(C1, C2):
                prob = quadratic_problem.QuadraticProblem(
                    geometry.Geometry(cost_matrix=C1), geometry.Geometry(cost_matrix=C2)
                )
                out = solver(prob)
                return out.matrix, out.converged

            return jax.jit(solve)

        self._make = make

    def run(self, C1, C2, eps) -> dict:
        fn = self._fns.setdefault(eps, self._make(eps))
        a, b = self.jnp.asarray(C1), self.jnp.asarray(C2)
        (_, _), compile_s = _timed(lambda: self.jax.block_until_ready(fn(a, b)))
        (plan, converged), seconds = _timed(lambda: self.jax.block_until_ready(fn(a, b)))
        upper, error = price(C1, C2, np.asarray(plan))
        return {
            "time_s": seconds,
            "compile_s": compile_s,
            "upper": upper,
            "marg": error,
            "converged": bool(converged),
        }


# rough cost models (seconds on 2 cores) used only to skip cells that would blow the budget
_EXPECTED = {
    "pot_cg": lambda n: 11.0 * (n / 1000) ** 3,
    "cg": lambda n: 11.0 * (n / 1000) ** 3 if n <= 1000 else float("inf"),
    "pot_entropic": lambda n: 17.5 * (n / 300) ** 2,
    "ott_5e-3": lambda n: 15.0 * (n / 1000) ** 2.5,
    "ott_5e-2": lambda n: 3.5 * (n / 1000) ** 2.5,
    "tlb": lambda n: 0.37 * (n / 300) ** 3,
}
METHODS = (
    "sorted",
    "tlb",
    "pot_cg",
    "cg",
    "pot_entropic",
    "ott_5e-3",
    "ott_5e-2",
    "proximal_cg/5",
    "proximal_cg",
    "proximal",
    "auto",
)


def bench_points(sizes, budget_s: float, use_ott: bool) -> list[dict]:
    rows = []
    warm1, warm2 = instance(60, 1), instance(60, 2)
    for method in ("sorted", "cg", "proximal", "auto"):
        gwlite.gromov_wasserstein(warm1, warm2, method=method)
    ott_runner = OTT() if use_ott else None
    cells = [(n, m) for n in sizes for m in METHODS]
    cg_time: dict[int, float] = {}
    for n, method in tqdm(cells, desc="points"):
        C1, C2 = instance(n, 1), instance(n, 2)
        row = {"n": n, "method": method}
        base = cg_time.get(n)
        if method.startswith("ott") and ott_runner is None:
            row["skipped"] = "--no-ott"
        elif method in _EXPECTED and _EXPECTED[method](n) > budget_s:
            row["skipped"] = f"expected > {budget_s:.0f} s"
        elif method.startswith("proximal") and base is None:
            row["skipped"] = "needs the pot_cg time of this run"
        elif method == "sorted":
            row.update(run_gwlite(C1, C2, "sorted", diagnostics=False))
        elif method == "tlb":
            row.update(run_gwlite(C1, C2, "sorted", lower="tlb", diagnostics=False))
        elif method == "pot_cg":
            row.update(run_pot_cg(C1, C2))
            cg_time[n] = row["time_s"]
        elif method == "cg":
            row.update(run_gwlite(C1, C2, "cg"))
        elif method == "pot_entropic":
            row.update(run_gwlite(C1, C2, "entropic", epsilon=5e-3, max_iter=200))
        elif method.startswith("ott"):
            row.update(ott_runner.run(C1, C2, float(method.split("_")[1])))
        elif method == "proximal_cg/5":
            row.update(run_gwlite(C1, C2, "proximal", time_limit=base / 5))
            row["time_limit"] = base / 5
        elif method == "proximal_cg":
            row.update(run_gwlite(C1, C2, "proximal", time_limit=base))
            row["time_limit"] = base
        elif method == "proximal":
            cap = max(3 * base, 60.0)  # a cap only: it normally stops at its own rule
            row.update(run_gwlite(C1, C2, "proximal", time_limit=cap))
            row["time_limit"] = cap
        else:
            row.update(run_gwlite(C1, C2))
        rows.append(row)
    return rows


def _random_coupling(rng, p, q):
    K = rng.random((len(p), len(q))) + 1e-3
    for _ in range(200):
        K *= (p / K.sum(1))[:, None]
        K *= (q / K.sum(0))[None, :]
    return K


def bench_graphs(starts: int = 30) -> list[dict]:
    mats = {name: gwlite.graphs.load(f"builtin:{name}", "shortest_path") for name in GRAPHS}
    rows = []
    for a, b in tqdm(list(itertools.combinations(GRAPHS, 2)), desc="graphs"):
        (C1, p), (C2, q) = mats[a], mats[b]
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        best = min(
            price(
                C1,
                C2,
                ot.gromov.gromov_wasserstein(C1, C2, p, q, G0=_random_coupling(rng, p, q)),
                p,
                q,
            )[0]
            for _ in range(starts)
        )
        cg_s = time.perf_counter() - start
        args = (C1, C2, p, q)
        tlb, tlb_s = _timed(lambda a=args: gwlite.lower_bound(*a, lower="tlb"))
        res, auto_s = _timed(lambda a=args: gwlite.gromov_wasserstein(*a))
        rows.append(
            {
                "pair": f"{a}/{b}",
                "n": int(C1.shape[0]),
                "m": int(C2.shape[0]),
                "cg_best": best,
                "cg_time_s": cg_s,
                "tlb": float(tlb),
                "tlb_time_s": tlb_s,
                "auto_lower": float(res.lower),
                "auto_upper": float(res.upper),
                "auto_time_s": auto_s,
                "auto_lower_by": res.diagnostics["lower_by"],
                "auto_upper_by": res.diagnostics["upper_by"],
                "certified": res.certified,
            }
        )
    return rows


def table_points(rows: list[dict]) -> str:
    by_n: dict[int, dict] = {}
    for row in rows:
        by_n.setdefault(row["n"], {})[row["method"]] = row
    lines = [
        "| n | method | time (s) | time / pot_cg | plan cost (upper) | upper / pot_cg "
        "| upper / best known | lower | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, cells in sorted(by_n.items()):
        base = cells.get("pot_cg", {})
        best = BEST_KNOWN.get(n)
        for method, c in cells.items():
            if "skipped" in c:
                lines.append(f"| {n} | {method} | skipped ({c['skipped']}) | | | | | | |")
                continue
            t = c["time_s"]
            ratio_t = f"{t / base['time_s']:.3f}" if "time_s" in base else "-"
            up = c.get("upper")
            ratio_u = f"{up / base['upper']:.3f}" if up is not None and "upper" in base else "-"
            ratio_b = f"{up / best:.3f}" if up is not None and best else "-"
            lower = f"{c['lower']:.4g}" if "lower" in c else "-"
            notes = []
            if "compile_s" in c:
                notes.append(f"compile {c['compile_s']:.1f} s")
            if "marg" in c and c["marg"] > 1e-9:
                notes.append(f"marginal err {c['marg']:.1g}")
            if "time_limit" in c:
                notes.append(f"limit {c['time_limit']:.3g} s")
            if c.get("rank"):
                notes.append(f"rank {c['rank']}, {c.get('factored_iter', 0)} low-rank it.")
            if "n_iter" in c and method.startswith("proximal"):
                notes.append(f"{c['n_iter']} it., {c.get('stop_reason')}")
            if "upper_by" in c:
                notes.append(f"upper by {c['upper_by']}, lower by {c['lower_by']}")
            lines.append(
                f"| {n} | {method} | {t:.3g} | {ratio_t} | {up:.5g} | {ratio_u} | {ratio_b} "
                f"| {lower} | {'; '.join(notes)} |"
            )
    return "\n".join(lines)


def table_graphs(rows: list[dict]) -> str:
    lines = [
        "| pair | n, m | 30 x CG best | CG time (s) | TLB | CG/TLB width | auto [lower, upper] "
        "| auto width | auto time (s) | at least as tight |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ref = r["cg_best"] / r["tlb"]
        width = r["auto_upper"] / r["auto_lower"] if r["auto_lower"] > 0 else float("inf")
        ok = r["auto_upper"] <= r["cg_best"] + 1e-12 and r["auto_lower"] >= r["tlb"] - 1e-12
        lines.append(
            f"| {r['pair']} | {r['n']}, {r['m']} | {r['cg_best']:.5f} | {r['cg_time_s']:.2f} "
            f"| {r['tlb']:.5f} | {ref:.3f}x | [{r['auto_lower']:.5f}, {r['auto_upper']:.5f}] "
            f"| {width:.3f}x | {r['auto_time_s']:.2f} | {'yes' if ok else 'NO'} |"
        )
    return "\n".join(lines)


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {THREADS} "
        f"threads, Python {platform.python_version()}, NumPy {np.__version__}, "
        f"POT {ot.__version__}, gwlite {gwlite.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 300, 1000, 3000])
    parser.add_argument("--threads", type=int, default=2, help="BLAS/torch/XLA threads")
    parser.add_argument("--budget-s", type=float, default=900.0)
    parser.add_argument("--no-ott", action="store_true", help="skip OTT-JAX")
    parser.add_argument("--no-graphs", action="store_true", help="skip the real graphs")
    parser.add_argument("--json", default=str(RESULTS / "bench_gw_cpu.json"))
    args = parser.parse_args()
    rows = bench_points(args.sizes, args.budget_s, not args.no_ott) if args.sizes else []
    graph_rows = [] if args.no_graphs else bench_graphs()
    print(f"\nmachine: {machine()}\ncommand: python {' '.join(sys.argv)}\n")
    if rows:
        print(table_points(rows))
    if graph_rows:
        print()
        print(table_graphs(graph_rows))
    record = {"machine": machine(), "command": " ".join(sys.argv), "rows": rows}
    record["graphs"] = graph_rows
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    tmp.replace(path)  # atomic: an interrupted run leaves the old file
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
