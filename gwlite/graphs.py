"""Graphs in, structure matrices out: networkx graphs, graph files and built-in graphs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gwlite.errors import GWInputError

if TYPE_CHECKING:  # networkx is imported on use: ``import gwlite`` stays light
    import networkx as nx


@dataclass(frozen=True)
class AttributedGraph:
    """A graph with node features, as :func:`from_networkx` returns it with ``node_attr``.

    Attributes
    ----------
    C : ndarray ``(n, n)``
        Structure matrix.
    p : ndarray ``(n,)``
        Node weights.
    Y : ndarray ``(n, d)``
        Node features (one row per node, in ``list(G.nodes)`` order).
    """

    C: np.ndarray
    p: np.ndarray
    Y: np.ndarray


def node_features(G: nx.Graph, node_attr: str) -> np.ndarray:
    """The node attribute ``node_attr`` as an ``(n, d)`` float array (rows follow
    ``list(G.nodes)``); a number gives one column, a sequence of numbers ``d`` columns.

    Examples
    --------
    >>> import networkx as nx, gwlite
    >>> G = nx.path_graph(2)
    >>> nx.set_node_attributes(G, {0: [1.0, 0.0], 1: [0.0, 2.0]}, "x")
    >>> gwlite.graphs.node_features(G, "x").tolist()
    [[1.0, 0.0], [0.0, 2.0]]
    """
    rows = []
    for node, data in G.nodes(data=True):
        if node_attr not in data:
            raise GWInputError(f"node {node!r} has no attribute {node_attr!r}")
        try:
            row = np.atleast_1d(np.asarray(data[node_attr], dtype=np.float64))
        except (TypeError, ValueError):
            raise GWInputError(
                f"node {node!r} has {node_attr}={data[node_attr]!r}, not a number or a "
                "sequence of numbers"
            ) from None
        if row.ndim != 1 or not np.all(np.isfinite(row)):
            raise GWInputError(f"node {node!r} has a non-finite or nested {node_attr!r}")
        rows.append(row)
    if len({len(r) for r in rows}) > 1:
        raise GWInputError(f"the nodes' {node_attr!r} attributes have different lengths")
    return np.stack(rows)


__all__ = [
    "AttributedGraph",
    "BUILTIN_GRAPHS",
    "KINDS",
    "NODE_WEIGHTS",
    "builtin_graph",
    "from_networkx",
    "load",
    "node_features",
]

KINDS = ("adjacency", "shortest_path", "laplacian", "heat")
NODE_WEIGHTS = ("uniform", "degree")

#: Small real graphs that ship with networkx (nothing is downloaded): name -> the
#: networkx function that builds it.
BUILTIN_GRAPHS = {
    "karate": "karate_club_graph",
    "florentine": "florentine_families_graph",
    "davis": "davis_southern_women_graph",
    "les_miserables": "les_miserables_graph",
    "petersen": "petersen_graph",
    "dodecahedral": "dodecahedral_graph",
}


def _edge_weights(G: nx.Graph, weight: str) -> np.ndarray:
    """The edges' ``weight`` attribute as floats (1 where absent), or a clear refusal."""
    values = []
    for u, v, data in G.edges(data=True):
        raw = data.get(weight, 1.0)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise GWInputError(
                f"edge ({u!r}, {v!r}) has {weight}={raw!r}, which is not a number; fix the "
                "attribute or ignore edge weights (weight=None, --unweighted)"
            ) from None
        if not np.isfinite(value):
            raise GWInputError(f"edge ({u!r}, {v!r}) has a non-finite {weight} ({raw!r})")
        values.append(value)
    return np.asarray(values, dtype=np.float64)


def _check_time(t) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)):
        raise GWInputError(f"t (diffusion time) must be a number, got {t!r}")
    if not (np.isfinite(t) and t >= 0):
        raise GWInputError(
            f"t (diffusion time) must be finite and >= 0, got {t}; a negative time runs the "
            "heat equation backwards (expm(+|t| L) blows up)"
        )
    return float(t)


