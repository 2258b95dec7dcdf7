"""evaluate() end to end with scripted callables whose accuracy is known in advance."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.eval import EvalResult, evaluate, generate_task


def question_of(prompt: str) -> str:
    """The question of the last ``Q: ...\\nA:`` block of a prompt."""
    return prompt.rpartition("Q: ")[2].partition("\nA:")[0]


class HalfRight:
    """Answers the first half of the given items right (in the task's surface form)."""

    def __init__(self, items, right, wrong):
        half = len(items) // 2
        self.reply = {
            item["question"]: right(item["answer"]) if i < half else wrong(item["answer"])
            for i, item in enumerate(items)
        }
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if prompt.endswith("Let's think step by step."):
            return " Some reasoning."
        return self.reply[question_of(prompt)]


def flip(answer: str) -> str:
    return "no" if answer == "yes" else "yes"


@pytest.mark.parametrize("method", ["zero_shot", "zero_shot_cot"])
@pytest.mark.parametrize(
    ("name", "right", "wrong"),
    [
        ("coin_flip", lambda a: f" {a.title()}.", lambda a: f" {flip(a).title()}."),
        ("multistep_arithmetic", lambda a: f" {a}.", lambda a: f" {int(a) + 1}."),
        ("last_letters", lambda a: f' "{a}".', lambda a: f' "{a}x".'),
        ("dyck_languages", lambda a: f" {a}", lambda a: f" {a} )"),
        (
            "object_tracking_5",
            lambda a: f" ({a})",
            lambda a: " ({})".format("B" if a == "A" else "A"),
        ),
    ],
)
def test_half_right_scores_one_half_in_both_modes(name, right, wrong, method):
    items = generate_task(name, 10, seed=7)
    model = HalfRight(items, right, wrong)
    result = evaluate(model, items, task=name, method=method, progress=False)
    assert isinstance(result, EvalResult)
    assert result.task == items[0]["task"]  # generator names map to their task key
    assert result.n == 10
    assert result.accuracy == 0.5
    assert result.robust_accuracy == 0.5
    assert [r.correct for r in result.records] == [True] * 5 + [False] * 5
    assert [r.gold for r in result.records] == [item["answer"] for item in items]
    assert len(model.prompts) == (20 if method == "zero_shot_cot" else 10)


def test_robust_rescues_what_the_paper_rules_miss():
    items = generate_task("coin_flip", 30, seed=3)
    yes_share = sum(item["answer"] == "yes" for item in items) / len(items)
    # "Yes!" is no token of the paper's rule ("!" is not stripped), but robust reads it.
    result = evaluate(lambda prompt: " Yes!", items, task="coin_flip", progress=False)
    assert result.accuracy == 0.0
    assert result.robust_accuracy == pytest.approx(yes_share)


def test_records_hold_both_stages_verbatim():
    items = generate_task("multistep_arithmetic", 3, seed=0)

    def model(prompt: str) -> str:
        return " I add things up." if prompt.endswith("step.") else " 12, I think."

    result = evaluate(model, items, task="multistep_arithmetic", progress=False)
    for item, record in zip(items, result.records):
        stage1 = f"Q: {item['question']}\nA: Let's think step by step."
        assert record.prompt == stage1
        assert record.reasoning == " I add things up."
        assert record.answer_prompt == (
            stage1 + " I add things up. \nTherefore, the answer (arabic numerals) is"
        )
        assert record.answer_text == " 12, I think."
        assert record.pred == "12" and record.pred_robust == "12"
        assert record.correct is (item["answer"] == "12")
        assert set(record.to_dict()) >= {"prompt", "reasoning", "answer_text", "pred", "gold"}


def test_custom_trigger_and_item_choices_reach_the_prompts():
    items = generate_task("object_tracking_7", 2, seed=0)
    seen = []

    def model(prompt):
        seen.append(prompt)
        return " (A)"

    evaluate(model, items, task="object_tracking", cot_trigger="First,", progress=False)
    assert seen[0].endswith("\nA: First,")
    assert seen[-1].endswith(" \nTherefore, among A through G, the answer is")


def test_few_shot_cot_end_to_end():
    exemplars = [{"question": "1 + 1?", "rationale": "1 + 1 = 2.", "answer": "2"}]
    items = generate_task("multistep_arithmetic", 6, seed=5)
    answers = {item["question"]: item["answer"] for item in items}

    def model(prompt):
        assert prompt.startswith("Q: 1 + 1?\nA: 1 + 1 = 2. The answer is 2.\n\nQ: ")
        gold = answers[question_of(prompt)]
        # Right after the phrase for all; a distracting number follows.
        return f" Working it out. The answer is {gold}. Then 99.\n\nQ: 5 + 5?\nA: The answer is 10."

    result = evaluate(
        model,
        items,
        task="multistep_arithmetic",
        method="few_shot_cot",
        exemplars=exemplars,
        progress=False,
    )
    # The paper's rule reads the invented next exemplar; robust stops at "\nQ:".
    assert result.accuracy == sum(a == "10" for a in answers.values()) / 6
    assert result.robust_accuracy == 1.0


class Budgets:
    """A batch model that records the token budgets it is given."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def generate_batch(self, prompts, *, max_new_tokens):
        self.calls.append((len(prompts), max_new_tokens))
        return [" yes"] * len(prompts)


@pytest.mark.parametrize(
    ("method", "budgets"),
    [
        ("zero_shot", [32]),
        ("zero_shot_cot", [128, 32]),
        ("few_shot", [32]),
        ("few_shot_cot", [128]),
    ],
)
def test_paper_token_budgets(method, budgets):
    model = Budgets()
    ex = [{"question": "q", "rationale": "r", "answer": "yes"}]
    evaluate(
        model,
        generate_task("coin_flip", 3),
        task="coin_flip",
        method=method,
        exemplars=ex,
        progress=False,
    )
    assert [b for _, b in model.calls] == budgets


def test_batches_split_items_and_keep_order():
    model = Budgets()
    items = generate_task("coin_flip", 7)
    result = evaluate(
        model, items, task="coin_flip", method="zero_shot", batch_size=3, progress=False
    )
    assert [n for n, _ in model.calls] == [3, 3, 1]
    assert [r.index for r in result.records] == list(range(7))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), batch=st.integers(1, 6), k=st.integers(0, 12))
def test_accuracy_is_the_share_of_scripted_right_answers(n, batch, k):
    items = generate_task("last_letters", n, seed=n)
    k = min(k, n)
    right = {item["question"] for item in items[:k]}
    answers = {item["question"]: item["answer"] for item in items}

    def model(prompt):
        q = question_of(prompt)
        return f" {answers[q]}." if q in right else " zzzz."

    result = evaluate(
        model, items, task="last_letters", method="zero_shot", batch_size=batch, progress=False
    )
    assert result.accuracy == pytest.approx(k / n)
    assert result.robust_accuracy == pytest.approx(k / n)


def test_no_items_gives_nan():
    result = evaluate(lambda p: "", [], task="gsm8k", progress=False)
    assert result.n == 0 and math.isnan(result.accuracy) and math.isnan(result.robust_accuracy)


def test_plain_callable_path_needs_no_torch():
    # A fresh interpreter: in this one other tests may already have imported torch.
    code = (
        "import sys\n"
        "from fusion.eval import evaluate, generate_task\n"
        "r = evaluate(lambda p: ' 1', generate_task('multistep_arithmetic', 2),"
        " task='multistep_arithmetic', progress=False)\n"
        "assert r.n == 2\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_progress_bar_goes_to_stderr(capsys):
    evaluate(lambda p: " yes", generate_task("coin_flip", 3), task="coin_flip", progress=True)
    captured = capsys.readouterr()
    assert "coin_flip/zero_shot_cot" in captured.err
    assert captured.out == ""


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "nope"}, "unknown task"),
        ({"method": "cot"}, "unknown method"),
        ({"method": "few_shot"}, "at least one exemplar"),
        ({"max_new_tokens_answer": 0}, "max_new_tokens_answer"),
        ({"max_new_tokens_reasoning": -3}, "max_new_tokens_reasoning"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"task": "coin_flip", **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate(lambda p: " yes", generate_task("coin_flip", 2), progress=False, **args)


@pytest.mark.parametrize(
    ("items", "match"),
    [
        ([{"question": "q"}], "item 0 lacks a string 'answer'"),
        (
            [{"question": "q", "answer": "yes"}, {"answer": "no"}],
            "item 1 lacks a string 'question'",
        ),
        ([{"question": "q", "answer": 3}], "lacks a string 'answer'"),
        (["q"], "not a mapping"),
        ([{"question": "q", "answer": "1", "task": "gsm8k"}], "belongs to task 'gsm8k'"),
    ],
)
def test_malformed_items(items, match):
    with pytest.raises(ValueError, match=match):
        evaluate(lambda p: " yes", items, task="coin_flip", progress=False)


def test_model_must_be_callable_and_return_strings():
    items = generate_task("coin_flip", 1)
    with pytest.raises(TypeError, match="callable"):
        evaluate(42, items, task="coin_flip", progress=False)
    with pytest.raises(TypeError, match="returned int"):
        evaluate(lambda p: 1, items, task="coin_flip", progress=False)


def test_batch_model_must_return_one_completion_per_prompt():
    class Short:
        def generate_batch(self, prompts, *, max_new_tokens):
            return [" yes"]

    with pytest.raises(ValueError, match="1 completions for 2"):
        evaluate(Short(), generate_task("coin_flip", 2), task="coin_flip", progress=False)


def test_summary_counts_empty_and_unparsable_answers():
    items = generate_task("multistep_arithmetic", 7, seed=3)
    replies = iter([" 12.", "", "   ", " no idea", " -4", "\n", " seven"])
    result = evaluate(
        lambda prompt: next(replies), items, task="multistep_arithmetic", method="zero_shot",
        progress=False,
    )  # fmt: skip
    assert result.n_empty == 3  # "", "   ", "\n"
    assert result.n_unparsable == 5  # the empty ones, "no idea" and "seven"
    assert result.n_unparsable_robust == sum(r.pred_robust == "" for r in result.records)
    summary = result.summary()
    assert (summary["n_empty"], summary["n_unparsable"]) == (3, 5)
