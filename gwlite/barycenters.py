r"""GW and fused GW barycenters by block-coordinate descent, each input with its interval.

The barycenter of structures :math:`C_s` (weights :math:`p_s`, features :math:`Y_s`),
with weights :math:`\lambda_s`, minimises over :math:`C` (and :math:`Y`) with fixed
node weights :math:`p`

.. math::

    \sum_s \lambda_s \, \mathrm{FGW}_\alpha((C, Y, p), (C_s, Y_s, p_s)),

the GW barycenter (Peyre, Cuturi & Solomon 2016) when there are no features
(:math:`\alpha = 1`), the FGW barycenter (Vayer et al. 2019) otherwise, with the feature
cost :math:`M_{ij} = \|y_i - y^s_j\|^2`. Block-coordinate descent alternates

1. the couplings: each :math:`\pi_s` by POT's conditional gradient, warm-started from
   the previous one (kept only if it is not worse, so the objective never rises);
2. the structure, in closed form for the square loss (Peyre et al. 2016, Prop. 3):
   :math:`C = \sum_s \lambda_s \pi_s C_s \pi_s^\top / (p p^\top)`;
3. the features: :math:`Y = \sum_s \lambda_s \pi_s Y_s / p` (the minimiser of the
   linear term, a weighted mean).

``objective`` is exactly :math:`\sum_s \lambda_s \mathcal F_\alpha(\pi_s)` at the
returned :math:`C, Y`: an upper bound on the barycenter objective at :math:`(C, Y)`,
since each :math:`\pi_s` is a feasible coupling; each input's ``lowers[s]`` is the fused
TLB of the pair (:mod:`gwlite.fused_bounds`), so
``lowers[s] <= FGW((C, Y), input s) <= costs[s]``.

References
----------
G. Peyre, M. Cuturi, J. Solomon. Gromov-Wasserstein averaging of kernel and distance
matrices. ICML 2016.
T. Vayer, L. Chapel, R. Flamary, R. Tavenard, N. Courty. Optimal transport for
structured data with application on graphs. ICML 2019.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from gwlite import _xp
from gwlite.errors import GWInputError
from gwlite.fused_bounds import FusedProblem, fused_lower
from gwlite.problem import GWProblem, as_input_array, check_alpha, check_weights, make_problem
from gwlite.solvers._common import optional, positive_int, positive_real
from gwlite.solvers.fused import _cg_plan, _feasible

__all__ = ["BarycenterResult", "barycenter"]


@dataclass(frozen=True, repr=False)
class BarycenterResult:
    """A barycenter and what each number provably is.

    Attributes
    ----------
    C : numpy.ndarray ``(n, n)``
        The barycenter's structure.
    Y : numpy.ndarray ``(n, d)`` or None
        Its node features (FGW barycenter), None for the GW barycenter.
    p : numpy.ndarray ``(n,)``
        Its node weights.
    couplings : tuple of numpy.ndarray
        ``couplings[s]``: a coupling of ``p`` and ``ps[s]``, shape ``(n, n_s)``.
    costs : tuple of float
        ``costs[s]``: the (fused) GW cost of ``couplings[s]`` at ``(C, Y)``, an upper bound
        on the distance from the barycenter to input ``s``.
    lowers : tuple of float
        ``lowers[s]``: a proven lower bound on that distance (fused TLB).
    objective : float
        ``sum_s lambdas[s] * costs[s]`` exactly.
    lambdas : numpy.ndarray
    alpha : float
        1.0 for the GW barycenter.
    n_iter : int
        Block-coordinate steps of the best initialisation.
    converged : bool
        The relative decrease of the objective fell below ``tol``.
    time_s : float
    history : tuple of float
        The objective after each step of the best initialisation.
    diagnostics : Mapping
        ``init`` (the best initialisation), ``objectives`` (each initialisation's final
        objective), ``stop_reason``.
    """

    C: np.ndarray
    Y: np.ndarray | None
    p: np.ndarray
    couplings: tuple
    costs: tuple
    lowers: tuple
    objective: float
    lambdas: np.ndarray
    alpha: float
    n_iter: int
    converged: bool
    time_s: float
    history: tuple
    diagnostics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "diagnostics", MappingProxyType(dict(self.diagnostics)))

    @property
    def intervals(self) -> tuple:
        """``(lowers[s], costs[s])`` for each input: the proven interval of its distance."""
        return tuple(zip(self.lowers, self.costs))

    def __repr__(self) -> str:
        return (
            f"BarycenterResult(n={len(self.p)}, inputs={len(self.costs)}, alpha={self.alpha}, "
            f"objective={self.objective:.6g}, n_iter={self.n_iter}, "
            f"converged={self.converged}, time={self.time_s:.2f} s)"
        )


# ---------------------------------------------------------------- inputs
@dataclass(frozen=True)
class _Inputs:
    Cs: list
    ps: list
    Ys: list | None
    lambdas: np.ndarray
    p: np.ndarray
    alpha: float


def _host(x) -> np.ndarray:
    return np.asarray(_xp.to_numpy(_xp.detach(x)), dtype=np.float64)


def _check_inputs(Cs, n, lambdas, ps, p, Ys, alpha) -> _Inputs:
    if isinstance(Cs, np.ndarray) or not isinstance(Cs, Sequence) or len(Cs) == 0:
        raise GWInputError("Cs must be a non-empty list of structure matrices")
    n = positive_int("n", n)
    ps = [None] * len(Cs) if ps is None else list(ps)
    if len(ps) != len(Cs):
        raise GWInputError(f"ps has {len(ps)} weight vectors for {len(Cs)} matrices")
    problems = [make_problem(C, C, w, w) for C, w in zip(Cs, ps)]
    Cs = [_host(pr.C1) for pr in problems]
    ps = [_host(pr.p) for pr in problems]
    S = len(Cs)
    if lambdas is None:
        lambdas = np.full(S, 1.0 / S)
    lambdas = _host(as_input_array(lambdas, "lambdas"))
    lambdas = check_weights(np, lambdas, S, (), "lambdas", np.float64)
    p = check_weights(
        np, None if p is None else _host(as_input_array(p, "p")), n, (), "p", np.float64
    )
    if Ys is None:
        if alpha is not None:
            raise GWInputError("alpha weighs node features: pass Ys (one (n_s, d) array per input)")
        return _Inputs(Cs, ps, None, lambdas, p, 1.0)
    alpha = check_alpha(0.5 if alpha is None else alpha)
    if len(Ys) != S:
        raise GWInputError(f"Ys has {len(Ys)} feature arrays for {S} matrices")
    Ys = [_features(Y, len(C), s) for s, (Y, C) in enumerate(zip(Ys, Cs))]
    if len({Y.shape[1] for Y in Ys}) != 1:
        raise GWInputError("every Ys[s] must have the same number of feature columns")
    return _Inputs(Cs, ps, Ys, lambdas, p, alpha)


def _features(Y, n_s: int, s: int) -> np.ndarray:
    Y = _host(as_input_array(Y, f"Ys[{s}]"))
    Y = Y[:, None] if Y.ndim == 1 else Y
    if Y.ndim != 2 or Y.shape[0] != n_s:
        raise GWInputError(f"Ys[{s}] must have shape ({n_s}, d), got {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise GWInputError(f"Ys[{s}] has non-finite entries (NaN or Inf)")
    return Y


# ---------------------------------------------------------------- the three blocks
def _sqdist(X, Y) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return cdist(X, Y, "sqeuclidean")


def _pair(inp: _Inputs, C, Y, s: int) -> FusedProblem:
    """The pair (barycenter, input s): built from validated host arrays, not re-checked
    (``C`` and ``Y`` are weighted means of validated inputs)."""
    M = np.zeros((len(C), len(inp.Cs[s]))) if Y is None else _sqdist(Y, inp.Ys[s])
    gw = GWProblem(C, inp.Cs[s], inp.p, inp.ps[s], "square_loss", uniform=False)
    return FusedProblem(gw, M, inp.alpha, C)


def _new_plans(inp: _Inputs, pairs: list, Ts: list, method: str) -> list:
    """``"cg"``: POT's conditional gradient pair by pair, from the previous coupling (the
    product ``p q^T`` the first time); ``"proximal"``: every pair of the step in one
    batched solve (``gwlite.solvers.batched.solve_batch``), the previous couplings
    among its starts."""
    if method == "cg":
        return [_cg_plan(fp, T, 10_000, 1e-9, 1e-9, False, None)[0] for fp, T in zip(pairs, Ts)]
    from gwlite.solvers.batched import solve_batch

    results = solve_batch(
        [fp.gw for fp in pairs], M=[fp.M for fp in pairs], alpha=inp.alpha, G0=Ts, n_starts=2
    )
    return [np.asarray(res.coupling) for res in results]


def _update_couplings(inp: _Inputs, C, Y, Ts: list, method: str = "cg") -> list:
    """New couplings for the barycenter ``(C, Y)``; the old coupling is kept when the new
    one is not cheaper, so the objective never rises."""
    pairs = [_pair(inp, C, Y, s) for s in range(len(Ts))]
    out = []
    for fp, T, plan in zip(pairs, Ts, _new_plans(inp, pairs, Ts, method)):
        plan = _feasible(fp, plan)[0]
        out.append(plan if T is None or fp.cost(plan) <= fp.cost(T) else T)
    return out


def _update_structure(inp: _Inputs, Ts: list) -> np.ndarray:
    """Peyre et al. (2016), Prop. 3 (square loss): the weighted mean of the transported
    structures, divided by :math:`p p^\\top` (nodes with mass; 0 elsewhere)."""
    pp = np.outer(inp.p, inp.p)
    total = sum(lam * T @ Cs @ T.T for lam, T, Cs in zip(inp.lambdas, Ts, inp.Cs))
    return np.divide(total, pp, out=np.zeros_like(total), where=pp > 0)


def _update_features(inp: _Inputs, Ts: list) -> np.ndarray | None:
    if inp.Ys is None:
        return None
    total = sum(lam * T @ Y for lam, T, Y in zip(inp.lambdas, Ts, inp.Ys))
    p = inp.p[:, None]
    return np.divide(total, p, out=np.zeros_like(total), where=p > 0)


def _costs(inp: _Inputs, C, Y, Ts: list) -> list[float]:
    return [_pair(inp, C, Y, s).cost(T) for s, T in enumerate(Ts)]


# ---------------------------------------------------------------- initialisations
def _pot_start(inp: _Inputs, n: int, max_iter: int, seed: int):
    """POT's own barycenter (``gromov_barycenters`` / ``fgw_barycenters``, the same
    lambdas, size and iterations) and its couplings: gwlite's descent continues from it,
    so the result is never worse than POT's."""
    import ot

    from gwlite.solvers.pot import _call_pot

    common = dict(lambdas=list(inp.lambdas), p=inp.p, max_iter=max_iter, log=True)
    common.update(random_state=seed, symmetric=all(np.allclose(C, C.T) for C in inp.Cs))
    if inp.Ys is None:
        (C, log), _ = _call_pot(
            "gromov_barycenters", ot.gromov.gromov_barycenters, n, inp.Cs, inp.ps, **common
        )
        return C, None, list(log["T"])
    (Y, C, log), _ = _call_pot(
        "fgw_barycenters",
        ot.gromov.fgw_barycenters,
        n,
        inp.Ys,
        inp.Cs,
        inp.ps,
        alpha=inp.alpha,
        **common,
    )
    return C, Y, list(log["T"])


