r"""``method="exact"``: branch and bound over permutations, with an honest certificate.

With uniform weights and :math:`n = m`, a permutation :math:`\sigma` gives the coupling
:math:`P_\sigma / n` of cost

.. math::

    \mathcal E(\sigma) = \frac{1}{n^2} \sum_{i,k} L(C^1_{ik}, C^2_{\sigma(i)\sigma(k)}),

a Koopmans-Beckmann quadratic assignment problem (QAP). The solver finds
:math:`\min_\sigma \mathcal E(\sigma)` (the Gromov-Monge value) by depth-first branch
and bound:

* rows of :math:`C^1` are assigned in a fixed order (most dispersed rows first); a node
  fixes the images of the first :math:`d` rows;
* the bound of a node is the Gilmore-Lawler bound: for an unassigned row :math:`i` sent
  to a free column :math:`l`, the cost of its pairs with assigned rows is known exactly
  and the cost of its pairs with the other unassigned rows is at least the 1-D optimal
  transport between the remaining entries of row :math:`i` and of row :math:`l` (sorted
  matching, optimal for :math:`|a - b|^r`, :math:`r \ge 1`); the sum over rows is then
  bounded by a linear assignment problem (``scipy.optimize.linear_sum_assignment``);
* the incumbent comes first: the sorted (mean-row) permutation, the root assignment and
  a few seeded random permutations, each improved by 2-opt (pair swaps);
* children are bounded all at once (vectorised NumPy) and visited smallest bound first.

The permutation optimum is the GW optimum only under a theorem: for ``square_loss``,
when the centred matrices are both PSD or both NSD (:mod:`gwlite.psd`). Then the result
is ``certified`` with ``lower = upper = value``. Otherwise ``upper`` is the permutation
optimum and ``lower`` a bound valid over all couplings: the larger of Memoli's TLB and,
for ``square_loss``, the spectral bound ``permutation optimum - slack``. The
Gilmore-Lawler bound itself is a bound over permutations only and is never reported as
``lower`` unless the theorem holds.

References
----------
P. C. Gilmore. Optimal and suboptimal algorithms for the quadratic assignment problem.
J. SIAM 10 (1962), 305-313.
E. L. Lawler. The quadratic assignment problem. Management Sci. 9 (1963), 586-599.
R. E. Burkard, E. Cela, P. M. Pardalos, L. S. Pitsoulis. The quadratic assignment
problem. Handbook of Combinatorial Optimization, 1998, Section 5 (branch and bound).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from gwlite import _xp
from gwlite.coupling import SparseCoupling, gw_cost, marginal_error
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem
from gwlite.psd import permutation_certificate
from gwlite.result import GWResult
from gwlite.solvers._common import (
    OPTION_CHECKS,
    clamp_lower,
    is_certified,
    lower_value,
    result_scalars,
)

__all__ = ["DEFAULT_MAX_N", "MAX_N", "solve"]

#: largest n solved without ``time_limit`` or ``max_nodes`` (n = 12 takes seconds)
DEFAULT_MAX_N = 12
#: largest n accepted at all (with a limit); beyond, one node costs too much to be useful
MAX_N = 32
# random 2-opt starts besides the sorted and root-assignment permutations
_RANDOM_STARTS = 4
# pruning tolerance relative to the largest possible loss, summed over the n^2 pairs:
# far below CERTIFY_RTOL, far above the round-off of the bounds
_PRUNE_RTOL = 1e-13


def _loss(d, r: int):
    return d * d if r == 2 else np.abs(d)


def _perm_costs(C: np.ndarray, D: np.ndarray, perms: np.ndarray, r: int, linear=None) -> np.ndarray:
    """Unnormalised costs ``sum_ik L(C_ik, D_{s(i) s(k)})`` of a batch of permutations,
    plus ``sum_i linear[i, s(i)]`` when a linear term is given (fused GW)."""
    permuted = D[perms[:, :, None], perms[:, None, :]]
    cost = _loss(C[None] - permuted, r).sum(axis=(1, 2))
    if linear is not None:
        cost = cost + linear[np.arange(perms.shape[1])[None, :], perms].sum(axis=1)
    return cost


def _perm_cost(C, D, perm, r: int, linear=None) -> float:
    return float(_perm_costs(C, D, perm[None], r, linear)[0])


# ---------------------------------------------------------------- incumbent
def _two_opt(
    C, D, perm: np.ndarray, r: int, deadline: float, linear=None
) -> tuple[np.ndarray, float]:
    """Best-improvement pair swaps until no swap lowers the cost (or time runs out)."""
    n = len(perm)
    cost = _perm_cost(C, D, perm, r, linear)
    if n < 2:
        return perm, cost
    a, b = np.triu_indices(n, 1)
    rows = np.arange(len(a))
    while time.perf_counter() < deadline:
        cand = np.repeat(perm[None], len(a), axis=0)
        cand[rows, a], cand[rows, b] = perm[b], perm[a]
        costs = _perm_costs(C, D, cand, r, linear)
        best = int(np.argmin(costs))
        if not costs[best] < cost:
            break
        perm, cost = cand[best], float(costs[best])
    return perm, cost


def _sorted_permutation(C, D) -> np.ndarray:
    """Match the nodes by rank of their mean-row features (the sorted coupling)."""
    perm = np.empty(len(C), dtype=np.int64)
    perm[np.argsort(C.mean(axis=1), kind="stable")] = np.argsort(D.mean(axis=1), kind="stable")
    return perm


# ---------------------------------------------------------------- bounds
def _sorted_offdiag_rows(M: np.ndarray) -> np.ndarray:
    """Row i of the result: the entries ``M[i, k]``, ``k != i``, sorted."""
    n = len(M)
    masked = np.where(np.eye(n, dtype=bool), np.inf, M)
    return np.sort(masked, axis=1)[:, : n - 1]


def _row_transport(S: np.ndarray, X: np.ndarray, r: int) -> np.ndarray:
    """``out[..., i, l] = sum_t L(S[i, t], X[..., l, t])`` for sorted rows (1-D OT values)."""
    if r == 2:
        # expanded square: one matrix product instead of an (i, l, t) tensor
        cross = X @ S.T  # (..., l, i)
        sq_s = np.einsum("it,it->i", S, S)
        sq_x = np.einsum("...lt,...lt->...l", X, X)
        return sq_s[:, None] + np.swapaxes(sq_x[..., :, None] - 2 * cross, -1, -2)
    return np.abs(S[:, None, :] - X[..., None, :, :]).sum(axis=-1)


def _lap(M: np.ndarray) -> tuple[float, np.ndarray]:
    # imported here: scipy.optimize is most of `import gwlite`'s time otherwise (and is
    # imported before the clock by `solve.imports`)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(M)
    return float(M[rows, cols].sum()), cols


@dataclass
class _Node:
    bound: float
    cols: np.ndarray  # images of order[:depth]
    free: np.ndarray  # free columns, ascending
    fixed: float  # exact cost among the assigned rows
    lin: np.ndarray  # (u, u): cost of row order[depth + a] -> free[b] with the assigned rows


@dataclass
class _Search:
    """A depth-first branch and bound on one QAP instance (unnormalised costs)."""

    C: np.ndarray
    D: np.ndarray
    r: int
    order: np.ndarray
    best_cost: float
    best_perm: np.ndarray
    tol: float
    nodes: int = 0
    linear: np.ndarray | None = None  # unnormalised linear term (fused GW), (n, n)

    def __post_init__(self):
        n = len(self.C)
        # sorted remaining entries of each unassigned row, one table per depth
        self.row_tables = [
            _sorted_offdiag_rows(self.C[np.ix_(self.order[d:], self.order[d:])])
            for d in range(n + 1)
        ]

    def root(self) -> tuple[_Node, np.ndarray]:
        """The root node and the permutation its assignment problem picks."""
        C, D, r, order = self.C, self.D, self.r, self.order
        lin = _loss(np.diag(C)[order][:, None] - np.diag(D)[None, :], r)
        if self.linear is not None:
            # a linear term is a cost of row i -> column l: it joins the exact part and
            # travels with every child's slice of ``lin``
            lin = lin + self.linear[order]
        quad = _row_transport(self.row_tables[0], _sorted_offdiag_rows(D), r)
        bound, cols = _lap(lin + quad)
        perm = np.empty(len(C), dtype=np.int64)
        perm[order] = cols
        return _Node(bound, order[:0], np.arange(len(D)), 0.0, lin), perm

    def _offer(self, perm_of_order: np.ndarray) -> None:
        perm = np.empty_like(perm_of_order)
        perm[self.order] = perm_of_order
        cost = _perm_cost(self.C, self.D, perm, self.r, self.linear)
        if cost < self.best_cost:
            self.best_cost, self.best_perm = cost, perm

    def children(self, node: _Node) -> list[_Node]:
        """Bound every child of ``node`` (next row to each free column) in one pass."""
        C, D, r = self.C, self.D, self.r
        depth = len(node.cols)
        u = len(node.free)
        i0, rest = self.order[depth], self.order[depth + 1 :]
        free = node.free
        D_ff = D[np.ix_(free, free)]
        # inc[j, i, l]: pairs (i, i0) and (i0, i) once row i0 goes to free[j], i to free[l]
        inc = _loss(C[rest, i0][None, :, None] - D_ff.T[:, None, :], r)
        inc += _loss(C[i0, rest][None, :, None] - D_ff[:, None, :], r)
        # rows of D over the free columns other than j and l, sorted
        masked = np.broadcast_to(D_ff, (u, u, u)).copy()
        idx = np.arange(u)
        masked[idx, :, idx] = np.inf
        masked[:, idx, idx] = np.inf
        X = np.sort(masked, axis=-1)[..., : max(u - 2, 0)]
        lin = node.lin[1:][None] + inc
        total = lin + _row_transport(self.row_tables[depth + 1], X, r)
        fixed = node.fixed + node.lin[0]
        # cheap screen: row and column minima bound each child's assignment problem
        diag = np.eye(u, dtype=bool)[:, None, :]
        screened = np.where(diag, np.inf, total)
        cheap = np.maximum(screened.min(axis=2).sum(axis=1), _col_min_sum(screened))
        out = []
        for j in np.argsort(fixed + cheap, kind="stable"):
            if fixed[j] + cheap[j] >= self.best_cost - self.tol:
                continue
            keep = idx != j
            value, cols = _lap(total[j][:, keep])
            bound = fixed[j] + value
            if bound >= self.best_cost - self.tol:
                continue
            child_free = free[keep]
            assigned = np.append(node.cols, free[j])
            if u - 1 <= 2:
                # Gilmore-Lawler is exact with at most two rows left: this is a leaf
                self._offer(np.concatenate([assigned, child_free[cols]]))
                continue
            out.append(_Node(bound, assigned, child_free, float(fixed[j]), lin[j][:, keep]))
        return out


def _col_min_sum(screened: np.ndarray) -> np.ndarray:
    """Sum of column minima per child, over the columns a child keeps."""
    col_min = screened.min(axis=1)  # (j, l); column j itself is +inf
    return np.where(np.isinf(col_min), 0.0, col_min).sum(axis=1)


@dataclass(frozen=True)
class _Outcome:
    perm: np.ndarray
    cost: float  # unnormalised
    perm_lower: float  # unnormalised bound over permutations
    root_bound: float
    start_cost: float
    sorted_cost: float
    nodes: int
    stop: str


def _row_order(C: np.ndarray, r: int) -> np.ndarray:
    """Most dispersed rows first: their placement decides most of the cost."""
    spread = _loss(C - C.mean(axis=1, keepdims=True), r).sum(axis=1)
    return np.argsort(-spread, kind="stable")


def _incumbent(C, D, r: int, root_perm: np.ndarray, deadline: float, linear=None):
    """Best 2-opt local optimum over the starts; also the sorted start's own value."""
    n = len(C)
    rng = np.random.default_rng(0)  # fixed seed: the same input gives the same search
    starts = [_sorted_permutation(C, D), root_perm]
    if linear is not None:
        starts.append(_lap(linear)[1])
    starts += [rng.permutation(n) for _ in range(_RANDOM_STARTS)]
    best_perm, best_cost, sorted_cost = None, np.inf, None
    for k, start in enumerate(starts):
        if k and time.perf_counter() >= deadline:
            break
        perm, cost = _two_opt(C, D, start, r, deadline, linear)
        sorted_cost = cost if sorted_cost is None else sorted_cost
        if cost < best_cost:
            best_perm, best_cost = perm, cost
    return best_perm, best_cost, sorted_cost


