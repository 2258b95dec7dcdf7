"""The whole fusion pipeline on tiny models, offline, in minutes: ``python -m fusion demo``.

1. Data: items from :func:`fusion.eval.generate_task` (``coin_flip`` as generated;
   ``multistep_arithmetic`` shortened to small numbers, see :func:`arithmetic_item`) with
   chain-of-thought targets written by exact solvers.
2. Two teachers from transformers configs (random init) with different tokenizers, each
   trained on one task family: a character-level model on coin flips, a byte-level-BPE
   model on arithmetic.
3. Both teachers' top-k cached with :func:`fusion.cache.build` over the pivot's data.
4. A pivot (its own BPE tokenizer) trained with :class:`fusion.FusionTrainer` three ways,
   same steps and seeds: SFT; SFT + ULD; SFT + ULD + GLD.
5. Every model evaluated with :func:`fusion.eval.evaluate` (Zero-shot-CoT, paper and robust
   cleansing) on held-out items.
6. A table like InfiGFusion's Table 3 on the terminal, CSV files and a PNG plot, and a
   plain reading of what the numbers show.

Every preset is a :class:`DemoConfig`; :meth:`DemoConfig.tiny` runs in well under a minute
for tutorials and tests.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fusion.jsonio import write_jsonl_atomic
from gwlite.atomic import atomic_open, atomic_write_bytes

__all__ = [
    "BASELINE",
    "MODELS",
    "TASKS",
    "VARIANTS",
    "DemoConfig",
    "DemoData",
    "DemoResult",
    "ModelSize",
    "Row",
    "arithmetic_item",
    "build_data",
    "build_tokenizers",
    "coin_flip_item",
    "evaluate_model",
    "format_table",
    "main",
    "make_items",
    "plot",
    "reading",
    "run_demo",
    "sft_examples",
    "solve_arithmetic",
    "summarise",
    "summarise_rows",
    "train",
    "write_csv",
]

#: Task families, in table order: the first teacher learns coin flips, the second arithmetic.
TASKS = ("coin_flip", "multistep_arithmetic")

#: Pivot variants: name -> (uses ULD, uses GLD); weights ``DemoConfig.lambda_``, ``beta``.
VARIANTS: dict[str, tuple[bool, bool]] = {
    "SFT": (False, False),
    "SFT+ULD": (True, False),
    "SFT+ULD+GLD": (True, True),
}


@dataclass(frozen=True)
class ModelSize:
    """Architecture of one tiny causal LM (see :func:`fusion.tiny.tiny_causal_lm`).

    Llama by default: with rotary positions these models learn both tasks many times
    faster than GPT-2 with learned positions (measured: 64% against 7% on the arithmetic
    after 1000 steps).
    """

    arch: str = "llama"
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    max_positions: int = 512


@dataclass(frozen=True)
class DemoConfig:
    """Everything that sizes a demo run.

    Attributes
    ----------
    train_items : int
        Training items per task family (each gives two SFT examples: reasoning, answer).
        The pivot trains on both families; each teacher on its own.
    eval_items : int
        Held-out items per task.
    coin_teacher_steps, arith_teacher_steps : int
        Optimiser steps of the coin-flip teacher (character level: long sequences, so
        slow steps) and of the arithmetic teacher (BPE).
    pivot_warmup_steps : int
        SFT steps of each seed's pivot before the three variants branch off from the same
        weights (0: every variant starts from the random initialisation). A warm start
        mirrors the paper, whose pivot is a trained model, not a random one; it also keeps
        distillation from sharpening a random model's guesses.
    pivot_steps : int
        Steps of every pivot variant after the warm start.
    batch_size : int
        Examples per step.
    learning_rate : float
        Peak AdamW learning rate: linear warm-up over ``warmup_steps``, then cosine decay
        (teachers); for the pivots, constant through the warm start and cosine decay over
        the variants' steps.
    warmup_steps : int
    seeds : tuple of int
        Pivot seeds (initialisation and data order); every variant runs every seed.
    lambda_, beta : float
        :class:`fusion.FusionLoss` weights of the distilled variants.
    k, m : int
        GLD's kept entries per position and compared degrees.
    cache_k : int
        Entries cached per teacher token (also ULD's top-k).
    arithmetic_terms, arithmetic_max_abs : int
        Shortening of the arithmetic items (numbers kept per group, largest magnitude).
    arith_vocab, pivot_vocab : int
        BPE vocabulary sizes of the arithmetic teacher and of the pivot.
    teacher_coin, teacher_arith, pivot : ModelSize
    eval_batch_size : int
        Prompts per generation batch.
    workers : int
        Processes that train and evaluate models in parallel (default: 2, or 1 on a
        single-core machine). Every job is seeded, so results do not depend on it.
    threads : int
        ``torch.set_num_threads`` per worker (1 by default: these models are too small
        for intra-op threads to pay off, and a thread competing with another busy
        process slows them down many times).
    data_seed : int
        Seed of the generated data (training and held-out items use different streams).
    """

    train_items: int = 1500
    eval_items: int = 200
    coin_teacher_steps: int = 450
    arith_teacher_steps: int = 1000
    pivot_warmup_steps: int = 700
    pivot_steps: int = 400
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    lambda_: float = 0.5
    beta: float = 1.0
    k: int = 10
    m: int = 64
    cache_k: int = 10
    arithmetic_terms: int = 2
    arithmetic_max_abs: int = 2
    arith_vocab: int = 420
    pivot_vocab: int = 360
    teacher_coin: ModelSize = field(default_factory=ModelSize)
    teacher_arith: ModelSize = field(default_factory=ModelSize)
    pivot: ModelSize = field(default_factory=ModelSize)
    eval_batch_size: int = 64
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    threads: int = 1
    data_seed: int = 0

    @classmethod
    def full(cls, **overrides: Any) -> DemoConfig:
        """The default run: five seeds, about 6 minutes with 2 workers on 2 idle cores."""
        return replace(cls(), **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """``--quick``: the same pipeline, smaller: three seeds, under 2 minutes."""
        quick = cls(
            train_items=500,
            eval_items=50,
            coin_teacher_steps=180,
            arith_teacher_steps=500,
            pivot_warmup_steps=250,
            pivot_steps=150,
            warmup_steps=20,
            seeds=(0, 1, 2),
        )
        return replace(quick, **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> DemoConfig:
        """A smoke-test size for tutorials and tests (about 15 s); learns nothing."""
        small = ModelSize(d_model=32, n_head=2)
        tiny = cls(
            train_items=120,
            eval_items=12,
            coin_teacher_steps=20,
            arith_teacher_steps=40,
            pivot_warmup_steps=10,
            pivot_steps=10,
            seeds=(0, 1, 2),
            warmup_steps=5,
            batch_size=8,
            m=32,
            teacher_coin=small,
            teacher_arith=small,
            pivot=small,
        )
        return replace(tiny, **overrides)

    def check(self) -> None:
        """Raise ValueError for sizes that cannot run."""
        positive = (
            "train_items",
            "eval_items",
            "coin_teacher_steps",
            "arith_teacher_steps",
            "pivot_steps",
            "batch_size",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not 2 <= self.arithmetic_terms <= 4 or not 1 <= self.arithmetic_max_abs <= 9:
            raise ValueError("arithmetic_terms must lie in 2..4 and arithmetic_max_abs in 1..9")
        if self.k > self.cache_k:
            raise ValueError(f"k={self.k} exceeds cache_k={self.cache_k}")


# ---------------------------------------------------------------------------------------
# 1. data with exact chain-of-thought targets
# ---------------------------------------------------------------------------------------

_COIN_STEP = re.compile(r"(\S+) (flips|does not flip) the coin\.")
_GROUP = re.compile(r"\(([^()]*)\)")
_OUTER = re.compile(r"\) ([-+*]) \(")


def coin_flip_item(item: dict[str, Any]) -> dict[str, Any]:
    """Add the running coin state as chain of thought to a generated coin-flip item.

    Parameters
    ----------
    item : dict
        From ``generate_task("coin_flip", ...)``.

    Returns
    -------
    dict
        The item with ``"reasoning"``, e.g. ``"Ann flips: tails. Bo does not flip: tails."``.

    Raises
    ------
    ValueError
        If the solver's answer differs from the generator's (they are written
        independently, so this is a cross-check).
    """
    state, steps = "heads", []
    for name, verb in _COIN_STEP.findall(item["question"]):
        if verb == "flips":
            state = "tails" if state == "heads" else "heads"
        steps.append(
            f"{name} {verb}: {state}." if verb == "flips" else f"{name} does not flip: {state}."
        )
    answer = "yes" if state == "heads" else "no"
    if not steps or answer != item["answer"]:
        raise ValueError(f"coin-flip solver disagrees with the generator on {item['question']!r}")
    return {**item, "reasoning": " ".join(steps)}


def _parse_group(text: str) -> tuple[list[int], list[str]]:
    tokens = text.split(" ")
    return [int(t) for t in tokens[0::2]], tokens[1::2]


def _solve_group(numbers: list[int], ops: list[str], steps: list[str]) -> int:
    """Evaluate with * before + and -, left to right, writing one step per operation."""
    numbers, ops = list(numbers), list(ops)
    while "*" in ops:
        i = ops.index("*")
        value = numbers[i] * numbers[i + 1]
        steps.append(f"{numbers[i]} * {numbers[i + 1]} = {value}.")
        numbers[i : i + 2], ops[i : i + 1] = [value], []
    value = numbers[0]
    for op, number in zip(ops, numbers[1:]):
        new = value + number if op == "+" else value - number
        steps.append(f"{value} {op} {number} = {new}.")
        value = new
    return value


def solve_arithmetic(question: str) -> tuple[int, str]:
    """Exact value and step-by-step reasoning of ``"((a op b ...) OP (c op d ...)) ="``.

    Parameters
    ----------
    question : str
        A BIG-Bench-Hard style expression of two parenthesised groups.

    Returns
    -------
    value : int
    reasoning : str
        One sentence per operation.

    Examples
    --------
    >>> solve_arithmetic("((2 * 3) - (1 + -2)) =")
    (7, '2 * 3 = 6. 1 + -2 = -1. 6 - -1 = 7.')
    """
    groups = _GROUP.findall(question)
    outer = _OUTER.search(question)
    if len(groups) != 2 or outer is None:
        raise ValueError(f"not a two-group expression: {question!r}")
    steps: list[str] = []
    left, right = (_solve_group(*_parse_group(g), steps) for g in groups)
    value = _solve_group([left, right], [outer.group(1)], steps)
    return value, " ".join(steps)


def arithmetic_item(item: dict[str, Any], terms: int, max_abs: int) -> dict[str, Any] | None:
    """Shorten a generated arithmetic item and add its exact reasoning.

    Each group keeps its first ``terms`` numbers (and the operators between them); the item
    is kept only if every kept number lies in ``[-max_abs, max_abs]``. BIG-Bench-Hard's
    eight-number expressions are far beyond what a 2-layer model learns in a minute; two
    short groups of small numbers are not.

    Parameters
    ----------
    item : dict
        From ``generate_task("multistep_arithmetic", ...)``.
    terms : int
        Numbers kept per group (4 keeps the item whole).
    max_abs : int
        Largest magnitude kept.

    Returns
    -------
    dict or None
        ``question``, ``answer``, ``reasoning`` and ``task``; ``None`` if rejected.
    """
    question = item["question"]
    outer = _OUTER.search(question)
    parts = []
    for group in _GROUP.findall(question):
        numbers, ops = _parse_group(group)
        numbers, ops = numbers[:terms], ops[: terms - 1]
        if any(abs(x) > max_abs for x in numbers):
            return None
        parts.append(str(numbers[0]) + "".join(f" {o} {x}" for o, x in zip(ops, numbers[1:])))
    short = f"(({parts[0]}) {outer.group(1)} ({parts[1]})) ="
    value, reasoning = solve_arithmetic(short)
    return {"question": short, "answer": str(value), "reasoning": reasoning, "task": item["task"]}


def make_items(task: str, n: int, seed: int, config: DemoConfig) -> list[dict[str, Any]]:
    """``n`` items of a task family with chain-of-thought targets.

    Parameters
    ----------
    task : {"coin_flip", "multistep_arithmetic"}
    n : int
    seed : int
        Seed stream of :func:`fusion.eval.generate_task` (successive seeds are drawn until
        ``n`` arithmetic items pass the shortening filter).
    config : DemoConfig

    Returns
    -------
    list of dict
    """
    from fusion.eval import generate_task

    if task == "coin_flip":
        return [coin_flip_item(it) for it in generate_task("coin_flip", n, seed=seed)]
    if task != "multistep_arithmetic":
        raise ValueError(f"unknown demo task {task!r}")
    items: list[dict[str, Any]] = []
    block = 0
    while len(items) < n:
        # seeds 1000*seed + block: disjoint streams for distinct `seed`s
        for raw in generate_task(task, 4096, seed=1000 * seed + block):
            short = arithmetic_item(raw, config.arithmetic_terms, config.arithmetic_max_abs)
            if short is not None:
                items.append(short)
                if len(items) == n:
                    break
        block += 1
    return items


def sft_examples(items: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Two prompt/response examples per item, the two stages of Zero-shot-CoT.

    Stage 1: ``"Q: {question}\\nA: Let's think step by step."`` -> ``" {reasoning}"``
    (then EOS, so generation stops). Stage 2: that prompt, the reasoning and the task's
    answer trigger -> ``" {answer}."``: exactly the strings :func:`fusion.eval.evaluate`
    sends, so the evaluation measures the task, not a format mismatch.
    """
    from fusion.eval.prompts import cot_stage1_prompt, cot_stage2_prompt

    out = []
    for it in items:
        stage1 = cot_stage1_prompt(it["question"])
        reasoning = " " + it["reasoning"]
        out.append({"prompt": stage1, "response": reasoning, "task": it["task"]})
        stage2 = cot_stage2_prompt(stage1, reasoning, it["task"])
        out.append({"prompt": stage2, "response": f" {it['answer']}.", "task": it["task"]})
    return out


@dataclass
class DemoData:
    """Training items and examples per family, the pivot's mixed training set, held-out items."""

    items: dict[str, list[dict[str, Any]]]
    by_task: dict[str, list[dict[str, str]]]
    train: list[dict[str, str]]
    held_out: dict[str, list[dict[str, Any]]]

    def majority_answers(self) -> dict[str, str]:
        """The most frequent training answer of each task (the trivial baseline)."""
        from collections import Counter

        return {
            task: Counter(it["answer"] for it in items).most_common(1)[0][0]
            for task, items in self.items.items()
        }


def build_data(config: DemoConfig) -> DemoData:
    """Generate training and held-out data; held-out questions never occur in training."""
    import random

    items, by_task, held_out = {}, {}, {}
    for t, task in enumerate(TASKS):
        items[task] = make_items(task, config.train_items, config.data_seed * 10 + t, config)
        seen = {it["question"] for it in items[task]}
        pool = make_items(task, 2 * config.eval_items + 50, config.data_seed * 10 + 5 + t, config)
        held_out[task] = [it for it in pool if it["question"] not in seen][: config.eval_items]
        by_task[task] = sft_examples(items[task])
    train = [ex for task in TASKS for ex in by_task[task]]
    random.Random(config.data_seed).shuffle(train)
    return DemoData(items, by_task, train, held_out)


# ---------------------------------------------------------------------------------------
# 2-4. tokenizers, models, training, caches
# ---------------------------------------------------------------------------------------


def build_tokenizers(data: DemoData, config: DemoConfig) -> dict[str, Any]:
    """Three different tokenizers: character level, and two BPEs of different sizes.

    Keys ``"coin"`` (character level, the coin-flip teacher), ``"arith"`` (BPE, the
    arithmetic teacher) and ``"pivot"`` (BPE trained on every other example only, so its
    merges, not just its size, differ from the arithmetic teacher's).
    """
    from fusion.tiny import bpe_tokenizer, char_tokenizer

    corpus = [ex["prompt"] + ex["response"] for ex in data.train]
    return {
        "coin": char_tokenizer(corpus),
        "arith": bpe_tokenizer(corpus, vocab_size=config.arith_vocab),
        "pivot": bpe_tokenizer(corpus[::2], vocab_size=config.pivot_vocab),
    }


def _new_model(tokenizer: Any, size: ModelSize, seed: int):
    import torch

    from fusion.tiny import tiny_causal_lm

    model = tiny_causal_lm(
        tokenizer,
        arch=size.arch,
        n_layer=size.n_layer,
        d_model=size.d_model,
        n_head=size.n_head,
        max_positions=size.max_positions,
        seed=seed,
    )
    # Fresh synthetic data never repeats enough to overfit in these budgets; GPT-2's default
    # dropout would only slow learning (and each step) down.
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _training_args(out_dir: Path, steps: int, seed: int, config: DemoConfig, phase: str):
    from transformers import TrainingArguments

    # "whole": warm-up then cosine decay; "start": warm-up then constant (a warm start that
    # the variants continue); "finish": cosine decay from the peak, no second warm-up.
    schedule = {"whole": "cosine", "start": "constant_with_warmup", "finish": "cosine"}[phase]
    warmup = 0 if phase == "finish" else min(config.warmup_steps, max(steps - 1, 0))
    return TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=config.batch_size,
        max_steps=steps,
        learning_rate=config.learning_rate,
        warmup_steps=warmup,
        lr_scheduler_type=schedule,
        weight_decay=0.0,
        logging_steps=max(1, steps // 5),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
    )


def train(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, str]],
    *,
    steps: int,
    seed: int,
    config: DemoConfig,
    work_dir: Path,
    teachers: Sequence[tuple[Path, float]] = (),
    lambda_: float = 0.0,
    beta: float = 0.0,
    phase: str = "whole",
) -> list[dict[str, float]]:
    """Train ``model`` in place with :class:`fusion.FusionTrainer`.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase
    examples : sequence of dict
        ``prompt``/``response`` pairs; with ``teachers``, in the caches' order.
    steps, seed : int
        Optimiser steps; seed of the data order (and of the Trainer).
    config : DemoConfig
        Batch size, learning rate, warm-up, GLD's ``k`` and ``m``.
    work_dir : pathlib.Path
        The Trainer's output directory (nothing is saved there).
    teachers : sequence of (path, float)
        Caches and weights; ignored when ``lambda_`` is 0 (plain SFT).
    lambda_, beta : float
        :class:`fusion.FusionLoss` weights.
    phase : {"whole", "start", "finish"}
        Learning-rate schedule: warm-up then cosine decay; warm-up then constant (a warm
        start); cosine decay from the peak (the continuation of a warm start).

    Returns
    -------
    list of dict
        The training log lines (``loss``, ``ce``, and ``uld``/``gld`` when distilling).
    """
    from transformers import PrinterCallback

    from fusion.training import FusionTrainer

    trainer = FusionTrainer(
        model,
        _training_args(work_dir, steps, seed, config, phase),
        teachers=list(teachers) if lambda_ > 0 else [],
        lambda_=lambda_,
        beta=beta,
        k=config.k,
        m=config.m,
        train_dataset=[{"prompt": e["prompt"], "response": e["response"]} for e in examples],
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)  # the demo reports through its own bar
    trainer.train()
    model.eval()
    return [h for h in trainer.state.log_history if "loss" in h]


