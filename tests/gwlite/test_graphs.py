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
