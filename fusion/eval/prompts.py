"""Every prompt string of the evaluation, exactly as in Kojima et al. (2022).

The paper's templates (official code, ``main.py``):

* question block: ``"Q: {question}\\nA:"``;
* ``zero_shot``: block + ``" "`` + the direct trigger, e.g. ``"The answer (arabic numerals) is"``;
* ``zero_shot_cot`` stage 1: block + ``" "`` + the reasoning trigger (``"Let's think step by
  step."``); stage 2: the stage-1 prompt + the generated reasoning ``z`` + ``" "`` + the answer
  trigger, e.g. ``"\\nTherefore, the answer (arabic numerals) is"``;
* ``few_shot`` / ``few_shot_cot``: exemplars ``"Q: {x}\\nA: {z} The answer is {y}.\\n\\n"``
  (without ``"{z} "`` for ``few_shot``) followed by the question block.

References
----------
- T. Kojima, S. S. Gu, M. Reid, Y. Matsuo, Y. Iwasawa, "Large Language Models are
  Zero-Shot Reasoners", NeurIPS 2022, arXiv:2205.11916.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fusion.eval.spec import get_spec, resolve_choices

METHODS: tuple[str, ...] = ("zero_shot", "zero_shot_cot", "few_shot", "few_shot_cot")

#: The paper's reasoning trigger (Table 4, No. 1).
DEFAULT_COT_TRIGGER = "Let's think step by step."

#: The trigger ablation of the paper (Table 4), in the order of the official code.
COT_TRIGGERS: tuple[str, ...] = (
    "Let's think step by step.",
    "We should think about this step by step.",
    "First,",
    "Before we dive into the answer,",
    "Proof followed by the answer.",
    "Let's think step by step in a realistic way.",
    "Let's think step by step using common sense and knowledge.",
    "Let's think like a detective step by step.",
    "Let's think about this logically.",
    "Let's think step by step. First,",
    "Let's think",
    "Let's solve this problem by splitting it into steps.",
    "The answer is after the proof.",
    "Let's be realistic and think step by step.",
)

#: Phrase that ends every few-shot exemplar and that few-shot cleansing splits on.
FEW_SHOT_ANSWER_PHRASE = "The answer is"

#: Paper defaults for the number of generated tokens.
MAX_NEW_TOKENS_REASONING = 128
MAX_NEW_TOKENS_ANSWER = 32


def check_method(method: str) -> str:
    """Validate a method name.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.

    Returns
    -------
    str
        ``method`` unchanged.

    Raises
    ------
    ValueError
        For an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    return method


def answer_trigger(task: str, choices: str | None = None) -> str:
    """Answer-extraction trigger of ``zero_shot_cot`` stage 2.

    Parameters
    ----------
    task : str
        Task key (see :data:`fusion.eval.spec.TASKS`).
    choices : str, optional
        Option letters of the item, overriding the task default (object tracking with 5 or
        7 objects gets ``"among A through E"`` / ``"among A through G"``).

    Returns
    -------
    str
        E.g. ``"\\nTherefore, the answer (arabic numerals) is"``.
    """
    kind = get_spec(task).kind
    if kind == "numeric":
        return "\nTherefore, the answer (arabic numerals) is"
    if kind == "choice":
        letters = resolve_choices(task, choices)
        return f"\nTherefore, among {letters[0]} through {letters[-1]}, the answer is"
    if kind == "yesno":
        return "\nTherefore, the answer (Yes or No) is"
    return "\nTherefore, the answer is"


def direct_trigger(task: str, choices: str | None = None) -> str:
    """Answer trigger of ``zero_shot``: the stage-2 trigger without ``"\\nTherefore, "``.

    Parameters
    ----------
    task : str
        Task key.
    choices : str, optional
        Option letters overriding the task default.

    Returns
    -------
    str
        E.g. ``"The answer (arabic numerals) is"``, ``"Among A through E, the answer is"``.
    """
    trigger = answer_trigger(task, choices).removeprefix("\nTherefore, ")
    return trigger[0].upper() + trigger[1:]


def question_block(question: str) -> str:
    """The unit every method builds on.

    Parameters
    ----------
    question : str
        Question text (answer choices already appended for multiple-choice datasets).

    Returns
    -------
    str
        ``"Q: {question}\\nA:"``.
    """
    return f"Q: {question}\nA:"


def zero_shot_prompt(question: str, task: str, choices: str | None = None) -> str:
    """Prompt of the ``zero_shot`` method.

    Parameters
    ----------
    question : str
        Question text.
    task : str
        Task key, selects the direct trigger.
    choices : str, optional
        Option letters overriding the task default.

    Returns
    -------
    str
        ``"Q: {question}\\nA: The answer (arabic numerals) is"`` and the like.
    """
    return f"{question_block(question)} {direct_trigger(task, choices)}"


