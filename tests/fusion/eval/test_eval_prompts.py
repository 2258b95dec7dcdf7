"""Prompt strings, checked against the templates written out in the issue and the paper."""

from __future__ import annotations

import pytest

from fusion.eval import COT_TRIGGERS, DEFAULT_COT_TRIGGER
from fusion.eval import prompts as P


@pytest.mark.parametrize(
    ("task", "choices", "expected"),
    [
        ("gsm8k", None, "\nTherefore, the answer (arabic numerals) is"),
        ("multistep_arithmetic", None, "\nTherefore, the answer (arabic numerals) is"),
        ("aqua", None, "\nTherefore, among A through E, the answer is"),
        ("commonsensqa", None, "\nTherefore, among A through E, the answer is"),
        ("bigbench_date", None, "\nTherefore, among A through F, the answer is"),
        ("object_tracking", None, "\nTherefore, among A through C, the answer is"),
        ("object_tracking", "ABCDEFG", "\nTherefore, among A through G, the answer is"),
        ("strategyqa", None, "\nTherefore, the answer (Yes or No) is"),
        ("coin_flip", None, "\nTherefore, the answer (Yes or No) is"),
        ("last_letters", None, "\nTherefore, the answer is"),
        ("dyck_languages", None, "\nTherefore, the answer is"),
    ],
)
def test_answer_triggers(task, choices, expected):
    assert P.answer_trigger(task, choices) == expected


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("svamp", "Q: Why?\nA: The answer (arabic numerals) is"),
        ("aqua", "Q: Why?\nA: Among A through E, the answer is"),
        ("coin_flip", "Q: Why?\nA: The answer (Yes or No) is"),
        ("last_letters", "Q: Why?\nA: The answer is"),
    ],
)
def test_zero_shot_prompt(task, expected):
    assert P.zero_shot_prompt("Why?", task) == expected


def test_zero_shot_cot_two_stages():
    first = P.cot_stage1_prompt("What is 2+3?")
    assert first == "Q: What is 2+3?\nA: Let's think step by step."
    second = P.cot_stage2_prompt(first, " 2+3 is 5.", "gsm8k")
    assert second == (
        "Q: What is 2+3?\nA: Let's think step by step. 2+3 is 5. "
        "\nTherefore, the answer (arabic numerals) is"
    )


def test_reasoning_trigger_is_configurable():
    assert P.cot_stage1_prompt("Q?", "First,") == "Q: Q?\nA: First,"


def test_trigger_ablation_list():
    assert DEFAULT_COT_TRIGGER == "Let's think step by step."
    assert COT_TRIGGERS[0] == DEFAULT_COT_TRIGGER
    for trigger in ("First,", "Let's think about this logically.", "Let's think"):
        assert trigger in COT_TRIGGERS
    assert len(set(COT_TRIGGERS)) == len(COT_TRIGGERS) == 14


def test_few_shot_exemplars():
    exemplars = [
        {"question": "1+1?", "rationale": "One and one make two.", "answer": "2"},
        {"question": "2+2?", "rationale": "Two and two make four.", "answer": "4"},
    ]
    cot = P.exemplar_text(exemplars, cot=True)
    assert cot == (
        "Q: 1+1?\nA: One and one make two. The answer is 2.\n\n"
        "Q: 2+2?\nA: Two and two make four. The answer is 4.\n\n"
    )
    plain = P.exemplar_text(exemplars, cot=False)
    assert plain == "Q: 1+1?\nA: The answer is 2.\n\nQ: 2+2?\nA: The answer is 4.\n\n"
    assert P.few_shot_prompt("3+3?", plain) == plain + "Q: 3+3?\nA:"


def test_few_shot_without_rationale_is_fine_for_plain_few_shot():
    assert P.exemplar_text([{"question": "q", "answer": "a"}], cot=False)
    with pytest.raises(ValueError, match="rationale"):
        P.exemplar_text([{"question": "q", "answer": "a"}], cot=True)


def test_no_exemplars_is_an_error():
    with pytest.raises(ValueError, match="at least one exemplar"):
        P.exemplar_text([], cot=False)


@pytest.mark.parametrize("bad", ["zero-shot", "cot", ""])
def test_unknown_method(bad):
    with pytest.raises(ValueError, match="unknown method"):
        P.check_method(bad)


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        P.answer_trigger("gsm9k")
