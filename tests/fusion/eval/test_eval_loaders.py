"""Loaders: small fixtures in each dataset's published format, written by the tests."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from fusion.eval import DATASETS, load_bbh, load_dataset


def write(tmp_path, name, document, *, lines=False):
    path = tmp_path / name
    if lines:
        path.write_text("".join(json.dumps(d) + "\n" for d in document), encoding="utf-8")
    else:
        path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_all_twelve_datasets_are_known():
    assert set(DATASETS) == {
        "gsm8k",
        "aqua",
        "commonsensqa",
        "svamp",
        "addsub",
        "multiarith",
        "singleeq",
        "strategyqa",
        "bigbench_date",
        "object_tracking",
        "coin_flip",
        "last_letters",
    }


def test_gsm8k(tmp_path):
    rows = [
        {"question": " Tom has 3 pens. ", "answer": "He buys 2.\n3 + 2 = <<3+2=5>>5\n#### 5"},
        {"question": "Big?", "answer": "Reasoning #### not this\n#### 1,200"},
    ]
    items = load_dataset("gsm8k", write(tmp_path, "test.jsonl", rows, lines=True))
    assert items == [
        {"question": "Tom has 3 pens.", "answer": "5", "task": "gsm8k"},
        {"question": "Big?", "answer": "1,200", "task": "gsm8k"},
    ]


def test_aqua_question_carries_the_answer_choices(tmp_path):
    row = {
        "question": "How much is 21 + 0.5? ",
        "options": ["A)21", "B)21.5", "C)22", "D)20", "E)None"],
        "rationale": "...",
        "correct": "B",
    }
    (item,) = load_dataset("aqua", write(tmp_path, "test.json", [row], lines=True))
    assert item["question"] == (
        "How much is 21 + 0.5? Answer Choices: (A) 21 (B) 21.5 (C) 22 (D) 20 (E) None"
    )
    assert item["answer"] == "B"
    assert item["options"] == {"A": "21", "B": "21.5", "C": "22", "D": "20", "E": "None"}


def test_commonsensqa(tmp_path):
    row = {
        "answerKey": "C",
        "id": "x",
        "question": {
            "stem": "Where do fish live?",
            "choices": [
                {"label": "A", "text": "tree"},
                {"label": "B", "text": "sky"},
                {"label": "C", "text": "water"},
            ],
        },
    }
    (item,) = load_dataset("commonsensqa", write(tmp_path, "dev.jsonl", [row], lines=True))
    assert item["question"] == "Where do fish live? Answer Choices: (A) tree (B) sky (C) water"
    assert item["answer"] == "C"
    assert item["options"]["C"] == "water"


def test_svamp(tmp_path):
    rows = [
        {"ID": "1", "Body": "Jack had 8 pens. ", "Question": " How many now?", "Answer": 5.0},
        {"ID": "2", "Body": "A", "Question": "B", "Answer": 2.5},
    ]
    items = load_dataset("svamp", write(tmp_path, "SVAMP.json", rows))
    assert [i["question"] for i in items] == ["Jack had 8 pens. How many now?", "A B"]
    assert [i["answer"] for i in items] == ["5", "2.5"]


@pytest.mark.parametrize("name", ["addsub", "multiarith", "singleeq"])
def test_math_word_problems(tmp_path, name):
    rows = [
        {"iIndex": 1, "sQuestion": " There are 3 cats. ", "lSolutions": [7.0], "lEquations": []},
        {"iIndex": 2, "sQuestion": "Q2", "lSolutions": [12]},
    ]
    items = load_dataset(name, write(tmp_path, f"{name}.json", rows))
    assert [(i["question"], i["answer"], i["task"]) for i in items] == [
        ("There are 3 cats.", "7", name),
        ("Q2", "12", name),
    ]


def test_strategyqa(tmp_path):
    doc = {
        "name": "strategyqa",
        "examples": [
            {"input": "Can a cat fly?", "target_scores": {"Yes": 0, "No": 1}},
            {"input": "Is ice cold? ", "target_scores": {"Yes": 1, "No": 0}},
        ],
    }
    items = load_dataset("strategyqa", write(tmp_path, "task.json", doc))
    assert [(i["question"], i["answer"]) for i in items] == [
        ("Can a cat fly?", "no"),
        ("Is ice cold?", "yes"),
    ]


def date_doc(n):
    options = [f"01/0{k}/2020" for k in range(1, 7)]
    return {
        "examples": [
            {
                "input": f"Today is day {i}. What is the date?",
                "target_scores": {o: int(k == 0) for k, o in enumerate(options)},
            }
            for i in range(n)
        ]
    }


def test_bigbench_date_shuffles_options_but_keeps_the_right_one(tmp_path):
    path = write(tmp_path, "date.json", date_doc(60))
    items = load_dataset("bigbench_date", path, seed=3)
    for item in items:
        # The first listed date is the right one in the file; its letter must point at it.
        assert item["options"][item["answer"]] == "01/01/2020"
        assert item["question"].startswith("Today is day")
        suffix = " Answer Choices: " + " ".join(f"({k}) {v}" for k, v in item["options"].items())
        assert item["question"].endswith(suffix)
    assert len(Counter(item["answer"] for item in items)) > 3  # not always "A"
    assert load_dataset("bigbench_date", path, seed=3) == items
    assert load_dataset("bigbench_date", path, seed=4) != items


def test_object_tracking_big_bench_format(tmp_path):
    doc = {
        "examples": [
            {
                "input": "Alice, Bob, and Claire are playing a game. ... At the end, Bob has the",
                "target_scores": {"red ball.": 0, "blue ball.": 1, "green ball.": 0},
            }
        ]
    }
    (item,) = load_dataset("object_tracking", write(tmp_path, "task.json", doc))
    assert item["question"] == (
        "Alice, Bob, and Claire are playing a game. ... At the end, Bob has the "
        "\nWhich choice is true ? Answer Choices: (A) red ball. (B) blue ball. (C) green ball."
    )
    assert item["answer"] == "B"
    assert item["choices"] == "ABC"


@pytest.mark.parametrize("name", ["coin_flip", "last_letters"])
def test_symbolic_tasks(tmp_path, name):
    doc = {
        "examples": [{"question": "Q one", "answer": "yes"}, {"question": "Q two", "answer": "ab"}]
    }
    items = load_dataset(name, write(tmp_path, f"{name}.json", doc))
    assert [(i["question"], i["answer"], i["task"]) for i in items] == [
        ("Q one", "yes", name),
        ("Q two", "ab", name),
    ]


def test_bbh_files(tmp_path):
    arith = {"examples": [{"input": "((-1 + 2 + 9 * 5) - (-2 + -4 + -4 * -7)) =", "target": "24"}]}
    (item,) = load_bbh(write(tmp_path, "arith.json", arith), "multistep_arithmetic")
    assert item == {
        "question": "((-1 + 2 + 9 * 5) - (-2 + -4 + -4 * -7)) =",
        "answer": "24",
        "task": "multistep_arithmetic",
    }
    q = "Alice, Bob, Claire, Dave, and Eve are playing.\nOptions:\n(A) a\n(B) b\n(C) c\n(D) d\n(E) e"
    track = {"examples": [{"input": q, "target": "(D)"}]}
    (item,) = load_bbh(write(tmp_path, "track.json", track), "object_tracking")
    assert item["answer"] == "D"
    assert item["choices"] == "ABCDE"
    assert item["options"]["E"] == "e"


# --------------------------------------------------------------------------- errors


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "#### 1"}\n\n{"question": oops}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 3 is not valid JSON"):
        load_dataset("gsm8k", path)


def test_malformed_json_names_the_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"examples": [\n  {"question": "a",}\n]}')
    with pytest.raises(ValueError, match=r"invalid JSON at line 2"):
        load_dataset("coin_flip", path)


@pytest.mark.parametrize(
    ("name", "document", "lines", "match"),
    [
        ("gsm8k", [{"question": "q"}], True, "record 0 lacks field 'answer'"),
        ("gsm8k", [{"question": "q", "answer": 5}], True, "'answer' is not a string"),
        (
            "commonsensqa",
            [{"question": {"stem": "s"}, "answerKey": "A"}],
            True,
            "'question.choices'",
        ),
        ("aqua", [{"question": "q", "options": "A)1", "correct": "A"}], True, "list of strings"),
        ("svamp", {"Body": "b"}, False, "expected a JSON list"),
        ("addsub", [{"sQuestion": "q", "lSolutions": []}], False, "non-empty list"),
        ("strategyqa", [{"input": "q"}], False, "'examples' list"),
        (
            "strategyqa",
            {"examples": [{"input": "q", "target_scores": {"No": 1}}]},
            False,
            "lacks 'Yes'",
        ),
        (
            "bigbench_date",
            {"examples": [{"input": "q", "target_scores": {"a": 0}}]},
            False,
            "found 0",
        ),
        ("coin_flip", {"examples": [3]}, False, "record 0 is int"),
    ],
)
def test_malformed_records(tmp_path, name, document, lines, match):
    path = write(tmp_path, "data.jsonl" if lines else "data.json", document, lines=lines)
    with pytest.raises(ValueError, match=match):
        load_dataset(name, path)


def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mmlu", tmp_path / "x.json")


def test_unknown_bbh_task(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        load_bbh(write(tmp_path, "x.json", {"examples": []}), "boolean_expressions")
