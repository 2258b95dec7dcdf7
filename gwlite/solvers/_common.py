"""Pieces every solver shares: the reported lower bound and the certification rule."""

from __future__ import annotations

from gwlite import _xp
from gwlite.bounds import compute_lower
from gwlite.problem import GWProblem

# upper - lower below this (relative to the loss scale) counts as a proven equality
CERTIFY_RTOL = 1e-12


def lower_value(problem: GWProblem, kind: str):
    """The lower bound ``kind`` as a scalar (0-d tensor if it carries a graph)."""
    return _xp.scalar(compute_lower(problem, kind), keep_graph=True)


def is_certified(problem: GWProblem, lower, upper) -> bool:
    """``lower == upper`` up to round-off: the value is then proven to be GW."""
    return _xp.as_float(upper) - _xp.as_float(lower) <= CERTIFY_RTOL * problem.scale()


def clamp_lower(lower, upper):
    """``min(lower, upper)``: both are bounds, so a lower bound above an upper bound is
    round-off (e.g. 1e-32 on isomorphic inputs) and the upper bound is the valid value."""
    return upper if _xp.as_float(lower) > _xp.as_float(upper) else lower
