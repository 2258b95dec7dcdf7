"""Run every gwlite method on one instance and keep what the checks need."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gwlite.api import gromov_wasserstein
from gwlite.bounds import lower_bound
from gwlite.errors import GWInputError, GWSolverError
from gwlite.psd import rank_one_bounds
from gwlite.solvers import sdp

__all__ = ["MethodRun", "run_methods", "LOWER_ONLY", "SQUARE_ONLY"]

#: methods that only give a lower bound ("sorted" gives the mean-row one with its upper)
LOWER_ONLY = ("flb", "slb", "tlb")
#: methods POT or the theory restricts to the square loss
SQUARE_ONLY = ("cg", "entropic", "rank_one", "proximal")


@dataclass
class MethodRun:
    """One method on one instance: its bounds, time and (when it has one) coupling.

    ``lower``/``upper`` are NaN where the method gives no such bound; ``error`` holds
    the message of an exception (the run then counts as a violation).
    """

    method: str
    lower: float = float("nan")
    upper: float = float("nan")
    value: float = float("nan")
    time_s: float = 0.0
    certified: bool = False
    converged: bool = True
    coupling: Any = None
    diagnostics: dict = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Settings:
    """What to run: exact up to ``exact_max_n`` nodes, within ``exact_time_limit`` s;
    the semidefinite relaxation up to ``sdp_max_n`` nodes (when its solver is
    installed), within ``sdp_time_limit`` s, skipped where the exact solver already
    certified GW when ``sdp_only_uncertified``; the RLT dual ascent for
    ``rlt_max_iter`` iterations at most."""

    exact_max_n: int = 8
    exact_time_limit: float = 30.0
    entropic_max_iter: int = 200
    sdp_max_n: int = 0
    sdp_time_limit: float = 60.0
    sdp_only_uncertified: bool = False
    rlt_max_iter: int = 100


def _from_result(method: str, res) -> MethodRun:
    return MethodRun(
        method=method,
        lower=float(res.lower),
        upper=float(res.upper),
        value=float(res.value),
        time_s=float(res.time_s),
        certified=bool(res.certified),
        converged=bool(res.converged),
        coupling=res.coupling,
        diagnostics=dict(res.diagnostics),
    )


def _timed_lower(C1, C2, loss: str, kind: str) -> MethodRun:
    start = time.perf_counter()
    value = float(lower_bound(C1, C2, loss_fun=loss, lower=kind))
    return MethodRun(kind, lower=value, value=value, time_s=time.perf_counter() - start)


def _rank_one(C1, C2) -> MethodRun:
    start = time.perf_counter()
    r = rank_one_bounds(C1, C2)
    return MethodRun(
        "rank_one",
        lower=r.lower,
        upper=r.upper,
        value=r.closed_form,
        time_s=time.perf_counter() - start,
        coupling=r.coupling,
        diagnostics={"residual_upper": r.residual_upper, "residual": r.residual},
    )


def _jobs(C1, C2, loss: str, settings: Settings) -> dict:
    n = C1.shape[0]
    scale = max(float(np.abs(C1).max()), float(np.abs(C2).max()), 1e-12)
    jobs = {
        "sorted": lambda: _from_result(
            "sorted", gromov_wasserstein(C1, C2, method="sorted", loss_fun=loss)
        ),
        **{kind: (lambda k=kind: _timed_lower(C1, C2, loss, k)) for kind in LOWER_ONLY},
    }
    if n <= settings.exact_max_n:
        jobs["exact"] = lambda: _from_result(
            "exact",
            gromov_wasserstein(
                C1, C2, method="exact", loss_fun=loss, time_limit=settings.exact_time_limit
            ),
        )
    if loss == "square_loss":
        jobs["cg"] = lambda: _from_result("cg", gromov_wasserstein(C1, C2, method="cg"))
        jobs["proximal"] = lambda: _from_result(
            "proximal", gromov_wasserstein(C1, C2, method="proximal", n_starts=4)
        )
        # epsilon is absolute in POT: tie it to the scale of the entries
        jobs["entropic"] = lambda: _from_result(
            "entropic",
            gromov_wasserstein(
                C1,
                C2,
                method="entropic",
                epsilon=0.01 * scale**2,
                max_iter=settings.entropic_max_iter,
                tol=1e-8,
            ),
        )
        jobs["rank_one"] = lambda: _rank_one(C1, C2)
    return jobs


def _best_plan(runs: dict[str, MethodRun]):
    """The coupling of the cheapest upper bound found so far (None if none)."""
    with_plan = [r for r in runs.values() if r.error is None and r.coupling is not None]
    return min(with_plan, key=lambda r: r.upper).coupling if with_plan else None


def _sdp_job(C1, C2, loss: str, settings: Settings, runs: dict[str, MethodRun]):
    """``method="sdp"`` started from the best coupling the other methods found."""
    n = C1.shape[0]
    if n > settings.sdp_max_n or n * n > sdp.DEFAULT_MAX_SIZE or not sdp.available():
        return None
    exact = runs.get("exact")
    if settings.sdp_only_uncertified and exact is not None and exact.certified:
        return None
    return lambda: _from_result(
        "sdp",
        gromov_wasserstein(
            C1,
            C2,
            method="sdp",
            loss_fun=loss,
            G0=_best_plan(runs),
            time_limit=settings.sdp_time_limit,
        ),
    )


def _rlt_job(C1, C2, loss: str, settings: Settings, runs: dict[str, MethodRun]):
    """``method="rlt"`` started from the best coupling the other methods found."""
    return lambda: _from_result(
        "rlt",
        gromov_wasserstein(
            C1, C2, method="rlt", loss_fun=loss, G0=_best_plan(runs), max_iter=settings.rlt_max_iter
        ),
    )


def _attempt(name: str, job) -> MethodRun:
    try:
        return job()
    except (GWInputError, GWSolverError, ValueError, np.linalg.LinAlgError) as err:
        return MethodRun(name, error=f"{type(err).__name__}: {err}")


def run_methods(C1, C2, loss: str, settings: Settings) -> dict[str, MethodRun]:
    """Every applicable method on ``(C1, C2)``; exceptions are recorded, not raised.

    ``rlt`` and then ``sdp`` run last: they start from the best coupling of the others.
    """
    runs = {name: _attempt(name, job) for name, job in _jobs(C1, C2, loss, settings).items()}
    runs["rlt"] = _attempt("rlt", _rlt_job(C1, C2, loss, settings, runs))
    job = _sdp_job(C1, C2, loss, settings, runs)
    if job is not None:
        runs["sdp"] = _attempt("sdp", job)
    return runs
