"""JSON and JSON Lines for the fusion pipeline: reads with errors that name the line, atomic writes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from gwlite.atomic import atomic_open


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file.

    Parameters
    ----------
    path : path-like
        File to read (UTF-8).

    Returns
    -------
    object
        The decoded document.

    Raises
    ------
    ValueError
        If the file is not valid JSON; the message names the file, line and column.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, document)`` for each non-blank line of a JSON Lines file.

    Parameters
    ----------
    path : path-like
        File to read (UTF-8).

    Raises
    ------
    ValueError
        If a line is not valid JSON; the message names the file and the 1-based line.
    """
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) hold no document
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {lineno} is not valid JSON: {err.msg}") from None


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """Parse a JSON Lines file, one document per non-blank line (see :func:`iter_jsonl`).

    Returns
    -------
    list
        The decoded documents in file order.
    """
    return [document for _, document in iter_jsonl(path)]


def _atomic_write(path: str | os.PathLike[str], write: Callable[[TextIO], None]) -> Path:
    with atomic_open(path, "w") as handle:
        write(handle)
    return Path(path)


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[Any]) -> Path:
    """Write documents as JSON Lines so that readers never see a partial file.

    The lines go to a temporary file in the target directory, which then replaces
    ``path`` with :func:`os.replace` (atomic on POSIX and Windows within one file system).

    Parameters
    ----------
    path : path-like
        Destination; its directory is created if needed.
    records : iterable
        JSON-serialisable documents.

    Returns
    -------
    pathlib.Path
        ``path``.
    """

    def write(handle: TextIO) -> None:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    return _atomic_write(path, write)


def write_json_atomic(path: str | os.PathLike[str], document: Any) -> Path:
    """Write one JSON document (indented) atomically, like :func:`write_jsonl_atomic`.

    Parameters
    ----------
    path : path-like
        Destination; its directory is created if needed.
    document : object
        JSON-serialisable document.

    Returns
    -------
    pathlib.Path
        ``path``.
    """

    def write(handle: TextIO) -> None:
        json.dump(document, handle, indent=2, ensure_ascii=False)
        handle.write("\n")

    return _atomic_write(path, write)
