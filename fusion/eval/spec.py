"""The table of task keys: what kind of answer each task has.

Prompts (which answer trigger), cleansing (which extraction rule) and loaders all key
on these names, so they live in one place. The twelve dataset keys are spelled as in
the official Zero-shot-CoT code (including ``commonsensqa``); the last three are the
BIG-Bench-Hard tasks that :func:`fusion.eval.generate_task` synthesises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AnswerKind = Literal["numeric", "choice", "yesno", "letters", "brackets"]


@dataclass(frozen=True)
class TaskSpec:
    """How a task's answers look.

    Attributes
    ----------
    name : str
        Task key.
    kind : {"numeric", "choice", "yesno", "letters", "brackets"}
        Answer family; selects the answer trigger and the cleansing rule.
    choices : str
        Option letters of a multiple-choice task (``""`` for other kinds). Items may
        override it with their own ``"choices"`` field (object tracking with 5 or 7
        objects).
    """

    name: str
    kind: AnswerKind
    choices: str = ""


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("gsm8k", "numeric"),
        TaskSpec("addsub", "numeric"),
        TaskSpec("multiarith", "numeric"),
        TaskSpec("svamp", "numeric"),
        TaskSpec("singleeq", "numeric"),
        TaskSpec("aqua", "choice", "ABCDE"),
        TaskSpec("commonsensqa", "choice", "ABCDE"),
        TaskSpec("bigbench_date", "choice", "ABCDEF"),
        TaskSpec("object_tracking", "choice", "ABC"),
        TaskSpec("strategyqa", "yesno"),
        TaskSpec("coin_flip", "yesno"),
        TaskSpec("last_letters", "letters"),
        TaskSpec("multistep_arithmetic", "numeric"),
        TaskSpec("dyck_languages", "brackets"),
    )
}


def get_spec(task: str) -> TaskSpec:
    """Look up a task key.

    Parameters
    ----------
    task : str
        One of :data:`TASKS`.

    Returns
    -------
    TaskSpec

    Raises
    ------
    ValueError
        For an unknown key; the message lists the valid ones.
    """
    try:
        return TASKS[task]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}") from None


def resolve_choices(task: str, choices: str | None = None) -> str:
    """Option letters for ``task``, with an item-level override.

    Parameters
    ----------
    task : str
        Task key.
    choices : str, optional
        Letters carried by an item (``"ABCDE"`` for five-object tracking).

    Returns
    -------
    str
        ``choices`` when given, else the task's default letters.

    Raises
    ------
    ValueError
        If ``choices`` is not a run of consecutive capital letters starting at ``A``.
    """
    spec = get_spec(task)
    if choices is None:
        return spec.choices
    expected = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(choices)]
    if not choices or choices != expected:
        raise ValueError(f"choices must be consecutive letters from 'A', got {choices!r}")
    return choices
