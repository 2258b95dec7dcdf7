"""networkx graphs, graph files and built-in graphs to structure matrices."""

import networkx as nx
import numpy as np
import pytest

import gwlite
from gwlite.graphs import BUILTIN_GRAPHS, KINDS, builtin_graph, load


def test_path_graph_kinds():
    G = nx.path_graph(4)
    A, p = gwlite.from_networkx(G)
    np.testing.assert_array_equal(A, nx.to_numpy_array(G))
    np.testing.assert_allclose(p, 0.25)
    D, _ = gwlite.from_networkx(G, kind="shortest_path")
    np.testing.assert_array_equal(D, np.abs(np.subtract.outer(range(4), range(4))))
    L, _ = gwlite.from_networkx(G, kind="laplacian")
    np.testing.assert_allclose(L.sum(1), 0)
    H, _ = gwlite.from_networkx(G, kind="heat", t=0.5)
    np.testing.assert_allclose(H.sum(1), 1)  # heat kernel of a Laplacian is stochastic


def test_degree_weights_and_edge_weights():
    G = nx.Graph()
    G.add_edge("a", "b", w=2.0)
    G.add_edge("b", "c", w=1.0)
    C, p = gwlite.from_networkx(G, weight="w", node_weights="degree")
    np.testing.assert_allclose(p, [2 / 6, 3 / 6, 1 / 6])
    assert C[0, 1] == 2.0


def test_disconnected_shortest_path_is_refused():
    G = nx.Graph([(0, 1), (2, 3)])
    with pytest.raises(gwlite.GWInputError, match="disconnected"):
        gwlite.from_networkx(G, kind="shortest_path")


def test_bad_graph_inputs():
    with pytest.raises(gwlite.GWInputError, match="no nodes"):
        gwlite.from_networkx(nx.Graph())
    with pytest.raises(gwlite.GWInputError, match="unknown kind"):
        gwlite.from_networkx(nx.path_graph(3), kind="spectral")
    with pytest.raises(gwlite.GWInputError, match="edge of positive weight"):
        gwlite.from_networkx(nx.empty_graph(3), node_weights="degree")


@pytest.mark.parametrize("name", sorted(BUILTIN_GRAPHS))
def test_builtin_graphs_load(name):
    G = builtin_graph(name)
    for kind in KINDS:
        if kind == "shortest_path" and not nx.is_connected(G):
            continue
        C, p = load(f"builtin:{name}", kind=kind)
        assert C.shape == (G.number_of_nodes(),) * 2
        assert np.isfinite(C).all()


def test_files_round_trip(tmp_path):
    G = nx.Graph(nx.karate_club_graph().edges())  # drop the edge weights
    A_ref, _ = gwlite.from_networkx(nx.convert_node_labels_to_integers(G))
    nx.write_graphml(G, tmp_path / "k.graphml")
    edges = tmp_path / "k.txt"
    edges.write_text("# karate\n" + "\n".join(f"{u},{v}" for u, v in G.edges()) + "\n")
    np.save(tmp_path / "k.npy", A_ref)
    for name in ("k.graphml", "k.txt", "k.npy"):
        C, p = load(tmp_path / name)
        # GW between a graph and its file copy is zero, whatever the node order
        res = gwlite.gromov_wasserstein(C, A_ref, p, None, method="sorted", lower="tlb")
        assert res.lower == pytest.approx(0.0, abs=1e-12), name


