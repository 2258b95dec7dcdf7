"""Answer cleansing: from a model's completion to the string compared with the gold answer.

Two modes share one entry point, :func:`cleanse_answer`:

``"paper"``
    The rules of the official Zero-shot-CoT code, reproduced exactly (see the module
    functions ``_paper_*``). Scores in this mode are comparable with the paper's tables.
``"robust"``
    Extraction that survives what real models write: Unicode digits and minus signs,
    thousands separators, ``2.0`` for ``2``, number words, ``\\boxed{}``, ``(B)`` next to
    capitalised words, option text instead of the letter, a run-away next ``Q:``. Every
    rule is listed in ``docs/guide/eval.md``.

References
----------
- T. Kojima, S. S. Gu, M. Reid, Y. Matsuo, Y. Iwasawa, "Large Language Models are
  Zero-Shot Reasoners", NeurIPS 2022, arXiv:2205.11916 (answer cleansing: Appendix A.5
  and ``answer_cleansing`` in github.com/kojima-takeshi188/zero_shot_cot).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation

from fusion.eval.prompts import FEW_SHOT_ANSWER_PHRASE, check_method
from fusion.eval.spec import AnswerKind, get_spec, resolve_choices

MODES: tuple[str, ...] = ("paper", "robust")

#: longest completion cleansed, in characters: generation budgets give a few thousand at
#: most; the bound keeps every rule's time bounded (all are linear in the text's length)
MAX_TEXT_CHARS = 100_000
#: longest number canonicalised, in digits (and largest decimal exponent, ``1e999999999``
#: would otherwise be expanded into a billion digits); longer ones are not numbers here
MAX_DIGITS = 1_000


def check_mode(mode: str) -> str:
    """Validate a cleansing mode (``"paper"`` or ``"robust"``); return it unchanged."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {list(MODES)}")
    return mode


def cleanse_answer(
    text: str,
    task: str,
    method: str = "zero_shot_cot",
    mode: str = "paper",
    *,
    choices: str | None = None,
    options: Mapping[str, str] | None = None,
) -> str:
    """Extract the answer from a model completion.

    Parameters
    ----------
    text : str
        The completion that should contain the answer: the stage-2 output for
        ``zero_shot_cot``, the only output for the other methods.
    task : str
        Task key, e.g. ``"gsm8k"``, ``"aqua"``, ``"coin_flip"`` (see
        :data:`fusion.eval.spec.TASKS`).
    method : {"zero_shot", "zero_shot_cot", "few_shot", "few_shot_cot"}
        Zero-shot methods take the first candidate. Few-shot methods take the text after
        the last ``"The answer is"`` and its first candidate, or the last candidate of the
        whole text when the phrase is absent.
    mode : {"paper", "robust"}
        ``"paper"`` reproduces the official rules exactly; ``"robust"`` applies the
        documented improvements.
    choices : str, optional
        Option letters of a multiple-choice item (e.g. ``"ABCDE"`` for five-object
        tracking); defaults to the task's letters (``"ABC"`` for ``object_tracking``).
    options : mapping of str to str, optional
        Letter to option text; ``mode="robust"`` maps an answer given as text back to its
        letter.

    Returns
    -------
    str
        The cleansed answer, ``""`` when nothing matches.

    Raises
    ------
    ValueError
        For an unknown task, method or mode, malformed ``choices``, or a ``text``
        longer than :data:`fusion.eval.cleansing.MAX_TEXT_CHARS` characters (cleansing
        time is linear in the length).
    TypeError
        If ``text`` is not a string.

    References
    ----------
    - T. Kojima et al., "Large Language Models are Zero-Shot Reasoners", NeurIPS 2022.

    Examples
    --------
    >>> cleanse_answer(" 1,234.", "gsm8k")
    '1234'
    >>> cleanse_answer(" (B) Because it rains.", "aqua")
    'B'
    >>> cleanse_answer(" Because it rains, (B).", "aqua", mode="robust")
    'B'
    """
    kind = get_spec(task).kind
    check_method(method)
    check_mode(mode)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"the completion holds {len(text):,} characters, more than MAX_TEXT_CHARS="
            f"{MAX_TEXT_CHARS:,}: cap the generation budget (max_new_tokens), or cleanse a slice"
        )
    letters = resolve_choices(task, choices) if kind == "choice" else ""
    few_shot = method.startswith("few_shot")
    if mode == "paper":
        return _paper(text, kind, few_shot, letters)
    return _robust(text, kind, few_shot, letters, options or {})


