r"""GLD/ULD fusion inside TRL's :class:`~trl.SFTTrainer`.

:class:`FusionSFTTrainer` is a small subclass of TRL's ``SFTTrainer`` for users who
already train with TRL: the dataset, its preparation (tokenisation, completion-only
labels, truncation), the collator, PEFT and every ``SFTConfig`` option stay TRL's; only
the loss changes, to :class:`fusion.FusionLoss` over cached or online teachers, through
the public ``compute_loss`` hook that TRL recommends overriding (its
``compute_loss_func`` receives no inputs, so a teacher with another tokenizer could not
see the text). Normalisation, logging and evaluation are those of
:class:`fusion.FusionTrainer` (:class:`fusion.trainer_mixin.FusionTrainingMixin`).

>>> from fusion.trl import FusionSFTTrainer                                 # doctest: +SKIP
>>> trainer = FusionSFTTrainer(pivot, SFTConfig("out"), train_dataset=dataset,
...                            teachers=[("cache/teacher-a", 0.5), (teacher_b, 0.5)],
...                            processing_class=tokenizer)                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from trl import SFTTrainer

from fusion.cache import TeacherCache, check_alignment
from fusion.onpolicy import PROMPTS_KEY, fusion_options, with_fusion_signature
from fusion.training import FusionCollator, FusionTrainingMixin, PromptResponseDataset

__all__ = ["FusionSFTTrainer"]


def _text(value: Any, role: str, column: str) -> str:
    """A plain string from a standard field or a one-message conversational one."""
    if isinstance(value, str):
        return value
    if (
        isinstance(value, Sequence)
        and len(value) == 1
        and isinstance(value[0], Mapping)
        and value[0].get("role") == role
        and isinstance(value[0].get("content"), str)
    ):
        return value[0]["content"]
    raise ValueError(
        f"FusionSFTTrainer reads prompt-completion data: {column!r} must be a string or a single "
        f"{role!r} message, got {value!r}"
    )


class _TeacherFields:
    """TRL's collator, plus every teacher's entries for the same rows."""

    def __init__(self, base: Any, teachers: FusionCollator, eos: str | None) -> None:
        self.base, self.teachers, self.eos = base, teachers, eos

    def pairs(self, features: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
        out = []
        for f in features:
            prompt = _text(f["prompt"], "user", "prompt")
            completion = _text(f["completion"], "assistant", "completion")
            # TRL appended the pivot's EOS text to a standard completion; a teacher ends
            # the response with its own EOS (Encoder, add_eos)
            if self.eos and isinstance(f["completion"], str) and completion.endswith(self.eos):
                completion = completion[: -len(self.eos)]
            out.append((prompt, completion))
        return out

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(self.base(features))
        if "attention_mask" not in batch:
            raise ValueError("FusionSFTTrainer needs padded batches (padding_free=False)")
        pairs = self.pairs(features)
        batch.update(self.teachers.teacher_fields(features, pairs))
        if self.teachers.keep_prompts:  # on-policy distillation completes these
            batch[PROMPTS_KEY] = [prompt for prompt, _ in pairs]
        return batch


def check_columns(name: str, dataset: Any) -> None:
    """Refuse a dataset without TRL's prompt-completion columns, naming what it has (D3)."""
    if dataset is None or isinstance(dataset, str):
        return
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, dict):  # a DatasetDict: one split per key
        raise ValueError(
            f"{name} is a DatasetDict with splits {sorted(columns)}: pass one split, "
            f"e.g. {name}=data['train']"
        )
    if columns is None:
        return
    missing = [c for c in ("prompt", "completion") if c not in columns]
    if missing:
        raise ValueError(
            f"FusionSFTTrainer reads prompt-completion data: {name} lacks the column(s) "
            f"{missing} (it has {sorted(columns)}); rename them, e.g. "
            "dataset.rename_columns({'question': 'prompt', 'answer': 'completion'})"
        )


def _with_index(dataset: Any) -> Any:
    """The dataset with an ``index`` column (its row numbers) unless it has one."""
    if dataset is None or "index" in (dataset.column_names or ()):
        return dataset
    return dataset.map(lambda _, i: {"index": i}, with_indices=True)


