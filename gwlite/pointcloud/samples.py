"""Sample 3-D shapes for tutorials, tests and benchmarks (seeded, NumPy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["rigid_copy", "torus", "trefoil"]


def torus(n: int, seed: int = 0, R: float = 1.0, r: float = 0.35) -> np.ndarray:
    """``n`` points on a torus of radii ``R`` (centre line) and ``r`` (tube), ``(n, 3)``."""
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(0, 2 * np.pi, size=(2, n))
    ring = R + r * np.cos(v)
    return np.stack([ring * np.cos(u), ring * np.sin(u), r * np.sin(v)], axis=1)


def trefoil(n: int, seed: int = 0, tube: float = 0.2) -> np.ndarray:
    """``n`` points in a tube of radius ``tube`` around a trefoil knot (scaled to about the
    torus's size), ``(n, 3)``."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, size=n)
    curve = np.stack(
        [np.sin(t) + 2 * np.sin(2 * t), np.cos(t) - 2 * np.cos(2 * t), -np.sin(3 * t)], axis=1
    )
    offset = rng.normal(size=(n, 3))
    offset *= (
        tube
        * rng.uniform(0, 1, size=(n, 1)) ** (1 / 3)
        / np.linalg.norm(offset, axis=1, keepdims=True)
    )
    return curve / 3 + offset


def rigid_copy(X: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``X`` rotated, translated and shuffled: ``(Y, perm)`` with ``Y[perm.argsort()]``
    the moved ``X``, i.e. point ``i`` of ``X`` is point ``perm.argsort()[i]`` of ``Y``."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(X.shape[1], X.shape[1])))
    perm = rng.permutation(len(X))
    return (X @ Q + rng.normal(size=X.shape[1]))[perm], perm
