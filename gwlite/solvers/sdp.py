r"""``method="sdp"``: certified global GW for small general inputs, by a semidefinite relaxation.

The lifted relaxation of Chen, Nguyen, Koh & Soh (2024) replaces :math:`x x^\top`,
:math:`x = \operatorname{vec}(\pi)`, by a matrix :math:`P` with

.. math::

    \begin{pmatrix} 1 & x^\top \\ x & P \end{pmatrix} \succeq 0,\quad P \ge 0,\quad
    \sum_j x_{ij} = p_i,\ \sum_i x_{ij} = q_j,\quad
    \sum_l P_{(ij),(kl)} = p_k x_{ij},\ \sum_k P_{(ij),(kl)} = q_l x_{ij},

and minimises :math:`\sum L(C^1_{ik}, C^2_{jl}) P_{(ij),(kl)}`, for any loss, weights and
sizes. Every coupling is feasible (with :math:`P = xx^\top`), so the optimum is at most
GW, and each block :math:`P_{(ij),\cdot}` is a coupling of :math:`x_{ij}p` and
:math:`x_{ij}q`, so it is at least Memoli's TLB.

What gwlite adds to the relaxation:

* **a rigorous lower bound**, never the solver's printed objective: from the solver's
  multipliers, made feasible (clipped at 0) and completed by the multipliers of the
  lifted constraints, the bound is the dual objective minus :math:`T \max(0,
  -\lambda_{\min}(S))` with :math:`T = 1 + \min(\|p\|^2, \|q\|^2) \ge \operatorname{tr} Z`
  and :math:`\lambda_{\min}` bounded below with a proven margin for round-off. It is a
  lower bound whatever the solver's status (early stop, loose tolerance, time limit);
* **structure**: the lifted marginal constraints confine the range of :math:`Z` to a
  subspace of dimension :math:`(n-1)(m-1)+1`; the solver works there (facial
  reduction), with sparse constraint matrices and the redundant constraints dropped;
* **a solver by size**: SCS up to :math:`nm = 100`; above, ADMM on the dense lifted
  matrix (``gwlite.solvers._sdp_admm``, Oliveira, Wolkowicz and Xu 2018), whose
  every multiplier is certified the same way (a box on the coupling's entries pays for
  its sign errors), with ``time_limit`` checked after each iteration;
* **the upper side**: the first moment :math:`x` rounded onto the polytope and snapped to
  the nearest vertex, polished by conditional gradient (square loss), the permutation
  optimum of ``method="exact"`` (uniform weights, :math:`n = m`) and an optional start
  ``G0``; ``upper`` is the cheapest, ``certified`` when
  ``upper - lower <= tol * max|C|^r``.

Proofs: ``docs/theory_sdp.md``.

References
----------
J. Chen, B. T. Nguyen, S. H. Koh, Y. S. Soh. Semidefinite relaxations of the
Gromov-Wasserstein distance. NeurIPS 2024.
B. O'Donoghue, E. Chu, N. Parikh, S. Boyd. Conic optimization via operator splitting and
homogeneous self-dual embedding. J. Optim. Theory Appl. 169 (2016) (SCS).
P. J. Goulart, Y. Chen. Clarabel: an interior-point solver for conic programs with
quadratic objectives. arXiv:2405.12762 (2024).
D. E. Oliveira, H. Wolkowicz, Y. Xu. ADMM for the SDP relaxation of the QAP. Math. Prog.
Comp. 10 (2018) 631-658.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import time
from dataclasses import dataclass, field

import numpy as np

from gwlite import _xp
from gwlite.coupling import gw_cost, marginal_error
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem
from gwlite.result import GWResult
from gwlite.solvers import _sdp_admm, _sdp_conic
from gwlite.solvers import _sdp_model as model_lib
from gwlite.solvers._common import clamp_lower, is_certified, lower_value, result_scalars
from gwlite.solvers._upper import Incumbent, first_candidates, host, start_plan, support, support_of

__all__ = [
    "ADMM_MAX_ITER",
    "ADMM_MAX_SIZE",
    "AUTO_MIN_ITERATIONS",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_TOL",
    "SOLVERS",
    "available",
    "estimate_seconds",
    "fits_budget",
    "solve",
]

#: largest ``n * m`` (nodes with positive weight) given to a conic solver (SCS, Clarabel)
#: without ``max_size=``: about a minute on two cores; the cost grows like
#: :math:`(nm)^3`-:math:`(nm)^{4.5}`, and SCS's set-up cannot be interrupted
DEFAULT_MAX_SIZE = 100
#: largest ``n * m`` given to ``solver="admm"`` without ``max_size=``: about ten dense
#: arrays of order ``nm + 1`` (1.3 GB at 4,096)
ADMM_MAX_SIZE = 4096
#: ADMM iterations at most (``max_iter``'s default for ``solver="admm"``)
ADMM_MAX_ITER = 20_000
#: default certification tolerance: ``upper - lower <= tol * max|C|^r``
DEFAULT_TOL = 1e-6
#: solvers of the relaxation, each with the module that provides it
SOLVERS = {"scs": "scs", "clarabel": "clarabel", "admm": "numpy"}
# the conic solver is asked for this fraction of ``tol`` (its residuals enter the bound)
_SOLVER_TOL_FACTOR = 1e-3
# total SCS iterations (about a minute and a half at n * m = 100 on two cores)
_MAX_ITER = 25_000
# share of the time left kept for polishing the ADMM's plan
_POLISH_SHARE = 0.05
# "stalled" (see _stop_reason): the certified bound gains less than _STALL_RTOL of the
# remaining gap in each of the last two chunks and the eigenvalue correction is below
# _STALL_CORRECTION of it: the relaxation, not the solver's accuracy, sets the interval
_STALL_RTOL = 1e-2
_STALL_CORRECTION = 0.05
# progress bar from this n * m on (runs of several seconds)
_PROGRESS_MIN_SIZE = 81


def available(solver: str = "scs") -> bool:
    """True when the solver ``solver`` (``"scs"``, ``"clarabel"`` or ``"admm"``, which
    needs only NumPy) is importable."""
    return solver in SOLVERS and importlib.util.find_spec(SOLVERS[solver]) is not None


def estimate_seconds(n: int, m: int, iterations: int = 1) -> float:
    """Seconds for ``iterations`` ADMM iterations and one certificate on an ``n x m``
    problem (measured on two busy cores, one BLAS thread)."""
    return _sdp_admm.estimate_seconds(n, m, iterations)


#: ``method="auto"`` runs ADMM above its conic size when this many iterations (and a
#: certificate) are estimated to fit in its budget
AUTO_MIN_ITERATIONS = 300


def fits_budget(n: int, m: int, seconds: float) -> bool:
    """Whether ``auto`` should run ``solver="admm"`` on an ``n x m`` problem with ``seconds``
    left: within :data:`ADMM_MAX_SIZE` and :data:`AUTO_MIN_ITERATIONS` iterations estimated
    to fit (a longer ``time_limit`` admits larger problems)."""
    return n * m <= ADMM_MAX_SIZE and estimate_seconds(n, m, AUTO_MIN_ITERATIONS) <= seconds


def _choose_solver(solver, size: int) -> str:
    """``solver=None``: SCS up to :data:`DEFAULT_MAX_SIZE` when installed, else ADMM."""
    if solver is not None:
        return solver
    return "scs" if size <= DEFAULT_MAX_SIZE and available("scs") else "admm"


# ---------------------------------------------------------------- checks
def _check_options(problem: GWProblem, solver, time_limit, max_size, tol, max_iter) -> int:
    """Refuse bad options before any work; returns the size limit."""
    if max_iter is not None and not (
        _is_number(max_iter) and float(max_iter).is_integer() and max_iter >= 1
    ):
        raise GWInputError(f"max_iter must be a positive integer, got {max_iter!r}")
    if solver not in SOLVERS:
        raise GWInputError(
            f"unknown solver {solver!r} for method='sdp'; choose one of {list(SOLVERS)}"
        )
    if not available(solver):
        raise GWInputError(
            f"method='sdp' with solver={solver!r} needs the conic solver "
            f"{SOLVERS[solver]!r}: pip install {SOLVERS[solver]} (gwlite's 'certify' extra). "
            "Without it, "
            "method='exact' (uniform weights, n == m) or method='sorted' with lower='tlb' "
            "give proven bounds"
        )
    if problem.batch_shape:
        raise GWInputError("method='sdp' takes one pair of matrices, not a batch")
    if time_limit is not None and not (_is_number(time_limit) and time_limit > 0):
        raise GWInputError(f"time_limit must be a number of seconds > 0, got {time_limit!r}")
    if not (_is_number(tol) and 0 < tol < 1):
        raise GWInputError(f"tol must be a number in (0, 1), got {tol!r}")
    if max_size is None:
        return ADMM_MAX_SIZE if solver == "admm" else DEFAULT_MAX_SIZE
    if not (_is_number(max_size) and float(max_size).is_integer() and max_size >= 1):
        raise GWInputError(f"max_size must be a positive integer, got {max_size!r}")
    return int(max_size)


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise GWInputError(
            f"method='sdp' builds a semidefinite program over n * m = {size} coupling "
            f"entries, above max_size={limit} (the defaults: {DEFAULT_MAX_SIZE} for the conic "
            f"solvers, about a minute; {ADMM_MAX_SIZE} for solver='admm', whose iterations "
            "cost (n m)^3). Pass max_size=N to run it anyway (with time_limit=SECONDS to stop "
            "early with a valid bound), or use "
            "method='exact' (uniform weights, n == m), method='cg' (an upper bound) or "
            "method='sorted' with lower='tlb' (a proven interval)"
        )


def _warn_uninterruptible(solver: str, size: int, time_limit) -> None:
    """A conic solver above its default size with a time limit: its set-up (factorising
    a system with ~(nm)^2 / 2 rows) runs to its end whatever the limit."""
    if solver == "admm" or time_limit is None or size <= DEFAULT_MAX_SIZE:
        return
    import warnings

    warnings.warn(
        f"method='sdp' with solver={solver!r} at n * m = {size}: the solver's set-up cannot "
        "be interrupted and may overrun time_limit by minutes (475 s against 120 s was "
        "measured at n * m = 420); solver='admm' checks the limit after every iteration",
        UserWarning,
        stacklevel=3,
    )


def _power_of_two_scale(C1: np.ndarray, C2: np.ndarray) -> float:
    """A power of two >= max|C| (scaling by it is exact in floating point)."""
    top = max(float(np.abs(C1).max()), float(np.abs(C2).max()))
    return 1.0 if top == 0 else float(2.0 ** math.ceil(math.log2(top)))


# ---------------------------------------------------------------- the relaxation
@dataclass
class _Run:
    """The relaxation's outcome: the last iterate and its certificate."""

    iterate: _sdp_conic.Iterate | None = None
    certificate: model_lib.DualCertificate | None = None
    bound: float = -math.inf  # certified, in the problem's units
    stop: str = "not run"
    best_iteration: int = 0  # the iterate whose multipliers gave ``bound``
    times: dict = field(default_factory=dict)
    x: np.ndarray | None = None  # the last first moment, full size
    model: model_lib.SDPModel | None = None
    factor: float = 1.0  # the relaxation is solved on C / s: bounds scale by s^r