def _as_pairs(dataset: Any) -> PromptResponseDataset:
    rows = (
        {
            "prompt": _text(r["prompt"], "user", "prompt"),
            "response": _text(r["completion"], "assistant", "completion"),
        }
        for r in dataset
    )
    return PromptResponseDataset(rows)


@with_fusion_signature
class FusionSFTTrainer(FusionTrainingMixin, SFTTrainer):
    r"""TRL's ``SFTTrainer`` with :class:`fusion.FusionLoss` as its loss.

    .. math::

        (1-\lambda)\,\mathrm{CE} + \lambda \sum_j w_j\,
        \big(\mathrm{ULD}_j + \beta\,\mathrm{GLD}_j\big).

    The data is a ``datasets.Dataset`` in TRL's *prompt-completion* format (string
    ``prompt`` and ``completion`` columns, or single-turn conversational ones); TRL
    prepares it as usual, with the loss on the completion only. Each teacher sees the
    same prompt and completion through its own tokenizer: online teachers
    (:class:`fusion.teachers.OnlineTeacher`, or a model) tokenise them in the collator; a
    cache must have been built over the same rows, in the same order, from
    ``{"prompt": prompt, "response": completion}`` (an ``index`` column of row numbers is
    added before TRL filters anything, and the content is checked against the cache).

    Parameters
    ----------
    model : str, transformers.PreTrainedModel or peft.PeftModel
        As for ``SFTTrainer`` (``peft_config=`` works as there).
    args : trl.SFTConfig or transformers.TrainingArguments, optional
        ``packing`` and ``padding_free`` are refused (they merge rows, and a teacher's
        rows belong to one example); ``remove_unused_columns`` is turned off on a copy
        (the teachers need the text columns).
    teachers, lambda_, beta, k, m, temperature, teacher_temperature, top_k, gld_graph, gld_options, distillation, jsd_beta, lmbda, generation_kwargs, eval_teachers, check_data
        As for :class:`fusion.FusionTrainer` (one definition for both trainers; the old
        names ``student_temperature`` and ``uld_top_k`` still work, with a FutureWarning).
        On-policy batches (``lmbda > 0``) are tokenised by fusion's collator rule
        (:class:`fusion.cache.Encoder`), not by TRL's dataset preparation.
    train_dataset, eval_dataset : datasets.Dataset
        Prompt-completion data.
    **kwargs
        Passed to ``SFTTrainer`` (``processing_class``, ``peft_config``, callbacks, ...).

    Notes
    -----
    TRL's own entropy and token-accuracy metrics are not computed (the loss replaces
    TRL's); the log lines carry ``loss``, ``ce``, ``uld``, ``gld`` as with
    :class:`fusion.FusionTrainer`.
    """

    def __init__(
        self,
        model: Any,
        args: Any = None,
        *,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        eval_teachers: Sequence[Any] | None = None,
        check_data: bool = True,
        **kwargs: Any,
    ) -> None:
        for flag in ("packing", "padding_free"):
            if getattr(args, flag, False):
                raise ValueError(
                    f"FusionSFTTrainer does not support {flag}=True: it merges examples, and "
                    "each teacher's rows belong to one example"
                )
        for name, data in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            check_columns(name, data)
        options = fusion_options(kwargs)
        self._init_fusion(model if not isinstance(model, str) else None, **options)
        eval_list = self._eval_teacher_list(eval_teachers)
        train_dataset, eval_dataset = _with_index(train_dataset), _with_index(eval_dataset)
        if check_data:
            for data, teacher_list in ((train_dataset, self.teachers), (eval_dataset, eval_list)):
                caches = [t for t in teacher_list or () if isinstance(t, TeacherCache)]
                if data is not None and caches:
                    check_alignment(_as_pairs(data), caches)
        super().__init__(
            model,
            self._keep_text_columns(args),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            **kwargs,
        )
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        options = {"teacher_entries": self.teacher_entries}
        eos = getattr(tokenizer, "eos_token", None)
        base = self.data_collator
        self.data_collator = _TeacherFields(
            base, FusionCollator(tokenizer, self.teachers, **options), eos
        )
        self._eval_collator = _TeacherFields(
            base, FusionCollator(tokenizer, eval_list or (), **options), eos
        )
        self._place_teachers()
