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
