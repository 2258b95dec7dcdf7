"""Random instance families with known structure, for tests, benchmarks and ``verify``.

Every generator is deterministic given ``(n, seed)`` and returns a structure matrix
(float64, symmetric) and uniform node weights. The families cover the cases the
theory distinguishes:

* graphs as adjacency matrices: Erdos-Renyi, stochastic block model, Barabasi-Albert,
  random geometric, random trees, random regular graphs (where every node has the same
  mean-row feature, so the sorted closed form is 0 while GW usually is not);
* positive semi-definite matrices: Gram matrices of random points, co-activation
  graphs built from random top-k softmax vectors the way :mod:`fusion` builds them;
* conditionally negative definite matrices: Euclidean distance matrices and tree
  (shortest-path) metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx
import numpy as np

__all__ = ["FAMILIES", "PSD_FAMILIES", "CND_FAMILIES", "generate"]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _adjacency(G: nx.Graph) -> np.ndarray:
    return nx.to_numpy_array(G, nodelist=sorted(G.nodes), dtype=np.float64)


def erdos_renyi(n: int, seed: int) -> np.ndarray:
    """Adjacency matrix of an Erdos-Renyi graph G(n, 0.4)."""
    return _adjacency(nx.gnp_random_graph(n, 0.4, seed=seed))


def sbm(n: int, seed: int) -> np.ndarray:
    """Adjacency matrix of a two-block stochastic block model (0.8 within, 0.1 across)."""
    sizes = [n // 2, n - n // 2]
    return _adjacency(nx.stochastic_block_model(sizes, [[0.8, 0.1], [0.1, 0.8]], seed=seed))


def barabasi_albert(n: int, seed: int) -> np.ndarray:
    """Adjacency matrix of a Barabasi-Albert graph (two edges per new node)."""
    return _adjacency(nx.barabasi_albert_graph(n, min(2, n - 1), seed=seed))


def random_geometric(n: int, seed: int) -> np.ndarray:
    """Adjacency matrix of a random geometric graph in the unit square (radius 0.5)."""
    return _adjacency(nx.random_geometric_graph(n, 0.5, seed=seed))


def tree(n: int, seed: int) -> np.ndarray:
    """Adjacency matrix of a uniformly random labelled tree."""
    return _adjacency(nx.random_labeled_tree(n, seed=seed))


def regular(n: int, seed: int) -> np.ndarray:
    """Adjacency matrix of a random regular graph (degree 3, or 2 when n is odd)."""
    d = 2 if n * 3 % 2 else 3  # n * d must be even
    d = min(d, n - 1)
    if n * d % 2:
        d -= 1
    return _adjacency(nx.random_regular_graph(d, n, seed=seed))


def tree_metric(n: int, seed: int) -> np.ndarray:
    """Shortest-path metric of a random tree with edge lengths in U(0.5, 2): CND."""
    G = nx.random_labeled_tree(n, seed=seed)
    rng = _rng(seed)
    for u, v in G.edges:
        G.edges[u, v]["weight"] = float(rng.uniform(0.5, 2.0))
    return np.asarray(nx.floyd_warshall_numpy(G, nodelist=sorted(G.nodes)), dtype=np.float64)


def gram(n: int, seed: int) -> np.ndarray:
    """Gram matrix of n standard normal points in three dimensions: PSD, rank 3."""
    X = _rng(seed).normal(size=(n, 3))
    return X @ X.T


def euclidean(n: int, seed: int) -> np.ndarray:
    """Euclidean distances between n standard normal points in the plane: CND."""
    X = _rng(seed).normal(size=(n, 2))
    return np.linalg.norm(X[:, None, :] - X[None, :, :], axis=-1)


def coactivation(n: int, seed: int, *, k: int = 3, positions: int = 16) -> np.ndarray:
    r"""Co-activation graph :math:`A = \frac1T \sum_t \tilde x_t \tilde x_t^\top` over n channels.

    :math:`\tilde x_t` keeps the ``k`` largest entries of ``softmax(z_t)`` for random
    logits ``z_t`` (not renormalised), exactly the construction of the fusion GLD loss.
    """
    rng = _rng(seed)
    z = rng.normal(size=(positions, n)) * 2.0
    x = np.exp(z - z.max(axis=1, keepdims=True))
    x /= x.sum(axis=1, keepdims=True)
    keep = np.argsort(-x, axis=1)[:, : min(k, n)]
    xt = np.zeros_like(x)
    np.put_along_axis(xt, keep, np.take_along_axis(x, keep, axis=1), axis=1)
    return xt.T @ xt / positions


FAMILIES: dict[str, Callable[[int, int], np.ndarray]] = {
    "erdos_renyi": erdos_renyi,
    "sbm": sbm,
    "barabasi_albert": barabasi_albert,
    "random_geometric": random_geometric,
    "tree": tree,
    "regular": regular,
    "tree_metric": tree_metric,
    "gram": gram,
    "euclidean": euclidean,
    "coactivation": coactivation,
}

#: families whose matrices are positive semi-definite
PSD_FAMILIES = ("gram", "coactivation")
#: families whose matrices are conditionally negative definite (metrics of negative type)
CND_FAMILIES = ("euclidean", "tree_metric")


def generate(family: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Structure matrix and uniform weights of one instance of ``family``.

    Parameters
    ----------
    family : str
        A key of :data:`FAMILIES`.
    n : int
        Number of nodes (>= 2).
    seed : int
        Random seed; the same ``(family, n, seed)`` always gives the same matrix.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    C = FAMILIES[family](n, seed)
    return C, np.full(n, 1.0 / n)
