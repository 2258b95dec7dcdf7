r"""One input check shared by every distillation loss: finite logits, valid cached top-k.

A non-finite logit is never a modelling choice: it means the model (or the cache) is
broken. Left alone it does the worst thing a loss can do, a *finite* loss with NaN
gradients (top-k selection and sorting drop the NaN from the value, not from the
backward pass), so a ``torch.isnan(loss)`` guard in the training loop never fires.
Every loss therefore takes ``nan_policy``:

``"raise"`` (default)
    A ``ValueError`` naming the tensor, the kind of value and its first position.
``"propagate"``
    The loss of every affected sequence is NaN (so the NaN shows where a training loop
    looks), and the check costs no host synchronisation at all.

The check reads each tensor once with two reductions per sequence (``amax``/``amin``):
NaN propagates through both, ``+inf``/``-inf`` show in one of them. Unlike
``torch.isfinite(x).all()`` it allocates nothing of the logits' size, and it reads
strided views (``logits[:, :-1]``) without a copy. In ``"raise"`` mode the verdicts of
the student and the teacher are combined before the single host synchronisation.

A cached :class:`fusion.TopK` holds log-probabilities, which are ``<= 0``; a positive one
means the cache holds something else (logits, probabilities) and is refused the same way.
"""

from __future__ import annotations

import torch

from fusion.types import StudentTopK, TopK

__all__ = ["NAN_POLICIES", "check_nan_policy", "nan_where", "nonfinite_sequences", "zero_where"]

NAN_POLICIES = ("raise", "propagate")


def check_nan_policy(nan_policy: str) -> None:
    """Refuse a ``nan_policy`` other than ``"raise"`` or ``"propagate"``."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")


def _tensor_of(x: torch.Tensor | TopK | StudentTopK) -> torch.Tensor:
    if isinstance(x, TopK):
        return x.logprobs
    if isinstance(x, StudentTopK):
        return x.values
    return x


def _bad_rows(x: torch.Tensor, batch: int) -> torch.Tensor:
    """``(B,)`` bool: sequences holding a NaN or an infinite value (no host sync)."""
    if x.numel() == 0:
        return torch.zeros(batch, dtype=torch.bool, device=x.device)
    dims = tuple(range(1, x.ndim))
    return ~(torch.isfinite(x.amax(dim=dims)) & torch.isfinite(x.amin(dim=dims)))


def _positive_rows(x: torch.Tensor, batch: int) -> torch.Tensor:
    """``(B,)`` bool: sequences of a TopK holding a positive log-probability."""
    if x.numel() == 0:
        return torch.zeros(batch, dtype=torch.bool, device=x.device)
    return x.amax(dim=tuple(range(1, x.ndim))) > 0


def _describe(name: str, x: torch.Tensor, log_probs: bool) -> str | None:
    """The first problem of one tensor in words (only on the error path)."""
    for kind, hit in (
        ("NaN", torch.isnan(x)),
        ("+inf", torch.isposinf(x)),
        ("-inf", torch.isneginf(x)),
        ("a positive log-probability", (x > 0) if log_probs else None),
    ):
        if hit is not None and bool(hit.any()):
            where = tuple(int(i) for i in hit.nonzero()[0])
            return f"{name} holds {kind} at index {where}"
    return None


def _raise(named: list[tuple[str, torch.Tensor, bool]]) -> None:
    problems = [p for p in (_describe(*item) for item in named) if p is not None]
    raise ValueError(
        "; ".join(problems) + ": the loss needs finite logits (and TopK log-probabilities "
        "<= 0). A non-finite logit means the model or the cache is broken; pass "
        "nan_policy='propagate' to get a NaN loss for the affected sequences instead"
    )


def nonfinite_sequences(
    student: torch.Tensor | StudentTopK,
    teacher: torch.Tensor | TopK,
    *,
    nan_policy: str = "raise",
) -> torch.Tensor | None:
    """Check a loss's inputs; the sequences whose loss must be NaN, or ``None``.

    Parameters
    ----------
    student : tensor ``(B, T_s, V_s)`` or StudentTopK
        Logits (or their precomputed top entries).
    teacher : tensor ``(B, T_t, V_t)`` or TopK
        Logits, or cached log-probabilities (which must also be ``<= 0``).
    nan_policy : {"raise", "propagate"}

    Returns
    -------
    None or bool tensor ``(B,)``
        ``None`` under ``"raise"`` (after checking); under ``"propagate"`` the sequences
        whose inputs are invalid, for the caller to set their loss to NaN.

    Raises
    ------
    ValueError
        Under ``"raise"``, naming the tensor, the kind of value and its first index.
    """
    check_nan_policy(nan_policy)
    s, t = _tensor_of(student), _tensor_of(teacher)
    batch = s.shape[0]
    bad = _bad_rows(s, batch).to(t.device) | _bad_rows(t, batch)
    if isinstance(teacher, TopK):
        bad = bad | _positive_rows(t, batch)
    if nan_policy == "propagate":
        return bad
    if bool(bad.any()):  # the one host sync of the check
        _raise([("student_logits", s, False), ("teacher", t, isinstance(teacher, TopK))])
    return None


def nan_where(per_item: torch.Tensor, bad: torch.Tensor | None) -> torch.Tensor:
    """``per_item`` with NaN where ``bad`` (a ``(B,)`` mask, or its any() for one graph)."""
    if bad is None:
        return per_item
    if per_item.shape[0] != bad.shape[0]:
        bad = bad.any().reshape(1).expand(per_item.shape[0])
    nan = torch.full((), float("nan"), dtype=per_item.dtype, device=per_item.device)
    return torch.where(bad.to(per_item.device), nan, per_item)


def zero_where(vals: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """``(B, T, k)`` kept values with the sequences flagged by ``bad`` set to 0."""
    zero = torch.zeros((), dtype=vals.dtype, device=vals.device)
    return torch.where(bad.to(vals.device)[:, None, None], zero, vals)