def _search(C, D, r: int, deadline: float, max_nodes: int | None, linear=None) -> _Outcome:
    """Branch and bound for ``min_s sum_ik L(C_ik, D_s(i)s(k)) + sum_i linear[i, s(i)]``."""
    n = len(C)
    scale = (np.abs(C).max() + np.abs(D).max()) ** r
    if linear is not None:
        scale = max(scale, float(np.abs(linear).max()) / n)
    tol = _PRUNE_RTOL * n * n * max(scale, 1e-300)
    search = _Search(C, D, r, _row_order(C, r), np.inf, np.arange(n), tol, linear=linear)
    root, root_perm = search.root()
    search.best_perm, search.best_cost, sorted_cost = _incumbent(
        C, D, r, root_perm, deadline, linear
    )
    start_cost = search.best_cost
    stack = [root] if n > 1 else []
    stop = "optimal"
    while stack:
        if time.perf_counter() >= deadline:
            stop = "time_limit"
            break
        if max_nodes is not None and search.nodes >= max_nodes:
            stop = "max_nodes"
            break
        node = stack.pop()
        if node.bound >= search.best_cost - search.tol:
            continue
        search.nodes += 1
        # depth first, smallest bound on top of the stack
        stack.extend(sorted(search.children(node), key=lambda k: -k.bound))
    open_bound = min((nd.bound for nd in stack), default=np.inf)
    return _Outcome(
        perm=search.best_perm,
        cost=search.best_cost,
        perm_lower=min(search.best_cost, open_bound) - search.tol,
        root_bound=min(root.bound, search.best_cost),
        start_cost=start_cost,
        sorted_cost=sorted_cost,
        nodes=search.nodes,
        stop=stop,
    )


