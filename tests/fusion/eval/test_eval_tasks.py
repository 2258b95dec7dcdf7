"""Task generators, each cross-checked by a solver written here from the question text."""

from __future__ import annotations

import ast
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.eval import generate_task
from fusion.eval.tasks import GENERATORS, first_names

SEEDS = st.integers(min_value=0, max_value=2**32)
SIZES = st.integers(min_value=0, max_value=12)
FAST = settings(max_examples=40, deadline=None)

# ------------------------------------------------------------------ independent solvers

COIN = re.compile(
    r"^A coin is heads up\. ((?:[A-Z][a-z]+ (?:flips|does not flip) the coin\. ){4})"
    r'Is the coin still heads up\? Note that "flip" here means "reverse"\.$'
)


def solve_coin_flip(question: str) -> str:
    match = COIN.match(question)
    assert match, question
    steps = re.findall(r"([A-Z][a-z]+) (flips|does not flip) the coin", match.group(1))
    assert len(steps) == 4 and len({name for name, _ in steps}) == 4
    heads = True
    for _, verb in steps:
        if verb == "flips":
            heads = not heads
    return "yes" if heads else "no"


def solve_last_letters(question: str) -> str:
    match = re.fullmatch(
        r'Take the last letters of each words in "([A-Za-z ]+)" and concatenate them\.', question
    )
    assert match, question
    words = match.group(1).split(" ")
    assert len(words) == 4
    return "".join(word[-1] for word in words)


ARITH = re.compile(r"^\(\((-?\d)(?: [-+*] -?\d){3}\) [-+*] \((-?\d)(?: [-+*] -?\d){3}\)\) =$")
ALLOWED = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Constant,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.USub,
)


def solve_arithmetic(question: str) -> str:
    assert ARITH.match(question), question
    expr = question.removesuffix(" =")
    tree = ast.parse(expr, mode="eval")
    assert all(isinstance(node, ALLOWED) for node in ast.walk(tree)), expr
    ints = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert all(isinstance(v, int) and 0 <= v <= 9 for v in ints)
    assert len(ints) == 8, expr
    return str(eval(compile(tree, "<arith>", "eval"), {"__builtins__": {}}))


PAIRS = {")": "(", "]": "[", "}": "{", ">": "<"}


def solve_dyck(question: str) -> str:
    prefix = "Complete the rest of the sequence, making sure that the parentheses are closed "
    prefix += "properly. Input: "
    assert question.startswith(prefix), question
    stack = []
    for token in question[len(prefix) :].split(" "):
        if token in PAIRS:
            assert stack and stack[-1] == PAIRS[token], "input is not a Dyck prefix"
            stack.pop()
        else:
            assert token in PAIRS.values(), token
            stack.append(token)
    assert stack, "nothing left to close"
    closer = {v: k for k, v in PAIRS.items()}
    return " ".join(closer[b] for b in reversed(stack))


def solve_tracking(question: str) -> tuple[str, int]:
    head, _, options_text = question.partition("\nOptions:\n")
    options = re.findall(r"^\(([A-G])\) (.+)$", options_text, re.MULTILINE)
    people = re.findall(r"Alice|Bob|Claire|Dave|Eve|Fred|Gertrude", head.split(" are ")[0])
    assert len(people) == len(options) in (3, 5, 7)
    holding = {p: text for p, (_, text) in zip(people, options)}
    # Check the setting sentence names the same item for each person as the options do.
    setting = head.split("\n")[0]
    for person, text in holding.items():
        item = text.removesuffix(" ball").removesuffix(" present")
        assert re.search(
            rf"{person} (?:has a|gets|is dancing with|is playing) {re.escape(item)}\b", setting
        )
    swaps = re.findall(r"(\w+) and (\w+) (?:swap|switch|trade)", head)
    assert len(swaps) == len(people)
    for a, b in swaps:
        assert a != b
        holding[a], holding[b] = holding[b], holding[a]
    target = re.search(r"At the end of the \w+, (\w+) (?:has|is)", head).group(1)
    letter = next(letter for letter, text in options if text == holding[target])
    return letter, len(people)


SOLVERS = {
    "coin_flip": solve_coin_flip,
    "last_letters": solve_last_letters,
    "multistep_arithmetic": solve_arithmetic,
    "dyck_languages": solve_dyck,
}

# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("name", sorted(SOLVERS))
@FAST
@given(seed=SEEDS, n=SIZES)
def test_answers_match_an_independent_solver(name, seed, n):
    items = generate_task(name, n, seed=seed)
    assert len(items) == n
    for item in items:
        assert item["task"] == name
        assert item["answer"] == SOLVERS[name](item["question"])


@pytest.mark.parametrize(
    ("name", "objects"),
    [
        ("object_tracking", 3),
        ("object_tracking_3", 3),
        ("object_tracking_5", 5),
        ("object_tracking_7", 7),
    ],
)
@FAST
@given(seed=SEEDS, n=SIZES)
def test_object_tracking_matches_a_swap_simulation(name, objects, seed, n):
    for item in generate_task(name, n, seed=seed):
        letter, count = solve_tracking(item["question"])
        assert count == objects
        assert item["answer"] == letter
        assert item["task"] == "object_tracking"
        assert item["choices"] == "ABCDEFG"[:objects]
        assert sorted(item["options"]) == list(item["choices"])


@pytest.mark.parametrize("name", sorted(GENERATORS))
@FAST
@given(seed=SEEDS, n=SIZES)
def test_deterministic_by_seed_and_prefix_stable(name, seed, n):
    items = generate_task(name, n, seed=seed)
    assert items == generate_task(name, n, seed=seed)
    assert generate_task(name, n + 3, seed=seed)[:n] == items


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_different_seeds_give_different_items(name):
    assert generate_task(name, 20, seed=1) != generate_task(name, 20, seed=2)


def test_bbh_example_format_is_accepted_by_the_solvers():
    # The documented BBH examples pass the same solvers (a check on the solvers themselves).
    assert solve_arithmetic("((-1 + 2 + 9 * 5) - (-2 + -4 + -4 * -7)) =") == "24"
    q = "Complete the rest of the sequence, making sure that the parentheses are closed properly. Input: [ { ["
    assert solve_dyck(q) == "] } ]"


def test_answer_distributions_are_not_degenerate():
    coins = Counter(item["answer"] for item in generate_task("coin_flip", 400, seed=0))
    assert 0.35 < coins["yes"] / 400 < 0.65
    letters = Counter(item["answer"] for item in generate_task("object_tracking_5", 300, seed=0))
    assert set(letters) == set("ABCDE")
    values = {int(item["answer"]) for item in generate_task("multistep_arithmetic", 100, seed=0)}
    assert len(values) > 50 and min(values) < 0 < max(values)


def test_names_ship_with_the_package():
    names = first_names()
    assert len(names) >= 100
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Z][a-z]+", name) for name in names)


@pytest.mark.parametrize(
    ("name", "n", "match"),
    [
        ("coin_flips", 3, "unknown generated task"),
        ("gsm8k", 3, "unknown generated task"),
        ("coin_flip", -1, "non-negative"),
        ("coin_flip", 2.5, "non-negative"),
        ("coin_flip", True, "non-negative"),
    ],
)
def test_bad_arguments(name, n, match):
    with pytest.raises(ValueError, match=match):
        generate_task(name, n)