def is_correct(pred: str, gold: str, task: str, mode: str = "paper") -> bool:
    """Compare a cleansed prediction with a gold answer.

    Parameters
    ----------
    pred : str
        Output of :func:`cleanse_answer` in the same ``mode``.
    gold : str
        Gold answer as stored in an item (``"24"``, ``"B"``, ``"yes"``, ``"] } ]"``).
    task : str
        Task key.
    mode : {"paper", "robust"}
        ``"paper"``: exact string equality with the stripped gold, as in the paper
        (Dyck answers compared without spaces, matching the free-form rule). ``"robust"``:
        equality after canonicalising both sides (numbers by value, letters and yes/no
        case-insensitively).

    Returns
    -------
    bool

    Raises
    ------
    TypeError
        If ``pred`` or ``gold`` is not a string (an item without a gold answer is a data
        error, not a wrong prediction).
    """
    kind = get_spec(task).kind
    check_mode(mode)
    for name, value in (("pred", pred), ("gold", gold)):
        if not isinstance(value, str):
            raise TypeError(
                f"{name} must be a str, got {type(value).__name__}"
                + (": the item has no gold answer" if name == "gold" and value is None else "")
            )
    if mode == "paper":
        expected = gold.strip()
        if kind == "brackets":
            expected = _strip_free_form(expected)
        return pred == expected
    canon = _CANONICAL[kind]
    return pred != "" and canon(pred) == canon(gold)


# --------------------------------------------------------------------------- paper mode


def _paper(text: str, kind: AnswerKind, few_shot: bool, letters: str) -> str:
    found_phrase = False
    if few_shot:
        pieces = text.split(FEW_SHOT_ANSWER_PHRASE)
        found_phrase = len(pieces) > 1
        text = pieces[-1]
    candidates = _PAPER_CANDIDATES[kind](text, letters)
    if not candidates:
        return ""
    # Few-shot outputs without the phrase have no anchor, so the paper bets on the end.
    pred = candidates[-1] if few_shot and not found_phrase else candidates[0]
    return pred[:-1] if pred.endswith(".") else pred


def _paper_numeric(text: str, letters: str) -> list[str]:
    # All commas go, including list separators: "2, 3" becomes "23" (a paper quirk).
    return re.findall(r"-?\d+\.?\d*", text.replace(",", ""))


def _paper_choice(text: str, letters: str) -> list[str]:
    # Case-sensitive capitals anywhere, so "Because" yields "B" (a paper quirk).
    return re.findall(f"[{letters}]", text)


def _paper_yesno(text: str, letters: str) -> list[str]:
    spaced = re.sub(r"[\"'\n.\s:,]", " ", text.lower())
    return [tok for tok in spaced.split(" ") if tok in ("yes", "no")]


def _strip_free_form(text: str) -> str:
    return re.sub(r"[\"'\n.\s]", "", text)


def _paper_free_form(text: str, letters: str) -> list[str]:
    # Quotes, periods and every whitespace character are deleted, not just stripped.
    return [_strip_free_form(text)]


_PAPER_CANDIDATES: dict[str, Callable[[str, str], list[str]]] = {
    "numeric": _paper_numeric,
    "choice": _paper_choice,
    "yesno": _paper_yesno,
    "letters": _paper_free_form,
    # No paper rule exists for Dyck completions; the free-form rule is the closest.
    "brackets": _paper_free_form,
}


