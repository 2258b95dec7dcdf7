r"""The methods of fused GW: each returns a :class:`~gwlite.GWResult` whose numbers say what
they provably are.

* ``cg``: POT's conditional gradient (``ot.gromov.fused_gromov_wasserstein``), a local
  optimum; ``entropic``: POT's entropic FGW, its plan rounded onto the polytope
  (Altschuler et al. 2017). For both, ``upper`` is the fused cost of the returned
  (feasible) plan and ``lower`` a bound of :mod:`gwlite.fused_bounds`.
* ``exact``: branch and bound over permutations (:mod:`gwlite.solvers.exact`) with the
  linear term :math:`(1 - \alpha) n M_{i\sigma(i)}` joining the assignment costs, on
  :math:`\alpha^{1/r} C` (so that :math:`L` scales by :math:`\alpha`). The permutation
  optimum is certified as the FGW optimum under the same theorem as for GW (square
  loss, centred matrices both PSD or both NSD): a linear term keeps a concave objective
  concave; otherwise the spectral slack (times :math:`\alpha`) gives a bound over all
  couplings. Proofs in ``docs/theory_fused.md``.
* ``sdp``: the lifted relaxation of ``gwlite.solvers._sdp_model`` with the linear
  term folded into the lifted cost (:math:`\sum_{kl}\pi_{kl} = 1`).
* ``proximal``: the batched KL mirror descent of ``gwlite.solvers.batched`` with the
  linear term, several starts, conditional-gradient polish.
* ``auto``: the fused TLB (a bound and a plan), the conditional gradient from POT's
  start and from the bound's plan, the batched proximal stage, then ``exact`` and
  ``sdp`` when the problem is small, within ``time_limit``.

All run on the host in float64; couplings come back in the caller's array library.

References
----------
T. Vayer, L. Chapel, R. Flamary, R. Tavenard, N. Courty. Optimal transport for
structured data with application on graphs. ICML 2019.
R. Flamary et al. POT: Python Optimal Transport. JMLR 22(78), 2021.
J. Altschuler, J. Weed, P. Rigollet. Near-linear time approximation algorithms for
optimal transport via Sinkhorn iteration. NeurIPS 2017.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from gwlite import _xp
from gwlite.coupling import marginal_error, round_to_polytope
from gwlite.errors import GWInputError, GWSolverError
from gwlite.fused_bounds import FUSED_LOWER_BOUNDS, FusedProblem, best_lower, unit_scale
from gwlite.problem import as_input_array
from gwlite.psd import permutation_certificate
from gwlite.result import GWResult
from gwlite.solvers import exact as exact_lib
from gwlite.solvers import fused_sdp
from gwlite.solvers._common import (
    check_G0,
    nonneg_int,
    one_of,
    optional,
    positive_int,
    with_option_checks,
)
from gwlite.solvers.pot import ENTROPIC_SOLVERS, _call_pot

__all__ = [
    "FUSED_SOLVERS",
    "solve_auto",
    "solve_cg",
    "solve_entropic",
    "solve_exact",
    "solve_proximal",
]

#: default entropic regularisation, relative to the fused loss scale
EPSILON_REL = 0.1
#: ``auto`` runs ``exact`` up to this n (uniform weights, n == m)
AUTO_EXACT_MAX_N = 10
#: ``auto`` runs ``sdp`` up to this n * m
AUTO_SDP_MAX_ENTRIES = 36
#: share of the remaining time ``auto`` gives its proximal stage
AUTO_PROXIMAL_SHARE = 0.5
#: seconds for ``auto`` when no ``time_limit`` is given
DEFAULT_TIME_LIMIT = 10.0

_lower_choice = one_of(FUSED_LOWER_BOUNDS)


# ---------------------------------------------------------------- shared pieces
def _require_square_loss(fp: FusedProblem, method: str) -> None:
    if fp.loss_fun != "square_loss":
        raise GWInputError(
            f"method={method!r} supports loss_fun='square_loss' only (POT's fused solvers); "
            "for 'abs_loss' use method='exact' or 'auto'"
        )


def _check_G0(fp: FusedProblem, G0):
    """``G0`` on the host, checked by the common rule (:func:`check_G0`), or None."""
    if G0 is None:
        return None
    host = _xp.to_numpy(_xp.detach(as_input_array(G0, "G0")))
    return check_G0(fp.gw, host)


def _feasible(fp: FusedProblem, plan: np.ndarray) -> tuple[np.ndarray, float]:
    """A returned plan rounded onto the polytope, and its marginal error before rounding."""
    plan = np.asarray(plan, dtype=np.float64)
    mass = float(plan.sum()) if np.all(np.isfinite(plan)) else math.nan
    if not abs(mass - 1) <= 0.5:
        raise GWSolverError(f"the solver's plan lost its mass ({mass:.3g}): numerical failure")
    error = marginal_error(plan, fp.gw.p, fp.gw.q)
    return round_to_polytope(plan, fp.gw.p, fp.gw.q), error


def _result(
    fp: FusedProblem,
    method: str,
    plan: np.ndarray,
    lower: float,
    *,
    converged: bool,
    n_iter: int,
    marginal_error: float,
    return_coupling: bool,
    diagnostics: dict,
    certified: bool = False,
) -> GWResult:
    """Price ``plan`` (feasible) and report the interval ``[lower, cost(plan)]``."""
    upper = fp.cost(plan)
    lower = min(max(0.0, float(lower)), upper)  # above upper only by round-off
    return GWResult(
        value=upper,
        lower=lower,
        upper=upper,
        coupling=fp.to_like(plan) if return_coupling else None,
        method=method,
        loss_fun=fp.loss_fun,
        converged=bool(converged),
        n_iter=int(n_iter),
        marginal_error=float(marginal_error),
        certified=bool(certified or fp.is_certified(lower, upper)),
        time_s=0.0,
        diagnostics=dict(diagnostics, alpha=fp.alpha),
    )


def _pot_inputs(fp: FusedProblem):
    """POT's inputs divided by exact powers of two (costs by ``k``): see ``unit_scale``."""
    c, k = unit_scale(fp)
    return fp.M / k, fp.gw.C1 / c, fp.gw.C2 / c, k


