"""The spectral bound on point clouds: below every coupling, certified eigenvalue bounds
whatever the eigen-solver returns, never below the mean-row bound, wired into gwlite."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import gw_cost_dense, random_coupling
from scipy.sparse.linalg import aslinearoperator
from scipy.spatial.distance import cdist

import gwlite
from gwlite.pointcloud import PointCloud, spectral
from gwlite.pointcloud.samples import rigid_copy, torus, trefoil

METRICS = ["euclidean", "sqeuclidean"]
LOSSES = ["square_loss", "abs_loss"]
seeds = st.integers(0, 2**31 - 1)


def _clouds(seed, n, m, d1, d2, metrics, weighted):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, d1)), rng.normal(size=(m, d2)) * rng.uniform(0.3, 2, size=d2)
    p = q = None
    if weighted:
        p, q = rng.uniform(0.1, 1, n), rng.uniform(0.1, 1, m)
        p, q = p / p.sum(), q / q.sum()
    return PointCloud(X, metrics[0], p), PointCloud(Y, metrics[1], q)


def _dense(c):
    return cdist(c.X, c.X, c.metric), np.asarray(c.p)


def _dense_operator(c):
    """The centred operator A built densely: -P^(1/2) (C - s1' - 1s' + c11') P^(1/2)."""
    C, p = _dense(c)
    s = C @ p
    mid = C - s[:, None] - s[None, :] + p @ s
    return -np.sqrt(p)[:, None] * mid * np.sqrt(p)[None, :]


def _couplings(rng, p, q, count):
    """Random couplings, the product coupling and gwlite's CG plan."""
    yield np.outer(p, q)
    for _ in range(count):
        yield random_coupling(rng, p, q)


# ------------------------------------------------------------------ a bound, over couplings
@settings(max_examples=25, deadline=None)
@given(
    seed=seeds,
    n=st.integers(1, 7),
    m=st.integers(1, 7),
    d1=st.integers(1, 3),
    d2=st.integers(1, 3),
    metrics=st.tuples(st.sampled_from(METRICS), st.sampled_from(METRICS)),
    loss_fun=st.sampled_from(LOSSES),
    weighted=st.booleans(),
)
def test_spectral_bound_is_below_every_coupling(seed, n, m, d1, d2, metrics, loss_fun, weighted):
    c1, c2 = _clouds(seed, n, m, d1, d2, metrics, weighted)
    (C1, p), (C2, q) = _dense(c1), _dense(c2)
    bound = spectral.spectral_lower(c1, c2, loss_fun).value
    rng = np.random.default_rng(seed)
    plans = list(_couplings(rng, p, q, 10))
    plans.append(np.asarray(gwlite.gromov_wasserstein(C1, C2, p, q, loss_fun=loss_fun).coupling))
    for T in plans:
        assert bound <= gw_cost_dense(C1, C2, T, loss_fun) * (1 + 1e-12) + 1e-12


@settings(max_examples=15, deadline=None)
@given(seed=seeds, n=st.integers(2, 6), metric=st.sampled_from(METRICS))
def test_spectral_bound_is_below_the_certified_optimum(seed, n, metric):
    # distance matrices are conditionally negative definite: the exact solver certifies GW
    c1, c2 = _clouds(seed, n, n, 2, 3, (metric, metric), weighted=False)
    (C1, _), (C2, _) = _dense(c1), _dense(c2)
    exact = gwlite.gromov_wasserstein(C1, C2, method="exact")
    assert exact.certified
    bound = gwlite.lower_bound(c1, c2, lower="spectral")
    assert bound <= exact.upper * (1 + 1e-12) + 1e-12


@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    n=st.integers(1, 9),
    m=st.integers(1, 9),
    metrics=st.tuples(st.sampled_from(METRICS), st.sampled_from(METRICS)),
    weighted=st.booleans(),
)
def test_spectral_bound_is_never_below_the_mean_row_bound(seed, n, m, metrics, weighted):
    # square loss: the bound is the mean-row bound plus two non-negative terms
    c1, c2 = _clouds(seed, n, m, 2, 3, metrics, weighted)
    got = spectral.spectral_lower(c1, c2)
    mean_row = gwlite.lower_bound(c1, c2, lower="mean_row")
    assert got.mean_row == pytest.approx(mean_row, rel=1e-9, abs=1e-12)
    assert got.value >= mean_row - 2 * got.margin - 1e-12 * max(1.0, mean_row)


def test_rigid_copy_gets_zero_and_different_shapes_a_positive_bound():
    X = torus(300, seed=3)
    Y, _ = rigid_copy(X, seed=4)
    for metric in METRICS:
        same = gwlite.lower_bound(PointCloud(X, metric), PointCloud(Y, metric), lower="spectral")
        assert same == 0.0  # GW = 0 here: anything above would be invalid
        other = PointCloud(trefoil(300, seed=5), metric)
        assert gwlite.lower_bound(PointCloud(X, metric), other, lower="spectral") > 0


