"""Examples (prompt/response pairs or chat conversations) and how a model sees them.

Two rules live here because the teacher caches and the training collator must apply them
identically:

* which tokens are *targets* (the response of a pair; the assistant turns of a
  conversation), see :class:`Encoder` and docs/guide/cache.md ("Tokenisation");
* the content hash of an example (:func:`example_sha256`), stored per row in a cache so
  that training can check that item ``i`` really is the text the teacher saw at row ``i``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusion.cache._format import TRUNCATIONS
from fusion.jsonio import iter_jsonl

DataSource = str | os.PathLike | Iterable[Mapping[str, Any]]
IGNORE_INDEX = -100
_EXPECTED = "each example needs 'prompt' and 'response', or 'messages'"


@dataclass(frozen=True)
class Conversation:
    """A multi-turn chat example.

    Attributes
    ----------
    messages : tuple of (str, str)
        ``(role, content)`` per turn, in order. Turns whose role is ``"assistant"`` are
        the targets; every other turn (``"system"``, ``"user"``, ``"tool"``...) is context.
    """

    messages: tuple[tuple[str, str], ...]

    def to_row(self) -> dict[str, Any]:
        """The JSON row this conversation is read from: ``{"messages": [...]}``."""
        return {"messages": [{"role": r, "content": c} for r, c in self.messages]}


#: One example: a ``(prompt, response)`` pair or a :class:`Conversation`.
Example = tuple[str, str] | Conversation


def _conversation(messages: Any, where: str) -> Conversation:
    if not isinstance(messages, list | tuple) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    turns = []
    for j, message in enumerate(messages):
        at = f"{where}, message {j}"
        if not isinstance(message, Mapping):
            raise ValueError(f"{at}: expected an object with 'role' and 'content'")
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise ValueError(
                f"{at}: unsupported key(s) {extra}; a message holds only 'role' and 'content'"
            )
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise ValueError(f"{at}: {key!r} must be a string")
        turns.append((message["role"], message["content"]))
    return Conversation(tuple(turns))


def parse_example(row: Any, where: str = "example") -> Example:
    """Validate one example and return it as a pair or a :class:`Conversation`.

    Parameters
    ----------
    row : mapping, (str, str) or Conversation
        A JSON object with string fields ``prompt`` and ``response``, or with ``messages``
        (a list of ``{"role": str, "content": str}``). Other fields (``index``, ``id``...)
        are ignored. A pair or a conversation is returned as it is.
    where : str
        How error messages name the example (e.g. ``"data.jsonl, line 3"``).

    Returns
    -------
    (str, str) or Conversation

    Raises
    ------
    ValueError
        Naming ``where``: not an object, a missing or non-string field, both forms at once,
        or a malformed message.

    Examples
    --------
    >>> parse_example({"prompt": "2+2=", "response": "4", "index": 7})
    ('2+2=', '4')
    >>> parse_example({"messages": [{"role": "user", "content": "hi"}]}).messages
    (('user', 'hi'),)
    """
    if isinstance(row, Conversation):
        return row
    if isinstance(row, tuple) and len(row) == 2 and all(isinstance(x, str) for x in row):
        return row
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a JSON object ({_EXPECTED})")
    if "messages" in row:
        if "prompt" in row or "response" in row:
            raise ValueError(f"{where}: has both 'messages' and 'prompt'/'response'; use one")
        return _conversation(row["messages"], where)
    for key in ("prompt", "response"):
        if key not in row:
            raise ValueError(f"{where}: missing {key!r} ({_EXPECTED})")
        if not isinstance(row[key], str):
            raise ValueError(f"{where}: {key!r} must be a string, got {type(row[key]).__name__}")
    return row["prompt"], row["response"]


def as_row(example: Example) -> dict[str, Any]:
    """The JSON row of an example: ``{"prompt", "response"}`` or ``{"messages"}``."""
    if isinstance(example, Conversation):
        return example.to_row()
    prompt, response = example
    return {"prompt": prompt, "response": response}


def _canonical(example: Example) -> bytes:
    return json.dumps(
        as_row(example), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    ).encode()


def example_digest(example: Any) -> bytes:
    """Raw 32-byte sha256 of an example's content (see :func:`example_sha256`)."""
    return hashlib.sha256(_canonical(parse_example(example))).digest()


