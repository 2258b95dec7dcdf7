r"""Warm-started, log-stabilised Sinkhorn projections on batches of kernels.

The proximal GW solver needs, at every outer iteration, the KL projection of a
kernel :math:`\exp(Z)` onto the transport polytope :math:`\Pi(p, q)`:

.. math::

    \pi = \operatorname{diag}(e^{f}) \, e^{Z} \operatorname{diag}(e^{g}), \qquad
    \pi 1 = p, \quad \pi^\top 1 = q.

Consecutive outer iterations have nearly the same kernel, so the potentials are
carried from one to the next and a few updates per outer iteration suffice: the
projection converges *across* the outer loop, as in single-loop schemes (Li et al.
2023). Each projection is one update of :math:`f` and one of :math:`g` in the log
domain (max-shifted log-sum-exp: no overflow whatever the scale of :math:`Z`),
followed by plain scaling iterations on the kernel :math:`e^{Z + f \oplus g}`, whose
rows and columns then have sums of order :math:`p` and :math:`q`, so the scalings
stay in range; they are absorbed into the potentials at the end. The update that
starts a projection is the one for the side that was *not* updated last, so the
freshest potential is the one carried over.

Kernel entries are clamped below at ``exp(floor)``, a normal floating-point number:
subnormal entries would make every later matrix product on the CPU many times
slower, and they carry no mass that matters (below ``1e-30``).

Everything is written on the array API and works on stacks ``(..., n, m)``.

References
----------
M. Cuturi. Sinkhorn distances: lightspeed computation of optimal transport. NeurIPS
2013.
B. Schmitzer. Stabilized sparse scaling algorithms for entropy regularized transport
problems. SIAM J. Sci. Comput. 41(3), 2019.
J. Li, J. Tang, L. Kong, H. Liu, J. Li, A. M.-C. So, J. Blanchet. A convergent
single-loop algorithm for relaxation of Gromov-Wasserstein in graph data. ICLR 2023.
"""

from __future__ import annotations

import math

__all__ = ["floor_for", "logsumexp", "marginal_l1", "project"]


def floor_for(xp, dtype) -> float:
    """Smallest log-kernel value kept: ``exp(floor)`` is a normal number, far below any
    mass that matters (about ``1e-30`` in float32, ``1e-290`` in float64)."""
    tiny = float(xp.finfo(dtype).tiny)
    return math.log(tiny) + 18.0


def logsumexp(xp, W, axis: int):
    """``log(sum(exp(W), axis))`` shifted by the maximum (finite for finite ``W``)."""
    top = xp.max(W, axis=axis, keepdims=True)
    out = top + xp.log(xp.sum(xp.exp(W - top), axis=axis, keepdims=True))
    return xp.squeeze(out, axis=axis)


def project(xp, Z, log_p, log_q, p, q, g, n_scaling: int, floor: float):
    r"""Approximate KL projection of ``exp(Z)`` onto :math:`\Pi(p, q)`, warm-started.

    Parameters
    ----------
    Z : array ``(..., n, m)``
        Log-kernel.
    log_p, log_q, p, q : arrays ``(..., n)``, ``(..., m)``
        The marginals (all positive) and their logarithms.
    g : array ``(..., m)``
        Column potential from the previous projection (zeros at the start).
    n_scaling : int
        Scaling iterations after the two log-domain updates.
    floor : float
        Log-kernel values below it are raised to it (see :func:`floor_for`).

    Returns
    -------
    plan : array ``(..., n, m)``
        Column sums exactly ``q`` (up to round-off), row sums approximately ``p``.
    g : array ``(..., m)``
        The column potential to carry to the next projection.
    """
    f = log_p - logsumexp(xp, Z + g[..., None, :], -1)
    g = log_q - logsumexp(xp, Z + f[..., :, None], -2)
    K = xp.exp(xp.maximum(Z + f[..., :, None] + g[..., None, :], floor))
    if n_scaling == 0:
        return K, g
    small = math.exp(floor)
    v = xp.ones_like(q)
    for _ in range(n_scaling):
        u = p / xp.maximum((K @ v[..., :, None])[..., 0], small)
        v = q / xp.maximum((u[..., None, :] @ K)[..., 0, :], small)
    return K * (u[..., :, None] * v[..., None, :]), g + xp.log(v)


def marginal_l1(xp, plan, p, q):
    """Per-plan ``|pi 1 - p|_1 + |pi^T 1 - q|_1`` (shape ``(...)``)."""
    rows = xp.sum(xp.abs(xp.sum(plan, axis=-1) - p), axis=-1)
    cols = xp.sum(xp.abs(xp.sum(plan, axis=-2) - q), axis=-1)
    return rows + cols
