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

__all__ = ["MethodRun", "run_methods", "LOWER_ONLY", "SQUARE_ONLY"]

#: methods that only give a lower bound ("sorted" gives the mean-row one with its upper)
LOWER_ONLY = ("flb", "slb", "tlb")
#: methods POT or the theory restricts to the square loss
SQUARE_ONLY = ("cg", "entropic", "rank_one")


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
    """What to run: exact up to ``exact_max_n`` nodes, within ``exact_time_limit`` s."""

    exact_max_n: int = 8
    exact_time_limit: float = 30.0
    entropic_max_iter: int = 200


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


def run_methods(C1, C2, loss: str, settings: Settings) -> dict[str, MethodRun]:
    """Every applicable method on ``(C1, C2)``; exceptions are recorded, not raised."""
    runs = {}
    for name, job in _jobs(C1, C2, loss, settings).items():
        try:
            runs[name] = job()
        except (GWInputError, GWSolverError, ValueError, np.linalg.LinAlgError) as err:
            runs[name] = MethodRun(name, error=f"{type(err).__name__}: {err}")
    return runs
