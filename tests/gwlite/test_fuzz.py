"""Fuzz harness: every call gives a correct result or a clear GWInputError/GWSolverError.

Inputs span dtypes (int, bool, float16/32/64, long double, complex, object, str),
scales 1e-300 .. 1e300, shapes (0, 1, n != m, non-square, 1-D, 3-D), NaN/Inf
placements, containers (lists, np.matrix, SciPy sparse, masked arrays, None), weights
(zeros, negatives, unnormalised, wrong length, integer), NumPy and torch with and without
grad, every method with valid and invalid options, and the helpers around them. The
contract is in ``tests/helpers/fuzzing.py``.

The generation is derandomised so that CI is reproducible; ``GWLITE_FUZZ_RANDOM=1``
explores fresh seeds and ``GWLITE_FUZZ_SCALE=4`` runs four times as many cases.
"""

from __future__ import annotations

import collections
import math

import networkx as nx
import numpy as np
import pytest
import torch
from fuzzing import (
    ContractViolation,
    Reference,
    Weights,
    call,
    check_result,
    fuzz,
    make_matrix,
    make_weights,
    pick,
    scaled,
    seeds,
    write_report,
)
from hypothesis import given
from hypothesis import strategies as st
from reference import gw_cost_dense, random_coupling, w1d_lp

import gwlite
from gwlite import _xp
from gwlite.solvers import sdp
from gwlite.solvers._common import CERTIFY_RTOL

# np.asmatrix, used to build inputs, warns that np.matrix is discouraged
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

#: outcomes per test, reported at the end of the module
OUTCOMES: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    write_report(request, "gwlite fuzz", OUTCOMES)


def _record(test: str, out) -> None:
    OUTCOMES[f"{test} {'result' if out is not None else 'refused'}"] += 1


def _first_bad(*parts) -> str | None:
    return next((b for b in parts if b), None)


def _low_precision(*arrays) -> bool:
    return all(getattr(a, "dtype", None) in (np.float16, np.float32) for a in arrays)


def _top(ref_arrays) -> float:
    return max(float(np.abs(a).max()) for a in ref_arrays)


def _in_band(top: float) -> bool:
    return top == 0 or 1e-100 <= top <= 1e100


# ---------------------------------------------------------------- options
def make_g0(rng, n: int, m: int, p, q, clean=False):
    bad = [] if clean else ["shape", "nan", "mass", "negative"]
    kind = pick(rng, ["none"] * 4 + ["product", "list"] + bad)
    if kind == "none" or p is None or q is None:
        return None, None
    P = np.outer(p, q)
    if kind == "product":
        return P, None
    if kind == "list":
        return P.tolist(), None
    if kind == "shape":
        return np.ones((n + 1, m)) / ((n + 1) * m), "G0 shape"
    if kind == "nan":
        P[0, 0] = np.nan
        return P, "G0 non-finite"
    if kind == "negative":
        P[0, 0] = -1.0
        return P, "G0 negative"
    return P * 42, "G0 infeasible"


_DEFAULT = object()