# -------------------------------------------------------------------------- robust mode

_MINUS_SIGNS = "\u2212\u2012\u2013\ufe63\uff0d"  # minus, figure dash, en dash, small/full-width
_QUOTES = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"}


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(f"[{_MINUS_SIGNS}]", "-", text)
    for fancy, plain in _QUOTES.items():
        text = text.replace(fancy, plain)
    # Models continue past their answer and invent the next exemplar; it is not an answer.
    return re.split(r"\n\s*Q:", text, maxsplit=1)[0]


def _answer_region(text: str, few_shot: bool) -> tuple[str, bool]:
    """The text to search and whether its first candidate is the answer."""
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
    if boxed:
        return boxed[-1], True
    if few_shot:
        pieces = re.split(r"the answer is", text, flags=re.IGNORECASE)
        if len(pieces) > 1:
            return pieces[-1], True
        return text, False
    return text, True


def _robust(
    text: str, kind: AnswerKind, few_shot: bool, letters: str, options: Mapping[str, str]
) -> str:
    region, anchored = _answer_region(_normalise(text), few_shot)
    if kind == "numeric":
        return _robust_numeric(region, anchored)
    if kind == "choice":
        return _robust_choice(region, anchored, letters, options)
    if kind == "yesno":
        return _pick(re.findall(r"\b(yes|no)\b", region.lower()), anchored)
    if kind == "letters":
        return _robust_letters(region, anchored)
    return _robust_brackets(region, anchored)


def _pick(candidates: list[str], anchored: bool) -> str:
    if not candidates:
        return ""
    return candidates[0] if anchored else candidates[-1]


# A sign counts only where it cannot be a binary minus or a hyphen ("5-3", "COVID-19").
_NUMBER = re.compile(r"(?:(?<![0-9A-Za-z)])-)?\d+(?:\.\d+)?")
_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_NUMBER = re.compile(
    rf"\b(?:({'|'.join(_TENS)})(?:[\s-]({'|'.join(_UNITS[1:10])}))?|({'|'.join(_UNITS)}))\b",
    re.IGNORECASE,
)


def _words_to_digits(text: str) -> str:
    def value(m: re.Match[str]) -> str:
        tens, unit, single = (g.lower() if g else g for g in m.groups())
        if single:
            return str(_UNITS.index(single))
        return str(20 + 10 * _TENS.index(tens) + (_UNITS.index(unit) if unit else 0))

    return _WORD_NUMBER.sub(value, text)


def _numbers(segment: str) -> list[str]:
    # An equation's result is what follows its last "=" ("3 + 4 = 7" answers 7).
    if "=" in segment:
        after = _NUMBER.findall(segment.rsplit("=", 1)[1])
        if after:
            return after
    return _NUMBER.findall(segment)


def _robust_numeric(region: str, anchored: bool) -> str:
    region = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", region)  # thousands separators only
    region = re.sub(r"\b(?:minus|negative)\s+(?=\d)", "-", region, flags=re.IGNORECASE)
    if not _NUMBER.search(region):
        region = _words_to_digits(region)
    segments = re.split(r"(?<=[.!?;])\s+|\n", region)
    for segment in segments if anchored else reversed(segments):
        found = _numbers(segment)
        if found:
            return canonical_number(_pick(found, anchored)) or ""
    return ""


