"""The gwlite command line."""

import json
import subprocess
import sys

import numpy as np
import pytest

from gwlite.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "distance" in out and "proven" in out


def test_distance_prints_interval(capsys):
    assert (
        main(["distance", "builtin:karate", "builtin:florentine", "--kind", "shortest_path"]) == 0
    )
    out = capsys.readouterr().out
    assert "interval [" in out and "method   auto" in out  # the default method


@pytest.mark.parametrize("method", ["sorted", "cg", "entropic"])
def test_distance_json(capsys, tmp_path, method):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(8, 2)), rng.normal(size=(6, 2))
    np.save(tmp_path / "a.npy", np.linalg.norm(X[:, None] - X[None], axis=-1))
    np.save(tmp_path / "b.npy", np.linalg.norm(Y[:, None] - Y[None], axis=-1))
    code = main(
        ["distance", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--method", method, "--json"]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == method and record["n"] == 8 and record["m"] == 6
    assert record["lower"] <= record["upper"]


def test_errors_exit_2(capsys):
    assert main(["distance", "builtin:karate", "missing.npy"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gwlite.cli",
            "distance",
            "builtin:petersen",
            "builtin:dodecahedral",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "petersen" in out