def cot_stage1_prompt(question: str, cot_trigger: str = DEFAULT_COT_TRIGGER) -> str:
    """Reasoning-extraction prompt of ``zero_shot_cot`` (stage 1).

    Parameters
    ----------
    question : str
        Question text.
    cot_trigger : str
        Reasoning trigger; :data:`COT_TRIGGERS` lists the paper's ablation.

    Returns
    -------
    str
        ``"Q: {question}\\nA: Let's think step by step."`` by default.
    """
    return f"{question_block(question)} {cot_trigger}"


def cot_stage2_prompt(
    stage1_prompt: str, reasoning: str, task: str, choices: str | None = None
) -> str:
    """Answer-extraction prompt of ``zero_shot_cot`` (stage 2).

    Parameters
    ----------
    stage1_prompt : str
        Output of :func:`cot_stage1_prompt`.
    reasoning : str
        The model's stage-1 completion ``z``, pasted back verbatim (not stripped), as in
        the official code.
    task : str
        Task key, selects the answer trigger.
    choices : str, optional
        Option letters overriding the task default.

    Returns
    -------
    str
        ``stage1_prompt + reasoning + " " + answer_trigger(task, choices)``.
    """
    return f"{stage1_prompt}{reasoning} {answer_trigger(task, choices)}"


def exemplar_text(exemplars: Sequence[Mapping[str, str]], *, cot: bool) -> str:
    """Concatenate few-shot exemplars in the paper's format.

    Parameters
    ----------
    exemplars : sequence of mapping
        Each with ``"question"`` and ``"answer"``; ``"rationale"`` is required when
        ``cot`` is true and ignored otherwise.
    cot : bool
        Include the rationale (``few_shot_cot``) or not (``few_shot``).

    Returns
    -------
    str
        ``"Q: {x}\\nA: {z} The answer is {y}.\\n\\n"`` per exemplar, in the given order.

    Raises
    ------
    ValueError
        If there are no exemplars or one lacks a required field.
    """
    if not exemplars:
        raise ValueError("few-shot methods need at least one exemplar")
    parts = []
    for i, ex in enumerate(exemplars):
        required = ("question", "answer", "rationale") if cot else ("question", "answer")
        missing = [key for key in required if not isinstance(ex.get(key), str)]
        if missing:
            raise ValueError(f"exemplar {i} lacks string field(s) {missing}")
        body = f"{ex['rationale']} " if cot else ""
        parts.append(
            f"{question_block(ex['question'])} {body}{FEW_SHOT_ANSWER_PHRASE} {ex['answer']}.\n\n"
        )
    return "".join(parts)


def few_shot_prompt(question: str, demo: str) -> str:
    """Prompt of ``few_shot`` / ``few_shot_cot``.

    Parameters
    ----------
    question : str
        Question text.
    demo : str
        Output of :func:`exemplar_text`.

    Returns
    -------
    str
        ``demo + "Q: {question}\\nA:"``.
    """
    return demo + question_block(question)


#: Methods whose prompts :func:`chat_turns` can split (one question block at the start).
CHAT_METHODS: tuple[str, ...] = ("zero_shot", "zero_shot_cot")


def chat_turns(prompt: str) -> tuple[str, str]:
    """Split a zero-shot prompt into the user's turn and the start of the assistant's.

    With a chat template the paper's prompt ``"Q: {question}\\nA: {rest}"`` becomes a user
    message ``{question}`` followed by an assistant turn that already begins with
    ``{rest}`` (the trigger, and for stage 2 the pasted reasoning and the answer trigger),
    so the triggers stay in the model's own voice, as in the paper.

    Parameters
    ----------
    prompt : str
        A ``zero_shot`` or ``zero_shot_cot`` prompt (:data:`CHAT_METHODS`); few-shot
        prompts hold several question blocks and are not split.

    Returns
    -------
    (str, str)
        ``(question, rest)``: split at the first ``"\\nA:"``, without the leading ``"Q: "``
        and the single space after ``"A:"``; ``(prompt, "")`` when there is no ``"\\nA:"``.

    Examples
    --------
    >>> chat_turns("Q: 2 + 3 =\\nA: Let's think step by step.")
    ('2 + 3 =', "Let's think step by step.")
    """
    question, sep, rest = prompt.partition("\nA:")
    if not sep:
        return prompt, ""
    return question.removeprefix("Q: "), rest.removeprefix(" ")