def canonical_number(text: str) -> str | None:
    """Canonical decimal string of a number, or ``None`` if ``text`` is not one.

    Parameters
    ----------
    text : str
        E.g. ``"2.0"``, ``"-0"``, ``"1,000"``, ``"- 5"``, ``"3.50"``.

    Returns
    -------
    str or None
        ``"2"``, ``"0"``, ``"1000"``, ``"-5"``, ``"3.5"``: no exponent, no trailing zeros,
        no thousands separators. ``None`` also for a number of more than
        :data:`fusion.eval.cleansing.MAX_DIGITS` digits or written with an exponent
        beyond ``±MAX_DIGITS`` (its decimal expansion, not the parse, is what would take
        unbounded time).
    """
    if len(text) > 4 * MAX_DIGITS:  # room for separators and spaces; bounds the regex too
        return None
    cleaned = re.sub(r"[\s,]", "", text).rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value.is_zero():
        return "0"
    if len(value.as_tuple().digits) > MAX_DIGITS or abs(value.adjusted()) >= MAX_DIGITS:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    # not value.normalize(): it rounds to the context's 28 digits
    return format(value, "f").rstrip("0")


def _robust_choice(region: str, anchored: bool, letters: str, options: Mapping[str, str]) -> str:
    # Tiers from most to least explicit; "(B)" beats a bare "B", which beats option text.
    for finder in (_parenthesised, _bare_letters, _option_text):
        found = finder(region, letters, options)
        if found:
            return _pick(found, anchored)
    return ""


def _parenthesised(region: str, letters: str, options: Mapping[str, str]) -> list[str]:
    return re.findall(rf"\(([{letters}])\)", region)


_ARTICLE_FOLLOWERS = re.compile(r"\s+(?!(?:is|was|and|or)\b)[a-z]")


def _bare_letters(region: str, letters: str, options: Mapping[str, str]) -> list[str]:
    found = []
    for m in re.finditer(rf"(?<![A-Za-z0-9'])([{letters}])(?![A-Za-z0-9'])", region):
        # "A coin", "A new one": the English article, not option A.
        if m.group(1) == "A" and _ARTICLE_FOLLOWERS.match(region, m.end()):
            continue
        found.append(m.group(1))
    return found


def _option_text(region: str, letters: str, options: Mapping[str, str]) -> list[str]:
    hits = []
    for letter, option in options.items():
        if letter not in letters or not option.strip():
            continue
        pattern = rf"(?<!\w){re.escape(option.strip())}(?!\w)"
        hits += [(m.start(), -len(option), letter) for m in re.finditer(pattern, region, re.I)]
    # At one position the longer option wins ("red ball" over "red").
    ordered, seen = [], set()
    for start, _, letter in sorted(hits):
        if start not in seen:
            seen.add(start)
            ordered.append(letter)
    return ordered


# A spelled-out run ("n, k, e, y", "n k e y") is tried before a plain word at each position.
_LETTER_TOKEN = re.compile(r"(?<![A-Za-z])[A-Za-z](?:[\s,;-]+[A-Za-z](?![A-Za-z]))+|[A-Za-z]+")


def _robust_letters(region: str, anchored: bool) -> str:
    # A quoted answer ('"nkey".') is the most explicit form; fall back to tokens.
    candidates = re.findall(r'"([^"\n]+)"', region) or _LETTER_TOKEN.findall(region)
    return re.sub(r"[^A-Za-z]", "", _pick(candidates, anchored)).lower()


def _robust_brackets(region: str, anchored: bool) -> str:
    runs = re.findall(r"[\[\](){}<>](?:[\s,]*[\[\](){}<>])*", region)
    closing = [run for run in runs if re.search(r"[\])}>]", run)]
    return " ".join(re.findall(r"[\[\](){}<>]", _pick(closing, anchored)))


# --------------------------------------------------------------- robust canonical forms


def _canon_numeric(text: str) -> str:
    return canonical_number(text.replace("\u2212", "-")) or text.strip()


_CANONICAL: dict[str, Callable[[str], str]] = {
    "numeric": _canon_numeric,
    "choice": lambda s: s.strip().strip("()").strip().upper(),
    "yesno": lambda s: s.strip().rstrip(".").lower(),
    "letters": lambda s: re.sub(r"[^A-Za-z]", "", s).lower(),
    "brackets": lambda s: re.sub(r"\s", "", s),
}
