"""Answer cleansing: one or more hand-written cases per rule of the issue, both modes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.eval import cleanse_answer, is_correct

NUMERIC = ["gsm8k", "addsub", "multiarith", "svamp", "singleeq", "multistep_arithmetic"]


# ----------------------------------------------------------------- paper mode: numbers


@pytest.mark.parametrize("task", NUMERIC)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 1,234.", "1234"),  # commas removed, trailing period removed
        (" 12.5 dollars", "12.5"),  # decimals kept
        (" -7.", "-7"),  # negatives kept
        (" 3 apples and 4 pears", "3"),  # several numbers: the first
        (" 2,3 and 4", "23"),  # every comma goes, so "2,3" merges (paper quirk)
        (" 2.0", "2.0"),  # no numeric normalisation in paper mode
        (" none", ""),  # nothing matches
        ("", ""),  # empty output
        (" 5.\n", "5"),
    ],
)
def test_paper_numeric_rules(task, text, expected):
    assert cleanse_answer(text, task, "zero_shot_cot", "paper") == expected


def test_paper_numeric_zero_shot_takes_first_candidate():
    assert cleanse_answer(" 8 or maybe 9", "gsm8k", "zero_shot") == "8"


def test_paper_numeric_unicode_minus_is_not_a_sign():
    assert cleanse_answer(" \u22125", "gsm8k") == "5"


# ---------------------------------------------------------- paper mode: multiple choice


@pytest.mark.parametrize(
    ("task", "text", "expected"),
    [
        ("aqua", " (C) 21.", "C"),
        ("aqua", " Because it rains, (C).", "B"),  # capitals anywhere: "Because" gives B
        ("commonsensqa", " e and then D", "D"),  # case-sensitive: "e" is ignored
        ("commonsensqa", " none of them", ""),
        ("aqua", " F is not allowed, E is", "E"),  # only A-E
        ("bigbench_date", " F", "F"),  # date understanding allows A-F
        ("bigbench_date", " G then F", "F"),
        ("object_tracking", " D, E, then C", "C"),  # object tracking allows A-C
    ],
)
def test_paper_choice_rules(task, text, expected):
    assert cleanse_answer(text, task, "zero_shot_cot", "paper") == expected


def test_paper_choice_letters_follow_item_choices():
    # Five-object tracking items carry choices="ABCDE": the same rule over A-E.
    assert cleanse_answer(" D.", "object_tracking", choices="ABCDE") == "D"
    assert cleanse_answer(" D.", "object_tracking") == ""


# -------------------------------------------------------------------- paper mode: yes/no


@pytest.mark.parametrize("task", ["strategyqa", "coin_flip"])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Yes.", "yes"),
        (' "No".', "no"),
        (":\n\nYes", "yes"),
        (" YES, the coin is still heads up.", "yes"),
        (" no, not yes", "no"),
        (" Yes!", ""),  # "!" is not in the paper's punctuation list
        (" yesterday", ""),  # tokens must equal yes/no
        (" maybe", ""),
        ("", ""),
    ],
)
def test_paper_yes_no_rules(task, text, expected):
    assert cleanse_answer(text, task, "zero_shot_cot", "paper") == expected


# ------------------------------------------------------------ paper mode: last letters


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (' "nkey".', "nkey"),
        (" 'ab cd'.\n", "abcd"),  # whitespace inside is deleted too
        (" nkey. Because", "nkeyBecause"),  # the rest is the answer, whatever it is
        ("", ""),
    ],
)
def test_paper_last_letters_rules(text, expected):
    assert cleanse_answer(text, "last_letters", "zero_shot_cot", "paper") == expected


def test_paper_dyck_uses_the_free_form_rule_and_compares_without_spaces():
    pred = cleanse_answer(" ] } ].", "dyck_languages")
    assert pred == "]}]"
    assert is_correct(pred, "] } ]", "dyck_languages", "paper")


# ------------------------------------------------------------- paper mode: few-shot


def test_paper_few_shot_takes_text_after_the_last_phrase_and_its_first_candidate():
    text = "3 + 4 = 7. The answer is 7. Next, The answer is 9 or 10."
    assert cleanse_answer(text, "gsm8k", "few_shot_cot", "paper") == "9"


def test_paper_few_shot_without_phrase_takes_the_last_candidate():
    assert cleanse_answer("3 + 4 = 7 and 8", "gsm8k", "few_shot", "paper") == "8"


def test_paper_few_shot_phrase_is_case_sensitive():
    # "the answer is" (lower case) is not the phrase, so the last candidate wins.
    assert cleanse_answer("the answer is 7, not 8", "gsm8k", "few_shot_cot") == "8"


def test_paper_few_shot_choice_and_yes_no():
    assert cleanse_answer("So The answer is (B). Also C", "aqua", "few_shot") == "B"
    assert cleanse_answer("I think no. Then yes", "coin_flip", "few_shot_cot") == "yes"


def test_paper_zero_shot_ignores_the_phrase():
    assert cleanse_answer("4. The answer is 5", "gsm8k", "zero_shot") == "4"


def test_paper_trailing_period_removed_once():
    # last_letters keeps no periods; numbers like "5." lose exactly one.
    assert cleanse_answer(" 5.", "gsm8k") == "5"
    assert cleanse_answer(" 5..", "gsm8k") == "5"


# ------------------------------------------------------------------------ robust mode


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 2.0", "2"),
        (" 2.50 dollars", "2.5"),
        (" \u22125.", "-5"),  # Unicode minus
        (" \uff13\uff14", "34"),  # full-width digits
        (" 1,234,567.", "1234567"),
        (" 2, 3 and 4", "2"),  # list commas are not thousands separators
        (" five.", "5"),
        (" Twenty-one apples", "21"),
        (" negative 24.", "-24"),
        (" 3 + 4 = 7.", "7"),  # an equation answers with its result
        (" 10. Because 5 * 2 = 10 and 10 - 3 = 7", "10"),
        (" $18 per day", "18"),
        (" \\boxed{42} or 41", "42"),
        (" nothing", ""),
        ("", ""),
        (" 8\n\nQ: A farmer has 3 cows", "8"),
    ],
)
def test_robust_numeric(text, expected):
    assert cleanse_answer(text, "gsm8k", "zero_shot_cot", "robust") == expected


def test_robust_few_shot_ignores_an_invented_next_question():
    text = "5 + 3 = 8. The answer is 8.\n\nQ: Tom has 2 pens. A: The answer is 2."
    assert cleanse_answer(text, "gsm8k", "few_shot_cot", "paper") == "2"
    assert cleanse_answer(text, "gsm8k", "few_shot_cot", "robust") == "8"


def test_robust_few_shot_phrase_is_case_insensitive():
    assert cleanse_answer("so the answer is 7, not 8", "gsm8k", "few_shot", "robust") == "7"
    assert cleanse_answer("7 then 8", "gsm8k", "few_shot", "robust") == "8"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Because it rains, (C).", "C"),  # "(C)" beats the stray capital of "Because"
        (" Clearly (B) Bob", "B"),
        (" B. Because", "B"),
        (" A coin is not an answer, D is", "D"),  # "A coin": the article
        (" A is correct", "A"),
        (" None", ""),
    ],
)
def test_robust_choice(text, expected):
    assert cleanse_answer(text, "aqua", "zero_shot_cot", "robust") == expected


def test_robust_choice_maps_option_text_to_its_letter():
    options = {"A": "red ball", "B": "pink ball", "C": "red"}
    got = cleanse_answer(" the pink ball.", "object_tracking", mode="robust", options=options)
    assert got == "B"
    # At one position the longer option wins.
    got = cleanse_answer(" red ball", "object_tracking", mode="robust", options=options)
    assert got == "A"


@pytest.mark.parametrize(
    ("text", "expected"),
    [(" Yes!", "yes"), (" (No)", "no"), (" Nope; yes?", "yes"), (" not sure", "")],
)
def test_robust_yes_no(text, expected):
    assert cleanse_answer(text, "strategyqa", "zero_shot_cot", "robust") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (' "nkey". Because', "nkey"),
        (" nkey. Because", "nkey"),
        (" n, k, e, y.", "nkey"),
        (" NKEY", "nkey"),
        ("", ""),
    ],
)
def test_robust_last_letters(text, expected):
    assert cleanse_answer(text, "last_letters", "zero_shot_cot", "robust") == expected


def test_robust_dyck_takes_the_first_run_with_a_closing_bracket():
    text = " the stack [ { [ is closed by ] } ]. Done"
    assert cleanse_answer(text, "dyck_languages", mode="robust") == "] } ]"


# ----------------------------------------------------------------------- comparison


@pytest.mark.parametrize(
    ("pred", "gold", "task", "paper", "robust"),
    [
        ("2", "2", "gsm8k", True, True),
        ("2.0", "2", "gsm8k", False, True),
        ("1000", "1,000", "gsm8k", False, True),
        ("B", "B", "aqua", True, True),
        ("b", "B", "aqua", False, True),
        ("yes", "yes", "coin_flip", True, True),
        ("nkey", "NKEY", "last_letters", False, True),
        ("] } ]", "] } ]", "dyck_languages", False, True),
        ("", "", "gsm8k", True, False),  # an empty prediction never counts as robustly right
    ],
)
def test_is_correct(pred, gold, task, paper, robust):
    assert is_correct(pred, gold, task, "paper") is paper
    assert is_correct(pred, gold, task, "robust") is robust


@settings(max_examples=60, deadline=None)
@given(value=st.integers(-(10**9), 10**9))
def test_numbers_with_separators_round_trip(value):
    text = f" {value:,}."
    assert cleanse_answer(text, "gsm8k") == str(value)
    assert cleanse_answer(text, "gsm8k", mode="robust") == str(value)
    assert cleanse_answer(f" {value}.0", "gsm8k", mode="robust") == str(value)


@settings(max_examples=60, deadline=None)
@given(letter=st.sampled_from("ABCDE"), noise=st.sampled_from(["Because", "Clearly", "Every"]))
def test_robust_prefers_the_parenthesised_letter(letter, noise):
    text = f" {noise} option ({letter}) is right."
    assert cleanse_answer(text, "aqua", mode="robust") == letter


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "gsm8"}, "unknown task"),
        ({"method": "cot"}, "unknown method"),
        ({"mode": "lenient"}, "unknown mode"),
        ({"task": "object_tracking", "choices": "ACE"}, "consecutive letters"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    args = {"task": "gsm8k", "method": "zero_shot_cot", "mode": "paper", **kwargs}
    with pytest.raises(ValueError, match=match):
        cleanse_answer(" 1", args.pop("task"), **args)


def test_non_string_text_raises_type_error():
    with pytest.raises(TypeError):
        cleanse_answer(5, "gsm8k")
