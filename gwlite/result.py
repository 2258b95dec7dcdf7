"""The immutable result every GW method returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gwlite._xp import as_float

__all__ = ["GWResult"]


@dataclass(frozen=True, repr=False)
class GWResult:
    """What a GW computation returned, and what each number provably is.

    The invariant ``lower <= GW(C1, C2, p, q) <= upper`` holds for every method (up to
    floating-point round-off in the last digits). Whenever ``coupling`` is not None it
    is a feasible coupling of ``p`` and ``q`` (up to ``marginal_error``) and ``upper``
    is exactly its GW cost.

    Attributes
    ----------
    value : float or 0-d tensor
        The method's estimate, always within ``[lower, upper]``. ``"sorted"``: the
        closed form (a lower bound) moved into the interval, i.e. ``lower`` when a
        tighter ``lower=`` bound beats it (the raw closed form is
        ``diagnostics["closed_form"]``); ``"auto"``: the GW cost of the best coupling
        found within ``time_limit``, an upper bound; ``"proximal"``/``"cg"``/
        ``"entropic"``: the GW cost of the returned coupling, an upper bound;
        ``"exact"``: the optimum over permutations (an upper bound, GW itself when
        ``certified``); ``"sdp"``: the GW cost of the best coupling rounded from the
        semidefinite relaxation, an upper bound.
    lower, upper : float or 0-d tensor
        Proven bounds on the Gromov-Wasserstein value.
    coupling : array or None
        ``(n, m)`` coupling in the input's array type, or None.
    method, loss_fun : str
    converged : bool
        The solver met its own stopping rule (``True`` for closed forms).
    n_iter : int
        Outer iterations (0 for closed forms; nodes explored for ``"exact"``).
    marginal_error : float
        ``max(|pi 1 - p|_1, |pi^T 1 - q|_1)`` of the coupling as the solver returned
        it, before any rounding onto the transport polytope (0.0 without coupling).
    certified : bool
        True only when ``value`` is proven equal to GW (``lower == upper`` up to
        round-off, or a theorem, see the exact solver).
    time_s : float
        Wall-clock seconds of input validation and the solve. Not counted: the
        one-time imports a method needs (POT, which imports torch and jax when they are
        installed, takes seconds on its first use in a process), done once after the
        inputs are validated; ``import gwlite`` itself imports none of them.
    diagnostics : Mapping
        Method-specific extras (gap identities, solver logs, bound kinds).
    """

    value: Any
    lower: Any
    upper: Any
    coupling: Any
    method: str
    loss_fun: str
    converged: bool
    n_iter: int
    marginal_error: float
    certified: bool
    time_s: float
    diagnostics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "diagnostics", MappingProxyType(dict(self.diagnostics)))

    @property
    def gap(self) -> float:
        """``upper - lower``: the width of the proven interval."""
        return as_float(self.upper) - as_float(self.lower)

    @property
    def relative_gap(self) -> float:
        """``(upper - lower) / upper`` (0 when both are 0)."""
        up = as_float(self.upper)
        return 0.0 if up == 0 else self.gap / abs(up)

    def __repr__(self) -> str:
        if self.coupling is None:
            coupling = "None"
        else:
            coupling = f"<{type(self.coupling).__name__} {tuple(self.coupling.shape)}>"
        return (
            f"GWResult(method={self.method!r}, loss_fun={self.loss_fun!r},\n"
            f"         value={as_float(self.value):.6g}, "
            f"interval=[{as_float(self.lower):.6g}, {as_float(self.upper):.6g}] "
            f"(gap {self.gap:.3g}), certified={self.certified},\n"
            f"         converged={self.converged}, n_iter={self.n_iter}, "
            f"marginal_error={self.marginal_error:.2g}, coupling={coupling}, "
            f"time={_format_time(self.time_s)})"
        )


def _format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"
