"""gwlite.gromov_wasserstein_batch and pairwise(method="proximal" | "auto") through it:
one result per problem, bounds that hold, bad input refused naming the problem before
any work, a pair's numbers independent of the pairs it is batched with."""

import warnings

import numpy as np
import pytest
import torch
from reference import best_permutation, gw_cost_dense, random_coupling

import gwlite
from gwlite import batch as batch_module
from gwlite.errors import GWInputError


def _cloud(rng, n):
    X = rng.standard_normal((n, 3))
    return np.linalg.norm(X[:, None] - X[None], axis=-1)


def _spaces(seed=0, sizes=(5, 6, 6, 4, 7)):
    rng = np.random.default_rng(seed)
    return [_cloud(rng, n) for n in sizes]


@pytest.mark.parametrize("method", ["auto", "proximal"])
def test_one_result_per_problem_with_valid_bounds(method):
    spaces = _spaces()
    C1s, C2s = spaces[:4], spaces[1:]
    results = gwlite.gromov_wasserstein_batch(C1s, C2s, method=method)
    assert len(results) == 4
    rng = np.random.default_rng(1)
    for C1, C2, res in zip(C1s, C2s, results):
        T = np.asarray(res.coupling)
        assert res.upper == pytest.approx(gw_cost_dense(C1, C2, T), rel=1e-9, abs=1e-12)
        p, q = np.full(len(C1), 1 / len(C1)), np.full(len(C2), 1 / len(C2))
        for other in [random_coupling(rng, p, q) for _ in range(3)]:
            assert res.lower <= gw_cost_dense(C1, C2, other) + 1e-9
        if len(C1) == len(C2):  # the optimum over permutations bounds GW from above
            best, _ = best_permutation(C1, C2)
            assert res.lower <= best + 1e-9
        assert res.method == method


def test_auto_bounds_are_the_best_of_its_parts():
    spaces = _spaces(seed=2)
    (res,) = gwlite.gromov_wasserstein_batch(spaces[:1], spaces[1:2], method="auto")
    tlb = gwlite.lower_bound(spaces[0], spaces[1], lower="tlb")
    mean_row = gwlite.lower_bound(spaces[0], spaces[1])
    assert res.lower == pytest.approx(min(max(tlb, mean_row), res.upper), rel=1e-12)
    sorted_upper = gwlite.sorted_upper_bound(spaces[0], spaces[1])
    assert res.upper <= sorted_upper * (1 + 1e-12)


def test_stacks_equal_sequences_and_other_methods_run_one_by_one():
    spaces = _spaces(sizes=(5, 5, 5, 5))
    stack1, stack2 = np.stack(spaces[:2]), np.stack(spaces[2:])
    a = gwlite.gromov_wasserstein_batch(stack1, stack2, method="proximal")
    b = gwlite.gromov_wasserstein_batch(spaces[:2], spaces[2:], method="proximal")
    assert [r.upper for r in a] == [r.upper for r in b]
    cg = gwlite.gromov_wasserstein_batch(spaces[:2], spaces[2:], method="cg")
    for C1, C2, res in zip(spaces[:2], spaces[2:], cg):
        assert res.upper == pytest.approx(gwlite.gromov_wasserstein(C1, C2, method="cg").upper)


def test_bad_inputs_name_the_problem_before_any_work(monkeypatch):
    spaces = _spaces()
    ran = []
    monkeypatch.setattr(batch_module, "solve_batch", lambda *a, **k: ran.append(1))
    monkeypatch.setattr(batch_module, "solve_auto", lambda *a, **k: ran.append(1))
    bad = list(spaces)
    bad[3] = spaces[3].copy()
    bad[3][0, 1] = np.nan
    with pytest.raises(GWInputError, match="problem 3: "):
        gwlite.gromov_wasserstein_batch(spaces, bad)
    bad[3] = np.ones((3, 4))
    with pytest.raises(GWInputError, match="problem 3: "):
        gwlite.gromov_wasserstein_batch(spaces, bad, method="proximal")
    mixed = list(spaces[:3]) + [torch.as_tensor(spaces[3])]
    with pytest.raises(GWInputError, match="problem 3: .*one array library"):
        gwlite.gromov_wasserstein_batch(mixed, mixed)
    with pytest.raises(GWInputError, match="C2s has 2 entries but C1s has 5"):
        gwlite.gromov_wasserstein_batch(spaces, spaces[:2])
    ps = [None] * 5
    ps[1] = np.array([0.5, 0.6, 0, 0, 0, 0])
    with pytest.raises(GWInputError, match="problem 1: "):
        gwlite.gromov_wasserstein_batch(spaces, spaces, ps)
    with pytest.raises(GWInputError, match="unknown option"):
        gwlite.gromov_wasserstein_batch(spaces, spaces, method="auto", polish=3)
    with pytest.raises(GWInputError, match="time_limit"):
        gwlite.gromov_wasserstein_batch(spaces, spaces, method="auto", time_limit=-1)
    with pytest.raises(GWInputError, match="unknown method"):
        gwlite.gromov_wasserstein_batch(spaces, spaces, method="nope")
    assert not ran


