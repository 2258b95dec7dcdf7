"""Brute-force references the tests compare against (dense, slow, obviously right)."""

from __future__ import annotations

import itertools

import numpy as np


def loss(a, b, loss_fun):
    d = np.asarray(a) - np.asarray(b)
    return d * d if loss_fun == "square_loss" else np.abs(d)


def gw_cost_dense(C1, C2, T, loss_fun="square_loss"):
    """sum_ijkl L(C1_ik, C2_jl) T_ij T_kl with the full n^2 m^2 tensor."""
    L = loss(C1[:, None, :, None], C2[None, :, None, :], loss_fun)  # [i, j, k, l]
    return float(np.einsum("ijkl,ij,kl->", L, T, T))


def permutation_cost(C1, C2, perm, loss_fun="square_loss"):
    perm = np.asarray(perm)
    return float(np.mean(loss(C1, C2[np.ix_(perm, perm)], loss_fun)))


def best_permutation(C1, C2, loss_fun="square_loss"):
    """Minimum over all permutations (uniform weights, n == m): the Gromov-Monge value."""
    n = len(C1)
    best, arg = np.inf, None
    for perm in itertools.permutations(range(n)):
        c = permutation_cost(C1, C2, perm, loss_fun)
        if c < best:
            best, arg = c, perm
    return best, np.asarray(arg)


def permutation_matrix(perm):
    n = len(perm)
    T = np.zeros((n, n))
    T[np.arange(n), perm] = 1.0 / n
    return T


def w1d_lp(u, v, a, b, p):
    """1-D Wasserstein^p by the exact LP (POT's network simplex), a reference for sorting."""
    import ot

    M = np.abs(np.asarray(u)[:, None] - np.asarray(v)[None, :]) ** p
    return float(ot.emd2(np.asarray(a, float), np.asarray(b, float), M))


def random_coupling(rng, p, q, iters=200):
    """A random feasible coupling: Sinkhorn-scaled random positive matrix, then rounded."""
    from gwlite.coupling import round_to_polytope

    K = rng.random((len(p), len(q))) + 1e-3
    for _ in range(iters):
        row = K.sum(1)
        K *= np.divide(p, row, out=np.zeros_like(p), where=row > 0)[:, None]
        col = K.sum(0)
        K *= np.divide(q, col, out=np.zeros_like(q), where=col > 0)[None, :]
    assert np.all(np.isfinite(K))
    return round_to_polytope(K, p, q)


def centred_definiteness(C):
    """'psd', 'nsd' or 'mixed' for P C P with P = I - 11^T/n."""
    n = len(C)
    P = np.eye(n) - np.ones((n, n)) / n
    ev = np.linalg.eigvalsh(P @ C @ P)
    tol = 1e-9 * max(1.0, np.abs(ev).max())
    if ev.min() >= -tol:
        return "psd"
    if ev.max() <= tol:
        return "nsd"
    return "mixed"