def _init(inp: _Inputs, n: int, k: int, rng):
    """Start ``k >= 1``: the inputs by decreasing weight, transported onto ``p`` by the
    monotone coupling of their nodes ordered by degree, then random (POT's kind)."""
    order = np.argsort(-inp.lambdas, kind="stable")
    if k - 1 < len(order):
        import ot

        s = int(order[k - 1])
        idx = np.argsort(-inp.Cs[s].sum(axis=1), kind="stable")
        T = np.zeros((n, len(idx)))
        # float positions: POT's emd_1d returns an integer (zero) plan for integer ones
        x, y = np.arange(n, dtype=float), np.arange(len(idx), dtype=float)
        T[:, idx] = ot.emd_1d(x, y, inp.p, inp.ps[s][idx])
        one = _single(inp, s)
        return _update_structure(one, [T]), _update_features(one, [T])
    A = rng.random((n, n))
    Y = None
    if inp.Ys is not None:
        pool = np.concatenate(inp.Ys)
        Y = pool[rng.choice(len(pool), size=n)]
    return (A + A.T) / 2, Y


def _single(inp: _Inputs, s: int) -> _Inputs:
    Ys = None if inp.Ys is None else [inp.Ys[s]]
    return _Inputs([inp.Cs[s]], [inp.ps[s]], Ys, np.ones(1), inp.p, inp.alpha)


