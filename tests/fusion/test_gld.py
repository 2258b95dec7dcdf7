"""GLD loss: explicit float64 graphs, gwlite's GW bounds, invariances, masks, dtypes, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fusion
import gwlite
from fusion import TopK

# ---------------------------------------------------------------------------------------
# an independent dense reference: the definition with every matrix formed explicitly
# ---------------------------------------------------------------------------------------


def _kept(z: np.ndarray, k: int, tau: float, values: str) -> np.ndarray:
    """(T, V) matrix of x~_t: the chosen values at the k largest logits, zeros elsewhere."""
    if values == "prob":
        e = np.exp((z - z.max(-1, keepdims=True)) / tau)
        x = e / e.sum(-1, keepdims=True)
    elif values == "logit":
        x = z / tau
    else:
        x = (z - z.mean(-1, keepdims=True)) / z.std(-1, keepdims=True)
    keep = np.argsort(-z, axis=-1, kind="stable")[:, :k]
    out = np.zeros_like(x)
    np.put_along_axis(out, keep, np.take_along_axis(x, keep, -1), -1)
    return out


def _dense_graph(z: np.ndarray, k: int, tau: float, values: str, nodes: str) -> np.ndarray:
    """The co-activation matrix A = mean_t x~_t x~_t^T over the rows of z (explicit)."""
    X = _kept(z, k, tau, values)
    if nodes == "rank":
        X = -np.sort(-np.take_along_axis(X, np.argsort(-z, axis=-1)[:, :k], -1), axis=-1)
    return X.T @ X / len(X)


def _features(A: np.ndarray, m: int) -> np.ndarray:
    f = -np.sort(-A.sum(1))[:m]
    return np.pad(f, (0, m - len(f)))


def _share_distance(As: np.ndarray, At: np.ndarray) -> float:
    """W_1 between the degree-weighted distributions of 1 - A_ii / f_i (scipy, independent)."""
    from scipy.stats import wasserstein_distance

    sides = []
    for A in (As, At):
        f = A.sum(1)
        keep = f > 0
        sides.append((1 - np.diag(A)[keep] / f[keep], f[keep] / f[keep].sum()))
    (cs, ws), (ct, wt) = sides
    return wasserstein_distance(cs, ct, ws, wt)


def _reference(
    zs,
    zt,
    ms,
    mt,
    *,
    k,
    m,
    tau=1.0,
    values="prob",
    nodes="vocab",
    graph="sequence",
    features="shares",
):
    """Per-graph GLD values from explicit matrices, float64."""
    if graph == "batch":
        zs, zt = zs[ms][None], zt[mt][None]
        ms, mt = np.ones(zs.shape[:2], bool), np.ones(zt.shape[:2], bool)
    out = []
    for b in range(len(zs)):
        if not ms[b].any() or not mt[b].any():
            out.append(0.0)
            continue
        As = _dense_graph(zs[b][ms[b]], k, tau, values, nodes)
        At = _dense_graph(zt[b][mt[b]], k, tau, values, nodes)
        if features == "shares":
            out.append(_share_distance(As, At))
            continue
        fs, ft = _features(As, m), _features(At, m)
        out.append(np.abs(np.sort(fs) - np.sort(ft)).sum())
    return np.array(out)


def _inputs(seed, B=3, Ts=6, Tt=8, Vs=13, Vt=17, masked=True):
    rng = np.random.default_rng(seed)
    zs, zt = rng.normal(size=(B, Ts, Vs)) * 2, rng.normal(size=(B, Tt, Vt)) * 2
    ms, mt = rng.random((B, Ts)) < 0.7, rng.random((B, Tt)) < 0.7
    if not masked:
        ms[:], mt[:] = True, True
    ms[:, 0] = mt[:, 0] = True
    return zs, zt, ms, mt


def _gld(zs, zt, ms=None, mt=None, **kw):
    t = torch.tensor
    return fusion.gld_loss(
        t(zs), t(zt), None if ms is None else t(ms), None if mt is None else t(mt), **kw
    )


# ---------------------------------------------------------------------------------------
# the definition
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "features,values,m",
    [
        ("shares", "prob", 64),
        ("degrees", "prob", 5),
        ("degrees", "prob", 40),
        ("degrees", "logit", 5),
        ("degrees", "zscore", 40),
    ],
)
@pytest.mark.parametrize("nodes", ["vocab", "rank"])
@pytest.mark.parametrize("graph", ["sequence", "batch"])
def test_matches_dense_float64_reference(features, values, m, nodes, graph):
    zs, zt, ms, mt = _inputs(10)
    opts = {"k": 4, "m": m, "tau": 0.7, "values": values, "nodes": nodes, "graph": graph}
    opts["features"] = features
    ref = _reference(zs, zt, ms, mt, **opts)
    opts["temperature"] = opts.pop("tau")
    got = _gld(zs, zt, ms, mt, reduction="none", **opts)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(float(_gld(zs, zt, ms, mt, **opts)), ref.mean(), rtol=1e-6)
    np.testing.assert_allclose(
        float(_gld(zs, zt, ms, mt, reduction="sum", **opts)), ref.sum(), rtol=1e-6
    )


def test_defaults_are_shares_k10_tau1():
    zs, zt, ms, mt = _inputs(11, Vs=90, Vt=120)
    ref = _reference(zs, zt, ms, mt, k=10, m=64, features="shares")
    np.testing.assert_allclose(float(_gld(zs, zt, ms, mt)), ref.mean(), rtol=1e-6)
    module = fusion.GLDLoss()
    t = torch.tensor
    np.testing.assert_allclose(float(module(t(zs), t(zt), t(ms), t(mt))), ref.mean(), rtol=1e-6)
    ref = _reference(zs, zt, ms, mt, k=10, m=64, features="degrees")
    np.testing.assert_allclose(
        float(_gld(zs, zt, ms, mt, features="degrees")), ref.mean(), rtol=1e-6
    )


# ---------------------------------------------------------------------------------------
# GW: GLD(m = N) = N^2 W_1 (gwlite's closed form), GLD <= N^2 W_1 <= N^2 GW_1
# (features="degrees", the form that is a truncated closed form of GW)
# ---------------------------------------------------------------------------------------


def _padded_graphs(zs, zt, k):
    As, At = _dense_graph(zs, k, 1.0, "prob", "vocab"), _dense_graph(zt, k, 1.0, "prob", "vocab")
    N = max(len(As), len(At))
    return np.pad(As, (0, N - len(As))), np.pad(At, (0, N - len(At))), N


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    vs=st.integers(2, 12),
    vt=st.integers(2, 12),
    ts=st.integers(1, 6),
    tt=st.integers(1, 6),
    k=st.integers(1, 12),
    m=st.integers(1, 16),
)
def test_gld_below_scaled_gw_bounds(seed, vs, vt, ts, tt, k, m):
    k = min(k, vs, vt)
    rng = np.random.default_rng(seed)
    zs, zt = rng.normal(size=(1, ts, vs)) * 3, rng.normal(size=(1, tt, vt)) * 3
    As, At, N = _padded_graphs(zs[0], zt[0], k)
    res = gwlite.gromov_wasserstein(As, At, method="sorted", loss_fun="abs_loss")
    full = float(_gld(zs, zt, k=k, m=N, features="degrees"))
    assert full == pytest.approx(N**2 * res.value, rel=1e-9, abs=1e-14)  # m = N: equality
    gld = float(_gld(zs, zt, k=k, m=m, features="degrees"))
    tol = 1e-12 + 1e-9 * N**2 * res.upper
    assert gld <= N**2 * res.value + tol  # a truncated sum of the same terms
    assert N**2 * res.value <= N**2 * res.upper + tol


@pytest.mark.skipif("exact" not in gwlite.METHODS, reason="gwlite has no exact solver yet")
@pytest.mark.parametrize("seed", range(4))
def test_gld_below_scaled_exact_gw(seed):
    rng = np.random.default_rng(seed)
    vs, vt = rng.integers(3, 7, size=2)
    zs, zt = rng.normal(size=(1, 5, vs)) * 2, rng.normal(size=(1, 4, vt)) * 2
    As, At, N = _padded_graphs(zs[0], zt[0], 3)
    exact = gwlite.gromov_wasserstein(As, At, method="exact", loss_fun="abs_loss")
    tlb = gwlite.lower_bound(As, At, loss_fun="abs_loss", lower="tlb")
    for m in (2, N):
        gld = float(_gld(zs, zt, k=3, m=m, features="degrees"))
        assert gld <= N**2 * tlb * (1 + 1e-9) + 1e-12  # TLB dominates the closed form
        assert gld <= N**2 * exact.lower * (1 + 1e-9) + 1e-12
        assert gld <= N**2 * exact.upper * (1 + 1e-9) + 1e-12


# ---------------------------------------------------------------------------------------
# invariances and equivalent inputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("features", ["shares", "degrees"])
@pytest.mark.parametrize("nodes", ["vocab", "rank"])
def test_invariant_to_permuting_either_vocabulary(nodes, features):
    zs, zt, ms, mt = _inputs(12)
    rng = np.random.default_rng(0)
    opts = {"k": 4, "m": 9, "nodes": nodes, "features": features, "reduction": "none"}
    base = _gld(zs, zt, ms, mt, **opts)
    ps, pt = rng.permutation(zs.shape[-1]), rng.permutation(zt.shape[-1])
    for a, b in ((zs[..., ps], zt), (zs, zt[..., pt]), (zs[..., ps], zt[..., pt])):
        torch.testing.assert_close(_gld(a, b, ms, mt, **opts), base)


def test_not_invariant_to_changing_the_distribution():
    zs, zt, ms, mt = _inputs(13)
    base = float(_gld(zs, zt, ms, mt, k=4, m=9))
    assert float(_gld(zs * 2.0, zt, ms, mt, k=4, m=9)) != pytest.approx(base, rel=1e-3)
    assert float(_gld(zs, zs, ms, ms, k=4, m=9)) == 0.0


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_teacher_topk_cache_equals_teacher_logits(tau):
    zs, zt, ms, mt = _inputs(14)
    lp = torch.log_softmax(torch.tensor(zt) / tau, -1).topk(7)  # k' = 7 >= k = 4
    cache = TopK(lp.values, lp.indices)
    for nodes, features in (("vocab", "shares"), ("rank", "shares"), ("vocab", "degrees")):
        for graph in ("sequence", "batch"):
            opts = {"k": 4, "m": 10, "temperature": tau, "nodes": nodes, "graph": graph}
            opts["features"] = features
            ref = _gld(zs, zt, ms, mt, reduction="none", **opts)
            got = fusion.gld_loss(
                torch.tensor(zs),
                cache,
                torch.tensor(ms),
                torch.tensor(mt),
                reduction="none",
                **opts,
            )
            torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)


def test_half_precision_cache_is_close():
    zs, zt, ms, mt = _inputs(15)
    lp = torch.log_softmax(torch.tensor(zt), -1).topk(4)
    cache = TopK(lp.values.to(torch.bfloat16), lp.indices.int())
    got = fusion.gld_loss(torch.tensor(zs), cache, torch.tensor(ms), torch.tensor(mt), k=4, m=8)
    ref = _gld(zs, zt, ms, mt, k=4, m=8)
    assert float(got) == pytest.approx(float(ref), rel=2e-2, abs=1e-4)


# ---------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------


def test_mask_equals_dropping_the_positions():
    zs, zt, ms, mt = _inputs(16)
    got = _gld(zs, zt, ms, mt, k=4, m=12, reduction="none")
    for b in range(len(zs)):
        alone = _gld(zs[b : b + 1, ms[b]], zt[b : b + 1, mt[b]], k=4, m=12)
        torch.testing.assert_close(got[b], alone)


@pytest.mark.parametrize("graph", ["sequence", "batch"])
def test_fully_masked_sequence_contributes_zero_with_finite_gradient(graph):
    zs, zt, ms, mt = _inputs(17)
    ms[1] = False
    zs_t = torch.tensor(zs, requires_grad=True)
    masks = torch.tensor(ms), torch.tensor(mt)
    per = fusion.gld_loss(zs_t, torch.tensor(zt), *masks, k=4, m=8, graph=graph, reduction="none")
    if graph == "sequence":
        assert per[1] == 0.0
        keep = [0, 2]
        alone = _gld(zs[keep], zt[keep], ms[keep], mt[keep], k=4, m=8, reduction="none")
        torch.testing.assert_close(per[keep], alone)
    per.sum().backward()
    assert torch.isfinite(zs_t.grad).all()
    assert torch.all(zs_t.grad[1] == 0)
    mean = fusion.gld_loss(zs_t.detach(), torch.tensor(zt), *masks, k=4, m=8, graph=graph)
    if graph == "sequence":
        assert float(mean) == pytest.approx(float(per.detach().sum()) / 3)  # mean over all B


def test_everything_masked_gives_zero_and_zero_gradient():
    zs, zt, ms, mt = _inputs(18)
    zs_t = torch.tensor(zs, requires_grad=True)
    for graph in ("sequence", "batch"):
        nothing = torch.zeros(ms.shape, dtype=torch.bool)
        loss = fusion.gld_loss(
            zs_t, torch.tensor(zt), nothing, torch.tensor(mt), graph=graph, k=4, m=8
        )
        loss.backward()
        assert float(loss.detach()) == 0.0
        assert torch.all(zs_t.grad == 0)


def test_masked_positions_holding_nonfinite_values_do_not_leak():
    zs, zt, ms, mt = _inputs(19)
    ms[:, -1] = False
    dirty = zs.copy()
    dirty[:, -1, :] = 1e30
    torch.testing.assert_close(_gld(dirty, zt, ms, mt, k=4, m=8), _gld(zs, zt, ms, mt, k=4, m=8))


# ---------------------------------------------------------------------------------------
# dtypes and gradients
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits(dtype):
    zs, zt, ms, mt = _inputs(20, Vs=200, Vt=150)
    s_half = torch.tensor(zs).to(dtype).requires_grad_()
    t_half = torch.tensor(zt).to(dtype)
    loss = fusion.gld_loss(s_half, t_half, torch.tensor(ms), torch.tensor(mt), k=5, m=20)
    assert loss.dtype == torch.float32
    loss.backward()
    assert s_half.grad.dtype == dtype and torch.isfinite(s_half.grad).all()
    # the same numbers in fp32 (what the half path computes in internally)
    s32 = s_half.detach().float().requires_grad_()
    ref = fusion.gld_loss(s32, t_half.float(), torch.tensor(ms), torch.tensor(mt), k=5, m=20)
    ref.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(s_half.grad.float(), s32.grad, rtol=2e-2, atol=1e-5)


@pytest.mark.parametrize(
    "features,values",
    [("shares", "prob"), ("degrees", "prob"), ("degrees", "logit"), ("degrees", "zscore")],
)
@pytest.mark.parametrize("nodes", ["vocab", "rank"])
@pytest.mark.parametrize("graph", ["sequence", "batch"])
def test_gradcheck_float64(features, values, nodes, graph):
    zs, zt, ms, mt = _inputs(21, B=2, Ts=4, Tt=5, Vs=9, Vt=11)
    s = torch.tensor(zs, requires_grad=True)
    t = torch.tensor(zt, requires_grad=True)

    def fn(a, b):
        opts = {"values": values, "nodes": nodes, "graph": graph, "chunk_size": 3}
        opts["features"] = features
        return fusion.gld_loss(a, b, torch.tensor(ms), torch.tensor(mt), k=3, m=6, **opts)

    assert torch.autograd.gradcheck(fn, (s, t), eps=1e-6, atol=1e-6)


def test_ties_never_give_nan_gradients():
    zs = torch.zeros(2, 5, 30, dtype=torch.float64)
    zs[0, :, :12] = 1.0  # ties inside and across the top-k boundary, and tied degrees
    zs = zs.requires_grad_()
    zt = torch.zeros(2, 4, 25, dtype=torch.float64)
    for values, features in (("prob", "shares"), ("prob", "degrees"), ("logit", "degrees")):
        for nodes in ("vocab", "rank"):
            opts = {"values": values, "nodes": nodes, "features": features}
            loss = fusion.gld_loss(zs, zt, k=4, m=8, **opts)
            (grad,) = torch.autograd.grad(loss, zs)
            assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_bf16_ties_never_give_nan_gradients():
    zs = torch.randint(-2, 3, (2, 6, 64)).to(torch.bfloat16).requires_grad_()
    zt = torch.randint(-2, 3, (2, 7, 80)).to(torch.bfloat16)
    fusion.gld_loss(zs, zt, k=10, m=64).backward()
    assert torch.isfinite(zs.grad.float()).all()


# ---------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------


def test_module_matches_functional_and_repr():
    zs, zt, ms, mt = _inputs(22)
    module = fusion.GLDLoss(k=3, m=7, temperature=0.9, nodes="rank", graph="batch", reduction="sum")
    t = torch.tensor
    got = module(t(zs), t(zt), t(ms), t(mt))
    opts = {"temperature": 0.9, "nodes": "rank", "graph": "batch", "reduction": "sum"}
    ref = fusion.gld_loss(t(zs), t(zt), t(ms), t(mt), k=3, m=7, **opts)
    torch.testing.assert_close(got, ref)
    assert "nodes='rank'" in repr(module) and "k=3" in repr(module)


def test_batch_graph_reduction_shapes():
    zs, zt, ms, mt = _inputs(23)
    assert _gld(zs, zt, ms, mt, graph="batch", k=3, m=5).shape == ()
    assert _gld(zs, zt, ms, mt, graph="batch", k=3, m=5, reduction="none").shape == (1,)
    assert _gld(zs, zt, ms, mt, k=3, m=5, reduction="none").shape == (3,)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"values": "probs"}, "values must be one of"),
        ({"nodes": "token"}, "nodes must be one of"),
        ({"graph": "global"}, "graph must be one of"),
        ({"reduction": "avg"}, "reduction must be one of"),
        ({"features": "top"}, "features must be one of"),
        ({"values": "logit"}, "features='degrees'"),
        ({"m": 0}, "m must be"),
        ({"k": 50}, "k must be in"),
    ],
)
def test_bad_options_raise(kwargs, match):
    zs, zt, ms, mt = _inputs(24)
    with pytest.raises(ValueError, match=match):
        _gld(zs, zt, ms, mt, **kwargs)
    if "m" not in kwargs and "k" not in kwargs and "logit" not in kwargs.values():
        with pytest.raises(ValueError, match=match):
            fusion.GLDLoss(**kwargs)


def test_bad_shapes_raise():
    zs, zt, ms, mt = _inputs(25)
    with pytest.raises(ValueError, match="batch"):
        _gld(zs, zt[:2])
    with pytest.raises(ValueError, match="mask must have shape"):
        _gld(zs, zt, ms[:, :-1], mt)
    with pytest.raises(ValueError, match=r"\(B, T_s, V_s\)"):
        fusion.gld_loss(torch.tensor(zs[0]), torch.tensor(zt))


# ---------------------------------------------------------------------------------------
# tokenizer granularity: confident models must beat a uniform student, whatever the
# sequence lengths, vocabulary sizes and token repetition of the two tokenizations
# ---------------------------------------------------------------------------------------

CONFIDENT = 14.0  # logit margin of the token a confident model predicts


def _confident(tokens, vocab, margin=CONFIDENT):
    z = torch.zeros(1, len(tokens), vocab, dtype=torch.float64)
    z[0, torch.arange(len(tokens)), torch.as_tensor(tokens)] = margin
    return z


def _cached(z, k_cache):
    top = torch.log_softmax(z, -1).topk(k_cache, dim=-1)
    return TopK(top.values, top.indices)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    ts=st.integers(1, 80),
    tt=st.integers(1, 140),
    vs=st.integers(2, 300),
    vt=st.integers(2, 300),
    k=st.integers(2, 12),
    noise=st.sampled_from([0.0, 1e-3, 0.3]),
)
def test_confident_models_score_below_a_uniform_student_at_any_granularity(
    data, ts, tt, vs, vt, k, noise
):
    k = min(k, vs, vt)
    # arbitrary token sequences: a character-level text repeats few tokens, a BPE one many
    s_tokens = data.draw(st.lists(st.integers(0, vs - 1), min_size=ts, max_size=ts))
    t_tokens = data.draw(st.lists(st.integers(0, vt - 1), min_size=tt, max_size=tt))
    teacher = _cached(_confident(t_tokens, vt), min(vt, k + 2))
    confident = _confident(s_tokens, vs)
    g = torch.Generator().manual_seed(ts * 1000 + vs)
    uniform = noise * torch.randn(1, ts, vs, generator=g, dtype=torch.float64)
    for nodes in ("vocab", "rank"):
        sharp = float(fusion.gld_loss(confident, teacher, k=k, nodes=nodes))
        flat = float(fusion.gld_loss(uniform, teacher, k=k, nodes=nodes))
        assert sharp < flat, (nodes, sharp, flat)
        assert sharp < 1e-3  # two confident models look alike, whatever their tokenizers
        assert 0.0 <= flat <= 1.0


def test_confident_teacher_and_student_of_the_same_text_agree_when_lengths_differ():
    # one text, cut into 113 characters by the teacher and 30 sub-words by the student
    text = " ".join(f"{a}+{a + 3}={2 * a + 3}." for a in range(11, 23))[:113]
    chars = sorted(set(text))
    t_tokens = [chars.index(c) for c in text]
    s_tokens = list(range(30))  # a BPE student: (almost) every piece distinct
    teacher = _cached(_confident(t_tokens, len(chars) + 4), 12)
    confident, uniform = _confident(s_tokens, 320), torch.zeros(1, 30, 320, dtype=torch.float64)
    shares = [float(fusion.gld_loss(z, teacher)) for z in (confident, uniform)]
    degrees = [float(fusion.gld_loss(z, teacher, features="degrees")) for z in (confident, uniform)]
    assert shares[0] < 1e-3 < 0.85 < shares[1]
    # the paper's raw degrees are token frequencies: the peaked character histogram is
    # farther from the flat sub-word one than from the near-zero degrees of a uniform
    # student, so raw GLD rewards the uniform student (the bias "shares" removes)
    assert degrees[0] > degrees[1]


def test_shares_ignore_repeating_the_sequence():
    zs, zt, ms, mt = _inputs(26, masked=False)
    twice = np.concatenate([zs, zs], axis=1)
    for features in ("shares", "degrees"):
        a = _gld(zs, zt, k=4, features=features, reduction="none")
        b = _gld(twice, zt, k=4, features=features, reduction="none")
        torch.testing.assert_close(a, b)
