"""gwlite's sorted bounds on NumPy, CuPy and torch (CPU/CUDA), with baselines in the same run.

Three tables:

1. ``dense``: the sorted closed form (``lower_bound``, one pass over each matrix) and the
   sorted upper bound on dense float32 symmetric matrices, per backend, next to the time
   of reading the same matrix once (``sum``) on that backend: the issue-4 target is
   closed form <= 2x one read.
2. ``sort``: 1-D optimal transport between two vectors of 1e6-1e8 float32 values
   (``wasserstein_1d``: two sorts and a reduction) next to one ``sort`` of a vector.
3. ``pot``: gwlite's ``cg`` and ``entropic`` (POT underneath) on the GPU for
   n = 500-4000, next to the sorted bounds on the same instances (uniform points in
   [0, 1]^8, Euclidean distances, seeds 1 and 2 as in ``../shared/anchors``).

Timing: GPU work is timed with CUDA events (torch) or ``cupy.cuda.Event``, after warm-up
runs, as the median of ``--repeat`` runs; CPU work with ``time.perf_counter``. Each
table reports the machine it ran on.

Usage::

    python benchmarks/bench_backends.py                    # CPU backends, small sizes
    python benchmarks/bench_backends.py --gpu --json out.json   # full sizes on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

import gwlite


def available_backends(gpu: bool) -> list[str]:
    names = ["numpy", "torch-cpu"]
    if gpu:
        try:
            import torch

            if torch.cuda.is_available():
                names.append("torch-cuda")
        except ImportError:
            pass
        try:
            import cupy

            cupy.zeros(1)
            names.append("cupy")
        except Exception:
            pass
    return names


def to_backend(x: np.ndarray, backend: str):
    if backend == "numpy":
        return x
    if backend.startswith("torch"):
        import torch

        return torch.as_tensor(x, device="cuda" if backend == "torch-cuda" else "cpu")
    import cupy

    return cupy.asarray(x)


def timer(backend: str, fn, *args, repeat: int, warmup: int = 2) -> float:
    """Median seconds of ``fn(*args)``; device-synchronised for GPU backends."""
    for _ in range(warmup):
        fn(*args)
    samples = []
    for _ in range(repeat):
        if backend == "torch-cuda":
            import torch

            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args)
            stop.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(stop) / 1e3)
        elif backend == "cupy":
            import cupy

            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            fn(*args)
            stop.record()
            stop.synchronize()
            samples.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
        else:
            t0 = time.perf_counter()
            fn(*args)
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _read_once(C):
    return C.sum()


def _symmetric(n: int, seed: int) -> np.ndarray:
    A = np.random.default_rng(seed).random((n, n), dtype=np.float32)
    return (A + A.T) / 2


def dense_table(sizes, backends, repeat) -> list[dict]:
    rows = []
    for n in sizes:
        host1, host2 = _symmetric(n, 1), _symmetric(n, 2)
        for backend in backends:
            C1, C2 = to_backend(host1, backend), to_backend(host2, backend)
            read = timer(backend, _read_once, C1, repeat=repeat)
            closed = timer(backend, gwlite.lower_bound, C1, C2, repeat=repeat)
            upper = timer(
                backend, gwlite.sorted_upper_bound, C1, C2, repeat=max(1, repeat // 3), warmup=1
            )
            rows.append(
                {
                    "n": n,
                    "backend": backend,
                    "read_once_ms": read * 1e3,
                    "closed_form_ms": closed * 1e3,
                    "closed_over_read": closed / read,
                    "sorted_upper_ms": upper * 1e3,
                    "closed_form": float(gwlite.lower_bound(C1, C2)),
                }
            )
            del C1, C2
    return rows


def sort_table(lengths, backends, repeat) -> list[dict]:
    rows = []
    for length in lengths:
        rng = np.random.default_rng(0)
        hu = rng.random(length, dtype=np.float32)
        hv = rng.random(length, dtype=np.float32)
        for backend in backends:
            if backend in ("numpy", "torch-cpu") and length > 10**7:
                continue  # minutes on 2 cores, nothing to learn
            u, v = to_backend(hu, backend), to_backend(hv, backend)
            xp = gwlite._xp.array_namespace(u)
            one_sort = timer(backend, xp.sort, u, repeat=repeat)
            w1 = timer(backend, gwlite.wasserstein_1d, u, v, repeat=repeat)
            rows.append(
                {
                    "length": length,
                    "backend": backend,
                    "sort_ms": one_sort * 1e3,
                    "wasserstein_1d_ms": w1 * 1e3,
                    "ratio": w1 / one_sort,
                }
            )
            del u, v
    return rows


def _euclidean(n: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).random((n, 8))
    return np.linalg.norm(X[:, None, :] - X[None, :, :], axis=-1)


def pot_table(sizes, backend, entropic_sizes, cg_sizes) -> list[dict]:
    rows = []
    for n in sizes:
        C1, C2 = to_backend(_euclidean(n, 1), backend), to_backend(_euclidean(n, 2), backend)
        runs = [("sorted", {"lower": "mean_row"})]
        if n in cg_sizes:
            runs.append(("cg", {}))
        if n in entropic_sizes:
            runs.append(("entropic", {"epsilon": 5e-3, "max_iter": 200}))
        for method, options in runs:
            t0 = time.perf_counter()
            res = gwlite.gromov_wasserstein(C1, C2, method=method, **options)
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    "n": n,
                    "backend": backend,
                    "method": method,
                    "time_s": seconds,
                    "value": float(res.value),
                    "lower": float(res.lower),
                    "upper": float(res.upper),
                    "converged": res.converged,
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    for row in rows:
        cells = [f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    text = f"{platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}"
    try:
        import torch

        text += f", torch {torch.__version__}"
        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="full sizes, GPU backends included")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--skip-pot", action="store_true")
    parser.add_argument("--json", help="write all tables here")
    args = parser.parse_args()
    backends = available_backends(args.gpu)
    if args.gpu:
        dense_sizes, lengths = [1000, 3000, 10000], [10**6, 10**7, 10**8]
        pot_sizes, cg_sizes, ent_sizes = (
            [500, 1000, 2000, 4000],
            {500, 1000, 2000},
            {500, 1000, 2000, 4000},
        )
        pot_backend = "torch-cuda" if "torch-cuda" in backends else "numpy"
    else:
        dense_sizes, lengths = [300, 1000], [10**5, 10**6]
        pot_sizes, cg_sizes, ent_sizes = [100, 300], {100, 300}, {100}
        pot_backend = "numpy"
    print(f"machine: {machine()}")
    tables = {"machine": machine(), "dense": dense_table(dense_sizes, backends, args.repeat)}
    print("\n## dense sorted bounds (float32)\n" + markdown(tables["dense"]), flush=True)
    tables["sort"] = sort_table(lengths, backends, args.repeat)
    print("\n## 1-D OT by sorting (float32)\n" + markdown(tables["sort"]), flush=True)
    if not args.skip_pot:
        tables["pot"] = pot_table(pot_sizes, pot_backend, ent_sizes, cg_sizes)
        print("\n## POT methods vs sorted bounds (float64)\n" + markdown(tables["pot"]), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(tables, fh, indent=1)


if __name__ == "__main__":
    main()
