"""Task data with exact chain-of-thought targets, in the two prompts Zero-shot-CoT sends.

Items come from :mod:`fusion.eval.tasks` (its generators and its step-by-step solvers);
this module only writes the solvers' steps as text and pairs each item with the two
prompt/response examples a model is trained on. :class:`DataSpec` fixes every stream of
items a run draws from, so that every process of a run, and every rerun, sees the same
items.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fusion.demo.config import TASKS

__all__ = [
    "ROLES",
    "DataSpec",
    "coin_flip_item",
    "arithmetic_item",
    "make_items",
    "reasoning_examples",
    "sft_examples",
    "shuffled",
]

#: Item streams, each drawn with its own seed: tokenizer corpora, the teachers' training
#: items, the pivot's labelled items, prompts without labels, and the held-out items.
ROLES = ("tokenizer", "teacher", "pivot", "unlabelled", "held_out")


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
        If the solver's answer differs from the item's (a cross-check of the two).
    """
    from fusion.eval.tasks import solve_coin_flip

    answer, steps = solve_coin_flip(item["question"])
    if answer != item["answer"]:
        raise ValueError(f"coin-flip solver disagrees with the generator on {item['question']!r}")
    text = " ".join(
        f"{s.name} {'flips' if s.flips else 'does not flip'}: {'heads' if s.heads else 'tails'}."
        for s in steps
    )
    return {**item, "reasoning": text}


def arithmetic_item(item: dict[str, Any]) -> dict[str, Any]:
    """Add one sentence per operation as chain of thought to an arithmetic item.

    Parameters
    ----------
    item : dict
        From :func:`fusion.eval.tasks.arithmetic_items` (or ``generate_task``).

    Returns
    -------
    dict
        The item with ``"reasoning"``, e.g. ``"2 * 3 = 6. 1 + -2 = -1. 6 - -1 = 7."``.

    Raises
    ------
    ValueError
        If the solver's value differs from the item's answer.
    """
    from fusion.eval.tasks import solve_arithmetic

    value, steps = solve_arithmetic(item["question"])
    if str(value) != item["answer"]:
        raise ValueError(f"arithmetic solver disagrees with the generator on {item['question']!r}")
    text = " ".join(f"{s.left} {s.op} {s.right} = {s.value}." for s in steps)
    return {**item, "reasoning": text}


def make_items(
    task: str, n: int, seed: int, *, terms: int = 2, max_abs: int = 2
) -> list[dict[str, Any]]:
    """``n`` items of a task family with chain-of-thought targets.

    Parameters
    ----------
    task : {"coin_flip", "multistep_arithmetic"}
    n : int
    seed : int
        Seed of :func:`fusion.eval.generate_task` / :func:`fusion.eval.tasks.arithmetic_items`.
    terms, max_abs : int
        Size of the arithmetic items (numbers per group, largest magnitude).

    Returns
    -------
    list of dict
        ``question``, ``answer``, ``task`` and ``reasoning``.
    """
    from fusion.eval import generate_task
    from fusion.eval.tasks import arithmetic_items

    if task == "coin_flip":
        return [coin_flip_item(it) for it in generate_task("coin_flip", n, seed=seed)]
    if task == "multistep_arithmetic":
        items = arithmetic_items(n, seed, terms=terms, max_abs=max_abs)
        return [arithmetic_item(it) for it in items]
    raise ValueError(f"unknown demo task {task!r}; expected one of {list(TASKS)}")


def reasoning_examples(
    question: str, reasoning: str, answer: str, task: str
) -> list[dict[str, str]]:
    """The two Zero-shot-CoT examples of one question, given its reasoning text and answer.

    ``reasoning`` is used as the stage-1 response exactly as given (a model's own
    completion keeps its leading space).
    """
    from fusion.eval.prompts import cot_stage1_prompt, cot_stage2_prompt

    stage1 = cot_stage1_prompt(question)
    stage2 = cot_stage2_prompt(stage1, reasoning, task)
    return [
        {"prompt": stage1, "response": reasoning, "task": task},
        {"prompt": stage2, "response": f" {answer}.", "task": task},
    ]


