r"""Fused GW inputs and their proven lower bounds.

Fused Gromov-Wasserstein (Vayer et al. 2019), in POT's convention
(``ot.gromov.fused_gromov_wasserstein2``):

.. math::

    \mathrm{FGW}_\alpha = \min_{\pi \in \Pi(p, q)} \mathcal F_\alpha(\pi), \qquad
    \mathcal F_\alpha(\pi) = (1 - \alpha) \langle M, \pi \rangle
    + \alpha \sum_{ijkl} L(C^1_{ik}, C^2_{jl}) \pi_{ij} \pi_{kl}.

Every lower bound here is the value of a linear program
:math:`\min_{\pi \in \Pi(p, q)} \langle (1 - \alpha) M + \alpha D, \pi \rangle`, reported
from a dual-feasible point (:func:`gwlite.bounds.certified_lp_lower`), with :math:`D_{ij}`
a lower bound on :math:`\sum_{kl} L(C^1_{ik}, C^2_{jl}) \pi_{kl}` valid for every coupling
(proofs in ``docs/theory_fused.md``):

``tlb``
    :math:`D_{ij} = W_r^r(C^1_{i\cdot} \# p, C^2_{j\cdot} \# q)`, the 1-D optimal transport
    between the row distributions (Memoli's third bound, fused). The default.
``mean_row``
    :math:`D_{ij} = |s_1(i) - s_2(j)|^r` with :math:`s(i) = \sum_k C_{ik} p_k` (Jensen).
``flb``, ``slb``, ``rank_one``
    the split form :math:`(1 - \alpha) W_M + \alpha\, \mathrm{lower}_{GW}`, since the
    minimum of a sum is at least the sum of the minima.

All computations run on the host in float64.

References
----------
T. Vayer, L. Chapel, R. Flamary, R. Tavenard, N. Courty. Optimal transport for
structured data with application on graphs. ICML 2019.
F. Memoli. Gromov-Wasserstein distances and the metric approach to object matching.
Found. Comput. Math. 11 (2011), Section 6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gwlite import _xp
from gwlite.bounds import (
    certified_lp_lower,
    compute_lower,
    mean_row_features,
    row_distribution_costs,
)
from gwlite.coupling import fgw_cost
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem, check_alpha, check_cost_matrix, make_problem
from gwlite.solvers._common import CERTIFY_RTOL

__all__ = [
    "FUSED_LOWER_BOUNDS",
    "FusedLower",
    "FusedProblem",
    "best_lower",
    "fused_lower",
    "make_fused_problem",
    "structure_costs",
    "unit_scale",
]

#: the names ``lower=`` accepts for fused GW (``tlb`` first: the default)
FUSED_LOWER_BOUNDS = ("tlb", "mean_row", "flb", "slb", "rank_one")


@dataclass(frozen=True)
class FusedProblem:
    """Validated fused GW inputs, on the host in float64.

    Attributes
    ----------
    gw : GWProblem
        The structure part (``C1, C2, p, q, loss_fun``), NumPy float64.
    M : numpy.ndarray ``(n, m)``
        Feature cost, finite and non-negative.
    alpha : float
        Weight of the structure term, in ``[0, 1]``.
    like : array
        The caller's ``C1``: couplings are returned in its array library.
    """

    gw: GWProblem
    M: np.ndarray
    alpha: float
    like: Any

    @property
    def n(self) -> int:
        return self.gw.n

    @property
    def m(self) -> int:
        return self.gw.m

    @property
    def loss_fun(self) -> str:
        return self.gw.loss_fun

    @property
    def exponent(self) -> int:
        return self.gw.exponent

    def cost(self, coupling) -> float:
        """:math:`\\mathcal F_\\alpha` of a coupling of this problem (NumPy or sparse)."""
        value = fgw_cost(
            self.M, self.gw.C1, self.gw.C2, coupling, self.alpha, self.loss_fun, check=False
        )
        return max(0.0, float(value))

    def scale(self) -> float:
        r"""The loss scale :math:`\max((1 - \alpha) \max M, \alpha \max(|C_1|, |C_2|)^r)`,
        the unit the certification tolerance is relative to."""
        top = float(self.M.max()) if self.M.size else 0.0
        return max((1 - self.alpha) * top, self.alpha * self.gw.scale())

    def is_certified(self, lower: float, upper: float) -> bool:
        """``upper - lower`` within ``CERTIFY_RTOL`` of the scale."""
        return bool(upper - lower <= CERTIFY_RTOL * self.scale())

    def to_like(self, plan: np.ndarray):
        """A host plan in the caller's array library."""
        return _xp.from_numpy(plan, self.like)