def example_sha256(example: Any) -> str:
    """Content hash of one example, as stored per row in a teacher cache.

    The payload is the compact JSON (sorted keys, UTF-8) of ``{"prompt": ..., "response":
    ...}`` or ``{"messages": [{"content": ..., "role": ...}, ...]}``: fields other than
    those (``index``, ``id``...) and the JSON formatting of the data file do not count.

    Parameters
    ----------
    example : mapping, (str, str) or Conversation
        Anything :func:`parse_example` accepts.

    Returns
    -------
    str
        64 hex digits.

    Examples
    --------
    >>> a = example_sha256({"prompt": "Q", "response": "A", "index": 3})
    >>> a == example_sha256(("Q", "A")) != example_sha256(("Q", "B"))
    True
    """
    return example_digest(example).hex()


def data_sha256(examples: Iterable[Any]) -> str:
    """Content hash of a sequence of examples: sha256 of their concatenated raw digests.

    It is the cache manifest's ``data_sha256`` (and, over a shard's examples, that
    shard's), so it can be recomputed from the ``example_sha256`` rows of the shards.
    """
    h = hashlib.sha256()
    for example in examples:
        h.update(example_digest(example))
    return h.hexdigest()


def _read_jsonl(path: Path) -> list[Example]:
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return [parse_example(obj, f"{path}, line {lineno}") for lineno, obj in iter_jsonl(path)]


def read_examples(data: DataSource) -> tuple[list[Example], str | None]:
    """Load examples from a JSONL file or an iterable of mappings.

    Parameters
    ----------
    data : str, path-like or iterable of mapping
        A JSONL file with one object per line, each holding string fields ``prompt`` and
        ``response`` or a ``messages`` list (see :func:`parse_example`; other fields are
        ignored, blank lines skipped), or the same objects already in memory.

    Returns
    -------
    examples : list of (str, str) or Conversation
        In file order.
    path : str or None
        The file the examples came from, if any.

    Raises
    ------
    FileNotFoundError
        If ``data`` is a path that does not exist.
    ValueError
        If a line is not JSON or is not a valid example (the message names the 1-based
        line number), or if there are no examples at all.
    """
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        examples = _read_jsonl(path)
        source = str(path)
    else:
        examples = [parse_example(obj, f"example {i}") for i, obj in enumerate(data)]
        source = None
    if not examples:
        raise ValueError(f"no examples in {source or 'the data'}: nothing to cache")
    return examples, source


@dataclass(frozen=True)
class Encoded:
    """One example as a model sees it, and which of its tokens are targets.

    Attributes
    ----------
    input_ids : list of int
        The full (possibly truncated) token sequence.
    prompt_length : int
        Number of tokens before the first target span (the prompt of a pair, everything
        before the first assistant turn of a conversation).
    spans : tuple of (int, int)
        Target positions as half-open ``[lo, hi)`` ranges, in order. Position 0 is never a
        target: no earlier position's logits could predict it.
    truncated : bool
        Whether ``max_length`` cut the sequence.
    fixup : bool
        Whether a target boundary fell inside a token of the whole text, so the sequence
        was built from the parts tokenised separately.
    lost : int
        Target tokens removed by truncation.
    """

    input_ids: list[int]
    prompt_length: int
    spans: tuple[tuple[int, int], ...]
    truncated: bool
    fixup: bool
    lost: int = 0

    @property
    def num_targets(self) -> int:
        """Number of target tokens (rows of a cache for this example)."""
        return sum(hi - lo for lo, hi in self.spans)

    @property
    def start(self) -> int:
        """First target position (``max(prompt_length, 1)`` when there is none)."""
        return self.spans[0][0] if self.spans else max(self.prompt_length, 1)

    def target_positions(self) -> list[int]:
        """Every target position, in order; the logits at ``t - 1`` predict target ``t``."""
        return [t for lo, hi in self.spans for t in range(lo, hi)]

    def labels(self, ignore_index: int = IGNORE_INDEX) -> list[int]:
        """Unshifted labels: the token id at target positions, ``ignore_index`` elsewhere.

        This is what Hugging Face causal LMs take as ``labels``; the non-ignored labels
        are, in order, the rows a teacher cache holds for the same example.
        """
        out = [ignore_index] * len(self.input_ids)
        for lo, hi in self.spans:
            out[lo:hi] = self.input_ids[lo:hi]
        return out


