"""gwlite.pairwise: the matrices, the inputs, knn, the store, the engines, the CLI."""

from __future__ import annotations

import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gwlite
from gwlite import GWInputError
from gwlite.datasets import atlas, families
from gwlite.pairs import engines
from gwlite.pairs import knn as knn_mod
from gwlite.pairs.result import PairwiseResult

QUIET = {"engine": 1, "progress": False}
# POT's CG cycles for thousands of iterations on a few small pairs: a cap keeps tests fast
CG = {"max_iter": 200}


def small_graphs():
    # connected atlas graphs with 4 to 7 nodes (shortest paths are defined)
    return [nx.graph_atlas(i) for i in (13, 29, 34, 52, 102, 160, 270, 415, 780, 1001, 1250)]


def matrices_of(graphs, kind="adjacency"):
    return [gwlite.from_networkx(G, kind=kind) for G in graphs]


# -- the matrices --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, options",
    [("sorted", {}), ("sorted", {"lower": "tlb"}), ("cg", {}), ("exact", {})],
)
def test_equals_one_gromov_wasserstein_call_per_pair(method, options):
    graphs = small_graphs()[:6] if method != "exact" else small_graphs()[-5:]  # exact: n == 7
    res = gwlite.pairwise(graphs, method=method, **QUIET, **options)
    spaces = matrices_of(graphs)
    for i in range(len(spaces)):
        for j in range(i + 1, len(spaces)):
            (C1, p), (C2, q) = spaces[i], spaces[j]
            ref = gwlite.gromov_wasserstein(C1, C2, p, q, method=method, **options)
            assert res.lower[i, j] == pytest.approx(ref.lower, abs=1e-12)
            assert res.upper[i, j] == pytest.approx(ref.upper, abs=1e-12)
            assert res.certified[i, j] == ref.certified
    assert (
        res.method == method
        and res.n_evaluated == res.n_pairs == len(graphs) * (len(graphs) - 1) // 2
    )


@pytest.mark.parametrize("method", ["sorted", "exact"])
@pytest.mark.parametrize("factor", [1e-6, 1e6])
def test_certified_does_not_depend_on_the_unit(method, factor):
    # certification is relative to each pair's loss scale, as in gromov_wasserstein
    spaces = [C for C, _ in matrices_of(small_graphs()[-5:], kind="shortest_path")]
    ref = gwlite.pairwise(spaces, method=method, **QUIET)
    scaled = gwlite.pairwise([factor * C for C in spaces], method=method, **QUIET)
    assert np.array_equal(ref.certified, scaled.certified)
    np.testing.assert_allclose(scaled.upper, factor**2 * ref.upper, rtol=1e-9, atol=0)


def test_symmetric_with_a_zero_diagonal():
    res = gwlite.pairwise(small_graphs(), **QUIET)
    for M in (res.lower, res.upper):
        assert np.array_equal(M, M.T) and np.all(np.diag(M) == 0)
    assert np.array_equal(res.certified, res.certified.T) and res.certified.diagonal().all()
    assert np.all(res.lower <= res.upper)
    assert not res.upper.flags.writeable  # a frozen result


def test_inputs_matrices_pairs_graphs_and_datasets_agree():
    graphs = small_graphs()[:5]
    pairs = matrices_of(graphs, "shortest_path")
    by_graph = gwlite.pairwise(graphs, kind="shortest_path", **QUIET)
    by_pair = gwlite.pairwise(pairs, **QUIET)
    by_matrix = gwlite.pairwise([C for C, _ in pairs], **QUIET)
    for other in (by_pair, by_matrix):
        assert np.array_equal(by_graph.upper, other.upper)
    data = atlas()
    sub = [data[k] for k in (3, 40, 700)]
    assert gwlite.pairwise(sub, **QUIET).upper.shape == (3, 3)


def test_a_single_space_is_a_zero_matrix():
    res = gwlite.pairwise([np.eye(3)], **QUIET)
    assert res.upper.tolist() == [[0.0]] and res.n_pairs == 0