def _relax(
    problem, incumbent, data_in, solver, tol, remaining, other_lower: float, max_iter
) -> _Run:
    """Solve the relaxation until certified, converged, stalled or out of time.

    ``other_lower`` is the best bound proved without it (TLB, exact's): once it meets
    the incumbent, the answer is certified and the relaxation stops too.
    """
    C1, C2, p, q, rows, cols = data_in
    r = problem.exponent
    scale = _power_of_two_scale(C1, C2)
    factor = scale**r  # exact: a power of two
    t0 = time.perf_counter()
    model = model_lib.build_model(C1 / scale, C2 / scale, p, q, r)
    data = model_lib.conic_data(model, solver)
    t1 = time.perf_counter()
    nonneg = data[3][1]
    budget = None if remaining() == math.inf else max(remaining(), 1e-3)
    iterates = _sdp_conic.ITERATES[solver](data, tol * _SOLVER_TOL_FACTOR, budget)
    target = tol * max(float(np.abs(C1).max()), float(np.abs(C2).max())) ** r
    run, bounds, certify_s = _Run(model=model, factor=factor), [], 0.0
    bar = _progress(model.n * model.m)
    for iterate in iterates:
        t = time.perf_counter()
        run.iterate = iterate
        cert = model_lib.certify(model, -iterate.z[0], iterate.z[1 : 1 + nonneg])
        if run.certificate is None or cert.bound * factor > run.bound:
            run.certificate, run.bound = cert, cert.bound * factor
            run.best_iteration = iterate.iterations
        x = np.zeros((problem.n, problem.m))
        x[np.ix_(rows, cols)] = model_lib.moment(model, iterate.x)
        incumbent.offer_vertex("moment_vertex", x)
        certify_s += time.perf_counter() - t
        gap = incumbent.cost - run.bound
        if bar is not None:
            bar.update(iterate.iterations - bar.n)
            bar.set_postfix(gap=f"{gap:.2e}")
        bounds.append(run.bound)
        stop = _stop_reason(
            bounds, gap, target, iterate, remaining(), cert.correction * factor, max_iter
        )
        if stop is None and incumbent.cost - other_lower <= target:
            stop = "certified by another bound"
        if stop:
            run.stop = stop
            break
    if bar is not None:
        bar.close()
    run.x = x
    run.times = dict(
        build_time_s=t1 - t0,
        solve_time_s=time.perf_counter() - t1 - certify_s,
        certify_time_s=certify_s,
    )
    return run


