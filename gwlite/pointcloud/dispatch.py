"""Point clouds through the public functions: :func:`gwlite.gromov_wasserstein`,
:func:`gwlite.lower_bound` and :func:`gwlite.gw_cost` hand any :class:`PointCloud` here.

Small clouds (at most :data:`DENSE_MAX` points) may be turned into their distance
matrices, so that every matrix method and bound applies and gives the dense answer
(``method="auto"`` adds the spectral bound of the clouds to the dense bounds);
``method="auto"`` above that size and ``method="multiscale"`` at any size never build an
``n x n`` matrix.
"""

from __future__ import annotations

import dataclasses
import inspect
import time

import numpy as np
import scipy.sparse

from gwlite import _xp
from gwlite.coupling import SparseCoupling
from gwlite.errors import GWInputError
from gwlite.pointcloud import geometry
from gwlite.pointcloud._cloud import PointCloud, is_point_cloud
from gwlite.pointcloud.bounds import CLOUD_LOWER_BOUNDS, cloud_lower
from gwlite.pointcloud.spectral import spectral_lower
from gwlite.problem import as_input_array, check_loss
from gwlite.result import GWResult
from gwlite.solvers import multiscale
from gwlite.solvers._common import check_options

__all__ = ["DENSE_MAX", "gromov_wasserstein_clouds", "gw_cost_clouds", "lower_bound_clouds"]

#: ``method="auto"`` turns clouds of at most this many points into distance matrices
#: (then every dense stage applies); above, it runs ``multiscale``
DENSE_MAX = 3000
#: the most points a cloud may have to be turned into a matrix at all (800 MB in float64)
MATERIALISE_MAX = 10_000


def _with_weights(x, w, name: str):
    """A cloud carrying the weights ``w`` passed separately (``p`` or ``q``), if any."""
    if w is None or not is_point_cloud(x):
        return x
    if x.weights is not None:
        raise GWInputError(
            f"{name} was given twice: as the cloud's weights and as {name}=; pass one"
        )
    return PointCloud(x.X, x.metric, as_input_array(w, name), x.chunk_entries)


def _dense(x, what: str):
    """``(C, weights)`` of a cloud as a distance matrix, or a matrix unchanged."""
    if not is_point_cloud(x):
        return x, None
    if x.n > MATERIALISE_MAX:
        raise GWInputError(
            f"{what} needs the {x.n} x {x.n} distance matrix, which gwlite builds only up to "
            f"{MATERIALISE_MAX} points; use method='multiscale' (or 'auto') and the "
            f"point-cloud bounds {list(CLOUD_LOWER_BOUNDS)}"
        )
    return geometry.distances(x.X, x.X, x.metric), x.p


def _both_dense(C1, C2, p, q, what: str):
    libraries = {_xp.backend_name(c.X if is_point_cloud(c) else c) for c in (C1, C2)}
    if len(libraries) > 1:  # a torch cloud against a NumPy one: compare on the host
        C1, C2 = (c.to_host() if is_point_cloud(c) else _xp.to_numpy(c) for c in (C1, C2))
    D1, w1 = _dense(C1, what)
    D2, w2 = _dense(C2, what)
    return D1, D2, (p if w1 is None else w1), (q if w2 is None else w2)


def gromov_wasserstein_clouds(C1, C2, p, q, method: str, loss_fun: str, options: dict):
    """:func:`gwlite.gromov_wasserstein` when ``C1`` or ``C2`` is a :class:`PointCloud`."""
    from gwlite.api import gromov_wasserstein

    check_loss(loss_fun)
    C1, C2 = _with_weights(C1, p, "p"), _with_weights(C2, q, "q")
    clouds = is_point_cloud(C1) and is_point_cloud(C2)
    big = clouds and max(C1.n, C2.n) > DENSE_MAX
    if method == "multiscale" or (method == "auto" and big):
        if not clouds:
            raise GWInputError("method='multiscale' takes two gwlite.PointCloud inputs")
        route = "multiscale"
        if method == "auto":
            route = (
                f"auto: {C1.n} and {C2.n} points, above DENSE_MAX = {DENSE_MAX}: "
                "multiscale, no n x n matrix"
            )
        return _multiscale(C1, C2, loss_fun, options, route)
    D1, D2, p, q = _both_dense(C1, C2, p, q, f"method={method!r}")
    result = gromov_wasserstein(D1, D2, p, q, method=method, loss_fun=loss_fun, **options)
    route = f"{method}: dense distance matrices ({D1.shape[0]} and {D2.shape[0]} points)"
    result = dataclasses.replace(result, diagnostics={**result.diagnostics, "route": route})
    if method == "auto" and clouds and loss_fun == "square_loss":
        result = _with_spectral(C1, C2, result)
    return result


def _with_spectral(c1: PointCloud, c2: PointCloud, result: GWResult) -> GWResult:
    """``auto`` on small clouds: the spectral bound (:mod:`gwlite.pointcloud.spectral`) joins
    the dense bounds; the larger is ``lower`` and ``diagnostics["lower_by"]`` names it."""
    value = spectral_lower(c1, c2).value
    extra = {"spectral_lower": value}
    if value > _xp.as_float(result.lower):
        extra["lower_by"] = "spectral"
        result = dataclasses.replace(result, lower=min(value, _xp.as_float(result.upper)))
    return dataclasses.replace(result, diagnostics={**result.diagnostics, **extra})


