r"""The pivot's examples and batches, as :class:`fusion.training.FusionTrainer` reads them.

:class:`PromptResponseDataset`
    The pivot's examples, ``{"index", "prompt", "response"}`` in data order. Example ``i``
    is line ``i`` of the JSONL file the teacher caches were built from.
:class:`FusionCollator`
    Tokenises and right-pads a batch with the *pivot's* tokenizer (labels only on the
    response tokens, exactly the tokenisation rule of :mod:`fusion.cache`) and attaches
    every teacher's entries for the same examples: a cache's rows
    (:func:`fusion.cache.collate`), or an online teacher's own tokens.
:func:`split_batch`, :func:`response_positions`
    A collated batch back into model inputs, labels and teacher entries; the next-token
    targets and the response positions the losses compare.

Every name here is also importable from :mod:`fusion.training`, its home before the split.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch.nn import functional as F

from fusion.cache import (
    Encoder,
    TeacherCache,
    as_row,
    collate,
    data_sha256,
    read_examples,
)
from fusion.onpolicy import (
    PROMPTS_KEY,
)
from fusion.teachers import OnlineInputs, OnlineTeacher, Teacher, resolve_teacher
from fusion.types import TopK

__all__ = [
    "IGNORE_INDEX",
    "ULD_TOP_K",
    "FusionBatch",
    "FusionCollator",
    "PromptResponseDataset",
    "online_keys",
    "prompt_of",
    "response_positions",
    "split_batch",
    "teacher_keys",
]

IGNORE_INDEX = -100
#: the default number of entries of ULD's top-k variant when no teacher is a cache
ULD_TOP_K = 50


def teacher_keys(j: int) -> tuple[str, str, str]:
    """Batch keys of cached teacher ``j``: ``(logprobs, indices, mask)``.

    Teachers travel as flat tensors rather than :class:`fusion.TopK` tuples because the
    Trainer and accelerate rebuild tuples when moving a batch to the device, which a
    named tuple does not survive.
    """
    return f"teacher_{j}_logprobs", f"teacher_{j}_indices", f"teacher_{j}_mask"


def online_keys(j: int) -> tuple[str, str, str, str]:
    """Batch keys of online teacher ``j``: the fields of :class:`fusion.teachers.OnlineInputs`."""
    return tuple(f"teacher_{j}_{name}" for name in OnlineInputs._fields)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


class PromptResponseDataset(torch.utils.data.Dataset):
    """Training examples in data order, as :class:`FusionCollator` consumes them.

    Parameters
    ----------
    data : str, path-like or iterable of mapping
        A JSONL file (the file the teacher caches were built from), or the same objects in
        memory: ``{"prompt", "response"}`` pairs or ``{"messages": [...]}`` conversations
        (loss on the assistant turns), read by :func:`fusion.cache.read_examples`.
    with_index : bool
        Give each item its position as ``"index"``; the collator attaches cache rows only
        to indexed items (evaluation data without caches has none).

    Attributes
    ----------
    examples : list of (str, str) or fusion.cache.Conversation
        The examples.
    """

    def __init__(self, data: str | os.PathLike | Iterable[Mapping[str, Any]], *, with_index=True):
        self.examples, _ = read_examples(data)
        self.with_index = with_index

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = as_row(self.examples[i])
        if self.with_index:
            item["index"] = int(i)
        return item

    def data_sha256(self) -> str:
        """The content hash a teacher cache records for the same examples."""
        return data_sha256(self.examples)


def prompt_of(feature: Mapping[str, Any]) -> str:
    """The prompt text of a ``{"prompt", "response"}`` item (on-policy completion needs it)."""
    if not isinstance(feature.get("prompt"), str):
        raise ValueError(
            "on-policy distillation completes prompts: every item needs a string 'prompt' "
            f"(conversations are not supported), got keys {sorted(feature)}"
        )
    return feature["prompt"]


def _examples(features: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows themselves: :class:`fusion.cache.Encoder` reads pairs and conversations."""
    return list(features)


