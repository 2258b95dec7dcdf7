"""The study loop: families x sizes x seeds x losses, every method, every check."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from gwlite.errors import GWInputError
from gwlite.families import CND_FAMILIES, FAMILIES, PSD_FAMILIES, generate
from gwlite.problem import LOSS_EXPONENTS
from gwlite.solvers import sdp
from gwlite.verify._checks import Check, check_instance
from gwlite.verify._methods import Settings, run_methods

__all__ = ["QUICK", "FULL", "StudyReport", "run_study"]

#: ``--quick``: every family, n = 6 and 8, two seeds, both losses (< 60 s on 2 cores);
#: the relaxation at n = 6 where the exact solver did not certify GW
QUICK = {
    "sizes": (6, 8),
    "seeds": (0, 1),
    "exact_max_n": 8,
    "entropic_max_iter": 100,
    "sdp_max_n": 6,
    "sdp_only_uncertified": True,
}
#: the default study: n up to 12, five seeds; exact up to n = 10, the relaxation up to 8
FULL = {
    "sizes": (6, 8, 10, 12),
    "seeds": (0, 1, 2, 3, 4),
    "exact_max_n": 10,
    "entropic_max_iter": 500,
    "sdp_max_n": 8,
    "sdp_only_uncertified": False,
}


@dataclass
class StudyReport:
    """Everything one study produced.

    Attributes
    ----------
    rows : list of dict
        One row per (instance, method): bounds, time, reference GW, tightness ratios and
        the number of failed checks (the CSV).
    checks : list of dict
        One row per check evaluated: instance, check name, method, passed, detail.
    elapsed_s : float
        Wall-clock time of the study.
    settings : dict
        What was run.
    """

    rows: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0
    settings: dict = field(default_factory=dict)

    @property
    def n_checks(self) -> int:
        return len(self.checks)

    @property
    def violations(self) -> list[dict]:
        """The failed checks."""
        return [c for c in self.checks if not c["passed"]]

    @property
    def n_violations(self) -> int:
        return len(self.violations)

    @property
    def ok(self) -> bool:
        return self.n_violations == 0

    def check_summary(self) -> dict[str, tuple[int, int]]:
        """Check name -> (times evaluated, violations)."""
        out: dict[str, list[int]] = {}
        for c in self.checks:
            entry = out.setdefault(c["check"], [0, 0])
            entry[0] += 1
            entry[1] += not c["passed"]
        return {name: (count, bad) for name, (count, bad) in out.items()}

    def render(self) -> str:
        """The terminal report (tables of tightness, time and checks)."""
        from gwlite.verify._report import render

        return render(self)

    def write(self, out_dir) -> dict[str, str]:
        """Write ``results.csv``, ``checks.csv`` and ``tightness.png`` (atomically)."""
        from gwlite.verify._report import write_outputs

        return write_outputs(self, out_dir)


def _instance(family: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent draws of the family: seeds ``2 seed`` and ``2 seed + 1``."""
    return generate(family, n, 2 * seed)[0], generate(family, n, 2 * seed + 1)[0]


def _non_isomorphic(C1: np.ndarray, C2: np.ndarray) -> bool:
    """True for 0/1 adjacency matrices of non-isomorphic graphs (then GW > 0)."""
    binary = all(np.isin(C, (0.0, 1.0)).all() for C in (C1, C2))
    if not binary:
        return False
    return not nx.is_isomorphic(nx.from_numpy_array(C1), nx.from_numpy_array(C2))


def _rows(meta: dict, runs: dict, verdict) -> list[dict]:
    failed: dict[str, int] = {}
    for check in verdict.checks:
        failed[check.method] = failed.get(check.method, 0) + (not check.passed)
    ref = verdict.reference
    rows = []
    for name, run in runs.items():
        usable = run.error is None and np.isfinite(ref) and ref > 0
        rows.append(
            dict(
                meta,
                method=name,
                lower=run.lower,
                upper=run.upper,
                value=run.value,
                time_s=run.time_s,
                certified=run.certified,
                converged=run.converged,
                reference=ref,
                reference_kind=verdict.reference_kind,
                gw_lower=verdict.gw_lower,
                gw_positive=verdict.gw_positive,
                lower_ratio=run.lower / ref if usable else float("nan"),
                upper_ratio=run.upper / ref if usable else float("nan"),
                violations=failed.get(name, 0),
                error=run.error or "",
            )
        )
    return rows