def _stop_reason(
    bounds: list[float],
    gap: float,
    target: float,
    iterate,
    remaining: float,
    correction: float,
    max_iter: int | None = None,
):
    """Why to stop after this chunk (None: go on).

    Besides certification, the solver's own convergence and the limits: *stalled* when
    the certified bound rose by less than ``_STALL_RTOL`` of the remaining gap in each
    of the last two chunks while the last iterate's eigenvalue correction is below
    ``_STALL_CORRECTION`` of the gap: the multipliers are accurate enough that the
    relaxation itself, not the solver, limits the answer.
    """
    if gap <= target:
        return "certified"
    if iterate.converged:
        return "solver converged"
    if remaining <= 0:
        return "time limit"
    if iterate.iterations >= (_MAX_ITER if max_iter is None else max_iter):
        return "max_iter"
    flat = len(bounds) >= 3 and all(
        bounds[-k] - bounds[-k - 1] <= _STALL_RTOL * gap for k in (1, 2)
    )
    if flat and correction <= _STALL_CORRECTION * gap:
        return "stalled"
    return None


def _progress(size: int):
    """A progress bar for the long runs (shown on terminals only)."""
    if size < _PROGRESS_MIN_SIZE:
        return None
    from tqdm import tqdm

    return tqdm(desc="gwlite sdp", unit="it", leave=False, disable=None)


