"""Issue 24: how fast a refused call is, what ``import gwlite`` costs, and cleansing's worst case.

Two tables, each with the baseline in the same run on the same machine:

1. ``refused``: in fresh processes, the wall time of ``import gwlite`` and of one
   ``gromov_wasserstein`` call refused for a NaN input (``method="cg"``, the method
   that needs POT), and the heavy modules that call left imported, for this tree and
   for a baseline tree (``--baseline DIR``: a checkout of the commit before the change).
   Also ``python -X importtime -c "import gwlite"``'s cumulative time for gwlite.
2. ``cleansing``: the slowest of ``cleanse_answer`` (both modes, every task) and
   ``is_correct`` on adversarial completions at the length limit (a 99,999-digit run,
   a long run of unicode digits, separators and exponents), this tree only: the
   baseline does not finish the issue's inputs (minutes in C code per call).

Usage::

    git archive BASE | tar -x -C /tmp/base
    python benchmarks/bench_reliability.py --baseline /tmp/base --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REFUSED = """
import sys, time
t0 = time.perf_counter()
import gwlite
t1 = time.perf_counter()
import numpy as np
try:
    gwlite.gromov_wasserstein(np.eye(3), np.full((4, 4), np.nan), method="cg")
except gwlite.GWInputError:
    pass
t2 = time.perf_counter()
heavy = sorted(m for m in ("ot", "torch", "jax", "scipy.optimize") if m in sys.modules)
print({"import_s": t1 - t0, "refused_s": t2 - t1, "heavy": heavy})
"""


def _run(tree: Path, code: str, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *flags, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tree,
    )


def refused_table(trees: dict[str, Path], repeat: int) -> list[dict]:
    rows = []
    for _ in range(repeat):  # interleaved, so that load changes hit both trees alike
        for name, tree in trees.items():
            record = eval(_run(tree, REFUSED).stdout.strip())  # noqa: S307 - our own output
            top = _run(tree, "import gwlite", "-X", "importtime").stderr
            cumulative = [
                int(m.group(1)) for m in re.finditer(r"\|\s*(\d+)\s*\|\s*gwlite$", top, re.M)
            ]
            rows.append({"tree": name, **record, "importtime_gwlite_us": cumulative[-1]})
    summary = []
    for name in trees:
        mine = [r for r in rows if r["tree"] == name]
        summary.append(
            {
                "tree": name,
                "runs": len(mine),
                "import_s_median": statistics.median(r["import_s"] for r in mine),
                "refused_s_median": statistics.median(r["refused_s"] for r in mine),
                "refused_s_max": max(r["refused_s"] for r in mine),
                "importtime_gwlite_s_median": statistics.median(
                    r["importtime_gwlite_us"] for r in mine
                )
                / 1e6,
                "heavy_after_refusal": mine[0]["heavy"],
            }
        )
    return summary


def cleansing_table() -> dict:
    from fusion.eval import cleanse_answer, is_correct
    from fusion.eval.cleansing import MAX_TEXT_CHARS
    from fusion.eval.spec import TASKS

    texts = {
        "digits": " " + "7" * (MAX_TEXT_CHARS - 1),
        "unicode_digits": " " + "\u0663" * (MAX_TEXT_CHARS - 1),
        "separators": " " + "1,000" * (MAX_TEXT_CHARS // 5 - 1),
        "exponents": " " + "1e999999999 " * (MAX_TEXT_CHARS // 12 - 1),
        "words": " " + "forty-two (B) yes " * (MAX_TEXT_CHARS // 18 - 1),
    }
    worst = {"cleanse_s": 0.0, "is_correct_s": 0.0}
    for label, text in texts.items():
        for task in TASKS:
            for mode in ("paper", "robust"):
                t = time.perf_counter()
                pred = cleanse_answer(text, task, "few_shot_cot", mode)
                took = time.perf_counter() - t
                if took > worst["cleanse_s"]:
                    worst.update(cleanse_s=took, cleanse_case=f"{label}/{task}/{mode}")
                t = time.perf_counter()
                is_correct(pred or text[:5000], "1e999999999", task, mode)
                took = time.perf_counter() - t
                if took > worst["is_correct_s"]:
                    worst.update(is_correct_s=took, is_correct_case=f"{label}/{task}/{mode}")
    return {"text_chars": MAX_TEXT_CHARS, "tasks": len(TASKS), **worst}


def machine() -> dict:
    import numpy  # noqa: F401 - loads the BLAS that threadpoolctl reports
    from threadpoolctl import threadpool_info

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_1_5_15": os.getloadavg(),
        "blas_threads": [info.get("num_threads") for info in threadpool_info()],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, default=None, help="baseline tree")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    trees = {"this": ROOT}
    if args.baseline is not None:
        trees = {"baseline": args.baseline, **trees}
    before = machine()
    out = {
        "machine": before,
        "refused": refused_table(trees, args.repeat),
        "cleansing": cleansing_table(),
        "load_after": os.getloadavg(),
    }
    print(json.dumps(out, indent=2))
    if args.json is not None:
        from gwlite.atomic import atomic_open

        with atomic_open(args.json, "w") as fh:
            fh.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