def tokenizer_sha256(tokenizer: Any) -> str:
    """Identity of a tokenizer's id space: sha256 of its vocabulary and special tokens.

    The payload is the compact JSON of ``{"vocab": [[token, id], ...] sorted by id,
    "special_tokens": [[token, id], ...] sorted}``. It says what the ids in a cache
    *mean*; it does not cover normalisation or merge rules (a build records those
    effects separately through ``inputs_sha256``).

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        Any tokenizer with ``get_vocab()`` and ``all_special_tokens``.

    Returns
    -------
    str
        64 hex digits.
    """
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    special = sorted(
        (str(tok), int(tokenizer.convert_tokens_to_ids(tok)))
        for tok in tokenizer.all_special_tokens
    )
    payload = json.dumps(
        {"vocab": vocab, "special_tokens": special}, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()


# (text, is_target) pieces whose concatenation is the whole rendered example
Segments = list[tuple[str, bool]]


class Encoder:
    """Turns examples into token sequences with known target positions.

    *Pairs.* With a chat template the prompt is rendered as one user turn with the
    generation prompt, and the whole text as that user turn plus an assistant turn; the
    rendered strings already contain the template's special tokens, so they are tokenised
    with ``add_special_tokens=False``. The targets are everything after the prompt (the
    template's end of turn included). Without a template the whole text is
    ``prompt + response``, preceded by BOS when the tokenizer would add one and followed by
    EOS if ``add_eos``; the targets are the response and EOS.

    *Conversations* (``messages``) need a chat template. The targets are the assistant
    turns: for assistant turn ``i``, the text between the rendering of ``messages[:i]``
    with the generation prompt and the rendering of ``messages[:i + 1]`` (its content and
    end of turn). Every rendering must be a prefix of the next, else the example is
    refused with its index: the template renders earlier turns differently once later ones
    follow, and no honest target position exists.

    The token boundaries are those of the whole text *if* each boundary's prefix tokenises
    to a prefix of the whole text's tokens. Otherwise a merge crossed a boundary (BPE
    joining a prompt's last characters with the response's first ones): the sequence is
    then the parts tokenised separately, so that the target tokens decode to exactly the
    target text. ``on_mismatch="error"`` refuses such examples instead.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    max_length : int or None
        Longest sequence; ``None`` for no limit.
    add_eos : bool
        Without a chat template, append EOS after the response.
    on_mismatch : {"split", "error"}
        See above.
    truncation : {"response", "prompt_left"}
        How a sequence longer than ``max_length`` is cut. ``"response"`` drops its end (the
        end of the response). ``"prompt_left"`` first drops the start of the prompt
        (everything before the first target; BOS stays, and without BOS one token stays to
        predict the first target), then, if the targets alone are still too long, their
        end.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_length: int | None,
        add_eos: bool,
        on_mismatch: str = "split",
        truncation: str = "response",
    ) -> None:
        if on_mismatch not in ("split", "error"):
            raise ValueError(f"on_mismatch must be 'split' or 'error', got {on_mismatch!r}")
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.on_mismatch = on_mismatch
        self.truncation = truncation
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self.prefix: list[int] = []
        self.suffix: list[int] = []
        if not self.chat:
            # Tokenising "" with special tokens shows what the tokenizer would wrap text in.
            bos = tokenizer.bos_token_id
            wrapped = tokenizer("", add_special_tokens=True)["input_ids"]
            if bos is not None and wrapped[:1] == [bos]:
                self.prefix = [bos]
            if add_eos and tokenizer.eos_token_id is not None:
                self.suffix = [tokenizer.eos_token_id]

    @property
    def template(self) -> str:
        """``"chat"`` or ``"plain"``."""
        return "chat" if self.chat else "plain"

    # -- text -------------------------------------------------------------------------

    def _render(self, messages: Sequence[tuple[str, str]], generation: bool, where: str) -> str:
        turns = [{"role": r, "content": c} for r, c in messages]
        try:
            text = self.tokenizer.apply_chat_template(
                turns, tokenize=False, add_generation_prompt=generation
            )
        except Exception as err:  # jinja raises its own types (e.g. TemplateError)
            raise ValueError(f"{where}: the chat template failed: {err}") from None
        return str(text)

    def _segments(self, example: Example, where: str) -> Segments:
        if isinstance(example, Conversation):
            if not self.chat:
                raise ValueError(
                    f"{where}: a 'messages' example needs a tokenizer with a chat template "
                    "(set tokenizer.chat_template, or use 'prompt'/'response' examples)"
                )
            return self._conversation_segments(example.messages, where)
        prompt, response = example
        if not self.chat:
            return [(prompt, False), (response, True)]
        prompt_text = self._render([("user", prompt)], True, where)
        full_text = self._render([("user", prompt), ("assistant", response)], False, where)
        if not full_text.startswith(prompt_text):
            raise ValueError(
                f"{where}: the chat template renders the prompt differently when a response "
                "follows, so the response tokens cannot be located"
            )
        return [(prompt_text, False), (full_text[len(prompt_text) :], True)]

    def _conversation_segments(self, messages: tuple[tuple[str, str], ...], where: str):
        full = self._render(messages, False, where)
        segments: Segments = []
        done = 0  # characters of `full` already assigned to a segment
        for i, (role, _) in enumerate(messages):
            if role != "assistant":
                continue
            before = self._render(messages[:i], True, where)
            through = self._render(messages[: i + 1], False, where)
            if not (full.startswith(through) and through.startswith(before)) or len(before) < done:
                raise ValueError(
                    f"{where}: the chat template renders turns before assistant message {i} "
                    "differently once later turns follow, so its tokens cannot be located"
                )
            segments += [
                (full[done : len(before)], False),
                (full[len(before) : len(through)], True),
            ]
            done = len(through)
        segments.append((full[done:], False))
        return segments

    # -- tokens -----------------------------------------------------------------------

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(x) for x in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def encode(self, examples: Sequence[Any], first_index: int = 0) -> list[Encoded]:
        """Encode a batch of examples (pairs, conversations or rows).

        ``first_index`` only serves error messages (``"example {first_index + i}"``).
        """
        wheres = [f"example {first_index + i}" for i in range(len(examples))]
        segments = [
            self._segments(parse_example(e, w), w) for e, w in zip(examples, wheres, strict=True)
        ]
        fulls = ["".join(text for text, _ in seg) for seg in segments]
        cuts = [np.cumsum([len(text) for text, _ in seg[:-1]]).tolist() for seg in segments]
        # one tokenizer call for the whole texts and every boundary prefix
        heads = [full[:c] for full, cs in zip(fulls, cuts) for c in cs]
        ids = self._ids(fulls + heads)
        full_ids, head_ids = ids[: len(fulls)], iter(ids[len(fulls) :])
        bounds: list[list[int] | None] = []
        for i, (whole, cs) in enumerate(zip(full_ids, cuts)):
            lengths = []
            for _ in cs:
                head = next(head_ids)
                lengths.append(len(head) if whole[: len(head)] == head else -1)
            if -1 in lengths or lengths != sorted(lengths):
                if self.on_mismatch == "error":
                    raise ValueError(
                        f"{wheres[i]}: the prompt's tokens are not a prefix of the full text's"
                    )
                bounds.append(None)
            else:
                bounds.append(lengths)
        split = [i for i, b in enumerate(bounds) if b is None]
        pieces = iter(self._ids([text for i in split for text, _ in segments[i]]))
        out = []
        for i, seg in enumerate(segments):
            if bounds[i] is None:
                parts = [next(pieces) for _ in seg]
                core = [t for part in parts for t in part]
                edges = np.cumsum([0] + [len(p) for p in parts]).tolist()
            else:
                core = full_ids[i]
                edges = [0, *bounds[i], len(core)]
            spans = [(edges[j], edges[j + 1]) for j, (_, target) in enumerate(seg) if target]
            out.append(self._finish(core, spans, bounds[i] is None))
        return out

    def _finish(self, core: list[int], spans: list[tuple[int, int]], fixup: bool) -> Encoded:
        p, ids = len(self.prefix), self.prefix + core + self.suffix
        spans = [(lo + p, hi + p) for lo, hi in spans]
        if self.suffix and spans and spans[-1][1] == p + len(core):
            spans[-1] = (spans[-1][0], len(ids))  # EOS closes the response
        prompt_length = spans[0][0] if spans else len(ids)
        before = _count(spans, len(ids))
        truncated = self.max_length is not None and len(ids) > self.max_length
        if truncated and self.truncation == "prompt_left":
            keep = 0 if self.prefix else 1  # a token left to predict the first target
            drop = min(len(ids) - self.max_length, max(0, prompt_length - p - keep))
            ids = ids[:p] + ids[p + drop :]
            spans = [(lo - drop, hi - drop) for lo, hi in spans]
            prompt_length -= drop
        if truncated and len(ids) > self.max_length:
            ids = ids[: self.max_length]
        kept = tuple(
            (max(lo, 1), min(hi, len(ids))) for lo, hi in spans if min(hi, len(ids)) > max(lo, 1)
        )
        lost = before - sum(hi - lo for lo, hi in kept)
        return Encoded(ids, prompt_length, kept, truncated, fixup, lost)


def _count(spans: Sequence[tuple[int, int]], length: int) -> int:
    """Targets in ``spans`` of a sequence of ``length`` tokens, position 0 excluded."""
    return sum(max(0, min(hi, length) - max(lo, 1)) for lo, hi in spans)


def encoding_stats(encoded: Iterable[Encoded]) -> dict[str, int]:
    """Counts a build records in its manifest's ``stats``.

    Returns
    -------
    dict
        ``truncated_examples`` (cut by ``max_length``), ``responses_lost`` (of those, the
        ones left with no target at all), ``boundary_fixups`` and ``empty_examples`` (no
        target, for whatever reason).
    """
    stats = {"truncated_examples": 0, "responses_lost": 0, "boundary_fixups": 0}
    stats["empty_examples"] = 0
    for e in encoded:
        stats["truncated_examples"] += e.truncated
        stats["responses_lost"] += e.lost > 0 and e.num_targets == 0
        stats["boundary_fixups"] += e.fixup
        stats["empty_examples"] += e.num_targets == 0
    return stats


def warn_truncation(
    stats: Mapping[str, int], num_examples: int, max_length: int | None, truncation: str, who: str
) -> None:
    """Warn (``UserWarning``) when truncation cut examples, with the counts.

    Parameters
    ----------
    stats : mapping
        As returned by :func:`encoding_stats`.
    num_examples : int
    max_length : int or None
    truncation : {"response", "prompt_left"}
    who : str
        Prefix of the message, e.g. ``"fusion.cache"``.
    """
    cut, lost = stats.get("truncated_examples", 0), stats.get("responses_lost", 0)
    if not cut:
        return
    message = (
        f"{who}: max_length={max_length} cut {cut} of {num_examples} examples "
        f"(truncation={truncation!r}); {lost} of them lost every response token"
    )
    if truncation == "response" and lost:
        message += (
            "; truncation='prompt_left' (--truncation prompt_left) drops the start of the "
            "prompt instead, or raise max_length"
        )
    warnings.warn(message, UserWarning, stacklevel=3)


def inputs_digest(encoded: Iterable[Encoded], h: Any) -> None:
    """Feed what the model will see (ids and target spans) into hash object ``h``."""
    for e in encoded:
        head = [len(e.input_ids), e.prompt_length, len(e.spans)]
        h.update(np.asarray(head, dtype=np.int64).tobytes())
        h.update(np.asarray(e.spans, dtype=np.int64).reshape(-1).tobytes())
        h.update(np.asarray(e.input_ids, dtype=np.int64).tobytes())