def make_options(rng, method: str, n: int, m: int, p, q, scale: float, clean=False):
    """Options for ``method``: a dict and the reason it must be refused (or None).

    ``clean``: valid options only.
    """
    options, bad = {}, []

    def maybe(name, valid, invalid=(), default_weight=None):
        weight = 2 * len(valid) + 1 if default_weight is None else default_weight
        choices = [(None, _DEFAULT)] * weight + [(None, v) for v in valid]
        choices += [] if clean else [(f"{name}={v!r}", v) for v in invalid]
        reason, value = pick(rng, choices)
        if value is not _DEFAULT:
            options[name] = value
            bad.append(reason)

    maybe("lower", list(gwlite.LOWER_BOUNDS), ["best", 3])
    maybe("return_coupling", [True, False], ["yes"])
    if method == "sorted":
        maybe("diagnostics", [True, False])
    if method in ("cg", "entropic", "proximal"):
        G0, reason = make_g0(rng, n, m, p, q, clean)
        if G0 is not None:
            options["G0"] = G0
            bad.append(reason)
    if method == "cg":
        # the default (10,000) is drawn too, rarely: an unconverged run takes seconds
        maybe("max_iter", [1, 5, 50] * 4, [0, -5, "10", 2.5], default_weight=1)
        maybe("tol_abs", [0.0, 1e-3], [-1.0, float("nan")])
        maybe("armijo", [True, False])
    if method == "entropic":
        maybe(
            "epsilon",
            [None, 0.05 * scale or 0.1, 1e-4 * scale or 0.1, 1.0],
            ["0.1", -1.0, 0.0, float("nan"), float("inf")],
        )
        maybe("solver", ["PGD", "PPA"], ["bogus"])
        maybe("max_iter", [1, 5, 20] * 4, [-1], default_weight=1)
        maybe("marginal_tol", [1e-3], [-1e-3])
    if method == "exact":
        maybe("time_limit", [0.05, 1.0], [-1.0, 0.0, "1s", float("nan")])
        maybe("max_nodes", [0, 10], [-1, 1.5])
    if method == "proximal":
        maybe("max_iter", [5, 50] * 3, [0, -5, "10"], default_weight=1)
        maybe("n_starts", [1, 3], [0, 1.5])
        maybe("epsilon", [1e-2, 5e-4], ["0.1", -1.0, float("nan")])
        maybe("polish", [False, 2], [-1, "yes"])
        maybe("time_limit", [1.0], [-1.0, 0.0])
    if method == "auto":
        options["time_limit"] = 0.3  # each stage gets a share of it
        maybe("rtol", [0.0, 1e-3], [-1.0, "tight"])
        maybe("n_starts", [2], [0])
        maybe("seed", [3], [-1])
    if method == "sdp":
        options["time_limit"] = 2.0  # a conic solve is seconds at most here
        maybe("tol", [1e-4, 1e-8], [0.0, 2.0, "small"])
        maybe("solver", ["scs"], ["mosek"])
        maybe("max_size", [4, 100], [0, -1, 2.5])
    if not clean and rng.integers(30) == 0:
        options["max_iterations"] = 3  # a misspelt option
        bad.append("unknown option")
    return options, _first_bad(*bad)


# ---------------------------------------------------------------- gromov_wasserstein
@st.composite
def gw_cases(draw, methods, max_n=6):
    rng = np.random.default_rng(draw(seeds))
    method = pick(rng, methods)
    mode = pick(rng, ["valid", "any"])
    A = make_matrix(rng, mode=mode, max_n=max_n)
    # exact searches permutations: mostly give it what it accepts (n == m, uniform)
    same = method == "exact" and rng.random() < 0.85
    B = make_matrix(rng, A.n if same and A.n else None, mode=mode, max_n=max_n)
    uniform = same and rng.random() < 0.9
    p = Weights(None, None, None) if uniform else make_weights(rng, A.n, mode=mode)
    q = Weights(None, None, None) if uniform else make_weights(rng, B.n, mode=mode)
    if uniform:
        p.host = None if A.n == 0 else np.full(A.n, 1.0 / A.n)
        q.host = None if B.n == 0 else np.full(B.n, 1.0 / B.n)
    pot = method in ("cg", "entropic")
    loss = pick(rng, ["square_loss"] * (9 if pot else 2) + ["abs_loss"])
    known = A.host is not None and B.host is not None
    scale = min(_top([A.host, B.host]), 1e150) ** 2 if known else 1.0
    clean = mode == "valid" and rng.random() < 0.7
    options, bad_option = make_options(rng, method, A.n, B.n, p.host, q.host, scale, clean)
    return A, B, p, q, method, loss, options, _first_bad(A.bad, B.bad, p.bad, q.bad, bad_option)


def _run_gw(case, test: str):
    A, B, p, q, method, loss, options, bad = case
    out = call(
        gwlite.gromov_wasserstein,
        A.value,
        B.value,
        p.value,
        q.value,
        method=method,
        loss_fun=loss,
        bad=bad,
        **options,
    )
    _record(test, out)
    if out is None:
        valid = bad is None and loss == "square_loss" and _in_band(_top([A.host, B.host]))
        if valid and method == "sorted":
            raise ContractViolation("valid input refused by the sorted method")
        return None
    ref = Reference(A.host, B.host, p.host, q.host, loss, _low_precision(A.value, B.value))
    check_result(out, ref)
    return out


@fuzz(3500)
@given(gw_cases(["sorted"]))
def test_fuzz_sorted(case):
    _run_gw(case, "sorted")


@fuzz(900)
@given(gw_cases(["cg", "entropic"], max_n=5))
def test_fuzz_pot_methods(case):
    _run_gw(case, "cg/entropic")


@fuzz(700)
@given(gw_cases(["exact"], max_n=6))
def test_fuzz_exact(case):
    _run_gw(case, "exact")


