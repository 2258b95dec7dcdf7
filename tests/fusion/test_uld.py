"""ULD loss against a direct reimplementation of its definition (Boizard et al. 2024)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fusion
from fusion import TopK
from fusion.functional import align_spans


def _softmax(z: np.ndarray, tau: float) -> np.ndarray:
    e = np.exp((z - z.max()) / tau)
    return e / e.sum()


def _direct_uld(zs, zt, ms, mt, tau_s=1.0, tau_t=1.0, top_k=None):
    """Loop over sequences and aligned positions, exactly as the definition reads."""
    per_seq = []
    for b in range(len(zs)):
        s_pos, t_pos = np.flatnonzero(ms[b]), np.flatnonzero(mt[b])
        n = min(len(s_pos), len(t_pos))  # aligned by the start, truncated to the shorter
        dists = []
        for j in range(n):
            ps = np.sort(_softmax(zs[b, s_pos[j]], tau_s))[::-1]
            pt = np.sort(_softmax(zt[b, t_pos[j]], tau_t))[::-1]
            if top_k is not None:
                ps, pt = ps[:top_k], pt[:top_k]
            width = max(len(ps), len(pt))
            ps, pt = np.pad(ps, (0, width - len(ps))), np.pad(pt, (0, width - len(pt)))
            dists.append(np.abs(ps - pt).sum())
        per_seq.append(np.mean(dists) if dists else 0.0)
    return np.array(per_seq)


def _inputs(seed, B=3, Ts=7, Tt=9, Vs=20, Vt=14):
    rng = np.random.default_rng(seed)
    zs, zt = rng.normal(size=(B, Ts, Vs)) * 2, rng.normal(size=(B, Tt, Vt)) * 2
    ms, mt = rng.random((B, Ts)) < 0.6, rng.random((B, Tt)) < 0.6
    ms[:, 0] = mt[:, 0] = True
    return zs, zt, ms, mt


def _uld(zs, zt, ms, mt, **kw):
    t = torch.tensor
    return fusion.uld_loss(t(zs), t(zt), t(ms), t(mt), **kw)


@pytest.mark.parametrize("vocabs", [(20, 14), (11, 23), (16, 16)])
@pytest.mark.parametrize("top_k", [None, 5])
@pytest.mark.parametrize("taus", [(1.0, 1.0), (0.7, 2.0)])
def test_matches_direct_reimplementation(vocabs, top_k, taus):
    zs, zt, ms, mt = _inputs(1, Vs=vocabs[0], Vt=vocabs[1])
    ref = _direct_uld(zs, zt, ms, mt, *taus, top_k=top_k)
    opts = {"temperature": taus[0], "teacher_temperature": taus[1], "top_k": top_k}
    got = _uld(zs, zt, ms, mt, reduction="none", **opts)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(_uld(zs, zt, ms, mt, **opts)), ref.mean(), rtol=1e-10)
    np.testing.assert_allclose(
        float(_uld(zs, zt, ms, mt, reduction="sum", **opts)), ref.sum(), rtol=1e-10
    )


def test_alignment_by_start_truncated_to_shorter():
    ms = torch.tensor([[0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    mt = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    spans = align_spans(ms, mt)
    assert spans.lengths.tolist() == [3, 0]
    assert spans.student_pos.tolist() == [1, 2, 4] and spans.teacher_pos.tolist() == [0, 2, 3]
    assert spans.student_seq.tolist() == spans.teacher_seq.tolist() == [0, 0, 0]


def test_empty_alignment_contributes_zero_with_finite_gradient():
    zs, zt, ms, mt = _inputs(2)
    ms[1] = False
    for top_k in (None, 4):
        s = torch.tensor(zs, requires_grad=True)
        t, m_s, m_t = torch.tensor(zt), torch.tensor(ms), torch.tensor(mt)
        per = fusion.uld_loss(s, t, m_s, m_t, top_k=top_k, reduction="none")
        assert per[1] == 0.0
        per.sum().backward()
        assert torch.isfinite(s.grad).all() and torch.all(s.grad[1] == 0)


def test_gradcheck_full_uld_float64():
    zs, zt, ms, mt = _inputs(3, B=2, Ts=3, Tt=4, Vs=7, Vt=5)
    s, t = torch.tensor(zs, requires_grad=True), torch.tensor(zt, requires_grad=True)

    def fn(a, b):
        opts = {"temperature": 0.8, "teacher_temperature": 1.3, "chunk_size": 3}
        return fusion.uld_loss(a, b, torch.tensor(ms), torch.tensor(mt), **opts)

    assert torch.autograd.gradcheck(fn, (s, t), eps=1e-6, atol=1e-7)


def test_gradcheck_topk_uld_float64():
    zs, zt, ms, mt = _inputs(4, B=2, Ts=4, Tt=5, Vs=9, Vt=7)
    s, t = torch.tensor(zs, requires_grad=True), torch.tensor(zt, requires_grad=True)

    def fn(a, b):
        return fusion.uld_loss(a, b, torch.tensor(ms), torch.tensor(mt), top_k=3)

    assert torch.autograd.gradcheck(fn, (s, t), eps=1e-6, atol=1e-7)


def test_full_uld_gradient_equals_autograd_through_softmax_and_sort():
    zs, zt, ms, mt = _inputs(5)
    s = torch.tensor(zs, requires_grad=True)
    fusion.uld_loss(
        s, torch.tensor(zt), torch.tensor(ms), torch.tensor(mt), chunk_size=3
    ).backward()
    # the same loss written with plain autograd ops
    ref_s = torch.tensor(zs, requires_grad=True)
    spans = align_spans(torch.tensor(ms), torch.tensor(mt))
    ps = torch.softmax(ref_s[spans.student_seq, spans.student_pos], -1).sort(-1, True).values
    pt = torch.softmax(torch.tensor(zt)[spans.teacher_seq, spans.teacher_pos], -1)
    pt = torch.nn.functional.pad(pt.sort(-1, True).values, (0, zs.shape[-1] - zt.shape[-1]))
    d = (ps - pt).abs().sum(-1)
    per = torch.zeros(len(zs), dtype=d.dtype).index_add(0, spans.student_seq, d)
    (per / spans.lengths.clamp_min(1)).mean().backward()
    torch.testing.assert_close(s.grad, ref_s.grad, rtol=1e-10, atol=1e-12)


def test_block_size_and_strided_input_do_not_change_the_loss():
    zs, zt, ms, mt = _inputs(6)
    base = torch.tensor(zs)
    wide = torch.cat([base, torch.zeros(base.shape[0], 1, base.shape[2], dtype=base.dtype)], 1)
    losses = [
        fusion.uld_loss(x, torch.tensor(zt), torch.tensor(ms), torch.tensor(mt), chunk_size=c)
        for x in (base, wide[:, :-1])
        for c in (1, 4, None)
    ]
    for loss in losses[1:]:
        torch.testing.assert_close(loss, losses[0], rtol=1e-12, atol=1e-14)


def test_topk_variant_accepts_cached_teacher():
    zs, zt, ms, mt = _inputs(7)
    lp = torch.log_softmax(torch.tensor(zt) / 1.5, -1).topk(8)
    t = torch.tensor
    got = fusion.uld_loss(t(zs), TopK(lp.values, lp.indices), t(ms), t(mt), top_k=5)
    ref = _uld(zs, zt, ms, mt, top_k=5, teacher_temperature=1.5)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="top-k variant"):
        fusion.uld_loss(t(zs), TopK(lp.values, lp.indices), t(ms), t(mt))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("top_k", [None, 5])
def test_half_precision_inputs(dtype, top_k):
    zs, zt, ms, mt = _inputs(8, Vs=120, Vt=90)
    s = torch.tensor(zs).to(dtype).requires_grad_()
    t, m_s, m_t = torch.tensor(zt).to(dtype), torch.tensor(ms), torch.tensor(mt)
    loss = fusion.uld_loss(s, t, m_s, m_t, top_k=top_k)
    loss.backward()
    assert loss.dtype == torch.float32 and s.grad.dtype == dtype
    assert torch.isfinite(s.grad.float()).all()
    ref = fusion.uld_loss(s.detach().float(), t.float(), m_s, m_t, top_k=top_k)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)


def test_ties_never_give_nan_gradients():
    s = torch.zeros(2, 4, 10, dtype=torch.float64, requires_grad=True)
    t = torch.zeros(2, 5, 10, dtype=torch.float64)  # identical uniform distributions
    for top_k in (None, 3):
        loss = fusion.uld_loss(s, t, top_k=top_k)
        (grad,) = torch.autograd.grad(loss, s)
        assert float(loss.detach()) == 0.0 and torch.isfinite(grad).all()


def test_module_matches_functional():
    zs, zt, ms, mt = _inputs(9)
    module = fusion.ULDLoss(temperature=0.5, teacher_temperature=2.0, top_k=4)
    t = torch.tensor
    ref = _uld(zs, zt, ms, mt, temperature=0.5, teacher_temperature=2.0, top_k=4)
    torch.testing.assert_close(module(t(zs), t(zt), t(ms), t(mt)), ref)
    assert "top_k=4" in repr(module)


def test_bad_arguments_raise():
    zs, zt, ms, mt = _inputs(10)
    with pytest.raises(ValueError, match="reduction"):
        _uld(zs, zt, ms, mt, reduction="avg")
    with pytest.raises(ValueError, match="temperature"):
        _uld(zs, zt, ms, mt, temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        fusion.ULDLoss(top_k=0)
    with pytest.raises(ValueError, match="batch"):
        _uld(zs, zt[:2], ms, mt[:2])


def test_nothing_aligned_gives_zero_loss_and_gradient():
    zs, zt, ms, mt = _inputs(11)
    s = torch.tensor(zs, requires_grad=True)
    nothing = torch.zeros(ms.shape, dtype=torch.bool)
    for top_k in (None, 3):
        loss = fusion.uld_loss(s, torch.tensor(zt), nothing, torch.tensor(mt), top_k=top_k)
        loss.backward()
        assert float(loss.detach()) == 0.0 and torch.all(s.grad == 0)