# ---------------------------------------------------------------- public solver
def _check(problem: GWProblem, time_limit, max_nodes) -> None:
    if problem.n != problem.m:
        raise GWInputError(
            f"method='exact' searches permutations and needs n == m (got {problem.n} and "
            f"{problem.m}); use method='cg' or 'entropic' (upper bounds) or 'sorted' with "
            "lower='tlb' (bounds) for unequal sizes"
        )
    if not problem.uniform:
        raise GWInputError(
            "method='exact' needs uniform node weights (p = q = 1/n), where the optimal "
            "couplings it searches are permutations; use method='cg' or 'sorted' for "
            "non-uniform weights"
        )
    # the shared checks again: solve() may be called without gromov_wasserstein
    OPTION_CHECKS["time_limit"]("time_limit", time_limit)
    OPTION_CHECKS["max_nodes"]("max_nodes", max_nodes)
    if problem.n > MAX_N:
        raise GWInputError(
            f"method='exact' accepts n <= {MAX_N} (got n={problem.n}): exhaustive search is "
            "hopeless at this size. Use method='cg' (a local optimum, an upper bound) or "
            "method='sorted' with lower='tlb' (a certified interval)"
        )
    if problem.n > DEFAULT_MAX_N and time_limit is None and max_nodes is None:
        raise GWInputError(
            f"method='exact' with n={problem.n} > {DEFAULT_MAX_N} may run for hours; pass "
            "time_limit=SECONDS (or max_nodes=N) to get the best permutation found with a "
            "proven gap, or use method='cg' (an upper bound) or method='sorted' with "
            "lower='tlb' (a certified interval)"
        )


