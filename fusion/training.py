r"""Train a pivot model against cached teachers with :class:`transformers.Trainer`.

Three pieces, usable separately:

:class:`PromptResponseDataset`
    The pivot's examples, ``{"index", "prompt", "response"}`` in data order. Example ``i``
    is line ``i`` of the JSONL file the teacher caches were built from.
:class:`FusionCollator`
    Tokenises and right-pads a batch with the *pivot's* tokenizer (labels only on the
    response tokens, exactly the tokenisation rule of :mod:`fusion.cache`) and attaches
    every teacher's cached :class:`fusion.TopK` and mask for the same examples.
:class:`FusionTrainer`
    A :class:`transformers.Trainer` whose loss is :class:`fusion.FusionLoss`
    (CE + ULD + GLD over the teachers), which logs the components separately and is exact
    under gradient accumulation; mixed precision, DDP (``torchrun``/``accelerate launch``)
    and DeepSpeed come from the Trainer itself.

The pivot and each teacher have different tokenizers, so their response spans have
different lengths. ULD compares the :math:`j`-th response position of the pivot with the
:math:`j`-th of the teacher, truncated to the shorter span (Boizard et al. 2024); GLD
compares sorted degree vectors of whole-span co-activation graphs and needs no positional
alignment. See docs/guide/training.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.nn import functional as F
from transformers import Trainer

from fusion.cache import Encoder, TeacherCache, check_alignment, data_sha256, read_examples
from fusion.modules import FusionLoss, FusionLossOutput, GLDLoss, ULDLoss
from fusion.types import TopK

__all__ = [
    "FusionCollator",
    "FusionTrainer",
    "PromptResponseDataset",
    "response_positions",
    "split_batch",
    "teacher_keys",
]

IGNORE_INDEX = -100

TeacherSpec = str | os.PathLike | TeacherCache


def teacher_keys(j: int) -> tuple[str, str, str]:
    """Batch keys of teacher ``j``: ``(logprobs, indices, mask)``.

    Teachers travel as flat tensors rather than :class:`fusion.TopK` tuples because the
    Trainer and accelerate rebuild tuples when moving a batch to the device, which a
    named tuple does not survive.
    """
    return f"teacher_{j}_logprobs", f"teacher_{j}_indices", f"teacher_{j}_mask"


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


class PromptResponseDataset(torch.utils.data.Dataset):
    """Prompt/response examples in data order, as :class:`FusionCollator` consumes them.

    Parameters
    ----------
    data : str, path-like or iterable of mapping
        A JSONL file with string fields ``prompt`` and ``response`` (the file the teacher
        caches were built from), or the same objects in memory.
    with_index : bool
        Give each item its position as ``"index"``; the collator attaches teacher entries
        only to indexed items (evaluation data usually has no cache).

    Attributes
    ----------
    pairs : list of (str, str)
        The examples.
    """

    def __init__(self, data: str | os.PathLike | Iterable[Mapping[str, Any]], *, with_index=True):
        self.pairs, _ = read_examples(data)
        self.with_index = with_index

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        prompt, response = self.pairs[i]
        item: dict[str, Any] = {"prompt": prompt, "response": response}
        if self.with_index:
            item["index"] = int(i)
        return item

    def data_sha256(self) -> str:
        """The content hash a teacher cache records for the same examples."""
        return data_sha256(self.pairs)


def _open_cache(spec: TeacherSpec) -> TeacherCache:
    return spec if isinstance(spec, TeacherCache) else TeacherCache(spec)


class FusionCollator:
    """Pivot tokens plus every teacher's cached top-k for a batch of examples.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        The pivot's tokenizer. Prompt and response are joined exactly as
        :func:`fusion.cache.build` joins them for a teacher (chat template when the
        tokenizer has one, else ``prompt + response`` with BOS/EOS), so the pivot's labelled
        span is the same text as each cache's rows.
    teachers : sequence of TeacherCache or path
        Caches built over the same examples, in the same order.
    max_length : int, optional
        Longest pivot sequence; longer ones lose the end of their response.
    add_eos : bool
        Without a chat template, append EOS so the pivot learns to stop (as the caches do
        by default).
    k : int, optional
        Cached entries passed on per position (the first ``k``, i.e. the largest);
        default all of them.
    pad_to_multiple_of : int, optional
        Round the padded pivot length up (tensor-core friendly shapes on GPUs).

    Notes
    -----
    ``__call__`` returns ``input_ids``, ``attention_mask`` (right padding) and ``labels``
    (``-100`` on prompt and padding, unshifted as Hugging Face models expect), ``index``
    when the items have one, and per teacher ``j`` the keys of :func:`teacher_keys`:
    ``(B, T_j, k)`` logprobs in the cache dtype, int64 indices and a ``(B, T_j)`` bool mask
    of real rows. Row ``t`` of teacher ``j`` predicts the teacher's ``t``-th response token,
    and the pivot's ``t``-th labelled position predicts its own ``t``-th response token.
    """

    def __init__(
        self,
        tokenizer: Any,
        teachers: Sequence[TeacherSpec] = (),
        *,
        max_length: int | None = None,
        add_eos: bool = True,
        k: int | None = None,
        pad_to_multiple_of: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.teachers = [_open_cache(t) for t in teachers]
        self.encoder = Encoder(tokenizer, max_length=max_length, add_eos=add_eos)
        self.k = k
        self.pad_to_multiple_of = pad_to_multiple_of
        for j, cache in enumerate(self.teachers):
            if k is not None and k > cache.k:
                raise ValueError(f"teacher {j} caches k={cache.k} entries, fewer than k={k}")
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("FusionCollator needs at least one example")
        batch = self._pivot(features)
        indexed = ["index" in f for f in features]
        if any(indexed) and not all(indexed):
            raise ValueError("a batch mixes examples with and without 'index'")
        if all(indexed):
            index = torch.tensor([int(f["index"]) for f in features], dtype=torch.long)
            batch["index"] = index
            for j, cache in enumerate(self.teachers):
                batch.update(self._teacher(j, cache, index))
        return batch

    def _pivot(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = self.encoder.encode([(f["prompt"], f["response"]) for f in features])
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
            # the same targets a cache stores: every response token from `start` on
            labels[b, e.start : n] = ids[b, e.start : n]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def _teacher(self, j: int, cache: TeacherCache, index: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.k or cache.k
        rows = [cache[int(i)] for i in index]
        length = max(1, max(r.logprobs.shape[0] for r in rows))
        logprobs = torch.zeros((len(rows), length, k), dtype=rows[0].logprobs.dtype)
        indices = torch.zeros((len(rows), length, k), dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for b, r in enumerate(rows):
            n = r.logprobs.shape[0]
            logprobs[b, :n] = r.logprobs[:, :k]
            indices[b, :n] = r.indices[:, :k]
            mask[b, :n] = True
        keys = teacher_keys(j)
        return dict(zip(keys, (logprobs, indices, mask)))


def split_batch(
    batch: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[TopK], list[torch.Tensor]]:
    """Separate a :class:`FusionCollator` batch into model inputs, labels and teachers.

    Parameters
    ----------
    batch : mapping
        A collated batch (possibly moved to a device).

    Returns
    -------
    inputs : dict
        ``input_ids`` and ``attention_mask``, for the model's forward.
    labels : tensor ``(B, L)``
        Unshifted labels.
    teachers : list of fusion.TopK
        ``(B, T_j, k)`` per teacher, in order (empty when the batch carries none).
    masks : list of tensor
        ``(B, T_j)`` bool per teacher.
    """
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    teachers, masks = [], []
    j = 0
    while teacher_keys(j)[0] in batch:
        logprobs, indices, mask = (batch[key] for key in teacher_keys(j))
        teachers.append(TopK(logprobs, indices))
        masks.append(mask)
        j += 1
    return inputs, batch["labels"], teachers, masks


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
# trainer
# ---------------------------------------------------------------------------------------


def _temperatures(temperatures: float | Sequence[float | None]) -> tuple[float, float | None]:
    if isinstance(temperatures, int | float):
        pair: tuple[Any, Any] = (float(temperatures), float(temperatures))
    else:
        pair = tuple(temperatures)
        if len(pair) != 2:
            raise ValueError(f"temperatures must be a number or (student, teacher), got {pair}")
    student, teacher = pair
    for name, tau in (("student", student), ("teacher", teacher)):
        if tau is not None and not (math.isfinite(float(tau)) and float(tau) > 0):
            raise ValueError(f"the {name} temperature must be a finite number > 0, got {tau}")
    if student is None:
        raise ValueError("the student temperature cannot be None")
    return float(student), None if teacher is None else float(teacher)


def _split_teachers(
    teachers: Iterable[TeacherSpec | tuple[TeacherSpec, float | None]],
) -> tuple[list[TeacherCache], list[float | None]]:
    caches, weights = [], []
    for entry in teachers:
        spec, weight = entry if isinstance(entry, tuple | list) else (entry, None)
        caches.append(_open_cache(spec))
        weights.append(None if weight is None else float(weight))
    return caches, weights


class FusionTrainer(Trainer):
    r"""A :class:`transformers.Trainer` that fuses cached teachers into a pivot model.

    The loss is :class:`fusion.FusionLoss`,

    .. math::

        (1-\lambda)\,\mathrm{CE} + \lambda \sum_j w_j\,
        \big(\mathrm{ULD}_j + \beta\,\mathrm{GLD}_j\big),

    with each teacher read from a cache written by :func:`fusion.cache.build` over the same
    examples. Everything else (optimiser, schedule, mixed precision, DDP, DeepSpeed,
    checkpoints) is the Trainer's own.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The pivot, a causal LM.
    args : transformers.TrainingArguments
        As for any Trainer. ``remove_unused_columns`` is ignored (the collator consumes
        the text columns).
    teachers : sequence of ``(cache, weight)``
        One entry per teacher: a cache directory (or :class:`fusion.cache.TeacherCache`)
        and its weight :math:`w_j` (``None`` for all: uniform :math:`1/n`). A bare cache
        stands for ``(cache, None)``. Empty for plain SFT (then ``lambda_`` must be 0).
    lambda_ : float
        Weight of distillation against CE, in ``[0, 1]`` (default 0.5).
    beta : float
        Weight of GLD relative to ULD (default 1; 0 gives SFT + ULD).
    k : int
        Entries per position of GLD's co-activation graphs (default 10).
    m : int
        Degrees compared per graph by GLD (default 64).
    temperatures : float or (float, float or None)
        ``(student, teacher)``; a number sets both. The student's is applied to the pivot's
        logits by ULD and GLD; the teacher's is baked into the caches
        (``log_softmax(z / tau)``), so it is only checked against each cache's manifest
        (``None``: accept whatever the caches hold).
    uld_top_k : int, optional
        Entries of ULD's top-k variant (the only ULD a cache supports); default the
        smallest cached ``k``, i.e. as close to the full ULD as the caches allow.
    gld_graph : {"sequence", "batch"}
        One co-activation graph per sequence (default) or one per micro-batch, shared
        across data-parallel ranks by all-reduce.
    gld_options : mapping, optional
        Further :class:`fusion.GLDLoss` keywords (``values``, ``nodes``, ``chunk_size``).
    train_dataset : str, path-like, sequence of mapping or PromptResponseDataset
        The pivot's training examples, in the caches' order.
    eval_dataset : same types, optional
        Evaluated with CE only (no caches): ``eval_loss`` is the pivot's cross-entropy.
    processing_class : transformers.PreTrainedTokenizerBase
        The pivot's tokenizer (required unless ``data_collator`` is given).
    data_collator : callable, optional
        Default :class:`FusionCollator` over the teachers.
    max_length : int, optional
        Longest pivot sequence for the default collator.
    check_data : bool
        Refuse caches whose example count or content hash differs from ``train_dataset``.
    **kwargs
        Passed to :class:`transformers.Trainer`.

    Attributes
    ----------
    fusion_loss : fusion.FusionLoss
        The loss module (its ``repr`` shows every option).
    teachers : list of fusion.cache.TeacherCache
    last_components : dict of str to tensor
        ``ce``, ``uld``, ``gld`` (and per teacher ``uld/j``, ``gld/j``) of the last training
        micro-batch, unscaled means, detached.

    Notes
    -----
    *Logging.* Every log line of training gets ``ce``, ``uld`` and ``gld`` next to the
    Trainer's ``loss``: means over the micro-batches since the previous log, averaged over
    processes (per teacher as ``uld/j``, ``gld/j`` when there are several).

    *Gradient accumulation.* CE is a token mean and ULD/GLD are sequence means over the
    whole accumulation window (and over all ranks when ``average_tokens_across_devices``),
    so accumulating ``n`` micro-batches gives the gradient of one ``n`` times larger batch.
    With ``gld_graph="batch"`` the graph is per micro-batch (and across ranks), not per
    window.
    """

    # compute_loss normalises over the accumulation window itself (see _scales)
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: Any = None,
        args: Any = None,
        *,
        teachers: Sequence[TeacherSpec | tuple[TeacherSpec, float | None]] = (),
        lambda_: float = 0.5,
        beta: float = 1.0,
        k: int = 10,
        m: int = 64,
        temperatures: float | Sequence[float | None] = 1.0,
        uld_top_k: int | None = None,
        gld_graph: str = "sequence",
        gld_options: Mapping[str, Any] | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        data_collator: Any = None,
        max_length: int | None = None,
        check_data: bool = True,
        **kwargs: Any,
    ) -> None:
        caches, weights = _split_teachers(teachers)
        tau_s, tau_t = _temperatures(temperatures)
        if not caches and lambda_ != 0:
            raise ValueError("without teachers, lambda_ must be 0 (plain SFT)")
        uld_top_k = self._check_caches(caches, tau_t, k, uld_top_k)
        train_dataset = self._dataset(train_dataset, with_index=True)
        eval_dataset = self._dataset(eval_dataset, with_index=False)
        if check_data and train_dataset is not None:
            _check_alignment(train_dataset, caches)
        if data_collator is None:
            if processing_class is None:
                raise ValueError("pass processing_class= (the pivot's tokenizer) or data_collator=")
            data_collator = FusionCollator(
                processing_class, caches, max_length=max_length, k=max(k, uld_top_k or 1)
            )
        self.teachers = caches
        self.fusion_loss = FusionLoss(
            lambda_,
            beta,
            None if all(w is None for w in weights) else [1.0 if w is None else w for w in weights],
            gld=GLDLoss(k=k, m=m, temperature=tau_s, graph=gld_graph, **dict(gld_options or {})),
            uld=ULDLoss(
                student_temperature=tau_s, teacher_temperature=tau_t or 1.0, top_k=uld_top_k
            ),
        )
        self.last_components: dict[str, torch.Tensor] = {}
        self._log_sums: dict[str, torch.Tensor] = {}
        self._log_count = 0
        self._window: tuple[float, float, int] | None = None
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )

    # -- construction helpers ---------------------------------------------------------

    @staticmethod
    def _check_caches(
        caches: Sequence[TeacherCache], tau_t: float | None, k: int, uld_top_k: int | None
    ) -> int | None:
        if not caches:
            return uld_top_k
        smallest = min(c.k for c in caches)
        uld_top_k = smallest if uld_top_k is None else uld_top_k
        for j, cache in enumerate(caches):
            if max(k, uld_top_k) > cache.k:
                raise ValueError(
                    f"teacher {j} ({cache.path}) caches k={cache.k} entries; GLD needs k={k} "
                    f"and ULD uld_top_k={uld_top_k}"
                )
            if tau_t is not None and not math.isclose(cache.temperature, tau_t):
                raise ValueError(
                    f"teacher {j} ({cache.path}) was cached at temperature {cache.temperature}, "
                    f"not {tau_t}: rebuild the cache or pass temperatures=(student, "
                    f"{cache.temperature})"
                )
        return uld_top_k

    @staticmethod
    def _dataset(data: Any, *, with_index: bool) -> Any:
        if data is None or isinstance(data, PromptResponseDataset):
            return data
        if isinstance(data, str | os.PathLike) or isinstance(data, Sequence):
            return PromptResponseDataset(data, with_index=with_index)
        return data  # any other Dataset yielding the collator's fields

    def _get_collator_with_removed_columns(self, data_collator: Any, description: Any = None):
        # The Trainer would drop "prompt"/"response" (not forward() arguments) before our
        # collator could tokenise them.
        return data_collator

    # -- loss -------------------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any):
        """Fetch one accumulation window and count its target tokens and sequences.

        The counts make the loss of every micro-batch a share of the window's mean, so that
        accumulation equals one large batch (see :meth:`compute_loss`).
        """
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = torch.zeros(2, dtype=torch.float64)
        for b in batches:
            counts[0] += int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
            counts[1] += b["labels"].shape[0]
        world = 1
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            world = self.args.world_size
            counts = self.accelerator.gather(counts.to(device)).reshape(world, 2).sum(0).cpu()
        self._window = (float(counts[0]), float(counts[1]), world)
        return batches, num_items

    def _scales(self, n_tokens: torch.Tensor, n_seqs: int, training: bool):
        """Factors turning this micro-batch's sums into its share of the window's means."""
        if not training:
            return 1.0 / n_tokens.clamp_min(1), 1.0
        if self._window is None:  # training_step called outside train(): one micro-batch
            steps = self.args.gradient_accumulation_steps
            return 1.0 / (n_tokens.clamp_min(1) * steps), 1.0 / steps
        tokens, seqs, world = self._window
        # DDP averages gradients over ranks; the factor `world` undoes that for global means.
        return world / max(tokens, 1.0), n_seqs * world / max(seqs, 1.0)

    def compute_loss(
        self,
        model: Any,
        inputs: Mapping[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ):
        """Fusion loss of one micro-batch (its share of the accumulation window).

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
        model_inputs, labels, teachers, masks = split_batch(inputs)
        outputs = model(**model_inputs, use_cache=False)
        logits, targets = response_positions(outputs.logits, labels)
        student_mask = targets != IGNORE_INDEX
        ce_sum = F.cross_entropy(
            logits.float().flatten(0, 1),
            targets.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        n_tokens = student_mask.sum()
        training = model.training
        ce_scale, seq_scale = self._scales(n_tokens, labels.shape[0], training)
        ce_mean = ce_sum / n_tokens.clamp_min(1)
        if teachers:
            # FusionLoss weighs ce by (1 - lambda) and the rest by 1; passing ce / seq_scale
            # and multiplying back by seq_scale scales only the distillation terms.
            out = self.fusion_loss(
                logits,
                teachers,
                student_mask=student_mask,
                teacher_masks=masks,
                ce=ce_sum * ce_scale / seq_scale,
            )
            loss = out.total * seq_scale
        else:
            if training and self.teachers:
                raise ValueError(
                    "the training batch carries no teacher entries: its items need an 'index' "
                    "into the caches (PromptResponseDataset(..., with_index=True))"
                )
            out = None  # plain SFT, or the CE-only evaluation
            loss = ce_sum * ce_scale
        if training:
            self._record(ce_mean, out)
        return (loss, outputs) if return_outputs else loss

    # -- logging ----------------------------------------------------------------------

    def _record(self, ce: torch.Tensor, out: FusionLossOutput | None) -> None:
        parts = {"ce": ce.detach().float()}
        if out is not None:
            parts["uld"], parts["gld"] = out.uld.detach().float(), out.gld.detach().float()
            if len(out.uld_per_teacher) > 1:
                for j, (u, g) in enumerate(zip(out.uld_per_teacher, out.gld_per_teacher)):
                    parts[f"uld/{j}"], parts[f"gld/{j}"] = u.detach().float(), g.detach().float()
        self.last_components = parts
        for key, value in parts.items():
            self._log_sums[key] = self._log_sums.get(key, 0.0) + value
        self._log_count += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the loss components to the Trainer's training log lines."""
        if "loss" in logs and self._log_count:
            keys = sorted(self._log_sums)
            local = torch.stack([self._log_sums[key] for key in keys]) / self._log_count
            if self.args.world_size > 1:  # every rank logs at the same step
                gathered = self.accelerator.gather(local.to(self.args.device))
                local = gathered.reshape(-1, len(keys)).mean(0)
            logs.update({key: float(v) for key, v in zip(keys, local.cpu())})
            self._log_sums, self._log_count = {}, 0
        super().log(logs, start_time)


def _check_alignment(dataset: Any, caches: Sequence[TeacherCache]) -> None:
    """Refuse caches whose rows are not these training items (see fusion.cache)."""
    check_alignment(dataset, caches)
