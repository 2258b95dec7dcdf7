"""Run a method over items with a model and score the answers in both cleansing modes."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fusion.eval import prompts as P
from fusion.eval.cleansing import cleanse_answer, is_correct
from fusion.eval.models import DEFAULT_BATCH_SIZE
from fusion.eval.spec import get_spec
from fusion.eval.tasks import GENERATORS

Generate = Callable[[list[str], int], list[str]]


@dataclass(frozen=True)
class Record:
    """One evaluated item.

    Attributes
    ----------
    index : int
        Position in the evaluated items.
    question, gold : str
        The item's question and gold answer.
    prompt : str
        First prompt sent to the model.
    reasoning : str or None
        Stage-1 output of ``zero_shot_cot``; ``None`` for the one-call methods.
    answer_prompt : str
        Prompt whose completion was cleansed (the stage-2 prompt for ``zero_shot_cot``,
        else ``prompt``).
    answer_text : str
        That completion.
    pred, pred_robust : str
        Cleansed answer in ``"paper"`` and ``"robust"`` mode.
    correct, correct_robust : bool
        Whether each matches ``gold``.
    """

    index: int
    question: str
    gold: str
    prompt: str
    reasoning: str | None
    answer_prompt: str
    answer_text: str
    pred: str
    pred_robust: str
    correct: bool
    correct_robust: bool

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-serialisable dict."""
        return asdict(self)


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`.

    Attributes
    ----------
    task, method : str
        What was run.
    records : list of Record
        One per item, in input order.
    """

    task: str
    method: str
    records: list[Record] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of items."""
        return len(self.records)

    @property
    def accuracy(self) -> float:
        """Fraction correct under the paper's cleansing (``nan`` for no items)."""
        return _mean([r.correct for r in self.records])

    @property
    def robust_accuracy(self) -> float:
        """Fraction correct under the robust cleansing (``nan`` for no items)."""
        return _mean([r.correct_robust for r in self.records])

    @property
    def n_empty(self) -> int:
        """Items whose answer completion is empty or whitespace only."""
        return sum(not r.answer_text.strip() for r in self.records)

    @property
    def n_unparsable(self) -> int:
        """Items whose answer the paper's cleansing could not extract (``pred == ""``).

        Empty completions are counted here too: they have nothing to extract.
        """
        return sum(r.pred == "" for r in self.records)

    @property
    def n_unparsable_robust(self) -> int:
        """Items whose answer the robust cleansing could not extract."""
        return sum(r.pred_robust == "" for r in self.records)

    def summary(self) -> dict[str, Any]:
        """Task, method, ``n``, both accuracies and the empty / unparsable counts as a dict."""
        return {
            "task": self.task,
            "method": self.method,
            "n": self.n,
            "accuracy": self.accuracy,
            "robust_accuracy": self.robust_accuracy,
            "n_empty": self.n_empty,
            "n_unparsable": self.n_unparsable,
            "n_unparsable_robust": self.n_unparsable_robust,
        }


def _mean(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else math.nan


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _generator(model: Any) -> Generate:
    batch = getattr(model, "generate_batch", None)
    if not callable(batch) and not callable(model):
        raise TypeError("model must be a callable str -> str or have a generate_batch method")

    def generate(prompts: list[str], budget: int) -> list[str]:
        if callable(batch):
            outputs = list(batch(prompts, max_new_tokens=budget))
        else:
            # A plain callable owns its output length; the budget only applies to batches.
            outputs = [model(p) for p in prompts]
        if len(outputs) != len(prompts):
            raise ValueError(f"model returned {len(outputs)} completions for {len(prompts)}")
        for out in outputs:
            if not isinstance(out, str):
                raise TypeError(f"model returned {type(out).__name__}, expected str")
        return outputs

    return generate


def _check_items(items: Sequence[Mapping[str, Any]], task: str) -> None:
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"item {i} is {type(item).__name__}, not a mapping")
        for key in ("question", "answer"):
            if not isinstance(item.get(key), str):
                raise ValueError(f"item {i} lacks a string {key!r}")
        if item.get("task", task) != task:
            raise ValueError(f"item {i} belongs to task {item['task']!r}, not {task!r}")


@dataclass(frozen=True)
class _Plan:
    """The prompts and budgets of one method, fixed before the loop."""

    task: str
    method: str
    cot_trigger: str
    demo: str
    budget_reasoning: int
    budget_answer: int

    def longest_prompts(self, items: Sequence[Mapping[str, Any]]) -> tuple[list[str], int]:
        """The prompts that grow longest (stage 2 with an empty reasoning) and their budget."""
        if self.method == "zero_shot_cot":
            prompts = [
                P.cot_stage2_prompt(
                    P.cot_stage1_prompt(it["question"], self.cot_trigger),
                    "",
                    self.task,
                    it.get("choices"),
                )
                for it in items
            ]
            return prompts, self.budget_reasoning + self.budget_answer
        if self.method == "zero_shot":
            prompts = [
                P.zero_shot_prompt(it["question"], self.task, it.get("choices")) for it in items
            ]
            return prompts, self.budget_answer
        prompts = [P.few_shot_prompt(it["question"], self.demo) for it in items]
        budget = self.budget_reasoning if self.method == "few_shot_cot" else self.budget_answer
        return prompts, budget

    def run(self, generate: Generate, items: Sequence[Mapping[str, Any]]) -> list[tuple]:
        """(prompt, reasoning, answer_prompt, answer_text) for each item."""
        questions = [item["question"] for item in items]
        choices = [item.get("choices") for item in items]
        if self.method == "zero_shot_cot":
            first = [P.cot_stage1_prompt(q, self.cot_trigger) for q in questions]
            reasoning = generate(first, self.budget_reasoning)
            second = [
                P.cot_stage2_prompt(p, z, self.task, c)
                for p, z, c in zip(first, reasoning, choices)
            ]
            answers = generate(second, self.budget_answer)
            return list(zip(first, reasoning, second, answers))
        if self.method == "zero_shot":
            first = [P.zero_shot_prompt(q, self.task, c) for q, c in zip(questions, choices)]
            budget = self.budget_answer
        else:
            first = [P.few_shot_prompt(q, self.demo) for q in questions]
            # As in the paper, CoT exemplars get the reasoning budget, plain ones the answer's.
            budget = self.budget_reasoning if self.method == "few_shot_cot" else self.budget_answer
        answers = generate(first, budget)
        return [(p, None, p, a) for p, a in zip(first, answers)]


@dataclass(frozen=True)
class ContextNeed:
    """How many positions a (task, method) run needs at most, against the model's limit.

    Attributes
    ----------
    task, method : str
        The run.
    prompt_tokens : int
        Longest prompt the model reads, triggers included (for ``zero_shot_cot``: the
        stage-2 prompt with an empty reasoning).
    new_tokens : int
        Generation budgets added to it (reasoning + answer for ``zero_shot_cot``).
    context_length : int
        The model's limit.
    """

    task: str
    method: str
    prompt_tokens: int
    new_tokens: int
    context_length: int

    @property
    def tokens(self) -> int:
        """Positions needed in the worst case."""
        return self.prompt_tokens + self.new_tokens

    @property
    def fits(self) -> bool:
        """Whether the worst case fits the context."""
        return self.tokens <= self.context_length


def context_need(
    model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    task: str,
    method: str = "zero_shot_cot",
    cot_trigger: str = P.DEFAULT_COT_TRIGGER,
    exemplars: Sequence[Mapping[str, str]] | None = None,
    max_new_tokens_reasoning: int = P.MAX_NEW_TOKENS_REASONING,
    max_new_tokens_answer: int = P.MAX_NEW_TOKENS_ANSWER,
) -> ContextNeed | None:
    """Worst-case positions of a run, computed before any generation.

    Parameters
    ----------
    model : object
        Checked if it has ``context_length`` (an int) and ``count_tokens(prompts)``, as
        :class:`fusion.eval.HFModel` does; other models give ``None``.
    items, task, method, cot_trigger, exemplars, max_new_tokens_reasoning, max_new_tokens_answer
        As for :func:`evaluate`.

    Returns
    -------
    ContextNeed or None
        ``None`` for models that declare no context length or cannot count tokens.

    Notes
    -----
    For ``zero_shot_cot`` the stage-2 prompt is counted with an empty reasoning plus the
    full reasoning budget: it assumes the decoded reasoning re-encodes to no more tokens
    than were generated (true of the usual BPE round trip; the check made while
    generating stays as a backstop).
    """
    limit = getattr(model, "context_length", None)
    count = getattr(model, "count_tokens", None)
    if not isinstance(limit, int) or not callable(count) or not items:
        return None
    task = GENERATORS[task][0] if task in GENERATORS else task
    plan = _make_plan(
        task, method, cot_trigger, exemplars, max_new_tokens_reasoning, max_new_tokens_answer
    )
    prompts, new_tokens = plan.longest_prompts(items)
    return ContextNeed(task, method, max(count(prompts)), new_tokens, limit)


def _make_plan(
    task: str,
    method: str,
    cot_trigger: str,
    exemplars: Sequence[Mapping[str, str]] | None,
    budget_reasoning: int,
    budget_answer: int,
) -> _Plan:
    few_shot = method.startswith("few_shot")
    demo = P.exemplar_text(exemplars or [], cot=method == "few_shot_cot") if few_shot else ""
    return _Plan(task, method, cot_trigger, demo, budget_reasoning, budget_answer)


def _score(task: str, method: str, index: int, item: Mapping[str, Any], run: tuple) -> Record:
    prompt, reasoning, answer_prompt, answer_text = run
    extra = {"choices": item.get("choices"), "options": item.get("options")}
    pred = cleanse_answer(answer_text, task, method, "paper", **extra)
    pred_robust = cleanse_answer(answer_text, task, method, "robust", **extra)
    gold = item["answer"]
    return Record(
        index=index,
        question=item["question"],
        gold=gold,
        prompt=prompt,
        reasoning=reasoning,
        answer_prompt=answer_prompt,
        answer_text=answer_text,
        pred=pred,
        pred_robust=pred_robust,
        correct=is_correct(pred, gold, task, "paper"),
        correct_robust=is_correct(pred_robust, gold, task, "robust"),
    )


def evaluate(
    model: Callable[[str], str] | Any,
    items: Sequence[Mapping[str, Any]],
    *,
    task: str,
    method: str = "zero_shot_cot",
    cot_trigger: str = P.DEFAULT_COT_TRIGGER,
    exemplars: Sequence[Mapping[str, str]] | None = None,
    max_new_tokens_reasoning: int = P.MAX_NEW_TOKENS_REASONING,
    max_new_tokens_answer: int = P.MAX_NEW_TOKENS_ANSWER,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> EvalResult:
    """Evaluate a model on items with one prompting method, as in Kojima et al. (2022).

    Parameters
    ----------
    model : callable or HFModel
        A callable from a prompt string to its completion (the continuation only), or any
        object with ``generate_batch(prompts, *, max_new_tokens) -> list[str]`` such as
        :class:`fusion.eval.HFModel`. Plain callables control their own output length.
    items : sequence of mapping
        Each with string ``"question"`` and ``"answer"``; optional ``"choices"`` and
        ``"options"`` (multiple choice) and ``"task"`` (must equal ``task`` if present).
        :func:`fusion.eval.generate_task` and the loaders produce such items.
    task : str
        Task key selecting the answer trigger and the cleansing rule (a generator name
        such as ``"object_tracking_5"`` is accepted for its key).
    method : {"zero_shot", "zero_shot_cot", "few_shot", "few_shot_cot"}
        Prompting method.
    cot_trigger : str
        Reasoning trigger of ``zero_shot_cot``; see :data:`fusion.eval.prompts.COT_TRIGGERS`
        for the paper's ablation.
    exemplars : sequence of mapping, optional
        Few-shot exemplars (``"question"``, ``"answer"``, and ``"rationale"`` for
        ``few_shot_cot``), used in the given order; required by the few-shot methods.
    max_new_tokens_reasoning, max_new_tokens_answer : int
        Generation budgets for ``generate_batch`` models (paper: 128 and 32).
    batch_size : int
        Items sent to the model per call (an :class:`HFModel` splits them further into its
        own ``batch_size``); also the progress-bar step. Default
        :data:`fusion.eval.models.DEFAULT_BATCH_SIZE`.
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    EvalResult
        Per-item records and the accuracy under both cleansing modes.

    Raises
    ------
    ValueError
        For an unknown task or method, malformed items, missing exemplars or
        non-positive budgets.
    TypeError
        If ``model`` is not callable or returns a non-string.

    References
    ----------
    - T. Kojima, S. S. Gu, M. Reid, Y. Matsuo, Y. Iwasawa, "Large Language Models are
      Zero-Shot Reasoners", NeurIPS 2022, arXiv:2205.11916.

    Examples
    --------
    >>> from fusion.eval import generate_task
    >>> items = generate_task("coin_flip", 4, seed=0)
    >>> result = evaluate(lambda prompt: " Yes.", items, task="coin_flip", progress=False)
    >>> result.n
    4
    """
    from tqdm.auto import tqdm

    task = GENERATORS[task][0] if task in GENERATORS else task
    get_spec(task)
    P.check_method(method)
    _positive("max_new_tokens_reasoning", max_new_tokens_reasoning)
    _positive("max_new_tokens_answer", max_new_tokens_answer)
    _positive("batch_size", batch_size)
    _check_items(items, task)
    plan = _make_plan(
        task, method, cot_trigger, exemplars, max_new_tokens_reasoning, max_new_tokens_answer
    )
    generate = _generator(model)
    records: list[Record] = []
    with tqdm(total=len(items), desc=f"{task}/{method}", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            for offset, (item, run) in enumerate(zip(chunk, plan.run(generate, chunk))):
                records.append(_score(task, method, start + offset, item, run))
            bar.update(len(chunk))
    return EvalResult(task=task, method=method, records=records)
