r"""The fusion loss inside any :class:`transformers.Trainer`: :class:`FusionTrainingMixin`.

The loss, its exact normalisation over accumulation windows and ranks, on-policy batches,
logging and evaluation, shared by :class:`fusion.training.FusionTrainer` (over
:class:`transformers.Trainer`) and :class:`fusion.trl.FusionSFTTrainer` (over TRL's
``SFTTrainer``). Also importable from :mod:`fusion.training`.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from fusion.batches import (
    IGNORE_INDEX,
    ULD_TOP_K,
    FusionBatch,
    FusionCollator,
    response_positions,
    split_batch,
)
from fusion.cache import (
    TeacherCache,
)
from fusion.modules import FusionLoss, GLDLoss, JSDLoss, ULDLoss
from fusion.onpolicy import (
    DISTILLATIONS,
    PROMPTS_KEY,
    OnPolicy,
    check_shared_tokenizer,
    check_shared_vocabulary,
    most_entries,
)
from fusion.teachers import OnlineInputs, OnlineTeacher, Teacher, resolve_teacher, split_teachers
from fusion.types import TopK

__all__ = ["FusionTrainingMixin"]


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

    Mixed into :class:`fusion.training.FusionTrainer` (over :class:`transformers.Trainer`) and
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
            A :class:`fusion.batches.FusionCollator` batch.
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