def _check_rows(meta: dict, checks: list[Check]) -> list[dict]:
    return [
        dict(meta, check=c.name, method=c.method, passed=c.passed, detail=c.detail) for c in checks
    ]


def _validate(families, sizes, seeds, losses) -> None:
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise GWInputError(f"unknown families {unknown}; choose from {sorted(FAMILIES)}")
    if any(int(n) < 2 for n in sizes):
        raise GWInputError(f"sizes must be >= 2, got {list(sizes)}")
    bad = sorted(set(losses) - set(LOSS_EXPONENTS))
    if bad:
        raise GWInputError(f"unknown losses {bad}; choose from {sorted(LOSS_EXPONENTS)}")
    if not (families and sizes and seeds and losses):
        raise GWInputError("families, sizes, seeds and losses must each be non-empty")


def run_study(
    families=None,
    sizes=None,
    seeds=None,
    losses=None,
    *,
    quick: bool = False,
    exact_max_n: int | None = None,
    exact_time_limit: float = 30.0,
    sdp_max_n: int | None = None,
    sdp_time_limit: float = 60.0,
    out_dir=None,
    progress: bool = True,
) -> StudyReport:
    """Run every method on every instance and check every theorem.

    Parameters
    ----------
    families : sequence of str, optional
        Keys of :data:`gwlite.families.FAMILIES` (default: all). Each instance pairs two
        independent draws of one family.
    sizes, seeds : sequence of int, optional
        Defaults from :data:`QUICK` or :data:`FULL`.
    losses : sequence of str, optional
        Default both ``"square_loss"`` and ``"abs_loss"`` (CG, entropic and the rank-one
        pair are square-loss only).
    quick : bool
        Use the :data:`QUICK` defaults.
    exact_max_n : int, optional
        Run ``method="exact"`` up to this size (default 8 quick, 10 full).
    exact_time_limit : float
        Per-instance limit of the exact solver, seconds.
    sdp_max_n : int, optional
        Run ``method="sdp"`` up to this size (default 6 quick, only where the exact solver
        did not certify GW; 8 full, everywhere). Skipped when its conic solver is not
        installed (``gwlite[certify]``); 0 turns it off.
    sdp_time_limit : float
        Per-instance limit of the relaxation, seconds.
    out_dir : path, optional
        Write the CSVs and the figure there.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    StudyReport
        ``report.ok`` is False when any check failed.
    """
    defaults = QUICK if quick else FULL
    families = tuple(FAMILIES) if families is None else tuple(families)
    sizes = tuple(defaults["sizes"] if sizes is None else sizes)
    seeds = tuple(defaults["seeds"] if seeds is None else seeds)
    losses = tuple(("square_loss", "abs_loss") if losses is None else losses)
    _validate(families, sizes, seeds, losses)
    settings = Settings(
        exact_max_n=defaults["exact_max_n"] if exact_max_n is None else exact_max_n,
        exact_time_limit=exact_time_limit,
        entropic_max_iter=defaults["entropic_max_iter"],
        sdp_max_n=defaults["sdp_max_n"] if sdp_max_n is None else sdp_max_n,
        sdp_time_limit=sdp_time_limit,
        sdp_only_uncertified=defaults["sdp_only_uncertified"],
    )
    report = StudyReport(
        settings=dict(
            families=families,
            sizes=sizes,
            seeds=seeds,
            losses=losses,
            sdp_installed=sdp.available(),
            **vars(settings),
        )
    )
    grid = [(f, n, s) for f in families for n in sizes for s in seeds]
    start = time.perf_counter()
    for family, n, seed in _progress(grid, progress):
        C1, C2 = _instance(family, int(n), int(seed))
        distinct = _non_isomorphic(C1, C2)
        for loss in losses:
            meta = dict(family=family, n=int(n), seed=int(seed), loss=loss)
            runs = run_methods(C1, C2, loss, settings)
            same_kind = family in PSD_FAMILIES or family in CND_FAMILIES
            verdict = check_instance(
                C1,
                C2,
                loss,
                runs,
                expect_certified=same_kind and loss == "square_loss",
                non_isomorphic=distinct,
            )
            report.rows.extend(_rows(meta, runs, verdict))
            report.checks.extend(_check_rows(meta, verdict.checks))
    report.elapsed_s = time.perf_counter() - start
    if out_dir is not None:
        report.settings["outputs"] = report.write(out_dir)
    return report


def _progress(grid, enabled: bool):
    if not enabled:
        return grid
    from tqdm import tqdm

    return tqdm(grid, desc="gwlite verify", unit="instance")
