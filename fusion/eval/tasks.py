"""Synthetic reasoning tasks with exact answers, deterministic by seed.

``coin_flip`` and ``last_letters`` follow Kojima et al. (2022) (they built these two
datasets the same way, from lists of first names); ``multistep_arithmetic``,
``dyck_languages`` and ``object_tracking`` follow the question formats of BIG-Bench-Hard
(Suzgun et al., 2022). Every item is a dict with at least ``"question"``, ``"answer"`` and
``"task"`` (the key that selects prompts and cleansing); multiple-choice items also carry
``"choices"`` (option letters) and ``"options"`` (letter to option text).
:func:`solve_coin_flip` and :func:`solve_arithmetic` give every intermediate step of the
exact answer (chain-of-thought targets); :func:`arithmetic_items` sizes the arithmetic.

References
----------
- T. Kojima et al., "Large Language Models are Zero-Shot Reasoners", NeurIPS 2022.
- M. Suzgun et al., "Challenging BIG-Bench Tasks and Whether Chain-of-Thought Can Solve
  Them", Findings of ACL 2023, arXiv:2210.09261.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import NamedTuple

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@cache
def first_names() -> tuple[str, ...]:
    """The shipped list of common first names (``fusion/eval/data/first_names.txt``).

    Returns
    -------
    tuple of str
        ASCII-letter names, in file order.
    """
    text = resources.files("fusion.eval").joinpath("data/first_names.txt").read_text("utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


# ------------------------------------------------------------------ Kojima et al. tasks


def _coin_flip(rng: random.Random) -> dict:
    people = rng.sample(first_names(), 4)
    flips = [rng.random() < 0.5 for _ in people]
    steps = " ".join(
        f"{name} flips the coin." if flip else f"{name} does not flip the coin."
        for name, flip in zip(people, flips)
    )
    question = (
        f"A coin is heads up. {steps} Is the coin still heads up? "
        'Note that "flip" here means "reverse".'
    )
    # An even number of reversals leaves the coin as it started.
    return {"question": question, "answer": "yes" if sum(flips) % 2 == 0 else "no"}


def _last_letters(rng: random.Random) -> dict:
    words = rng.sample(first_names(), 4)
    question = f'Take the last letters of each words in "{" ".join(words)}" and concatenate them.'
    return {"question": question, "answer": "".join(word[-1] for word in words)}


# ------------------------------------------------------------------ BIG-Bench-Hard tasks


def _group_value(numbers: list[int], ops: list[str]) -> int:
    # Multiplication binds tighter: fold products into terms, then add the signed terms.
    terms, sign, product = [], 1, numbers[0]
    for op, number in zip(ops, numbers[1:]):
        if op == "*":
            product *= number
        else:
            terms.append(sign * product)
            sign, product = (1 if op == "+" else -1), number
    terms.append(sign * product)
    return sum(terms)


def _multistep_arithmetic(rng: random.Random, terms: int = 4, max_abs: int = 9) -> dict:
    groups, values = [], []
    for _ in range(2):
        numbers = [rng.randint(-max_abs, max_abs) for _ in range(terms)]
        ops = [rng.choice("+-*") for _ in range(terms - 1)]
        text = str(numbers[0]) + "".join(f" {op} {n}" for op, n in zip(ops, numbers[1:]))
        groups.append(f"({text})")
        values.append(_group_value(numbers, ops))
    outer = rng.choice("+-*")
    answer = {"+": values[0] + values[1], "-": values[0] - values[1], "*": values[0] * values[1]}
    return {"question": f"({groups[0]} {outer} {groups[1]}) =", "answer": str(answer[outer])}


_BRACKETS = {"(": ")", "[": "]", "{": "}", "<": ">"}


def _dyck_languages(rng: random.Random) -> dict:
    length = rng.randint(3, 30)
    tokens: list[str] = []
    stack: list[str] = []
    for _ in range(length):
        if stack and (len(stack) >= 10 or rng.random() < 0.45):
            tokens.append(_BRACKETS[stack.pop()])
        else:
            stack.append(rng.choice(list(_BRACKETS)))
            tokens.append(stack[-1])
    if not stack:  # the question must leave something to close
        stack.append(rng.choice(list(_BRACKETS)))
        tokens.append(stack[-1])
    question = (
        "Complete the rest of the sequence, making sure that the parentheses are closed "
        f"properly. Input: {' '.join(tokens)}"
    )
    return {"question": question, "answer": " ".join(_BRACKETS[b] for b in reversed(stack))}


_PEOPLE = ("Alice", "Bob", "Claire", "Dave", "Eve", "Fred", "Gertrude")
_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black")

# (setting, assignment, swap, question, option text, objects), the five BBH scenarios.
_SCENARIOS = (
    (
        "{people} are playing a game. At the start of the game, they are each holding a ball: "
        "{assigned}.\nAs the game progresses, pairs of players trade balls.",
        "{p} has a {x} ball",
        "{a} and {b} swap balls",
        "At the end of the game, {p} has the",
        "{x} ball",
        _COLOURS,
    ),
    (
        "{people} are holding a white elephant gift exchange. At the start of the event, they "
        "are each holding a present of a different color: {assigned}.\nAs the event "
        "progresses, pairs of people swap gifts.",
        "{p} has a {x} present",
        "{a} and {b} swap their gifts",
        "At the end of the event, {p} has the",
        "{x} present",
        _COLOURS,
    ),
    (
        "{people} are friends and avid readers who occasionally trade books. At the start of "
        "the semester, they each buy one new book: {assigned}.\nAs the semester proceeds, they "
        "start trading around the new books.",
        "{p} gets {x}",
        "{a} and {b} swap books",
        "At the end of the semester, {p} has",
        "{x}",
        (
            "Frankenstein",
            "Ulysses",
            "Moby Dick",
            "Hound of the Baskervilles",
            "The Odyssey",
            "Lolita",
            "Catch-22",
            "The Great Gatsby",
            "The Pearl",
        ),
    ),
    (
        "{people} are dancers at a square dance. At the start of a song, they each have a "
        "partner: {assigned}.\nThroughout the song, the dancers often trade partners.",
        "{p} is dancing with {x}",
        "{a} and {b} switch partners",
        "At the end of the dance, {p} is dancing with",
        "{x}",
        ("Patrick", "Sam", "Jamie", "Lola", "Melissa", "Izzi", "Helga", "Ophelia", "Rodrigo"),
    ),
    (
        "{people} are on the same team in a soccer match. At the start of the match, they are "
        "each assigned to a position: {assigned}.\nAs the game progresses, pairs of players "
        "occasionally swap positions.",
        "{p} is playing {x}",
        "{a} and {b} trade positions",
        "At the end of the match, {p} is playing",
        "{x}",
        (
            "goalkeeper",
            "left winger",
            "right winger",
            "striker",
            "center midfielder",
            "left midfielder",
            "right midfielder",
            "benchwarmer",
            "cheerleader",
        ),
    ),
)


def _english_list(parts: list[str]) -> str:
    if len(parts) == 2:
        return f"{parts[0]} and {parts[1]}"
    return ", ".join(parts[:-1]) + f", and {parts[-1]}"


def _swap_sentences(pairs: list[tuple[str, str]], swap: str) -> str:
    openers = ["First"] + ["Then"] * (len(pairs) - 2) + ["Finally"]
    return " ".join(f"{opener}, {swap.format(a=a, b=b)}." for opener, (a, b) in zip(openers, pairs))


def _object_tracking(rng: random.Random, n_objects: int) -> dict:
    setting, assign, swap, ask, option, pool = rng.choice(_SCENARIOS)
    people = list(_PEOPLE[:n_objects])
    objects = rng.sample(pool, n_objects)
    holding = dict(zip(people, objects))
    pairs = [tuple(rng.sample(people, 2)) for _ in range(n_objects)]  # BBH: one swap per object
    for a, b in pairs:
        holding[a], holding[b] = holding[b], holding[a]
    target = rng.choice(people)
    letters = LETTERS[:n_objects]
    options = {letter: option.format(x=x) for letter, x in zip(letters, objects)}
    assigned = _english_list([assign.format(p=p, x=x) for p, x in zip(people, objects)])
    question = (
        f"{setting.format(people=_english_list(people), assigned=assigned)} "
        f"{_swap_sentences(pairs, swap)} {ask.format(p=target)}\nOptions:\n"
        + "\n".join(f"({letter}) {text}" for letter, text in options.items())
    )
    answer = letters[objects.index(holding[target])]
    return {"question": question, "answer": answer, "choices": letters, "options": options}


# ------------------------------------------------------------- solvers with their steps

_COIN_STEP = re.compile(r"(\S+) (flips|does not flip) the coin\.")
_GROUP = re.compile(r"\(([^()]*)\)")
_OUTER = re.compile(r"\) ([-+*]) \(")


class CoinStep(NamedTuple):
    """One person's turn in a coin-flip question: who, whether they flip, the state after."""

    name: str
    flips: bool
    heads: bool