@fuzz(400)
@given(gw_cases(["proximal"], max_n=6))
def test_fuzz_proximal(case):
    _run_gw(case, "proximal")


@fuzz(120)
@given(gw_cases(["auto"], max_n=5))
def test_fuzz_auto(case):
    _run_gw(case, "auto")


@pytest.mark.skipif(not sdp.available(), reason="method='sdp' needs SCS (gwlite[certify])")
@fuzz(200)
@given(gw_cases(["sdp"], max_n=3))
def test_fuzz_sdp(case):
    _run_gw(case, "sdp")


# ---------------------------------------------------------------- torch
TORCH_DTYPES = [torch.float64] * 3 + [torch.float32, torch.float16, torch.bfloat16, torch.int64]


@st.composite
def torch_cases(draw):
    rng = np.random.default_rng(draw(seeds))
    method = pick(rng, ["sorted", "sorted", "cg", "entropic", "exact", "proximal", "auto"])
    n = int(rng.integers(1, 6))
    m = n if method == "exact" else int(rng.integers(1, 6))
    X, Y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
    C1 = np.linalg.norm(X[:, None] - X[None], axis=-1) * 10.0 ** int(rng.integers(-8, 9))
    C2 = np.linalg.norm(Y[:, None] - Y[None], axis=-1) * 10.0 ** int(rng.integers(-8, 9))
    dtype = pick(rng, (TORCH_DTYPES + [torch.complex64]))
    grad = pick(rng, (["none", "none", "C1", "p", "both"]))
    weighted = method != "exact" and (bool(rng.integers(2)) or grad in ("p", "both"))
    p = rng.random(n) + 0.1 if weighted else None
    return C1, C2, None if p is None else p / p.sum(), dtype, grad, method


@fuzz(500)
@given(torch_cases())
def test_fuzz_torch(case):
    C1, C2, p, dtype, grad, method = case
    T1 = torch.as_tensor(C1).to(dtype)
    T2 = torch.as_tensor(C2).to(dtype)
    bad = "complex" if dtype.is_complex else None
    float_dtype = dtype.is_floating_point
    tp = None if p is None else torch.as_tensor(p, dtype=torch.float64)
    if grad in ("C1", "both") and float_dtype:
        T1.requires_grad_(True)
    if grad in ("p", "both") and tp is not None:
        tp.requires_grad_(True)
    # POT's torch backend is slow on tiny problems: a few iterations are enough here
    options = {
        "cg": {"max_iter": 20},
        "entropic": {"max_iter": 3},
        "proximal": {"max_iter": 30},
        "auto": {"time_limit": 0.3},
    }.get(method, {})
    out = call(gwlite.gromov_wasserstein, T1, T2, tp, None, method=method, bad=bad, **options)
    _record("torch", out)
    if out is None:
        return
    requires = T1.requires_grad or (tp is not None and tp.requires_grad)
    host1 = T1.detach().to(torch.float64).numpy()
    host2 = T2.detach().to(torch.float64).numpy()
    n, m = len(C1), len(C2)
    ref = Reference(
        host1,
        host2,
        np.full(n, 1 / n) if p is None else p,
        np.full(m, 1 / m),
        low_precision=dtype in (torch.float32, torch.float16, torch.bfloat16),
    )
    check_result(out, ref, grad=requires)
    if requires and out.upper.requires_grad:
        out.upper.backward()
        for leaf in (T1, tp):
            if leaf is not None and leaf.grad is not None:
                assert torch.isfinite(leaf.grad).all(), "non-finite gradient"


# ---------------------------------------------------------------- bounds and helpers
@st.composite
def bound_cases(draw):
    shapes = ["square"] * 12 + ["one", "empty", "nonsquare", "vector"]
    rng = np.random.default_rng(draw(seeds))
    mode = pick(rng, ["valid", "any"])
    A = make_matrix(rng, mode=mode, shapes=shapes)
    B = make_matrix(rng, mode=mode, shapes=shapes)
    p = make_weights(rng, A.n, mode=mode)
    q = make_weights(rng, B.n, mode=mode)
    entry = pick(rng, (["lower_bound"] * 5 + ["sorted_upper_bound", "rank_one_bounds"]))
    kind = pick(rng, (list(gwlite.LOWER_BOUNDS)))
    loss = pick(rng, (["square_loss", "abs_loss"]))
    return A, B, p, q, entry, kind, loss


