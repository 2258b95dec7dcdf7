r"""Thin :class:`torch.nn.Module` wrappers that hold the losses' hyper-parameters.

All computation lives in :mod:`fusion.functional`; these classes only store options,
so that a training script can build the loss once and log it (``repr`` shows them).

References
----------
Y. Wang et al. InfiGFusion: Graph-on-Logits Distillation via Efficient
Gromov-Wasserstein for Model Fusion. arXiv 2505.13893 (2025).
N. Boizard et al. Towards Cross-Tokenizer Distillation: the Universal Logit
Distillation Loss for LLMs. arXiv 2402.12030 (2024).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from fusion._deprecation import renamed
from fusion.coactivation import (
    FEATURES,
    GRAPHS,
    NODES,
    VALUES,
    check_choice,
    normalize_mask,
    student_topk,
)
from fusion.functional import (
    REDUCTIONS,
    Student,
    Teacher,
    align_spans,
    check_jsd_options,
    gld_loss,
    jsd_loss,
    uld_loss,
)
from fusion.types import TopK
from fusion.validation import check_nan_policy

__all__ = [
    "FusionLoss",
    "FusionLossOutput",
    "GLDLoss",
    "JSDLoss",
    "ULDLoss",
    "check_teacher_weights",
]

#: logits up to this many entries take torch's fused cross-entropy in
#: :meth:`FusionLoss.cross_entropy` (4 Mi entries: a 16 MiB fp32 copy)
SMALL_CE_ELEMENTS = 1 << 22


class GLDLoss(nn.Module):
    r"""Graph-on-Logits Distillation loss; see :func:`fusion.gld_loss` for the definition.

    Parameters
    ----------
    k : int
        Entries of each position's distribution kept (default 10).
    m : int
        Largest degrees compared per graph with ``features="degrees"`` (default 64).
    temperature : float
        Softmax temperature :math:`\tau` (default 1).
    values : {"prob", "logit", "zscore"}
        ``"logit"`` and ``"zscore"`` need ``features="degrees"``.
    nodes : {"vocab", "rank"}
    graph : {"sequence", "batch"}
    features : {"shares", "degrees"}
        Degree-weighted co-activation shares, free of tokenizer granularity (default),
        or InfiGFusion's ``m`` largest degrees.
    reduction : {"mean", "sum", "none"}
    chunk_size : int, optional
        Positions per block of the top-k pass.
    process_group : optional
        All-reduce group for ``graph="batch"`` under :mod:`torch.distributed`.
    nan_policy : {"raise", "propagate"}
        Non-finite inputs raise ``ValueError`` (default) or give a NaN loss.

    Examples
    --------
    >>> import torch, fusion
    >>> loss_fn = fusion.GLDLoss(k=4, m=8)
    >>> loss = loss_fn(torch.randn(2, 5, 30), torch.randn(2, 6, 40))
    >>> loss.shape
    torch.Size([])
    """

    def __init__(
        self,
        k: int = 10,
        m: int = 64,
        temperature: float = 1.0,
        values: str = "prob",
        nodes: str = "vocab",
        graph: str = "sequence",
        reduction: str = "mean",
        *,
        features: str = "shares",
        chunk_size: int | None = None,
        process_group: Any = None,
        nan_policy: str = "raise",
    ) -> None:
        super().__init__()
        check_nan_policy(nan_policy)
        for name, value, choices in (
            ("values", values, VALUES),
            ("nodes", nodes, NODES),
            ("graph", graph, GRAPHS),
            ("features", features, FEATURES),
            ("reduction", reduction, REDUCTIONS),
        ):
            check_choice(name, value, choices)
        if features == "shares" and values != "prob":
            raise ValueError(
                f"values={values!r} gives signed kept values, which have no co-activation share: "
                "use features='degrees' with it, or values='prob'"
            )
        if k < 1 or m < 1 or not temperature > 0:
            raise ValueError(f"need k >= 1, m >= 1, temperature > 0; got {k}, {m}, {temperature}")
        self.k, self.m, self.temperature = k, m, temperature
        self.values, self.nodes, self.graph, self.reduction = values, nodes, graph, reduction
        self.features = features
        self.chunk_size, self.process_group = chunk_size, process_group
        self.nan_policy = nan_policy

    def forward(
        self,
        student_logits: Student,
        teacher: Teacher,
        student_mask: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """GLD between the student's logits and one teacher, with this module's options.

        Parameters
        ----------
        student_logits : tensor ``(B, T_s, V_s)`` or fusion.types.StudentTopK
            The student's logits (any float dtype; computed in fp32), or its top entries
            computed once for several losses (:func:`fusion.coactivation.student_topk`).
        teacher : tensor ``(B, T_t, V_t)`` or :class:`fusion.TopK`
            The teacher's logits, or its cached top-k log-probabilities.
        student_mask, teacher_mask : bool tensor ``(B, T_s)`` / ``(B, T_t)``, optional
            Positions that count on each side (default: all).

        Returns
        -------
        tensor
            The loss reduced by ``reduction`` (a 0-d tensor, or ``(B,)`` for ``"none"``);
            see :func:`fusion.gld_loss`.
        """
        return gld_loss(student_logits, teacher, student_mask, teacher_mask, **self.options())

    def options(self) -> dict[str, Any]:
        """The keywords of :func:`fusion.gld_loss` this module holds."""
        names = ("k", "m", "temperature", "values", "nodes", "graph", "features", "reduction")
        names = (*names, "chunk_size", "process_group", "nan_policy")
        return {name: getattr(self, name) for name in names}

    def extra_repr(self) -> str:
        """The options shown by ``repr(module)``."""
        return (
            f"k={self.k}, m={self.m}, temperature={self.temperature}, values={self.values!r}, "
            f"nodes={self.nodes!r}, graph={self.graph!r}, features={self.features!r}, "
            f"reduction={self.reduction!r}"
        )


class ULDLoss(nn.Module):
    r"""Universal Logit Distillation loss; see :func:`fusion.uld_loss`.

    Parameters
    ----------
    temperature, teacher_temperature : float
        :math:`\tau_s` of the student (named as in :class:`GLDLoss`) and :math:`\tau_t`.
    top_k : int, optional
        ``None``: full ULD (sorted distributions over the whole vocabularies); an int:
        the top-k variant of InfiFusion (needed for cached :class:`fusion.TopK` teachers).
    reduction : {"mean", "sum", "none"}
    chunk_size : int, optional
        Aligned positions per block of the full ULD.
    nan_policy : {"raise", "propagate"}
        Non-finite inputs raise ``ValueError`` (default) or give a NaN loss.
    student_temperature : float, optional
        Deprecated name of ``temperature`` (FutureWarning).
    """

    def __init__(
        self,
        temperature: float = 1.0,
        teacher_temperature: float = 1.0,
        top_k: int | None = None,
        reduction: str = "mean",
        *,
        chunk_size: int | None = None,
        nan_policy: str = "raise",
        student_temperature: float | None = None,
    ) -> None:
        super().__init__()
        student_temperature = renamed("student_temperature", student_temperature, temperature, 1.0)
        check_choice("reduction", reduction, REDUCTIONS)
        check_nan_policy(nan_policy)
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        for name, tau in (
            ("temperature", student_temperature),
            ("teacher_temperature", teacher_temperature),
        ):
            if not (isinstance(tau, int | float) and math.isfinite(tau) and tau > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {tau}")
        self.temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.top_k, self.reduction, self.chunk_size = top_k, reduction, chunk_size
        self.nan_policy = nan_policy

    def forward(
        self,
        student_logits: Student,
        teacher: Teacher,
        student_mask: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ULD between the student's logits and one teacher, with this module's options.

        Parameters
        ----------
        student_logits : tensor ``(B, T_s, V_s)`` or fusion.types.StudentTopK
            The student's logits, or (``top_k`` only) its precomputed top entries.
        teacher : tensor ``(B, T_t, V_t)`` or :class:`fusion.TopK`
            The teacher's logits, or its cached top-k log-probabilities (``top_k`` only).
        student_mask, teacher_mask : bool tensor ``(B, T_s)`` / ``(B, T_t)``, optional
            Response positions on each side; aligned by their start and truncated to the
            shorter span.

        Returns
        -------
        tensor
            The loss reduced by ``reduction``; see :func:`fusion.uld_loss`.
        """
        return uld_loss(student_logits, teacher, student_mask, teacher_mask, **self.options())

    def options(self) -> dict[str, Any]:
        """The keywords of :func:`fusion.uld_loss` this module holds."""
        names = ("temperature", "teacher_temperature", "top_k", "reduction", "chunk_size")
        return {name: getattr(self, name) for name in (*names, "nan_policy")}

    def extra_repr(self) -> str:
        """The options shown by ``repr(module)``."""
        return (
            f"temperature={self.temperature}, "
            f"teacher_temperature={self.teacher_temperature}, top_k={self.top_k}, "
            f"reduction={self.reduction!r}"
        )


