r"""Train a pivot model against teachers with :class:`transformers.Trainer`.

Four pieces, usable separately:

:class:`PromptResponseDataset`
    The pivot's examples, ``{"index", "prompt", "response"}`` in data order. Example ``i``
    is line ``i`` of the JSONL file the teacher caches were built from.
:class:`FusionCollator`
    Tokenises and right-pads a batch with the *pivot's* tokenizer (labels only on the
    response tokens, exactly the tokenisation rule of :mod:`fusion.cache`) and attaches
    every teacher's entries for the same examples: a cache's rows
    (:func:`fusion.cache.collate`), or an online teacher's own tokens.
:class:`FusionTrainingMixin`
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

import copy
import inspect
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch.nn import functional as F
from transformers import Trainer

from fusion.cache import (
    Encoder,
    TeacherCache,
    as_row,
    check_alignment,
    collate,
    data_sha256,
    read_examples,
)
from fusion.modules import FusionLoss, GLDLoss, JSDLoss, ULDLoss
from fusion.onpolicy import (
    DISTILLATIONS,
    PROMPTS_KEY,
    OnPolicy,
    check_shared_tokenizer,
    check_shared_vocabulary,
    fusion_options,
    most_entries,
    with_fusion_signature,
)
from fusion.teachers import OnlineInputs, OnlineTeacher, Teacher, resolve_teacher, split_teachers
from fusion.types import TopK

__all__ = [
    "FusionBatch",
    "FusionCollator",
    "FusionTrainer",
    "FusionTrainingMixin",
    "PromptResponseDataset",
    "online_keys",
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


# ---------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------


def _check_temperature(name: str, tau: Any, *, optional: bool = False) -> float | None:
    if tau is None and optional:
        return None
    if (
        isinstance(tau, bool)
        or not isinstance(tau, int | float)
        or not math.isfinite(tau)
        or tau <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {tau!r}")
    return float(tau)


def _vocab_size(model: Any) -> int | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    return None if weight is None else int(weight.shape[0])


class _Window(NamedTuple):
    """Target tokens and sequences of one accumulation window (of all ranks when global)."""

    tokens: float
    sequences: float
    world_factor: int  # the world size when the counts are global, else 1


class FusionTrainingMixin:
    r"""Fusion loss, exact normalisation, logging and evaluation for a Trainer subclass.

    Mixed into :class:`FusionTrainer` (over :class:`transformers.Trainer`) and
    :class:`fusion.trl.FusionSFTTrainer` (over TRL's ``SFTTrainer``); it only overrides
    public Trainer hooks: ``get_batch_samples``, ``compute_loss``, ``log``,
    ``get_eval_dataloader`` and ``evaluation_loop``. Subclasses call ``_init_fusion``
    before ``Trainer.__init__`` and ``_place_teachers`` after it.
    """

    # compute_loss normalises over the accumulation window itself (FusionLoss's counts)
    loss_is_scaled_for_ga = True

    # -- construction -----------------------------------------------------------------

    def _init_fusion(
        self,
        model: Any,
        teachers: Iterable[Any] = (),
        *,
        lambda_: float = 0.5,
        beta: float = 1.0,
        k: int = 10,
        m: int = 64,
        temperature: float = 1.0,
        teacher_temperature: float | None = None,
        top_k: int | None = None,
        gld_graph: str = "sequence",
        gld_options: Mapping[str, Any] | None = None,
        distillation: str = "uld",
        jsd_beta: float = 0.5,
        lmbda: float = 0.0,
        generation_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """The fusion options of both trainers: this signature is their one definition."""
        if distillation not in DISTILLATIONS:
            raise ValueError(f"distillation must be one of {DISTILLATIONS}, got {distillation!r}")
        resolved, weights = split_teachers(teachers)
        tau_s = _check_temperature("temperature", temperature)
        tau_t = _check_temperature("teacher_temperature", teacher_temperature, optional=True)
        if not resolved and lambda_ != 0:
            raise ValueError("without teachers, lambda_ must be 0 (plain SFT)")
        pivot_vocab = _vocab_size(model)
        top_k = self._check_teachers(resolved, tau_t, k, top_k, pivot_vocab)
        jsd = None
        if distillation == "jsd":
            jsd = JSDLoss(beta=jsd_beta, temperature=tau_s)
            check_shared_vocabulary(resolved, pivot_vocab)
        self.teachers = resolved
        self.fusion_loss = FusionLoss(
            lambda_,
            beta,
            weights,
            gld=GLDLoss(k=k, m=m, temperature=tau_s, graph=gld_graph, **dict(gld_options or {})),
            uld=ULDLoss(temperature=tau_s, top_k=top_k),
            jsd=jsd,
        )
        # online teachers reduce their logits at the teacher temperature (a cache did so
        # when it was built)
        self.teacher_temperature = 1.0 if tau_t is None else tau_t
        self.teacher_entries = max(k, top_k or 1) if resolved else None
        if jsd is not None and resolved:  # JSD is exact to as many entries as there are
            self.teacher_entries = max(self.teacher_entries, most_entries(resolved))
        self.on_policy = OnPolicy.make(lmbda, generation_kwargs, resolved)
        self.last_components: dict[str, torch.Tensor] = {}
        self._log_sums: dict[str, torch.Tensor] = {}
        self._log_windows = 0
        self._log_factor = 1
        self._window: _Window | None = None
        self._eval_sums: dict[str, torch.Tensor] | None = None
        self._eval_collator: Any = None

    @staticmethod
    def _check_teachers(
        teachers: Sequence[Teacher],
        tau_t: float | None,
        k: int,
        top_k: int | None,
        pivot_vocab: int | None,
    ) -> int | None:
        if not teachers:
            return top_k
        uld_top_k = top_k
        if uld_top_k is None:
            cached = [t.k for t in teachers if isinstance(t, TeacherCache)]
            uld_top_k = min(cached) if cached else ULD_TOP_K
            sizes = [t.vocab_size for t in teachers if isinstance(t, OnlineTeacher)]
            uld_top_k = min([uld_top_k, *sizes, *([pivot_vocab] if pivot_vocab else [])])
        if isinstance(uld_top_k, bool) or not isinstance(uld_top_k, int) or uld_top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {uld_top_k!r}")
        need = max(k, uld_top_k)
        for j, teacher in enumerate(teachers):
            if isinstance(teacher, TeacherCache):
                if need > teacher.k:
                    raise ValueError(
                        f"teacher {j} ({teacher.path}) caches k={teacher.k} entries; GLD needs "
                        f"k={k} and ULD top_k={uld_top_k}"
                    )
                if tau_t is not None and not math.isclose(teacher.temperature, tau_t):
                    raise ValueError(
                        f"teacher {j} ({teacher.path}) was cached at temperature "
                        f"{teacher.temperature}, not {tau_t}: rebuild the cache or pass "
                        f"teacher_temperature={teacher.temperature}"
                    )
            elif need > teacher.vocab_size:
                raise ValueError(
                    f"teacher {j} ({teacher.name}) has {teacher.vocab_size} logits per position; "
                    f"GLD needs k={k} and ULD uld_top_k={uld_top_k}"
                )
        if pivot_vocab is not None and need > pivot_vocab:
            raise ValueError(f"the pivot has {pivot_vocab} logits per position, fewer than {need}")
        return uld_top_k

    def _eval_teacher_list(self, eval_teachers: Sequence[Any] | None) -> list[Teacher] | None:
        """The teachers of the evaluation data, or ``None`` when some teacher has none."""
        if eval_teachers is None:
            eval_teachers = [None] * len(self.teachers)
        if len(eval_teachers) != len(self.teachers):
            raise ValueError(
                f"{len(eval_teachers)} eval_teachers for {len(self.teachers)} teachers "
                "(one entry per teacher, None to reuse an online one)"
            )
        out = []
        for j, (teacher, spec) in enumerate(zip(self.teachers, eval_teachers)):
            if spec is None:
                if not isinstance(teacher, OnlineTeacher):
                    return None  # a cache of the training data cannot score other examples
                out.append(teacher)
                continue
            resolved = resolve_teacher(spec)
            if not isinstance(resolved, TeacherCache):
                raise ValueError(f"eval_teachers[{j}] must be a cache of the evaluation data")
            out.append(resolved)
        return out

    def _place_teachers(self) -> None:
        """Put online teachers on the training device (unless their layout is their own).

        With on-policy distillation, also make the training collator keep the prompts;
        with JSD, check that every teacher has the pivot's tokenizer.
        """
        if self.fusion_loss.jsd is not None:
            tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
            check_shared_tokenizer(self.teachers, tokenizer)
        if self.on_policy is not None:
            collator = self.data_collator
            inner = collator if isinstance(collator, FusionCollator) else None
            inner = inner or getattr(collator, "teachers", None)
            if not isinstance(inner, FusionCollator):
                raise ValueError(
                    "on-policy distillation (lmbda > 0) re-collates the pivot's completions: "
                    "use the default collator (data_collator=None)"
                )
            inner.keep_prompts = True
        for teacher in self.teachers:
            if isinstance(teacher, OnlineTeacher) and not getattr(
                teacher.model, "hf_device_map", None
            ):
                teacher.model.to(self.args.device)

    @staticmethod
    def _keep_text_columns(args: Any) -> Any:
        """A copy of ``args`` with ``remove_unused_columns=False``: the collator needs the text."""
        if args is None or not getattr(args, "remove_unused_columns", False):
            return args
        args = copy.copy(args)
        args.remove_unused_columns = False
        return args

    # -- normalisation ------------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any):
        """Fetch one accumulation window and count its target tokens and sequences.

        The counts (of all ranks with ``average_tokens_across_devices``) normalise every
        micro-batch of the window, so that accumulation equals one large batch and the
        logged components are token- and sequence-weighted over the whole optimizer step.
        """
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batches:
            return batches, num_items
        if self.on_policy is not None and self.on_policy.draw(self.args.seed):
            batches = [self._completed_by_pivot(b) for b in batches]
            num_items = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        counts = torch.zeros(2, dtype=torch.float64)
        for b in batches:
            counts[0] += int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
            counts[1] += b["labels"].shape[0]
        factor = 1
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            factor = self.args.world_size
            gathered = self.accelerator.gather(counts.to(device))
            counts = gathered.reshape(factor, 2).sum(0).cpu()
        self._window = _Window(float(counts[0]), float(counts[1]), factor)
        self._log_windows += 1
        self._log_factor = factor
        return batches, num_items

    def _on_policy_collator(self) -> FusionCollator:
        collator = self.data_collator
        collator = collator if isinstance(collator, FusionCollator) else collator.teachers
        return collator

    def _completed_by_pivot(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The same prompts, completed by the pivot, collated for it and every teacher."""
        model = self.accelerator.unwrap_model(self.model)
        new = self.on_policy.complete(model, self._on_policy_collator(), batch[PROMPTS_KEY])
        return self._prepare_inputs(new)

    def _normalizers(self, n_tokens: torch.Tensor, n_seqs: int, training: bool):
        """``(num_tokens, num_sequences, scale)`` of this micro-batch's share of its window."""
        if not training:
            return n_tokens, n_seqs, 1.0
        if self._window is None:  # training_step called outside train(): one micro-batch
            steps = self.args.gradient_accumulation_steps
            return n_tokens * steps, n_seqs * steps, 1.0
        w = self._window
        # DDP averages gradients over ranks; the factor undoes that for global means
        return w.tokens, w.sequences, float(w.world_factor)

    # -- loss ---------------------------------------------------------------------------

    def _pivot_forward(self, model: Any, inputs: Mapping[str, torch.Tensor]) -> Any:
        """The pivot's forward, under mixed-precision autocast, logits in the model's dtype.

        Accelerate wraps a prepared model's forward in autocast *and* a cast of every
        output to fp32, which would hand the loss an fp32 copy of the logits. Its public
        ``unwrap_model(..., keep_fp32_wrapper=False)`` removes both; the autocast is
        applied here instead, around the forward only.
        """
        inner = self.accelerator.unwrap_model(model)
        if "_original_forward" in vars(inner):
            self.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        with self.accelerator.autocast():
            return model(**inputs, use_cache=False)

    def _teacher_topk(self, batch: FusionBatch, device: Any) -> list[tuple[TopK, Any]] | None:
        """Every teacher's ``(TopK, mask)`` for the batch, or ``None`` if one is missing."""
        if not self.teachers or any(part is None for part in batch.teachers):
            return None
        if len(batch.teachers) != len(self.teachers):
            raise ValueError(
                f"the batch carries {len(batch.teachers)} teachers, the trainer has "
                f"{len(self.teachers)}"
            )
        rows = []
        for teacher, part, mask in zip(self.teachers, batch.teachers, batch.masks):
            if isinstance(part, OnlineInputs):
                if not isinstance(teacher, OnlineTeacher):
                    raise ValueError("the batch holds online inputs for a cached teacher")
                topk, mask = teacher.topk(part, self.teacher_entries, self.teacher_temperature)
                part = TopK(topk.logprobs.to(device), topk.indices.to(device))
                mask = mask.to(device)
            rows.append((part, mask))
        return rows

    def compute_loss(
        self,
        model: Any,
        inputs: Mapping[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ):
        """Fusion loss of one micro-batch: its share of the accumulation window's loss.

        Parameters
        ----------
        model : torch.nn.Module
            The (possibly wrapped) pivot.
        inputs : mapping
            A :class:`FusionCollator` batch.
        return_outputs : bool
            Also return the model outputs.
        num_items_in_batch : optional
            Ignored: the window's own counts are taken in :meth:`get_batch_samples`.

        Returns
        -------
        tensor or (tensor, ModelOutput)
        """
        batch = split_batch(inputs, len(self.teachers))
        outputs = self._pivot_forward(model, batch.inputs)
        logits, targets = response_positions(outputs.logits, batch.labels)
        student_mask = targets != IGNORE_INDEX
        training = model.training
        n_tokens, n_seqs = student_mask.sum(), targets.shape[0]
        tokens, seqs, scale = self._normalizers(n_tokens, n_seqs, training)
        teachers = self._teacher_topk(batch, logits.device)
        if teachers is None:
            if training and self.teachers:
                raise ValueError(
                    "the training batch carries no entries for some teacher: items need an "
                    "'index' into the caches (PromptResponseDataset(..., with_index=True))"
                )
            ce = self.fusion_loss.cross_entropy(logits, targets, num_tokens=tokens)
            total, parts = ce, {"ce": ce}
        else:
            out = self.fusion_loss(
                logits,
                [t for t, _ in teachers],
                targets,
                student_mask=student_mask,
                teacher_masks=[m for _, m in teachers],
                num_tokens=tokens,
                num_sequences=seqs,
            )
            total = out.total
            parts = {key: v for key, v in out.components().items() if key != "loss"}
            if len(teachers) == 1:
                parts = {key: v for key, v in parts.items() if "/" not in key}
        if training:
            self._record(parts)
        elif self._eval_sums is not None:
            self._record_eval(parts, n_tokens, n_seqs)
        loss = total * scale
        return (loss, outputs) if return_outputs else loss

    # -- logging ------------------------------------------------------------------------

    def _record(self, parts: Mapping[str, torch.Tensor]) -> None:
        detached = {key: value.detach().float() for key, value in parts.items()}
        self.last_components = detached
        for key, value in detached.items():
            self._log_sums[key] = self._log_sums.get(key, 0.0) + value

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the loss components, token-weighted over each optimizer step, to the logs.

        Each component is summed over the micro-batches of a window (their shares of the
        window's means) and over ranks, then averaged over the optimizer steps since the
        previous log, exactly as the Trainer's ``loss``; so ``loss`` equals
        ``(1 - lambda_) * ce + lambda_ * (uld + beta * gld)``.
        """
        if "loss" in logs and self._log_windows and self._log_sums:
            keys = sorted(self._log_sums)
            local = torch.stack([torch.as_tensor(self._log_sums[key]) for key in keys])
            world = self.args.world_size
            if world > 1:  # every rank logs at the same step
                gathered = self.accelerator.gather(local.to(self.args.device)).reshape(world, -1)
                local = gathered.sum(0) * (self._log_factor / world)
            local = local.cpu() / self._log_windows
            logs.update({key: float(v) for key, v in zip(keys, local)})
        if "loss" in logs:
            self._log_sums, self._log_windows = {}, 0
        super().log(logs, start_time)

    # -- evaluation -----------------------------------------------------------------------

    def _record_eval(self, parts: Mapping[str, torch.Tensor], n_tokens, n_seqs: int) -> None:
        sums = self._eval_sums
        for key, value in parts.items():
            count = n_tokens if key == "ce" or key.startswith("jsd") else n_seqs
            sums[key] = sums.get(key, 0.0) + value.detach().double() * count
        sums["#tokens"] = sums.get("#tokens", 0.0) + torch.as_tensor(n_tokens).double()
        sums["#sequences"] = sums.get("#sequences", 0.0) + float(n_seqs)
        sums["#batches"] = sums.get("#batches", 0.0) + 1.0
        if "uld" in parts or "jsd" in parts:
            sums["#distilled"] = sums.get("#distilled", 0.0) + 1.0

    def _eval_metrics(self, sums: Mapping[str, Any], prefix: str) -> dict[str, float]:
        keys = sorted(sums)
        if not keys:
            return {}
        local = torch.stack([torch.as_tensor(sums[key], dtype=torch.float64) for key in keys])
        world = self.args.world_size
        if world > 1:
            local = self.accelerator.gather(local.to(self.args.device)).reshape(world, -1).sum(0)
        total = dict(zip(keys, local.cpu().tolist()))
        metrics = {f"{prefix}_ce": total["ce"] / max(total["#tokens"], 1.0)}
        if total.get("#distilled", 0.0) != total["#batches"]:  # no (or not every) teacher
            metrics[f"{prefix}_loss"] = metrics[f"{prefix}_ce"]
            return metrics
        seqs, tokens = max(total["#sequences"], 1.0), max(total["#tokens"], 1.0)
        for key in keys:
            if key.startswith(("uld", "gld")):
                metrics[f"{prefix}_{key}"] = total[key] / seqs
            elif key.startswith("jsd"):  # a token mean, like the CE
                metrics[f"{prefix}_{key}"] = total[key] / tokens
        lam, beta = self.fusion_loss.lambda_, self.fusion_loss.beta
        logit = metrics.get(f"{prefix}_jsd", metrics.get(f"{prefix}_uld"))
        metrics[f"{prefix}_loss"] = (1 - lam) * metrics[f"{prefix}_ce"] + lam * (
            logit + beta * metrics[f"{prefix}_gld"]
        )
        return metrics

    def get_eval_dataloader(self, eval_dataset: Any = None):
        """The Trainer's evaluation loader, with the evaluation collator (its teachers)."""
        if self._eval_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        saved, self.data_collator = self.data_collator, self._eval_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = saved

    def evaluation_loop(self, dataloader: Any, description: str, *args: Any, **kwargs: Any):
        """The Trainer's loop; ``eval_loss``, ``eval_ce`` and the components are exact.

        CE is the token mean and ULD/GLD the sequence means over the whole evaluation set
        (and all ranks), not means of per-batch means. ``eval_loss`` is the training
        objective when every teacher is available for the evaluation data (online
        teachers, or ``eval_teachers`` caches), else the cross-entropy.
        """
        bound = inspect.signature(super().evaluation_loop).bind(
            dataloader, description, *args, **kwargs
        )
        prefix = bound.arguments.get("metric_key_prefix", "eval")
        self._eval_sums = {}
        try:
            output = super().evaluation_loop(dataloader, description, *args, **kwargs)
            sums = self._eval_sums
        finally:
            self._eval_sums = None
        output.metrics.update(self._eval_metrics(sums, prefix))
        return output


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
        Default :class:`FusionCollator` over the teachers.
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
