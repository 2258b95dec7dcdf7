"""The end-to-end demo: its data and solvers, its tables and files, and whole runs."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fusion.demo import (
    BASELINE,
    MODELS,
    TASKS,
    VARIANTS,
    DemoConfig,
    Row,
    arithmetic_item,
    build_data,
    coin_flip_item,
    format_table,
    make_items,
    reading,
    sft_examples,
    solve_arithmetic,
    summarise,
    summarise_rows,
)
from fusion.eval import generate_task

TRIGGERS = {
    "coin_flip": "\nTherefore, the answer (Yes or No) is",
    "multistep_arithmetic": "\nTherefore, the answer (arabic numerals) is",
}


def python_value(expression: str) -> int:
    """Oracle: Python's own evaluation of an expression made of ints, + - * and parentheses."""
    assert re.fullmatch(r"[-+*() 0-9]+", expression)
    return eval(expression)  # noqa: S307 - the pattern above admits arithmetic only


# ----------------------------------------------------------------------- data, solvers


def test_coin_flip_reasoning_tracks_the_state_and_agrees_with_the_generator():
    for item in generate_task("coin_flip", 200, seed=4):
        out = coin_flip_item(item)
        steps = out["reasoning"].split(". ")
        assert len(steps) == 4  # the generator's four people
        # independent count: an even number of flips leaves the coin heads up
        flips = out["question"].count(" flips the coin.")
        assert out["answer"] == ("yes" if flips % 2 == 0 else "no")
        assert out["reasoning"].endswith("heads." if flips % 2 == 0 else "tails.")


def test_coin_flip_solver_refuses_a_wrong_gold_answer():
    item = generate_task("coin_flip", 1, seed=0)[0]
    wrong = {**item, "answer": "no" if item["answer"] == "yes" else "yes"}
    with pytest.raises(ValueError, match="disagrees"):
        coin_flip_item(wrong)


def test_arithmetic_solver_matches_the_generator_on_full_items():
    for item in generate_task("multistep_arithmetic", 300, seed=2):
        value, reasoning = solve_arithmetic(item["question"])
        assert str(value) == item["answer"]
        assert value == python_value(item["question"].rstrip("= "))
        # every written step is true arithmetic
        for step in reasoning.rstrip(".").split(". "):
            left, right = step.split(" = ")
            assert python_value(left) == int(right)


@pytest.mark.parametrize(("terms", "max_abs"), [(2, 3), (3, 2), (4, 9)])
def test_shortened_arithmetic_items_are_exact(terms, max_abs):
    config = DemoConfig.tiny(arithmetic_terms=terms, arithmetic_max_abs=max_abs)
    items = make_items("multistep_arithmetic", 60, seed=1, config=config)
    assert len(items) == 60
    for it in items:
        numbers = [int(x) for x in re.findall(r"(?<![0-9])-?\d+", it["question"])]
        assert len(numbers) == 2 * terms
        assert all(abs(x) <= max_abs for x in numbers)
        assert int(it["answer"]) == python_value(it["question"].rstrip("= "))
        assert it["reasoning"].endswith(f"= {it['answer']}.")
    if (terms, max_abs) == (4, 9):  # nothing to shorten: the generator's own items
        raw = generate_task("multistep_arithmetic", 60, seed=1000)
        assert [it["question"] for it in items] == [r["question"] for r in raw]


def test_arithmetic_item_rejects_large_numbers():
    item = {"question": "((7 + 1 - 2 * 3) - (1 * 2 + 3 - 4)) =", "task": "multistep_arithmetic"}
    assert arithmetic_item(item, terms=2, max_abs=3) is None
    short = arithmetic_item(item, terms=2, max_abs=7)
    assert short["question"] == "((7 + 1) - (1 * 2)) =" and short["answer"] == "6"


def test_sft_examples_are_the_two_zero_shot_cot_stages():
    items = make_items("coin_flip", 3, 0, DemoConfig.tiny()) + make_items(
        "multistep_arithmetic", 3, 0, DemoConfig.tiny()
    )
    examples = sft_examples(items)
    assert len(examples) == 2 * len(items)
    for it, first, second in zip(items, examples[0::2], examples[1::2]):
        stage1 = f"Q: {it['question']}\nA: Let's think step by step."
        assert first == {"prompt": stage1, "response": " " + it["reasoning"], "task": it["task"]}
        assert second["prompt"] == stage1 + " " + it["reasoning"] + " " + TRIGGERS[it["task"]]
        assert second["response"] == f" {it['answer']}."


