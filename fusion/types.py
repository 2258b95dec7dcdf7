"""Small data types shared by the stages of the fusion pipeline."""

from __future__ import annotations

from typing import Any, NamedTuple


class TopK(NamedTuple):
    """A teacher's top entries per position, as a teacher cache stores them.

    Attributes
    ----------
    logprobs : torch.Tensor
        ``(B, T, k')`` values of ``log_softmax(teacher_logits / tau)`` at the kept
        entries, sorted in descending order along the last axis.
    indices : torch.Tensor
        ``(B, T, k')`` integer vocabulary ids of those entries (teacher vocabulary).
    """

    logprobs: Any
    indices: Any


class StudentTopK(NamedTuple):
    r"""The student's top entries per position, computed once and shared by every loss.

    Built by :func:`fusion.coactivation.student_topk` in one blockwise pass over the
    logits; :func:`fusion.gld_loss` and :func:`fusion.uld_loss` accept it in place of the
    logits, so a training step with several teachers and both losses selects, normalises
    and back-propagates through the student's logits once.

    Attributes
    ----------
    values : torch.Tensor
        ``(B, T, k_top)`` kept values, sorted in descending order, differentiable with
        respect to the logits (fp32, fp64 for fp64 logits).
    indices : torch.Tensor
        ``(B, T, k_top)`` int64 vocabulary ids of those entries.
    nll : torch.Tensor or None
        ``(B, T)`` per-position cross-entropy :math:`-\log \mathrm{softmax}(z_t)_{y_t}` at
        temperature 1 where a target was given, 0 elsewhere; ``None`` without targets.
    vocab_size : int
        Width of the logits.
    temperature : float
        The :math:`\tau` of the kept values.
    values_kind : str
        What the values hold: ``"prob"``, ``"logit"`` or ``"zscore"``.
    """

    values: Any
    indices: Any
    nll: Any
    vocab_size: int
    temperature: float
    values_kind: str
