"""gwlite's ``proximal`` solver on a GPU (torch-CUDA and CuPy) next to POT CG on the same GPU.

Instances: the point clouds of ``bench_gw.py`` (uniform points in [0, 1]^8, Euclidean
distances, NumPy seeds 1 and 2), built on the host in float64 and moved to the device in
float32. Every plan is priced in float64 by :func:`gwlite.gw_cost`. Times are wall-clock
with the device synchronised before and after (CUDA events would time the same thing
here: one call, one host sync at its end), after a warm-up call; the median of
``--repeat`` runs. ``proximal`` runs with its defaults and ``time_limit`` (8 s: the
target is 10 s at n = 10,000), so it stops at its own rule or at the limit. POT's conditional gradient (torch backend, its exact OT on the CPU)
runs at the sizes of ``--pot-sizes`` only: it takes minutes beyond n = 2000.

OTT-JAX is not installed on the GPU machines, so its plan quality is quoted from the
H200 anchors (same instances): eps 5e-3 gave 0.0488 / 0.0442 / 0.0461 / 0.0403 at
n = 500 / 1000 / 2000 / 4000.

Targets: n = 10,000 in at most 10 s with a plan no worse than OTT's eps = 5e-3 plan, and
at least 100x faster than POT CG at n = 2000.

Usage::

    python benchmarks/bench_proximal_gpu.py                      # on a GPU machine
    python benchmarks/bench_proximal_gpu.py --dry-run            # CPU, small sizes
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import gwlite

OTT_ANCHOR = {500: 0.0488, 1000: 0.0442, 2000: 0.0461, 4000: 0.0403}


def instance(n: int, seed: int) -> np.ndarray:
    """Euclidean distances of uniform points in [0, 1]^8, by row blocks (no n^2 x 8 array)."""
    X = np.random.default_rng(seed).random((n, 8))
    out = np.empty((n, n))
    for start in range(0, n, 512):
        block = X[start : start + 512]
        out[start : start + 512] = np.linalg.norm(block[:, None, :] - X[None, :, :], axis=-1)
    return out


class Backend:
    def __init__(self, name: str):
        self.name = name
        if name.startswith("torch"):
            import torch

            self.lib = torch
            self.device = "cuda" if name == "torch-cuda" else "cpu"
            if self.device == "cuda" and not torch.cuda.is_available():
                raise RuntimeError("torch has no CUDA device")
        elif name == "cupy":
            import cupy

            cupy.zeros(1)
            self.lib = cupy
        else:
            self.lib = np

    def array(self, a):
        a = np.asarray(a, dtype=np.float32)
        if self.name.startswith("torch"):
            return self.lib.as_tensor(a, device=self.device)
        if self.name == "cupy":
            return self.lib.asarray(a)
        return a

    def sync(self):
        if self.name == "torch-cuda":
            self.lib.cuda.synchronize()
        elif self.name == "cupy":
            self.lib.cuda.Device().synchronize()


def timed(backend: Backend, fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        backend.sync()
        start = time.perf_counter()
        out = fn()
        backend.sync()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def run_proximal(backend, C1, C2, repeat, **options) -> dict:
    A, B = backend.array(C1), backend.array(C2)
    res, seconds = timed(
        backend, lambda: gwlite.gromov_wasserstein(A, B, method="proximal", **options), repeat
    )
    d = res.diagnostics
    return {
        "time_s": seconds,
        "upper": float(res.upper),
        "n_iter": res.n_iter,
        "rank": d["rank"],
        "factored_iter": d["factored_iter"],
        "stop_reason": d["stop_reason"],
        "dtype": d["dtype"],
        "polish_steps": d["polish_steps"],
    }


def run_pot_cg(backend, C1, C2) -> dict:
    import ot

    A, B = backend.array(C1), backend.array(C2)
    plan, seconds = timed(backend, lambda: ot.gromov.gromov_wasserstein(A, B), 1)
    T = gwlite._xp.to_numpy(plan).astype(np.float64)
    return {"time_s": seconds, "upper": float(gwlite.gw_cost(C1, C2, T))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--backends", nargs="+", default=["torch-cuda", "cupy"])
    parser.add_argument("--pot-sizes", type=int, nargs="*", default=[2000])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=8.0, help="proximal's time_limit")
    parser.add_argument("--dry-run", action="store_true", help="CPU, small sizes")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.dry_run:
        args.sizes, args.backends, args.pot_sizes = [200, 400], ["numpy", "torch-cpu"], [200]
        args.repeat, args.time_limit = 1, 2.0
    rows = []
    for name in args.backends:
        try:
            backend = Backend(name)
        except Exception as err:  # noqa: BLE001 - report and go on with the other backend
            rows.append({"backend": name, "skipped": f"{type(err).__name__}: {err}"})
            print(f"{name}: skipped ({err})")
            continue
        warm = instance(300, 1)
        run_proximal(backend, warm, warm[::-1, ::-1], 1, max_iter=20)  # compile/warm up
        for n in args.sizes:
            C1, C2 = instance(n, 1), instance(n, 2)
            row = {"backend": name, "n": n, "method": "proximal", "time_limit": args.time_limit}
            row.update(run_proximal(backend, C1, C2, args.repeat, time_limit=args.time_limit))
            rows.append(row)
            print(json.dumps(row), flush=True)
            if n in args.pot_sizes:
                row = {"backend": name, "n": n, "method": "pot_cg"}
                row.update(run_pot_cg(backend, C1, C2))
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))


def table(rows) -> str:
    lines = [
        "| backend | n | method | time (s) | plan cost | vs OTT eps 5e-3 (anchor) "
        "| POT CG time / this | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    cg = {(r["backend"], r["n"]): r for r in rows if r.get("method") == "pot_cg"}
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['backend']} | | | skipped: {r['skipped']} | | | | |")
            continue
        ott = OTT_ANCHOR.get(r["n"])
        vs_ott = f"{r['upper'] / ott:.3f}" if ott else "-"
        base = cg.get((r["backend"], r["n"]))
        speed = f"{base['time_s'] / r['time_s']:.3g}x" if base and r is not base else "-"
        notes = (
            f"{r.get('n_iter')} it., rank {r.get('rank')}, {r.get('stop_reason')}, "
            f"{r.get('dtype')}, polish {r.get('polish_steps')}"
            if r["method"] != "pot_cg"
            else ""
        )
        lines.append(
            f"| {r['backend']} | {r['n']} | {r['method']} | {r['time_s']:.3g} | {r['upper']:.5g} "
            f"| {vs_ott} | {speed} | {notes} |"
        )
    return "\n".join(lines)


def machine() -> str:
    info = f"{platform.machine()}, Python {platform.python_version()}"
    try:
        import torch

        if torch.cuda.is_available():
            info += f", {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    except ImportError:
        pass
    return info


if __name__ == "__main__":
    main()
