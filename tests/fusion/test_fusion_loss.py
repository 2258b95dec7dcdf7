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
    ce_sum = torch.tensor(10.0, dtype=torch.float64)  # e.g. from a fused LM head
    masks = [m for _, m in teachers]
    opts = {"ce_sum": ce_sum, "num_tokens": 8, "student_mask": labels != -100}
    out = loss_fn(s, caches, teacher_masks=masks, **opts)
    from_logits = loss_fn(student, [t for t, _ in teachers], teacher_masks=masks, **opts)
    torch.testing.assert_close(out.total, from_logits.total)
    assert float(out.ce) == pytest.approx(10.0 / 8)
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


def test_micro_batch_shares_add_up_to_the_whole_batch():
    # normalised by the window's counts, the micro-batches' outputs (and gradients) sum to
    # the whole batch's: what exact gradient accumulation and exact logging rely on
    student, labels, teachers = _batch(5, B=4, Ts=7)
    labels[0, 2:5] = -100  # the halves hold different numbers of target tokens
    t = [x for x, _ in teachers]
    masks = [m for _, m in teachers]
    for graph in ("sequence", "batch"):
        loss_fn = fusion.FusionLoss(
            0.4, 1.5, (0.6, 0.4), gld=fusion.GLDLoss(k=4, graph=graph), uld=fusion.ULDLoss(top_k=5)
        )
        whole_s = student.clone().requires_grad_()
        whole = loss_fn(whole_s, t, labels, teacher_masks=masks)
        whole.total.backward()
        parts_s = student.clone().requires_grad_()
        n_tok, n_seq = int((labels != -100).sum()), student.shape[0]
        outs = []
        for half in (slice(0, 2), slice(2, 4)):
            out = loss_fn(
                parts_s[half],
                [x[half] for x in t],
                labels[half],
                teacher_masks=[m[half] for m in masks],
                num_tokens=n_tok,
                num_sequences=n_seq,
            )
            out.total.backward()
            outs.append(out.components())
        for key, value in whole.components().items():
            if graph == "batch" and ("gld" in key or key == "loss"):
                continue  # one graph per micro-batch is not one graph per window
            torch.testing.assert_close(outs[0][key] + outs[1][key], value, msg=key)
        if graph == "sequence":
            torch.testing.assert_close(parts_s.grad, whole_s.grad)
        # the components always add up to the total
        for o in outs:
            lam, beta = 0.4, 1.5
            want = (1 - lam) * o["ce"] + lam * (o["uld"] + beta * o["gld"])
            torch.testing.assert_close(o["loss"], want)


def test_student_topk_is_computed_once_for_every_loss_and_teacher(monkeypatch):
    import fusion.modules as modules

    calls = []
    real = modules.student_topk
    monkeypatch.setattr(
        modules, "student_topk", lambda *a, **kw: calls.append(kw) or real(*a, **kw)
    )
    student, labels, teachers = _batch(6)
    t = [x for x, _ in teachers]
    loss_fn = fusion.FusionLoss(0.5, 1.0, gld=fusion.GLDLoss(k=4), uld=fusion.ULDLoss(top_k=6))
    s = student.clone().requires_grad_()
    out = loss_fn(s, t, labels)
    assert len(calls) == 1 and calls[0]["targets"] is labels  # CE rides along
    out.total.backward()
    # the same numbers as four independent passes (2 teachers x ULD, GLD) and a plain CE
    ref_s = student.clone().requires_grad_()
    smask = labels != -100
    ce = F.cross_entropy(ref_s.reshape(-1, 30), labels.reshape(-1), ignore_index=-100)
    u = [fusion.uld_loss(ref_s, x, smask, top_k=6) for x in t]
    g = [fusion.gld_loss(ref_s, x, smask, k=4) for x in t]
    ref = 0.5 * ce + 0.5 * sum(0.5 * (a + b) for a, b in zip(u, g))
    ref.backward()
    torch.testing.assert_close(out.total, ref)
    torch.testing.assert_close(s.grad, ref_s.grad)
    # options that cannot share (another temperature) take two passes, still correct
    calls.clear()
    other = fusion.FusionLoss(
        0.5, 1.0, gld=fusion.GLDLoss(k=4, temperature=2.0), uld=fusion.ULDLoss(top_k=6)
    )(student, t, labels)
    assert len(calls) == 2
    g2 = [fusion.gld_loss(student, x, smask, k=4, temperature=2.0) for x in t]
    want = 0.5 * ce.detach() + 0.5 * sum(0.5 * (a + b) for a, b in zip(u, g2))
    torch.testing.assert_close(other.total, want.detach())