def make_fused_problem(
    M, C1, C2, p=None, q=None, alpha: float = 0.5, loss_fun: str = "square_loss"
) -> FusedProblem:
    """Validate fused GW inputs (:func:`gwlite.problem.make_problem` for the structure,
    :func:`gwlite.problem.check_cost_matrix` for ``M``, ``alpha`` in [0, 1])."""
    alpha = check_alpha(alpha)
    problem = make_problem(C1, C2, p, q, loss_fun)
    M = check_cost_matrix(M, problem)

    def host(x):
        return np.asarray(_xp.to_numpy(_xp.detach(x)), dtype=np.float64)

    # weights already validated; widened from float32 they are renormalised in float64
    p, q = host(problem.p), host(problem.q)
    gw = make_problem(host(problem.C1), host(problem.C2), p / p.sum(), q / q.sum(), loss_fun)
    return FusedProblem(gw, host(M), alpha, problem.C1)


@dataclass(frozen=True)
class FusedLower:
    """A proven lower bound on fused GW and the plan of its linear program.

    Attributes
    ----------
    value : float
        ``<= FGW`` (clamped at 0).
    plan : numpy.ndarray ``(n, m)``
        Optimal plan of the bound's linear program: a feasible coupling (a start, and an
        upper bound once priced).
    kind : str
    """

    value: float
    plan: np.ndarray
    kind: str


def structure_costs(problem: GWProblem, kind: str) -> np.ndarray:
    r""":math:`D_{ij} \le \sum_{kl} L(C^1_{ik}, C^2_{jl}) \pi_{kl}` for every coupling
    :math:`\pi` of ``p`` and ``q``: the row-distribution OT (``tlb``) or the mean-row
    difference (``mean_row``)."""
    if kind == "tlb":
        return np.asarray(row_distribution_costs(problem), dtype=np.float64)
    s1 = mean_row_features(problem.C1, problem.p)
    s2 = mean_row_features(problem.C2, problem.q)
    return np.abs(s1[:, None] - s2[None, :]) ** problem.exponent


def fused_lower(fp: FusedProblem, kind: str = "tlb") -> FusedLower:
    """The lower bound ``kind`` (one of :data:`FUSED_LOWER_BOUNDS`) of fused GW."""
    if kind not in FUSED_LOWER_BOUNDS:
        raise GWInputError(
            f"unknown lower bound {kind!r} for fused GW; choose one of {list(FUSED_LOWER_BOUNDS)}"
        )
    a, gw = fp.alpha, fp.gw
    if kind in ("tlb", "mean_row"):
        cost = (1 - a) * fp.M
        if a > 0:
            cost = cost + a * structure_costs(gw, kind)
        value, plan = certified_lp_lower(cost, gw.p, gw.q)
        return FusedLower(max(0.0, value), plan, kind)
    linear, plan = certified_lp_lower(fp.M, gw.p, gw.q)
    structure = float(compute_lower(gw, kind)) if a > 0 else 0.0
    value = (1 - a) * max(0.0, linear) + a * structure
    return FusedLower(max(0.0, value), plan, kind)


def best_lower(fp: FusedProblem, kinds=("tlb",)) -> FusedLower:
    """The largest of the bounds ``kinds``."""
    bounds = [fused_lower(fp, kind) for kind in kinds]
    return max(bounds, key=lambda b: b.value)


def unit_scale(fp: FusedProblem) -> tuple[float, float]:
    """Exact (power-of-two) factors ``(c, k)`` with ``C / c`` and ``M / k`` at scale ~1 and
    ``k = c**r``: every cost is divided by ``k``, so POT's absolute tolerances act
    relative to the loss scale and plans do not depend on the unit."""
    scale = fp.scale()
    if scale == 0 or not math.isfinite(scale):
        return 1.0, 1.0
    e = math.frexp(scale)[1]
    r = fp.exponent
    e += (-e) % r  # a multiple of r: c = 2^(e / r) is exact
    return math.ldexp(1.0, e // r), math.ldexp(1.0, e)