class JSDLoss(nn.Module):
    r"""Generalised Jensen-Shannon divergence to a same-vocabulary teacher; see :func:`fusion.jsd_loss`.

    Parameters
    ----------
    beta : float
        In ``[0, 1]``: 0 the forward KL(teacher || student), 1 the reverse KL (TRL's
        convention, Agarwal et al. 2024 Eq. 1); default 0.5.
    temperature : float
        Divides the student's (and dense teacher) logits (default 1).
    reduction : {"mean", "sum", "none"}
        Mean over the unmasked positions by default.

    Examples
    --------
    >>> import torch, fusion
    >>> loss_fn = fusion.JSDLoss(beta=0.1)
    >>> loss_fn(torch.randn(2, 5, 30), torch.randn(2, 5, 30)).shape
    torch.Size([])
    """

    def __init__(
        self, beta: float = 0.5, temperature: float = 1.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        check_jsd_options(beta, temperature, reduction)
        self.beta, self.temperature, self.reduction = float(beta), float(temperature), reduction

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | TopK,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """JSD between the student and one same-vocabulary teacher, with these options.

        Parameters
        ----------
        student_logits : tensor ``(B, T, V)``
        teacher_logits : tensor ``(B, T, V)`` or :class:`fusion.TopK` ``(B, T, k)``
        mask : bool tensor ``(B, T)``, optional

        Returns
        -------
        tensor
            See :func:`fusion.jsd_loss`.
        """
        return jsd_loss(student_logits, teacher_logits, mask=mask, **self.options())

    def options(self) -> dict[str, Any]:
        """The keywords of :func:`fusion.jsd_loss` this module holds."""
        return {name: getattr(self, name) for name in ("beta", "temperature", "reduction")}

    def extra_repr(self) -> str:
        """The options shown by ``repr(module)``."""
        return f"beta={self.beta}, temperature={self.temperature}, reduction={self.reduction!r}"


def check_teacher_weights(weights: Sequence[Any]) -> tuple[float, ...]:
    """Validate teacher weights :math:`w_j`: finite numbers >= 0, not all zero.

    Raises
    ------
    ValueError
        Naming the first bad weight (``None``, a bool, a negative or non-finite number).
    """
    out = []
    for j, w in enumerate(weights):
        if w is None or isinstance(w, bool) or not isinstance(w, int | float):
            raise ValueError(
                f"teacher weight {j} is {w!r}: weights must be numbers (give every teacher one, "
                "or none at all for uniform weights 1/n)"
            )
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"teacher weight {j} is {w}: weights must be finite and >= 0")
        out.append(float(w))
    if out and not any(out):
        raise ValueError("every teacher weight is 0: use lambda_=0 for training without teachers")
    return tuple(out)


