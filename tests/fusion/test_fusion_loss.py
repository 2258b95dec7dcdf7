"""FusionLoss = (1 - lambda) CE + lambda sum_j w_j (ULD_j + beta GLD_j), with its components."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fusion
from fusion import TopK


def _batch(seed=0, B=2, Ts=6, Vs=30, teachers=((8, 25), (5, 40))):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(B, Ts, Vs, dtype=torch.float64, generator=g)
    labels = torch.randint(0, Vs, (B, Ts), generator=g)
    labels[:, :2] = -100  # the prompt
    outs = []
    for Tt, Vt in teachers:
        logits = torch.randn(B, Tt, Vt, dtype=torch.float64, generator=g)
        mask = torch.rand(B, Tt, generator=g) < 0.8
        mask[:, 0] = True
        outs.append((logits, mask))
    return student, labels, outs


@pytest.mark.parametrize("lam,beta", [(0.3, 0.5), (1.0, 2.0), (0.0, 1.0)])
def test_total_is_the_weighted_sum_of_independently_computed_parts(lam, beta):
    student, labels, teachers = _batch()
    weights = (0.7, 0.3)
    gld, uld = fusion.GLDLoss(k=4, m=12), fusion.ULDLoss(top_k=6)
    loss_fn = fusion.FusionLoss(lam, beta, weights, gld=gld, uld=uld)
    out = loss_fn(student, [t for t, _ in teachers], labels, teacher_masks=[m for _, m in teachers])
    ce = F.cross_entropy(student.reshape(-1, 30), labels.reshape(-1), ignore_index=-100)
    smask = labels != -100
    u = [fusion.uld_loss(student, t, smask, m, top_k=6) for t, m in teachers]
    g = [fusion.gld_loss(student, t, smask, m, k=4, m=12) for t, m in teachers]
    expected = (1 - lam) * ce + lam * sum(w * (a + beta * b) for w, a, b in zip(weights, u, g))
    torch.testing.assert_close(out.total, expected)
    torch.testing.assert_close(out.ce, ce)
    if lam > 0:
        torch.testing.assert_close(out.uld, 0.7 * u[0] + 0.3 * u[1])
        torch.testing.assert_close(out.gld, 0.7 * g[0] + 0.3 * g[1])
        for got, ref in zip(out.uld_per_teacher + out.gld_per_teacher, u + g):
            torch.testing.assert_close(got, ref)
    logged = out.as_dict()
    assert set(logged) == {"loss", "ce", "uld", "gld", "uld/0", "gld/0", "uld/1", "gld/1"}
    assert logged["loss"] == pytest.approx(float(expected))


def test_single_teacher_has_weight_one_and_accepts_a_bare_tensor():
    student, labels, teachers = _batch(1, teachers=((7, 20),))
    (teacher, mask), lam, beta = teachers[0], 0.4, 0.25
    loss_fn = fusion.FusionLoss(lam, beta, gld=fusion.GLDLoss(k=3, m=9))
    out = loss_fn(student, teacher, labels, teacher_masks=mask)
    smask = labels != -100
    ce = F.cross_entropy(student.reshape(-1, 30), labels.reshape(-1))
    uld = fusion.uld_loss(student, teacher, smask, mask)  # the default: full ULD
    gld = fusion.gld_loss(student, teacher, smask, mask, k=3, m=9)
    torch.testing.assert_close(out.total, (1 - lam) * ce + lam * (uld + beta * gld))


def test_cached_teachers_and_precomputed_ce_and_gradients():
    student, labels, teachers = _batch(2)
    caches = []
    for logits, _ in teachers:
        lp = torch.log_softmax(logits, -1).topk(10)
        caches.append(TopK(lp.values, lp.indices))
    s = student.clone().requires_grad_()
    loss_fn = fusion.FusionLoss(0.5, 1.0, uld=fusion.ULDLoss(top_k=10))
    ce = torch.tensor(1.25, dtype=torch.float64)
    masks = [m for _, m in teachers]
    out = loss_fn(s, caches, ce=ce, student_mask=labels != -100, teacher_masks=masks)
    from_logits = loss_fn(
        student, [t for t, _ in teachers], ce=ce, student_mask=labels != -100, teacher_masks=masks
    )
    torch.testing.assert_close(out.total, from_logits.total)
    out.total.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert torch.all(s.grad[:, :2] == 0)  # prompt positions are outside the student mask


def test_beta_zero_and_lambda_zero_skip_work():
    student, labels, teachers = _batch(3)
    t = [x for x, _ in teachers]
    out = fusion.FusionLoss(0.5, 0.0)(student, t, labels)
    assert all(float(g) == 0.0 for g in out.gld_per_teacher) and float(out.uld) > 0
    out = fusion.FusionLoss(0.0, 1.0)(student, t, labels)
    ce = F.cross_entropy(student.reshape(-1, 30), labels.reshape(-1))
    torch.testing.assert_close(out.total, ce)


def test_bad_arguments_raise():
    student, labels, teachers = _batch(4)
    t = [x for x, _ in teachers]
    with pytest.raises(ValueError, match="lambda_"):
        fusion.FusionLoss(1.5)
    with pytest.raises(ValueError, match="beta"):
        fusion.FusionLoss(0.5, -1.0)
    with pytest.raises(ValueError, match="teacher_weights"):
        fusion.FusionLoss(0.5, 1.0, (1.0,))(student, t, labels)
    with pytest.raises(ValueError, match="labels"):
        fusion.FusionLoss(0.5, 1.0)(student, t)
    with pytest.raises(ValueError, match="teacher masks"):
        fusion.FusionLoss(0.5, 1.0)(student, t, labels, teacher_masks=[None])
    with pytest.raises(ValueError, match="at least one teacher"):
        fusion.FusionLoss(0.5, 1.0)(student, [], labels)