def test_auto_says_when_its_budget_ended_before_a_stage():
    spaces = _spaces(sizes=(30,) * 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = gwlite.gromov_wasserstein_batch(
            spaces * 20, spaces[::-1] * 20, method="auto", time_limit=1e-4
        )
    assert any("time limit" in str(w.message) for w in caught)
    for res in results:
        assert res.diagnostics["skipped"]
        assert not res.converged
        assert res.lower <= res.upper


@pytest.mark.parametrize("method", ["auto", "proximal"])
def test_pairwise_through_the_batch_is_independent_of_tiles(method):
    spaces = _spaces(seed=3, sizes=(5, 6, 7, 5, 8, 6))
    a = gwlite.pairwise(spaces, method=method, chunk=2, progress=False)
    b = gwlite.pairwise(spaces, method=method, chunk=6, progress=False)
    np.testing.assert_array_equal(a.upper, b.upper)
    np.testing.assert_array_equal(a.lower, b.lower)
    direct = gwlite.gromov_wasserstein_batch(spaces[:1], spaces[4:5], method=method)[0]
    assert a.upper[0, 4] == direct.upper
    assert a.lower[0, 4] == pytest.approx(direct.lower, rel=1e-12)


def test_single_auto_warns_when_its_budget_ends_before_a_stage():
    rng = np.random.default_rng(4)
    C1, C2 = _cloud(rng, 120), _cloud(rng, 110)
    gwlite.gromov_wasserstein(C1[:5, :5], C2[:5, :5], time_limit=1.0)  # imports
    with pytest.warns(UserWarning, match="time limit .* ended before stage"):
        res = gwlite.gromov_wasserstein(C1, C2, time_limit=0.06)
    assert res.diagnostics["stop_reason"] == "time_limit"
    assert res.lower <= res.upper


def test_pairwise_auto_on_local_processes_equals_this_process():
    spaces = _spaces(seed=5, sizes=(5, 6, 7, 5, 6))
    here = gwlite.pairwise(spaces, method="auto", engine=1, chunk=2, progress=False)
    procs = gwlite.pairwise(spaces, method="auto", engine=2, chunk=2, progress=False)
    np.testing.assert_array_equal(here.upper, procs.upper)
    np.testing.assert_array_equal(here.lower, procs.lower)


def test_auto_warns_only_about_stages_that_never_ran():
    """An anytime stage stopped by the limit is the normal end of a budgeted call: it is
    marked ``cut`` in the diagnostics and is not named by the warning."""
    rng = np.random.default_rng(6)
    C1, C2 = _cloud(rng, 30), _cloud(rng, 28)
    gwlite.gromov_wasserstein(C1[:5, :5], C2[:5, :5], time_limit=1.0)  # imports
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = gwlite.gromov_wasserstein(C1, C2, time_limit=1.5)
    stages = res.diagnostics["stages"]
    cut = {s["stage"] for s in stages if s.get("cut") and "skipped" not in s}
    named = " ".join(str(w.message) for w in caught if "ended before stage" in str(w.message))
    for name in cut:
        assert repr(name) not in named
    if named:  # a warning names only stages that were skipped or never reached
        ran = {s["stage"] for s in stages if "skipped" not in s}
        assert not any(repr(name) in named for name in ran)
    assert res.lower <= res.upper