class FusionCollator:
    """Pivot tokens plus every teacher's entries for a batch of examples.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        The pivot's tokenizer. Prompt and response are joined exactly as
        :func:`fusion.cache.build` joins them for a teacher (chat template when the
        tokenizer has one, else ``prompt + response`` with BOS/EOS), so the pivot's labelled
        span is the same text as each teacher's rows.
    teachers : sequence of TeacherCache, OnlineTeacher or path
        Teacher caches built over the same examples, in the same order, and online
        teachers (see :func:`fusion.teachers.resolve_teacher`).
    max_length : int, optional
        Longest pivot sequence; longer ones lose the end of their response.
    add_eos : bool
        Without a chat template, append EOS so the pivot learns to stop (as the caches do
        by default).
    truncation : {"response", "prompt_left"}
        How a sequence longer than ``max_length`` is cut (:class:`fusion.cache.Encoder`);
        use the caches' choice.
    teacher_entries : int, optional
        Cached entries passed on per position (the first ones, i.e. the largest); default
        all of them. Must not exceed any cache's ``k``.
    pad_to_multiple_of : int, optional
        Round the padded pivot length up (tensor-core friendly shapes on GPUs).

    Notes
    -----
    ``__call__`` returns ``input_ids``, ``attention_mask`` (right padding) and ``labels``
    (``-100`` on prompt and padding, unshifted as Hugging Face models expect), ``index``
    when the items have one, and per teacher ``j``:

    * a cache: the keys of :func:`teacher_keys`, ``(B, T_j, n)`` logprobs in the cache
      dtype, int64 indices and a ``(B, T_j)`` bool mask of real rows (indexed items only);
    * an online teacher: the keys of :func:`online_keys`, the teacher's own tokens of the
      same texts (it runs in the training step).

    Row ``t`` of teacher ``j`` predicts the teacher's ``t``-th response token, and the
    pivot's ``t``-th labelled position predicts its own ``t``-th response token.

    With ``keep_prompts = True`` (set by a trainer doing on-policy distillation) the batch
    also carries ``prompts``, the items' prompt texts, which the pivot then completes.
    """

    def __init__(
        self,
        tokenizer: Any,
        teachers: Sequence[Any] = (),
        *,
        max_length: int | None = None,
        add_eos: bool = True,
        truncation: str = "response",
        teacher_entries: int | None = None,
        pad_to_multiple_of: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.teachers: list[Teacher] = [resolve_teacher(t) for t in teachers]
        self.encoder = Encoder(
            tokenizer, max_length=max_length, add_eos=add_eos, truncation=truncation
        )
        self.teacher_entries = teacher_entries
        self.pad_to_multiple_of = pad_to_multiple_of
        self.keep_prompts = False
        if teacher_entries is not None and teacher_entries < 1:
            raise ValueError(f"teacher_entries must be >= 1, got {teacher_entries}")
        for j, teacher in enumerate(self.teachers):
            if isinstance(teacher, TeacherCache) and teacher_entries is not None:
                if teacher_entries > teacher.k:
                    raise ValueError(
                        f"teacher {j} caches k={teacher.k} entries, fewer than "
                        f"teacher_entries={teacher_entries}"
                    )
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("FusionCollator needs at least one example")
        batch = self._pivot(features)
        batch.update(self.teacher_fields(features, _examples(features)))
        if self.keep_prompts:  # on-policy distillation completes these
            batch[PROMPTS_KEY] = [prompt_of(f) for f in features]
        return batch

    def teacher_fields(
        self, features: Sequence[Mapping[str, Any]], examples: Sequence[Any]
    ) -> dict[str, torch.Tensor]:
        """Every teacher's batch keys for these items (their texts are ``examples``)."""
        indexed = ["index" in f for f in features]
        if any(indexed) and not all(indexed):
            raise ValueError("a batch mixes examples with and without 'index'")
        out: dict[str, torch.Tensor] = {}
        index = None
        if all(indexed):
            index = torch.tensor([int(f["index"]) for f in features], dtype=torch.long)
            out["index"] = index
        for j, teacher in enumerate(self.teachers):
            if isinstance(teacher, OnlineTeacher):
                out.update(zip(online_keys(j), teacher.encode(examples)))
            elif index is not None:
                out.update(self._cached(j, teacher, index))
        return out

    def _pivot(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = self.encoder.encode(_examples(features))
        length = max(len(e.input_ids) for e in encoded)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(encoded), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        labels = torch.full((len(encoded), length), IGNORE_INDEX, dtype=torch.long)
        for b, e in enumerate(encoded):
            n = len(e.input_ids)
            ids[b, :n] = torch.tensor(e.input_ids, dtype=torch.long)
            mask[b, :n] = 1
            # the same targets a cache stores, in the same order (its rows)
            labels[b, :n] = torch.tensor(e.labels(IGNORE_INDEX), dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def _cached(self, j: int, cache: TeacherCache, index: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = [cache[int(i)] for i in index]
        # at least one row, so that a batch whose responses were all truncated away keeps
        # well-formed (B, T, n) tensors (its mask is all False)
        longest = max(1, max(r.logprobs.shape[0] for r in rows))
        padded = collate(rows, pad_to=longest)
        n = self.teacher_entries or cache.k
        fields = (padded.topk.logprobs[..., :n], padded.topk.indices[..., :n], padded.mask)
        return dict(zip(teacher_keys(j), fields))


class FusionBatch(NamedTuple):
    """A collated batch split into what the pivot and each teacher need.

    Attributes
    ----------
    inputs : dict
        The pivot's model inputs (``input_ids``, ``attention_mask``, ``position_ids``
        when present).
    labels : tensor ``(B, L)``
        Unshifted labels.
    teachers : list
        Per teacher: a cached :class:`fusion.TopK` ``(B, T_j, n)``, an online teacher's
        :class:`fusion.teachers.OnlineInputs`, or ``None`` when the batch carries nothing
        for it (e.g. evaluation items without an index).
    masks : list
        ``(B, T_j)`` bool masks of the cached teachers, ``None`` for the others.
    """

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    teachers: list[Any]
    masks: list[torch.Tensor | None]


_MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def split_batch(batch: Mapping[str, torch.Tensor], num_teachers: int | None = None) -> FusionBatch:
    """Separate a :class:`FusionCollator` batch into model inputs, labels and teachers.

    Parameters
    ----------
    batch : mapping
        A collated batch (possibly moved to a device).
    num_teachers : int, optional
        How many teachers to look for; by default as many consecutive ones as the batch
        holds.

    Returns
    -------
    FusionBatch
    """
    inputs = {key: batch[key] for key in _MODEL_INPUTS if key in batch}
    teachers: list[Any] = []
    masks: list[torch.Tensor | None] = []
    j = 0
    while num_teachers is None or j < num_teachers:
        cached, online = teacher_keys(j), online_keys(j)
        if cached[0] in batch:
            logprobs, indices, mask = (batch[key] for key in cached)
            teachers.append(TopK(logprobs, indices))
            masks.append(mask)
        elif online[0] in batch:
            teachers.append(OnlineInputs(*(batch[key] for key in online)))
            masks.append(None)
        elif num_teachers is None:
            break
        else:
            teachers.append(None)
            masks.append(None)
        j += 1
    return FusionBatch(inputs, batch["labels"], teachers, masks)


def response_positions(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits that predict a label, with their targets, in order, per sequence.

    The logits at position ``t`` predict the label at ``t + 1``. Row ``b`` of the result
    holds sequence ``b``'s predicting positions first, in their original order, then
    filler whose target is ``-100``. The losses only look at positions with a target and
    keep their order (ULD pairs the j-th of the pivot with the j-th of a teacher), so they
    are unchanged; but top-k, softmax and cross-entropy then skip the prompt and padding.
    When most positions predict something, the logits are used as they are (no copy).

    Parameters
    ----------
    logits : tensor ``(B, L, V)``
    labels : long tensor ``(B, L)``
        Unshifted, ``-100`` where there is no target.

    Returns
    -------
    logits : tensor ``(B, R, V)``
        ``R`` = the most predicting positions of any sequence (or ``L``).
    targets : long tensor ``(B, R)``
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = targets != IGNORE_INDEX
    width = max(int(keep.sum(dim=1).max()), 1)
    if 2 * width > labels.shape[1]:
        return logits, targets
    # a stable sort puts each row's kept positions first without reordering them
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :width]
    picked = torch.gather(logits, 1, order[..., None].expand(-1, -1, logits.shape[-1]))
    return picked, torch.gather(targets, 1, order)