# ---------------------------------------------------------------- POT's solvers
def _cg_plan(fp: FusedProblem, G0, max_iter, tol_rel, tol_abs, armijo, symmetric):
    """One conditional-gradient run: ``(plan, n_iter, converged, notes)``."""
    import ot

    M, C1, C2, _ = _pot_inputs(fp)
    (plan, log), notes = _call_pot(
        "cg",
        ot.gromov.fused_gromov_wasserstein,
        M,
        C1,
        C2,
        fp.gw.p,
        fp.gw.q,
        loss_fun="square_loss",
        symmetric=symmetric,
        alpha=fp.alpha,
        armijo=armijo,
        G0=G0,
        log=True,
        max_iter=max_iter,
        tol_rel=tol_rel,
        tol_abs=tol_abs,
    )
    n_iter = len(log["loss"]) - 1
    return plan, n_iter, n_iter < max_iter, notes


@with_option_checks(lower=_lower_choice)
def solve_cg(
    fp: FusedProblem,
    *,
    G0=None,
    max_iter: int = 10_000,
    tol_rel: float = 1e-9,
    tol_abs: float = 1e-9,
    armijo: bool = False,
    symmetric: bool | None = None,
    lower: str = "tlb",
    return_coupling: bool = True,
) -> GWResult:
    """Conditional gradient through ``ot.gromov.fused_gromov_wasserstein`` (a local
    optimum from ``G0``, the product ``p q^T`` by default), with the ``lower`` bound."""
    _require_square_loss(fp, "cg")
    G0 = _check_G0(fp, G0)
    plan, n_iter, converged, notes = _cg_plan(fp, G0, max_iter, tol_rel, tol_abs, armijo, symmetric)
    plan, error = _feasible(fp, plan)
    bound = best_lower(fp, (lower,))
    return _result(
        fp,
        "cg",
        plan,
        bound.value,
        converged=converged,
        n_iter=n_iter,
        marginal_error=error,
        return_coupling=return_coupling,
        diagnostics={"lower_kind": lower, "pot_warnings": notes},
    )


solve_cg.imports = ("ot",)