def test_held_out_items_never_occur_in_training_and_data_is_deterministic():
    config = DemoConfig.tiny(train_items=200, eval_items=40)
    data = build_data(config)
    again = build_data(config)
    assert data.train == again.train and data.held_out == again.held_out
    for task in TASKS:
        train_questions = {ex["prompt"] for ex in data.by_task[task]}
        assert len(data.held_out[task]) == 40
        for it in data.held_out[task]:
            assert f"Q: {it['question']}\nA: Let's think step by step." not in train_questions
    assert len(data.train) == 2 * 2 * 200
    assert sorted(map(str, data.train)) == sorted(
        map(str, data.by_task[TASKS[0]] + data.by_task[TASKS[1]])
    )


# ----------------------------------------------------------------- tables and reading


def rows_for(values: dict[str, list[float]], task: str = "coin_flip") -> list[Row]:
    return [
        Row(model, seed, task, 10, acc, min(1.0, acc + 0.1))
        for model, accs in values.items()
        for seed, acc in enumerate(accs)
    ]


def test_summary_statistics_over_seeds():
    rows = rows_for({"pivot SFT": [0.2, 0.4, 0.9]}) + rows_for(
        {"pivot SFT": [0.0, 0.2, 0.1]}, task="multistep_arithmetic"
    )
    summary = {(e["model"], e["task"]): e for e in summarise(rows)}
    coin = summary[("pivot SFT", "coin_flip")]
    assert coin["accuracy_mean"] == pytest.approx(0.5)
    # sample standard deviation of 0.2, 0.4, 0.9
    assert coin["accuracy_std"] == pytest.approx((((0.3**2) + 0.1**2 + 0.4**2) / 2) ** 0.5)
    assert (coin["accuracy_min"], coin["accuracy_max"]) == (0.2, 0.9)
    average = summary[("pivot SFT", "average")]
    # per seed: (0.2+0.0)/2, (0.4+0.2)/2, (0.9+0.1)/2
    assert average["accuracy_mean"] == pytest.approx((0.1 + 0.3 + 0.5) / 3)


def test_table_has_tasks_as_rows_and_models_as_columns():
    teacher = MODELS[1]
    rows = rows_for({teacher: [0.8], "pivot SFT": [0.5, 0.7]}) + rows_for(
        {teacher: [0.1], "pivot SFT": [0.2, 0.2]}, task="multistep_arithmetic"
    )
    table = format_table(summarise(rows))
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].split(" | ")] == ["task", teacher, "pivot SFT"]
    assert [line.split(" | ")[0].strip() for line in lines[2:]] == [*TASKS, "average"]
    assert "80.0" in lines[2] and "60.0 ± 14.1" in lines[2]  # one run: no spread shown
    robust = format_table(summarise(rows), "robust_accuracy")
    assert "90.0" in robust.splitlines()[2]


def synthetic_rows(sft, uld, gld):
    """Baseline, teachers and three pivot seeds; per-seed pivot accuracies given as lists."""
    rows = []
    for task in TASKS:
        rows += rows_for({BASELINE: [0.5]}, task)
        rows += rows_for({MODELS[1]: [0.9 if task == TASKS[0] else 0.0]}, task)
        rows += rows_for({MODELS[2]: [0.6 if task == TASKS[1] else 0.0]}, task)
        for name, accs in (("SFT", sft), ("SFT+ULD", uld), ("SFT+ULD+GLD", gld)):
            rows += rows_for({f"pivot {name}": accs}, task)
    return rows