@dataclass
class _Run:
    C: np.ndarray
    Y: np.ndarray | None
    Ts: list
    costs: list
    objective: float
    history: list
    stop: str = "max_iter"


def _descend(inp: _Inputs, C, Y, Ts, cfg: dict, deadline: float, bar) -> _Run:
    """Block-coordinate descent from ``(C, Y)`` (and couplings ``Ts``, or None):
    couplings, then structure and features."""
    max_iter, tol, method = cfg["max_iter"], cfg["tol"], cfg["method"]
    Ts = _update_couplings(inp, C, Y, Ts or [None] * len(inp.Cs), method)
    costs = _costs(inp, C, Y, Ts)
    run = _Run(C, Y, Ts, costs, float(inp.lambdas @ costs), [])
    for _ in range(max_iter):
        if time.perf_counter() >= deadline:
            run.stop = "time_limit"
            break
        C_new, Y_new = _update_structure(inp, run.Ts), _update_features(inp, run.Ts)
        Ts = _update_couplings(inp, C_new, Y_new, run.Ts, method)
        costs = _costs(inp, C_new, Y_new, Ts)
        objective = float(inp.lambdas @ costs)
        bar.update(1)
        if objective > run.objective:  # round-off only: each block is a minimiser
            run.stop = "converged"
            break
        decrease = run.objective - objective
        run.C, run.Y, run.Ts, run.costs, run.objective = C_new, Y_new, Ts, costs, objective
        run.history.append(objective)
        if decrease <= tol * max(objective, 1e-300):
            run.stop = "converged"
            break
    return run