# -- bad inputs: refused up front, naming the space ----------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    def fail(*args, **kwargs):  # pragma: no cover - the point is that it never runs
        raise AssertionError("a task ran before the inputs were checked")

    monkeypatch.setattr(engines, "run_task", fail)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[0.0, np.nan], [np.nan, 0.0]]), "spaces[3]: C has 2 non-finite"),
        (np.zeros((2, 3)), "spaces[3]: C must be square"),
        (np.zeros((0, 0)), "spaces[3]: C is empty"),
        ((np.eye(2), np.array([0.7, 0.7])), "spaces[3]: p must sum to 1"),
        ((np.eye(2), np.array([1.5, -0.5])), "spaces[3]: p has negative"),
        ((np.eye(2), np.array([1.0])), "spaces[3]: p has shape"),
        ("not a matrix", "spaces[3]"),
    ],
)
def test_bad_space_refused_with_its_index_before_any_work(no_work, bad, message):
    spaces = [np.eye(2), np.ones((3, 3)), np.eye(4), bad, np.eye(2)]
    with pytest.raises(GWInputError) as err:
        gwlite.pairwise(spaces, **QUIET)
    assert message in str(err.value)


def test_disconnected_graph_refused_for_shortest_paths(no_work):
    graphs = [nx.path_graph(3), nx.cycle_graph(4), nx.empty_graph(2)]
    with pytest.raises(GWInputError, match=r"spaces\[2\]: the graph is disconnected"):
        gwlite.pairwise(graphs, kind="shortest_path", **QUIET)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "nope"}, "unknown method"),
        ({"epsilon": 0.1}, "unknown option"),
        ({"lower": "nope"}, "unknown lower bound"),
        ({"G0": np.eye(2)}, "G0"),
        ({"return_coupling": True}, "returns no couplings"),
        ({"loss_fun": "l3"}, "unknown loss_fun"),
        ({"knn": 3}, "knn must be an integer in"),
        ({"knn": 0}, "knn must be an integer in"),
        ({"engine": 0}, "engine must be"),
        ({"engine": "cluster"}, "engine must be"),
        ({"chunk": 0}, "chunk must be"),
        ({"method": "exact"}, "needs spaces of one size"),
    ],
)
def test_bad_options_refused_before_any_work(no_work, kwargs, message):
    spaces = [np.eye(2), np.ones((3, 3)), np.eye(4)]
    kwargs = {"progress": False, **kwargs}
    with pytest.raises(GWInputError, match=message):
        gwlite.pairwise(spaces, **kwargs)


def test_mixed_array_libraries_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(GWInputError, match=r"spaces\[1\] is a torch array"):
        gwlite.pairwise([np.eye(2), torch.eye(3, dtype=torch.float64)], **QUIET)


