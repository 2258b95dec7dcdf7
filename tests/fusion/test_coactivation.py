"""fusion.coactivation: top-k values with a blockwise backward, degrees, features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fusion
from fusion import TopK, coactivation
from fusion.coactivation import (
    degree_features,
    degrees,
    grouped_topk,
    teacher_topk_values,
    topk_values,
)
from gwlite.families import coactivation as numpy_coactivation


def _autograd_reference(z: torch.Tensor, k: int, tau: float, values: str) -> torch.Tensor:
    """Kept values through plain autograd ops (softmax materialised): the slow definition."""
    if values == "prob":
        y = torch.softmax(z / tau, dim=-1)
    elif values == "logit":
        y = z / tau
    else:
        y = (z - z.mean(-1, keepdim=True)) / z.std(-1, correction=0, keepdim=True)
    return torch.gather(y, -1, torch.topk(z, k, dim=-1).indices)


@pytest.mark.parametrize("values", ["prob", "logit", "zscore"])
@pytest.mark.parametrize("tau", [1.0, 0.6])
def test_values_and_gradient_match_autograd(values, tau):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 7, 40, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, 7, 5, dtype=torch.float64, generator=g)
    vals, idx = topk_values(z, 5, temperature=tau, values=values, chunk_size=4)
    (grad,) = torch.autograd.grad((vals * w).sum(), z)
    ref = _autograd_reference(z, 5, tau, values)
    (ref_grad,) = torch.autograd.grad((ref * w).sum(), z)
    torch.testing.assert_close(vals, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert torch.equal(idx, torch.topk(z, 5, dim=-1).indices)


@pytest.mark.parametrize("values", ["prob", "logit", "zscore"])
def test_gradcheck_float64(values):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 4, 12, dtype=torch.float64, generator=g, requires_grad=True)

    def fn(x):
        return topk_values(x, 3, temperature=0.8, values=values, chunk_size=3)[0]

    assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-7)


def test_block_size_and_strided_input_do_not_change_anything():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(3, 9, 33, generator=g)
    w = torch.randn(3, 8, 4, generator=g)
    results = []
    for chunk in (1, 5, None):
        for view in (True, False):
            leaf = base.clone().requires_grad_()
            z = leaf[:, :-1] if view else leaf[:, :-1].contiguous()  # a view cannot be flattened
            vals, _ = topk_values(z, 4, chunk_size=chunk)
            (vals * w).sum().backward()
            results.append((vals.detach(), leaf.grad))
    for vals, grad in results[1:]:
        torch.testing.assert_close(vals, results[0][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-6, atol=1e-7)
    assert torch.all(results[0][1][:, -1] == 0)  # the dropped position gets no gradient


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_computed_in_fp32(dtype):
    g = torch.Generator().manual_seed(4)
    z = (3 * torch.randn(2, 6, 300, generator=g)).to(dtype).requires_grad_()
    vals, _ = topk_values(z, 6)
    assert vals.dtype == torch.float32
    vals.sum().backward()
    assert z.grad.dtype == dtype
    ref_z = z.detach().float().requires_grad_()  # the same numbers, exactly, in fp32
    ref_vals, _ = topk_values(ref_z, 6)
    ref_vals.sum().backward()
    torch.testing.assert_close(vals, ref_vals, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(z.grad.float(), ref_z.grad, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("values", ["prob", "logit", "zscore"])
def test_ties_give_finite_gradients(values):
    z = torch.zeros(2, 3, 20, dtype=torch.float64)
    z[0, 0, :7] = 1.0  # ties across the top-k boundary
    z = z.requires_grad_()
    vals, idx = topk_values(z, 4, values=values)
    vals.sum().backward()
    assert torch.isfinite(z.grad).all()
    assert torch.isfinite(vals).all()
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()  # distinct ids per position


@pytest.mark.parametrize("shape,k,group", [((5, 1000), 7, 16), ((3, 130), 2, 64), ((4, 64), 4, 16)])
def test_grouped_topk_values_equal_torch_topk(shape, k, group):
    g = torch.Generator().manual_seed(5)
    z = torch.randn(*shape, generator=g).bfloat16()
    z[0] = 1.0  # a fully tied row
    z[1, ::3] = z[1].max()  # many ties with the maximum
    values, idx = grouped_topk(z, k, group)
    torch.testing.assert_close(values, torch.topk(z, k).values, rtol=0, atol=0)
    assert torch.equal(torch.gather(z, 1, idx), values)
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()


def test_grouped_topk_path_gives_the_same_loss(monkeypatch):
    g = torch.Generator().manual_seed(6)
    z = torch.randn(2, 5, 3000, dtype=torch.float64, generator=g)
    monkeypatch.setattr(coactivation, "TOPK_IMPL", "torch")
    ref, ref_idx = topk_values(z, 5)
    monkeypatch.setattr(coactivation, "TOPK_IMPL", "grouped")
    vals, idx = topk_values(z, 5)
    torch.testing.assert_close(vals, ref, rtol=0, atol=0)
    assert torch.equal(idx, ref_idx)


def test_degrees_match_explicit_graph():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(2, 6, 15))
    mask = np.array([[1, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]], dtype=bool)
    vals, idx = topk_values(torch.tensor(z), 3)
    deg = degrees(vals, idx, torch.tensor(mask), num_nodes=15)
    x = np.exp(z - z.max(-1, keepdims=True))
    x /= x.sum(-1, keepdims=True)
    keep = np.argsort(-z, axis=-1)[..., :3]
    xt = np.zeros_like(x)
    np.put_along_axis(xt, keep, np.take_along_axis(x, keep, -1), -1)
    X = xt[0][mask[0]]
    A = X.T @ X / len(X)
    np.testing.assert_allclose(deg.degrees[0].numpy(), A.sum(1), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(deg.degrees[1].numpy(), 0.0)  # empty graph: zeros, no NaN
    np.testing.assert_array_equal(deg.counts.numpy(), [4, 0])


def test_degrees_agree_with_gwlite_family_generator():
    n, seed, k, positions = 11, 3, 3, 16
    z = np.random.default_rng(seed).normal(size=(positions, n)) * 2.0  # the family's logits
    A = numpy_coactivation(n, seed, k=k, positions=positions)
    vals, idx = topk_values(torch.tensor(z)[None], k)
    deg = degrees(vals, idx, num_nodes=n).degrees[0].numpy()
    np.testing.assert_allclose(deg, A.sum(1), rtol=1e-12, atol=1e-15)


def test_rank_nodes_sort_unsorted_cached_values():
    vals = torch.tensor([[[0.1, 0.5, 0.2], [0.3, 0.05, 0.4]]], dtype=torch.float64)
    idx = torch.tensor([[[4, 1, 2], [0, 3, 5]]])
    f = degrees(vals, idx, nodes="rank").degrees[0]
    srt = vals.sort(-1, descending=True).values[0]
    expected = (srt * srt.sum(-1, keepdim=True)).mean(0)
    torch.testing.assert_close(f, expected)


def test_degree_features_pad_and_sort():
    f = torch.tensor([[0.2, 0.0, 0.7], [1.0, 3.0, 2.0]])
    out = degree_features(f, 5)
    expected = torch.tensor([[0.7, 0.2, 0.0, 0.0, 0.0], [3.0, 2.0, 1.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(degree_features(f, 2), expected[:, :2])


def test_teacher_topk_uses_first_k_cached_entries():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(2, 3, 30, dtype=torch.float64, generator=g)
    cache = torch.log_softmax(z / 0.7, -1).topk(6)
    vals, idx = teacher_topk_values(TopK(cache.values, cache.indices), 4)
    ref_vals, ref_idx = topk_values(z, 4, temperature=0.7)
    torch.testing.assert_close(vals, ref_vals, rtol=1e-12, atol=1e-14)
    assert torch.equal(idx, ref_idx)


def test_errors_are_clear():
    z = torch.randn(1, 2, 5)
    cache = TopK(torch.log_softmax(z, -1).topk(3).values, torch.log_softmax(z, -1).topk(3).indices)
    with pytest.raises(ValueError, match="k'=3"):
        teacher_topk_values(cache, 4)
    with pytest.raises(ValueError, match="full logits"):
        teacher_topk_values(cache, 2, values="zscore")
    with pytest.raises(ValueError, match="values must be one of"):
        topk_values(z, 2, values="probs")
    with pytest.raises(ValueError, match="k must be in"):
        topk_values(z, 6)
    with pytest.raises(ValueError, match="temperature"):
        topk_values(z, 2, temperature=0.0)
    with pytest.raises(ValueError, match="mask must have shape"):
        degrees(
            torch.ones(1, 2, 3),
            torch.zeros(1, 2, 3, dtype=torch.long),
            torch.ones(1, 3, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match="indices must lie"):
        degrees(torch.ones(1, 2, 1), torch.full((1, 2, 1), 9), num_nodes=5)


def _loss_and_grad(z: torch.Tensor, t: torch.Tensor, **kw):
    leaf = z.clone().requires_grad_()
    loss = fusion.gld_loss(leaf[:, :-1], t, **kw)
    loss.backward()
    return loss.detach().cpu(), leaf.grad.float().cpu()


@pytest.mark.slow
def test_compiled_passes_equal_eager_ops(monkeypatch):
    g = torch.Generator().manual_seed(9)
    z = (2 * torch.randn(2, 9, 300, generator=g)).bfloat16()
    t = torch.randn(2, 7, 200, generator=g)
    monkeypatch.setattr(coactivation, "_fused_failed", False)
    for tau in (1.0, 0.7):
        opts = {"k": 5, "m": 16, "temperature": tau, "chunk_size": 4}
        monkeypatch.setattr(coactivation, "FUSED", "off")
        ref = _loss_and_grad(z, t, **opts)
        monkeypatch.setattr(coactivation, "FUSED", "on")
        got = _loss_and_grad(z, t, **opts)
        assert not coactivation._fused_failed
        torch.testing.assert_close(got[0], ref[0], rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(got[1], ref[1], rtol=1e-2, atol=1e-6)


def test_failed_compilation_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken(*args):
        raise RuntimeError("no compiler here")

    g = torch.Generator().manual_seed(10)
    z, t = torch.randn(2, 5, 40, generator=g), torch.randn(2, 6, 30, generator=g)
    monkeypatch.setattr(coactivation, "FUSED", "off")
    ref = _loss_and_grad(z, t, k=4, m=8)
    monkeypatch.setattr(coactivation, "FUSED", "on")
    monkeypatch.setattr(coactivation, "_fused_failed", False)
    monkeypatch.setattr(coactivation, "_compiled", {"shift": broken, "grad": broken})
    with pytest.warns(UserWarning, match="using eager ops"):
        got = _loss_and_grad(z, t, k=4, m=8)
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1], ref[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fused", ["auto", "off"])
@pytest.mark.parametrize("topk_impl", ["auto", "torch"])
def test_cuda_bf16_matches_cpu(monkeypatch, fused, topk_impl):
    monkeypatch.setattr(coactivation, "FUSED", fused)
    monkeypatch.setattr(coactivation, "TOPK_IMPL", topk_impl)
    g = torch.Generator().manual_seed(11)
    z = (2 * torch.randn(2, 65, 20000, generator=g)).bfloat16()  # wide rows: grouped top-k
    z += (3 * torch.randn(20000, generator=g)).bfloat16()
    lp = torch.log_softmax(torch.randn(2, 64, 9000, generator=g), -1).topk(12)
    opts = {"k": 10, "m": 64, "chunk_size": 48}
    ref = _loss_and_grad(z, TopK(lp.values, lp.indices), **opts)
    cache = TopK(lp.values.cuda(), lp.indices.cuda())
    got = _loss_and_grad(z.cuda(), cache, **opts)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(got[1], ref[1], rtol=2e-2, atol=1e-6)


@pytest.mark.parametrize("values", ["prob", "zscore"])
def test_gpu_elementwise_branch_gives_the_same_numbers(monkeypatch, values):
    # the single-kernel mixed-dtype ops used on CUDA, run on CPU (slower there, same math)
    g = torch.Generator().manual_seed(12)
    z = (2 * torch.randn(2, 6, 500, generator=g)).bfloat16()
    t = torch.randn(2, 5, 300, generator=g)
    opts = {"k": 5, "m": 16, "values": values, "temperature": 0.8, "chunk_size": 5}
    opts["features"] = "shares" if values == "prob" else "degrees"
    monkeypatch.setattr(coactivation, "FUSED", "off")
    ref = _loss_and_grad(z, t, **opts)
    monkeypatch.setattr(coactivation, "_casts_in_kernel", lambda x: True)
    got = _loss_and_grad(z, t, **opts)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-2, atol=1e-6)
