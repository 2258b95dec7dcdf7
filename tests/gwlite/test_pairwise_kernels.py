"""The batched sorted bounds: equal to one gromov_wasserstein call per pair, padding exact.

Every test compares the vectorised kernels of gwlite.pairs with the per-pair
implementation of gwlite (or with the kernels run without any padding).
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import matrices, weights

import gwlite
from gwlite.pairs import kernels, prepare
from gwlite.pairs.prepare import build_buckets, prepare_spaces
from gwlite.pairs.spaces import as_spaces
from gwlite.pairs.tasks import Work, cheap_layer, compute_pairs, make_layer

LOWERS = ["mean_row", "flb", "slb", "tlb"]


def batched(spaces, loss_fun="square_loss", lower="mean_row", layer_name="main"):
    """All pairs i < j through the batched layer, in this process (no engine)."""
    S = as_spaces(spaces, loss_fun)
    layer = make_layer("sorted", loss_fun, {} if lower == "mean_row" else {"lower": lower})
    layers = {"main": layer, "cheap": cheap_layer(loss_fun)}
    parts = layers["main"].parts() | layers["cheap"].parts()
    buckets = build_buckets(prepare_spaces(S.host(), parts, loss_fun), parts, loss_fun)
    work = Work(S.spaces, layers, buckets)
    ii, jj = np.triu_indices(len(S), 1)
    lo, up, cert = compute_pairs(work, layer_name, ii, jj)
    return ii, jj, lo, up, cert, buckets


def reference(spaces, i, j, loss_fun, lower):
    (C1, p), (C2, q) = _pair(spaces[i]), _pair(spaces[j])
    return gwlite.gromov_wasserstein(C1, C2, p, q, method="sorted", loss_fun=loss_fun, lower=lower)


def _pair(item):
    return item if isinstance(item, tuple) else (item, None)


def _scale(spaces, i, j, r):
    top = max(np.abs(_pair(spaces[i])[0]).max(), np.abs(_pair(spaces[j])[0]).max(), 1.0)
    return top**r


def assert_matches(spaces, loss_fun, lower, out):
    ii, jj, lo, up, cert, _ = out
    r = 2 if loss_fun == "square_loss" else 1
    for k, (i, j) in enumerate(zip(ii, jj)):
        ref = reference(spaces, i, j, loss_fun, lower)
        tol = 1e-10 * _scale(spaces, i, j, r)
        assert abs(lo[k] - ref.lower) <= tol, (i, j, lo[k], ref.lower)
        assert abs(up[k] - ref.upper) <= tol, (i, j, up[k], ref.upper)
        if cert[k] != ref.certified:
            # only a gap within round-off of the certification threshold may disagree
            assert abs((ref.upper - ref.lower) - 1e-12 * _scale(spaces, i, j, r)) <= tol


@st.composite
def datasets(draw, max_spaces=4, symmetric_only=False):
    count = draw(st.integers(2, max_spaces))
    spaces = []
    for _ in range(count):
        if draw(st.integers(0, 5)) == 0:  # now and then a one-node space
            C = np.array([[draw(st.sampled_from([0.0, 1.0, 2.5]))]])
        else:
            C = draw(matrices(2, 7, symmetric_only))
        spaces.append((C, draw(weights(len(C)))))
    return [(C, np.full(len(C), 1 / len(C)) if p is None else p) for C, p in spaces]


@settings(max_examples=30, deadline=None)
@given(datasets(), st.sampled_from(LOWERS), st.sampled_from(["square_loss", "abs_loss"]))
def test_equals_one_call_per_pair(spaces, lower, loss_fun):
    assert_matches(spaces, loss_fun, lower, batched(spaces, loss_fun, lower))


@pytest.mark.parametrize("loss_fun", ["square_loss", "abs_loss"])
@pytest.mark.parametrize("kind", ["adjacency", "shortest_path"])
def test_graphs_with_ties_and_level_sets(loss_fun, kind):
    # atlas graphs: many automorphisms (tie groups), integer entries (the level-set path)
    graphs = [nx.graph_atlas(i) for i in range(20, 1253, 61) if nx.is_connected(nx.graph_atlas(i))]
    spaces = [gwlite.from_networkx(G, kind=kind) for G in graphs]
    out = batched(spaces, loss_fun, "slb")
    assert out[-1].stable.all()  # all of them went through the batched kernels
    assert_matches(spaces, loss_fun, "slb", out)


def test_zero_weights_and_dead_groups():
    rng = np.random.default_rng(3)
    spaces = []
    for n in (3, 5, 6, 4):
        A = rng.integers(0, 3, size=(n, n)).astype(float)
        p = rng.random(n)
        p[[0, n - 1]] = 0.0  # zero-weight nodes: groups without mass
        spaces.append((A + A.T, p / p.sum()))
    for loss_fun in ("square_loss", "abs_loss"):
        out = batched(spaces, loss_fun, "mean_row")
        assert out[-1].stable.all()
        assert_matches(spaces, loss_fun, "mean_row", out)


def test_cheap_layer_is_the_best_of_its_bounds():
    spaces = [gwlite.from_networkx(nx.graph_atlas(i)) for i in (30, 77, 140, 300, 700, 1200)]
    ii, jj, lo, up, cert, _ = batched(spaces, layer_name="cheap")
    for k, (i, j) in enumerate(zip(ii, jj)):
        best = max(
            min(reference(spaces, i, j, "square_loss", low).lower, up[k])
            for low in ("mean_row", "flb", "slb")
        )
        assert lo[k] == pytest.approx(best, abs=1e-12)
        assert up[k] == pytest.approx(
            reference(spaces, i, j, "square_loss", "flb").upper, abs=1e-12
        )


@settings(max_examples=15, deadline=None)
@given(datasets(max_spaces=4), st.integers(1, 9), st.sampled_from(["square_loss", "abs_loss"]))
def test_padding_changes_no_bound(spaces, extra, loss_fun):
    """Kernels without any padding (width = n) vs padded by ``extra`` zero-weight atoms."""
    out = {}
    original = prepare.width_of
    for name, width in (("exact", lambda n: n), ("padded", lambda n: n + extra)):
        prepare.width_of = width
        try:
            out[name] = (
                batched(spaces, loss_fun, "tlb", layer_name="main")[2:4]
                + batched(spaces, loss_fun, "mean_row", layer_name="cheap")[2:4]
            )
        finally:
            prepare.width_of = original
    for a, b in zip(out["exact"], out["padded"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_a_pair_does_not_depend_on_its_batch(monkeypatch):
    graphs = [nx.graph_atlas(i) for i in range(3, 1253, 83)]
    spaces = [gwlite.from_networkx(G) for G in graphs]
    full = batched(spaces, "square_loss", "slb")
    monkeypatch.setattr(kernels, "ELEMENT_BUDGET", 1)  # one pair per batch
    alone = batched(spaces, "square_loss", "slb")
    for a, b in zip(full[2:5], alone[2:5]):
        assert np.array_equal(a, b)
    # nor on the tiles (tasks) it falls in
    by_2 = gwlite.pairwise(graphs, chunk=2, engine=1, progress=False, lower="slb")
    by_9 = gwlite.pairwise(graphs, chunk=9, engine=1, progress=False, lower="slb")
    assert np.array_equal(by_2.upper, by_9.upper) and np.array_equal(by_2.lower, by_9.lower)


def test_unstable_tie_groups_fall_back_to_one_call_per_pair():
    # space 0 has two features 1e-12 apart: tied at the scale of space 1 (entries ~100),
    # distinct at its own; its pairs cannot share one set of tie groups
    C0 = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0 + 3e-12], [2.0, 2.0 + 3e-12, 0.0]])
    C1 = 100 * np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
    C2 = np.array([[0.0, 2.0], [2.0, 0.0]])
    spaces = [C0, C1, C2]
    out = batched(spaces)
    assert not out[-1].stable[0] and out[-1].stable[1:].all()
    assert_matches(spaces, "square_loss", "mean_row", out)


def _torch_or_skip():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_torch_inputs_give_the_numpy_numbers(device):
    torch = _torch_or_skip()
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    graphs = [nx.graph_atlas(i) for i in range(5, 1253, 97)]
    spaces = [gwlite.from_networkx(G) for G in graphs]
    tspaces = [
        (torch.as_tensor(C, device=device), torch.as_tensor(p, device=device)) for C, p in spaces
    ]
    ref = gwlite.pairwise(spaces, engine=1, progress=False, lower="tlb")
    got = gwlite.pairwise(tspaces, engine=1, progress=False, lower="tlb")
    np.testing.assert_allclose(got.lower, ref.lower, atol=1e-12)
    np.testing.assert_allclose(got.upper, ref.upper, atol=1e-12)


@pytest.mark.gpu
def test_cupy_inputs_give_the_numpy_numbers():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (GPU machines only)")
    graphs = [nx.graph_atlas(i) for i in range(5, 1253, 97)]
    spaces = [gwlite.from_networkx(G) for G in graphs]
    cspaces = [(cupy.asarray(C), cupy.asarray(p)) for C, p in spaces]
    ref = gwlite.pairwise(spaces, engine=1, progress=False)
    got = gwlite.pairwise(cspaces, progress=False)
    np.testing.assert_allclose(got.upper, ref.upper, atol=1e-12)