@dataclass(frozen=True)
class _ADMMOutcome:
    """What ``solve`` needs from an ADMM run (bounds in the problem's units)."""

    bound: float
    stop: str
    x: np.ndarray
    diagnostics: dict


def _relax_admm(problem, incumbent, data_in, tol, remaining, other_lower, max_iter):
    """ADMM on the relaxation (:mod:`gwlite.solvers._sdp_admm`), started from the best
    plan at hand and certified along the way."""
    C1, C2, p, q, rows, cols = data_in
    r = problem.exponent
    scale = _power_of_two_scale(C1, C2)
    factor = scale**r  # exact: a power of two
    t0 = time.perf_counter()
    raw = model_lib.lifted_cost(C1 / scale, C2 / scale, r)
    model = _sdp_admm.build((raw + raw.T) / 2, (np.abs(raw) + np.abs(raw.T)) / 2, p, q)
    del raw
    start = None if incumbent.plan is None else incumbent.plan[np.ix_(rows, cols)]
    state = _sdp_admm.initial_state(model, start)
    t1 = time.perf_counter()
    target = tol * max(float(np.abs(C1).max()), float(np.abs(C2).max())) ** r
    bar = _admm_progress()

    def on_bound(iteration: int, best: float, x: np.ndarray) -> float:
        full = np.zeros((problem.n, problem.m))
        full[np.ix_(rows, cols)] = x.reshape(len(p), len(q))
        incumbent.offer_vertex("moment_vertex", full)
        gap = incumbent.cost - max(best * factor, other_lower)
        bar.update(iteration - bar.n)
        bar.set_postfix(gap=f"{gap:.2e}", refresh=False)
        return gap / factor

    deadline = time.perf_counter() + (1 - _POLISH_SHARE) * remaining()
    run = _sdp_admm.run(
        model,
        state,
        max_iter=ADMM_MAX_ITER if max_iter is None else int(max_iter),
        deadline=deadline,
        target=target / factor,
        on_bound=on_bound,
    )
    bar.close()
    full = np.zeros((problem.n, problem.m))
    full[np.ix_(rows, cols)] = run.x
    diagnostics = dict(
        status=run.stop,
        stop_reason=run.stop,
        iterations=run.iterations,
        history=[(it, b * factor) for it, b in run.history],
        admm_beta=run.beta,
        admm_rank=run.rank,
        primal_residual=run.primal_residual,
        sdp_order=model.order,
        build_time_s=t1 - t0,
        solve_time_s=run.iterate_time_s,
        certify_time_s=run.certify_time_s,
        **_certificate_diagnostics(run.certificate, factor),
    )
    return _ADMMOutcome(run.bound * factor, run.stop, full, diagnostics)