def _structure(G: nx.Graph, nodes: list, kind: str, weight: str | None, t: float) -> np.ndarray:
    import networkx as nx

    if weight is not None:
        weights = _edge_weights(G, weight)
        if kind == "shortest_path" and np.any(weights < 0):
            raise GWInputError(
                f"shortest-path distances need non-negative edge weights, and some edges have "
                f"negative {weight!r} (a negative cycle has no shortest path); use "
                "kind='adjacency', or unweighted distances (weight=None)"
            )
    A = nx.to_numpy_array(G, nodelist=nodes, weight=weight, dtype=np.float64)
    if kind == "adjacency":
        return A
    if kind == "shortest_path":
        D = nx.floyd_warshall_numpy(G, nodelist=nodes, weight=weight)
        if not np.all(np.isfinite(D)):
            what = (
                "the directed graph is not strongly connected"
                if G.is_directed()
                else "the graph is disconnected"
            )
            raise GWInputError(
                f"{what}, so some shortest-path distances are infinite; use "
                "kind='adjacency' or 'heat', or compare connected components"
            )
        return np.asarray(D, dtype=np.float64)
    L = np.diag(A.sum(axis=1)) - A
    if kind == "laplacian":
        return L
    from scipy.linalg import expm

    with np.errstate(all="ignore"):
        H = expm(-t * L)
    if not np.all(np.isfinite(H)):
        raise GWInputError(
            f"the heat kernel expm(-t L) at t={t} overflows (negative edge weights make the "
            "Laplacian indefinite); use a smaller t or kind='laplacian'"
        )
    return H


def from_networkx(
    G: nx.Graph,
    kind: str = "adjacency",
    weight: str | None = None,
    node_weights: str = "uniform",
    *,
    t: float = 1.0,
    node_attr: str | None = None,
) -> tuple[np.ndarray, np.ndarray] | AttributedGraph:
    """Structure matrix and node weights of a networkx graph (and its node features).

    Parameters
    ----------
    G : networkx.Graph
        Any graph (directed graphs give asymmetric adjacency matrices). Rows follow
        ``list(G.nodes)``.
    kind : {"adjacency", "shortest_path", "laplacian", "heat"}
        ``"shortest_path"`` needs a connected (directed: strongly connected) graph and
        non-negative edge weights; ``"heat"`` is ``expm(-t L)``.
    weight : str, optional
        Edge attribute holding weights (``None``, the default: every edge weighs 1;
        edges without the attribute weigh 1, as in networkx). Values must be finite
        numbers. The command line has the same default (``--weight ATTR`` to use one).
    node_weights : {"uniform", "degree"}
        ``"degree"``: proportional to the (weighted) degree.
    t : float
        Diffusion time of the heat kernel, finite and ``>= 0``.
    node_attr : str, optional
        A node attribute holding features (a number or a sequence of numbers per node,
        see :func:`node_features`): the graph is then returned as an
        :class:`AttributedGraph` ``(C, p, Y)`` for fused GW. Without it the return value
        is unchanged.

    Returns
    -------
    C : ndarray ``(n, n)``
    p : ndarray ``(n,)``
        or, with ``node_attr``, an :class:`AttributedGraph` holding them and ``Y``.

    Examples
    --------
    >>> import networkx as nx, gwlite
    >>> C, p = gwlite.from_networkx(nx.path_graph(3), kind="shortest_path")
    >>> C.tolist(), p.tolist()
    ([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]], [0.3333333333333333, 0.3333333333333333, 0.3333333333333333])
    """
    import networkx as nx

    if not isinstance(G, nx.Graph):
        raise GWInputError(f"G must be a networkx graph, got {type(G).__name__}")
    if not isinstance(kind, str) or kind not in KINDS:
        raise GWInputError(f"unknown kind {kind!r}; choose one of {list(KINDS)}")
    if weight is not None and not isinstance(weight, str):
        raise GWInputError(f"weight must be the name of an edge attribute or None, got {weight!r}")
    t = _check_time(t)
    if not isinstance(node_weights, str) or node_weights not in NODE_WEIGHTS:
        raise GWInputError(
            f"unknown node_weights {node_weights!r}; choose one of {list(NODE_WEIGHTS)}"
        )
    nodes = list(G.nodes)
    if not nodes:
        raise GWInputError("the graph has no nodes")
    if node_attr is not None and not isinstance(node_attr, str):
        raise GWInputError(f"node_attr must be the name of a node attribute, got {node_attr!r}")
    Y = None if node_attr is None else node_features(G, node_attr)
    C, p = _structure(G, nodes, kind, weight, t), _node_weights(G, nodes, node_weights, weight)
    return (C, p) if Y is None else AttributedGraph(C, p, Y)


