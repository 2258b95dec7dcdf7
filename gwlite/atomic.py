"""Atomic file writes: readers see the old file or the new one, never half of one.

The one implementation used across the project (``gwlite verify`` outputs, teacher
caches, evaluation records, the fusion demo): write to a temporary file in the target's
folder (same file system, so the rename is atomic), optionally flush it to disk, then
``os.replace`` it over the target. Anything that fails before the rename removes the
temporary file, so an interrupted run leaves the previous file intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

__all__ = ["TEMP_SUFFIX", "atomic_open", "atomic_write_bytes", "temp_target"]

#: suffix of the temporary files (``.NAME.XXXX.tmp``), so leftovers can be recognised
TEMP_SUFFIX = ".tmp"


def temp_target(name: str) -> str | None:
    """The file a temporary file ``.NAME.XXXX.tmp`` of this module was to become, or
    ``None`` when ``name`` is not one (what a killed writer leaves behind)."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return None
    target, _, _ = name[1 : -len(TEMP_SUFFIX)].rpartition(".")
    return target or None


def _fsync_dir(directory: Path) -> None:
    # makes the rename itself durable; not every platform lets a folder be opened
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", *, durable: bool = False, **open_kwargs
) -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the block exits without error.

    Parameters
    ----------
    path : path-like
        Destination; its folder is created if needed.
    mode : {"w", "wb"}
        Text or binary.
    durable : bool
        ``fsync`` the file and its folder, so the new content survives a power loss.
    **open_kwargs
        Passed to :func:`os.fdopen` (``encoding``, ``newline``; text mode defaults to
        UTF-8).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_open(target) as fh:
    ...     _ = fh.write("all or nothing")
    >>> target.read_text()
    'all or nothing'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    try:
        # mkstemp creates 0600 files; outputs are meant to be shared like any data file
        with suppress(OSError):
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (durably by default); see :func:`atomic_open`."""
    with atomic_open(path, "wb", durable=durable) as handle:
        handle.write(data)
