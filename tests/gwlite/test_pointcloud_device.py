"""Point clouds on torch and CuPy: the same numbers as NumPy, computed where the
coordinates live, with no ``n x n`` block ever copied to the host."""

import numpy as np
import pytest
import torch
from backends import BACKENDS, convert
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import random_coupling

import gwlite
from gwlite import _xp
from gwlite.pointcloud import PointCloud, geometry, spectral
from gwlite.pointcloud.samples import torus, trefoil

METRICS = ["euclidean", "sqeuclidean"]
LOSSES = ["square_loss", "abs_loss"]
BOUNDS = ["mean_row", "flb", "spectral", "quantized_slb", "quantized_tlb"]
seeds = st.integers(0, 2**31 - 1)


def _data(seed, n, m, d1, d2, weighted):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, d1)), rng.normal(size=(m, d2)) * rng.uniform(0.5, 2, size=d2)
    p = q = None
    if weighted:
        p, q = rng.uniform(0.1, 1, n), rng.uniform(0.1, 1, m)
        p, q = p / p.sum(), q / q.sum()
    return X, Y, p, q


def _pair(data, metric, backend, chunk=1 << 22):
    X, Y, p, q = data
    return (
        PointCloud(convert(X, backend), metric, convert(p, backend), chunk),
        PointCloud(convert(Y, backend), metric, convert(q, backend), chunk),
    )


def _close(a, b, rel=1e-9):
    assert isinstance(a, float)
    assert abs(a - b) <= rel * max(1.0, abs(b))


def _close_bound(lower, a, b):
    # the quantised bands are step functions of cumulative weights: an ulp in a summed
    # weight can add or merge a quantile level (a cell of width ~1e-10), so they agree to
    # 1e-6, the others to round-off
    _close(a, b, 1e-6 if lower.startswith("quantized") else 1e-9)


# ------------------------------------------------------------------ same numbers everywhere
@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    n=st.integers(1, 30),
    m=st.integers(1, 30),
    d1=st.integers(1, 3),
    d2=st.integers(1, 3),
    metric=st.sampled_from(METRICS),
    loss_fun=st.sampled_from(LOSSES),
    weighted=st.booleans(),
)
def test_torch_clouds_give_the_numpy_bounds_and_costs(
    seed, n, m, d1, d2, metric, loss_fun, weighted
):
    data = _data(seed, n, m, d1, d2, weighted)
    host, dev = _pair(data, metric, "numpy"), _pair(data, metric, "torch-cpu")
    for lower in BOUNDS:
        want = gwlite.lower_bound(*host, loss_fun=loss_fun, lower=lower)
        _close_bound(lower, gwlite.lower_bound(*dev, loss_fun=loss_fun, lower=lower), want)
    T = random_coupling(np.random.default_rng(seed), np.asarray(host[0].p), np.asarray(host[1].p))
    want = gwlite.gw_cost(*host, T, loss_fun)
    _close(gwlite.gw_cost(*dev, torch.as_tensor(T), loss_fun), want)  # dense, on the device
    _close(gwlite.gw_cost(*dev, T, loss_fun), want)
    if loss_fun == "square_loss":
        _close(geometry.product_cost(*dev), geometry.product_cost(*host))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", METRICS)
def test_every_backend_computes_on_its_own_device(backend, metric):
    # the CuPy and CUDA cases run in benchmarks/gpu_check.sh on a machine with a GPU
    data = _data(7, 120, 90, 3, 2, weighted=True)
    host, dev = _pair(data, metric, "numpy"), _pair(data, metric, backend)
    assert _xp.backend_name(dev[0].X) == _xp.backend_name(convert(data[0], backend))
    assert str(_xp.device(dev[0].X)) == str(_xp.device(convert(data[0], backend)))
    assert dev[0].X.dtype == dev[0].xp.float64 and dev[0].p.dtype == dev[0].xp.float64
    row = geometry.mean_row_features(dev[0])
    assert _xp.backend_name(row) == _xp.backend_name(dev[0].X)
    np.testing.assert_allclose(_xp.to_numpy(row), geometry.mean_row_features(host[0]), rtol=1e-12)
    for lower in BOUNDS:
        got = gwlite.lower_bound(*dev, lower=lower)
        _close_bound(lower, got, gwlite.lower_bound(*host, lower=lower))
    res = gwlite.gromov_wasserstein(*dev, method="multiscale", n_clusters=30)
    assert res.lower <= res.upper