@with_option_checks(solver=one_of(ENTROPIC_SOLVERS), lower=_lower_choice)
def solve_entropic(
    fp: FusedProblem,
    *,
    epsilon: float | None = None,
    G0=None,
    max_iter: int = 1000,
    tol: float = 1e-9,
    solver: str = "PGD",
    symmetric: bool | None = None,
    lower: str = "tlb",
    return_coupling: bool = True,
) -> GWResult:
    """Entropic FGW through ``ot.gromov.entropic_fused_gromov_wasserstein``; ``epsilon`` is
    absolute as in POT (default ``0.1`` times the fused loss scale); the plan is rounded
    onto the polytope before it is priced."""
    import ot

    _require_square_loss(fp, "entropic")
    G0 = _check_G0(fp, G0)
    M, C1, C2, k = _pot_inputs(fp)
    if epsilon is None:
        epsilon = EPSILON_REL * k
    rows, cols = np.nonzero(fp.gw.p > 0)[0], np.nonzero(fp.gw.q > 0)[0]
    # Sinkhorn divides by the weights: solved on the nodes with mass, embedded back
    (plan, log), notes = _call_pot(
        "entropic",
        ot.gromov.entropic_fused_gromov_wasserstein,
        M[np.ix_(rows, cols)],
        C1[np.ix_(rows, rows)],
        C2[np.ix_(cols, cols)],
        fp.gw.p[rows],
        fp.gw.q[cols],
        loss_fun="square_loss",
        epsilon=epsilon / k,
        symmetric=symmetric,
        alpha=fp.alpha,
        G0=None if G0 is None else G0[np.ix_(rows, cols)],
        max_iter=max_iter,
        tol=tol,
        solver=solver,
        log=True,
    )
    full = np.zeros((fp.n, fp.m))
    full[np.ix_(rows, cols)] = plan
    plan, error = _feasible(fp, full)
    errors = [float(e) for e in log.get("err", [])]
    converged = bool(errors) and errors[-1] <= tol
    bound = best_lower(fp, (lower,))
    return _result(
        fp,
        "entropic",
        plan,
        bound.value,
        converged=converged,
        n_iter=10 * max(len(errors) - 1, 0) + 1 if converged else max_iter,
        marginal_error=error,
        return_coupling=return_coupling,
        diagnostics={"lower_kind": lower, "epsilon": epsilon, "pot_warnings": notes},
    )


solve_entropic.imports = ("ot",)


# ---------------------------------------------------------------- proximal (batched)
def _batched(fp: FusedProblem, G0, **options):
    """One fused problem through the batched core (``gwlite.solvers.batched``)."""
    from gwlite.solvers.batched import solve_batch

    return solve_batch([fp.gw], M=[fp.M], alpha=fp.alpha, G0=[G0], **options)[0]


@with_option_checks(
    lower=_lower_choice,
    scheme=one_of(["proximal", "cg"]),
    n_starts=positive_int,
    polish=optional(nonneg_int),
    seed=nonneg_int,
)
def solve_proximal(
    fp: FusedProblem,
    *,
    G0=None,
    n_starts: int = 4,
    epsilon: float | None = None,
    max_iter: int = 300,
    tol: float = 1e-4,
    polish: int | None = None,
    scheme: str = "proximal",
    time_limit: float | None = None,
    seed: int = 0,
    lower: str = "tlb",
    return_coupling: bool = True,
) -> GWResult:
    """gwlite's batched KL mirror descent with the linear term (the gradient gains
    :math:`(1 - \alpha) M`), from several starts, then conditional-gradient polish
    (``gwlite.solvers.batched.solve_batch``; square loss)."""
    _require_square_loss(fp, "proximal")
    G0 = _check_G0(fp, G0)
    res = _batched(
        fp,
        G0,
        n_starts=n_starts,
        epsilon=epsilon,
        max_iter=max_iter,
        tol=tol,
        polish=polish,
        scheme=scheme,
        time_limit=time_limit,
        seed=seed,
    )
    plan, error = _feasible(fp, np.asarray(res.coupling))
    bound = best_lower(fp, (lower,))
    return _result(
        fp,
        "proximal",
        plan,
        max(bound.value, float(res.lower)),
        converged=res.converged,
        n_iter=res.n_iter,
        marginal_error=error,
        return_coupling=return_coupling,
        diagnostics={"lower_kind": lower, "batched": dict(res.diagnostics)},
    )


