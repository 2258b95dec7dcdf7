"""Generalised JSD (fusion.jsd_loss): TRL's convention, a dense reference, top-k teachers."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fusion
from fusion import TopK

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
trl_jsd = gkd.GKDTrainer.generalized_jsd_loss

BETAS = (0.0, 0.1, 0.5, 0.9, 1.0)


def _pair(seed, B=3, T=5, V=17, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, T, V, dtype=torch.float64, generator=g)
    t = scale * torch.randn(B, T, V, dtype=torch.float64, generator=g)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < 0.3] = -100
    return s, t, labels


def _reference(s, t, beta, tau):
    """Agarwal et al. Eq. 1 written out per position, in float64 (TRL's endpoints)."""
    p, q = torch.softmax(s / tau, -1), torch.softmax(t / tau, -1)

    def kl(a, b):
        return (a * (a.log() - b.log())).sum(-1)

    if beta == 0:
        return kl(q, p)
    if beta == 1:
        return kl(p, q)
    m = beta * q + (1 - beta) * p
    return beta * kl(q, m) + (1 - beta) * kl(p, m)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    beta=st.sampled_from(BETAS) | st.floats(0.01, 0.99),
    tau=st.sampled_from((0.5, 1.0, 2.0)),
)
def test_equals_trl_generalized_jsd_value_and_gradient(seed, beta, tau):
    s, t, labels = _pair(seed)
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    ours = fusion.jsd_loss(s1, t, beta=beta, temperature=tau, mask=labels != -100)
    theirs = trl_jsd(s2, t, labels=labels, beta=beta, temperature=tau)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("beta", BETAS)
def test_matches_the_dense_reference_per_position(beta):
    s, t, labels = _pair(1)
    mask = labels != -100
    per_pos = fusion.jsd_loss(s, t, beta=beta, temperature=1.5, mask=mask, reduction="none")
    ref = _reference(s, t, beta, 1.5)
    torch.testing.assert_close(per_pos, torch.where(mask, ref, torch.zeros_like(ref)))
    total = fusion.jsd_loss(s, t, beta=beta, temperature=1.5, mask=mask, reduction="sum")
    torch.testing.assert_close(total, ref[mask].sum())
    mean = fusion.jsd_loss(s, t, beta=beta, temperature=1.5, mask=mask)
    torch.testing.assert_close(mean, ref[mask].mean())


@pytest.mark.parametrize("beta", BETAS)
def test_is_zero_for_equal_distributions_and_positive_otherwise(beta):
    s, t, _ = _pair(2)
    assert float(fusion.jsd_loss(s, s.clone(), beta=beta)) == pytest.approx(0.0, abs=1e-12)
    assert float(fusion.jsd_loss(s, t, beta=beta)) > 0


@pytest.mark.parametrize("beta", (0.0, 0.3, 0.5, 0.8))
@pytest.mark.parametrize("k", (17, 6, 1))
def test_topk_teacher_is_the_dense_jsd_to_its_renormalised_entries(beta, k):
    """A TopK teacher == a dense teacher whose logits are -inf off the top k (exact)."""
    s, t, labels = _pair(3)
    mask = labels != -100
    lp = torch.log_softmax(t / 2.0, -1)  # a cache at temperature 2
    top = lp.topk(k)
    truncated = torch.full_like(t, -1e30).scatter(-1, top.indices, top.values)
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    sparse = fusion.jsd_loss(s1, TopK(top.values, top.indices), beta=beta, mask=mask)
    dense = fusion.jsd_loss(s2, truncated, beta=beta, mask=mask)  # softmax of -1e30 is 0
    torch.testing.assert_close(sparse, dense, rtol=1e-10, atol=1e-12)
    sparse.backward()
    dense.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-8, atol=1e-12)


