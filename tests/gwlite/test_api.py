"""The public call: result invariants for every method, options and bad input."""

import ast
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import best_permutation, centred_definiteness, gw_cost_dense
from strategies import problems

import gwlite
from gwlite.families import generate

POT_METHODS = ["cg", "entropic"]


def _w(n, w):
    return np.full(n, 1.0 / n) if w is None else w


def _check_invariants(res, C1, C2, p, q):
    """What every GWResult promises."""
    scale = max(1.0, np.abs(C1).max(), np.abs(C2).max()) ** 2
    assert float(res.lower) <= float(res.upper) + 1e-12 * scale
    assert res.time_s >= 0
    if res.coupling is not None:
        T = res.coupling
        assert T.min() >= -1e-15
        # feasible: marginals within 1e-9 relative in float64
        np.testing.assert_allclose(T.sum(1), p, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(T.sum(0), q, rtol=1e-9, atol=1e-12)
        assert res.upper == pytest.approx(
            gw_cost_dense(C1, C2, T, res.loss_fun), rel=1e-10, abs=1e-13
        )
    if res.certified:
        assert res.upper - res.lower <= 1e-10 * scale


@settings(max_examples=25, deadline=None)
@given(problems(max_n=6, symmetric_only=True), st.sampled_from(["sorted", "cg", "entropic"]))
def test_result_invariants_for_every_method(inst, method):
    C1, C2, p, q = inst
    scale = max(np.abs(C1).max(), np.abs(C2).max(), 1.0) ** 2
    opts = {"epsilon": 0.05 * scale} if method == "entropic" else {}
    res = gwlite.gromov_wasserstein(C1, C2, p, q, method=method, **opts)
    _check_invariants(res, C1, C2, _w(len(C1), p), _w(len(C2), q))
    assert res.method == method


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from(["gram", "euclidean", "tree_metric", "coactivation"]),
    st.integers(3, 6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.sampled_from(["sorted", "cg", "entropic"]),
)
def test_every_method_brackets_gw_on_definite_pairs(family, n, s1, s2, method):
    C1, _ = generate(family, n, s1)
    C2, _ = generate(family, n, s2)
    if {centred_definiteness(C1), centred_definiteness(C2)} not in ({"psd"}, {"nsd"}):
        return
    gw, _ = best_permutation(C1, C2)  # = GW for such pairs
    scale = max(np.abs(C1).max(), np.abs(C2).max()) ** 2
    # POT's epsilon is absolute: keep it proportional to the loss scale
    opts = {"epsilon": 0.05 * scale} if method == "entropic" else {}
    res = gwlite.gromov_wasserstein(C1, C2, method=method, lower="tlb", **opts)
    scale = max(1.0, np.abs(C1).max(), np.abs(C2).max()) ** 2
    assert res.lower <= gw + 1e-10 * scale
    assert gw <= res.upper + 1e-10 * scale


def test_unconverged_entropic_never_undercuts_gw():
    # a few Sinkhorn-GW iterations give a plan far off the polytope; its rounded cost
    # must still be an upper bound on GW (POT issue #406)
    C1, _ = generate("euclidean", 6, seed=3)
    C2, _ = generate("euclidean", 6, seed=8)
    gw, _ = best_permutation(C1, C2)
    res = gwlite.gromov_wasserstein(C1, C2, method="entropic", epsilon=0.1, max_iter=1)
    assert not res.converged
    assert res.upper >= gw - 1e-12
    assert res.marginal_error >= 0


def test_entropic_reports_convergence_truthfully():
    C1, _ = generate("gram", 8, seed=1)
    C2, _ = generate("gram", 8, seed=2)
    res = gwlite.gromov_wasserstein(C1, C2, method="entropic", epsilon=1.0, max_iter=2000, tol=1e-9)
    assert res.converged
    assert res.marginal_error <= 1e-6
    assert res.n_iter < 2000


def test_entropic_nan_is_an_error_not_a_number():
    C1, _ = generate("gram", 8, seed=1)
    C2, _ = generate("gram", 8, seed=2)
    with pytest.raises(gwlite.GWSolverError, match="epsilon"):
        gwlite.gromov_wasserstein(100 * C1, 100 * C2, method="entropic", epsilon=1e-6)


def test_cg_reports_iterations_and_pot_value():
    C1, _ = generate("euclidean", 10, seed=1)
    C2, _ = generate("euclidean", 12, seed=2)
    res = gwlite.gromov_wasserstein(C1, C2, method="cg")
    assert res.converged and res.n_iter >= 1
    assert res.value == res.upper
    assert res.diagnostics["pot_value"] == pytest.approx(res.upper, rel=1e-9)


@pytest.mark.parametrize("method", POT_METHODS)
def test_pot_methods_refuse_abs_loss(method):
    with pytest.raises(gwlite.GWInputError, match="square_loss"):
        gwlite.gromov_wasserstein(np.eye(3), np.eye(3), method=method, loss_fun="abs_loss")


def test_unknown_method_lists_the_choices():
    with pytest.raises(ValueError, match="sorted.*cg.*entropic"):
        gwlite.gromov_wasserstein(np.eye(2), np.eye(2), method="magic")


def test_unknown_option_is_refused():
    with pytest.raises(gwlite.GWInputError, match="unknown option.*max_iterations"):
        gwlite.gromov_wasserstein(np.eye(2), np.eye(2), method="cg", max_iterations=3)
    with pytest.raises(gwlite.GWInputError, match="epsilon"):
        gwlite.gromov_wasserstein(np.eye(2), np.eye(2), method="sorted", epsilon=0.1)


def test_unknown_lower_kind_is_refused():
    with pytest.raises(gwlite.GWInputError, match="unknown lower bound"):
        gwlite.gromov_wasserstein(np.eye(2), np.eye(2), lower="best")


def test_symmetric_true_refuses_asymmetric_input():
    A = np.array([[0.0, 1.0], [0.0, 0.0]])
    with pytest.raises(gwlite.GWInputError, match="not symmetric"):
        gwlite.gromov_wasserstein(A, np.eye(2), method="cg", symmetric=True)


def test_result_is_frozen_and_readable():
    C, _ = generate("tree_metric", 5, seed=0)
    res = gwlite.gromov_wasserstein(C, C, method="sorted")
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.value = 1.0
    with pytest.raises(TypeError):
        res.diagnostics["x"] = 1
    text = repr(res)
    assert "method='sorted'" in text and "interval=[" in text and "certified=True" in text


def test_return_coupling_false():
    res = gwlite.gromov_wasserstein(np.eye(3), np.eye(3), return_coupling=False)
    assert res.coupling is None


def test_different_sizes_and_weights():
    C1, _ = generate("euclidean", 7, seed=1)
    C2, _ = generate("euclidean", 4, seed=2)
    p = np.arange(1, 8, dtype=float)
    p /= p.sum()
    for method in ("sorted", "cg", "entropic"):
        res = gwlite.gromov_wasserstein(C1, C2, p, None, method=method)
        _check_invariants(res, C1, C2, p, np.full(4, 0.25))
        assert res.coupling.shape == (7, 4)


def test_integer_matrices_are_cast_not_truncated():
    A = np.array([[0, 3, 1], [3, 0, 7], [1, 7, 0]])
    B = np.array([[0, 2, 5], [2, 0, 1], [5, 1, 0]])
    for method in ("sorted", "cg"):
        res = gwlite.gromov_wasserstein(A, B, method=method)
        ref = gwlite.gromov_wasserstein(A / 1.0, B / 1.0, method=method)
        assert res.upper == ref.upper
        assert res.value == ref.value
        assert res.upper == pytest.approx(gw_cost_dense(A / 1.0, B / 1.0, res.coupling))
    assert isinstance(res.value, float)


def test_tlb_lower_is_reported_when_asked():
    C1, _ = generate("regular", 8, seed=0)
    C2, _ = generate("regular", 8, seed=5)
    res = gwlite.gromov_wasserstein(C1, C2, method="sorted", lower="tlb")
    assert res.diagnostics["lower_kind"] == "tlb"
    assert res.lower >= res.value - 1e-15
    assert res.lower == pytest.approx(gwlite.lower_bound(C1, C2, lower="tlb"))


@pytest.mark.parametrize("method", POT_METHODS)
def test_zero_weight_nodes_are_left_out_of_pots_solvers(method):
    # Sinkhorn divides by the weights: gwlite solves on the support and embeds back
    C1, _ = generate("euclidean", 6, seed=1)
    C2, _ = generate("euclidean", 5, seed=2)
    p = np.array([0.3, 0.0, 0.2, 0.25, 0.25, 0.0])
    q = np.array([0.0, 0.4, 0.2, 0.2, 0.2])
    res = gwlite.gromov_wasserstein(C1, C2, p, q, method=method)
    _check_invariants(res, C1, C2, p, q)
    assert np.all(res.coupling[p == 0] == 0) and np.all(res.coupling[:, q == 0] == 0)
    keep_p, keep_q = p > 0, q > 0
    sub = gwlite.gromov_wasserstein(
        C1[np.ix_(keep_p, keep_p)], C2[np.ix_(keep_q, keep_q)], p[keep_p], q[keep_q], method=method
    )
    assert res.upper == pytest.approx(sub.upper, rel=1e-9)


def _loaded_after(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` are in ``sys.modules`` after ``code`` runs in a fresh Python."""
    import subprocess
    import sys

    probe = f"{code}\nimport sys\nprint(sorted(m for m in {names!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.strip())


def test_importing_gwlite_imports_neither_torch_nor_fusion_nor_networkx():
    # (POT, used on demand by cg/entropic/TLB and by auto's later stages, imports torch
    # itself when it is installed; the closed form never needs it; networkx is imported
    # by the functions that read graphs)
    code = (
        "import gwlite, numpy as np\n"
        "gwlite.gromov_wasserstein(np.eye(3), np.eye(3), method='sorted')"
    )
    assert _loaded_after(code, ("torch", "fusion", "cupy", "networkx")) == []


def test_importing_gwlite_loads_no_scipy_submodule_it_does_not_need():
    """`import gwlite` stays light: SciPy's sparse and dense linear algebra (the SDP
    models, ADMM) are imported by the solvers that use them, on their first call."""
    names = ("scipy.sparse", "scipy.linalg", "scipy.optimize", "ot")
    assert _loaded_after("import gwlite", names) == []


# ---------------------------------------------------------------- options
C6, _ = generate("euclidean", 6, seed=1)
C7, _ = generate("euclidean", 7, seed=2)


@pytest.fixture
def no_pot(monkeypatch):
    """POT's solvers fail the test if called: options are checked before any work."""
    import ot

    def never(*args, **kwargs):
        raise AssertionError("POT was called")

    monkeypatch.setattr(ot.gromov, "gromov_wasserstein", never)
    monkeypatch.setattr(ot.gromov, "entropic_gromov_wasserstein", never)


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("cg", {"G0": np.ones((3, 3))}, "G0 must have shape"),
        ("cg", {"G0": np.ones((6, 7))}, "G0 is not a coupling"),
        ("cg", {"G0": np.full((6, 7), np.nan)}, "G0 has non-finite"),
        ("cg", {"G0": -np.full((6, 7), 1 / 42)}, "G0 has negative"),
        ("cg", {"G0": np.full((6, 7), 1 / 42) + 0j}, "G0 is complex"),
        ("entropic", {"G0": np.ones((6, 6)) / 36}, "G0 must have shape"),
        ("entropic", {"epsilon": "0.1"}, "epsilon must be a finite number"),
        ("entropic", {"epsilon": -1.0}, "epsilon must be a finite number > 0"),
        ("entropic", {"epsilon": float("nan")}, "epsilon"),
        ("entropic", {"epsilon": float("inf")}, "epsilon"),
        ("entropic", {"solver": "bogus"}, "unknown solver 'bogus'.*PGD.*PPA"),
        ("entropic", {"max_iter": 0}, "max_iter must be an integer >= 1"),
        ("cg", {"max_iter": -5}, "max_iter must be an integer >= 1"),
        ("cg", {"max_iter": "10"}, "max_iter"),
        ("cg", {"max_iter": 2.5}, "max_iter"),
        ("cg", {"max_iter": True}, "max_iter"),
        ("cg", {"tol_abs": -1e-9}, "tol_abs must be a finite number >= 0"),
        ("cg", {"armijo": "no"}, "armijo must be True or False"),
        ("entropic", {"marginal_tol": -1.0}, "marginal_tol"),
        ("sorted", {"return_coupling": "yes"}, "return_coupling"),
        ("sorted", {"lower": 3}, "unknown lower bound"),
        ("exact", {"time_limit": "1s"}, "time_limit"),
        ("exact", {"time_limit": float("nan")}, "time_limit"),
        ("exact", {"max_nodes": -1}, "max_nodes"),
        ("exact", {"max_nodes": 1.5}, "max_nodes"),
    ],
)
def test_bad_options_are_refused_before_any_work(no_pot, method, options, message):
    C2 = C6 if method == "exact" else C7
    with pytest.raises(gwlite.GWInputError, match=message):
        gwlite.gromov_wasserstein(C6, C2, method=method, **options)


def test_bad_method_names_are_refused():
    for method in (None, ["cg"], 3):
        with pytest.raises(gwlite.GWInputError, match="unknown method"):
            gwlite.gromov_wasserstein(C6, C7, method=method)


def test_numpy_scalars_are_accepted_as_options():
    res = gwlite.gromov_wasserstein(
        C6, C7, method="cg", max_iter=np.int64(5), tol_abs=np.float32(0)
    )
    assert res.n_iter <= 5


@pytest.mark.parametrize("method", POT_METHODS)
def test_near_feasible_G0_is_rounded_onto_the_polytope(method):
    p, q = np.full(6, 1 / 6), np.full(7, 1 / 7)
    G0 = np.outer(p, q) * (1 + 1e-10)  # off by round-off: POT's 1e-8 assert would pass or not
    res = gwlite.gromov_wasserstein(C6, C7, method=method, G0=G0.tolist())
    _check_invariants(res, C6, C7, p, q)


def test_method_options_lists_each_methods_options():
    from gwlite.api import method_options

    assert set(method_options("sorted")) == {"lower", "return_coupling", "diagnostics"}
    assert {"epsilon", "G0", "max_iter", "solver"} <= set(method_options("entropic"))
    assert method_options("exact")["lower"] == "tlb"
    with pytest.raises(gwlite.GWInputError, match="unknown method"):
        method_options("magic")


def test_a_new_solver_gets_the_shared_option_checks(monkeypatch):
    # a solver registered later is validated by its signature and the shared checks
    from gwlite import api, solvers
    from gwlite.solvers._common import one_of, with_option_checks

    @with_option_checks(rule=one_of(["a", "b"]))
    def solve(problem, *, max_iter: int = 3, rule: str = "a"):
        return solvers.sorting.solve(problem)

    monkeypatch.setitem(solvers.SOLVERS, "toy", solve)
    monkeypatch.setitem(api.SOLVERS, "toy", solve)
    assert gwlite.gromov_wasserstein(C6, C7, method="toy", max_iter=2).method == "sorted"
    with pytest.raises(gwlite.GWInputError, match="max_iter must be an integer"):
        gwlite.gromov_wasserstein(C6, C7, method="toy", max_iter=-1)
    with pytest.raises(gwlite.GWInputError, match="unknown rule 'c'"):
        gwlite.gromov_wasserstein(C6, C7, method="toy", rule="c")
    with pytest.raises(gwlite.GWInputError, match="unknown option.*epsilon"):
        gwlite.gromov_wasserstein(C6, C7, method="toy", epsilon=1.0)


def test_pot_warnings_are_kept_once_each():
    import warnings

    import ot

    C1, _ = generate("euclidean", 6, seed=1)
    C2, _ = generate("euclidean", 6, seed=2)
    epsilon = 0.02 * max(C1.max(), C2.max()) ** 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ot.gromov.entropic_gromov_wasserstein(C1, C2, epsilon=epsilon, max_iter=20)
    assert len(caught) > 5  # what POT itself emits on this input, many times over
    res = gwlite.gromov_wasserstein(C1, C2, method="entropic", epsilon=epsilon, max_iter=20)
    notes = res.diagnostics["pot_warnings"]
    assert notes == list(dict.fromkeys(str(w.message) for w in caught))


def test_cg_keeps_pots_warnings_too():
    res = gwlite.gromov_wasserstein(C6, C7, method="cg")
    assert res.diagnostics["pot_warnings"] == []


@pytest.mark.parametrize(
    ("method", "options", "imported"),
    [
        ("sorted", {"lower": "tlb"}, True),
        ("exact", {}, True),
        ("cg", {}, True),
        ("sorted", {}, False),
    ],
)
def test_pot_is_imported_before_the_clock_starts(monkeypatch, method, options, imported):
    # POT's first import takes about a second: it must not be part of the reported time
    import importlib

    from gwlite import api

    events = []
    real_import, real_clock = importlib.import_module, api.time.perf_counter

    def spy_import(name, *args, **kwargs):
        events.append(f"import {name}")
        return real_import(name, *args, **kwargs)

    def spy_clock():
        events.append("clock")
        return real_clock()

    monkeypatch.setattr(api.importlib, "import_module", spy_import)
    monkeypatch.setattr(api.time, "perf_counter", spy_clock)
    gwlite.gromov_wasserstein(C6, C6, method=method, **options)
    # validation is timed first and imports nothing; the imports come before the solve's
    # clock starts
    checked = [i for i, e in enumerate(events) if e == "clock"][1]  # validation's end
    assert "import ot" not in events[:checked]
    assert events[-2:] == ["clock", "clock"]
    assert ("import ot" in events[checked:-2]) == imported