class ArithmeticStep(NamedTuple):
    """One operation of an arithmetic expression, ``left op right = value``."""

    left: int
    op: str
    right: int
    value: int


def solve_coin_flip(question: str) -> tuple[str, list[CoinStep]]:
    """Answer a coin-flip question (:func:`generate_task` ``"coin_flip"``) turn by turn.

    Parameters
    ----------
    question : str
        ``"A coin is heads up. Ann flips the coin. Bo does not flip the coin. ..."``.

    Returns
    -------
    answer : {"yes", "no"}
        Whether the coin is still heads up.
    steps : list of CoinStep
        Every turn, in order, with the coin's state after it.

    Raises
    ------
    ValueError
        If the question names no turn.

    Examples
    --------
    >>> question = "A coin is heads up. Ann flips the coin. Bo does not flip the coin."
    >>> answer, steps = solve_coin_flip(question)
    >>> answer, [(s.name, s.flips, s.heads) for s in steps]
    ('no', [('Ann', True, False), ('Bo', False, False)])
    """
    heads, steps = True, []
    for name, verb in _COIN_STEP.findall(question):
        flips = verb == "flips"
        heads ^= flips
        steps.append(CoinStep(name, flips, heads))
    if not steps:
        raise ValueError(f"not a coin-flip question: {question!r}")
    return ("yes" if heads else "no"), steps


