"""The end-to-end demo: data and solvers, presets, jobs, tables, and the --tiny run."""

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
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.demo import (
    TASKS,
    Arm,
    DataSpec,
    DemoConfig,
    ModelId,
    Role,
    Row,
    arithmetic_item,
    coin_flip_item,
    demo_jobs,
    format_table,
    make_items,
    reading,
    sft_examples,
    summarise,
    summarise_rows,
)
from fusion.demo.jobs import ArmJob, LossSpec, Schedule
from fusion.eval import generate_task
from fusion.eval.tasks import arithmetic_items, solve_arithmetic

TRIGGERS = {
    "coin_flip": "\nTherefore, the answer (Yes or No) is",
    "multistep_arithmetic": "\nTherefore, the answer (arabic numerals) is",
}
FAST = settings(max_examples=30, deadline=None)


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
        value, steps = solve_arithmetic(item["question"])
        assert str(value) == item["answer"]
        assert value == python_value(item["question"].rstrip("= "))
        # every step is true arithmetic, and each group takes terms - 1 of them
        for s in steps:
            assert python_value(f"{s.left} {s.op} ({s.right})") == s.value
        assert len(steps) == 2 * 3 + 1


@FAST
@given(st.integers(1, 4), st.integers(0, 9), st.integers(0, 10**6))
def test_sized_arithmetic_items_are_exact(terms, max_abs, seed):
    for it in arithmetic_items(5, seed, terms=terms, max_abs=max_abs):
        numbers = [int(x) for x in re.findall(r"(?<![0-9])-?\d+", it["question"])]
        assert len(numbers) == 2 * terms
        assert all(abs(x) <= max_abs for x in numbers)
        assert int(it["answer"]) == python_value(it["question"].rstrip("= "))
        out = arithmetic_item(it)
        assert out["reasoning"].endswith(f"= {it['answer']}.")


def test_default_sized_items_are_the_generators_and_bad_sizes_are_refused():
    assert arithmetic_items(40, seed=7) == generate_task("multistep_arithmetic", 40, seed=7)
    for bad in ({"terms": 0}, {"max_abs": -1}):
        with pytest.raises(ValueError):
            arithmetic_items(3, **bad)
    with pytest.raises(ValueError, match="disagrees"):
        arithmetic_item({"question": "((1 + 1) * (2 - 0)) =", "answer": "5", "task": "x"})


def test_sft_examples_are_the_two_zero_shot_cot_stages():
    items = make_items("coin_flip", 3, 0) + make_items("multistep_arithmetic", 3, 0)
    examples = sft_examples(items)
    assert len(examples) == 2 * len(items)
    for it, first, second in zip(items, examples[0::2], examples[1::2]):
        stage1 = f"Q: {it['question']}\nA: Let's think step by step."
        assert first == {"prompt": stage1, "response": " " + it["reasoning"], "task": it["task"]}
        assert second["prompt"] == stage1 + " " + it["reasoning"] + " " + TRIGGERS[it["task"]]
        assert second["response"] == f" {it['answer']}."


def test_data_streams_are_disjoint_prefixes_and_held_out_is_unseen():
    data = DataSpec(teacher_items=150, pivot_items=80, unlabelled_items=40, eval_items=50)
    again = DataSpec(teacher_items=150, pivot_items=80, unlabelled_items=40, eval_items=50)
    assert data.held_out == again.held_out  # deterministic
    for task in TASKS:
        streams = {
            role: [it["question"] for it in data.items(task, role, n)]
            for role, n in (("teacher", 150), ("pivot", 80), ("unlabelled", 40))
        }
        # a smaller count is a prefix of a larger one
        assert [it["question"] for it in data.items(task, "pivot", 20)] == streams["pivot"][:20]
        held = [it["question"] for it in data.held_out[task]]
        assert len(held) == 50 == len(set(held))
        seen = set().union(*streams.values())
        assert not seen & set(held)
        if task == "coin_flip":  # a large item space: the streams do not even overlap
            assert not set(streams["teacher"]) & set(streams["pivot"])
    with pytest.raises(ValueError, match="outside the training data"):
        # numbers in [-1, 1] and one per group: only 27 distinct questions exist
        _ = DataSpec(tasks=("multistep_arithmetic",), terms=1, max_abs=1, eval_items=30).held_out