class FusionLossOutput(NamedTuple):
    r"""The total fusion loss and its components, for the optimiser and for logging.

    Every field is normalised by the counts :class:`FusionLoss` was given (by default
    this batch's target tokens and sequences), so that
    ``total == (1 - lambda_) * ce + lambda_ * (uld + beta * gld)`` holds exactly and,
    when each micro-batch is normalised by the counts of the whole accumulation window,
    the fields of the micro-batches add up to the window's values.

    Attributes
    ----------
    total : tensor
        :math:`(1-\lambda)\,\mathrm{CE} + \lambda \sum_j w_j (\mathrm{ULD}_j + \beta\,\mathrm{GLD}_j)`.
    ce : tensor
        The cross-entropy term (unweighted): summed token CE over ``num_tokens``.
    uld, gld : tensor
        :math:`\sum_j w_j \mathrm{ULD}_j` and :math:`\sum_j w_j \mathrm{GLD}_j` (unscaled by
        :math:`\lambda, \beta`): summed per-sequence values over ``num_sequences``.
    uld_per_teacher, gld_per_teacher : tuple of tensors
        One entry per teacher, unweighted.
    jsd : tensor or None
        With ``FusionLoss(jsd=...)``: :math:`\sum_j w_j \mathrm{JSD}_j`, summed per token
        over ``num_tokens`` (it then replaces ULD, whose fields are zeros); else ``None``.
    jsd_per_teacher : tuple of tensors
        One entry per teacher, unweighted (empty without ``jsd``).
    """

    total: torch.Tensor
    ce: torch.Tensor
    uld: torch.Tensor
    gld: torch.Tensor
    uld_per_teacher: tuple[torch.Tensor, ...]
    gld_per_teacher: tuple[torch.Tensor, ...]
    jsd: torch.Tensor | None = None
    jsd_per_teacher: tuple[torch.Tensor, ...] = ()

    def as_dict(self) -> dict[str, float]:
        """Python floats of the scalar components, keyed for a logger."""
        return {key: float(value.detach()) for key, value in self.components().items()}

    def components(self) -> dict[str, torch.Tensor]:
        """The fields as tensors keyed ``loss, ce, uld, gld, uld/j, gld/j`` (not detached).

        With JSD as the logit term, ``jsd`` and ``jsd/j`` take the place of ``uld``.
        """
        logit, name = (self.uld, self.uld_per_teacher), "uld"
        if self.jsd is not None:
            logit, name = (self.jsd, self.jsd_per_teacher), "jsd"
        out = {"loss": self.total, "ce": self.ce, name: logit[0], "gld": self.gld}
        for j, (u, g) in enumerate(zip(logit[1], self.gld_per_teacher)):
            out[f"{name}/{j}"], out[f"gld/{j}"] = u, g
        return out


