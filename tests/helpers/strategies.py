"""Hypothesis strategies for GW instances (imported by the gwlite tests)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from gwlite.families import FAMILIES, generate


def _random_symmetric(rng, n, kind):
    if kind == "uniform":
        A = rng.random((n, n))
        return (A + A.T) / 2
    if kind == "integer":
        A = rng.integers(0, 4, size=(n, n)).astype(float)
        return A + A.T
    if kind == "asymmetric":
        return rng.normal(size=(n, n))
    A = rng.normal(size=(n, n))
    return A + A.T


@st.composite
def matrices(draw, min_n=2, max_n=7, symmetric_only=False):
    """A structure matrix: a family instance or a random (possibly asymmetric) matrix."""
    n = draw(st.integers(min_n, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    kinds = ["uniform", "integer", "normal"] + ([] if symmetric_only else ["asymmetric"])
    source = draw(st.sampled_from(sorted(FAMILIES) + kinds))
    if source in FAMILIES:
        return generate(source, n, seed)[0]
    return _random_symmetric(np.random.default_rng(seed), n, source)


@st.composite
def weights(draw, n, uniform_ok=True):
    """Uniform (None) or random weights, possibly with zeros."""
    if uniform_ok and draw(st.booleans()):
        return None
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    w = rng.random(n) + 0.05
    if n > 2 and draw(st.booleans()):
        w[rng.integers(n)] = 0.0
    return w / w.sum()


@st.composite
def problems(draw, min_n=2, max_n=7, same_size=False, symmetric_only=False):
    """(C1, C2, p, q) with possibly different sizes and weights."""
    C1 = draw(matrices(min_n, max_n, symmetric_only))
    if same_size:
        n = len(C1)
        C2 = draw(matrices(n, n, symmetric_only))
    else:
        C2 = draw(matrices(min_n, max_n, symmetric_only))
    p = draw(weights(len(C1)))
    q = draw(weights(len(C2)))
    return C1, C2, p, q


def uniform(n):
    return np.full(n, 1.0 / n)