@fuzz(2300)
@given(bound_cases())
def test_fuzz_bounds(case):
    A, B, p, q, entry, kind, loss = case
    bad = _first_bad(A.bad, B.bad, p.bad, q.bad)
    args = (A.value, B.value, p.value, q.value)
    if entry == "lower_bound":
        out = call(gwlite.lower_bound, *args, loss_fun=loss, lower=kind, bad=bad)
    elif entry == "sorted_upper_bound":
        out = call(gwlite.sorted_upper_bound, *args, loss_fun=loss, bad=bad)
    else:
        loss = "square_loss"
        out = call(gwlite.rank_one_bounds, *args, bad=bad)
    _record(entry, out)
    if out is None:
        if bad is None and entry == "lower_bound" and _in_band(_top([A.host, B.host])):
            raise ContractViolation(f"valid input refused by lower_bound({kind!r})")
        return
    ref = Reference(A.host, B.host, p.host, q.host, loss, _low_precision(A.value, B.value))
    tol = ref.rtol * ref.scale * 16
    product = gw_cost_dense(ref.C1, ref.C2, np.outer(ref.p, ref.q), loss)
    if entry == "rank_one_bounds":
        low, up = out.lower, out.upper
        if not (math.isfinite(low) and 0 <= low <= up + tol and math.isfinite(up)):
            raise ContractViolation(f"rank_one_bounds [{low}, {up}]")
        return
    value = float(out)
    if not math.isfinite(value) or value < 0:
        raise ContractViolation(f"{entry} returned {value}")
    if entry == "lower_bound" and value > product + tol:
        raise ContractViolation(f"lower bound {value} above the product coupling's {product}")
    if entry == "sorted_upper_bound":
        T = gwlite.sorted_coupling(ref.C1, ref.C2, ref.p, ref.q)
        if abs(value - gw_cost_dense(ref.C1, ref.C2, T, loss)) > tol:
            raise ContractViolation("sorted upper bound is not its coupling's cost")


@st.composite
def cost_cases(draw):
    rng = np.random.default_rng(draw(seeds))
    mode = pick(rng, ["valid", "any"])
    A = make_matrix(rng, mode=mode, shapes=["square"] * 6 + ["nonsquare", "empty"])
    B = make_matrix(rng, mode=mode, shapes=["square"] * 6 + ["nonsquare", "empty"])
    kind = draw(
        st.sampled_from(
            ["feasible"] * 5 + ["shape", "nan", "negative", "mass", "list", "sparse", "torch"]
        )
    )
    n, m = A.n, B.n
    bad = {"shape": "shape", "nan": "non-finite", "negative": "negative", "mass": "mass"}.get(kind)
    if n == 0 or m == 0:
        return A, B, np.zeros((n, m)), "empty", kind
    T = random_coupling(rng, np.full(n, 1 / n), np.full(m, 1 / m))
    if kind == "shape":
        T = np.ones((n + 1, m)) / ((n + 1) * m)
    elif kind == "nan":
        T[0, 0] = np.nan
    elif kind == "negative":
        T[0, 0] = -0.1
    elif kind == "mass":
        T = T * 42
    elif kind == "list":
        T = T.tolist()
    elif kind == "sparse":
        T = scipy_sparse_coupling(T)
    elif kind == "torch":
        T = torch.as_tensor(T)
        bad = "mixed libraries"
    return A, B, T, bad, kind


def scipy_sparse_coupling(T):
    from gwlite.coupling import SparseCoupling

    rows, cols = np.nonzero(T)
    return SparseCoupling(rows, cols, T[rows, cols], T.shape)


@fuzz(1000)
@given(cost_cases(), st.sampled_from(["square_loss", "abs_loss"]))
def test_fuzz_gw_cost(case, loss):
    A, B, T, bad_T, kind = case
    bad = _first_bad(A.bad, B.bad, bad_T)
    out = call(gwlite.gw_cost, A.value, B.value, T, loss, bad=bad)
    _record("gw_cost", out)
    if out is None:
        return
    dense = np.asarray(_xp.to_numpy(T if not hasattr(T, "rows") else _dense(T)), dtype=np.float64)
    ref = Reference(A.host, B.host, dense.sum(1), dense.sum(0), loss)
    expected = gw_cost_dense(ref.C1, ref.C2, dense, loss)
    value = float(out)
    if not math.isfinite(value) or abs(value - expected) > 1e-6 * max(ref.scale, 1e-300):
        raise ContractViolation(f"gw_cost {value} vs {expected}")


