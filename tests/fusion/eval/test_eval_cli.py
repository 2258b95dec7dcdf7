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
        (["--tasks", "coin_flip", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--tasks", "coin_flip", "--threads", "0"], "--threads must be >= 1, got 0"),
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


@pytest.fixture(scope="module")
def short_model_dir(tmp_path_factory):
    """A model of 200 positions: coin-flip prompts (~250 characters) do not fit, sums do."""
    from fusion.tiny import char_tokenizer, tiny_causal_lm

    tok = char_tokenizer([string.printable])
    path = tmp_path_factory.mktemp("short")
    tiny_causal_lm(tok, d_model=32, n_head=2, max_positions=200).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_context_checked_before_any_generation(short_model_dir, tmp_path, capsys, monkeypatch):
    import fusion.eval.cli as cli

    events = []
    check, evaluate = cli.context_need, cli.evaluate

    def recorded_check(*args, **kwargs):
        events.append(("check", kwargs["task"], kwargs["method"]))
        return check(*args, **kwargs)

    def recorded_evaluate(*args, **kwargs):
        events.append(("generate", kwargs["task"], kwargs["method"]))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(cli, "context_need", recorded_check)
    monkeypatch.setattr(cli, "evaluate", recorded_evaluate)
    out = tmp_path / "out"
    code = run_cli(
        short_model_dir, out, "--tasks", "multistep_arithmetic,coin_flip",
        "--method", "zero_shot_cot,zero_shot", "--n", "3",
    )  # fmt: skip
    assert code == 2
    kinds = [kind for kind, _, _ in events]
    assert kinds == ["check"] * 4 + ["generate"] * 2  # every check before the first token
    assert {(t, m) for k, t, m in events if k == "generate"} == {
        ("multistep_arithmetic", "zero_shot_cot"),
        ("multistep_arithmetic", "zero_shot"),
    }
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 2 and all("'coin_flip'" in line for line in err)
    cot = next(line for line in err if "zero_shot_cot" in line)
    assert "--max-new-tokens-reasoning" in cot and "--max-new-tokens-answer" in cot
    assert "context length of 200" in cot
    # what fits is still written, and the summary says what was skipped
    summary = json.loads((out / "summary.json").read_text())
    assert [s["task"] for s in summary["results"]] == ["multistep_arithmetic"] * 2
    assert len(summary["skipped"]) == 2
    assert not list(out.glob("coin_flip.*"))


def test_context_need_bounds_the_real_prompts(short_model_dir, tmp_path):
    from fusion.eval import HFModel, evaluate, generate_task
    from fusion.eval.runner import context_need

    model = HFModel(short_model_dir, device="cpu")
    items = generate_task("multistep_arithmetic", 4, seed=1)
    budgets = {"max_new_tokens_reasoning": 5, "max_new_tokens_answer": 3}
    for method in ("zero_shot", "zero_shot_cot"):
        need = context_need(model, items, task="multistep_arithmetic", method=method, **budgets)
        assert need is not None and need.fits and need.context_length == 200
        result = evaluate(
            model, items, task="multistep_arithmetic", method=method, progress=False, **budgets
        )
        # each prompt the model really read, plus its budget, stays within the worst case
        longest = max(model.count_tokens([r.answer_prompt for r in result.records]))
        assert longest + budgets["max_new_tokens_answer"] <= need.tokens


def test_summary_counts_empty_and_unparsable_answers(model_dir, tmp_path):
    out = tmp_path / "out"
    code = run_cli(model_dir, out, "--tasks", "multistep_arithmetic", "--method", "zero_shot",
                   "--n", "6")  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in (out / "multistep_arithmetic.zero_shot.jsonl").open()]
    (summary,) = json.loads((out / "summary.json").read_text())["results"]
    assert summary["n_unparsable"] == sum(r["pred"] == "" for r in records)
    assert summary["n_unparsable_robust"] == sum(r["pred_robust"] == "" for r in records)
    assert summary["n_empty"] == sum(not r["answer_text"].strip() for r in records)


def test_gguf_or_model_required_and_chat_template_zero_shot_only(model_dir, tmp_path, capsys):
    code = main(["--out", str(tmp_path / "o"), "--tasks", "coin_flip"])
    assert code == 2 and "--model DIR or --gguf-file FILE" in capsys.readouterr().err
    code = run_cli(model_dir, tmp_path / "o", "--tasks", "coin_flip", "--chat-template",
                   "--method", "few_shot", "--exemplars", "x.json")  # fmt: skip
    assert code == 2 and "--chat-template supports" in capsys.readouterr().err
    code = main(["--gguf-file", str(tmp_path / "no.gguf"), "--out", str(tmp_path / "o"),
                 "--tasks", "coin_flip", "--n", "1"])  # fmt: skip
    assert code == 2 and "GGUF file not found" in capsys.readouterr().err