solve_proximal.imports = ("ot",)


# ---------------------------------------------------------------- exact
@dataclass(frozen=True)
class _Permutation:
    """Outcome of the fused branch and bound, in the problem's units."""

    plan: np.ndarray
    lower: float  # valid over all couplings
    lower_kind: str
    certified: bool
    converged: bool
    nodes: int
    perm: np.ndarray


def _exact_checks(fp: FusedProblem, time_limit, max_nodes) -> None:
    # the GW solver's own refusals (sizes, weights, limits), with their alternatives
    exact_lib._check(fp.gw, time_limit, max_nodes)


def _branch_and_bound(fp: FusedProblem, time_limit, max_nodes) -> _Permutation:
    r"""Permutation optimum of :math:`\mathcal F_\alpha` and a bound over all couplings.

    In units of :math:`n^2`: :math:`\alpha \sum_{ik} L(C_{ik}, D_{\sigma(i)\sigma(k)})
    + (1 - \alpha) n \sum_i M_{i\sigma(i)}`, i.e. GW's search on
    :math:`\alpha^{1/r} C, \alpha^{1/r} D` with a linear term.
    """
    n, r, a = fp.n, fp.exponent, fp.alpha
    deadline = time.perf_counter() + time_limit if time_limit is not None else np.inf
    s = a ** (1.0 / r)
    C, D = s * fp.gw.C1, s * fp.gw.C2
    linear = (1 - a) * n * fp.M
    outcome = exact_lib._search(C, D, r, deadline, max_nodes, linear=linear)
    plan = np.zeros((n, n))
    plan[np.arange(n), outcome.perm] = 1.0 / n
    converged = outcome.stop == "optimal"
    perm_lower = outcome.perm_lower / n**2
    lower, kind, certified = -math.inf, "none", False
    if r == 2 and fp.gw.is_symmetric() and a > 0:
        # the theorem on alpha^(1/2) C, alpha^(1/2) D: its slack already carries alpha
        cert = permutation_certificate(C, D)
        if cert.holds and converged:
            lower, kind, certified = fp.cost(plan), "certified", True
        else:
            lower, kind = perm_lower - (0.0 if cert.holds else cert.slack), "spectral"
    elif a == 0 and converged:
        # linear assignment: a permutation is an optimal vertex of the Birkhoff polytope
        lower, kind, certified = fp.cost(plan), "certified", True
    return _Permutation(plan, lower, kind, certified, converged, outcome.nodes, outcome.perm)


@with_option_checks(lower=_lower_choice)
def solve_exact(
    fp: FusedProblem,
    *,
    time_limit: float | None = None,
    max_nodes: int | None = None,
    lower: str = "tlb",
    return_coupling: bool = True,
) -> GWResult:
    """Optimal permutation by branch and bound with the linear term (uniform weights,
    ``n == m <= 32``; ``time_limit`` or ``max_nodes`` beyond ``n = 12``).

    ``certified`` when the theorem of :mod:`gwlite.solvers.exact` holds (or ``alpha = 0``)
    and the search finished; otherwise ``lower`` is the larger of the ``lower`` bound and
    the spectral bound, ``upper`` the best permutation's cost.
    """
    _exact_checks(fp, time_limit, max_nodes)
    found = _branch_and_bound(fp, time_limit, max_nodes)
    named = best_lower(fp, (lower,))
    bound, kind = (
        (found.lower, found.lower_kind) if found.lower >= named.value else (named.value, lower)
    )
    return _result(
        fp,
        "exact",
        found.plan,
        bound,
        converged=found.converged,
        n_iter=found.nodes,
        marginal_error=0.0,
        return_coupling=return_coupling,
        certified=found.certified,
        diagnostics={
            "lower_kind": kind,
            "nodes": found.nodes,
            "permutation": [int(k) for k in found.perm],
        },
    )