# -- knn(k): what the intervals prove -----------------------------------------------------
@st.composite
def interval_matrices(draw):
    n = draw(st.integers(2, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    # integer-valued bounds: ties between spaces are common, as on real data
    a = rng.integers(0, 6, size=(n, n)).astype(float)
    b = a + rng.integers(0, 4, size=(n, n))
    lower, upper = np.triu(a, 1) + np.triu(a, 1).T, np.triu(b, 1) + np.triu(b, 1).T
    return lower, upper, draw(st.integers(1, n - 1))


@settings(max_examples=80, deadline=None)
@given(interval_matrices())
def test_knn_lists_and_proofs_against_brute_force(case):
    lower, upper, k = case
    n = len(lower)
    res = PairwiseResult(
        lower, upper, lower == upper, ~np.eye(n, dtype=bool), "sorted", "square_loss", 0.0
    )
    nb = res.knn(k)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        ranked = sorted(others, key=lambda j: (upper[i, j], lower[i, j], j))
        assert nb.indices[i].tolist() == ranked[:k]
        left_out = ranked[k:]
        for r, j in enumerate(ranked[:k]):
            # proven: no left-out space can be strictly closer, whatever the true values
            claim = all(upper[i, j] <= lower[i, o] for o in left_out)
            assert nb.proven[i, r] == claim


def test_knn_k_out_of_range():
    res = gwlite.pairwise([np.eye(2), np.eye(3), np.eye(4)], **QUIET)
    for k in (0, 3, 1.5, True):
        with pytest.raises(GWInputError, match="k must be an integer"):
            res.knn(k)


# -- knn mode: the method only where a list can change ------------------------------------
@pytest.fixture(scope="module")
def two_families():
    # dense graphs and trees: far apart, so most cross pairs are proven out cheaply
    data = families(12, (6, 9), names=("erdos_renyi", "tree"), seed=4)
    return list(data)


def test_knn_mode_saves_calls_and_keeps_the_lists(two_families):
    spaces = two_families
    k = 2
    pruned = gwlite.pairwise(spaces, method="cg", knn=k, **CG, **QUIET)
    full = gwlite.pairwise(spaces, method="cg", **CG, **QUIET)
    cheap = gwlite.pairwise(spaces, method="sorted", **QUIET)
    assert 0 < pruned.saved < pruned.n_pairs
    assert pruned.diagnostics["saved"] == pruned.saved
    # every pair the method skipped is proven out of both neighbour lists (or exact)
    U = np.where(np.eye(len(spaces), dtype=bool), np.inf, pruned.upper)
    kth = np.sort(U, axis=1)[:, k - 1]
    skipped = ~pruned.evaluated & ~np.eye(len(spaces), dtype=bool)
    ii, jj = np.nonzero(skipped)
    for i, j in zip(ii, jj):
        assert pruned.certified[i, j] or (
            pruned.lower[i, j] > kth[i] and pruned.lower[i, j] > kth[j]
        )
    # where it ran, the intervals are the full run's, intersected with the cheap bounds
    ran = pruned.evaluated
    assert np.allclose(pruned.upper[ran], np.minimum(full.upper, cheap.upper)[ran])
    # and the lists are those of the full run
    combined = PairwiseResult(
        np.maximum(full.lower, pruned.lower),
        np.minimum(full.upper, cheap.upper),
        full.certified,
        full.evaluated,
        "cg",
        "square_loss",
        0.0,
    )
    assert np.array_equal(pruned.knn(k).indices, combined.knn(k).indices)


def test_knn_rounds_select_the_smallest_upper_bounds():
    upper = np.array([[0, 1, 5, 3], [1, 0, 2, 9], [5, 2, 0, 4], [3, 9, 4, 0.0]])
    need = np.triu(np.ones((4, 4), dtype=bool), 1)
    pick = knn_mod.select_round(need, upper, 1)
    chosen = {tuple(x) for x in zip(*np.nonzero(pick))}
    assert chosen == {(0, 1), (1, 2), (0, 3)}  # each space's closest: 0->1, 1->0, 2->1, 3->0


# -- store ----------------------------------------------------------------------------------
def test_store_resume_is_identical_and_computes_only_what_is_missing(tmp_path, monkeypatch):
    spaces = small_graphs()
    path = tmp_path / "run.zarr"
    fresh = gwlite.pairwise(spaces, method="sorted", lower="tlb", chunk=3, **QUIET)
    calls = {"n": 0}
    real = engines.run_task

    def interrupted(work, task):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(work, task)

    monkeypatch.setattr(engines, "run_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gwlite.pairwise(spaces, method="sorted", lower="tlb", chunk=3, store=path, **QUIET)
    monkeypatch.setattr(engines, "run_task", real)
    resumed = gwlite.pairwise(spaces, method="sorted", lower="tlb", store=path, **QUIET)
    assert resumed.diagnostics["pairs_from_store"] > 0
    assert resumed.diagnostics["pairs_computed"] < resumed.n_pairs
    assert resumed.diagnostics["chunk"] == 3  # the store's layout wins
    for name in ("lower", "upper", "certified"):
        assert np.array_equal(getattr(resumed, name), getattr(fresh, name))
    again = gwlite.pairwise(spaces, method="sorted", lower="tlb", store=path, **QUIET)
    assert again.diagnostics["pairs_computed"] == 0
    assert np.array_equal(again.upper, fresh.upper)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"method": "cg"}, "method: 'sorted' -> 'cg'"),
        ({"lower": "flb"}, "options"),
        ({"loss_fun": "abs_loss"}, "loss_fun"),
        ({"spaces": "edited"}, "the input matrices or weights differ"),
        ({"spaces": "fewer"}, "n_spaces"),
    ],
)
def test_store_made_with_other_inputs_or_options_is_refused(tmp_path, change, message):
    spaces = small_graphs()[:5]
    path = tmp_path / "s.zarr"
    gwlite.pairwise(spaces, store=path, **QUIET)
    spaces = matrices_of(spaces)
    kwargs = dict(change)
    if kwargs.pop("spaces", None) == "edited":
        C, p = spaces[2]
        spaces[2] = (C + 0.5 * np.eye(len(C)), p)
    elif change.get("spaces") == "fewer":
        spaces = spaces[:4]
    with pytest.raises(GWInputError, match="made with other inputs or options") as err:
        gwlite.pairwise(spaces, store=path, **QUIET, **kwargs)
    assert message in str(err.value)