def test_float32_coordinates_are_promoted_exactly():
    X, Y = torus(200, seed=1).astype(np.float32), trefoil(150, seed=2).astype(np.float32)
    c32 = (PointCloud(torch.as_tensor(X)), PointCloud(torch.as_tensor(Y)))
    c64 = (PointCloud(X.astype(np.float64)), PointCloud(Y.astype(np.float64)))
    assert c32[0].X.dtype == torch.float64
    for lower in ("flb", "spectral"):
        _close(gwlite.lower_bound(*c32, lower=lower), gwlite.lower_bound(*c64, lower=lower))


def test_mixed_libraries_are_compared():
    data = _data(3, 40, 30, 2, 3, weighted=False)
    (a, _), (_, b) = _pair(data, "euclidean", "numpy"), _pair(data, "euclidean", "torch-cpu")
    (a0, b0) = _pair(data, "euclidean", "numpy")
    for lower in BOUNDS:
        got = gwlite.lower_bound(a, b, lower=lower)
        _close_bound(lower, got, gwlite.lower_bound(a0, b0, lower=lower))
    _close(
        gwlite.gromov_wasserstein(a, b, method="cg").upper,
        gwlite.gromov_wasserstein(a0, b0, method="cg").upper,
    )


def test_torch_weights_on_a_numpy_cloud_and_back_are_accepted():
    X = torus(20, seed=0)
    w = np.random.default_rng(0).uniform(0.5, 1, 20)
    w /= w.sum()
    a = PointCloud(X, weights=torch.as_tensor(w))
    b = PointCloud(torch.as_tensor(X), weights=w)
    assert isinstance(a.p, np.ndarray) and isinstance(b.p, torch.Tensor)
    np.testing.assert_allclose(a.p, b.p.numpy(), rtol=1e-15)


# ------------------------------------------------------------------ no n x n host copy
class _HostCopySpy:
    """Records the size of every torch -> NumPy conversion."""

    def __init__(self, monkeypatch):
        self.sizes = []
        spy = self

        original_numpy = torch.Tensor.numpy
        original_array = torch.Tensor.__array__

        def numpy(self, *args, **kwargs):
            spy.sizes.append(self.numel())
            return original_numpy(self, *args, **kwargs)

        def array(self, *args, **kwargs):
            spy.sizes.append(self.numel())
            return original_array(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "numpy", numpy)
        monkeypatch.setattr(torch.Tensor, "__array__", array)


@pytest.mark.parametrize("metric", METRICS)
def test_no_n_by_n_block_reaches_the_host(monkeypatch, metric):
    n = 400
    X, Y = torus(n, seed=1), trefoil(n, seed=2)
    c1, c2 = PointCloud(torch.as_tensor(X), metric), PointCloud(torch.as_tensor(Y), metric)
    T = torch.as_tensor(np.eye(n) / n)
    spy = _HostCopySpy(monkeypatch)
    for lower in ("mean_row", "flb", "spectral"):
        gwlite.lower_bound(c1, c2, lower=lower)
    for loss_fun in LOSSES:
        gwlite.gw_cost(c1, c2, T, loss_fun)
    geometry.product_cost(c1, c2)
    spectral.spectral_lower(c1, c2)
    assert spy.sizes, "the spy saw no conversion at all: it is not wired"
    # vectors, n x d coordinates and n x k eigenvector blocks only
    assert max(spy.sizes) <= n * (spectral.EIGENPAIRS + 1) < n * n