def _node_weights(G: nx.Graph, nodes: list, node_weights: str, weight) -> np.ndarray:
    if node_weights == "uniform":
        return np.full(len(nodes), 1.0 / len(nodes))
    degree = np.array([d for _, d in G.degree(nodes, weight=weight)], dtype=np.float64)
    if degree.sum() <= 0:
        raise GWInputError("node_weights='degree' needs at least one edge of positive weight")
    if np.any(degree < 0):
        raise GWInputError("node_weights='degree' needs non-negative edge weights")
    return degree / degree.sum()


def builtin_graph(name: str) -> nx.Graph:
    """One of :data:`BUILTIN_GRAPHS` by name."""
    import networkx as nx

    if name not in BUILTIN_GRAPHS:
        raise GWInputError(
            f"unknown built-in graph {name!r}; choose one of {sorted(BUILTIN_GRAPHS)}"
        )
    return nx.convert_node_labels_to_integers(getattr(nx, BUILTIN_GRAPHS[name])())


def _read_graph_file(path: Path) -> nx.Graph:
    import networkx as nx

    suffix = path.suffix.lower()
    try:
        if suffix == ".graphml":
            return nx.read_graphml(path)
        if suffix == ".gml":
            return nx.read_gml(path)
        return _read_edge_list(path)
    except GWInputError:
        raise
    except Exception as err:  # networkx raises many kinds on malformed files
        raise GWInputError(f"could not read graph file {path}: {err}") from err


def _read_edge_list(path: Path) -> nx.Graph:
    import networkx as nx

    G = nx.Graph()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.split("#", 1)[0].replace(",", " ").strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) not in (2, 3):
                raise GWInputError(f"{path}:{lineno}: expected 'u v [weight]', got {line!r}")
            weight = 1.0
            if len(parts) == 3:
                try:
                    weight = float(parts[2])
                except ValueError as err:
                    raise GWInputError(
                        f"{path}:{lineno}: weight {parts[2]!r} is not a number"
                    ) from err
            G.add_edge(parts[0], parts[1], weight=weight)
    if G.number_of_nodes() == 0:
        raise GWInputError(f"{path}: no edges found")
    return G


def _load_matrix(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from gwlite.problem import as_input_array

    try:
        C = np.load(path, allow_pickle=False)
    except Exception as err:
        raise GWInputError(f"could not read matrix file {path}: {err}") from err
    C = as_input_array(C, str(path))
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise GWInputError(f"{path}: expected a square matrix, got shape {C.shape}")
    if C.shape[0] == 0:
        raise GWInputError(f"{path}: the matrix is empty (shape {C.shape}): a graph needs a node")
    return C.astype(np.float64), np.full(C.shape[0], 1.0 / C.shape[0])


def load(
    source: str | os.PathLike,
    kind: str = "adjacency",
    node_weights: str = "uniform",
    weight: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Structure matrix and weights from a file or a built-in graph name.

    Parameters
    ----------
    source : str or path
        ``builtin:NAME`` (see :data:`BUILTIN_GRAPHS`), a ``.npy`` square matrix (used
        as given, uniform weights), a ``.graphml``/``.gml`` file, or an edge list
        (``u v [weight]`` per line, ``#`` comments, commas allowed).
    kind, node_weights : str
        Passed to :func:`from_networkx` for graphs.
    weight : str or None
        Edge attribute holding the weights. ``None`` (default, as in
        :func:`from_networkx` and the command line): every edge weighs 1. ``"weight"``
        uses that attribute where edges have it (graphs without it are unweighted);
        another name must be present on some edge. The same rule for built-in graphs
        and files.
    """
    text = str(source)
    if text.startswith("builtin:"):
        G = builtin_graph(text.split(":", 1)[1])
    else:
        path = Path(source)
        if not path.exists():
            raise GWInputError(f"no such file: {path}")
        if path.is_dir():
            raise GWInputError(f"{path} is a directory, not a graph or matrix file")
        if path.suffix.lower() == ".npy":
            return _load_matrix(path)
        G = _read_graph_file(path)
    if G.number_of_nodes() == 0:
        raise GWInputError(f"{text}: the graph has no nodes")
    if weight is not None and weight != "weight":
        if not any(weight in d for _, _, d in G.edges(data=True)):
            raise GWInputError(f"{text}: no edge has the attribute {weight!r}")
    return from_networkx(G, kind, weight, node_weights)
