"""The conic solvers behind ``method="sdp"``: SCS and Clarabel through their Python APIs.

Both take the problem in the same form, ``min c^T v, A v + s = b, s in K`` with ``K`` =
zero cone x non-negative cone x PSD cone (see :func:`gwlite.solvers._sdp_model.conic_data`),
and are driven as iterators of :class:`Iterate`: the caller checks the certificate after
each one and stops when it is satisfied. Imported on use: they are optional dependencies
(``gwlite[certify]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CHUNK_ITERS", "CLARABEL_MAX_ITER", "ITERATES", "Iterate"]

#: SCS runs in warm-started chunks of this many iterations (shorter chunks slow it
#: down: each restart resets its adaptive step size)
CHUNK_ITERS = 250
#: Clarabel's iteration cap (it converges or stalls in 10-40 iterations here)
CLARABEL_MAX_ITER = 200


@dataclass(frozen=True)
class Iterate:
    """One point of the conic solver's run (its multipliers feed the certificate)."""

    x: np.ndarray  # svec(Y), Clarabel order
    z: np.ndarray  # dual variables (zero, non-negative, PSD rows)
    status: str
    converged: bool  # the solver met its own tolerance
    iterations: int  # total so far
    primal_objective: float
    dual_objective: float


def scs_iterates(data, tol: float, budget: float | None):
    """SCS in warm-started chunks, so that the caller can stop once certified."""
    import scs

    A, b, c, (zero, nonneg, r), perm = data
    options = dict(eps_abs=tol, eps_rel=tol, max_iters=CHUNK_ITERS, verbose=False)
    if budget is not None:
        options["time_limit_secs"] = max(budget, 1e-3)
    solver = scs.SCS(dict(A=A, b=b, c=c), dict(z=zero, l=nonneg, s=[r]), **options)
    solution, total = solver.solve(), 0
    while True:
        info = solution["info"]
        total += int(info["iter"])
        x = np.empty_like(solution["x"])
        x[perm] = solution["x"]
        yield Iterate(
            x=x,
            z=np.asarray(solution["y"]),
            status=str(info["status"]),
            converged=info["status"] == "solved",
            iterations=total,
            primal_objective=float(info["pobj"]),
            dual_objective=float(info["dobj"]),
        )
        solution = solver.solve(warm_start=True, x=solution["x"], y=solution["y"], s=solution["s"])


def clarabel_iterates(data, tol: float, budget: float | None):
    """Clarabel, run once (an interior-point method cannot be resumed)."""
    import clarabel
    import scipy.sparse as sp

    A, b, c, (zero, nonneg, r), _ = data
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.direct_solve_method = "faer"  # supernodal: ~10x faster than qdldl here
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = tol
    settings.max_iter = CLARABEL_MAX_ITER
    if budget is not None:
        settings.time_limit = max(budget, 1e-3)
    cones = [
        clarabel.ZeroConeT(zero),
        clarabel.NonnegativeConeT(nonneg),
        clarabel.PSDTriangleConeT(r),
    ]
    P = sp.csc_matrix((len(c), len(c)))
    solution = clarabel.DefaultSolver(P, c, A, b, cones, settings).solve()
    status = str(solution.status)
    while True:  # the same point again: the caller stops on `converged` or its limits
        yield Iterate(
            x=np.asarray(solution.x),
            z=np.asarray(solution.z),
            status=status,
            converged=True,
            iterations=int(solution.iterations),
            primal_objective=float(solution.obj_val),
            dual_objective=float(solution.obj_val_dual),
        )


ITERATES = {"scs": scs_iterates, "clarabel": clarabel_iterates}
