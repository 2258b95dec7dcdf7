"""Reading prompt/response examples and turning them into teacher inputs.

The one subtle step is the prompt/response boundary: the cache stores one entry per
*response* token, so we must know exactly where the response starts in the teacher's
token sequence. See :class:`Encoder` and docs/guide/cache.md ("Tokenisation").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusion.jsonio import iter_jsonl

DataSource = str | os.PathLike | Iterable[Mapping[str, Any]]


def _validate_example(obj: Any, where: str) -> tuple[str, str]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected a JSON object with 'prompt' and 'response'")
    for key in ("prompt", "response"):
        if key not in obj:
            raise ValueError(
                f"{where}: missing {key!r} (each example needs 'prompt' and 'response')"
            )
        if not isinstance(obj[key], str):
            raise ValueError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__}")
    return obj["prompt"], obj["response"]


def _read_jsonl(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return [_validate_example(obj, f"{path}, line {lineno}") for lineno, obj in iter_jsonl(path)]


def read_examples(data: DataSource) -> tuple[list[tuple[str, str]], str | None]:
    """Load ``(prompt, response)`` pairs from a JSONL file or an iterable of mappings.

    Parameters
    ----------
    data : str, path-like or iterable of mapping
        A JSONL file with one object per line holding string fields ``prompt`` and
        ``response`` (other fields are ignored, blank lines skipped), or the same
        objects already in memory.

    Returns
    -------
    examples : list of (str, str)
        The pairs, in file order.
    path : str or None
        The file the examples came from, if any.

    Raises
    ------
    FileNotFoundError
        If ``data`` is a path that does not exist.
    ValueError
        If a line is not JSON or lacks a string ``prompt``/``response`` (the message
        names the 1-based line number), or if there are no examples at all.
    """
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        examples = _read_jsonl(path)
        source = str(path)
    else:
        examples = [_validate_example(obj, f"example {i}") for i, obj in enumerate(data)]
        source = None
    if not examples:
        raise ValueError(f"no examples in {source or 'the data'}: nothing to cache")
    return examples, source


def data_sha256(examples: Sequence[tuple[str, str]]) -> str:
    """Hash of the examples' content, independent of JSON formatting and extra fields.

    Each example contributes ``json.dumps([prompt, response])`` plus a newline, so the same
    examples read from a file or passed in memory hash the same.
    """
    h = hashlib.sha256()
    for pair in examples:
        h.update(json.dumps(list(pair), ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class Encoded:
    """One example as the teacher sees it.

    Attributes
    ----------
    input_ids : list of int
        The full (possibly truncated) token sequence fed to the teacher.
    prompt_length : int
        Number of tokens before the first response token.
    start : int
        Position of the first response token that has a prediction, ``max(prompt_length, 1)``:
        position 0 has no previous position whose logits could predict it.
    truncated : bool
        Whether ``max_length`` cut the sequence.
    fixup : bool
        Whether the prompt's tokens were not a prefix of the full text's tokens, so the
        sequence was built from the two parts tokenised separately.
    """

    input_ids: list[int]
    prompt_length: int
    start: int
    truncated: bool
    fixup: bool

    @property
    def num_targets(self) -> int:
        """Number of response tokens with a cached prediction."""
        return max(0, len(self.input_ids) - self.start)


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


class Encoder:
    """Turns ``(prompt, response)`` pairs into teacher inputs with a known boundary.

    With a chat template the prompt is rendered as one user turn with the generation
    prompt, and the full text as that user turn plus an assistant turn; the rendered
    strings already contain the template's special tokens, so they are tokenised with
    ``add_special_tokens=False``. Without a template the full text is ``prompt + response``,
    preceded by BOS when the tokenizer would add one and followed by EOS if ``add_eos``.

    The boundary is the length of the prompt's tokens *if* they are a prefix of the full
    text's tokens. Otherwise a merge crossed the boundary (BPE joining the prompt's last
    characters with the response's first ones): the sequence is then the prompt's tokens
    followed by the tokens of the rest of the text, so that the response tokens decode to
    exactly the response. ``on_mismatch="error"`` refuses such examples instead.
    """

    def __init__(
        self, tokenizer: Any, *, max_length: int | None, add_eos: bool, on_mismatch: str = "split"
    ) -> None:
        if on_mismatch not in ("split", "error"):
            raise ValueError(f"on_mismatch must be 'split' or 'error', got {on_mismatch!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.on_mismatch = on_mismatch
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

    def _texts(self, prompt: str, response: str) -> tuple[str, str]:
        if not self.chat:
            return prompt, prompt + response
        user = {"role": "user", "content": prompt}
        assistant = {"role": "assistant", "content": response}
        render = self.tokenizer.apply_chat_template
        prompt_text = render([user], tokenize=False, add_generation_prompt=True)
        full_text = render([user, assistant], tokenize=False)
        return prompt_text, full_text

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return list(self.tokenizer(texts, add_special_tokens=False)["input_ids"])

    def encode(self, pairs: Sequence[tuple[str, str]], first_index: int = 0) -> list[Encoded]:
        """Encode a batch of pairs; ``first_index`` only serves error messages."""
        texts = [self._texts(p, r) for p, r in pairs]
        prompt_ids = self._ids([p for p, _ in texts])
        full_ids = self._ids([f for _, f in texts])
        fixups = [i for i, (p, f) in enumerate(zip(prompt_ids, full_ids)) if f[: len(p)] != p]
        for i in fixups:
            prompt_text, full_text = texts[i]
            where = f"example {first_index + i}"
            if self.on_mismatch == "error":
                raise ValueError(
                    f"{where}: the prompt's tokens are not a prefix of the full text's"
                )
            if not full_text.startswith(prompt_text):
                raise ValueError(
                    f"{where}: the chat template renders the prompt differently when a response "
                    "follows, so the response tokens cannot be located"
                )
        rests = self._ids([texts[i][1][len(texts[i][0]) :] for i in fixups])
        for i, rest in zip(fixups, rests):
            full_ids[i] = list(prompt_ids[i]) + list(rest)
        fixed = set(fixups)
        return [
            self._finish(list(p), list(f), i in fixed)
            for i, (p, f) in enumerate(zip(prompt_ids, full_ids))
        ]

    def _finish(self, prompt_ids: list[int], full_ids: list[int], fixup: bool) -> Encoded:
        ids = self.prefix + full_ids + self.suffix
        prompt_length = len(self.prefix) + len(prompt_ids)
        truncated = self.max_length is not None and len(ids) > self.max_length
        if truncated:
            ids = ids[: self.max_length]
        return Encoded(ids, prompt_length, max(prompt_length, 1), truncated, fixup)


def inputs_digest(encoded: Iterable[Encoded], h: Any) -> None:
    """Feed what the teacher will see (ids and boundaries) into hash object ``h``."""
    for e in encoded:
        h.update(np.asarray([len(e.input_ids), e.prompt_length], dtype=np.int64).tobytes())
        h.update(np.asarray(e.input_ids, dtype=np.int64).tobytes())