# ------------------------------------------------------------------ models and jobs


def test_model_ids_are_typed_and_ordered():
    teacher = ModelId.teacher("coin", "BPE 1000")
    assert teacher.label == "teacher-coin (BPE 1000)" and teacher.role is Role.TEACHER
    assert ModelId.pivot("SFT+ULD") == ModelId.pivot(Arm.ULD)
    assert ModelId.pivot(Arm.GLD).label == "pivot SFT+ULD+GLD"
    ordered = sorted(
        [ModelId.pivot(Arm.GLD), teacher, ModelId.baseline(), ModelId.pivot(Arm.SFT)],
        key=ModelId.sort_key,
    )
    assert [m.label for m in ordered] == [
        "majority answer",
        "teacher-coin (BPE 1000)",
        "pivot SFT",
        "pivot SFT+ULD+GLD",
    ]
    assert Arm.GLD.uses_gld and Arm.ULD.uses_teachers and not Arm.SFT.uses_teachers


def test_loss_specs_ignore_what_an_arm_does_not_use():
    assert LossSpec.for_arm(Arm.SFT, lambda_=0.3, k=5) == LossSpec()
    uld = LossSpec.for_arm(Arm.ULD, lambda_=0.5, beta=2.0, k=5, m=16)
    assert uld == LossSpec.for_arm(Arm.ULD, lambda_=0.5, beta=1.0, k=20)
    assert uld.beta == 0 and uld.k == 0
    gld = LossSpec.for_arm(Arm.GLD, lambda_=0.5, gld_options={"values": "logit"})
    # GLDLoss's default graph features are pinned in the spec (a changed default is a new job)
    assert gld.gld_options == (("features", "shares"), ("values", "logit")) and gld.beta == 1.0
    with pytest.raises(ValueError):
        LossSpec.for_arm(Arm.ULD, lambda_=0.0)
    with pytest.raises(ValueError):
        LossSpec.for_arm(Arm.GLD, beta=0.0)
    with pytest.raises(ValueError, match="phase"):
        Schedule(10, 1e-3, 4, phase="middle")


def test_gld_defaults_that_may_change_are_pinned_in_the_job(monkeypatch):
    import fusion.modules
    from fusion.demo.jobs import resolved_gld_options

    class WithFeatures:  # a GLDLoss whose graph features have a default
        def __init__(self, k=10, *, features="shares"):
            pass

    monkeypatch.setattr(fusion.modules, "GLDLoss", WithFeatures)
    assert resolved_gld_options({"values": "logit"}) == {"values": "logit", "features": "shares"}
    assert resolved_gld_options({"features": "degrees"}) == {"features": "degrees"}
    spec = LossSpec.for_arm(Arm.GLD)
    assert spec == LossSpec.for_arm(Arm.GLD, gld_options={"features": "shares"})
    assert spec != LossSpec.for_arm(Arm.GLD, gld_options={"features": "degrees"})

    class WithoutFeatures:
        def __init__(self, k=10):
            pass

    monkeypatch.setattr(fusion.modules, "GLDLoss", WithoutFeatures)
    assert resolved_gld_options(None) == {}


@pytest.mark.parametrize("preset", [DemoConfig.tiny, DemoConfig.quick, DemoConfig.full])
def test_preset_jobs_share_what_they_should(preset):
    config = preset()
    config.check()
    plan = demo_jobs(config)
    assert set(plan.arms) == {(arm, seed) for arm in Arm for seed in config.seeds}
    for seed in config.seeds:
        sft, uld, gld = (plan.arms[(arm, seed)] for arm in Arm)
        # the three arms of a seed continue one warm start with one data order
        assert sft.warm == uld.warm == gld.warm
        assert sft.schedule == uld.schedule == gld.schedule
        assert not sft.teachers and sft.loss.lambda_ == 0
        assert uld.loss.lambda_ == gld.loss.lambda_ == config.lambda_
        assert uld.loss.beta == 0 and gld.loss.beta == config.beta
        assert [c for c, _ in uld.teachers] == list(plan.caches.values())
        assert sum(w for _, w in gld.teachers) == pytest.approx(1.0)
    # every cache is built over the pivot's training file, every teacher on its own family
    assert {c.trainset for c in plan.caches.values()} == {plan.trainset}
    assert {name: t.tasks for name, t in plan.teachers.items()} == {
        "coin": ("coin_flip",),
        "arith": ("multistep_arithmetic",),
    }
    # distinct jobs get distinct keys, equal ones the same
    keys = {job.dirname for job in plan.arms.values()}
    assert len(keys) == len(plan.arms)
    assert demo_jobs(preset()).arms == plan.arms


