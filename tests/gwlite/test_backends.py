"""Same call on NumPy, torch (CPU/CUDA) and CuPy: same numbers, same array type back.

NumPy and torch-CPU always run. CuPy and CUDA cases are skipped with a visible reason
where no GPU exists (``pytest -rs`` lists them); ``benchmarks/gpu_check.sh`` runs them
on a GPU machine.
"""

import numpy as np
import pytest
import torch
from backends import BACKENDS, convert
from hypothesis import given, settings
from hypothesis import strategies as st

import gwlite
from gwlite.families import generate


def host(x):
    return gwlite._xp.to_numpy(x)


def _instance(n=7, m=6, weighted=True):
    C1, _ = generate("euclidean", n, seed=1)
    C2, _ = generate("gram", m, seed=2)
    rng = np.random.default_rng(0)
    p = rng.random(n) + 0.1 if weighted else None
    return C1, C2, None if p is None else p / p.sum(), None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["sorted", "cg", "entropic"])
def test_methods_agree_with_numpy(backend, method):
    C1, C2, p, q = _instance()
    args = [convert(x, backend) for x in (C1, C2, p, q)]
    opts = {"epsilon": 0.5, "max_iter": 50} if method == "entropic" else {}
    ref = gwlite.gromov_wasserstein(C1, C2, p, q, method=method, **opts)
    res = gwlite.gromov_wasserstein(*args, method=method, **opts)
    for field in ("value", "lower", "upper"):
        got = getattr(res, field)
        assert isinstance(got, float), field
        assert got == pytest.approx(getattr(ref, field), abs=1e-6), field
    assert type(res.coupling) is type(args[0])
    if hasattr(args[0], "device"):
        assert res.coupling.device == args[0].device
    np.testing.assert_allclose(host(res.coupling), ref.coupling, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", gwlite.LOWER_BOUNDS)
@pytest.mark.parametrize("loss_fun", ["square_loss", "abs_loss"])
def test_lower_bounds_agree_with_numpy(backend, kind, loss_fun):
    C1, C2, p, q = _instance()
    ref = gwlite.lower_bound(C1, C2, p, q, loss_fun=loss_fun, lower=kind)
    got = gwlite.lower_bound(
        *[convert(x, backend) for x in (C1, C2, p, q)], loss_fun=loss_fun, lower=kind
    )
    assert got == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_sorted_bounds(backend):
    rng = np.random.default_rng(4)
    C1, C2 = rng.random((5, 9, 9)), rng.random((5, 7, 7))
    lows = gwlite.lower_bound(convert(C1, backend), convert(C2, backend))
    ups = gwlite.sorted_upper_bound(convert(C1, backend), convert(C2, backend))
    assert lows.shape == ups.shape == (5,)
    for b in range(5):
        assert float(lows[b]) == pytest.approx(gwlite.lower_bound(C1[b], C2[b]), abs=1e-12)
        assert float(ups[b]) == pytest.approx(gwlite.sorted_upper_bound(C1[b], C2[b]), abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_converts_in_and_out(backend):
    if "exact" not in gwlite.METHODS:
        pytest.fail("method 'exact' is not registered")
    C1, _ = generate("euclidean", 6, seed=1)
    C2, _ = generate("euclidean", 6, seed=2)
    ref = gwlite.gromov_wasserstein(C1, C2, method="exact")
    res = gwlite.gromov_wasserstein(convert(C1, backend), convert(C2, backend), method="exact")
    assert res.value == pytest.approx(ref.value, abs=1e-9)
    assert type(res.coupling) is type(convert(C1, backend))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_torch_inputs(dtype):
    C1, C2, _, _ = _instance(weighted=False)
    ref = gwlite.gromov_wasserstein(C1, C2, method="sorted")
    res = gwlite.gromov_wasserstein(
        torch.tensor(C1, dtype=dtype), torch.tensor(C2, dtype=dtype), method="sorted"
    )
    assert res.coupling.dtype == torch.float32  # half types are computed in float32
    tol = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
    assert res.value == pytest.approx(ref.value, rel=tol, abs=tol)
    assert res.lower <= res.upper


def _tie_free(n, seed):
    rng = np.random.default_rng(seed)
    A = rng.random((n, n))
    return torch.tensor(A + A.T, dtype=torch.float64)


@pytest.mark.parametrize("loss_fun", ["square_loss", "abs_loss"])
def test_gradcheck_closed_form_and_upper(loss_fun):
    C1, C2 = _tie_free(6, 0), _tie_free(5, 1)
    C1.requires_grad_(True)
    C2.requires_grad_(True)

    def value(A, B):
        return gwlite.lower_bound(A, B, loss_fun=loss_fun)

    def upper(A, B):
        return gwlite.sorted_upper_bound(A, B, loss_fun=loss_fun)

    assert torch.autograd.gradcheck(value, (C1, C2))
    assert torch.autograd.gradcheck(upper, (C1, C2))


def test_gradcheck_weights_on_the_simplex():
    # weights are parametrised by a softmax so that finite differences stay feasible
    C1, C2 = _tie_free(6, 2), _tie_free(4, 3)
    theta = torch.randn(6, dtype=torch.float64, requires_grad=True)

    def value(t):
        return gwlite.lower_bound(C1, C2, torch.softmax(t, 0), None)

    def upper(t):
        return gwlite.sorted_upper_bound(C1, C2, torch.softmax(t, 0), None)

    assert torch.autograd.gradcheck(value, (theta,))
    assert torch.autograd.gradcheck(upper, (theta,))


def test_results_carry_the_graph_when_inputs_require_grad():
    C1, C2 = _tie_free(6, 4), _tie_free(6, 5)
    C1.requires_grad_(True)
    res = gwlite.gromov_wasserstein(C1, C2, method="sorted", lower="tlb")
    for field in ("value", "lower", "upper"):
        assert torch.is_tensor(getattr(res, field)) and getattr(res, field).requires_grad
    res.upper.backward()
    assert torch.isfinite(C1.grad).all()


def test_tlb_gradient_is_the_envelope_gradient():
    C1, C2 = _tie_free(6, 6), _tie_free(6, 7)
    C1.requires_grad_(True)
    tlb = gwlite.lower_bound(C1, C2, lower="tlb")
    (g,) = torch.autograd.grad(tlb, C1)
    eps = 1e-6
    D = torch.randn(6, 6, dtype=torch.float64)
    D = D + D.T
    with torch.no_grad():
        plus = gwlite.lower_bound(C1 + eps * D, C2, lower="tlb")
        minus = gwlite.lower_bound(C1 - eps * D, C2, lower="tlb")
    assert (plus - minus) / (2 * eps) == pytest.approx(float((g * D).sum()), rel=1e-4, abs=1e-8)


@pytest.mark.parametrize("method", ["cg", "entropic"])
def test_pot_gradients_match_pots_envelope_gradient(method):
    import ot

    C1, _ = generate("euclidean", 7, seed=3)
    C2, _ = generate("euclidean", 7, seed=4)
    A = torch.tensor(C1, requires_grad=True)
    res = (
        gwlite.gromov_wasserstein(A, torch.tensor(C2), method=method, epsilon=0.1)
        if method == "entropic"
        else gwlite.gromov_wasserstein(A, torch.tensor(C2), method=method)
    )
    res.value.backward()
    T = res.coupling.detach()
    p = T.sum(1)
    # d/dC1 of the square-loss cost at a fixed feasible plan: 2 C1 * p p^T - 2 T C2 T^T
    expected = 2 * A.detach() * torch.outer(p, p) - 2 * T @ torch.tensor(C2) @ T.T
    torch.testing.assert_close(A.grad, expected, atol=1e-8, rtol=1e-6)
    assert ot is not None


@settings(max_examples=20, deadline=None)
@given(
    st.integers(2, 8),
    st.integers(2, 8),
    st.integers(0, 2**31 - 1),
    st.sampled_from(["square_loss", "abs_loss"]),
)
def test_torch_and_numpy_agree_on_random_instances(n, m, seed, loss_fun):
    rng = np.random.default_rng(seed)
    C1, C2 = rng.random((n, n)), rng.random((m, m))
    ref = gwlite.gromov_wasserstein(C1, C2, method="sorted", loss_fun=loss_fun)
    res = gwlite.gromov_wasserstein(
        torch.tensor(C1), torch.tensor(C2), method="sorted", loss_fun=loss_fun
    )
    assert res.value == pytest.approx(ref.value, abs=1e-12)
    assert res.upper == pytest.approx(ref.upper, abs=1e-12)


@pytest.mark.parametrize("method", ["sorted", "cg", "entropic"])
@pytest.mark.parametrize("which", ["p", "C1"])
def test_with_grad_every_number_is_a_tensor(method, which):
    # only p requiring grad used to give float value/upper next to a tensor lower
    C1, C2, p, _ = _instance()
    A, B = torch.tensor(C1), torch.tensor(C2)
    w = torch.tensor(p)
    (w if which == "p" else A).requires_grad_(True)
    res = gwlite.gromov_wasserstein(A, B, w, None, method=method, lower="tlb")
    for field in ("value", "lower", "upper"):
        got = getattr(res, field)
        assert torch.is_tensor(got) and got.ndim == 0, field
    assert res.upper.requires_grad
    res.upper.backward()
    leaf = w if which == "p" else A
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    ref = gwlite.gromov_wasserstein(C1, C2, p, None, method=method, lower="tlb")
    assert float(res.upper.detach()) == pytest.approx(ref.upper, rel=1e-9)


def test_exact_with_grad_returns_tensors():
    C, _ = generate("euclidean", 6, seed=1)
    D, _ = generate("euclidean", 6, seed=2)
    A = torch.tensor(C, requires_grad=True)
    res = gwlite.gromov_wasserstein(A, torch.tensor(D), method="exact")
    assert all(torch.is_tensor(getattr(res, f)) for f in ("value", "lower", "upper"))
    res.value.backward()
    assert torch.isfinite(A.grad).all()


def test_complex_tensors_are_refused():
    with pytest.raises(gwlite.GWInputError, match="complex"):
        gwlite.gromov_wasserstein(torch.eye(3, dtype=torch.complex64), torch.eye(3))


def test_sdp_with_grad_every_number_is_a_tensor():
    from gwlite.solvers import sdp

    if not sdp.available():
        pytest.skip("method='sdp' needs SCS")
    C, _ = generate("euclidean", 3, seed=1)
    D, _ = generate("euclidean", 3, seed=2)
    res = gwlite.gromov_wasserstein(
        torch.tensor(C, requires_grad=True), torch.tensor(D), method="sdp"
    )
    assert all(torch.is_tensor(getattr(res, f)) for f in ("value", "lower", "upper"))


def test_cg_warm_start_in_float32():
    # POT asserts G0's marginals to 1e-8, below float32 round-off: gwlite runs such a
    # warm-started solve in float64 (found by the fuzz harness through auto's SDP stage;
    # this is its case: bfloat16 matrices, so the problem is computed in float32)
    C1 = torch.tensor([[0.0, 15.511, 19.990], [15.511, 0.0, 7.278], [19.990, 7.278, 0.0]])
    C2 = torch.tensor(
        [[0.0, 1.768e-3, 7.36e-4], [1.768e-3, 0.0, 2.269e-3], [7.36e-4, 2.269e-3, 0.0]]
    )
    p = torch.tensor([0.38348622, 0.06772468, 0.5487891], dtype=torch.float64)
    p = p / p.sum()
    G0 = torch.outer(p.float(), torch.full((3,), 1 / 3))
    res = gwlite.gromov_wasserstein(
        C1.to(torch.bfloat16), C2.to(torch.bfloat16), p, None, method="cg", G0=G0
    )
    assert 0 <= res.lower <= res.upper and res.marginal_error < 1e-6