def test_bf16_logits_are_read_in_bf16():
    g = torch.Generator().manual_seed(7)
    student = torch.randn(2, 9, 300, generator=g).bfloat16().requires_grad_()
    labels = torch.randint(0, 300, (2, 9), generator=g)
    teacher = torch.log_softmax(torch.randn(2, 8, 200, generator=g), -1).topk(8)
    loss_fn = fusion.FusionLoss(0.5, 1.0, gld=fusion.GLDLoss(k=4), uld=fusion.ULDLoss(top_k=8))
    out = loss_fn(student, TopK(teacher.values, teacher.indices), labels)
    assert out.total.dtype == torch.float32
    out.total.backward()
    assert student.grad.dtype == torch.bfloat16 and torch.isfinite(student.grad.float()).all()
    ref = student.detach().float().requires_grad_()
    ref_out = loss_fn(ref, TopK(teacher.values, teacher.indices), labels)
    ref_out.total.backward()
    assert float(out.total.detach()) == pytest.approx(float(ref_out.total.detach()), rel=1e-5)
    torch.testing.assert_close(student.grad.float(), ref.grad, rtol=2e-2, atol=2e-4)


@pytest.mark.parametrize(
    "weights,match",
    [
        ((1.0, -0.5), "weight 1 is -0.5"),
        ((None, 0.3), "weight 0 is None"),
        ((float("nan"), 1.0), "finite"),
        ((True, 1.0), "weight 0 is True"),
        ((0.0, 0.0), "every teacher weight is 0"),
    ],
)
def test_teacher_weights_are_validated(weights, match):
    with pytest.raises(ValueError, match=match):
        fusion.FusionLoss(0.5, 1.0, weights)


def test_non_bool_masks_are_refused():
    student, labels, teachers = _batch(8)
    t = [x for x, _ in teachers]
    loss_fn = fusion.FusionLoss(0.5, 1.0, uld=fusion.ULDLoss(top_k=4))
    with pytest.raises(ValueError, match="bool"):
        loss_fn(student, t, labels, student_mask=(labels != -100).float())
    with pytest.raises(ValueError, match="bool"):
        loss_fn(student, t, labels, teacher_masks=[m.float() * 0.5 for _, m in teachers])
    with pytest.raises(ValueError, match="bool"):
        fusion.gld_loss(student, t[0], torch.full(labels.shape, 0.5))
    with pytest.raises(ValueError, match="bool"):
        fusion.uld_loss(student, t[0], teacher_mask=teachers[0][1].long())


@pytest.mark.parametrize("small", [True, False])
def test_cross_entropy_alone_is_the_token_mean(monkeypatch, small):
    import fusion.modules as modules

    monkeypatch.setattr(modules, "SMALL_CE_ELEMENTS", 10**9 if small else 0)
    g = torch.Generator().manual_seed(9)
    z = torch.randn(3, 7, 50, generator=g).bfloat16().requires_grad_()
    labels = torch.randint(0, 50, (3, 7), generator=g)
    labels[0, :4] = -100
    loss_fn = fusion.FusionLoss(0.0, 1.0)
    got = loss_fn.cross_entropy(z, labels)
    got.backward()
    ref_z = z.detach().float().requires_grad_()
    ref = F.cross_entropy(ref_z.flatten(0, 1), labels.flatten(), ignore_index=-100)
    ref.backward()
    torch.testing.assert_close(got.detach().float(), ref.detach(), rtol=1e-5, atol=1e-6)
    assert z.grad.dtype == torch.bfloat16
    torch.testing.assert_close(z.grad.float(), ref_z.grad, rtol=2e-2, atol=1e-4)
    share = loss_fn.cross_entropy(z.detach(), labels, num_tokens=100)
    assert float(share) == pytest.approx(
        float(ref.detach()) * int((labels != -100).sum()) / 100, rel=1e-5
    )


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
    with pytest.raises(ValueError, match="num_tokens"):
        fusion.FusionLoss(0.5, 1.0)(student, t, ce_sum=torch.tensor(1.0))
    with pytest.raises(ValueError, match="reduction='mean'"):
        fusion.FusionLoss(0.5, 1.0, gld=fusion.GLDLoss(reduction="sum"))
    with pytest.raises(ValueError, match="labels must have shape"):
        fusion.FusionLoss(0.5, 1.0)(student, t, labels[:, 1:])