def test_reading_compares_variants_seed_by_seed():
    config = DemoConfig.tiny(eval_items=400)  # binomial error of a difference: 2.5 points
    sft = [0.50, 0.60, 0.70]
    # ULD: +1 point in every seed, within the noise; GLD: -20 points in every seed
    text = reading(synthetic_rows(sft, [a + 0.01 for a in sft], [a - 0.2 for a in sft]), config)
    assert "SFT+ULD is not distinguishable from SFT: +1.0 points" in text
    assert "better in 3 of 3 seeds" in text
    assert "SFT+ULD+GLD falls behind SFT: -20.0 points" in text
    assert "Why distillation can cost accuracy" in text
    assert "teacher-coin (char) scores 90% on its own family (coin_flip; the majority" in text
    # a gain in every seed is reported as such: paired by seed, the seeds' own spread
    # (10 points) does not hide a 5-point gain
    text = reading(synthetic_rows(sft, [a + 0.05 for a in sft], sft), config)
    assert "SFT+ULD beats SFT: +5.0 points" in text
    assert "SFT+ULD+GLD is not distinguishable from SFT: +0.0 points" in text
    assert "helps here" in text
    # small losses in every seed, each within the noise: said as such, not as "no effect"
    text = reading(synthetic_rows(sft, [a - 0.01 for a in sft], sft), config)
    assert "SFT+ULD is not distinguishable from SFT: -1.0 points" in text
    assert "SFT+ULD scored below SFT in every seed" in text
    assert "neither help nor hurt" not in text
    text = reading(synthetic_rows(sft, sft, sft), config)
    assert "neither help nor hurt measurably" in text


def test_every_model_and_seed_gets_an_average_row():
    rows = synthetic_rows([0.5, 0.6, 0.7], [0.5] * 3, [0.4] * 3)
    averages = [r for r in summarise_rows(rows) if r.task == "average"]
    assert len(averages) == 3 + 3 * 3  # baseline and teachers: one run each
    sft1 = next(r for r in averages if r.model == "pivot SFT" and r.seed == 1)
    assert sft1.accuracy == pytest.approx(0.6)


# ------------------------------------------------------------------------------- files


def check_outputs(out: Path, seeds: int) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(TASKS) + len(VARIANTS) * seeds * len(TASKS)
    assert {r["model"] for r in rows} == set(MODELS)
    assert sum(r["model"] == BASELINE for r in rows) == len(TASKS)
    for r in rows:
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and 0.0 <= float(r["robust_accuracy"]) <= 1.0
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reading:" in (out / "report.md").read_text()
    with open(out / "summary.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(MODELS) * (len(TASKS) + 1)
    for name in ("coin", "arith"):
        assert (out / "caches" / name / "manifest.json").is_file()
    assert not list(out.rglob(".*.tmp"))
    return rows


def test_tiny_demo_runs_end_to_end(tmp_path):
    from fusion.demo import run_demo

    lines: list[str] = []
    result = run_demo(DemoConfig.tiny(seeds=(0, 1, 2)), tmp_path, progress=False, echo=lines.append)
    check_outputs(tmp_path, seeds=3)
    assert result.timings["total"] < 60
    assert result.table in lines[0] and result.reading in lines[0]
    from fusion.cache import TeacherCache

    # each teacher was cached over exactly the pivot's training data
    n_train = sum(1 for _ in open(tmp_path / "train.jsonl"))
    for name in ("coin", "arith"):
        assert len(TeacherCache(tmp_path / "caches" / name)) == n_train


def test_results_do_not_depend_on_the_worker_count(tmp_path):
    import json

    from fusion.demo import run_demo

    config = DemoConfig.tiny(seeds=(0,), eval_items=8)
    run_demo(replace(config, workers=2), tmp_path, progress=False, echo=None)
    first = {
        name: json.loads((tmp_path / "caches" / name / "manifest.json").read_text())
        for name in ("coin", "arith")
    }
    results = (tmp_path / "results.csv").read_bytes()
    # the same directory again, in this process: the caches are rebuilt, not refused
    run_demo(replace(config, workers=1), tmp_path, progress=False, echo=None)
    for name, manifest in first.items():
        again = json.loads((tmp_path / "caches" / name / "manifest.json").read_text())
        assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]
        assert again["teacher_fingerprint"] == manifest["teacher_fingerprint"]
    assert (tmp_path / "results.csv").read_bytes() == results


def test_cli_usage_and_unknown_command():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run([sys.executable, "-m", "fusion"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "python -m fusion demo" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "fusion", "nope"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "unknown command" in bad.stderr


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_quick_demo_command_under_three_minutes(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion",
            "demo",
            "--quick",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_outputs(tmp_path, seeds=3)
    assert "Reading:" in proc.stdout and "pivot SFT+ULD+GLD" in proc.stdout
    assert elapsed < 180, f"--quick took {elapsed:.0f} s"