def sft_examples(items: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Two prompt/response examples per item, the two stages of Zero-shot-CoT.

    Stage 1: ``"Q: {question}\\nA: Let's think step by step."`` -> ``" {reasoning}"``
    (then EOS, so generation stops). Stage 2: that prompt, the reasoning and the task's
    answer trigger -> ``" {answer}."``: exactly the strings :func:`fusion.eval.evaluate`
    sends, so the evaluation measures the task, not a format mismatch.
    """
    out = []
    for it in items:
        out += reasoning_examples(it["question"], " " + it["reasoning"], it["answer"], it["task"])
    return out


@dataclass(frozen=True)
class DataSpec:
    """Every item stream of a run: which tasks, how large, from which seed.

    Each role of :data:`ROLES` draws from its own seed, so the pivot's labelled items, the
    teachers' items and the prompts without labels never share a stream, and a smaller
    count is a prefix of a larger one (a cell with 64 labelled items sees the first 64 of
    a cell with 1024). The held-out items exclude every question of the training streams
    up to the sizes given here, and repeat none.

    Attributes
    ----------
    tasks : tuple of str
        Task families.
    seed : int
        Data seed.
    terms, max_abs : int
        Size of the arithmetic items.
    tokenizer_items, teacher_items, pivot_items, unlabelled_items, eval_items : int
        Items per task of each stream (the largest any job of the run uses).
    """

    tasks: tuple[str, ...] = TASKS
    seed: int = 0
    terms: int = 2
    max_abs: int = 2
    tokenizer_items: int = 600
    teacher_items: int = 1500
    pivot_items: int = 1500
    unlabelled_items: int = 0
    eval_items: int = 200

    def _stream(self, task: str, role: str) -> int:
        return 1000 * self.seed + 10 * ROLES.index(role) + TASKS.index(task)

    def items(self, task: str, role: str, n: int) -> list[dict[str, Any]]:
        """The first ``n`` items of a stream (``role`` from :data:`ROLES`)."""
        if task not in self.tasks:
            raise ValueError(f"task {task!r} is not part of this data ({list(self.tasks)})")
        if role not in ROLES:
            raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
        seed = self._stream(task, role)
        return make_items(task, n, seed, terms=self.terms, max_abs=self.max_abs)

    @cached_property
    def held_out(self) -> dict[str, list[dict[str, Any]]]:
        """``eval_items`` distinct held-out items per task, none of them seen in training."""
        out = {}
        for task in self.tasks:
            seen = {
                it["question"]
                for role, n in (
                    ("teacher", self.teacher_items),
                    ("pivot", self.pivot_items),
                    ("unlabelled", self.unlabelled_items),
                )
                for it in self.items(task, role, n)
            }
            size = 2 * self.eval_items + 100
            while True:
                kept: dict[str, dict[str, Any]] = {}
                for it in self.items(task, "held_out", size):
                    if it["question"] not in seen:
                        kept.setdefault(it["question"], it)
                if len(kept) >= self.eval_items:
                    break
                if size > 50 * (self.eval_items + 100):
                    raise ValueError(
                        f"{task}: only {len(kept)} questions outside the training data, "
                        f"{self.eval_items} wanted: use fewer items or larger arithmetic"
                    )
                size *= 2
            out[task] = list(kept.values())[: self.eval_items]
        return out

    def majority_answers(self) -> dict[str, str]:
        """The most frequent answer of the teachers' training items, per task."""
        return {
            task: Counter(
                it["answer"] for it in self.items(task, "teacher", self.teacher_items)
            ).most_common(1)[0][0]
            for task in self.tasks
        }

    def corpus(self) -> list[str]:
        """Texts (prompt + response) that tokenizers are trained on."""
        return [
            ex["prompt"] + ex["response"]
            for task in self.tasks
            for ex in sft_examples(self.items(task, "tokenizer", self.tokenizer_items))
        ]

    def labelled(self, counts: Sequence[tuple[str, int]], role: str = "pivot") -> list[dict]:
        """SFT examples of the first ``n`` items of each ``(task, n)``, in that order."""
        return [ex for task, n in counts for ex in sft_examples(self.items(task, role, n))]


def shuffled(examples: Sequence[Any], seed: int) -> list[Any]:
    """A copy of ``examples`` in a seeded random order."""
    out = list(examples)
    random.Random(seed).shuffle(out)
    return out
