r"""``method="proximal"``: gwlite's own GW solver, KL mirror descent on the array API.

With :math:`\mathcal E(\pi) = \sum_{ijkl} L(C^1_{ik}, C^2_{jl}) \pi_{ij} \pi_{kl}` and
the entropic objective :math:`F_\varepsilon = \mathcal E - \varepsilon H`, every outer
iteration is one KL-proximal (mirror-descent) step: the quadratic part is linearised
at the current plan, the entropy and the marginal constraints are kept exactly,

.. math::

    \pi_{t+1} = \operatorname*{argmin}_{\pi \in \Pi(p, q)}
    \langle \nabla \mathcal E(\pi_t), \pi \rangle - \varepsilon H(\pi)
    + \Big(\frac{1}{\tau} - \varepsilon\Big) \mathrm{KL}(\pi \,\|\, \pi_t),

whose solution is the Sinkhorn projection of
:math:`\pi_t^{\,1 - \tau\varepsilon} \odot \exp(-\tau \nabla \mathcal E(\pi_t))`.
With :math:`\tau \varepsilon = 1` (the default) this is the fixed-point iteration of
entropic GW (Peyre, Cuturi & Solomon 2016); with :math:`\varepsilon = 0` it is the
KL proximal point method of Xu et al. (2019). ``step`` (:math:`\tau`) and ``epsilon``
are relative to the scale of the loss (:math:`\max|C^1| \max|C^2|` for the square
loss), so the defaults do not depend on the units of the inputs.

What makes it fast:

* the gradient is :math:`-4 X(\pi)` plus row/column terms that the projection absorbs,
  with :math:`X(\pi) = C^1 \pi C^{2\top}` for the square loss: two matrix products,
  never the :math:`n^2 m^2` tensor (``gwlite.solvers._operators``);
* on large problems whose matrices are well captured by a low rank (distance
  matrices of point clouds are), the first phase uses a randomized truncated SVD of
  the matrices, :math:`O(nmr)` per step instead of :math:`O(nm(n+m))`; a second phase
  with the exact gradient follows, and every plan is priced with the exact matrices;
* the projection is warm-started and runs a few log-stabilised updates per outer
  iteration (``gwlite.solvers._sinkhorn``);
* ``n_starts`` starting plans (``G0``, the product coupling, the sorted coupling,
  random vertices of the polytope) run as one stack: the problem is a batch of one,
  ``(1, S, n, m)``, and every step is the batched core's
  (``gwlite.solvers._stack.mirror_step``, as in :mod:`gwlite.solvers.batched`);
* the loop runs in float32 on a GPU and for large problems; every few iterations each
  plan is rounded onto the polytope (Altschuler et al. 2017) and priced, the best plan
  of each start is kept, and the loop stops when the best cost stalls. The returned
  plan is priced in float64 by :func:`gwlite.coupling.gw_cost`, so ``upper`` is the
  exact cost of a feasible coupling;
* an optional polish by exact conditional-gradient steps (POT's network simplex and
  the closed-form line search of the quadratic objective) from the best plan.

``abs_loss`` is supported when the entries take few distinct values (graphs), by level
sets (``gwlite.solvers._operators``).

The call reads as the steps of the theory page, each in its own place: **start**
(``_starts``, the support and the operators, here), **step**, **round** and
**price** (``gwlite.solvers._prox_loop``), **polish** (``gwlite.solvers._prox_polish``).
Under ``time_limit`` every piece is priced before it runs (``gwlite.solvers._prox_time``:
speeds measured in the call, scaled by the share of the cores the process gets), so
the set-up (randomized SVDs, pricing the sorted coupling), each step, each check, the
polish and the final pricing all fit; a piece that would not fit is skipped and
``diagnostics`` says so (``rank_note``, ``sorted_candidate``, ``polish_stop``).

References
----------
G. Peyre, M. Cuturi, J. Solomon. Gromov-Wasserstein averaging of kernel and distance
matrices. ICML 2016.
H. Xu, D. Luo, H. Zha, L. Carin. Gromov-Wasserstein learning for graph matching and
node embedding. ICML 2019.
J. Altschuler, J. Weed, P. Rigollet. Near-linear time approximation algorithms for
optimal transport via Sinkhorn iteration. NeurIPS 2017.
N. Halko, P. G. Martinsson, J. A. Tropp. Finding structure with randomness. SIAM
Review 53(2), 2011.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from gwlite import _xp
from gwlite.bounds import sorted_sparse_coupling
from gwlite.coupling import SparseCoupling, gw_cost, marginal_error, round_to_polytope, to_dense
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem
from gwlite.result import GWResult
from gwlite.solvers import _coarse, _operators, _prox_loop, _prox_time
from gwlite.solvers._common import (
    blas_threads,
    check_G0,
    clamp_lower,
    flag,
    is_certified,
    lower_value,
    nonneg_int,
    nonneg_real,
    one_of,
    optional,
    positive_int,
    positive_real,
    result_scalars,
    with_option_checks,
)
from gwlite.solvers._prox_polish import PolishReport, finish, polish64
from gwlite.solvers._prox_polish import price64 as _price64
from gwlite.univariate import monotone_coupling

__all__ = ["DEFAULT_EPSILON", "PolishReport", "polish", "solve"]

#: default entropic weight, relative to the loss scale
DEFAULT_EPSILON = 5e-4
# the float32 loop pays off above this many plan entries on the CPU
_FLOAT32_FROM = 40_000
# the low-rank first phase pays off above this many plan entries
_FACTOR_FROM = 250_000
# under a time limit, the low-rank set-up (randomized SVDs) runs only when its estimate
# fits in this share of the time left, and the sorted coupling is priced only when its
# estimate fits in this share
_FACTOR_SETUP_SHARE = 0.2
_SORTED_SHARE = 0.1
# exact conditional-gradient polish by default up to this many plan entries (its exact
# OT runs on the host: from a GPU it only pays on smaller problems); under a time limit
# at most this share of the time left is kept for it (from a low-rank phase, one polish
# step is worth more than the exact steps it replaces: 0.00255 -> 0.00135 at n = 1000)
_POLISH_MAX_ENTRIES = {"numpy": 10_000_000, "device": 2_500_000}
_POLISH_SHARE = 0.4
_POLISH_STEPS = 20


# --------------------------------------------------------------------- options
@dataclass(frozen=True)
class _Settings:
    eps: float
    tau: float
    max_iter: int
    tol: float
    inner_iter: int
    rank: int | None
    dtype: object


def _settings(problem, *, step, epsilon, max_iter, tol, inner_iter, rank, dtype) -> _Settings:
    """The loop's settings. Each option was checked once, at the entry point
    (``solve.option_checks``); here only what ties two options together."""
    if epsilon == 0 and step is None:
        raise GWInputError(
            "epsilon=0 (the pure proximal point method) needs an explicit step, e.g. step=100"
        )
    eps = DEFAULT_EPSILON if epsilon is None else float(epsilon)
    tau = 1.0 / eps if step is None else float(step)
    if tau * eps > 1 + 1e-9:
        raise GWInputError(
            f"step * epsilon must be <= 1 (got {tau:g} * {eps:g} = {tau * eps:.3g}): a "
            "larger step overshoots the entropic fixed point; lower step or epsilon"
        )
    return _Settings(eps, tau, max_iter, tol, inner_iter, rank, _compute_dtype(problem, dtype))


def _compute_dtype(problem: GWProblem, dtype: str | None):
    xp = problem.xp
    if dtype is None:
        on_gpu = problem.backend == "cupy" or "cuda" in str(_xp.device(problem.C1))
        large = problem.n * problem.m >= _FLOAT32_FROM
        return xp.float32 if (on_gpu or large or problem.C1.dtype == xp.float32) else xp.float64
    return {"float32": xp.float32, "float64": xp.float64}[dtype]


def _polish_steps(polish, entries: int, backend: str) -> int:
    if polish is None:
        limit = _POLISH_MAX_ENTRIES["numpy" if backend == "numpy" else "device"]
        return _POLISH_STEPS if entries <= limit else 0
    if polish is True:
        return _POLISH_STEPS
    return 0 if polish is False else int(polish)


def _polish_check(name, value):
    if value is None or isinstance(value, bool):
        return value
    return nonneg_int(name, value)


# --------------------------------------------------------------------- support
@dataclass(frozen=True)
class _Support:
    """The nodes with positive mass. GW on them is the same problem (no mass, no cost),
    and the projection divides by the weights, so the solver runs there."""

    rows: np.ndarray
    cols: np.ndarray
    shape: tuple

    @property
    def whole(self) -> bool:
        return len(self.rows) == self.shape[0] and len(self.cols) == self.shape[1]

    def restrict(self, xp, plan):
        if self.whole:
            return plan
        device = _xp.device(plan)
        plan = xp.take(plan, xp.asarray(self.rows, device=device), axis=0)
        return xp.take(plan, xp.asarray(self.cols, device=device), axis=1)

    def embed(self, xp, plan):
        if self.whole:
            return plan
        grid_r = np.repeat(self.rows, len(self.cols))
        grid_c = np.tile(self.cols, len(self.rows))
        return to_dense(SparseCoupling(grid_r, grid_c, xp.reshape(plan, (-1,)), self.shape))


def _on_support(problem: GWProblem, dtype=None) -> tuple[GWProblem, _Support]:
    """The detached problem on the nodes with mass (cast to ``dtype``), and its support."""
    xp = problem.xp
    C1, C2, p, q = (_xp.detach(x) for x in (problem.C1, problem.C2, problem.p, problem.q))
    rows = np.nonzero(_xp.to_numpy(p) > 0)[0]
    cols = np.nonzero(_xp.to_numpy(q) > 0)[0]
    support = _Support(rows, cols, (problem.n, problem.m))
    if not support.whole:
        r, c = (xp.asarray(i, device=_xp.device(C1)) for i in (rows, cols))
        C1 = xp.take(xp.take(C1, r, axis=0), r, axis=1)
        C2 = xp.take(xp.take(C2, c, axis=0), c, axis=1)
        p, q = xp.take(p, r, axis=0), xp.take(q, c, axis=0)
    if dtype is not None:
        widened = xp.finfo(dtype).eps < xp.finfo(p.dtype).eps
        C1, C2, p, q = (xp.astype(x, dtype, copy=False) for x in (C1, C2, p, q))
        if widened:  # float32 weights: one mass to float64 round-off, as gw_cost requires
            p, q = p / xp.sum(p), q / xp.sum(q)
    return GWProblem(C1, C2, p, q, problem.loss_fun, problem.uniform), support


# --------------------------------------------------------------------- start
def _starts(sub64: GWProblem, n_starts: int, G0, seed: int):
    """``n_starts`` float64 plans of the support problem and their names, in a fixed
    order: ``G0`` (when given), the product coupling, the sorted coupling, then random
    vertices of the polytope (monotone couplings of random scores)."""
    xp = sub64.xp
    p, q = sub64.p, sub64.q
    plans, names = [], []
    if G0 is not None:
        plans.append(G0)
        names.append("G0")
    plans.append(_product(sub64))
    names.append("product")
    if len(plans) < n_starts:
        plans.append(to_dense(sorted_sparse_coupling(sub64)))
        names.append("sorted")
    rng = np.random.default_rng(seed)
    device = _xp.device(p)
    while len(plans) < n_starts:
        u = xp.asarray(rng.random(sub64.n), dtype=xp.float64, device=device)
        v = xp.asarray(rng.random(sub64.m), dtype=xp.float64, device=device)
        plans.append(to_dense(monotone_coupling(u, v, p, q)))
        names.append(f"random{len(names)}")
    return plans[:n_starts], names[:n_starts]


def _product(sub64: GWProblem):
    """The product coupling :math:`p q^\top` (float64)."""
    return sub64.p[:, None] * sub64.q[None, :]


def _price_starts(xp, sub64, exact64, starts, names) -> list:
    """``(cost, feasible plan)`` of each start that is a candidate as it is (the product
    coupling, in closed form; ``G0`` and the sorted coupling); ``(inf, None)`` else."""
    out = []
    for plan, name in zip(starts, names):
        if name == "product":  # priced in closed form, O(n^2): always a candidate
            out.append((exact64.product_cost(xp, sub64.p, sub64.q), plan))
        elif name in ("G0", "coarse", "sorted"):
            feasible, cost = _price64(xp, sub64, plan)
            out.append((cost, feasible))
        else:
            out.append((math.inf, None))
    return out


def _sorted_candidate(xp, sub64, names, deadline, model):
    """The sorted coupling and its exact cost, a candidate whatever ``n_starts`` is (the
    answer is never worse than it), and a note for the diagnostics. Under a time limit
    whose tenth its pricing would not fit in, it is left out and the note says so."""
    if "sorted" in names:
        return None, "a start"
    coupling = sorted_sparse_coupling(sub64)
    if deadline is not None:
        estimate = model.sparse_price_s(coupling.nnz)
        if estimate > _SORTED_SHARE * _left(deadline):
            return None, f"skipped: pricing it (about {estimate:.2g} s) does not fit the limit"
    cost = float(gw_cost(sub64.C1, sub64.C2, coupling, sub64.loss_fun, check=False))
    return (to_dense(coupling), cost), "priced"


def _low_rank(sub: GWProblem, cfg: _Settings, seed: int, symmetric: bool, deadline, model):
    """The low-rank operator of the first phase, or None; and why not, for the
    diagnostics. Under a time limit the randomized SVDs run only when their estimate
    fits in a fifth of the time left."""
    if cfg.rank == 0 or sub.loss_fun != "square_loss":
        return None, "off"
    if cfg.rank is None and sub.n * sub.m < _FACTOR_FROM:
        return None, "small problem"
    r_max = 128 if cfg.rank is None else cfg.rank
    # a rank near n saves nothing over the exact products
    r_max = min(r_max, max(sub.n, sub.m) // 4)
    if deadline is not None:
        estimate = model.svd_s(sub.n, sub.m, r_max)
        if estimate > _FACTOR_SETUP_SHARE * _left(deadline):
            return None, f"skipped: the SVDs (about {estimate:.2g} s) do not fit the limit"
    op = _operators.factored(sub, cfg.dtype, r_max=r_max, seed=seed, symmetric=symmetric)
    return op, "used" if op is not None else "no low rank captures the matrices"


def _left(deadline: float) -> float:
    return deadline - time.perf_counter()


# --------------------------------------------------------------------- solver
@with_option_checks(
    # epsilon = 0 is the pure proximal point method (with ``step``)
    epsilon=optional(nonneg_real),
    step=optional(positive_real),
    n_starts=positive_int,
    inner_iter=positive_int,
    rank=optional(nonneg_int),
    polish=_polish_check,
    polish_top=positive_int,
    dtype=optional(one_of(["float32", "float64"])),
    seed=nonneg_int,
    threads=optional(positive_int),
    return_coupling=flag,
    coarse=optional(flag),
)
def solve(
    problem: GWProblem,
    *,
    G0=None,
    n_starts: int = 1,
    epsilon: float | None = None,
    step: float | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    inner_iter: int = 20,
    rank: int | None = None,
    polish: bool | int | None = None,
    polish_top: int = 1,
    dtype: str | None = None,
    time_limit: float | None = None,
    seed: int = 0,
    lower: str = "mean_row",
    threads: int | None = None,
    return_coupling: bool = True,
    coarse: bool | None = None,
) -> GWResult:
    r"""KL mirror descent from one or several starts; the best plan rounded, priced,
    polished.

    Parameters
    ----------
    problem : GWProblem
        ``square_loss`` (any matrices) or ``abs_loss`` when the matrices take at most
        64 distinct values; any weights, ``n != m`` allowed.
    G0 : array ``(n, m)``, optional
        A coupling of ``p`` and ``q`` to start from (the first start when given).
    n_starts : int
        Starts run together as one batch: ``G0``, the product coupling
        :math:`p q^\top`, the sorted coupling, then random vertices of the polytope
        (seeded by ``seed``). The best plan is kept.
    epsilon : float, optional
        Entropic weight :math:`\varepsilon` relative to the loss scale (default 5e-4).
        Smaller is sharper and slower to settle.
    step : float, optional
        Mirror step :math:`\tau`, relative to the loss scale; default ``1 / epsilon``
        (the entropic fixed point). Requires ``step * epsilon <= 1``; ``epsilon=0``
        (the pure proximal point method) requires ``step``.
    max_iter : int
        Largest number of outer iterations (one gradient and one projection each).
    tol : float
        Every 5 iterations the plans are rounded and priced; the loop stops when the
        best cost gained less than ``tol`` (relative) in 3 consecutive checks.
    inner_iter : int
        Scaling iterations per projection (after its two log-domain updates).
    rank : int, optional
        Largest rank of the low-rank first phase; ``None`` (default): up to 128 on
        problems with 250,000 plan entries or more, used only when it captures both
        matrices to 3% (Frobenius); ``0``: exact gradients throughout.
    polish : bool, int or None
        Conditional-gradient steps (POT's exact OT and a closed-form line search) from
        the best plan: ``None`` (default) for up to 20 when the plan has at most
        1e7 entries (NumPy) or 2.5e6 (GPU and torch), ``True`` for 20, ``False`` for
        none, or a number of steps. Under a time limit up to 40% of it is kept for it.
    polish_top : int
        Polish the best plans of this many starts (the best polished plan is kept).
    dtype : {None, "float32", "float64"}
        Precision of the loop; ``None``: float32 on a GPU, for float32 inputs and for
        plans of 40,000 entries or more, else float64. The returned plan is always
        priced in float64.
    time_limit : float, optional
        Seconds for the whole call, set-up included; every piece is priced before it
        runs (speeds measured in the call, scaled by the share of the cores on a busy
        machine): the low-rank set-up and the pricing of the sorted coupling are skipped
        when they would not fit, the loop stops early (``converged=False``) so that
        pricing and polishing fit, and no polish step starts that would not end in time.
    seed : int
        Seed of the random starts and of the randomized SVD.
    lower : {"mean_row", "flb", "slb", "tlb", "rank_one"}
        The proven lower bound reported as ``lower``.
    threads : int, optional
        BLAS threads during the call (threadpoolctl). ``None`` (default): one thread when
        the machine is busy (load average at least its core count: more threads there
        only oversubscribe the cores and slow every product), else the process's
        setting. The answer does not depend on it beyond round-off and the time limit.
    return_coupling : bool
    coarse : bool, optional
        Start from a plan solved at a coarse scale and polish it on the full problem,
        in place of the mirror-descent loop (``gwlite.solvers._coarse``: farthest-point
        samples, their Voronoi cells' weights, a small ``proximal`` solve, lifted back).
        ``None`` (default): when both matrices are distances (symmetric, non-negative,
        zero diagonal), the loss is ``square_loss`` and both sides have at least 1,000
        nodes, where it is measured better and faster than the loop and than POT's
        conditional gradient; ``True``: also on smaller distance matrices; ``False``:
        never. ``diagnostics["coarse"]`` says what it did, or why not. With it there is
        no loop (``n_iter`` 0): ``stop_reason`` is the polish's (``"tol"`` when it
        reached a stationary plan, then ``converged`` is true; ``"time_limit"``).

    Returns
    -------
    GWResult
        ``value = upper``: the exact float64 GW cost of the returned feasible plan.
        ``converged``: the loop met its ``tol`` rule (not ``max_iter`` nor the time
        limit); ``n_iter``: outer iterations run. ``diagnostics``: ``starts``,
        ``start_costs`` (best cost reached from each), ``best_start``, ``epsilon``,
        ``step``, ``dtype``, ``rank`` and ``rank_error`` of the low-rank phase, its
        ``factored_iter`` and ``rank_note`` (used, or why not: e.g. its set-up did not
        fit the time limit), ``sorted_candidate`` (a start, priced, or skipped and
        why), ``stop_reason``, ``history`` (iteration, phase, best cost, seconds),
        ``iterate_time_s`` and the ``polish_*`` entries.

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> C = np.abs(np.subtract.outer(np.arange(6.0), np.arange(6.0)))  # a path graph
    >>> res = gwlite.gromov_wasserstein(C, C[::-1, ::-1], method="proximal")
    >>> res.upper, res.certified  # it finds the reflection
    (0.0, True)
    """
    with blas_threads(threads):
        began = time.perf_counter()
        deadline = None if time_limit is None else began + time_limit
        cfg = _settings(
            problem,
            step=step,
            epsilon=epsilon,
            max_iter=max_iter,
            tol=tol,
            inner_iter=inner_iter,
            rank=rank,
            dtype=dtype,
        )
        _operators.check_loss_levels(problem)
        steps = _polish_steps(polish, problem.n * problem.m, problem.backend)
        xp = problem.xp
        # start: the problem on its support, the starts and the operators
        sub64, support = _on_support(problem, xp.float64)
        G0 = None if G0 is None else support.restrict(xp, check_G0(problem, G0))
        starts, names = _starts(sub64, n_starts, G0, seed)
        sub = _on_support(problem, cfg.dtype)[0]
        symmetric = sub64.is_symmetric()
        exact = _operators.exact(sub, symmetric)
        exact64 = _operators.exact(sub64, symmetric)
        model = _time_model(sub, exact, len(starts), cfg, deadline)
        polish_est = _polish_estimate(problem, sub, model, len(starts))
        lifted, coarse_note = _coarse_start(
            sub64, coarse, symmetric, steps, deadline, model, polish_est, seed
        )
        if lifted is not None:  # the lifted plan replaces the loop: it goes to the polish
            starts, names = [lifted, *starts], ["coarse", *names]
            cfg = dataclasses.replace(cfg, max_iter=0)
        if cfg.max_iter:
            factored, rank_note = _low_rank(sub, cfg, seed, symmetric, deadline, model)
        else:
            factored, rank_note = None, "no loop"
        # the user's plan and the sorted coupling compete too: never return worse
        initial = _price_starts(xp, sub64, exact64, starts, names)
        sorted_candidate, sorted_note = _sorted_candidate(xp, sub64, names, deadline, model)
        # step, round, price: the loop, leaving time for the polish and the last pricing
        loop_deadline = deadline
        if deadline is not None and steps and cfg.max_iter:
            reserve = polish_est + model.price64_s
            loop_deadline = deadline - min(_POLISH_SHARE * _left(deadline), reserve)
        loop = _prox_loop.iterate(sub, exact, factored, starts, cfg, loop_deadline, initial, model)
        if loop.exact_step_s and problem.backend != "numpy":  # a measured device step
            polish_est = max(polish_est, _POLISH_STEP_RATIO * loop.exact_step_s)
        # polish: the best plans, priced in float64
        best, plan, cost, report = finish(
            xp,
            sub64,
            exact64,
            loop,
            steps,
            polish_top,
            deadline,
            polish_est,
            0.0 if model is None else model.price64_s,
        )
        if not steps and polish is None:
            report.stop = "skipped (large problem; polish=True forces it)"
        best_start, error = names[best], loop.raw_error[best]
        if sorted_candidate is not None and sorted_candidate[1] < cost:
            (plan, cost), best_start, error = sorted_candidate, "sorted (candidate)", 0.0
        if "product" not in names:  # G0 took its place: the product coupling competes too
            product = exact64.product_cost(xp, sub64.p, sub64.q)
            if product < cost:
                plan, cost, best_start, error = _product(sub64), product, "product", 0.0
        coupling = support.embed(xp, plan)
        upper = _final_cost(problem, coupling, cost)
        low = clamp_lower(lower_value(problem, lower), upper)
        diagnostics = {
            "lower_kind": lower,
            "starts": names,
            "start_costs": loop.best_cost,
            "best_start": best_start,
            "sorted_candidate": sorted_note,
            "coarse": coarse_note,
            "epsilon": cfg.eps,
            "step": cfg.tau,
            "dtype": "float32" if cfg.dtype == xp.float32 else "float64",
            "rank": None if factored is None else factored.rank,
            "rank_error": None if factored is None else factored.residual,
            "rank_note": rank_note,
            "factored_iter": loop.factored_iter,
            "stop_reason": loop.stop
            if cfg.max_iter
            else _POLISH_STOPS.get(report.stop, report.stop),
            "history": loop.history,
            "iterate_time_s": loop.time_s,
            **report.as_dict(),
        }
        certified = is_certified(problem, low, upper)
        upper, low = result_scalars(problem, upper, low)  # one kind (tensors under grad)
        return GWResult(
            value=upper,
            lower=low,
            upper=upper,
            coupling=xp.astype(coupling, problem.C1.dtype, copy=False) if return_coupling else None,
            method="proximal",
            loss_fun=problem.loss_fun,
            converged=diagnostics["stop_reason"] in ("tol", "zero cost"),
            n_iter=loop.n_iter,
            marginal_error=_raw_error(error, coupling, problem),
            certified=certified,
            time_s=0.0,
            diagnostics=diagnostics,
        )


def _coarse_start(sub64, coarse, symmetric, steps, deadline, model, polish_est, seed):
    """The lifted coarse plan (``gwlite.solvers._coarse``) or None, and the note for
    the diagnostics. It is only worth its polish: not used when the polish is off, and
    under a time limit the coarse solve leaves time for ``_COARSE_POLISH_STEPS`` polish
    steps and the final pricing (else the loop runs, as without it)."""
    note = _coarse.applies(sub64, coarse, symmetric)
    if note is not None:
        return None, note
    if not steps:
        return None, "not used: the polish is off"
    if deadline is None:
        return _coarse.lifted_start(sub64, None, seed)
    reserve = _COARSE_POLISH_STEPS * polish_est + model.price64_s
    return _coarse.lifted_start(sub64, deadline, seed, model.rate64, reserve)


# polish steps the coarse start leaves time for (from a lifted plan the polish usually
# becomes stationary in one or two steps; without any, the lifted plan costs 2-4x more)
_COARSE_POLISH_STEPS = 2.5

# with the coarse start there is no loop: the polish's stop is the call's (a stationary
# plan is the conditional gradient's convergence)
_POLISH_STOPS = {"stationary": "tol", "max_steps": "max_iter"}

# next to a GPU, a polish step (one exact OT on the host) costs at least this many exact
# loop steps of the device
_POLISH_STEP_RATIO = 100.0


def _time_model(sub: GWProblem, exact, n_starts: int, cfg: _Settings, deadline):
    """The time model of this call (speeds measured now), under a time limit only."""
    if deadline is None:
        return None
    xp, device = sub.xp, _xp.device(sub.C1)
    shape = (sub.n, sub.m, len(exact.A), exact.symmetric, n_starts, cfg.inner_iter)
    return _prox_time.measure(*shape, xp, cfg.dtype, device, _left(deadline))


def _polish_estimate(problem: GWProblem, sub: GWProblem, model, n_starts: int) -> float:
    """Predicted seconds of the polish's first step: one exact OT on the host (the
    model's network-simplex estimate; next to a GPU at least ``_POLISH_STEP_RATIO``
    exact steps of the device, whose speed says nothing about the host's)."""
    if model is None:
        return 0.0
    if problem.backend == "numpy":
        return model.emd_s(sub.n, sub.m)
    return max(model.emd_s(sub.n, sub.m), _POLISH_STEP_RATIO * model.step_s / n_starts)


def polish(problem: GWProblem, plan, *, max_steps: int = _POLISH_STEPS, time_limit=None):
    """Improve a feasible plan by exact conditional-gradient steps (POT's ``emd``).

    For solvers that hold a plan (a rounded relaxation, another run): ``plan`` is
    rounded onto the polytope of ``problem.p, problem.q`` first; the result is a
    coupling of them, never costlier than the rounded ``plan``.

    Parameters
    ----------
    problem : GWProblem
    plan : array ``(n, m)``
    max_steps : int
    time_limit : float, optional
        Seconds; no step starts that would not finish in time.

    Returns
    -------
    (plan, cost, PolishReport)
        The float64 plan in the problem's array type, its exact GW cost (a float) and
        the report.
    """
    xp = problem.xp
    optional(positive_real)("time_limit", time_limit)  # an entry point of its own
    nonneg_int("max_steps", max_steps)
    _operators.check_loss_levels(problem)
    sub64, support = _on_support(problem, xp.float64)
    start = round_to_polytope(support.restrict(xp, xp.astype(plan, xp.float64)), sub64.p, sub64.q)
    cost = float(gw_cost(sub64.C1, sub64.C2, start, sub64.loss_fun))
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    better, report = polish64(sub64, _operators.exact(sub64), start, cost, max_steps, deadline)
    if not report.cost_after < cost:  # no gain beyond round-off: keep the plan as given
        better, report.cost_after = start, cost
    return support.embed(xp, better), report.cost_after, report


def _raw_error(raw: float, coupling, problem: GWProblem) -> float:
    """The iterate's marginal error, or, when the time limit stopped the loop before its
    first step (no iterate: NaN), that of the start returned as it is."""
    return raw if math.isfinite(raw) else marginal_error(coupling, problem.p, problem.q)


def _final_cost(problem: GWProblem, coupling, cost: float):
    """``upper``: the plan's exact cost (a 0-d tensor with its graph when inputs need one)."""
    if not problem.requires_grad:
        return cost
    xp = problem.xp
    C1 = xp.astype(problem.C1, xp.float64)
    C2 = xp.astype(problem.C2, xp.float64)
    # the plan is held fixed: the envelope-theorem gradient, as for method="cg"
    return _xp.scalar(gw_cost(C1, C2, coupling, problem.loss_fun), keep_graph=True)


solve.imports = ("ot", "scipy.optimize")  # polish (POT) and rounding (LAP), before the clock