# ---------------------------------------------------------------------------------------
# 5. evaluation
# ---------------------------------------------------------------------------------------


def evaluate_model(
    model: Any, tokenizer: Any, held_out: dict[str, list[dict[str, Any]]], config: DemoConfig
) -> dict[str, tuple[float, float]]:
    """Zero-shot-CoT accuracy of a model on the held-out items of every task.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase
    held_out : dict of str to list of dict
        Items per task (:class:`DemoData` ``held_out``).
    config : DemoConfig
        Supplies the generation batch size.

    Returns
    -------
    dict of str to (float, float)
        ``{task: (accuracy with paper cleansing, accuracy with robust cleansing)}``.
    """
    from fusion.eval import HFModel, evaluate

    hf = HFModel(model, tokenizer=tokenizer, batch_size=config.eval_batch_size)
    scores = {}
    for task, items in held_out.items():
        result = evaluate(
            hf, items, task=task, method="zero_shot_cot", batch_size=len(items), progress=False
        )
        scores[task] = (result.accuracy, result.robust_accuracy)
    return scores


# ---------------------------------------------------------------------------------------
# 6. tables, files, reading
# ---------------------------------------------------------------------------------------

#: The trivial reference: always answer the most frequent training answer.
BASELINE = "majority answer"

#: Column order of the table: the baseline, the teachers, then the pivot variants.
MODELS = (BASELINE, "teacher-coin (char)", "teacher-arith (BPE)") + tuple(
    f"pivot {v}" for v in VARIANTS
)