def _multiscale(c1: PointCloud, c2: PointCloud, loss_fun: str, options: dict, route: str):
    params = inspect.signature(multiscale.solve).parameters
    accepted = {k: v.default for k, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY}
    options = check_options("multiscale", multiscale.solve, options, accepted)
    start = time.perf_counter()
    # k-means, the coarse solver and the lift run on the host (n x d coordinates cross)
    result: GWResult = multiscale.solve(c1.to_host(), c2.to_host(), loss_fun, **options)
    return dataclasses.replace(
        result,
        time_s=time.perf_counter() - start,
        diagnostics={**result.diagnostics, "route": route},
    )


def lower_bound_clouds(C1, C2, p, q, loss_fun: str, lower: str) -> float:
    """:func:`gwlite.lower_bound` when ``C1`` or ``C2`` is a :class:`PointCloud`.

    The point-cloud bounds (:data:`~gwlite.pointcloud.bounds.CLOUD_LOWER_BOUNDS`) need no
    matrix; the others (``slb``, ``tlb``, ``rank_one``) are computed on the distance
    matrices of clouds of at most ``MATERIALISE_MAX`` points.
    """
    from gwlite.bounds import lower_bound

    check_loss(loss_fun)
    C1, C2 = _with_weights(C1, p, "p"), _with_weights(C2, q, "q")
    if is_point_cloud(C1) and is_point_cloud(C2) and lower in CLOUD_LOWER_BOUNDS:
        return cloud_lower(C1, C2, lower, loss_fun)
    if lower in CLOUD_LOWER_BOUNDS and lower not in ("mean_row", "flb"):
        raise GWInputError(f"lower={lower!r} takes two gwlite.PointCloud inputs")
    D1, D2, p, q = _both_dense(C1, C2, p, q, f"lower={lower!r}")
    return lower_bound(D1, D2, p, q, loss_fun=loss_fun, lower=lower)


def _entries(coupling, shape: tuple[int, int]):
    """``(rows, cols, values)`` of a dense, SciPy sparse or SparseCoupling coupling, and its
    marginals ``(a, b)``. A dense torch or CuPy coupling stays on its device (its
    non-zeros are found there: no ``n x m`` host copy)."""
    if isinstance(coupling, SparseCoupling):
        rows, cols = np.asarray(coupling.rows), np.asarray(coupling.cols)
        values, got = _xp.to_numpy(coupling.values), tuple(coupling.shape)
    elif scipy.sparse.issparse(coupling):
        coo = scipy.sparse.coo_array(coupling)
        coo.sum_duplicates()
        rows, cols, values, got = coo.row, coo.col, coo.data, coo.shape
    else:
        T = _xp.detach(as_input_array(coupling, "coupling"))
        if tuple(T.shape) != shape or T.ndim != 2:
            raise GWInputError(f"coupling has shape {tuple(T.shape)}; expected {shape}")
        xp = _xp.array_namespace(T)
        T = xp.astype(T, xp.float64)
        rows, cols = xp.nonzero(T)
        return rows, cols, T[rows, cols], (xp.sum(T, axis=1), xp.sum(T, axis=0))
    if tuple(got) != shape:
        raise GWInputError(f"coupling has shape {tuple(got)}; expected {shape}")
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    values = np.asarray(values, dtype=np.float64)
    marginals = tuple(
        np.bincount(i, values, minlength=m) for i, m in ((rows, shape[0]), (cols, shape[1]))
    )
    return rows, cols, values, marginals


def _check_coupling(values, marginals, p, q):
    xp = _xp.array_namespace(values)
    if not bool(xp.all(xp.isfinite(values))):
        raise GWInputError("coupling has non-finite entries (NaN or Inf)")
    if values.shape[0] and float(xp.min(values)) < -1e-8 * max(float(xp.max(values)), 0.0):
        raise GWInputError("coupling has negative entries; a coupling is non-negative")
    mass = float(xp.sum(values))
    if not abs(mass - 1) <= 1e-8:
        raise GWInputError(f"coupling has total mass {mass:.6g}, not 1")
    for got, target, name in ((marginals[0], p, "p"), (marginals[1], q, "q")):
        if target is None:
            continue
        target = _xp.to_numpy(as_input_array(target, name))
        error = np.abs(_xp.to_numpy(got) - np.asarray(target, dtype=np.float64)).sum()
        if not error <= 1e-8:
            raise GWInputError(f"coupling's marginal is off {name} by {error:.3g} (l1)")


def gw_cost_clouds(C1, C2, coupling, loss_fun: str, p, q, check: bool) -> float:
    """:func:`gwlite.gw_cost` when ``C1`` or ``C2`` is a :class:`PointCloud`: exact, never
    sampled, in blocks of bounded memory (:func:`geometry.gw_cost_sparse`). As for
    matrices, ``p`` and ``q`` are the marginals the coupling must have, when given."""
    from gwlite.coupling import gw_cost

    check_loss(loss_fun)
    if not (is_point_cloud(C1) and is_point_cloud(C2)):
        D1, D2, _, _ = _both_dense(C1, C2, None, None, "gw_cost with a matrix and a cloud")
        return gw_cost(D1, D2, coupling, loss_fun, p=p, q=q, check=check)
    rows, cols, values, marginals = _entries(coupling, (C1.n, C2.n))
    if check:
        _check_coupling(values, marginals, p, q)
    return geometry.gw_cost_sparse(C1, C2, rows, cols, values, loss_fun)
