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


# ---------------------------------------------------------------- failures and options
def _bad_inputs(tmp_path):
    import networkx as nx

    np.save(tmp_path / "empty.npy", np.zeros((0, 0)))
    np.save(tmp_path / "str.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(tmp_path / "complex.npy", np.eye(3) + 1j)
    G = nx.path_graph(3)
    G[0][1]["weight"] = "heavy"
    nx.write_graphml(G, tmp_path / "nonnumeric.graphml")
    nx.write_graphml(nx.DiGraph([(0, 1), (1, 2)]), tmp_path / "directed.graphml")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00garbage")
    return {
        "empty.npy": "empty",
        "str.npy": "not numeric",
        "complex.npy": "complex",
        "nonnumeric.graphml": "not a number",
        "missing.npy": "no such file",
        "binary.txt": "could not read",
        ".": "directory",
    }


def test_every_failure_is_one_line_and_exit_2(tmp_path, capsys):
    for name, message in _bad_inputs(tmp_path).items():
        path = str(tmp_path / name)
        # edge weights are read only when asked for (the API's default)
        extra = ["--weight", "weight"] if name == "nonnumeric.graphml" else []
        assert main(["distance", path, "builtin:petersen", *extra]) == 2, name
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gwlite: error:"), (name, lines)
        assert message in lines[0], (name, lines[0])
    code = main(
        ["distance", str(tmp_path / "directed.graphml"), "builtin:petersen"]
        + ["--kind", "shortest_path"]
    )
    assert code == 2
    assert "directed graph is not strongly connected" in capsys.readouterr().err


def test_no_traceback_from_the_console_script(tmp_path):
    _bad_inputs(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "gwlite.cli", "distance", str(tmp_path / "complex.npy"), "x.npy"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def _json(capsys, argv):
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_method_options_are_passed(capsys, monkeypatch):
    import gwlite.cli

    seen = {}
    real = gwlite.cli.gromov_wasserstein

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(gwlite.cli, "gromov_wasserstein", spy)
    pair = ["distance", "builtin:petersen", "builtin:florentine"]
    one = _json(capsys, pair + ["--method", "cg", "--max-iter", "1"])
    assert one["n_iter"] <= 1 and seen["max_iter"] == 1
    _json(capsys, pair + ["--method", "entropic", "--epsilon", "0.5", "--max-iter", "3"])
    assert seen["epsilon"] == 0.5 and seen["max_iter"] == 3
    exact = ["distance", "builtin:petersen", "builtin:petersen", "--method", "exact"]
    record = _json(capsys, exact + ["--lower", "tlb", "--time-limit", "5"])
    assert record["certified"] and record["upper"] == 0.0
    assert seen["lower"] == "tlb" and seen["time_limit"] == 5.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "sorted", "--epsilon", "0.1"], "--epsilon does not apply to --method sorted"),
        (["--epsilon", "0.1"], "--epsilon does not apply to --method auto"),
        (["--method", "cg", "--time-limit", "1"], "--time-limit does not apply to --method cg"),
        (["--method", "exact", "--max-iter", "3"], "--max-iter does not apply to --method exact"),
        (["--method", "cg", "--max-iter", "-5"], "max_iter must be an integer >= 1"),
        (["--method", "entropic", "--epsilon", "-1"], "epsilon must be a finite number > 0"),
    ],
)
def test_options_a_method_does_not_take_are_refused(capsys, argv, message):
    assert main(["distance", "builtin:petersen", "builtin:petersen"] + argv) == 2
    assert message in capsys.readouterr().err


def test_graph_options_with_two_matrix_files_are_refused(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.eye(3))
    a = str(tmp_path / "a.npy")
    for flag in (["--kind", "shortest_path"], ["--node-weights", "degree"], ["--unweighted"]):
        assert main(["distance", a, a] + flag) == 2
        assert "both inputs are .npy matrices" in capsys.readouterr().err
    # with one graph the option applies to it
    assert main(["distance", a, "builtin:petersen", "--kind", "shortest_path"]) == 0


def test_builtin_and_its_graphml_file_are_at_distance_zero(tmp_path, capsys):
    import networkx as nx

    nx.write_graphml(nx.karate_club_graph(), tmp_path / "karate.graphml")
    for extra in ([], ["--unweighted"], ["--weight", "weight"]):
        record = _json(
            capsys,
            ["distance", "builtin:karate", str(tmp_path / "karate.graphml"), "--lower", "tlb"]
            + extra,
        )
        assert record["lower"] == pytest.approx(0.0, abs=1e-12), extra
    assert main(["distance", "builtin:karate", "builtin:karate", "--weight", "w"]) == 2
    assert "no edge has the attribute 'w'" in capsys.readouterr().err


def test_value_is_always_inside_the_printed_interval(capsys):
    # the sorted method's closed form is a lower bound that TLB can beat: value is then
    # raised to the interval, and the closed form is reported on its own
    argv = ["distance", "builtin:petersen", "builtin:dodecahedral", "--method", "sorted"]
    argv += ["--lower", "tlb"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    value_line = next(line for line in out.splitlines() if line.strip().startswith("value"))
    assert "within the interval" in value_line
    record = _json(capsys, argv)
    assert record["lower"] <= record["value"] <= record["upper"]
    assert record["closed_form"] < record["lower"] == record["value"]