def test_module_holds_the_options_and_float32_and_bf16_inputs_work():
    s, t, labels = _pair(4)
    mask = labels != -100
    loss_fn = fusion.JSDLoss(beta=0.2, temperature=2.0)
    assert "beta=0.2" in repr(loss_fn)
    torch.testing.assert_close(
        loss_fn(s, t, mask), fusion.jsd_loss(s, t, beta=0.2, temperature=2.0, mask=mask)
    )
    lo = fusion.jsd_loss(s.bfloat16(), t.bfloat16(), beta=0.2, mask=mask)
    assert lo.dtype == torch.float32 and math.isfinite(float(lo))


def test_no_position_gives_zero_and_a_gradient():
    s, t, _ = _pair(5)
    s = s.requires_grad_()
    loss = fusion.jsd_loss(s, t, mask=torch.zeros(s.shape[:2], dtype=torch.bool))
    assert float(loss) == 0.0
    loss.backward()
    assert torch.all(s.grad == 0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"beta": -0.1}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"temperature": 0.0}, "temperature"),
        ({"reduction": "batchmean"}, "reduction"),
        ({"mask": torch.ones(3, 5)}, "bool"),
    ],
)
def test_bad_options_are_refused_by_name(kwargs, match):
    s, t, _ = _pair(6)
    with pytest.raises(ValueError, match=match):
        fusion.jsd_loss(s, t, **kwargs)


def test_mismatched_vocabularies_and_reverse_kl_to_a_topk_are_refused():
    s, t, _ = _pair(7)
    with pytest.raises(ValueError, match="shared vocabulary"):
        fusion.jsd_loss(s, t[..., :10])
    top = torch.log_softmax(t, -1).topk(4)
    with pytest.raises(ValueError, match="reverse KL"):
        fusion.jsd_loss(s, TopK(top.values, top.indices), beta=1.0)
    with pytest.raises(ValueError, match="shared vocabulary"):
        fusion.jsd_loss(s[..., :3], TopK(top.values, top.indices), beta=0.5)


def test_fusion_loss_with_jsd_replaces_uld_by_the_token_mean_jsd():
    s, t, labels = _pair(8)
    mask = labels != -100
    g = torch.Generator().manual_seed(9)
    t2 = torch.randn(t.shape, dtype=t.dtype, generator=g)
    lam, beta, weights = 0.4, 0.5, (0.25, 0.75)
    gld = fusion.GLDLoss(k=4)
    loss_fn = fusion.FusionLoss(lam, beta, weights, gld=gld, jsd=fusion.JSDLoss(beta=0.3))
    out = loss_fn(s, [t, t2], labels, teacher_masks=[mask, mask])
    ce = F.cross_entropy(s.reshape(-1, s.shape[-1]), labels.reshape(-1), ignore_index=-100)
    jsd = [fusion.jsd_loss(s, x, beta=0.3, mask=mask) for x in (t, t2)]
    gl = [fusion.gld_loss(s, x, mask, mask, k=4) for x in (t, t2)]
    expected = (1 - lam) * ce + lam * sum(w * (j + beta * h) for w, j, h in zip(weights, jsd, gl))
    torch.testing.assert_close(out.total, expected)
    torch.testing.assert_close(out.jsd, 0.25 * jsd[0] + 0.75 * jsd[1])
    assert set(out.as_dict()) == {"loss", "ce", "jsd", "gld", "jsd/0", "gld/0", "jsd/1", "gld/1"}


def test_fusion_loss_aligns_a_teacher_whose_rows_start_at_the_response():
    """A cache's rows start at the response; the j-th is paired with the pivot's j-th target."""
    s, t, labels = _pair(10, B=2, T=6)
    labels[:] = 1
    labels[:, :2] = -100
    mask = labels != -100
    lp = torch.log_softmax(t, -1).topk(6)
    rows = TopK(lp.values[:, 2:], lp.indices[:, 2:])  # the teacher's response rows only
    loss_fn = fusion.FusionLoss(1.0, 0.0, jsd=fusion.JSDLoss(beta=0.5))
    out = loss_fn(s, rows, labels)
    ref = fusion.jsd_loss(s, TopK(lp.values, lp.indices), beta=0.5, mask=mask)
    torch.testing.assert_close(out.total, ref)