def _dense(T):
    from gwlite.coupling import to_dense

    return to_dense(T)


@st.composite
def w1d_cases(draw):
    rng = np.random.default_rng(draw(seeds))
    n, m = int(rng.integers(0, 7)), int(rng.integers(0, 7))
    exponent = pick(rng, ([0, 0, 0, 100, 200, -200, 300]))
    u, v = rng.normal(size=n) * 10.0**exponent, rng.normal(size=m) * 10.0**exponent
    defect = pick(rng, ([None] * 6 + ["nan", "inf", "complex", "int", "list"]))
    bad = "empty" if n == 0 or m == 0 else None
    if defect in ("nan", "inf") and n:
        u[0] = np.nan if defect == "nan" else np.inf
        bad = bad or "non-finite"
    u_in = u
    if defect == "complex":
        u_in, bad = u + 1j, bad or "complex"
    elif defect == "int":
        u_in = np.round(u).astype(np.int64) if exponent == 0 else u
    elif defect == "list":
        u_in = u.tolist()
    kinds = ["none"] * 3 + ["random", "empty", "negative", "unnormalised", "short"]
    wkind = pick(rng, kinds)
    a = None
    if wkind != "none" and n:
        a = rng.random(n) + 0.1
        a /= a.sum()
        if wkind == "empty":
            a[:] = 0.0  # an empty measure: W is 0
        elif wkind == "negative":
            a[0], bad = -0.5, bad or "negative"
        elif wkind == "unnormalised":
            a, bad = a * 2, bad or "sum"
        elif wkind == "short":
            a, bad = np.full(n + 1, 1 / (n + 1)), bad or "shape"
    power = pick(rng, ([1, 1, 2, 2, 3.5, 0.5, "2", float("inf"), True]))
    if isinstance(power, (bool, str)) or power in (0.5, float("inf")):
        bad = bad or f"p={power!r}"
    exact = exponent == 0 and defect in (None, "list", "int") and wkind != "empty"
    return u_in, v, a, power, bad, (u_in, v, a, exact, wkind)


@fuzz(1000)
@given(w1d_cases())
def test_fuzz_wasserstein_1d(case):
    u_in, v, a, power, bad, (u_ref, v_ref, a_ref, exact, wkind) = case
    out = call(gwlite.wasserstein_1d, u_in, v, a, None, p=power, bad=bad)
    _record("wasserstein_1d", out)
    if out is None:
        return
    value = float(out)
    if not math.isfinite(value) or value < 0:
        raise ContractViolation(f"wasserstein_1d returned {value}")
    if wkind == "empty" and value != 0:
        raise ContractViolation(f"an empty measure gave {value}")
    if exact:  # against the linear program
        u_ref = np.asarray(u_ref, dtype=np.float64)
        n, m = len(u_ref), len(v_ref)
        w = np.full(n, 1 / n) if a_ref is None else a_ref
        expected = w1d_lp(u_ref, v_ref, w, np.full(m, 1 / m), power)
        if abs(value - expected) > 1e-9 * max(1.0, expected):
            raise ContractViolation(f"wasserstein_1d {value} vs the LP's {expected}")


# ---------------------------------------------------------------- graphs
@st.composite
def graph_cases(draw):
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 8))
    directed = bool(rng.integers(2))
    G = nx.gnp_random_graph(n, 0.5, seed=seed % 2**31, directed=directed)
    wkind = pick(rng, (["none", "none", "positive", "negative", "nan", "string"]))
    for u, v in G.edges():
        value = rng.random() + 0.1
        if wkind == "negative" and rng.random() < 0.5:
            value = -value
        G[u][v]["weight"] = {"nan": float("nan"), "string": "heavy"}.get(wkind, value)
    kind = pick(rng, (list(gwlite.graphs.KINDS) + ["spectral"]))
    weight = pick(rng, ([None, "weight"]))
    node_weights = pick(rng, (["uniform", "degree", "mass"]))
    t = pick(rng, ([1.0, 0.0, 0.5, -1.0, float("inf"), float("nan"), "1"]))
    bad = None
    if kind == "spectral" or node_weights == "mass" or n == 0:
        bad = "option"
    if not (isinstance(t, float) and math.isfinite(t) and t >= 0):
        bad = bad or "t"
    if weight and wkind in ("nan", "string") and G.number_of_edges():
        bad = bad or "edge weight"
    if weight and kind == "shortest_path" and wkind == "negative" and G.number_of_edges():
        if any(d["weight"] < 0 for _, _, d in G.edges(data=True)):
            bad = bad or "negative distances"
    return G, kind, weight, node_weights, t, bad


