"""Wall and CPU time of ``python -m fusion demo`` and ``study``, with what each run reached.

Each case runs the command in a fresh process, into a fresh directory (``--fresh``), and
records the wall time, the CPU time of the process and of its worker processes, the load
average before and after (the machine may be shared), and for the demo presets the
accuracies the presets promise: each teacher against the majority answer on its own
family, and the best pivot arm on each family.

    PYTHONPATH=$PWD python benchmarks/bench_demo.py --cases demo-tiny demo-quick \\
        --json benchmarks/results/bench_demo_cpu.json

Cases: ``demo-tiny``, ``demo-quick``, ``demo-full``, ``study-tiny``, ``study-pilot``
(cells n64, n256 and n64+u1024, five seeds) and ``study-full``. Results of earlier cases
in the JSON file are kept (a case run again replaces its entry).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "demo-tiny": ["demo", "--tiny"],
    "demo-quick": ["demo", "--quick"],
    "demo-full": ["demo"],
    "study-tiny": ["study", "--tiny"],
    "study-pilot": ["study", "--cells", "n64", "n256", "n64+u1024"],
    "study-full": ["study"],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _demo_targets(out: Path) -> dict:
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    acc: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        acc.setdefault((r["model"], r["task"]), []).append(100 * float(r["accuracy"]))
    mean = {key: sum(v) / len(v) for key, v in acc.items()}
    targets = {}
    for (model, task), value in mean.items():
        if model.startswith("teacher-"):
            targets[f"{model} on {task}"] = value
    for task in sorted({task for _, task in mean}):
        targets[f"majority answer on {task}"] = mean[("majority answer", task)]
        pivots = {m: v for (m, t), v in mean.items() if t == task and m.startswith("pivot ")}
        best = max(pivots, key=pivots.get)
        targets[f"best pivot on {task}"] = pivots[best]
        targets[f"best pivot on {task} (arm)"] = best
    return targets


def run_case(name: str, workers: int | None) -> dict:
    """Run one case in a fresh directory and measure it."""
    command = [sys.executable, "-m", "fusion", *CASES[name], "--fresh", "--no-progress"]
    if workers:
        command += ["--workers", str(workers)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        load_before = os.getloadavg()
        cpu0, wall0 = _children_cpu(), time.perf_counter()
        proc = subprocess.run(
            [*command, "--out", tmp], capture_output=True, text=True, env=env, check=False
        )
        wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        entry = {
            "case": name,
            "command": "python -m fusion " + " ".join(CASES[name]),
            "wall_s": wall,
            "cpu_s": cpu,
            "load_before": load_before[0],
            "load_after": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d"),
        }
        if name.startswith("demo"):
            entry["targets"] = _demo_targets(Path(tmp))
        if name.startswith("study"):
            timings = json.loads((Path(tmp) / "timings.json").read_text())
            entry["jobs"] = timings["jobs_run"]
            entry["cpu_s_per_kind"] = timings["cpu_s_per_kind"]
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=["demo-tiny"])
    parser.add_argument("--workers", type=int, help="passed to every command (default: 2)")
    parser.add_argument("--json", type=Path, help="results file (entries are merged)")
    args = parser.parse_args(argv)
    from gwlite.atomic import atomic_write_bytes

    document = {"machine": {}, "cases": {}}
    if args.json and args.json.is_file():
        document = json.loads(args.json.read_text())
    document["machine"] = {
        "cores": os.cpu_count(),
        "platform": f"{platform.machine()} {platform.system()}",
        "python": platform.python_version(),
    }
    for name in args.cases:
        entry = run_case(name, args.workers)
        document["cases"][name] = entry
        print(
            f"{name:12s} wall {entry['wall_s']:7.1f} s  CPU {entry['cpu_s']:7.1f} s  "
            f"load {entry['load_before']:.1f} -> {entry['load_after']:.1f}"
        )
        for key, value in entry.get("targets", {}).items():
            print(f"    {key}: {value if isinstance(value, str) else f'{value:.1f}'}")
        if args.json:
            text = json.dumps(document, indent=2, sort_keys=True) + "\n"
            atomic_write_bytes(args.json, text.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
