"""gwlite verify: the quick study has zero violations, and a violation is caught."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

from gwlite import cli
from gwlite.errors import GWInputError
from gwlite.families import generate
from gwlite.solvers import sdp
from gwlite.verify import QUICK, run_study
from gwlite.verify import _methods as methods
from gwlite.verify._checks import brute_cost, brute_permutation_optimum, check_instance

needs_sdp = pytest.mark.skipif(not sdp.available(), reason="needs gwlite[certify] (SCS)")


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify")
    return run_study(quick=True, progress=False, out_dir=out), out


def test_quick_study_has_zero_violations(quick_study):
    report, _ = quick_study
    assert report.n_checks > 1000
    assert report.violations == []
    assert report.ok


def test_quick_study_covers_every_method_family_and_claim(quick_study):
    report, _ = quick_study
    methods_seen = {row["method"] for row in report.rows}
    expected = {"sorted", "flb", "slb", "tlb", "exact", "cg", "entropic", "rank_one", "proximal"}
    expected.add("rlt")
    assert methods_seen == expected | ({"sdp"} if sdp.available() else set())
    assert len({row["family"] for row in report.rows}) == 10
    assert {row["n"] for row in report.rows} == set(QUICK["sizes"])
    names = set(report.check_summary())
    for claim in [
        "lower <= GW",
        "GW <= upper",
        "coupling feasible",
        "upper = cost of coupling",
        "gap identity (library terms)",
        "gap identity (recomputed)",
        "exact = brute force over permutations",
        "PSD/PSD and CND/CND pairs are certified",
        "no coupling beats a certified optimum",
        "rank-one pair contains GW",
        "rlt lower <= every coupling",
        "rlt lower >= TLB",
        "every rlt iterate <= upper",
    ] + (
        ["sdp lower <= every coupling", "sdp lower >= TLB", "certified only when gap <= tol"]
        if sdp.available()
        else []
    ):
        assert claim in names


@needs_sdp
def test_quick_study_certifies_gw_on_the_graph_families_with_sdp(quick_study):
    report, _ = quick_study
    runs = [r for r in report.rows if r["method"] == "sdp"]
    # --quick runs the relaxation at n = 6 only where the exact solver did not certify
    assert runs and {r["n"] for r in runs} == {6}
    assert all(
        r["reference_kind"] in ("exact (certified)", "sdp (certified)") or not r["certified"]
        for r in runs
    )
    certified = [r for r in runs if r["certified"]]
    assert len(certified) >= len(runs) // 2
    assert (
        "sdp)" in report.render()
        and "GW certified (exact optimum or sdp relaxation)" in report.render()
    )


def test_quick_study_reports_regular_graphs_honestly(quick_study):
    report, _ = quick_study
    text = report.render()
    assert "regular" in text and "mean-row closed form is 0 while GW > 0" in text
    regular = [r for r in report.rows if r["family"] == "regular" and r["method"] == "sorted"]
    assert all(abs(r["lower"]) < 1e-12 for r in regular)


def test_quick_study_writes_csv_and_figure(quick_study):
    report, out = quick_study
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(report.rows)
    assert {"family", "method", "lower", "upper", "time_s", "reference_kind"} <= set(rows[0])
    with open(out / "checks.csv", newline="") as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == report.n_checks
    assert (out / "tightness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_cli_verify_small_run_exits_zero(tmp_path, capsys):
    code = cli.main(
        ["verify", "--families", "gram", "tree", "--sizes", "5", "--seeds", "0"]
        + ["--out", str(tmp_path), "--no-progress"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "OK: 0 violation(s)" in printed and "time per method" in printed


def test_a_violation_makes_the_command_fail(tmp_path, monkeypatch, capsys):
    real = methods._timed_lower

    def inflated(C1, C2, loss, kind):
        run = real(C1, C2, loss, kind)
        if kind == "slb":  # pretend SLB were 10x larger than it is
            run.lower = 10 * run.lower + 1.0
        return run

    monkeypatch.setattr(methods, "_timed_lower", inflated)
    code = cli.main(
        ["verify", "--families", "gram", "--sizes", "5", "--seeds", "0"]
        + ["--out", str(tmp_path), "--no-progress"]
    )
    assert code == 1
    assert "VIOLATION lower <= GW [slb]" in capsys.readouterr().out


@needs_sdp
def test_checks_catch_a_wrong_sdp_bound_and_a_false_certificate():
    C1, C2 = (generate("erdos_renyi", 5, s)[0] for s in (0, 1))
    settings = methods.Settings(exact_max_n=5, entropic_max_iter=10, sdp_max_n=5)
    runs = methods.run_methods(C1, C2, "square_loss", settings)
    assert "sdp" in runs and runs["sdp"].error is None
    assert all(c.passed for c in check_instance(C1, C2, "square_loss", runs).checks)
    runs["sdp"].lower = runs["sdp"].upper + 0.05  # above a coupling's cost
    runs["sdp"].diagnostics.update(sdp_bound=-1.0, stop_reason="certified")  # below TLB
    runs["sdp"].certified = True
    runs["sdp"].upper += 0.1  # and a gap wider than tol
    failed = {c.name for c in check_instance(C1, C2, "square_loss", runs).checks if not c.passed}
    assert {"sdp lower <= every coupling", "sdp lower >= TLB"} <= failed
    runs = methods.run_methods(C1, C2, "square_loss", settings)
    runs["sdp"].certified, runs["sdp"].lower = True, runs["sdp"].upper - 0.05
    failed = {c.name for c in check_instance(C1, C2, "square_loss", runs).checks if not c.passed}
    assert "certified only when gap <= tol" in failed


def test_sdp_can_be_turned_off(tmp_path):
    report = run_study(["tree"], [4], [0], ["square_loss"], sdp_max_n=0, progress=False)
    assert "sdp" not in {row["method"] for row in report.rows}
    assert "sdp not run" in report.render()


def test_checks_catch_a_wrong_exact_value():
    rng = np.random.default_rng(0)
    C1, C2 = rng.uniform(size=(5, 5)), rng.uniform(size=(5, 5))
    C1, C2 = C1 + C1.T, C2 + C2.T
    runs = methods.run_methods(
        C1, C2, "square_loss", methods.Settings(exact_max_n=5, entropic_max_iter=10)
    )
    runs["exact"].value += 0.1
    verdict = check_instance(C1, C2, "square_loss", runs)
    failed = {c.name for c in verdict.checks if not c.passed}
    assert "exact = brute force over permutations" in failed


def test_brute_helpers_agree_with_definitions():
    C = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert brute_permutation_optimum(C, np.eye(2), 2) == pytest.approx(1.0)
    assert brute_cost(C, np.eye(2), np.full((2, 2), 0.25), 1) == pytest.approx(0.5)


def test_missing_matplotlib_skips_the_figure_with_a_warning(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes the import fail
    with pytest.warns(UserWarning, match="matplotlib"):
        report = run_study(["gram"], [4], [0], ["square_loss"], progress=False, out_dir=tmp_path)
    assert report.ok
    assert (tmp_path / "results.csv").exists() and not (tmp_path / "tightness.png").exists()


def test_bad_study_arguments():
    with pytest.raises(GWInputError, match="unknown families"):
        run_study(["nope"], [4], [0], progress=False)
    with pytest.raises(GWInputError, match="sizes"):
        run_study(["gram"], [1], [0], progress=False)
    with pytest.raises(SystemExit):
        cli.main(["verify", "--families", "nope"])
