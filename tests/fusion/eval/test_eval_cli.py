"""``python -m fusion.eval``: in-process runs on a tiny saved model, and the module entry."""

from __future__ import annotations

import json
import string
import subprocess
import sys

import pytest

from fusion.eval.cli import main

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from fusion.tiny import char_tokenizer, tiny_causal_lm

    tok = char_tokenizer([string.printable])
    path = tmp_path_factory.mktemp("tiny")
    tiny_causal_lm(tok, d_model=32, n_head=2, max_positions=1024).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def run_cli(model_dir, out, *extra):
    return main(
        [
            "--model",
            str(model_dir),
            "--out",
            str(out),
            "--max-new-tokens-reasoning",
            "4",
            "--max-new-tokens-answer",
            "2",
            "--no-progress",
            *extra,
        ]
    )


def test_generated_tasks_two_methods(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_cli(
        model_dir,
        out,
        "--tasks",
        "coin_flip,multistep_arithmetic",
        "--method",
        "zero_shot_cot,zero_shot",
        "--n",
        "3",
    )
    assert code == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "coin_flip.zero_shot.jsonl",
        "coin_flip.zero_shot_cot.jsonl",
        "multistep_arithmetic.zero_shot.jsonl",
        "multistep_arithmetic.zero_shot_cot.jsonl",
        "summary.json",
    ]  # and no temporary files left behind
    records = [json.loads(line) for line in (out / "coin_flip.zero_shot_cot.jsonl").open()]
    assert len(records) == 3
    assert all(r["prompt"].endswith("Let's think step by step.") for r in records)
    assert {"reasoning", "answer_text", "pred", "pred_robust", "gold", "correct"} <= set(records[0])
    summary = json.loads((out / "summary.json").read_text())["results"]
    assert [(s["task"], s["method"], s["n"]) for s in summary] == [
        ("coin_flip", "zero_shot_cot", 3),
        ("coin_flip", "zero_shot", 3),
        ("multistep_arithmetic", "zero_shot_cot", 3),
        ("multistep_arithmetic", "zero_shot", 3),
    ]
    # The table's percentages agree with the per-item records.
    table = capsys.readouterr().out
    share = 100 * sum(r["correct"] for r in records) / 3
    row = next(
        line
        for line in table.splitlines()
        if line.startswith("coin_flip  ") and "zero_shot_cot" in line
    )
    assert row.split()[3] == f"{share:.1f}"
    assert "paper %" in table and "robust %" in table


def test_local_dataset_and_bbh_file(model_dir, tmp_path):
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(
        "".join(json.dumps({"question": f"Q{i}?", "answer": f"#### {i}"}) + "\n" for i in range(5))
    )
    bbh = tmp_path / "dyck.json"
    q = "Complete the rest of the sequence, making sure that the parentheses are closed properly. Input: [ ("
    bbh.write_text(json.dumps({"examples": [{"input": q, "target": ") ]"}]}))
    out = tmp_path / "out"
    code = run_cli(
        model_dir,
        out,
        "--tasks",
        "gsm8k,dyck_languages",
        "--data",
        f"gsm8k={gsm}",
        "--data",
        f"dyck_languages={bbh}",
        "--method",
        "zero_shot",
        "--n",
        "2",
    )
    assert code == 0
    lines = (out / "gsm8k.zero_shot.jsonl").read_text().splitlines()
    assert [json.loads(line)["gold"] for line in lines] == ["0", "1"]
    (dyck,) = [json.loads(line) for line in (out / "dyck_languages.zero_shot.jsonl").open()]
    assert dyck["gold"] == ") ]"
    assert dyck["prompt"] == f"Q: {q}\nA: The answer is"


def test_few_shot_with_exemplars_file(model_dir, tmp_path):
    ex = tmp_path / "ex.json"
    ex.write_text(json.dumps([{"question": "1+1?", "rationale": "1+1=2.", "answer": "2"}]))
    out = tmp_path / "out"
    code = run_cli(
        model_dir,
        out,
        "--tasks",
        "multistep_arithmetic",
        "--method",
        "few_shot_cot",
        "--n",
        "1",
        "--exemplars",
        str(ex),
    )
    assert code == 0
    (record,) = [
        json.loads(line) for line in (out / "multistep_arithmetic.few_shot_cot.jsonl").open()
    ]
    assert record["prompt"].startswith("Q: 1+1?\nA: 1+1=2. The answer is 2.\n\nQ: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "coin_flips"], "not generated"),
        (["--tasks", "gsm8k"], "pass --data gsm8k=PATH"),
        (["--tasks", "coin_flip", "--n", "-1"], "--n must be >= 0"),
        (["--tasks", "coin_flip", "--method", "cot"], "unknown method"),
        (["--tasks", "coin_flip", "--method", "few_shot"], "--exemplars"),
        (["--tasks", "coin_flip", "--data", "gsm8k=x.jsonl"], "not in --tasks"),
        (["--tasks", "coin_flip", "--data", "coin_flip"], "NAME=PATH"),
        (["--tasks", "mmlu", "--data", "mmlu=x.json"], "unknown task"),
    ],
)
def test_bad_input_exits_with_status_2(model_dir, tmp_path, capsys, args, message):
    assert run_cli(model_dir, tmp_path / "out", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_malformed_data_file_reports_the_line(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{oops\n')
    assert run_cli(model_dir, tmp_path / "out", "--tasks", "gsm8k", "--data", f"gsm8k={bad}") == 2
    assert "line 2 is not valid JSON" in capsys.readouterr().err


def test_missing_model_directory(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert run_cli(missing, tmp_path / "out", "--tasks", "coin_flip", "--n", "1") == 2
    err = capsys.readouterr().err
    assert err == f"python -m fusion.eval: error: model directory not found: {missing}\n"
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("not a model")
    assert run_cli(tmp_path / "file", tmp_path / "out", "--tasks", "coin_flip", "--n", "1") == 2
    assert "model path is not a directory" in capsys.readouterr().err


def test_missing_model_directory_from_the_command_line(tmp_path):
    # A relative name that could be a hub id: still one line, no hub error, no usage.
    done = subprocess.run(
        [sys.executable, "-m", "fusion.eval", "--model", "no-such-model-dir", "--out",
         str(tmp_path / "o"), "--tasks", "coin_flip", "--n", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr
        == "python -m fusion.eval: error: model directory not found: no-such-model-dir\n"
    )


def test_module_entry_point():
    # `python -m fusion.eval` parses and validates without importing torch first.
    done = subprocess.run(
        [sys.executable, "-m", "fusion.eval", "--model", "m", "--out", "o", "--tasks", "nope"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "task 'nope' is not generated" in done.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "fusion.eval", "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0 and "--tasks" in shown.stdout