@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    n=st.integers(20, 60),
    m=st.integers(20, 60),
    k=st.integers(1, 5),
    metrics=st.tuples(st.sampled_from(METRICS), st.just("euclidean")),
    weighted=st.booleans(),
)
def test_few_eigenpairs_give_a_valid_hoffman_wielandt_term(seed, n, m, k, metrics, weighted):
    # k much smaller than n: the certified tail bounds carry the Hoffman-Wielandt term
    c1, c2 = _clouds(seed, n, m, 3, 2, metrics, weighted)
    lam, mu = (np.sort(np.linalg.eigvalsh(_dense_operator(c)))[::-1] for c in (c1, c2))
    size = max(n, m)
    lam, mu = np.pad(lam, (0, size - n)), np.pad(mu, (0, size - m))
    exact = float(np.sum((lam - mu) ** 2))
    got = spectral.spectral_lower(c1, c2, k=k)
    assert got.hoffman_wielandt <= exact + 1e-9 * max(1.0, exact)
    (C1, p), (C2, q) = _dense(c1), _dense(c2)
    rng = np.random.default_rng(seed)
    plans = list(_couplings(rng, p, q, 5))
    plans.append(np.asarray(gwlite.gromov_wasserstein(C1, C2, p, q, method="cg").coupling))
    for T in plans:
        assert got.value <= gw_cost_dense(C1, C2, T) * (1 + 1e-12) + 1e-12


# ------------------------------------------------------------------ certified eigenvalues
@settings(max_examples=30, deadline=None)
@given(
    seed=seeds,
    n=st.integers(2, 40),
    k=st.integers(1, 6),
    weighted=st.booleans(),
    guess=st.sampled_from(["random", "eigen", "perturbed"]),
)
def test_certified_spectrum_brackets_the_eigenvalues_from_any_basis(seed, n, k, weighted, guess):
    c, _ = _clouds(seed, n, 2, 3, 1, ("euclidean", "euclidean"), weighted)
    A = _dense_operator(c)
    lam = np.sort(np.linalg.eigvalsh(A))[::-1]
    assert lam[-1] >= -1e-12 * max(1.0, lam[0])  # PSD (Schoenberg)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    V = np.linalg.eigh(A)[1][:, ::-1][:, :k]
    if guess == "random":
        V = rng.normal(size=(n, k))
    elif guess == "perturbed":
        V = V + 1e-3 * rng.normal(size=(n, k))
    S = spectral.certified_spectrum(aslinearoperator(A), V, np.trace(A), float(np.sum(A * A)))
    tol = 1e-10 * max(1.0, lam[0])
    assert np.all(S.upper >= lam[:k] - tol)
    assert np.all(np.diff(S.upper) <= 0)
    assert np.all(S.lower <= lam[:k] + tol)
    if n > k:
        assert S.tail >= lam[k] - tol


@pytest.mark.parametrize("metric", METRICS)
def test_cloud_spectrum_matches_the_dense_operator(metric):
    c = PointCloud(torus(150, seed=1), metric, np.full(150, 1 / 150))
    A = _dense_operator(c)
    lam = np.sort(np.linalg.eigvalsh(A))[::-1]
    S = spectral.cloud_spectrum(c, k=8)
    assert S.trace == pytest.approx(np.trace(A), rel=1e-12)
    assert S.frobenius2 == pytest.approx(float(np.sum(A * A)), rel=1e-9)
    if metric == "sqeuclidean":  # exact: rank d
        assert S.exact and np.allclose(S.upper, lam[:3], rtol=1e-10, atol=1e-12)
    else:  # LOBPCG converged: Ritz values are the eigenvalues; the top brackets are tight
        assert np.all(S.lower <= lam[:8] + 1e-12) and np.all(S.upper >= lam[:8] - 1e-12)
        assert np.allclose(S.lower, lam[:8], rtol=1e-6)
        assert np.allclose(S.upper[:2], lam[:2], rtol=1e-6)


def test_chunk_size_changes_no_number():
    X, Y = torus(260, seed=1), trefoil(240, seed=2)
    got = [
        gwlite.lower_bound(
            PointCloud(X, chunk_entries=chunk), PointCloud(Y, chunk_entries=chunk), lower="spectral"
        )
        for chunk in (1, 997, 1 << 22)
    ]
    assert max(got) - min(got) <= 1e-9 * max(got)


# ------------------------------------------------------------------ wiring
def test_lower_bound_and_multiscale_use_the_spectral_bound():
    c1, c2 = (
        PointCloud(torus(400, seed=1), "sqeuclidean"),
        PointCloud(trefoil(400, 2), "sqeuclidean"),
    )
    value = gwlite.lower_bound(c1, c2, lower="spectral")
    assert value == spectral.spectral_lower(c1, c2).value
    res = gwlite.gromov_wasserstein(c1, c2, method="multiscale", n_clusters=40)
    bounds = res.diagnostics["bounds"]
    assert bounds["spectral"] == pytest.approx(value, rel=1e-12)
    assert res.lower == min(max(bounds.values()), res.upper)
    assert bounds[res.diagnostics["lower_by"]] == max(bounds.values())


def test_auto_on_small_clouds_reports_the_spectral_bound_when_it_wins():
    # torus against trefoil, 200 points: the spectral bound beats the dense TLB here
    X, Y = torus(200, seed=1), trefoil(200, 2)
    c1, c2 = PointCloud(X, "sqeuclidean"), PointCloud(Y, "sqeuclidean")
    res = gwlite.gromov_wasserstein(c1, c2)
    value = spectral.spectral_lower(c1, c2).value
    dense = gwlite.gromov_wasserstein(_dense(c1)[0], _dense(c2)[0])
    assert res.diagnostics["spectral_lower"] == value > dense.lower
    assert res.diagnostics["lower_by"] == "spectral"
    assert res.lower == value <= res.value <= res.upper


def test_spectral_bound_refuses_matrices():
    C = cdist(torus(5), torus(5))
    with pytest.raises(gwlite.GWInputError, match="PointCloud"):
        gwlite.lower_bound(PointCloud(torus(5)), C, lower="spectral")
    with pytest.raises(gwlite.GWInputError, match="spectral"):
        gwlite.lower_bound(C, C, lower="spectral")