class FusionLoss(nn.Module):
    r"""InfiGFusion's training objective over one or several teachers.

    .. math::

        \mathcal L = (1 - \lambda)\,\frac{\sum_t \mathrm{CE}_t}{N_{\mathrm{tok}}} + \lambda
        \sum_j w_j \, \frac{\sum_b \big(\mathrm{ULD}_{jb} + \beta\,\mathrm{GLD}_{jb}\big)}
        {N_{\mathrm{seq}}}.

    The student's logits are read once: one blockwise pass selects the top entries that
    every loss and every teacher needs (the largest of GLD's ``k`` and ULD's ``top_k``)
    and computes the per-token cross-entropy along the way
    (:func:`fusion.coactivation.student_topk`); one backward pass writes the gradient
    of all of them. ULD and GLD are computed per sequence and normalised here, so the
    sub-losses' ``reduction`` must be ``"mean"`` (their default).

    Parameters
    ----------
    lambda_ : float
        Weight of distillation against cross-entropy, in ``[0, 1]``.
    beta : float
        Weight of GLD relative to ULD (``0`` skips GLD).
    teacher_weights : sequence of float, optional
        :math:`w_j \ge 0`, one per teacher; uniform :math:`1/n` by default, so one teacher
        has weight 1. Used as given (not renormalised).
    gld : GLDLoss, optional
        GLD options (default :class:`GLDLoss()`).
    uld : ULDLoss, optional
        ULD options (default :class:`ULDLoss()`, the full ULD; cached TopK teachers need
        ``ULDLoss(top_k=K)``, which also lets GLD and ULD share the student's top-k).
    ignore_index : int
        Label value ignored by the cross-entropy (and outside the default student mask).
    jsd : JSDLoss, optional
        For teachers that share the student's vocabulary (and tokenizer): the generalised
        JSD (:func:`fusion.jsd_loss`) replaces ULD as the logit term,
        :math:`\mathcal L = (1-\lambda)\,\mathrm{CE} + \lambda \sum_j w_j
        (\mathrm{JSD}_j + \beta\,\mathrm{GLD}_j)`, with JSD summed over the aligned
        positions (the j-th unmasked student position with the j-th unmasked teacher
        position, :func:`fusion.functional.align_spans`) over ``num_tokens``, the token
        mean of TRL's GKD. Its ``reduction`` must be ``"mean"``.

    Examples
    --------
    >>> import torch, fusion
    >>> loss_fn = fusion.FusionLoss(0.5, 1.0, gld=fusion.GLDLoss(k=4), uld=fusion.ULDLoss(top_k=4))
    >>> student = torch.randn(2, 6, 40, requires_grad=True)
    >>> labels = torch.randint(0, 40, (2, 6))
    >>> out = loss_fn(student, [torch.randn(2, 7, 30), torch.randn(2, 5, 50)], labels)
    >>> out.total.backward()
    >>> sorted(out.as_dict())
    ['ce', 'gld', 'gld/0', 'gld/1', 'loss', 'uld', 'uld/0', 'uld/1']
    """

    def __init__(
        self,
        lambda_: float = 0.5,
        beta: float = 1.0,
        teacher_weights: Sequence[float] | None = None,
        *,
        gld: GLDLoss | None = None,
        uld: ULDLoss | None = None,
        ignore_index: int = -100,
        jsd: JSDLoss | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"lambda_ must lie in [0, 1], got {lambda_}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        self.lambda_, self.beta = float(lambda_), float(beta)
        self.teacher_weights = (
            None if teacher_weights is None else check_teacher_weights(teacher_weights)
        )
        self.gld = gld if gld is not None else GLDLoss()
        self.uld = uld if uld is not None else ULDLoss()
        self.jsd = jsd
        for name, sub in (("gld", self.gld), ("uld", self.uld), ("jsd", jsd)):
            if sub is not None and sub.reduction != "mean":
                raise ValueError(
                    f"FusionLoss normalises the {name} term itself (num_sequences=); build the "
                    f"{type(sub).__name__} with reduction='mean', not {sub.reduction!r}"
                )
        self.ignore_index = ignore_index

    def _weights(self, n: int) -> tuple[float, ...]:
        if self.teacher_weights is None:
            return (1.0 / n,) * n
        if len(self.teacher_weights) != n:
            raise ValueError(f"{len(self.teacher_weights)} teacher_weights for {n} teachers")
        return self.teacher_weights

    def _student_passes(
        self, logits: torch.Tensor, targets: torch.Tensor | None, use_uld: bool, use_gld: bool
    ) -> tuple[Student, Student, torch.Tensor | None]:
        """The student inputs of ULD and GLD, and the token NLL, in as few top-k passes as
        their options allow: one pass per distinct (temperature, values), at the largest
        ``k`` that any loss of that group needs (the CE rides on the first pass)."""
        wanted: dict[str, tuple[int, float, str]] = {}
        if use_gld:
            wanted["gld"] = (self.gld.k, self.gld.temperature, self.gld.values)
        if use_uld and self.uld.top_k is not None:  # the full ULD reads the logits
            wanted["uld"] = (self.uld.top_k, self.uld.temperature, "prob")
        groups: list[tuple[float, str, list[str]]] = []
        for name, (_, tau, values) in wanted.items():
            group = next((g for g in groups if g[1] == values and math.isclose(g[0], tau)), None)
            if group is None:
                groups.append((tau, values, [name]))
            else:
                group[2].append(name)
        inputs: dict[str, Student] = {"uld": logits, "gld": logits}
        nll, ce_targets = None, targets
        for tau, values, names in groups:
            k = min(max(wanted[n][0] for n in names), logits.shape[-1])
            st = student_topk(
                logits,
                k,
                temperature=tau,
                values=values,
                targets=ce_targets,
                ignore_index=self.ignore_index,
                chunk_size=self.gld.chunk_size,
            )
            if ce_targets is not None:
                nll, ce_targets = st.nll, None
            inputs.update(dict.fromkeys(names, st))
        if ce_targets is not None:  # CE alone: a top-1 pass keeps it blockwise
            nll = student_topk(
                logits,
                1,
                targets=ce_targets,
                ignore_index=self.ignore_index,
                chunk_size=self.gld.chunk_size,
            ).nll
        return inputs["uld"], inputs["gld"], nll

    def forward(
        self,
        student_logits: torch.Tensor,
        teachers: Teacher | Sequence[Teacher],
        labels: torch.Tensor | None = None,
        *,
        student_mask: torch.Tensor | None = None,
        teacher_masks: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
        ce_sum: torch.Tensor | None = None,
        num_tokens: float | torch.Tensor | None = None,
        num_sequences: float | torch.Tensor | None = None,
    ) -> FusionLossOutput:
        r"""Total loss and components.

        Parameters
        ----------
        student_logits : tensor ``(B, T_s, V_s)``
            Any floating dtype; bf16 logits are read in bf16 (computed in fp32 block by
            block, never copied).
        teachers : teacher or sequence of teachers
            Each as logits ``(B, T_j, V_j)`` or a cached :class:`fusion.TopK`.
        labels : long tensor ``(B, T_s)``, optional
            Next-token targets aligned with ``student_logits`` (already shifted);
            ``ignore_index`` marks positions without a target.
        student_mask : bool tensor ``(B, T_s)``, optional
            Positions distilled; by default ``labels != ignore_index`` when labels are
            given, else all positions.
        teacher_masks : mask or sequence of masks, optional
            One bool ``(B, T_j)`` mask per teacher (``None`` entries: all positions).
        ce_sum : tensor, optional
            A precomputed *sum* of the per-token cross-entropy (e.g. from a fused LM
            head), used instead of the one computed from ``labels``.
        num_tokens : number or tensor, optional
            Denominator of the CE: by default this batch's target tokens (the positions
            with a label). Pass the target tokens of the whole accumulation window (and of
            all ranks) to get this micro-batch's share of the window's token mean.
        num_sequences : number or tensor, optional
            Denominator of ULD and GLD, which are summed over sequences (a batch graph
            counts for its ``B`` sequences): by default ``B``.

        Returns
        -------
        FusionLossOutput
        """
        if isinstance(teachers, torch.Tensor | TopK):
            teachers = [teachers]
        teachers = list(teachers)
        if not teachers:
            raise ValueError("FusionLoss needs at least one teacher")
        if teacher_masks is None or isinstance(teacher_masks, torch.Tensor):
            teacher_masks = [teacher_masks] * len(teachers)
        if len(teacher_masks) != len(teachers):
            raise ValueError(f"{len(teacher_masks)} teacher masks for {len(teachers)} teachers")
        if student_logits.ndim != 3:
            raise ValueError(
                f"student_logits must be (B, T_s, V_s), got {tuple(student_logits.shape)}"
            )
        if labels is not None and tuple(labels.shape) != tuple(student_logits.shape[:2]):
            raise ValueError(
                f"labels must have shape {tuple(student_logits.shape[:2])} (aligned with the "
                f"logits), got {tuple(labels.shape)}"
            )
        weights = self._weights(len(teachers))
        use_uld = self.lambda_ > 0
        use_gld = use_uld and self.beta > 0
        if labels is None and ce_sum is None and self.lambda_ < 1.0:
            raise ValueError("lambda_ < 1 needs labels= or a precomputed ce_sum=")
        if student_mask is None and labels is not None:
            student_mask = labels != self.ignore_index
        targets = labels if ce_sum is None else None
        use_jsd = use_uld and self.jsd is not None
        use_uld = use_uld and not use_jsd
        for_uld, for_gld, nll = self._student_passes(student_logits, targets, use_uld, use_gld)
        work = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
        zero = torch.zeros((), dtype=work, device=student_logits.device)
        if ce_sum is None:
            ce_sum = nll.sum() if nll is not None else zero
        if num_tokens is None:
            if labels is None:
                raise ValueError("ce_sum= needs num_tokens= (or labels= to count them)")
            num_tokens = (labels != self.ignore_index).sum()
        batch = student_logits.shape[0]
        seqs = batch if num_sequences is None else num_sequences
        ce = ce_sum.to(work) / torch.as_tensor(num_tokens, dtype=work).clamp_min(1)
        per_seq = 1.0 / torch.as_tensor(seqs, dtype=work, device=ce.device)
        per_tok = 1.0 / torch.as_tensor(num_tokens, dtype=work, device=ce.device).clamp_min(1)
        uld_each, gld_each, jsd_each = [], [], []
        for teacher, mask in zip(teachers, teacher_masks):
            uld_each.append(
                self._uld_sum(for_uld, teacher, student_mask, mask) * per_seq if use_uld else zero
            )
            if use_jsd:
                jsd_each.append(
                    self._jsd_sum(student_logits, teacher, student_mask, mask) * per_tok
                )
            gld_each.append(
                self._gld_sum(for_gld, teacher, student_mask, mask, batch) * per_seq
                if use_gld
                else zero
            )
        uld = sum(w * u for w, u in zip(weights, uld_each))
        gld = sum(w * g for w, g in zip(weights, gld_each))
        jsd = sum(w * d for w, d in zip(weights, jsd_each)) if use_jsd else None
        logit_term = jsd if use_jsd else uld
        total = (1.0 - self.lambda_) * ce + self.lambda_ * (logit_term + self.beta * gld)
        if self.jsd is None:
            return FusionLossOutput(total, ce, uld, gld, tuple(uld_each), tuple(gld_each))
        jsd = zero if jsd is None else jsd
        jsd_each = jsd_each or [zero] * len(teachers)
        return FusionLossOutput(
            total, ce, uld, gld, tuple(uld_each), tuple(gld_each), jsd, tuple(jsd_each)
        )

    def cross_entropy(
        self,
        student_logits: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_tokens: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The CE term alone (no teacher), normalised like :meth:`forward`'s ``ce``.

        Summed token cross-entropy over ``num_tokens`` (default: the labelled positions).
        Large logits are read block by block without an fp32 copy
        (:func:`fusion.coactivation.student_topk`); logits of at most
        ``SMALL_CE_ELEMENTS`` entries go through torch's fused cross-entropy in fp32,
        which is faster there and whose copy is then smaller than one block buffer.
        """
        if labels.shape != student_logits.shape[:-1]:
            raise ValueError(
                f"labels must have shape {tuple(student_logits.shape[:-1])}, got {tuple(labels.shape)}"
            )
        if student_logits.numel() <= SMALL_CE_ELEMENTS:
            total = nn.functional.cross_entropy(
                student_logits.flatten(0, -2).float(),
                labels.flatten(),
                ignore_index=self.ignore_index,
                reduction="sum",
            )
        else:
            total = student_topk(
                student_logits,
                1,
                targets=labels,
                ignore_index=self.ignore_index,
                chunk_size=self.gld.chunk_size,
            ).nll.sum()
        if num_tokens is None:
            num_tokens = (labels != self.ignore_index).sum()
        return total / torch.as_tensor(num_tokens, dtype=total.dtype).clamp_min(1)

    def _uld_sum(self, student: Student, teacher, student_mask, teacher_mask) -> torch.Tensor:
        options = {**self.uld.options(), "reduction": "sum"}
        return uld_loss(student, teacher, student_mask, teacher_mask, **options)

    def _jsd_sum(self, student: torch.Tensor, teacher, student_mask, teacher_mask):
        """JSD summed over the aligned positions (the j-th of the student with the j-th of the
        teacher), so a teacher whose rows start at its response lines up with the pivot."""
        t_vals = teacher.logprobs if isinstance(teacher, TopK) else teacher
        batch, t_len = t_vals.shape[:2]
        device = student.device
        s_mask = normalize_mask(student_mask, batch, student.shape[1], device)
        spans = align_spans(s_mask, normalize_mask(teacher_mask, batch, t_len, device))
        rows = (spans.teacher_seq, spans.teacher_pos)
        if isinstance(teacher, TopK):
            t_rows = TopK(teacher.logprobs[rows][None], teacher.indices[rows][None])
        else:
            t_rows = teacher[rows][None]
        s_rows = student[spans.student_seq, spans.student_pos][None]
        j = self.jsd
        return jsd_loss(s_rows, t_rows, beta=j.beta, temperature=j.temperature, reduction="sum")

    def _gld_sum(self, student: Student, teacher, student_mask, teacher_mask, batch: int):
        # the student's top-k was taken already: chunk_size has no pass left to size
        options = {**self.gld.options(), "reduction": "none", "chunk_size": None}
        per_graph = gld_loss(student, teacher, student_mask, teacher_mask, **options)
        # a batch graph stands for all B sequences of the micro-batch
        return per_graph[0] * batch if self.gld.graph == "batch" else per_graph.sum()

    def extra_repr(self) -> str:
        """The options shown by ``repr(module)``."""
        return f"lambda_={self.lambda_}, beta={self.beta}, teacher_weights={self.teacher_weights}"
