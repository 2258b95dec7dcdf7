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

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from fusion.coactivation import GRAPHS, NODES, VALUES, check_choice
from fusion.functional import REDUCTIONS, Teacher, gld_loss, uld_loss
from fusion.types import TopK

__all__ = ["FusionLoss", "FusionLossOutput", "GLDLoss", "ULDLoss"]


class GLDLoss(nn.Module):
    r"""Graph-on-Logits Distillation loss; see :func:`fusion.gld_loss` for the definition.

    Parameters
    ----------
    k : int
        Entries of each position's distribution kept (default 10).
    m : int
        Largest degrees compared per graph (default 64).
    temperature : float
        Softmax temperature :math:`\tau` (default 1).
    values : {"prob", "logit", "zscore"}
    nodes : {"vocab", "rank"}
    graph : {"sequence", "batch"}
    reduction : {"mean", "sum", "none"}
    chunk_size : int, optional
        Positions per block of the top-k pass.
    process_group : optional
        All-reduce group for ``graph="batch"`` under :mod:`torch.distributed`.

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
        chunk_size: int | None = None,
        process_group: Any = None,
    ) -> None:
        super().__init__()
        for name, value, choices in (
            ("values", values, VALUES),
            ("nodes", nodes, NODES),
            ("graph", graph, GRAPHS),
            ("reduction", reduction, REDUCTIONS),
        ):
            check_choice(name, value, choices)
        if k < 1 or m < 1 or temperature <= 0:
            raise ValueError(f"need k >= 1, m >= 1, temperature > 0; got {k}, {m}, {temperature}")
        self.k, self.m, self.temperature = k, m, temperature
        self.values, self.nodes, self.graph, self.reduction = values, nodes, graph, reduction
        self.chunk_size, self.process_group = chunk_size, process_group

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher: Teacher,
        student_mask: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """GLD between the student's logits and one teacher, with this module's options.

        Parameters
        ----------
        student_logits : tensor ``(B, T_s, V_s)``
            The student's logits (any float dtype; computed in fp32).
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
        return gld_loss(
            student_logits,
            teacher,
            student_mask,
            teacher_mask,
            k=self.k,
            m=self.m,
            temperature=self.temperature,
            values=self.values,
            nodes=self.nodes,
            graph=self.graph,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
            process_group=self.process_group,
        )

    def extra_repr(self) -> str:
        """The options shown by ``repr(module)``."""
        return (
            f"k={self.k}, m={self.m}, temperature={self.temperature}, values={self.values!r}, "
            f"nodes={self.nodes!r}, graph={self.graph!r}, reduction={self.reduction!r}"
        )


