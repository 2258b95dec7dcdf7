"""What the losses' non-finite check costs (issue 24): the check alone next to the loss.

For GLD (k = 10) and top-k ULD (K = 10) on logits of shape ``(B, T, V)`` (student and
teacher of one shape), times in the same process, on the same tensors:

* ``check``: :func:`fusion.validation.nonfinite_sequences` under ``"raise"`` (two
  reductions per tensor and one host synchronisation), next to
  ``torch.isfinite(x).all()`` on both tensors (the obvious check, which allocates a bool
  tensor of the logits' size);
* ``loss_raise`` / ``loss_propagate``: forward + backward of the loss with each policy
  (``"propagate"`` never synchronises for the check).

CPU work is timed with ``time.perf_counter``, CUDA work with CUDA events after a
warm-up; the median of ``--repeat`` runs. Usage::

    python benchmarks/bench_nonfinite_check.py --json out.json          # CPU
    python benchmarks/bench_nonfinite_check.py --device cuda --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

import fusion
from fusion.validation import nonfinite_sequences


def _time(fn, device: str, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(shape, dtype, device: str, repeat: int) -> list[dict]:
    gen = torch.Generator(device=device).manual_seed(0)
    student = torch.randn(*shape, generator=gen, device=device).to(dtype).requires_grad_()
    teacher = torch.randn(*shape, generator=gen, device=device).to(dtype)
    rows = []
    for name, make in (
        ("gld", lambda policy: fusion.GLDLoss(k=10, nan_policy=policy)),
        ("uld_topk", lambda policy: fusion.ULDLoss(top_k=10, nan_policy=policy)),
    ):
        row = {"loss": name, "shape": list(shape), "dtype": str(dtype), "device": device}
        row["check_s"] = _time(lambda: nonfinite_sequences(student, teacher), device, repeat)
        # the alternative the check avoids: a bool tensor of the logits' size per input
        row["isfinite_all_s"] = _time(
            lambda: bool(torch.isfinite(student).all() & torch.isfinite(teacher).all()),
            device,
            repeat,
        )
        for policy in ("raise", "propagate"):
            loss_fn = make(policy)

            def step(loss_fn=loss_fn):
                student.grad = None
                loss_fn(student, teacher).backward()

            row[f"loss_{policy}_s"] = _time(step, device, repeat)
        row["check_share_of_loss"] = row["check_s"] / row["loss_raise_s"]
        rows.append(row)
        print(json.dumps(row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from threadpoolctl import threadpool_info

    shapes = [(4, 256, 32_000)] if args.device == "cpu" else [(8, 2048, 32_000), (4, 1024, 152_000)]
    out = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_1_5_15": os.getloadavg(),
            "torch_threads": torch.get_num_threads(),
            "blas_threads": [i.get("num_threads") for i in threadpool_info()],
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        },
        "rows": [r for s in shapes for r in run(s, torch.float32, args.device, args.repeat)],
    }
    out["load_after"] = os.getloadavg()
    if args.json:
        from gwlite.atomic import atomic_open

        with atomic_open(args.json, "w") as fh:
            fh.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
