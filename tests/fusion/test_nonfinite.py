"""Issue 24, cases 1-2: losses refuse non-finite inputs, or show them as a NaN loss.

Never a finite loss with NaN gradients: with the default ``nan_policy="raise"`` a NaN or
infinite logit (student or teacher) and a cached TopK with NaN or positive
log-probabilities raise a ValueError naming the tensor; with ``"propagate"`` the
affected sequence's loss is NaN and the others are unchanged.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fusion
from fusion import TopK

BAD = {"NaN": float("nan"), "+inf": float("inf"), "-inf": float("-inf")}


def _teacher_topk(batch: int, length: int, vocab: int, k: int) -> TopK:
    lp = torch.log_softmax(torch.randn(batch, length, vocab), dim=-1)
    vals, idx = torch.topk(lp, k, dim=-1)
    return TopK(vals, idx)


LOSSES = {
    "gld": lambda **kw: fusion.GLDLoss(k=4, **kw),
    "gld-degrees": lambda **kw: fusion.GLDLoss(k=4, m=6, features="degrees", **kw),
    "uld": lambda **kw: fusion.ULDLoss(**kw),
    "uld-topk": lambda **kw: fusion.ULDLoss(top_k=4, **kw),
}


def test_issue_example_gld_nan_student_raises():
    """The issue's reproduction: loss 0.165 and 16 NaN gradient entries before the fix."""
    torch.manual_seed(0)
    s = torch.randn(2, 5, 16)
    s[0, 1, 3] = float("nan")
    s.requires_grad_()
    with pytest.raises(ValueError, match=r"student_logits holds NaN at index \(0, 1, 3\)"):
        fusion.GLDLoss(k=4)(s, torch.randn(2, 7, 20))


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("side", ["student", "teacher"])
@pytest.mark.parametrize("kind", sorted(BAD))
def test_nonfinite_logits_raise(loss, side, kind):
    torch.manual_seed(1)
    s, t = torch.randn(2, 5, 16), torch.randn(2, 7, 20)
    (s if side == "student" else t)[1, 2, 3] = BAD[kind]
    name = "student_logits" if side == "student" else "teacher"
    with pytest.raises(ValueError, match=rf"{name} holds {kind.replace('+', '[+]')}"):
        LOSSES[loss]()(s, t)


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("kind", sorted(BAD))
def test_propagate_gives_nan_for_the_bad_sequence_only(loss, kind):
    torch.manual_seed(2)
    s, t = torch.randn(3, 5, 16), torch.randn(3, 7, 20)
    clean = LOSSES[loss](reduction="none")(s, t)
    s_bad = s.clone()
    s_bad[1, 0, 0] = BAD[kind]
    s_bad.requires_grad_()
    per_seq = LOSSES[loss](reduction="none", nan_policy="propagate")(s_bad, t).detach()
    assert math.isnan(per_seq[1])
    torch.testing.assert_close(per_seq[[0, 2]], clean[[0, 2]])
    total = LOSSES[loss](nan_policy="propagate")(s_bad, t).detach()
    assert math.isnan(total)  # the NaN shows in the loss a training loop checks


def test_propagate_with_batch_graph_poisons_the_graph():
    s, t = torch.randn(2, 5, 16), torch.randn(2, 7, 20)
    s[0, 0, 0] = float("nan")
    out = fusion.gld_loss(s, t, k=4, graph="batch", nan_policy="propagate")
    assert math.isnan(out)


@pytest.mark.parametrize("loss", ["gld", "uld-topk"])
def test_topk_teacher_with_nan_raises(loss):
    t = _teacher_topk(2, 7, 20, 6)
    t.logprobs[0, 3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"teacher holds NaN at index \(0, 3, 2\)"):
        LOSSES[loss]()(torch.randn(2, 5, 16), t)