def _lower_over_couplings(problem: GWProblem, outcome: _Outcome, certificate, n: int, lower: str):
    """A bound valid over all couplings, and the name of what gave it."""
    perm_lower = outcome.perm_lower / n**2
    candidates = {lower: _xp.as_float(lower_value(problem, lower))}
    if certificate is not None:
        # GW >= (permutation optimum) - slack >= perm_lower - slack, for every pair
        candidates["permutation_bound" if certificate.holds else "spectral"] = (
            perm_lower if certificate.holds else perm_lower - certificate.slack
        )
    kind = max(candidates, key=candidates.get)
    return candidates[kind], kind


def solve(
    problem: GWProblem,
    *,
    time_limit: float | None = None,
    max_nodes: int | None = None,
    lower: str = "tlb",
    return_coupling: bool = True,
) -> GWResult:
    r"""Optimal permutation by branch and bound, certified as GW when a theorem says so.

    Parameters
    ----------
    problem : GWProblem
        Uniform weights and :math:`n = m` (else :class:`~gwlite.GWInputError`).
    time_limit : float, optional
        Seconds for the whole call (incumbent included). When reached, the best
        permutation found is returned with ``converged=False`` and the proven gap.
        Required (or ``max_nodes``) for ``n > DEFAULT_MAX_N`` (12); ``n <= MAX_N`` (32).
    max_nodes : int, optional
        Largest number of nodes to expand (each expansion bounds all its children).
    lower : {"tlb", "mean_row", "flb", "slb", "rank_one"}
        The bound over couplings reported when no theorem certifies the permutation
        optimum (the spectral bound joins it for symmetric square-loss inputs; the
        larger is reported). TLB, the default, dominates the other sorting bounds.
    return_coupling : bool
        Return the permutation matrix divided by n (in the input's array type).

    Returns
    -------
    GWResult
        ``value = upper``: the GW cost of the best permutation (the permutation optimum
        when ``converged``). ``certified`` with ``lower = upper`` when ``square_loss`` and
        both centred matrices are PSD or both NSD (:func:`gwlite.psd.permutation_certificate`)
        and the search finished; otherwise ``lower`` is the best bound over couplings
        (``diagnostics["lower_kind"]``). ``n_iter`` and ``diagnostics["nodes"]``: nodes
        expanded; ``diagnostics["permutation"]``: the permutation (node i -> perm[i]);
        ``diagnostics["permutation_lower"]``: proven lower bound over permutations.
    """
    _check(problem, time_limit, max_nodes)
    start = time.perf_counter()
    deadline = start + time_limit if time_limit is not None else np.inf
    n, r = problem.n, problem.exponent
    C = np.asarray(_xp.to_numpy(_xp.detach(problem.C1)), dtype=np.float64)
    D = np.asarray(_xp.to_numpy(_xp.detach(problem.C2)), dtype=np.float64)
    outcome = _search(C, D, r, deadline, max_nodes)
    plan = np.zeros((n, n))
    plan[np.arange(n), outcome.perm] = 1.0 / n
    coupling = _xp.from_numpy(plan, problem.C1)
    # priced through its support: differences, no cancellation, so 0 stays exactly 0
    support = SparseCoupling(
        np.arange(n), outcome.perm, _xp.from_numpy(np.full(n, 1.0 / n), problem.C1), (n, n)
    )
    upper = _xp.scalar(
        gw_cost(problem.C1, problem.C2, support, problem.loss_fun, check=False), True
    )
    certificate = None
    if r == 2 and problem.is_symmetric():
        certificate = permutation_certificate(C, D)
    converged = outcome.stop == "optimal"
    if certificate is not None and certificate.holds and converged:
        lower, lower_kind = upper, "certified"
    else:
        lower, lower_kind = _lower_over_couplings(problem, outcome, certificate, n, lower)
        lower = clamp_lower(lower, upper)  # round-off only: 0 <= GW <= upper
    certified = lower_kind == "certified" or is_certified(problem, lower, upper)
    value, lower, upper = result_scalars(problem, upper, lower, upper)
    diagnostics = {
        "nodes": outcome.nodes,
        "permutation": [int(k) for k in outcome.perm],
        "permutation_lower": float(outcome.perm_lower) / n**2,
        "root_bound": float(outcome.root_bound) / n**2,
        "incumbent_sorted_2opt": outcome.sorted_cost / n**2,
        "incumbent_start": outcome.start_cost / n**2,
        "stop_reason": outcome.stop,
        "lower_kind": lower_kind,
        "search_time_s": time.perf_counter() - start,
    }
    if certificate is not None:
        diagnostics.update(
            theorem_holds=certificate.holds,
            definiteness=certificate.definiteness,
            spectral_slack=certificate.slack,
        )
    return GWResult(
        value=value,
        lower=lower,
        upper=upper,
        coupling=coupling if return_coupling else None,
        method="exact",
        loss_fun=problem.loss_fun,
        converged=converged,
        n_iter=outcome.nodes,
        marginal_error=marginal_error(plan, _xp.to_numpy(problem.p), _xp.to_numpy(problem.q)),
        certified=bool(certified),
        time_s=0.0,
        diagnostics=diagnostics,
    )


solve.imports = ("scipy.optimize",)  # the LAP bounds: imported before the clock