def barycenter(
    Cs,
    n: int,
    *,
    lambdas=None,
    ps=None,
    p=None,
    Ys=None,
    alpha: float | None = None,
    method: str = "cg",
    loss_fun: str = "square_loss",
    max_iter: int = 100,
    tol: float = 1e-7,
    n_init: int = 1,
    time_limit: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> BarycenterResult:
    r"""GW barycenter (no ``Ys``) or fused GW barycenter (with ``Ys`` and ``alpha``).

    Parameters
    ----------
    Cs : list of arrays ``(n_s, n_s)``
        The input structures.
    n : int
        Size of the barycenter.
    lambdas : array ``(S,)``, optional
        Weights of the inputs (non-negative, summing to 1); uniform by default.
    ps : list of arrays, optional
        Node weights of each input; uniform by default.
    p : array ``(n,)``, optional
        Node weights of the barycenter; uniform by default.
    Ys : list of arrays ``(n_s, d)``, optional
        Node features of each input (FGW barycenter, squared Euclidean feature cost).
    alpha : float in [0, 1], optional
        Weight of the structure term (FGW barycenter only; 0.5 by default with ``Ys``).
    method : {"cg", "proximal"}
        The coupling step: ``"cg"``, POT's conditional gradient pair by pair,
        warm-started; ``"proximal"``, all couplings of a step in one batched solve
        (gwlite's mirror descent with the linear term, the previous couplings among the
        starts, ``gwlite.solvers.batched``).
    loss_fun : {"square_loss"}
        The closed-form structure update holds for the square loss.
    max_iter : int
        Block-coordinate steps per initialisation (POT's default for FGW barycenters: 100).
    tol : float
        Stop when the objective decreases by less than ``tol`` times its value.
    n_init : int
        Initialisations: first POT's own barycenter (``gromov_barycenters`` or
        ``fgw_barycenters`` with the same ``lambdas``, ``n``, ``max_iter`` and ``seed``)
        and its couplings, so that the result is never worse than POT's; then the
        inputs by decreasing ``lambdas`` transported onto ``p``, then random symmetric
        matrices. The one with the smallest objective is returned.
    time_limit : float, optional
        Seconds for the whole call (checked between steps).
    seed : int
        Seed of the random initialisations.
    progress : bool, optional
        A tqdm bar over the steps (None: when writing to a terminal).

    Returns
    -------
    BarycenterResult
        ``objective = sum_s lambdas[s] * costs[s]`` exactly, ``costs[s]`` the cost of
        ``couplings[s]`` at the returned ``C`` (and ``Y``), ``lowers[s]`` a proven lower
        bound on that pair's distance.

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> C = np.array([[0., 1., 2.], [1., 0., 1.], [2., 1., 0.]])
    >>> res = gwlite.barycenter([C, C], 3, progress=False)
    >>> round(res.objective, 12), res.intervals[0][0] <= res.costs[0]
    (0.0, True)
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    if method not in ("cg", "proximal"):
        raise GWInputError(
            f"unknown method {method!r} for barycenter; choose one of ['cg', 'proximal']"
        )
    if loss_fun != "square_loss":
        raise GWInputError(
            "barycenter supports loss_fun='square_loss' only (its closed-form structure update)"
        )
    max_iter, n_init = positive_int("max_iter", max_iter), positive_int("n_init", n_init)
    time_limit = optional(positive_real)("time_limit", time_limit)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise GWInputError(f"tol must be a number >= 0, got {tol!r}")
    inp = _check_inputs(Cs, n, lambdas, ps, p, Ys, alpha)
    cfg = {"max_iter": max_iter, "tol": tol, "method": method}
    deadline = math.inf if time_limit is None else start + time_limit
    rng = np.random.default_rng(seed)
    runs = []
    disable = None if progress is None else not progress  # None: only on a terminal
    with tqdm(total=n_init * max_iter, desc="barycenter", unit="step", disable=disable) as bar:
        for k in range(n_init):
            if k and time.perf_counter() >= deadline:
                break
            C0, Y0, Ts = (
                _pot_start(inp, n, max_iter, seed) if k == 0 else (*_init(inp, n, k, rng), None)
            )
            runs.append((k, _descend(inp, C0, Y0, Ts, cfg, deadline, bar)))
    k, best = min(runs, key=lambda item: item[1].objective)
    lowers = [fused_lower(_pair(inp, best.C, best.Y, s)).value for s in range(len(inp.Cs))]
    lowers = [min(low, cost) for low, cost in zip(lowers, best.costs)]  # round-off only
    return BarycenterResult(
        C=best.C,
        Y=best.Y,
        p=inp.p,
        couplings=tuple(best.Ts),
        costs=tuple(best.costs),
        lowers=tuple(lowers),
        objective=best.objective,
        lambdas=inp.lambdas,
        alpha=inp.alpha,
        n_iter=len(best.history),
        converged=best.stop == "converged",
        time_s=time.perf_counter() - start,
        history=tuple(best.history),
        diagnostics={
            "init": k,
            "objectives": [run.objective for _, run in runs],
            "stop_reason": best.stop,
        },
    )