def test_corrupt_files_are_refused(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3 4\n")
    with pytest.raises(gwlite.GWInputError, match="bad.txt:1"):
        load(bad)
    bad.write_text("1 2 heavy\n")
    with pytest.raises(gwlite.GWInputError, match="not a number"):
        load(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(gwlite.GWInputError, match="no edges"):
        load(empty)
    broken = tmp_path / "x.graphml"
    broken.write_text("<graphml><graph>")
    with pytest.raises(gwlite.GWInputError, match="could not read"):
        load(broken)
    npy = tmp_path / "x.npy"
    npy.write_bytes(b"not numpy")
    with pytest.raises(gwlite.GWInputError, match="could not read"):
        load(npy)
    np.save(tmp_path / "r.npy", np.ones((2, 3)))
    with pytest.raises(gwlite.GWInputError, match="square"):
        load(tmp_path / "r.npy")
    with pytest.raises(gwlite.GWInputError, match="no such file"):
        load(tmp_path / "missing.txt")
    with pytest.raises(gwlite.GWInputError, match="unknown built-in"):
        load("builtin:nope")


# ---------------------------------------------------------------- bad graphs
def test_negative_weights_are_refused_for_shortest_paths():
    G = nx.path_graph(4)
    nx.set_edge_attributes(G, 1.0, "weight")
    G[0][1]["weight"] = -1.0
    with pytest.raises(gwlite.GWInputError, match="non-negative edge weights"):
        gwlite.from_networkx(G, "shortest_path", weight="weight")
    A, _ = gwlite.from_networkx(G, "adjacency", weight="weight")  # signed adjacency is fine
    assert A[0, 1] == -1.0
    D, _ = gwlite.from_networkx(G, "shortest_path")  # unweighted distances ignore it
    assert np.all(np.diag(D) == 0) and D.min() == 0


@pytest.mark.parametrize("value", ["heavy", None, float("nan"), float("inf")])
def test_edge_weights_must_be_finite_numbers(value):
    G = nx.path_graph(3)
    G[0][1]["weight"] = value
    with pytest.raises(gwlite.GWInputError, match="edge \\(0, 1\\)"):
        gwlite.from_networkx(G, weight="weight")
    gwlite.from_networkx(G)  # weight=None ignores the attribute


@pytest.mark.parametrize("t", [float("inf"), -1.0, float("nan"), "1", True])
def test_heat_time_must_be_finite_and_non_negative(t):
    with pytest.raises(gwlite.GWInputError, match="t \\(diffusion time\\)"):
        gwlite.from_networkx(nx.path_graph(3), "heat", t=t)


def test_heat_kernel_at_time_zero_is_the_identity():
    H, _ = gwlite.from_networkx(nx.path_graph(3), "heat", t=0)
    np.testing.assert_allclose(H, np.eye(3))


def test_heat_kernel_overflow_is_refused():
    G = nx.path_graph(3)
    nx.set_edge_attributes(G, -50.0, "weight")
    with pytest.raises(gwlite.GWInputError, match="overflows"):
        gwlite.from_networkx(G, "heat", weight="weight", t=30.0)


def test_directed_graph_not_strongly_connected_is_named_as_such():
    G = nx.DiGraph([(0, 1), (1, 2)])
    with pytest.raises(gwlite.GWInputError, match="directed graph is not strongly connected"):
        gwlite.from_networkx(G, "shortest_path")
    D, _ = gwlite.from_networkx(nx.DiGraph([(0, 1), (1, 2), (2, 0)]), "shortest_path")
    assert D[0, 2] == 2 and D[2, 0] == 1


def test_not_a_graph_is_refused():
    with pytest.raises(gwlite.GWInputError, match="networkx graph"):
        gwlite.from_networkx(np.eye(3))


def test_builtin_and_file_graphs_use_the_same_weights(tmp_path):
    # karate ships with edge weights: a built-in and its own GraphML copy are one graph
    nx.write_graphml(nx.karate_club_graph(), tmp_path / "k.graphml")
    for weight in ("weight", None):
        C1, p = load("builtin:karate", weight=weight)
        C2, q = load(tmp_path / "k.graphml", weight=weight)
        res = gwlite.gromov_wasserstein(C1, C2, p, q, lower="tlb")
        assert res.lower == pytest.approx(0.0, abs=1e-12)
    weighted, _ = load("builtin:karate", weight="weight")
    unweighted, _ = load("builtin:karate")  # the default, as in from_networkx: ignored
    assert weighted.max() > 1 and unweighted.max() == 1
    with pytest.raises(gwlite.GWInputError, match="no edge has the attribute 'strength'"):
        load("builtin:karate", weight="strength")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((0, 0)), "empty"),
        (np.array([["a", "b"], ["c", "d"]]), "not numeric"),
        (np.eye(2) + 1j, "complex"),
    ],
)
def test_bad_matrix_files_are_refused(tmp_path, array, message):
    np.save(tmp_path / "m.npy", array)
    with pytest.raises(gwlite.GWInputError, match=message):
        load(tmp_path / "m.npy")


def test_a_directory_is_not_a_graph(tmp_path):
    with pytest.raises(gwlite.GWInputError, match="directory"):
        load(tmp_path)