@dataclass(frozen=True)
class Row:
    """One evaluation: a model (and seed) on a task."""

    model: str
    seed: int
    task: str
    n: int
    accuracy: float
    robust_accuracy: float


def summarise(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Mean, sample standard deviation, min and max over seeds per (model, task).

    Includes an ``"average"`` task: per seed, the mean over tasks.
    """
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in summarise_rows(rows):
        groups.setdefault((r.model, r.task), []).append(r)
    out = []
    for (model, task), rs in groups.items():
        entry = {"model": model, "task": task, "seeds": len(rs)}
        for key in ("accuracy", "robust_accuracy"):
            values = [getattr(r, key) for r in rs]
            entry[f"{key}_mean"] = statistics.fmean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            entry[f"{key}_min"], entry[f"{key}_max"] = min(values), max(values)
        out.append(entry)
    order = {m: i for i, m in enumerate(MODELS)}
    tasks = {t: i for i, t in enumerate((*TASKS, "average"))}
    return sorted(out, key=lambda e: (tasks.get(e["task"], 99), order.get(e["model"], 99)))


def format_table(summary: Sequence[dict[str, Any]], key: str = "accuracy") -> str:
    """Task x model table of ``mean ± std`` in percent (std over seeds; one run: no ±)."""
    cells = {(e["task"], e["model"]): e for e in summary}
    models = [m for m in MODELS if any(e["model"] == m for e in summary)]
    tasks = [t for t in (*TASKS, "average") if any(e["task"] == t for e in summary)]
    header = ["task", *models]
    lines = []
    for task in tasks:
        line = [task]
        for model in models:
            e = cells.get((task, model))
            if e is None:
                line.append("-")
                continue
            mean, std = 100 * e[f"{key}_mean"], 100 * e[f"{key}_std"]
            line.append(f"{mean:5.1f} ± {std:4.1f}" if e["seeds"] > 1 else f"{mean:5.1f}")
        lines.append(line)
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row):
        return " | ".join(
            str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        )

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(r) for r in lines)])


def _paired(rows: Sequence[Row], variant: str) -> list[float]:
    """Per seed: the variant's average accuracy minus SFT's, in points (same init, same data)."""
    avg = {(e.model, e.seed): e.accuracy for e in summarise_rows(rows) if e.task == "average"}
    seeds = sorted({r.seed for r in rows if r.model == "pivot SFT"})
    return [100 * (avg[(f"pivot {variant}", s)] - avg[("pivot SFT", s)]) for s in seeds]


def summarise_rows(rows: Sequence[Row]) -> list[Row]:
    """``rows`` plus, per model and seed, an ``"average"`` row (mean over tasks)."""
    groups: dict[tuple[str, int], list[Row]] = {}
    for r in rows:
        if r.task != "average":
            groups.setdefault((r.model, r.seed), []).append(r)
    averages = [
        Row(
            model,
            seed,
            "average",
            sum(r.n for r in rs),
            statistics.fmean(r.accuracy for r in rs),
            statistics.fmean(r.robust_accuracy for r in rs),
        )
        for (model, seed), rs in groups.items()
    ]
    return [*rows, *averages]


def reading(rows: Sequence[Row], config: DemoConfig) -> str:
    """A one-paragraph plain reading of the numbers, whichever way they go.

    Variants are compared with SFT seed by seed (each seed shares the initialisation and
    the data order across variants), on the average over tasks. A difference counts when
    its mean exceeds two standard errors, the standard error being the larger of the
    seeds' spread and the binomial error of a difference of two accuracies, over the
    square root of the number of seeds.
    """
    cell = {(e["task"], e["model"]): e for e in summarise(rows)}

    def pct(task: str, model: str) -> float:
        return 100 * cell[(task, model)]["accuracy_mean"]

    teachers = []
    for model, own in zip(MODELS[1:3], TASKS):
        other = TASKS[1 - TASKS.index(own)]
        teachers.append(
            f"{model} scores {pct(own, model):.0f}% on its own family ({own}; the majority "
            f"answer scores {pct(own, BASELINE):.0f}%) and {pct(other, model):.0f}% on the other"
        )
    sft = "pivot SFT"
    text = (
        f"Reading: {teachers[0]}; {teachers[1]}. The pivot with SFT alone reaches "
        f"{pct(TASKS[0], sft):.0f}% and {pct(TASKS[1], sft):.0f}% (average "
        f"{pct('average', sft):.1f} ± {100 * cell[('average', sft)]['accuracy_std']:.1f} over "
        f"{len(config.seeds)} seeds)."
    )
    binomial = 100 * math.sqrt(0.5 / (len(TASKS) * config.eval_items))
    verdicts, lower_everywhere = {}, []
    for variant in list(VARIANTS)[1:]:
        diffs = _paired(rows, variant)
        verdicts[variant], mean, bar = _verdict(diffs, binomial)
        wins = sum(d > 0 for d in diffs)
        if wins == 0 and len(diffs) >= 3 and mean < 0:
            lower_everywhere.append(variant)
        text += (
            f" {variant} {_VERDICT_WORDS[verdicts[variant]]}: {mean:+.1f} points on average, "
            f"seed by seed (better in {wins} of {len(diffs)} seeds; a difference counts beyond "
            f"±{bar:.1f})."
        )
    return (
        text
        + _closing(verdicts, lower_everywhere)
        + (
            " These are 0.2M-parameter models trained for minutes: the demo shows the pipeline "
            "working end to end and how to read its numbers, not the paper's gains."
        )
    )


_VERDICT_WORDS = {
    "better": "beats SFT",
    "worse": "falls behind SFT",
    "same": "is not distinguishable from SFT",
}

_WHY_WORSE = (
    " Why distillation can cost accuracy here: across tokenizers ULD and GLD see only the "
    "shape of each teacher's distribution (sorted probabilities, sorted degrees), never which "
    "token it prefers, so they push the pivot to be as confident as the teacher about whatever "
    "it currently predicts; each teacher is distilled on both families although it never saw "
    "one of them; and lambda moves weight away from the cross-entropy."
)


def _verdict(diffs: Sequence[float], binomial: float) -> tuple[str, float, float]:
    """``("better" | "worse" | "same", mean difference, threshold)`` of paired differences.

    The threshold is two standard errors of the mean difference, the per-seed error being
    the larger of the observed spread and the binomial error (a spread from three seeds can
    be small by chance).
    """
    mean = statistics.fmean(diffs)
    spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    bar = 2 * max(spread, binomial) / math.sqrt(len(diffs))
    return ("better" if mean > bar else "worse" if mean < -bar else "same"), mean, bar


def _closing(verdicts: dict[str, str], lower_everywhere: list[str]) -> str:
    if "worse" in verdicts.values():
        return _WHY_WORSE
    if "better" in verdicts.values():
        return " Distillation from the cached teachers helps here beyond the seed noise."
    if lower_everywhere:
        return (
            f" No variant passes that test, but {' and '.join(lower_everywhere)} scored below "
            "SFT in every seed: if anything, a small cost." + _WHY_WORSE
        )
    return " At this scale the distillation terms neither help nor hurt measurably."


def write_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Atomically write dict records as CSV (columns of the first record)."""
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def plot(summary: Sequence[dict[str, Any]], rows: Sequence[Row], path: Path) -> None:
    """Grouped bars (mean over seeds, std as error bars, each seed a dot), PNG, atomically.

    The majority-answer baseline is a dashed line across each task's group of bars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell = {(e["task"], e["model"]): e for e in summary}
    every = summarise_rows(rows)
    models = [m for m in MODELS if m != BASELINE and (TASKS[0], m) in cell]
    tasks = [*TASKS, "average"]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for i, model in enumerate(models):
        xs = [t + (i - (len(models) - 1) / 2) * width for t in range(len(tasks))]
        means = [100 * cell[(t, model)]["accuracy_mean"] for t in tasks]
        stds = [100 * cell[(t, model)]["accuracy_std"] for t in tasks]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=model)
        for x, task in zip(xs, tasks):
            seeds = [100 * r.accuracy for r in every if r.model == model and r.task == task]
            ax.plot([x] * len(seeds), seeds, "k.", markersize=3)
    for t, task in enumerate(tasks):
        if (task, BASELINE) in cell:
            level = 100 * cell[(task, BASELINE)]["accuracy_mean"]
            label = BASELINE if t == 0 else None
            ax.hlines(level, t - 0.45, t + 0.45, colors="grey", linestyles="--", label=label)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("Zero-shot-CoT accuracy (%), paper cleansing")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("fusion demo: teachers and pivots on held-out items")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """What a demo run produced.

    Attributes
    ----------
    rows : list of Row
        One per (model, seed, task).
    summary : list of dict
        :func:`summarise` of ``rows``.
    table, robust_table, reading : str
        The terminal output.
    paths : dict of str to Path
        Files written (``results``, ``summary``, ``plot``, ``report``, ``train_data``).
    timings : dict of str to float
        Seconds per stage and ``total``.
    """

    rows: list[Row]
    summary: list[dict[str, Any]]
    table: str
    robust_table: str
    reading: str
    paths: dict[str, Path]
    timings: dict[str, float]


class _Stages:
    """One tqdm bar over the jobs of a run, and the seconds spent per kind of work."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="fusion demo", unit="job", disable=not enabled)
        self.timings: dict[str, float] = {}
        self.start = time.perf_counter()

    def done(self, name: str, timings: dict[str, float]) -> None:
        """Record a finished job and its ``{kind: seconds}``."""
        for kind, seconds in timings.items():
            self.timings[kind] = self.timings.get(kind, 0.0) + seconds
        self.bar.set_postfix_str(name)
        self.bar.update(1)

    def close(self) -> dict[str, float]:
        self.bar.close()
        self.timings["total"] = time.perf_counter() - self.start
        return self.timings


class _Inline:
    """An executor that runs each job at once in this process (``workers=1``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # delivered through the future, like a process pool
            future.set_exception(err)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _init_worker(threads: int) -> None:
    import torch
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(threads)


def _executor(config: DemoConfig):
    if config.workers <= 1:
        _init_worker(config.threads)
        return _Inline()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker, safe whatever threads the parent has started
    return ProcessPoolExecutor(
        config.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(config.threads,),
    )


def run_demo(
    config: DemoConfig | None = None,
    out_dir: str | os.PathLike = "fusion-demo",
    *,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> DemoResult:
    """Run the whole pipeline and write its outputs under ``out_dir``.

    Parameters
    ----------
    config : DemoConfig, optional
        Sizes (default :meth:`DemoConfig.full`).
    out_dir : str or path-like
        Receives ``train.jsonl``, ``caches/``, ``results.csv`` (one row per model, seed and
        task), ``summary.csv``, ``accuracy.png`` and ``report.md``.
    progress : bool
        Show a tqdm bar over the jobs.
    echo : callable, optional
        Where the tables and the reading are printed (``None``: silent).

    Returns
    -------
    DemoResult

    Notes
    -----
    With ``config.workers > 1`` the jobs run in spawned processes, which import the
    caller's main module: call ``run_demo`` from a script under
    ``if __name__ == "__main__":`` (the command line and notebooks need nothing).
    """
    import shutil

    import torch
    import transformers

    config = config or DemoConfig.full()
    config.check()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built here; never download
    # workers=1 runs the jobs in this process: restore what the worker set-up changes
    threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    out = Path(out_dir)
    work = Path(tempfile.mkdtemp(prefix="fusion-demo-"))  # Trainer dirs, warm starts
    warm = len(config.seeds) if config.pivot_warmup_steps else 0
    stages = _Stages(1 + 2 + warm + len(VARIANTS) * len(config.seeds), progress)
    pool = _executor(config)
    try:
        rows, paths = _pipeline(config, out, work, stages, pool)
        rows.sort(key=lambda r: (MODELS.index(r.model), r.seed, TASKS.index(r.task)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        timings = stages.close()
        torch.set_num_threads(threads)
        transformers.logging.set_verbosity(verbosity)
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(rows)
    result = DemoResult(
        rows,
        summary,
        format_table(summary, "accuracy"),
        format_table(summary, "robust_accuracy"),
        reading(rows, config),
        paths,
        timings,
    )
    _write_outputs(result, config, out)
    if echo is not None:
        echo(_report_text(result, config))
    return result


def _pipeline(config: DemoConfig, out: Path, work: Path, stages: _Stages, pool: Any):
    t0 = time.perf_counter()
    data = build_data(config)
    paths = {"train_data": out / "train.jsonl"}
    write_jsonl_atomic(paths["train_data"], data.train)
    toks = build_tokenizers(data, config)
    stages.done("data and tokenizers", {"data": time.perf_counter() - t0})
    rows = _baseline_rows(data)
    specs = (
        ("coin", "coin_flip", config.teacher_coin, config.coin_teacher_steps, MODELS[1]),
        (
            "arith",
            "multistep_arithmetic",
            config.teacher_arith,
            config.arith_teacher_steps,
            MODELS[2],
        ),
    )
    jobs = {
        label: pool.submit(
            _teacher_job,
            _TeacherJob(label, task, size, steps, 100 + j, toks[key], out / "caches" / key),
            data.by_task[task],
            paths["train_data"],
            data.held_out,
            config,
            work,
        )
        for j, (key, task, size, steps, label) in enumerate(specs)
    }
    caches = [(out / "caches" / key, 1.0 / len(specs)) for key, *_ in specs]
    rows += _collect(jobs, stages)
    rows += _pivots(config, toks["pivot"], data, caches, stages, pool, work)
    return rows, paths


def _pivots(
    config: DemoConfig,
    tokenizer: Any,
    data: DemoData,
    caches: list[tuple[Path, float]],
    stages: _Stages,
    pool: Any,
    work: Path,
) -> list[Row]:
    """Every (seed, variant) pivot; a seed's variants start as soon as its warm start is done."""
    from concurrent.futures import as_completed

    def variants(seed: int, start: Path | None) -> dict[str, Future]:
        return {
            f"pivot {variant} seed {seed}": pool.submit(
                _pivot_job,
                _PivotJob(variant, seed, start),
                tokenizer,
                data.train,
                data.held_out,
                caches,
                config,
                work,
            )
            for variant in VARIANTS
        }

    jobs: dict[str, Future] = {}
    if not config.pivot_warmup_steps:
        for seed in config.seeds:
            jobs |= variants(seed, None)
        return _collect(jobs, stages)
    warm = {
        pool.submit(_warm_start_job, seed, tokenizer, data.train, config, work): seed
        for seed in config.seeds
    }
    for future in as_completed(warm):
        path, timings = future.result()
        stages.done(f"warm start seed {warm[future]}", timings)
        jobs |= variants(warm[future], path)
    return _collect(jobs, stages)


def _collect(jobs: dict[str, Future], stages: _Stages) -> list[Row]:
    """Rows of finished jobs, as they finish (the first failure is raised)."""
    from concurrent.futures import as_completed

    names = {future: name for name, future in jobs.items()}
    rows: list[Row] = []
    for future in as_completed(names):
        job_rows, timings = future.result()
        rows += job_rows
        stages.done(names[future], timings)
    return rows


@dataclass(frozen=True)
class _TeacherJob:
    label: str
    task: str
    size: ModelSize
    steps: int
    seed: int
    tokenizer: Any
    cache_dir: Path


@dataclass(frozen=True)
class _PivotJob:
    variant: str
    seed: int
    start: Path | None  # warm-start weights, or None for the random initialisation


def _timed(timings: dict[str, float], kind: str, fn: Callable[..., Any], *args, **kwargs):
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    timings[kind] = timings.get(kind, 0.0) + time.perf_counter() - t0
    return value


def _teacher_job(
    job: _TeacherJob,
    examples: list[dict[str, str]],
    data_path: Path,
    held_out: dict[str, list[dict[str, Any]]],
    config: DemoConfig,
    work: Path,
) -> tuple[list[Row], dict[str, float]]:
    """Train a teacher on its family, evaluate it, and cache it over the pivot's data."""
    from fusion.cache import build

    timings: dict[str, float] = {}
    model = _new_model(job.tokenizer, job.size, seed=job.seed)
    _timed(
        timings,
        "teachers",
        train,
        model,
        job.tokenizer,
        examples,
        steps=job.steps,
        seed=job.seed,
        config=config,
        work_dir=work / job.task,
    )
    scores = _timed(timings, "evaluation", evaluate_model, model, job.tokenizer, held_out, config)
    _timed(
        timings,
        "caches",
        build,
        model,
        job.tokenizer,
        data_path,
        job.cache_dir,
        k=config.cache_k,
        overwrite=True,
        progress=False,
    )
    return _rows(job.label, 0, scores, held_out), timings


def _warm_start_job(
    seed: int, tokenizer: Any, examples: list[dict[str, str]], config: DemoConfig, work: Path
) -> tuple[Path, dict[str, float]]:
    """SFT from the random initialisation, saved for the three variants to continue."""
    import torch

    timings: dict[str, float] = {}
    model = _new_model(tokenizer, config.pivot, seed=seed)
    _timed(
        timings,
        "pivots",
        train,
        model,
        tokenizer,
        examples,
        steps=config.pivot_warmup_steps,
        seed=seed,
        config=config,
        work_dir=work / f"warm-{seed}",
        phase="start",
    )
    path = work / f"warm-{seed}.pt"
    torch.save(model.state_dict(), path)
    return path, timings


def _pivot_job(
    job: _PivotJob,
    tokenizer: Any,
    examples: list[dict[str, str]],
    held_out: dict[str, list[dict[str, Any]]],
    caches: list[tuple[Path, float]],
    config: DemoConfig,
    work: Path,
) -> tuple[list[Row], dict[str, float]]:
    """Train one pivot variant for one seed and evaluate it."""
    import torch

    timings: dict[str, float] = {}
    uld, gld = VARIANTS[job.variant]
    model = _new_model(tokenizer, config.pivot, seed=job.seed)
    if job.start is not None:
        model.load_state_dict(torch.load(job.start, weights_only=True))
    _timed(
        timings,
        "pivots",
        train,
        model,
        tokenizer,
        examples,
        steps=config.pivot_steps,
        # after a warm start: a fresh data order, the same for the three variants
        seed=job.seed + (1000 if job.start is not None else 0),
        config=config,
        work_dir=work / f"{job.variant}-{job.seed}",
        teachers=caches,
        lambda_=config.lambda_ if uld else 0.0,
        beta=config.beta if gld else 0.0,
        phase="whole" if job.start is None else "finish",
    )
    scores = _timed(timings, "evaluation", evaluate_model, model, tokenizer, held_out, config)
    return _rows(f"pivot {job.variant}", job.seed, scores, held_out), timings


def _baseline_rows(data: DemoData) -> list[Row]:
    from fusion.eval import is_correct

    rows = []
    for task, answer in data.majority_answers().items():
        items = data.held_out[task]
        scores = [
            statistics.fmean(is_correct(answer, it["answer"], task, mode) for it in items)
            for mode in ("paper", "robust")
        ]
        rows.append(Row(BASELINE, 0, task, len(items), *scores))
    return rows


def _rows(
    model: str, seed: int, scores: dict[str, tuple[float, float]], held_out: dict[str, list]
) -> list[Row]:
    return [
        Row(model, seed, task, len(held_out[task]), acc, robust)
        for task, (acc, robust) in scores.items()
    ]


def _report_text(result: DemoResult, config: DemoConfig) -> str:
    seeds = ", ".join(map(str, config.seeds))
    t = result.timings
    return "\n".join(
        [
            "",
            f"Zero-shot-CoT accuracy (%) on held-out items, paper cleansing; pivots: mean ± "
            f"std over seeds {seeds}; teachers: one run",
            result.table,
            "",
            "Same, robust cleansing",
            result.robust_table,
            "",
            result.reading,
            "",
            f"Wall time {t['total']:.0f} s with {config.workers} worker process(es); work "
            f"summed over workers: teachers {t.get('teachers', 0):.0f} s, pivots "
            f"{t.get('pivots', 0):.0f} s, evaluation {t.get('evaluation', 0):.0f} s, caches "
            f"{t.get('caches', 0):.0f} s. Files in {result.paths['report'].parent}",
        ]
    )


def _write_outputs(result: DemoResult, config: DemoConfig, out: Path) -> None:
    result.paths.update(
        results=out / "results.csv",
        summary=out / "summary.csv",
        plot=out / "accuracy.png",
        report=out / "report.md",
    )
    write_csv(result.paths["results"], [asdict(r) for r in result.rows])
    write_csv(result.paths["summary"], result.summary)
    plot(result.summary, result.rows, result.paths["plot"])
    config_json = json.dumps(asdict(config), indent=2)
    text = _report_text(result, config) + f"\n\nConfiguration:\n\n```json\n{config_json}\n```\n"
    atomic_write_bytes(result.paths["report"], text.encode())


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fusion demo [--quick | --tiny] [--out DIR] [--seeds S ...] [--workers N]``.

    Returns
    -------
    int
        The exit status (2 for invalid sizes).
    """
    parser = argparse.ArgumentParser(
        prog="python -m fusion demo",
        description="Train two tiny teachers, cache them, fuse them into a pivot three ways "
        "(SFT, +ULD, +ULD+GLD) and evaluate everything with Zero-shot-CoT. Offline.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller run (under 3 minutes)")
    size.add_argument("--tiny", action="store_true", help="smoke-test size (under a minute)")
    parser.add_argument("--out", default="fusion-demo", help="output directory")
    parser.add_argument("--seeds", type=int, nargs="+", help="pivot seeds (default 0 1 2)")
    parser.add_argument("--workers", type=int, help="parallel worker processes (default 2)")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    preset = DemoConfig.quick if args.quick else DemoConfig.tiny if args.tiny else DemoConfig.full
    overrides: dict[str, Any] = {}
    if args.seeds:
        overrides["seeds"] = tuple(args.seeds)
    if args.workers:
        overrides["workers"] = args.workers
    if args.threads:
        overrides["threads"] = args.threads
    try:
        run_demo(preset(**overrides), args.out, progress=not args.no_progress)
    except ValueError as err:
        print(f"fusion demo: {err}", file=sys.stderr)
        return 2
    return 0
