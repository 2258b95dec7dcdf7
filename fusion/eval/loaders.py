"""Loaders for local copies of the twelve datasets of Kojima et al. (2022) and BBH files.

Nothing is downloaded: the user supplies each file in its published format. Questions are
assembled exactly as the official Zero-shot-CoT code assembles them (answer choices
appended as ``"Answer Choices: (A) ... (B) ..."``), so prompts match the paper's.

=================== ======================================================================
dataset key         published file format
=================== ======================================================================
``gsm8k``           JSONL, ``question``, ``answer`` ending in ``"#### <number>"``
``aqua``            JSONL, ``question``, ``options`` (``["A)21", ...]``), ``correct``
``commonsensqa``    JSONL, ``question.stem``, ``question.choices[{label,text}]``, ``answerKey``
``svamp``           JSON list, ``Body``, ``Question``, ``Answer``
``addsub``          JSON list, ``sQuestion``, ``lSolutions`` (first entry is the answer)
``multiarith``      same as ``addsub``
``singleeq``        same as ``addsub``
``strategyqa``      BIG-bench JSON, ``examples[{input, target_scores{Yes,No}}]``
``bigbench_date``   BIG-bench JSON, ``examples[{input, target_scores}]``
``object_tracking`` BIG-bench JSON (tracking_shuffled_objects), same fields
``coin_flip``       JSON, ``examples[{question, answer}]``
``last_letters``    JSON, ``examples[{question, answer}]``
=================== ======================================================================

:func:`load_bbh` reads BIG-Bench-Hard files (``examples[{input, target}]``) for the tasks
that :func:`fusion.eval.generate_task` also synthesises.

References
----------
- T. Kojima et al., "Large Language Models are Zero-Shot Reasoners", NeurIPS 2022,
  Appendix A.2 (datasets) and ``data_reader`` in github.com/kojima-takeshi188/zero_shot_cot.
- M. Suzgun et al., "Challenging BIG-Bench Tasks and Whether Chain-of-Thought Can Solve
  Them", 2022 (BBH file format).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Mapping
from typing import Any

from fusion.eval.spec import get_spec
from fusion.eval.tasks import LETTERS
from fusion.jsonio import read_json, read_jsonl

PathLike = str | os.PathLike[str]


class _Field:
    """Pull fields out of one record, naming the file and record on failure."""

    def __init__(self, path: PathLike, index: int, record: Any) -> None:
        if not isinstance(record, Mapping):
            raise ValueError(f"{path}: record {index} is {type(record).__name__}, not an object")
        self.path, self.index, self.record = path, index, record

    def get(self, *keys: str) -> Any:
        value: Any = self.record
        for depth, key in enumerate(keys):
            if not isinstance(value, Mapping) or key not in value:
                where = ".".join(keys[: depth + 1])
                raise ValueError(f"{self.path}: record {self.index} lacks field {where!r}")
            value = value[key]
        return value

    def text(self, *keys: str) -> str:
        value = self.get(*keys)
        if not isinstance(value, str):
            raise ValueError(
                f"{self.path}: record {self.index} field {'.'.join(keys)!r} is not a string"
            )
        return value

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.path}: record {self.index}: {message}")


def _number_text(value: Any) -> str:
    # The paper strips a float's ".0" so that 5.0 and "5" compare equal.
    text = str(value)
    return text[:-2] if text.endswith(".0") else text


def _choice_suffix(labels_texts: list[tuple[str, str]]) -> str:
    return "Answer Choices:" + "".join(f" ({label}) {text}" for label, text in labels_texts)


# ------------------------------------------------------------------ per-record parsers


def _gsm8k(f: _Field, rng: random.Random) -> dict:
    return {
        "question": f.text("question").strip(),
        "answer": f.text("answer").split("#### ")[-1].strip(),
    }


def _aqua(f: _Field, rng: random.Random) -> dict:
    raw = f.get("options")
    if not isinstance(raw, list) or not all(isinstance(o, str) for o in raw):
        raise f.fail("'options' must be a list of strings like 'A)21'")
    # The official code joins the options with "(" and pads every "(" and ")" with a space;
    # doing the same keeps the spacing identical even for options that contain brackets.
    suffix = "Answer Choices:" + ("(" + "(".join(raw)).replace("(", " (").replace(")", ") ")
    options = {}
    for option in raw:
        label, _, text = option.partition(")")
        options[label.strip()] = text.strip()
    return {
        "question": f"{f.text('question').strip()} {suffix}",
        "answer": f.text("correct").strip(),
        "options": options,
    }


def _commonsensqa(f: _Field, rng: random.Random) -> dict:
    choices = f.get("question", "choices")
    if not isinstance(choices, list):
        raise f.fail("'question.choices' must be a list")
    fields = [_Field(f.path, f.index, choice) for choice in choices]
    pairs = [(c.text("label"), c.text("text")) for c in fields]
    return {
        "question": f"{f.text('question', 'stem').strip()} {_choice_suffix(pairs)}",
        "answer": f.text("answerKey").strip(),
        "options": dict(pairs),
    }


def _svamp(f: _Field, rng: random.Random) -> dict:
    return {
        "question": f"{f.text('Body').strip()} {f.text('Question').strip()}",
        "answer": _number_text(f.get("Answer")),
    }


def _math_word(f: _Field, rng: random.Random) -> dict:
    solutions = f.get("lSolutions")
    if not isinstance(solutions, list) or not solutions:
        raise f.fail("'lSolutions' must be a non-empty list")
    return {"question": f.text("sQuestion").strip(), "answer": _number_text(solutions[0])}


def _scores(f: _Field) -> dict[str, Any]:
    scores = f.get("target_scores")
    if not isinstance(scores, Mapping) or not scores:
        raise f.fail("'target_scores' must be a non-empty object")
    return dict(scores)


def _strategyqa(f: _Field, rng: random.Random) -> dict:
    scores = _scores(f)
    if "Yes" not in scores:
        raise f.fail("'target_scores' lacks 'Yes'")
    return {"question": f.text("input").strip(), "answer": "yes" if scores["Yes"] == 1 else "no"}


def _lettered(f: _Field, scores: dict[str, Any]) -> tuple[list[tuple[str, str]], str]:
    pairs = list(zip(LETTERS, scores))
    correct = [letter for letter, key in pairs if scores[key] == 1]
    if len(correct) != 1:
        raise f.fail(f"expected exactly one target score of 1, found {len(correct)}")
    return pairs, correct[0]


def _bigbench_date(f: _Field, rng: random.Random) -> dict:
    scores = _scores(f)
    # BIG-bench lists the right date first; the paper shuffles the options per question.
    keys = list(scores)
    rng.shuffle(keys)
    pairs, answer = _lettered(f, {k: scores[k] for k in keys})
    return {
        "question": f"{f.text('input').strip()} {_choice_suffix(pairs)}",
        "answer": answer,
        "options": dict(pairs),
    }


def _object_tracking(f: _Field, rng: random.Random) -> dict:
    pairs, answer = _lettered(f, _scores(f))
    suffix = "\nWhich choice is true ? " + _choice_suffix(pairs)
    return {
        "question": f"{f.text('input').strip()} {suffix}",
        "answer": answer,
        "choices": LETTERS[: len(pairs)],
        "options": dict(pairs),
    }


def _symbolic(f: _Field, rng: random.Random) -> dict:
    return {"question": f.text("question"), "answer": f.text("answer").strip()}


# dataset key -> (file layout, record parser)
_DATASETS: dict[str, tuple[str, Callable[[_Field, random.Random], dict]]] = {
    "gsm8k": ("jsonl", _gsm8k),
    "aqua": ("jsonl", _aqua),
    "commonsensqa": ("jsonl", _commonsensqa),
    "svamp": ("list", _svamp),
    "addsub": ("list", _math_word),
    "multiarith": ("list", _math_word),
    "singleeq": ("list", _math_word),
    "strategyqa": ("examples", _strategyqa),
    "bigbench_date": ("examples", _bigbench_date),
    "object_tracking": ("examples", _object_tracking),
    "coin_flip": ("examples", _symbolic),
    "last_letters": ("examples", _symbolic),
}

DATASETS: tuple[str, ...] = tuple(_DATASETS)


def _records(path: PathLike, layout: str) -> list[Any]:
    if layout == "jsonl":
        return read_jsonl(path)
    document = read_json(path)
    if layout == "list":
        if not isinstance(document, list):
            raise ValueError(f"{path}: expected a JSON list of records")
        return document
    if not isinstance(document, Mapping) or not isinstance(document.get("examples"), list):
        raise ValueError(f"{path}: expected a JSON object with an 'examples' list")
    return document["examples"]


def load_dataset(name: str, path: PathLike, *, seed: int = 1) -> list[dict]:
    """Load a local copy of one of the paper's twelve datasets.

    Parameters
    ----------
    name : str
        Dataset key, one of :data:`DATASETS` (also the task key for
        :func:`fusion.eval.evaluate`).
    path : path-like
        File in the published format (see the module table).
    seed : int
        Seed of the per-question option shuffle of ``bigbench_date`` (the paper shuffles
        because BIG-bench lists the right answer first); other datasets ignore it.

    Returns
    -------
    list of dict
        Items with ``"question"``, ``"answer"`` and ``"task"``; multiple-choice items also
        ``"options"`` (and ``"choices"`` where the letters vary).

    Raises
    ------
    ValueError
        For an unknown name, malformed JSON (with the line number for JSONL) or a record
        that lacks a field (with its index).

    References
    ----------
    - T. Kojima et al., "Large Language Models are Zero-Shot Reasoners", NeurIPS 2022.
    """
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    layout, parse = _DATASETS[name]
    rng = random.Random(seed)
    return [
        {**parse(_Field(path, i, record), rng), "task": name}
        for i, record in enumerate(_records(path, layout))
    ]


_OPTION_LINE = re.compile(r"^\(([A-Z])\)\s*(.*)$", re.MULTILINE)


def load_bbh(path: PathLike, task: str) -> list[dict]:
    """Load a BIG-Bench-Hard task file (``{"examples": [{"input", "target"}]}``).

    Parameters
    ----------
    path : path-like
        E.g. ``multistep_arithmetic_two.json``, ``dyck_languages.json``,
        ``tracking_shuffled_objects_five_objects.json``.
    task : str
        Task key whose prompts and cleansing apply, e.g. ``"multistep_arithmetic"``,
        ``"dyck_languages"``, ``"object_tracking"``.

    Returns
    -------
    list of dict
        Items with ``"question"`` (the BBH input), ``"answer"`` (the target; ``"(B)"``
        becomes ``"B"`` for multiple-choice tasks), ``"task"``, and for multiple-choice
        tasks ``"choices"`` and ``"options"`` parsed from the ``"(X) text"`` option lines.

    Raises
    ------
    ValueError
        For an unknown task, malformed JSON or a record without ``input`` / ``target``.

    References
    ----------
    - M. Suzgun et al., "Challenging BIG-Bench Tasks and Whether Chain-of-Thought Can
      Solve Them", 2022.
    """
    spec = get_spec(task)
    items = []
    for i, record in enumerate(_records(path, "examples")):
        f = _Field(path, i, record)
        item = {"question": f.text("input"), "answer": f.text("target").strip(), "task": task}
        if spec.kind == "choice":
            options = dict(_OPTION_LINE.findall(item["question"]))
            item["answer"] = item["answer"].strip("()")
            if options:
                item["options"] = options
                item["choices"] = LETTERS[: len(options)]
        items.append(item)
    return items
