"""Issue 24, case 4: a damaged or contended store is one clear line, never a traceback.

A second writer is refused by the store's lock; a chunk that does not decode is named by
array and chunk index and, with ``repair=True`` / ``--repair``, recomputed to the same
numbers as a fresh run; truncated metadata is one GWInputError.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

import gwlite
from gwlite import GWInputError
from gwlite.cli import main
from gwlite.pairs.store import _lock

pytest.importorskip("zarr", reason="needs gwlite[pairwise] (zarr)")

QUIET = {"engine": 1, "progress": False}
CHUNK = 3


def _spaces():
    return [nx.graph_atlas(i) for i in (13, 29, 34, 52, 102, 160, 270, 415)]


def _chunk_file(store: Path, layer: str, name: str, idx: tuple[int, int]) -> Path:
    return store / layer / name / "c" / str(idx[0]) / str(idx[1])


def _fresh():
    return gwlite.pairwise(_spaces(), chunk=CHUNK, **QUIET)


def _made(tmp_path) -> Path:
    path = tmp_path / "s.zarr"
    gwlite.pairwise(_spaces(), chunk=CHUNK, store=path, **QUIET)
    return path


def _same(a, b) -> None:
    for name in ("lower", "upper", "certified"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


# -- one writer --------------------------------------------------------------------------
def test_second_writer_refused_in_one_line(tmp_path, capsys):
    path = _made(tmp_path)
    lock = _lock(os.fspath(path))  # what a running writer holds
    try:
        with pytest.raises(GWInputError, match="being written by another process"):
            gwlite.pairwise(_spaces(), store=path, **QUIET)
        code = main(
            ["pairwise", "builtin:florentine", "builtin:karate", "--store", str(path)]
            + ["--out", str(tmp_path / "out"), "--no-plots", "--quiet"]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "another process" in err
    finally:
        lock.release()
    _same(gwlite.pairwise(_spaces(), store=path, **QUIET), _fresh())  # free again


def test_lock_released_after_a_refused_store(tmp_path):
    path = _made(tmp_path)
    with pytest.raises(GWInputError, match="other inputs or options"):
        gwlite.pairwise(_spaces()[:5], store=path, **QUIET)
    gwlite.pairwise(_spaces(), store=path, **QUIET)  # not left locked by the refusal


WRITER = textwrap.dedent(
    """
    import sys
    import networkx as nx
    import gwlite
    from gwlite.cli import main
    sys.exit(main(["pairwise", *[f"builtin:{n}" for n in ("karate", "florentine", "davis")],
                   "--method", "cg", "--store", sys.argv[1], "--out", sys.argv[2],
                   "--no-plots", "--quiet", "--workers", "1"]))
    """
)


def test_two_processes_on_one_store_never_a_traceback(tmp_path):
    """Racing writers: each finishes or is refused with the one-line lock message."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    store = tmp_path / "race.zarr"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store), str(tmp_path / f"out{k}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    for code, (_, err) in zip(codes, outs):
        assert "Traceback" not in err, err
        assert code == 0 or (code == 2 and "another process" in err and err.count("\n") == 1)
    assert 0 in codes
    done = [k for k, c in enumerate(codes) if c == 0]
    uppers = [np.load(tmp_path / f"out{k}" / "upper.npy") for k in done]
    assert all(np.array_equal(u, uppers[0]) for u in uppers)


# -- corrupted chunks ----------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
@pytest.mark.parametrize("name", ["upper", "done"])
def test_corrupted_chunk_named_then_repaired(tmp_path, damage, name):
    path = _made(tmp_path)
    f = _chunk_file(path, "main", name, (0, 1))
    data = f.read_bytes()
    f.write_bytes(
        {"garbage": b"\x00garbage" * 7, "truncated": data[: len(data) // 2], "empty": b""}[damage]
    )
    with pytest.raises(GWInputError, match=rf"{name}\(0, 1\)") as err:
        gwlite.pairwise(_spaces(), store=path, **QUIET)
    assert "--repair" in str(err.value)
    repaired = gwlite.pairwise(_spaces(), store=path, repair=True, **QUIET)
    assert repaired.diagnostics["store_repaired"] == ["main(0, 1)"]
    assert 0 < repaired.diagnostics["pairs_computed"] <= CHUNK * CHUNK
    _same(repaired, _fresh())
    again = gwlite.pairwise(_spaces(), store=path, **QUIET)  # healed on disk
    assert again.diagnostics["pairs_computed"] == 0
    _same(again, repaired)


def test_cli_reports_then_repairs(tmp_path, capsys):
    files = []
    for i, G in enumerate(_spaces()):
        files.append(str(tmp_path / f"{i}.npy"))
        np.save(files[-1], nx.to_numpy_array(G))
    store = tmp_path / "npy.zarr"
    args = ["pairwise", *files, "--store", str(store), "--chunk", str(CHUNK)]
    args += ["--out", str(tmp_path / "out"), "--no-plots", "--quiet"]
    assert main(args) == 0
    first = np.load(tmp_path / "out" / "upper.npy")
    for idx in ((1, 2), (0, 0)):
        _chunk_file(store, "main", "lower", idx).write_bytes(b"not zstd")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lower(0, 0), lower(1, 2)" in err
    assert main([*args, "--repair"]) == 0
    assert "2 damaged tile(s)" in capsys.readouterr().out
    assert np.array_equal(np.load(tmp_path / "out" / "upper.npy"), first)


# -- truncated metadata --------------------------------------------------------------------
@pytest.mark.parametrize("meta", ["zarr.json", "main/zarr.json", "main/upper/zarr.json"])
@pytest.mark.parametrize("keep", [0.0, 0.5, 0.9])
def test_truncated_metadata_is_one_clear_error(tmp_path, capsys, meta, keep):
    path = _made(tmp_path)
    f = path / meta
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(GWInputError, match="metadata is damaged|cannot be read|not one written"):
        gwlite.pairwise(_spaces(), store=path, **QUIET)
    for i, G in enumerate(_spaces()[:3]):
        np.save(tmp_path / f"{i}.npy", nx.to_numpy_array(G))
    code = main(
        [
            "pairwise",
            *(str(tmp_path / f"{i}.npy") for i in range(3)),
            "--store",
            str(path),
            "--out",
            str(tmp_path / "out"),
            "--no-plots",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


def test_deleted_values_chunk_is_not_read_as_missing_values(tmp_path):
    """Found by the fuzz harness: a deleted chunk reads as its fill (NaN) while the pairs
    stay flagged done; the store is refused (or repaired), never NaN in the result."""
    path = _made(tmp_path)
    _chunk_file(path, "main", "upper", (0, 1)).unlink()
    with pytest.raises(GWInputError, match=r"done without values .*upper\(0, 1\)"):
        gwlite.pairwise(_spaces(), store=path, **QUIET)
    repaired = gwlite.pairwise(_spaces(), store=path, repair=True, **QUIET)
    assert repaired.diagnostics["store_repaired"] == ["main(0, 1)"]
    _same(repaired, _fresh())


def test_deleted_done_chunk_is_recomputed(tmp_path):
    path = _made(tmp_path)
    _chunk_file(path, "main", "done", (0, 1)).unlink()
    again = gwlite.pairwise(_spaces(), store=path, **QUIET)
    assert 0 < again.diagnostics["pairs_computed"] <= CHUNK * CHUNK
    _same(again, _fresh())