def _solve_group(numbers: list[int], ops: list[str], steps: list[ArithmeticStep]) -> int:
    # products first, leftmost first; then sums and differences left to right
    numbers, ops = list(numbers), list(ops)
    while "*" in ops:
        i = ops.index("*")
        value = numbers[i] * numbers[i + 1]
        steps.append(ArithmeticStep(numbers[i], "*", numbers[i + 1], value))
        numbers[i : i + 2], ops[i : i + 1] = [value], []
    value = numbers[0]
    for op, number in zip(ops, numbers[1:]):
        new = value + number if op == "+" else value - number
        steps.append(ArithmeticStep(value, op, number, new))
        value = new
    return value


def solve_arithmetic(question: str) -> tuple[int, list[ArithmeticStep]]:
    """Exact value of a multistep-arithmetic question, one operation at a time.

    Parameters
    ----------
    question : str
        ``"((a op b ...) OP (c op d ...)) ="``, two parenthesised groups of integers with
        ``+ - *`` (:func:`generate_task` ``"multistep_arithmetic"`` or
        :func:`arithmetic_items`); ``*`` binds tighter than ``+`` and ``-``.

    Returns
    -------
    value : int
    steps : list of ArithmeticStep
        Both groups' operations, then the outer one.

    Raises
    ------
    ValueError
        If the question is not made of two groups.

    Examples
    --------
    >>> value, steps = solve_arithmetic("((2 * 3) - (1 + -2)) =")
    >>> value, [f"{s.left} {s.op} {s.right} = {s.value}" for s in steps]
    (7, ['2 * 3 = 6', '1 + -2 = -1', '6 - -1 = 7'])
    """
    groups = _GROUP.findall(question)
    outer = _OUTER.search(question)
    if len(groups) != 2 or outer is None:
        raise ValueError(f"not a two-group expression: {question!r}")
    steps: list[ArithmeticStep] = []
    values = []
    for group in groups:
        tokens = group.split(" ")
        values.append(_solve_group([int(t) for t in tokens[0::2]], tokens[1::2], steps))
    return _solve_group(values, [outer.group(1)], steps), steps