@pytest.mark.parametrize("loss", ["gld", "uld-topk"])
def test_topk_with_positive_logprobs_refused(loss):
    t = _teacher_topk(2, 7, 20, 6)
    t.logprobs[1, 0, 0] = 0.25  # a probability or a logit, not a log-probability
    with pytest.raises(ValueError, match="positive log-probability"):
        LOSSES[loss]()(torch.randn(2, 5, 16), t)
    out = LOSSES[loss](reduction="none", nan_policy="propagate")(torch.randn(2, 5, 16), t)
    assert math.isnan(out[1]) and math.isfinite(out[0])


def test_topk_with_zero_logprob_accepted():
    """log p = 0 (a one-hot teacher) is a valid log-probability."""
    t = _teacher_topk(2, 7, 20, 6)
    t.logprobs[:, :, 0] = 0.0
    assert math.isfinite(fusion.GLDLoss(k=4)(torch.randn(2, 5, 16), t))


def test_uld_nan_logit_no_longer_returns_nan_silently():
    s, t = torch.randn(2, 5, 16), torch.randn(2, 7, 20)
    s[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="nan_policy='propagate'"):
        fusion.uld_loss(s, t)


def test_fusion_loss_refuses_nan_student():
    s = torch.randn(2, 6, 40)
    s[1, 2, 3] = float("nan")
    loss_fn = fusion.FusionLoss(0.5, 1.0, gld=fusion.GLDLoss(k=4), uld=fusion.ULDLoss(top_k=4))
    with pytest.raises(ValueError, match="student_logits holds NaN"):
        loss_fn(s, torch.randn(2, 7, 30), torch.randint(0, 40, (2, 6)))


def test_masked_nan_is_still_refused():
    """A masked position is still computed by the model: NaN there means a broken model."""
    s, t = torch.randn(2, 5, 16), torch.randn(2, 7, 20)
    s[0, 4, 0] = float("nan")
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 4] = False
    with pytest.raises(ValueError, match="student_logits holds NaN"):
        fusion.gld_loss(s, t, mask, k=4)


def test_unknown_nan_policy_refused():
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        fusion.GLDLoss(nan_policy="omit")
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        fusion.uld_loss(torch.randn(1, 2, 3), torch.randn(1, 2, 3), nan_policy="ignore")


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    loss=st.sampled_from(sorted(LOSSES)),
    kind=st.sampled_from(sorted(BAD)),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]),
    b=st.integers(0, 1),
    t=st.integers(0, 4),
    v=st.integers(0, 15),
    side=st.sampled_from(["student", "teacher"]),
)
def test_any_placement_any_dtype_never_finite_with_nan_grad(loss, kind, dtype, b, t, v, side):
    """Raise by default; with propagate, a NaN loss: never a finite loss with NaN gradients."""
    gen = torch.Generator().manual_seed(b * 100 + t * 16 + v)
    s = torch.randn(2, 5, 16, generator=gen).to(dtype)
    te = torch.randn(2, 5, 20, generator=gen).to(dtype)
    (s if side == "student" else te)[b, t, v] = BAD[kind]
    with pytest.raises(ValueError, match="holds"):
        LOSSES[loss]()(s, te)
    s = s.requires_grad_()
    out = LOSSES[loss](nan_policy="propagate")(s, te).detach()
    assert math.isnan(out)


@pytest.mark.parametrize("kind", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("side", ["student", "teacher"])
def test_jsd_refuses_nonfinite_logits(side, kind):
    """jsd_loss refuses non-finite logits too, instead of a finite loss with NaN gradients."""
    s, t = torch.randn(2, 4, 12), torch.randn(2, 4, 12)
    (s if side == "student" else t)[1, 2, 5] = float(kind)
    with pytest.raises(ValueError, match="student_logits|teacher"):
        fusion.jsd_loss(s, t)


def test_jsd_refuses_positive_topk_logprobs():
    s = torch.randn(1, 3, 10)
    bad = fusion.TopK(torch.full((1, 3, 2), 0.5), torch.tensor([[[0, 1]] * 3]))
    with pytest.raises(ValueError):
        fusion.jsd_loss(s, bad)
