r"""Train a pivot model against teachers with :class:`transformers.Trainer`.

Four pieces, usable separately (all importable from here; the data pieces live in
:mod:`fusion.batches`, the mixin in :mod:`fusion.trainer_mixin`):

:class:`~fusion.batches.PromptResponseDataset`
    The pivot's examples, ``{"index", "prompt", "response"}`` in data order. Example ``i``
    is line ``i`` of the JSONL file the teacher caches were built from.
:class:`~fusion.batches.FusionCollator`
    Tokenises and right-pads a batch with the *pivot's* tokenizer (labels only on the
    response tokens, exactly the tokenisation rule of :mod:`fusion.cache`) and attaches
    every teacher's entries for the same examples: a cache's rows
    (:func:`fusion.cache.collate`), or an online teacher's own tokens.
:class:`~fusion.trainer_mixin.FusionTrainingMixin`
    The fusion loss, its exact normalisation over accumulation windows and ranks, its
    logging and its evaluation, for any :class:`transformers.Trainer` subclass (used by
    :class:`FusionTrainer` and by :class:`fusion.trl.FusionSFTTrainer`).
:class:`FusionTrainer`
    A :class:`transformers.Trainer` whose loss is :class:`fusion.FusionLoss`
    (CE + ULD + GLD over the teachers); mixed precision, DDP (``torchrun``/``accelerate
    launch``), DeepSpeed, PEFT and checkpoints come from the Trainer itself.

The pivot and each teacher have different tokenizers, so their response spans have
different lengths. ULD compares the :math:`j`-th response position of the pivot with the
:math:`j`-th of the teacher, truncated to the shorter span (Boizard et al. 2024); GLD
compares whole-span co-activation graphs and needs no positional alignment. See
docs/guide/training.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from transformers import Trainer

from fusion.batches import (
    IGNORE_INDEX,
    ULD_TOP_K,
    FusionBatch,
    FusionCollator,
    PromptResponseDataset,
    online_keys,
    prompt_of,
    response_positions,
    split_batch,
    teacher_keys,
)
from fusion.cache import TeacherCache, check_alignment
from fusion.onpolicy import fusion_options, with_fusion_signature
from fusion.trainer_mixin import FusionTrainingMixin

# the data pieces live in fusion.batches and the mixin in fusion.trainer_mixin; every
# name that was defined here stays importable from here
__all__ = [
    "IGNORE_INDEX",
    "ULD_TOP_K",
    "FusionBatch",
    "FusionCollator",
    "FusionTrainer",
    "FusionTrainingMixin",
    "PromptResponseDataset",
    "online_keys",
    "prompt_of",
    "response_positions",
    "split_batch",
    "teacher_keys",
]


@with_fusion_signature
class FusionTrainer(FusionTrainingMixin, Trainer):
    r"""A :class:`transformers.Trainer` that fuses teachers into a pivot model.

    The loss is :class:`fusion.FusionLoss`,

    .. math::

        (1-\lambda)\,\mathrm{CE} + \lambda \sum_j w_j\,
        \big(\mathrm{ULD}_j + \beta\,\mathrm{GLD}_j\big),

    with each teacher read from a cache written by :func:`fusion.cache.build` over the same
    examples, or run online (:class:`fusion.teachers.OnlineTeacher`). Everything else
    (optimiser, schedule, mixed precision, DDP, DeepSpeed, PEFT, checkpoints) is the
    Trainer's own.

    Parameters
    ----------
    model : transformers.PreTrainedModel or peft.PeftModel
        The pivot, a causal LM (a LoRA-wrapped one trains its adapters only).
    args : transformers.TrainingArguments
        As for any Trainer. ``remove_unused_columns`` is turned off on a copy (the
        collator consumes the text columns).
    teachers : sequence of ``(teacher, weight)``
        One entry per teacher: a cache directory or :class:`fusion.cache.TeacherCache`,
        or a model (directory, loaded Hugging Face model, or
        :class:`fusion.teachers.OnlineTeacher`) run online in the training step; and its
        weight :math:`w_j \ge 0`. ``None`` for every weight (or bare teachers): uniform
        :math:`1/n`; a mix of numbers and ``None`` is refused. Empty for plain SFT (then
        ``lambda_`` must be 0).
    lambda_ : float
        Weight of distillation against CE, in ``[0, 1]`` (default 0.5).
    beta : float
        Weight of GLD relative to ULD (default 1; 0 gives SFT + ULD).
    k : int
        Entries per position of GLD's co-activation graphs (default 10).
    m : int
        Degrees compared per graph by GLD with ``gld_options={"features": "degrees"}``
        (default 64).
    temperature : float
        :math:`\tau_s`, applied to the pivot's logits by ULD, GLD and JSD (default 1).
        Formerly ``student_temperature`` (deprecated alias, FutureWarning).
    teacher_temperature : float, optional
        :math:`\tau_t`. Online teachers are reduced at it (default 1); caches hold
        ``log_softmax(z / tau)`` at the temperature they were built with, so it is only
        checked against their manifests (``None``: accept whatever they hold).
    top_k : int, optional
        Entries of ULD's top-k variant; default the smallest cached ``k`` (as close to
        the full ULD as the caches allow), or ``ULD_TOP_K`` = 50 with online teachers only.
        Formerly ``uld_top_k`` (deprecated alias, FutureWarning).
    gld_graph : {"sequence", "batch"}
        One co-activation graph per sequence (default) or one per micro-batch, shared
        across data-parallel ranks by all-reduce.
    gld_options : mapping, optional
        Further :class:`fusion.GLDLoss` keywords (``features``, ``values``, ``nodes``,
        ``chunk_size``).
    distillation : {"uld", "jsd"}
        The logit term: ULD (any tokenizers, default), or for teachers that share the
        pivot's tokenizer the generalised JSD of TRL's GKD (:class:`fusion.JSDLoss`,
        token mean; a cache then passes all its ``k`` entries, an online teacher its
        whole vocabulary).
    jsd_beta : float
        JSD's interpolation in ``[0, 1]`` (0 forward KL, 1 reverse KL; default 0.5).
    lmbda : float
        On-policy fraction in ``[0, 1]`` (TRL's name, Agarwal et al. 2024): each
        accumulation window is, with this probability (seeded by ``args.seed``), replaced
        by the pivot's own completions of its prompts, scored by the (online) teachers.
        Default 0 (off). Needs online teachers only (a cache cannot score new text).
    generation_kwargs : mapping, optional
        Passed to ``model.generate`` for on-policy completions (default
        ``{"max_new_tokens": 128, "do_sample": True}``).
    train_dataset : str, path-like, sequence of mapping or PromptResponseDataset
        The pivot's training examples, in the caches' order: ``{"prompt", "response"}``
        pairs or ``{"messages": [...]}`` conversations (loss on the assistant turns).
    eval_dataset : same types, optional
        Evaluation examples; see ``eval_teachers``.
    eval_teachers : sequence, optional
        One entry per teacher for the evaluation data: a cache built over
        ``eval_dataset``, or ``None`` to reuse an online teacher. Without it, online-only
        teachers are evaluated online and cached ones make the evaluation CE-only.
    processing_class : transformers.PreTrainedTokenizerBase
        The pivot's tokenizer (required unless ``data_collator`` is given).
    data_collator : callable, optional
        Default :class:`~fusion.batches.FusionCollator` over the teachers.
    max_length : int, optional
        Longest pivot sequence for the default collator.
    truncation : {"response", "prompt_left"}
        How the default collator cuts a longer sequence (the caches' choice).
    check_data : bool
        Refuse caches whose example count or content hash differs from the data.
    peft_config : peft.PeftConfig, optional
        Wrap ``model`` with ``peft.get_peft_model`` first (e.g. a ``LoraConfig``).
    **kwargs
        Passed to :class:`transformers.Trainer`.

    Attributes
    ----------
    fusion_loss : fusion.FusionLoss
        The loss module (its ``repr`` shows every option).
    teachers : list of TeacherCache or OnlineTeacher
    last_components : dict of str to tensor
        ``ce``, ``uld``, ``gld`` (and per teacher ``uld/j``, ``gld/j``) of the last training
        micro-batch: its shares of the window's means, detached.

    Notes
    -----
    *Logging.* Every training log line gets ``ce``, ``uld`` and ``gld`` (per teacher as
    ``uld/j``, ``gld/j`` when there are several) next to the Trainer's ``loss``: CE as the
    token mean and ULD/GLD as sequence means over each whole optimizer step (all
    micro-batches, all ranks with ``average_tokens_across_devices``), averaged over the
    steps since the previous log like ``loss``, so that
    ``loss = (1 - lambda_) ce + lambda_ (uld + beta gld)`` whatever the batch split.

    *Gradient accumulation.* The same window counts normalise the loss, so accumulating
    ``n`` micro-batches gives the gradient of one ``n`` times larger batch. With
    ``gld_graph="batch"`` the graph is per micro-batch (and across ranks), not per window.

    *Evaluation.* ``eval_ce`` (token mean over the whole set) always; with teachers for
    the evaluation data also ``eval_uld``, ``eval_gld`` (and per teacher), and
    ``eval_loss`` is the training objective; otherwise ``eval_loss`` is the CE.
    """

    def __init__(
        self,
        model: Any = None,
        args: Any = None,
        *,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        eval_teachers: Sequence[Any] | None = None,
        processing_class: Any = None,
        data_collator: Any = None,
        max_length: int | None = None,
        truncation: str = "response",
        check_data: bool = True,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        self._init_fusion(model, **fusion_options(kwargs))
        eval_list = self._eval_teacher_list(eval_teachers)
        train_dataset = self._dataset(train_dataset, with_index=True)
        eval_with_index = any(isinstance(t, TeacherCache) for t in eval_list or ())
        eval_dataset = self._dataset(eval_dataset, with_index=eval_with_index)
        if check_data:
            for data, teacher_list in ((train_dataset, self.teachers), (eval_dataset, eval_list)):
                caches = [t for t in teacher_list or () if isinstance(t, TeacherCache)]
                if data is not None and caches:
                    check_alignment(data, caches)
        if data_collator is None:
            if processing_class is None:
                raise ValueError("pass processing_class= (the pivot's tokenizer) or data_collator=")
            options = {
                "max_length": max_length,
                "truncation": truncation,
                "teacher_entries": self.teacher_entries,
            }
            data_collator = FusionCollator(processing_class, self.teachers, **options)
            self._eval_collator = FusionCollator(processing_class, eval_list or (), **options)
        super().__init__(
            model=model,
            args=self._keep_text_columns(args),
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self._place_teachers()

    @staticmethod
    def _dataset(data: Any, *, with_index: bool) -> Any:
        if data is None or isinstance(data, PromptResponseDataset):
            return data
        if isinstance(data, str | os.PathLike) or isinstance(data, Sequence):
            return PromptResponseDataset(data, with_index=with_index)
        return data  # any other Dataset yielding the collator's fields