def arithmetic_items(n: int, seed: int = 0, *, terms: int = 4, max_abs: int = 9) -> list[dict]:
    """Multistep-arithmetic items of a chosen size.

    BIG-Bench-Hard's expressions have two groups of four numbers in ``[-9, 9]``; smaller
    ones (``terms=2, max_abs=2``: ``"((-1 * 2) + (2 - 0)) ="``) are within reach of tiny
    models. The defaults give exactly ``generate_task("multistep_arithmetic", n, seed)``.

    Parameters
    ----------
    n : int
        Number of items, ``>= 0``.
    seed : int
        Seed; a smaller ``n`` gives a prefix of a larger one.
    terms : int
        Numbers per group, ``>= 1``.
    max_abs : int
        Largest magnitude of a number, ``>= 0``.

    Returns
    -------
    list of dict
        ``"question"``, ``"answer"`` and ``"task"`` (``"multistep_arithmetic"``).

    Raises
    ------
    ValueError
        For a negative ``n``, ``terms < 1`` or ``max_abs < 0``.

    Examples
    --------
    >>> arithmetic_items(1, seed=3) == generate_task("multistep_arithmetic", 1, seed=3)
    True
    >>> arithmetic_items(1, seed=0, terms=2, max_abs=2)[0]["question"]
    '((-1 * 2) - (1 + -1)) ='
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if terms < 1 or max_abs < 0:
        raise ValueError(f"need terms >= 1 and max_abs >= 0, got {terms} and {max_abs}")
    rng = random.Random(f"fusion.eval/multistep_arithmetic/{seed}")
    return [
        {**_multistep_arithmetic(rng, terms, max_abs), "task": "multistep_arithmetic"}
        for _ in range(n)
    ]


# ------------------------------------------------------------------------------ public


def _tracking(n_objects: int) -> Callable[[random.Random], dict]:
    return lambda rng: _object_tracking(rng, n_objects)


# generator name -> (task key used by prompts/cleansing, item factory)
GENERATORS: dict[str, tuple[str, Callable[[random.Random], dict]]] = {
    "coin_flip": ("coin_flip", _coin_flip),
    "last_letters": ("last_letters", _last_letters),
    "multistep_arithmetic": ("multistep_arithmetic", _multistep_arithmetic),
    "dyck_languages": ("dyck_languages", _dyck_languages),
    "object_tracking": ("object_tracking", _tracking(3)),
    "object_tracking_3": ("object_tracking", _tracking(3)),
    "object_tracking_5": ("object_tracking", _tracking(5)),
    "object_tracking_7": ("object_tracking", _tracking(7)),
}


def generate_task(name: str, n: int, seed: int = 0) -> list[dict]:
    """Generate ``n`` items of a synthetic reasoning task.

    Parameters
    ----------
    name : str
        ``"coin_flip"``, ``"last_letters"``, ``"multistep_arithmetic"``,
        ``"dyck_languages"``, ``"object_tracking"`` (3 objects) or
        ``"object_tracking_3"`` / ``"object_tracking_5"`` / ``"object_tracking_7"``.
    n : int
        Number of items, ``>= 0``.
    seed : int
        Seed; the same ``(name, seed)`` always gives the same items, and a smaller ``n``
        gives a prefix of a larger one.

    Returns
    -------
    list of dict
        Items with ``"question"``, ``"answer"`` (exact, as a string), ``"task"`` (the
        task key for :func:`fusion.eval.evaluate`) and, for object tracking,
        ``"choices"`` and ``"options"``.

    Raises
    ------
    ValueError
        For an unknown name or a negative / non-integer ``n``.

    References
    ----------
    - T. Kojima et al., "Large Language Models are Zero-Shot Reasoners", NeurIPS 2022
      (coin flip, last letter concatenation).
    - M. Suzgun et al., "Challenging BIG-Bench Tasks and Whether Chain-of-Thought Can
      Solve Them", 2022 (multistep arithmetic, Dyck languages, tracking shuffled objects).

    Examples
    --------
    >>> item = generate_task("multistep_arithmetic", 1, seed=3)[0]
    >>> sorted(item)
    ['answer', 'question', 'task']
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown generated task {name!r}; expected one of {sorted(GENERATORS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    task, make = GENERATORS[name]
    # A string seed is hashed with SHA-512 by `random`, so it is stable across runs.
    rng = random.Random(f"fusion.eval/{name}/{seed}")
    return [{**make(rng), "task": task} for _ in range(n)]
