"""The two exceptions gwlite raises on purpose.

Every failure a caller can act on is one of these, with a message that says what was
wrong and what to do instead; anything else escaping gwlite is a bug.
"""

from __future__ import annotations

__all__ = ["GWInputError", "GWSolverError"]


class GWInputError(ValueError):
    """Raised for inputs or options gwlite refuses to compute on (never a silent number)."""


class GWSolverError(RuntimeError):
    """Raised when a solver produced something that is not a usable answer (e.g. NaN)."""
