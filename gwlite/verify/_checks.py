r"""The theorems gwlite states, checked on one instance.

Each check recomputes what it can independently of the code it checks (brute-force
costs over the :math:`n^4` pairs, brute force over permutations for small n, its own
centred eigenvalues, its own gap identities), so that a bug in a shared helper cannot
hide itself.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from gwlite.verify._methods import MethodRun

__all__ = ["Check", "InstanceVerdict", "check_instance"]

# tolerance of the inequalities, relative to the loss scale max|C|^r
INEQ_RTOL = 1e-9
# tolerance of the identities (gap identities, costs of couplings), relative
IDENT_RTOL = 1e-10
# brute force over all permutations up to this size
BRUTE_MAX_N = 8


@dataclass(frozen=True)
class Check:
    """One claim on one instance: its name, the method it is about, and the outcome."""

    name: str
    method: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class InstanceVerdict:
    """Checks of one instance and the reference GW the tightness ratios divide by.

    ``reference`` is the certified exact value when there is one (``reference_kind =
    "exact (certified)"``), else the value the relaxation certified (``"sdp
    (certified)"``), else the best upper bound found (``"best upper (METHOD)"``);
    ``gw_lower`` is the best lower bound, so ``gw_lower <= GW <= reference``.
    """

    checks: list[Check]
    reference: float
    reference_kind: str
    gw_lower: float
    gw_positive: bool


def _loss(d, r: int):
    return d * d if r == 2 else np.abs(d)


def brute_cost(C1: np.ndarray, C2: np.ndarray, T: np.ndarray, r: int) -> float:
    r""":math:`\sum_{ijkl} L(C^1_{ik}, C^2_{jl}) T_{ij} T_{kl}` over the full 4-index tensor."""
    total = 0.0
    for i in range(C1.shape[0]):
        # L[j, k, l] = L(C1[i, k], C2[j, l]) for the fixed row i
        L = _loss(C1[i][None, :, None] - C2[:, None, :], r)
        total += float(np.einsum("j,jkl,kl->", T[i], L, T))
    return total


def brute_permutation_optimum(C1: np.ndarray, C2: np.ndarray, r: int) -> float:
    """Minimum over all ``n!`` permutations of ``mean_ik L(C1_ik, C2_{s(i) s(k)})``."""
    perms = np.array(list(itertools.permutations(range(C1.shape[0]))))
    best = math.inf
    for start in range(0, len(perms), 5040):
        P = perms[start : start + 5040]
        costs = _loss(C1[None] - C2[P[:, :, None], P[:, None, :]], r).mean(axis=(1, 2))
        best = min(best, float(costs.min()))
    return best


def centred_sign(C: np.ndarray) -> str:
    """``"psd"``/``"nsd"``/``"indefinite"`` of ``P C P`` (``P = I - 11^T / n``), own code."""
    n = C.shape[0]
    P = np.eye(n) - 1.0 / n
    lam = np.linalg.eigvalsh(P @ ((C + C.T) / 2) @ P)
    tol = 1e-9 * max(np.abs(lam).max(), 1e-300)
    if lam.min() >= -tol:
        return "psd"
    return "nsd" if lam.max() <= tol else "indefinite"


def _is_permutation(T: np.ndarray) -> np.ndarray | None:
    """The permutation behind ``T`` if ``T`` is a permutation matrix / n, else None."""
    n = T.shape[0]
    if T.shape != (n, n) or not np.allclose(T * n, np.round(T * n), atol=1e-12):
        return None
    P = np.round(T * n)
    if not (np.all(P.sum(axis=0) == 1) and np.all(P.sum(axis=1) == 1)):
        return None
    return np.argmax(P, axis=1)


class _Checker:
    def __init__(self, C1, C2, loss: str, runs: dict[str, MethodRun], expect_certified: bool):
        self.C1, self.C2, self.runs = C1, C2, runs
        self.r = 2 if loss == "square_loss" else 1
        self.n = C1.shape[0]
        self.scale = max(float(np.abs(C1).max()), float(np.abs(C2).max()), 1e-300) ** self.r
        self.tol = INEQ_RTOL * self.scale
        self.expect_certified = expect_certified
        self.out: list[Check] = []
        self._perm_opt: float | None = None
        ok = [run for run in runs.values() if run.error is None]
        self.uppers = {run.method: run.upper for run in ok if np.isfinite(run.upper)}
        self.lowers = {run.method: run.lower for run in ok if np.isfinite(run.lower)}
        self.min_upper = min(self.uppers.values(), default=math.inf)
        self.max_lower = max(self.lowers.values(), default=-math.inf)

    def permutation_optimum_value(self) -> float:
        """Brute force over all permutations, computed once per instance."""
        if self._perm_opt is None:
            self._perm_opt = brute_permutation_optimum(self.C1, self.C2, self.r)
        return self._perm_opt

    def add(self, name: str, method: str, passed: bool, detail: str = "") -> None:
        self.out.append(Check(name, method, bool(passed), detail))

    def errors(self) -> None:
        for run in self.runs.values():
            self.add("method runs", run.method, run.error is None, run.error or "")

    def interval(self) -> None:
        """lower <= GW <= upper: every lower below every upper (GW lies in between)."""
        for method, low in self.lowers.items():
            self.add(
                "lower <= GW",
                method,
                low <= self.min_upper + self.tol,
                f"lower {low:.12g} vs best upper {self.min_upper:.12g}",
            )
        for method, up in self.uppers.items():
            self.add(
                "GW <= upper",
                method,
                up >= self.max_lower - self.tol,
                f"upper {up:.12g} vs best lower {self.max_lower:.12g}",
            )

    def couplings(self) -> None:
        """Every returned coupling is feasible and ``upper`` is exactly its cost."""
        for run in self.runs.values():
            if run.error is not None or run.coupling is None:
                continue
            T = np.asarray(run.coupling, dtype=np.float64)
            target = 1.0 / self.n
            error = max(np.abs(T.sum(1) - target).sum(), np.abs(T.sum(0) - target).sum())
            self.add(
                "coupling feasible",
                run.method,
                error <= 1e-9 and T.min() >= -1e-15,
                f"marginal error {error:.2e}",
            )
            cost = brute_cost(self.C1, self.C2, T, self.r)
            self.add(
                "upper = cost of coupling",
                run.method,
                abs(cost - run.upper) <= IDENT_RTOL * max(self.scale, abs(cost)),
                f"upper {run.upper:.15g} vs brute-force cost {cost:.15g}",
            )

    def dominance(self) -> None:
        """Memoli's TLB dominates FLB, SLB and the mean-row closed form."""
        if "tlb" not in self.lowers:
            return
        for other in ("sorted", "flb", "slb"):
            if other in self.lowers:
                self.add(
                    "TLB >= other lower bounds",
                    other,
                    self.lowers["tlb"] >= self.lowers[other] - self.tol,
                    f"tlb {self.lowers['tlb']:.12g} vs {other} {self.lowers[other]:.12g}",
                )

    def gap_identities(self) -> None:
        run = self.runs.get("sorted")
        if run is None or run.error is not None:
            return
        d = run.diagnostics
        if self.r == 2:
            self._square_gap(run, d)
        else:
            self._abs_gap(run, d)
        self.add(
            "sorted gap bound",
            "sorted",
            run.upper - run.value <= d["gap_bound"] + self.tol,
            f"upper - value {run.upper - run.value:.12g} vs bound {d['gap_bound']:.12g}",
        )

    def _square_gap(self, run: MethodRun, d: dict) -> None:
        size = max(abs(d["feature_cost"]), d["var_C1"], d["var_C2"], 2 * abs(d["cov"]), 1e-300)
        self.add(
            "gap identity (library terms)",
            "sorted",
            abs(d["upper_by_identity"] - run.upper) <= IDENT_RTOL * size,
            f"W2^2 + V1 + V2 - 2 cov = {d['upper_by_identity']:.15g}, upper {run.upper:.15g}",
        )
        perm = _is_permutation(np.asarray(run.coupling))
        if perm is None:
            return
        # the identity recomputed from scratch for the sorted permutation
        C1, C2 = self.C1, self.C2[np.ix_(perm, perm)]
        s1, s2 = C1.mean(axis=1), C2.mean(axis=1)
        h1, h2 = C1 - s1[:, None], C2 - s2[:, None]
        terms = [np.mean((s1 - s2) ** 2), np.mean(h1**2), np.mean(h2**2), np.mean(h1 * h2)]
        identity = terms[0] + terms[1] + terms[2] - 2 * terms[3]
        self.add(
            "gap identity (recomputed)",
            "sorted",
            abs(identity - run.upper) <= IDENT_RTOL * max(max(map(abs, terms)), 1e-300),
            f"identity {identity:.15g} vs upper {run.upper:.15g}",
        )

    def _abs_gap(self, run: MethodRun, d: dict) -> None:
        gap = run.upper - d["feature_cost"]
        if "pos_neg_gap" in d:
            self.add(
                "gap identity (library terms)",
                "sorted",
                abs(gap - d["pos_neg_gap"]) <= IDENT_RTOL * max(self.scale, run.upper),
                f"upper - W1 {gap:.15g} vs pos_neg_gap {d['pos_neg_gap']:.15g}",
            )
        perm = _is_permutation(np.asarray(run.coupling))
        if perm is None:
            return
        R = self.C1 - self.C2[np.ix_(perm, perm)]
        pos, neg = np.clip(R, 0, None).sum(axis=1), np.clip(-R, 0, None).sum(axis=1)
        identity = 2.0 / self.n**2 * np.minimum(pos, neg).sum()
        self.add(
            "gap identity (recomputed)",
            "sorted",
            abs(gap - identity) <= IDENT_RTOL * max(self.scale, run.upper),
            f"upper - W1 {gap:.15g} vs (2/n^2) sum min(P_i, N_i) {identity:.15g}",
        )

    def permutation_optimum(self) -> None:
        run = self.runs.get("exact")
        if run is None or run.error is not None:
            return
        self.add("exact lower <= upper", "exact", run.lower <= run.upper + self.tol)
        if run.converged and self.n <= BRUTE_MAX_N:
            best = self.permutation_optimum_value()
            self.add(
                "exact = brute force over permutations",
                "exact",
                abs(run.value - best) <= IDENT_RTOL * self.scale,
                f"exact {run.value:.15g} vs brute force {best:.15g}",
            )
        if run.diagnostics.get("lower_kind") == "certified":
            signs = {centred_sign(self.C1), centred_sign(self.C2)}
            self.add(
                "certified only under the PSD/NSD theorem",
                "exact",
                signs in ({"psd"}, {"nsd"}),
                f"centred signs {sorted(signs)}",
            )
            for method, up in self.uppers.items():
                self.add(
                    "no coupling beats a certified optimum",
                    method,
                    up >= run.value - self.tol,
                    f"{method} {up:.12g} vs exact {run.value:.12g}",
                )
        if self.expect_certified and run.converged:
            self.add(
                "PSD/PSD and CND/CND pairs are certified",
                "exact",
                run.certified,
                f"diagnostics {run.diagnostics.get('definiteness')}",
            )

    def rank_one(self) -> None:
        run = self.runs.get("rank_one")
        if run is None or run.error is not None:
            return
        residual_upper = run.diagnostics["residual_upper"]
        self.add(
            "rank-one pair contains GW",
            "rank_one",
            run.lower <= self.min_upper + self.tol
            and run.upper >= self.max_lower - self.tol
            and run.upper <= residual_upper + self.tol,
            f"[{run.lower:.12g}, {run.upper:.12g}] (residual upper {residual_upper:.12g}) vs "
            f"known [{self.max_lower:.12g}, {self.min_upper:.12g}]",
        )

    def _below_every_coupling(self, run) -> None:
        """``run.lower`` against the brute-force cost of every coupling found."""
        costs = {
            other.method: brute_cost(self.C1, self.C2, np.asarray(other.coupling, float), self.r)
            for other in self.runs.values()
            if other.error is None and other.coupling is not None
        }
        if self.n <= BRUTE_MAX_N:
            costs["all permutations"] = self.permutation_optimum_value()
        cheapest = min(costs, key=costs.get)
        self.add(
            f"{run.method} lower <= every coupling",
            run.method,
            run.lower <= costs[cheapest] + self.tol,
            f"{run.method} lower {run.lower:.12g} vs {cheapest} {costs[cheapest]:.12g}",
        )

    def rlt(self) -> None:
        """The dual ascent's bound: below every coupling, never below TLB (its first
        iterate), and every iterate below the best plan."""
        run = self.runs.get("rlt")
        if run is None or run.error is not None:
            return
        self._below_every_coupling(run)
        d = run.diagnostics
        if "tlb" in self.lowers and d["history"]:
            self.add(
                "rlt lower >= TLB",
                "rlt",
                d["rlt_bound"] >= self.lowers["tlb"] - self.tol,
                f"ascent bound {d['rlt_bound']:.12g} vs tlb {self.lowers['tlb']:.12g}",
            )
        self.add(
            "every rlt iterate <= upper",
            "rlt",
            max(d["history"], default=-math.inf) <= self.min_upper + self.tol,
            f"largest iterate {max(d['history'], default=-math.inf):.12g} vs "
            f"best upper {self.min_upper:.12g}",
        )

    def sdp(self) -> None:
        """The relaxation's bound against every coupling, TLB and its own certificate."""
        run = self.runs.get("sdp")
        if run is None or run.error is not None:
            return
        d = run.diagnostics
        self._below_every_coupling(run)
        tol = d["tol"] * self.scale
        if "tlb" in self.lowers and d.get("stop_reason") in _SDP_FINISHED:
            self.add(
                "sdp lower >= TLB",
                "sdp",
                d["sdp_bound"] >= self.lowers["tlb"] - tol,
                f"relaxation bound {d['sdp_bound']:.12g} vs tlb {self.lowers['tlb']:.12g}",
            )
        gap = run.upper - run.lower
        self.add(
            "certified only when gap <= tol",
            "sdp",
            not run.certified or gap <= tol * (1 + 1e-12),
            f"certified={run.certified}, gap {gap:.3g}, tol x max|C|^r {tol:.3g}",
        )
        exact = self.runs.get("exact")
        if run.certified and exact is not None and exact.error is None and exact.certified:
            self.add(
                "sdp = exact where both certify",
                "sdp",
                abs(run.value - exact.value) <= tol,
                f"sdp {run.value:.12g} vs exact {exact.value:.12g}",
            )
        if run.certified:
            for method, up in self.uppers.items():
                self.add(
                    "no coupling beats a certified optimum",
                    method,
                    up >= run.lower - self.tol,
                    f"{method} {up:.12g} vs sdp lower {run.lower:.12g}",
                )


# stop reasons after which the relaxation's bound is as good as the solver makes it
_SDP_FINISHED = ("certified", "solver converged", "stalled", "trivial")


def _reference(runs: dict[str, MethodRun], uppers: dict[str, float]) -> tuple[float, str]:
    exact = runs.get("exact")
    if exact is not None and exact.error is None and exact.certified:
        return exact.value, "exact (certified)"
    relaxed = runs.get("sdp")
    if relaxed is not None and relaxed.error is None and relaxed.certified:
        return relaxed.value, "sdp (certified)"
    if not uppers:
        return math.nan, "none"
    method = min(uppers, key=uppers.get)
    return uppers[method], f"best upper ({method})"


def check_instance(
    C1: np.ndarray,
    C2: np.ndarray,
    loss: str,
    runs: dict[str, MethodRun],
    *,
    expect_certified: bool = False,
    non_isomorphic: bool = False,
) -> InstanceVerdict:
    """Check every stated theorem on one instance.

    Parameters
    ----------
    C1, C2 : numpy.ndarray
        The instance (uniform weights, same size).
    loss : {"square_loss", "abs_loss"}
    runs : dict
        :func:`gwlite.verify._methods.run_methods` output.
    expect_certified : bool
        Both matrices come from PSD families or both from CND families (square loss):
        the exact solver must certify its optimum.
    non_isomorphic : bool
        The two graphs are known not to be isomorphic, so GW > 0.
    """
    checker = _Checker(C1, C2, loss, runs, expect_certified)
    checker.errors()
    checker.interval()
    checker.couplings()
    checker.dominance()
    checker.gap_identities()
    checker.permutation_optimum()
    checker.rank_one()
    checker.rlt()
    checker.sdp()
    reference, kind = _reference(runs, checker.uppers)
    positive = non_isomorphic or checker.max_lower > checker.tol
    return InstanceVerdict(checker.out, reference, kind, checker.max_lower, positive)