def test_presets_are_sized_as_documented():
    tiny, quick, full = DemoConfig.tiny(), DemoConfig.quick(), DemoConfig.full()
    assert len(tiny.seeds) == 1 and len(quick.seeds) == 3 and len(full.seeds) == 5
    assert tiny.arithmetic_max_abs == 1 and quick.arithmetic_max_abs == full.arithmetic_max_abs == 2
    assert full.eval_items == 200 and quick.eval_items == 100
    # the pivot's tokenizer differs from both teachers'
    for config in (tiny, quick, full):
        assert config.pivot_tokenizer not in (config.coin_tokenizer, config.arith_tokenizer)
        assert config.coin_tokenizer != config.arith_tokenizer
    for config in (tiny, quick):
        assert config.coin_teacher_steps < full.coin_teacher_steps
        assert config.arith_teacher_steps <= full.arith_teacher_steps
        assert config.pivot_warmup_steps + config.pivot_steps < (
            full.pivot_warmup_steps + full.pivot_steps
        )


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"seeds": ()}, "seeds"),
        ({"seeds": (1, 1)}, "distinct"),
        ({"k": 20}, "cache_k"),
        ({"pivot_steps": 0}, "pivot_steps"),
        ({"arithmetic_max_abs": 0}, "arithmetic"),
        ({"lambda_": 1.5}, "lambda_"),
    ],
)
def test_invalid_configurations_are_refused(override, match):
    with pytest.raises(ValueError, match=match):
        DemoConfig.tiny(**override).check()


def test_arm_jobs_check_their_teachers():
    plan = demo_jobs(DemoConfig.tiny())
    job = plan.arms[(Arm.ULD, 0)]
    with pytest.raises(ValueError, match="teachers"):
        replace(job, teachers=())
    with pytest.raises(ValueError, match="lambda_"):
        replace(plan.arms[(Arm.SFT, 0)], loss=LossSpec.for_arm(Arm.ULD, lambda_=0.5))
    assert isinstance(job, ArmJob)


# ----------------------------------------------------------------- tables and reading


def rows_for(values: dict[ModelId, list[float]], task: str = "coin_flip") -> list[Row]:
    return [
        Row(model, seed, task, 10, acc, min(1.0, acc + 0.1))
        for model, accs in values.items()
        for seed, acc in enumerate(accs)
    ]


SFT, ULD, GLD = (ModelId.pivot(a) for a in Arm)
COIN, ARITH = ModelId.teacher("coin"), ModelId.teacher("arith")


def test_summary_statistics_over_seeds():
    rows = rows_for({SFT: [0.2, 0.4, 0.9]}) + rows_for(
        {SFT: [0.0, 0.2, 0.1]}, task="multistep_arithmetic"
    )
    summary = {(e["model"], e["task"]): e for e in summarise(rows)}
    coin = summary[(SFT, "coin_flip")]
    assert coin["accuracy_mean"] == pytest.approx(0.5)
    # sample standard deviation of 0.2, 0.4, 0.9
    assert coin["accuracy_std"] == pytest.approx((((0.3**2) + 0.1**2 + 0.4**2) / 2) ** 0.5)
    assert (coin["accuracy_min"], coin["accuracy_max"]) == (0.2, 0.9)
    average = summary[(SFT, "average")]
    # per seed: (0.2+0.0)/2, (0.4+0.2)/2, (0.9+0.1)/2
    assert average["accuracy_mean"] == pytest.approx((0.1 + 0.3 + 0.5) / 3)