# ---------------------------------------------------------------- auto
@dataclass
class _Best:
    """The interval so far and where each end came from."""

    lower: float = 0.0
    lower_kind: str = "none"
    upper: float = math.inf
    upper_kind: str = "none"
    plan: np.ndarray | None = None
    certified: bool = False
    stages: dict = field(default_factory=dict)

    def offer_plan(self, fp: FusedProblem, name: str, plan: np.ndarray) -> None:
        cost = fp.cost(plan)
        self.stages.setdefault("candidates", {})[name] = cost
        if cost < self.upper:
            self.upper, self.upper_kind, self.plan = cost, name, plan

    def offer_lower(self, name: str, value: float) -> None:
        if value > self.lower:
            self.lower, self.lower_kind = value, name


def _starts(fp: FusedProblem, best: _Best) -> list[tuple[str, np.ndarray | None]]:
    """Conditional-gradient starts: POT's default (product), the bound's plan, the best."""
    starts = [("product", None)]
    if best.plan is not None:
        starts.append((best.upper_kind, best.plan))
    return starts


@with_option_checks(lower=_lower_choice)
def solve_auto(
    fp: FusedProblem,
    *,
    time_limit: float | None = None,
    lower: str = "tlb",
    return_coupling: bool = True,
) -> GWResult:
    """The tightest proven interval within ``time_limit`` (10 s by default): the fused
    bound and its plan, conditional gradient from several starts (square loss), then
    ``exact`` (uniform weights, ``n == m <= 10``) and ``sdp`` (``n m <= 36``, when a conic
    solver is installed), stopping once certified."""
    start = time.perf_counter()
    limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit

    def remaining() -> float:
        return limit - (time.perf_counter() - start)

    best = _Best()
    bound = best_lower(fp, (lower,))
    best.offer_lower(lower, bound.value)
    best.offer_plan(fp, f"{lower}_plan", bound.plan)
    if fp.loss_fun == "square_loss" and fp.alpha > 0:
        for name, G0 in _starts(fp, best):
            if remaining() <= 0:
                break
            plan, _, _, _ = _cg_plan(fp, G0, 10_000, 1e-9, 1e-9, False, None)
            best.offer_plan(fp, f"cg({name})", _feasible(fp, plan)[0])
        if not fp.is_certified(best.lower, best.upper) and remaining() > 0.1:
            # the batched mirror descent from several starts, the best plan among them
            res = _batched(fp, best.plan, time_limit=remaining() * AUTO_PROXIMAL_SHARE)
            best.offer_plan(fp, "proximal", _feasible(fp, np.asarray(res.coupling))[0])
    if fp.is_certified(best.lower, best.upper):
        return _auto_result(fp, best, return_coupling)
    small = fp.gw.uniform and fp.n == fp.m and 1 < fp.n <= AUTO_EXACT_MAX_N
    if small and remaining() > 0.05:
        found = _branch_and_bound(fp, max(remaining() * 0.5, 0.05), None)
        best.offer_plan(fp, "exact", found.plan)
        if found.certified:
            best.offer_lower("exact", best.upper)
            best.certified = True
        else:
            best.offer_lower(f"exact_{found.lower_kind}", found.lower)
    if not best.certified and fp.n * fp.m <= AUTO_SDP_MAX_ENTRIES and remaining() > 0.2:
        if fused_sdp.available():
            res = fused_sdp.relax(fp, remaining(), best.plan)
            best.offer_lower("sdp", res.bound)
            if res.plan is not None:
                best.offer_plan(fp, "sdp_vertex", res.plan)
            # the relaxation's own certification rule (its bound carries the solver's error)
            best.certified = best.upper - best.lower <= fused_sdp.DEFAULT_TOL * fp.scale()
    return _auto_result(fp, best, return_coupling)


def _auto_result(fp: FusedProblem, best: _Best, return_coupling: bool) -> GWResult:
    return _result(
        fp,
        "auto",
        best.plan,
        best.lower,
        converged=True,
        n_iter=0,
        marginal_error=0.0,
        return_coupling=return_coupling,
        certified=best.certified,
        diagnostics={
            "lower_kind": best.lower_kind,
            "upper_kind": best.upper_kind,
            "candidates": best.stages.get("candidates", {}),
        },
    )


solve_auto.imports = ("ot",)

FUSED_SOLVERS = {
    "auto": solve_auto,
    "cg": solve_cg,
    "entropic": solve_entropic,
    "exact": solve_exact,
    "proximal": solve_proximal,
    "sdp": fused_sdp.solve,
}