@fuzz(500)
@given(graph_cases())
def test_fuzz_from_networkx(case):
    G, kind, weight, node_weights, t, bad = case
    out = call(gwlite.from_networkx, G, kind, weight, node_weights, t=t, bad=bad)
    _record("from_networkx", out)
    if out is None:
        return
    C, p = out
    assert C.shape == (G.number_of_nodes(),) * 2 and np.all(np.isfinite(C))
    assert np.all(p >= 0) and abs(p.sum() - 1) < 1e-9
    if kind == "shortest_path":
        assert np.all(C >= 0) and np.all(np.diag(C) == 0), "distances with a negative entry"
    res = call(gwlite.gromov_wasserstein, C, C, p, p)
    if res is not None:
        check_result(res, Reference(C, C, p, p))


# ---------------------------------------------------------------- scale invariance
@st.composite
def scale_cases(draw):
    rng = np.random.default_rng(draw(seeds))
    methods = ["sorted", "sorted", "cg", "entropic", "exact"]
    method = pick(rng, methods + (["sdp"] if sdp.available() else []))
    size = 3 if method == "sdp" else 6  # a conic solve grows like (n m)^3
    A = make_matrix(rng, mode="plain", max_n=size)
    same = bool(rng.integers(2))
    B = make_matrix(rng, A.n if same else None, mode="plain", max_n=size)
    p = make_weights(rng, A.n, mode="valid")
    q = make_weights(rng, B.n, mode="valid")
    lower = pick(rng, (list(gwlite.LOWER_BOUNDS)))
    loss = pick(rng, (["square_loss", "abs_loss"]))
    if method in ("cg", "entropic"):
        loss = "square_loss"
    # a power of two moves nothing but the exponent: every decision must be identical
    k = int(rng.integers(-60, 61))
    generic = pick(rng, ([1e-6, 3.7e-3, 0.71, 13.3, 1e6, 2.3e11]))
    return A, B, p, q, method, lower, loss, 2.0**k, generic


def _certify_margin(res, r: int, top: float) -> float:
    """How far the result is from the certification threshold, relative to it."""
    threshold = CERTIFY_RTOL * top**r
    return abs(res.gap - threshold) / max(threshold, 1e-300)


@fuzz(600)
@given(scale_cases())
def test_fuzz_certified_is_scale_invariant(case):
    A, B, p, q, method, lower, loss, exact_factor, generic = case
    if method == "exact" and (A.n != B.n or p.value is not None or q.value is not None):
        p = q = type(p)(None, None, None)  # exact needs uniform weights
        if A.n != B.n:
            method = "sorted"
    options = {"lower": lower}
    if method in ("cg", "entropic"):
        options["max_iter"] = 30  # unconverged runs are compared too; they must stay short

    def run(s):
        return call(
            gwlite.gromov_wasserstein,
            scaled(A.value, s),
            scaled(B.value, s),
            p.value,
            q.value,
            method=method,
            loss_fun=loss,
            **options,
        )

    base = run(1.0)
    _record("scale", base)
    if base is None:
        return
    r = 2 if loss == "square_loss" else 1
    top = _top([A.host, B.host])
    for s, strict in ((exact_factor, True), (generic, False)):
        other = run(s)
        if other is None:
            raise ContractViolation(f"refused at scale {s} but not at 1")
        if method == "sorted":
            expected = base.value * s**r
            if abs(other.value - expected) > 1e-9 * (top * s) ** r:
                raise ContractViolation(f"value {other.value} at scale {s}, expected {expected}")
        if other.certified == base.certified and (not strict or other.converged == base.converged):
            if strict and other.n_iter != base.n_iter:
                raise ContractViolation(f"n_iter {base.n_iter} -> {other.n_iter} at scale {s}")
            continue
        if strict:
            raise ContractViolation(
                f"certified/converged {base.certified}/{base.converged} -> "
                f"{other.certified}/{other.converged} at scale 2^{math.log2(s):.0f}"
            )
        # a generic factor rounds every entry: only a result on the threshold may flip
        near = min(_certify_margin(base, r, top), _certify_margin(other, r, top * s))
        if method in ("sorted", "exact") and near > 0.5 and other.certified != base.certified:
            raise ContractViolation(f"certified {base.certified} -> {other.certified} at {s}")