def test_table_has_tasks_as_rows_and_models_as_columns():
    rows = rows_for({COIN: [0.8], SFT: [0.5, 0.7]}) + rows_for(
        {COIN: [0.1], SFT: [0.2, 0.2]}, task="multistep_arithmetic"
    )
    table = format_table(summarise(rows))
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].split(" | ")] == ["task", "teacher-coin", "pivot SFT"]
    assert [line.split(" | ")[0].strip() for line in lines[2:]] == [*TASKS, "average"]
    assert "80.0" in lines[2] and "60.0 ± 14.1" in lines[2]  # one run: no spread shown
    robust = format_table(summarise(rows), "robust_accuracy")
    assert "90.0" in robust.splitlines()[2]


def synthetic_rows(sft, uld, gld):
    """Baseline, teachers and pivot seeds; per-seed pivot accuracies given as lists."""
    rows = []
    for task in TASKS:
        rows += rows_for({ModelId.baseline(): [0.5]}, task)
        rows += rows_for({COIN: [0.9 if task == TASKS[0] else 0.0]}, task)
        rows += rows_for({ARITH: [0.6 if task == TASKS[1] else 0.0]}, task)
        for model, accs in ((SFT, sft), (ULD, uld), (GLD, gld)):
            rows += rows_for({model: accs}, task)
    return rows


def test_reading_compares_arms_seed_by_seed():
    own = {COIN: "coin_flip", ARITH: "multistep_arithmetic"}
    sft = [0.50, 0.60, 0.70, 0.55]
    jitter = [0.01, -0.01, 0.0, 0.005]
    # ULD: within +-1 point of SFT; GLD: 20 points lower in every seed
    text = reading(
        synthetic_rows(sft, [a + j for a, j in zip(sft, jitter)], [a - 0.2 for a in sft]), own
    )
    assert "SFT+ULD is not distinguishable from SFT: +0.1 points" in text
    assert "SFT+ULD+GLD falls behind SFT: -20.0 points" in text
    assert "Why distillation can cost accuracy" in text
    assert "teacher-coin scores 90% on its own family (coin_flip; the majority" in text
    # a steady gain is reported as such: paired by seed, the seeds' own spread
    # (about 9 points) does not hide a 5-point gain
    text = reading(synthetic_rows(sft, [a + 0.05 + j / 5 for a, j in zip(sft, jitter)], sft), own)
    assert "SFT+ULD beats SFT: +5.0 points" in text and "helps here" in text
    text = reading(synthetic_rows(sft, [a + j for a, j in zip(sft, jitter)], sft), own)
    assert "neither help nor hurt measurably" in text
    # one seed: differences are shown, never tested
    text = reading(synthetic_rows([0.5], [0.6], [0.4]), own)
    assert "one seed: no test" in text


def test_every_model_and_seed_with_several_tasks_gets_an_average_row():
    rows = synthetic_rows([0.5, 0.6, 0.7], [0.5] * 3, [0.4] * 3)
    averages = [r for r in summarise_rows(rows) if r.task == "average"]
    assert len(averages) == 3 + 3 * 3  # baseline and teachers: one run each
    sft1 = next(r for r in averages if r.model == SFT and r.seed == 1)
    assert sft1.accuracy == pytest.approx(0.6)


# ------------------------------------------------------------------- the --tiny run


def check_outputs(out: Path, seeds: int) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # baseline on both tasks, each teacher on its own family, every pivot on both tasks
    assert len(rows) == len(TASKS) + 2 + len(Arm) * seeds * len(TASKS)
    for r in rows:
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and 0.0 <= float(r["robust_accuracy"]) <= 1.0
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Reading:" in (out / "report.md").read_text()
    assert (out / "summary.csv").is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    return rows