def _admm_progress():
    """An iteration bar that appears once the run has taken 2 s (terminals only)."""
    from tqdm import tqdm

    return tqdm(desc="gwlite sdp (admm)", unit="it", delay=2.0, leave=False, disable=None)


def _certificate_diagnostics(cert, f: float) -> dict:
    """The certificate's parts in the problem's units (NaN when none was computed)."""
    if cert is None:
        keys = ("dual_value", "lambda_min", "eigenvalue_correction", "eigen_error")
        keys += ("slack_error", "trace_bound", "clipped_multipliers")
        return dict.fromkeys(keys, math.nan)
    return dict(
        dual_value=cert.dual_value * f,
        lambda_min=cert.lambda_min * f,
        eigenvalue_correction=cert.correction * f,
        eigen_error=cert.eig_error * f,
        slack_error=cert.slack_error * f,
        trace_bound=cert.trace_bound,
        clipped_multipliers=cert.clipped * f,
    )


# ---------------------------------------------------------------- public solver
def solve(
    problem: GWProblem,
    *,
    lower: str = "tlb",
    G0=None,
    time_limit: float | None = None,
    max_size: int | None = None,
    tol: float = DEFAULT_TOL,
    solver: str | None = None,
    max_iter: int | None = None,
    return_coupling: bool = True,
) -> GWResult:
    r"""Global GW with a certificate, from the lifted semidefinite relaxation.

    Parameters
    ----------
    problem : GWProblem
        Any loss, weights and sizes (``n * m <= max_size``).
    lower : {"tlb", "mean_row", "flb", "slb", "rank_one"}
        A sorting bound computed alongside. ``lower`` reports the largest of it, the
        relaxation's certified bound (which dominates TLB in exact arithmetic) and the
        bound ``method="exact"`` proves on the way (uniform weights, ``n == m``: the
        optimum itself on PSD/PSD and CND/CND pairs).
    G0 : array ``(n, m)``, optional
        A coupling of ``p`` and ``q`` to try on the upper side (e.g. the best plan of
        another method); ``solver="admm"`` also starts from the best plan at hand.
    time_limit : float, optional
        Seconds for the whole call. When the solver is stopped by it, the bound built
        from its last certified iterate is still a valid lower bound (often weaker).
        ADMM is checked after every iteration and stops early enough to certify its
        last iterate; SCS's set-up (factorising its linear system) cannot be
        interrupted, which is why it is not the default above :data:`DEFAULT_MAX_SIZE`.
    max_size : int, optional
        Largest ``n * m`` accepted (nodes with positive weight); default
        :data:`DEFAULT_MAX_SIZE` (100, about a minute on two cores) for the conic
        solvers, :data:`ADMM_MAX_SIZE` (4,096) for ``solver="admm"``.
    tol : float
        ``certified`` when ``upper - lower <= tol * max(max|C1|, max|C2|)^r``; the conic
        solver is asked for ``tol / 1000`` and stopped as soon as the result is certified.
    solver : {None, "scs", "clarabel", "admm"}
        How the relaxation is solved. ``None`` (default): SCS up to
        :data:`DEFAULT_MAX_SIZE` when installed, else ADMM. ``"scs"``: conic operator
        splitting on the facially reduced program (cheap iterations, run in warm-started
        chunks with the certificate checked after each; its non-negativity rows grow
        like :math:`(nm)^2`). ``"clarabel"``: interior point (fewer, much costlier
        iterations; on these degenerate programs its multipliers stall near
        :math:`10^{-6}` accuracy). ``"admm"``: the splitting of Oliveira, Wolkowicz and
        Xu (2018) on the dense lifted matrix, one eigendecomposition of order
        :math:`nm + 1` per iteration, no set-up; every multiplier gives a proven bound
        (``docs/theory_sdp.md``, section 5). NumPy only.
    max_iter : int, optional
        Iterations at most: SCS's total (default 25,000) or ADMM's (default
        :data:`ADMM_MAX_ITER`); Clarabel ignores it.
    return_coupling : bool
        Return the best coupling found (in the input's array type).

    Returns
    -------
    GWResult
        ``value = upper``: the GW cost of the best coupling found; ``lower``: the
        largest proven bound (``diagnostics["lower_kind"]``: ``"sdp"``, ``"exact"`` or
        the ``lower=`` name); ``converged``: certified, or the conic solver met
        its tolerance. ``diagnostics``: ``solver``, ``status``, ``stop_reason``,
        ``iterations``, ``primal_objective`` and ``dual_objective`` (the solver's own
        numbers, not bounds), ``sdp_bound`` (the certified bound), ``dual_value``,
        ``lambda_min`` (proven lower bound on the dual slack's smallest eigenvalue),
        ``eigenvalue_correction`` (:math:`T \max(0, -\lambda_{\min})`),
        ``trace_bound``, ``upper_kind`` and ``candidates`` (cost of each coupling
        tried), ``sdp_order`` and the time of each stage; the conic solvers add
        ``nonneg_constraints``, ADMM ``history`` (iteration and certified bound of each
        certificate), ``admm_beta``, ``admm_rank`` and ``primal_residual``.

    Raises
    ------
    GWInputError
        ``n * m > max_size``, a missing conic solver (install ``gwlite[certify]``), or
        bad options.
    """
    start = time.perf_counter()
    deadline = math.inf if time_limit is None else start + time_limit

    def remaining() -> float:
        return deadline - time.perf_counter()

    C1, C2, p, q, rows, cols = support(problem)
    solver = _choose_solver(solver, len(p) * len(q))
    limit = _check_options(problem, solver, time_limit, max_size, tol, max_iter)
    _check_size(len(p) * len(q), limit)
    _warn_uninterruptible(solver, len(p) * len(q), time_limit)
    G0_host = start_plan(problem, G0)
    # the searches run without autograd; only the final price keeps the graph
    plain = dataclasses.replace(
        problem, **{k: _xp.detach(getattr(problem, k)) for k in ("C1", "C2", "p", "q")}
    )
    incumbent = Incumbent(plain)
    exact_lower = first_candidates(incumbent, G0_host, remaining)
    named = _xp.as_float(lower_value(plain, lower))
    diagnostics: dict = {"solver": solver}
    if len(p) == 1 or len(q) == 1:
        # one coupling, p q^T: its cost is GW and no solver is needed
        incumbent.offer("only_coupling", np.outer(host(problem.p), host(problem.q)), False)
        sdp_bound, converged = incumbent.cost, True
        diagnostics.update(status="trivial (one coupling)", stop_reason="trivial", iterations=0)
    elif solver == "admm":
        data = (C1, C2, p, q, rows, cols)
        other = max(exact_lower, named)
        run = _relax_admm(problem, incumbent, data, tol, remaining, other, max_iter)
        incumbent.offer("moment_rounded", run.x)
        incumbent.polish(["moment_rounded", "moment_vertex"], remaining)
        sdp_bound, converged = run.bound, run.stop == "certified"
        diagnostics.update(run.diagnostics)
    else:
        data = (C1, C2, p, q, rows, cols)
        other = max(exact_lower, named)
        run = _relax(problem, incumbent, data, solver, tol, remaining, other, max_iter)
        incumbent.offer("moment_rounded", run.x)
        incumbent.polish(["moment_rounded", "moment_vertex"], remaining)
        sdp_bound, converged = run.bound, run.stop in ("certified", "solver converged")
        diagnostics.update(_run_diagnostics(run))
    plan = incumbent.plan
    coupling = _xp.from_numpy(plan, problem.C1)
    priced = support_of(plan, problem.C1)
    upper = _xp.scalar(gw_cost(problem.C1, problem.C2, priced, problem.loss_fun), True)
    # every candidate is a proven bound; "exact" is its theorem-certified optimum on
    # PSD/PSD and CND/CND pairs (else its TLB or spectral bound)
    bounds = {"sdp": sdp_bound, lower: named, "exact": exact_lower}
    lower_kind = max(bounds, key=bounds.get)
    low = bounds[lower_kind]
    low = clamp_lower(low, upper)
    gap = _xp.as_float(upper) - _xp.as_float(low)
    data_scale = max(float(np.abs(C1).max()), float(np.abs(C2).max())) ** problem.exponent
    certified = gap <= tol * data_scale or is_certified(problem, low, upper)
    diagnostics.update(
        sdp_bound=float(sdp_bound),
        lower_kind=lower_kind,
        named_lower=named,
        exact_lower=exact_lower,
        upper_kind=incumbent.name,
        candidates=dict(incumbent.costs),
        tol=tol,
    )
    # one kind of number for all three (0-d tensors when an input requires grad)
    upper, low = result_scalars(problem, upper, low)
    return GWResult(
        value=upper,
        lower=low,
        upper=upper,
        coupling=coupling if return_coupling else None,
        method="sdp",
        loss_fun=problem.loss_fun,
        converged=bool(converged or certified),
        n_iter=int(diagnostics["iterations"]),
        marginal_error=marginal_error(plan, _xp.to_numpy(problem.p), _xp.to_numpy(problem.q)),
        certified=bool(certified),
        time_s=0.0,
        diagnostics=diagnostics,
    )


def _run_diagnostics(run: _Run) -> dict:
    it, f = run.iterate, run.factor
    return dict(
        status=it.status,
        stop_reason=run.stop,
        iterations=it.iterations,
        primal_objective=it.primal_objective * f,
        dual_objective=it.dual_objective * f,
        certificate_iteration=run.best_iteration,
        sdp_order=run.model.r,
        nonneg_constraints=run.model.nonneg.shape[0],
        **_certificate_diagnostics(run.certificate, f),
        **run.times,
    )