class ULDLoss(nn.Module):
    r"""Universal Logit Distillation loss; see :func:`fusion.uld_loss`.

    Parameters
    ----------
    student_temperature, teacher_temperature : float
    top_k : int, optional
        ``None``: full ULD (sorted distributions over the whole vocabularies); an int:
        the top-k variant of InfiFusion (needed for cached :class:`fusion.TopK` teachers).
    reduction : {"mean", "sum", "none"}
    chunk_size : int, optional
        Aligned positions per block of the full ULD.
    """

    def __init__(
        self,
        student_temperature: float = 1.0,
        teacher_temperature: float = 1.0,
        top_k: int | None = None,
        reduction: str = "mean",
        *,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        check_choice("reduction", reduction, REDUCTIONS)
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.top_k, self.reduction, self.chunk_size = top_k, reduction, chunk_size

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher: Teacher,
        student_mask: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ULD between the student's logits and one teacher, with this module's options.

        Parameters
        ----------
        student_logits : tensor ``(B, T_s, V_s)``
            The student's logits.
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
        return uld_loss(
            student_logits,
            teacher,
            student_mask,
            teacher_mask,
            student_temperature=self.student_temperature,
            teacher_temperature=self.teacher_temperature,
            top_k=self.top_k,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        """The options shown by ``repr(module)``."""
        return (
            f"student_temperature={self.student_temperature}, "
            f"teacher_temperature={self.teacher_temperature}, top_k={self.top_k}, "
            f"reduction={self.reduction!r}"
        )


class FusionLossOutput(NamedTuple):
    r"""The total fusion loss and its components, for the optimiser and for logging.

    Attributes
    ----------
    total : tensor
        :math:`(1-\lambda)\,\mathrm{CE} + \lambda \sum_j w_j (\mathrm{ULD}_j + \beta\,\mathrm{GLD}_j)`.
    ce : tensor
        The cross-entropy term (unweighted).
    uld, gld : tensor
        :math:`\sum_j w_j \mathrm{ULD}_j` and :math:`\sum_j w_j \mathrm{GLD}_j` (unscaled by
        :math:`\lambda, \beta`).
    uld_per_teacher, gld_per_teacher : tuple of tensors
        One entry per teacher, unweighted.
    """

    total: torch.Tensor
    ce: torch.Tensor
    uld: torch.Tensor
    gld: torch.Tensor
    uld_per_teacher: tuple[torch.Tensor, ...]
    gld_per_teacher: tuple[torch.Tensor, ...]

    def as_dict(self) -> dict[str, float]:
        """Python floats of the scalar components, keyed for a logger."""
        out = {"loss": self.total, "ce": self.ce, "uld": self.uld, "gld": self.gld}
        for j, (u, g) in enumerate(zip(self.uld_per_teacher, self.gld_per_teacher)):
            out[f"uld/{j}"], out[f"gld/{j}"] = u, g
        return {key: float(value.detach()) for key, value in out.items()}


class FusionLoss(nn.Module):
    r"""InfiGFusion's training objective over one or several teachers.

    .. math::

        \mathcal L = (1 - \lambda)\,\mathrm{CE} + \lambda \sum_j w_j
        \big(\mathrm{ULD}_j + \beta\,\mathrm{GLD}_j\big).

    Parameters
    ----------
    lambda_ : float
        Weight of distillation against cross-entropy, in ``[0, 1]``.
    beta : float
        Weight of GLD relative to ULD (``0`` skips GLD).
    teacher_weights : sequence of float, optional
        :math:`w_j`, one per teacher; uniform :math:`1/n` by default, so one teacher has
        weight 1. Used as given (not renormalised).
    gld : GLDLoss, optional
        GLD options (default :class:`GLDLoss()`).
    uld : ULDLoss, optional
        ULD options (default :class:`ULDLoss()`, the full ULD; cached TopK teachers need
        ``ULDLoss(top_k=K)``).
    ignore_index : int
        Label value ignored by the cross-entropy (and outside the default student mask).
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
    ) -> None:
        super().__init__()
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"lambda_ must lie in [0, 1], got {lambda_}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.lambda_, self.beta = float(lambda_), float(beta)
        self.teacher_weights = (
            None if teacher_weights is None else tuple(map(float, teacher_weights))
        )
        self.gld = gld if gld is not None else GLDLoss()
        self.uld = uld if uld is not None else ULDLoss()
        self.ignore_index = ignore_index

    def _weights(self, n: int) -> tuple[float, ...]:
        if self.teacher_weights is None:
            return (1.0 / n,) * n
        if len(self.teacher_weights) != n:
            raise ValueError(f"{len(self.teacher_weights)} teacher_weights for {n} teachers")
        return self.teacher_weights

    def _cross_entropy(self, logits, labels, ce) -> torch.Tensor:
        if ce is not None:
            return ce
        if labels is None:
            if self.lambda_ < 1.0:
                raise ValueError("lambda_ < 1 needs labels= or a precomputed ce=")
            return logits.new_zeros((), dtype=torch.float32)
        return nn.functional.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), ignore_index=self.ignore_index
        )

    def forward(
        self,
        student_logits: torch.Tensor,
        teachers: Teacher | Sequence[Teacher],
        labels: torch.Tensor | None = None,
        *,
        student_mask: torch.Tensor | None = None,
        teacher_masks: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
        ce: torch.Tensor | None = None,
    ) -> FusionLossOutput:
        r"""Total loss and components.

        Parameters
        ----------
        student_logits : tensor ``(B, T_s, V_s)``
        teachers : teacher or sequence of teachers
            Each as logits ``(B, T_j, V_j)`` or a cached :class:`fusion.TopK`.
        labels : long tensor ``(B, T_s)``, optional
            Next-token targets aligned with ``student_logits`` (already shifted);
            ``ignore_index`` marks positions without a target.
        student_mask : bool tensor ``(B, T_s)``, optional
            Positions distilled; by default ``labels != ignore_index`` when labels are
            given, else all positions.
        teacher_masks : mask or sequence of masks, optional
            One ``(B, T_j)`` mask per teacher (``None`` entries: all positions).
        ce : tensor, optional
            A precomputed cross-entropy (e.g. a model's own ``outputs.loss``).
        """
        if isinstance(teachers, (torch.Tensor, TopK)):
            teachers = [teachers]
        teachers = list(teachers)
        if not teachers:
            raise ValueError("FusionLoss needs at least one teacher")
        if teacher_masks is None or isinstance(teacher_masks, torch.Tensor):
            teacher_masks = [teacher_masks] * len(teachers)
        if len(teacher_masks) != len(teachers):
            raise ValueError(f"{len(teacher_masks)} teacher masks for {len(teachers)} teachers")
        if student_mask is None and labels is not None:
            student_mask = labels != self.ignore_index
        weights = self._weights(len(teachers))
        ce_value = self._cross_entropy(student_logits, labels, ce)
        zero = ce_value.new_zeros(()).float()
        uld_each, gld_each = [], []
        for teacher, mask in zip(teachers, teacher_masks):
            distil = self.lambda_ > 0
            uld_each.append(
                self.uld(student_logits, teacher, student_mask, mask) if distil else zero
            )
            use_gld = distil and self.beta > 0
            gld_each.append(
                self.gld(student_logits, teacher, student_mask, mask) if use_gld else zero
            )
        uld = sum(w * u for w, u in zip(weights, uld_each))
        gld = sum(w * g for w, g in zip(weights, gld_each))
        total = (1.0 - self.lambda_) * ce_value + self.lambda_ * (uld + self.beta * gld)
        return FusionLossOutput(total, ce_value, uld, gld, tuple(uld_each), tuple(gld_each))

    def extra_repr(self) -> str:
        """The options shown by ``repr(module)``."""
        return f"lambda_={self.lambda_}, beta={self.beta}, teacher_weights={self.teacher_weights}"