def test_tiny_demo_teachers_learn_and_a_rerun_reuses_everything(tmp_path):
    from fusion.cache import TeacherCache
    from fusion.demo import run_demo

    lines: list[str] = []
    result = run_demo(DemoConfig.tiny(), tmp_path, progress=False, echo=lines.append)
    rows = check_outputs(tmp_path, seeds=1)
    assert result.table in lines[0] and result.reading in lines[0]
    # the preset's promise: each teacher clearly above the majority answer on its family
    accuracy = {(r["model"], r["task"]): float(r["accuracy"]) for r in rows}
    for teacher, task in (
        ("teacher-coin (BPE 1000)", "coin_flip"),
        ("teacher-arith (BPE 420)", "multistep_arithmetic"),
    ):
        assert accuracy[(teacher, task)] >= accuracy[("majority answer", task)] + 0.15, rows
    # each teacher was cached over exactly the pivot's training data
    n_train = sum(1 for _ in open(result.paths["train_data"]))
    for name in ("coin", "arith"):
        assert len(TeacherCache(result.paths[f"cache-{name}"])) == n_train
    report = (tmp_path / "report.md").read_bytes()
    results = (tmp_path / "results.csv").read_bytes()
    # what a run killed in the middle of a write leaves: an atomic file's temporary and
    # a temporary directory (gwlite.atomic's naming); the rerun removes both
    job_dirs = sorted(p for p in (tmp_path / "jobs").iterdir() if p.is_dir())
    (job_dirs[0] / ".result.json.k1ll3d.tmp").write_text("{")
    (job_dirs[-1] / ".model.k1ll3d.tmp").mkdir()
    again = run_demo(DemoConfig.tiny(workers=1), tmp_path, progress=False, echo=None)
    assert again.stats.ran == 0 and again.stats.reused == result.stats.ran
    assert (tmp_path / "report.md").read_bytes() == report
    assert (tmp_path / "results.csv").read_bytes() == results
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_cli_usage_and_unknown_command():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run([sys.executable, "-m", "fusion"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "python -m fusion demo" in ok.stdout
    assert "python -m fusion study" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "fusion", "nope"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "unknown command" in bad.stderr
    invalid = subprocess.run(
        [sys.executable, "-m", "fusion", "demo", "--tiny", "--seeds", "1", "1"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert invalid.returncode == 2 and "distinct" in invalid.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_demo_meets_its_targets(tmp_path):
    """--quick: each teacher >= 80% on its family, the best pivot >= majority + 15 points."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    command = [sys.executable, "-m", "fusion", "demo", "--quick", "--out", str(tmp_path)]
    proc = subprocess.run([*command, "--no-progress"], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = check_outputs(tmp_path, seeds=3)
    mean: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        mean.setdefault((r["model"], r["task"]), []).append(float(r["accuracy"]))
    acc = {key: sum(v) / len(v) for key, v in mean.items()}
    assert acc[("teacher-coin (BPE 1000)", "coin_flip")] >= 0.8
    assert acc[("teacher-arith (BPE 420)", "multistep_arithmetic")] >= 0.8
    for task in TASKS:
        best = max(acc[(f"pivot {arm.value}", task)] for arm in Arm)
        assert best >= acc[("majority answer", task)] + 0.15, (task, acc)
    print(f"--quick took {elapsed:.0f} s")  # measured, not asserted (see docs/benchmarks.md)


def test_reading_says_when_no_pivot_beats_the_majority_answer():
    own = {COIN: "coin_flip", ARITH: "multistep_arithmetic"}
    # the baseline of synthetic_rows scores 50% on every task
    text = reading(synthetic_rows([0.40, 0.45], [0.45, 0.48], [0.30, 0.50]), own)
    assert "No pivot beats the majority-answer baseline on any task" in text
    assert "50% on coin_flip" in text and "have not learned the tasks" in text
    # one arm above the baseline on the average of its seeds: named, and no such warning
    text = reading(synthetic_rows([0.40, 0.45], [0.55, 0.65], [0.30, 0.50]), own)
    assert "No pivot beats" not in text
    assert (
        "Above the majority-answer baseline: pivot SFT+ULD on coin_flip (60% against 50%)" in text
    )
    # equal to the baseline is not above it
    text = reading(synthetic_rows([0.5, 0.5], [0.5, 0.5], [0.5, 0.5]), own)
    assert "No pivot beats the majority-answer baseline" in text