def test_a_foreign_zarr_store_is_refused(tmp_path):
    import zarr

    zarr.open_group(tmp_path / "other.zarr", mode="a").create_array("x", shape=(2,), dtype="f8")
    with pytest.raises(GWInputError, match="not one written by gwlite.pairwise"):
        gwlite.pairwise([np.eye(2), np.eye(3)], store=tmp_path / "other.zarr", **QUIET)


def test_knn_mode_resumes_from_a_full_run(tmp_path, two_families):
    path = tmp_path / "k.zarr"
    gwlite.pairwise(two_families, method="cg", store=path, **CG, **QUIET)
    pruned = gwlite.pairwise(two_families, method="cg", knn=2, store=path, **CG, **QUIET)
    direct = gwlite.pairwise(two_families, method="cg", knn=2, **CG, **QUIET)
    assert pruned.diagnostics["pairs_from_store"] == pruned.n_evaluated  # nothing rerun
    for name in ("lower", "upper", "certified", "evaluated"):
        assert np.array_equal(getattr(pruned, name), getattr(direct, name))


# -- engines ---------------------------------------------------------------------------------
def test_local_processes_give_identical_numbers():
    spaces = small_graphs()
    inline = gwlite.pairwise(spaces, lower="slb", chunk=4, **QUIET)
    procs = gwlite.pairwise(spaces, lower="slb", chunk=4, engine=2, progress=False)
    assert procs.diagnostics["engine"] == "2 local processes"
    for name in ("lower", "upper", "certified"):
        assert np.array_equal(getattr(procs, name), getattr(inline, name))


def test_small_work_runs_in_this_process():
    res = gwlite.pairwise([np.eye(2), np.eye(3)], progress=False)
    assert res.diagnostics["engine"] == "this process"


def test_import_gwlite_imports_neither_dask_nor_zarr():
    code = (
        "import sys, gwlite; gwlite.pairwise; "
        "print(sorted(m for m in ('dask', 'distributed', 'zarr', 'matplotlib', "
        "'concurrent.futures.process') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- datasets ----------------------------------------------------------------------------------
def test_atlas_dataset():
    data = atlas()
    assert len(data) == 1252 and data.names[:2] == ("G1", "G2")
    assert sorted(set(data.sizes.tolist())) == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(GWInputError, match=r"atlas graph G2 \(2 nodes\) is disconnected"):
        atlas(kind="shortest_path")
    connected = atlas(kind="shortest_path", connected=True)
    assert len(connected) == 996 and np.isfinite(connected[-1][0]).all()


def test_families_dataset_is_deterministic():
    a, b = families(9, (10, 14), seed=2), families(9, (10, 14), seed=2)
    assert a.names == b.names and all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert set(a.sizes.tolist()) <= set(range(10, 15))
    with pytest.raises(GWInputError, match="unknown families"):
        families(3, names=("nope",))


# -- command line -------------------------------------------------------------------------------
def test_cli_writes_the_matrices_csv_and_pictures(tmp_path, capsys):
    from gwlite.cli import main

    files = []
    for k, n in enumerate((4, 5, 6)):
        np.save(
            tmp_path / f"m{k}.npy", np.abs(np.subtract.outer(np.arange(n), np.arange(n))) ** 1.5
        )
        files.append(str(tmp_path / f"m{k}.npy"))
    out = tmp_path / "out"
    code = main(
        [
            "pairwise",
            *files,
            "builtin:karate",
            "--out",
            str(out),
            "--knn",
            "1",
            "--workers",
            "1",
            "--quiet",
        ]
    )
    assert code == 0
    lower, upper = np.load(out / "lower.npy"), np.load(out / "upper.npy")
    assert lower.shape == upper.shape == (4, 4) and np.all(lower <= upper)
    rows = (out / "pairs.csv").read_text().splitlines()
    assert rows[0].startswith("i,j,name_i,name_j,lower,upper") and len(rows) == 1 + 6
    assert len((out / "neighbours.csv").read_text().splitlines()) == 1 + 4
    for png in ("heatmap.png", "mds.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "4 spaces, 6 pairs" in capsys.readouterr().out


def test_cli_bad_input_exits_2(tmp_path, capsys):
    from gwlite.cli import main

    code = main(["pairwise", "builtin:atlas", "--kind", "shortest_path", "--out", str(tmp_path)])
    assert code == 2
    assert "disconnected" in capsys.readouterr().err
