"""Renamed keyword arguments: the old name still works for now, with a FutureWarning."""

from __future__ import annotations

import warnings
from typing import Any

#: old name -> new name, across fusion's losses and trainers (docs/changelog.md)
RENAMED = {"student_temperature": "temperature", "uld_top_k": "top_k"}


def renamed(old: str, old_value: Any, new_value: Any, default: Any, *, stacklevel: int = 3) -> Any:
    """The value of a renamed keyword: ``new_value``, or ``old_value`` with a FutureWarning.

    ``old_value`` is ``None`` when the old name was not passed. Passing both names (the new
    one away from its ``default``) is refused.
    """
    if old_value is None:
        return new_value
    new = RENAMED[old]
    if new_value != default:
        raise TypeError(f"got both {old}= and {new}=; {old} is the old name of {new}")
    warnings.warn(
        f"{old}= is deprecated and will be removed; use {new}= (the same option)",
        FutureWarning,
        stacklevel=stacklevel,
    )
    return old_value


def pop_renamed(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every old name replaced by its new one (FutureWarning each).

    Raises
    ------
    TypeError
        If an old name and its new one are both given.
    """
    out = dict(options)
    for old, new in RENAMED.items():
        if old in out:
            value = out.pop(old)
            if new in out:
                raise TypeError(f"got both {old}= and {new}=; {old} is the old name of {new}")
            warnings.warn(
                f"{old}= is deprecated and will be removed; use {new}= (the same option)",
                FutureWarning,
                stacklevel=4,
            )
            out[new] = value
    return out
