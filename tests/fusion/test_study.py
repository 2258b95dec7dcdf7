"""``python -m fusion study``: its design, its job sharing, its report and its resumption."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusion.demo.models import Arm
from fusion.demo.study import Cell, StudyConfig, describe_cells, study_jobs
from fusion.demo.study_report import cell_effects, goal_met, verdict

OUTPUTS = ("runs.csv", "effects.csv", "effects.png", "report.md")


# ------------------------------------------------------------------------ the design


def test_full_study_covers_the_regimes_with_five_seeds():
    config = StudyConfig.full()
    config.check()
    assert len(config.seeds) >= 5
    cells = {c.name: c for c in config.cells}
    # the pivot's labelled data, with teachers trained on more
    assert {cells[n].labelled for n in ("n64", "n256", "n1024")} == {64, 256, 1024}
    assert all(c.labelled < config.teacher_items for c in config.cells)
    # teacher-labelled prompts, teacher strength, a placebo, the tokenizer gap, two teachers
    assert cells["n64+u1024"].unlabelled == 1024
    assert config.teachers["weak"].steps < config.teachers["strong"].steps
    assert config.teachers["untrained"].steps == 0
    assert config.teachers["same-tokenizer"].tokenizer == config.pivot_tokenizer
    assert len(cells["two-teachers"].teachers) == 2
    # loss weights and GLD / ULD options
    assert {cells["lambda0.2"].lambda_, cells["lambda0.8"].lambda_} == {0.2, 0.8}
    assert {cells["beta0.25"].beta, cells["beta4"].beta} == {0.25, 4.0}
    assert {cells["k5"].k, cells["k20"].k, cells["m16"].m, cells["m128"].m} == {5, 20, 16, 128}
    assert dict(cells["m128"].gld_options).get("features", "degrees") == "degrees"
    # values="logit"/"zscore" need full teacher logits: refused when the cell is made
    with pytest.raises(ValueError, match="full logits"):
        Cell("logit", "GLD on logits", gld_options=(("values", "logit"),))
    assert cells["uld-full"].uld_top_k is None


def test_cells_share_jobs_wherever_their_inputs_agree():
    config = StudyConfig.full()
    plan = study_jobs(config)
    arms = plan.arms
    for seed in config.seeds:
        base = {arm: arms[("n256", arm, seed)] for arm in Arm}
        # a loss cell reuses the base's SFT arm (and warm start)
        for cell in ("lambda0.2", "beta4", "k5", "weak", "untrained", "uld-full"):
            assert arms[(cell, Arm.SFT, seed)] == base[Arm.SFT]
            assert arms[(cell, Arm.GLD, seed)].warm == base[Arm.SFT].warm
        # a GLD option cell reuses the base's SFT+ULD arm too
        for cell in ("beta0.25", "beta4", "k5", "k20", "m16", "m128"):
            assert arms[(cell, Arm.ULD, seed)] == base[Arm.ULD]
            assert arms[(cell, Arm.GLD, seed)] != base[Arm.GLD]
        # ULD changes where lambda, the teacher or ULD's own options change
        for cell in ("lambda0.2", "weak", "same-tokenizer", "uld-full"):
            assert arms[(cell, Arm.ULD, seed)] != base[Arm.ULD]
        # a data regime has its own warm start
        assert arms[("n64", Arm.SFT, seed)].warm != base[Arm.SFT].warm
    distinct = {job.dirname for job in arms.values()}
    assert len(distinct) < len(arms)
    assert "distinct (shared arms run once)" in describe_cells(config)


def test_held_out_items_do_not_depend_on_the_selected_cells():
    config = StudyConfig.full()
    assert study_jobs(config, ["n64"]).data == study_jobs(config).data
    with pytest.raises(ValueError, match="unknown cells"):
        study_jobs(config, ["n64", "nope"])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"seeds": (0,)}, "at least 2"),
        ({"cells": (Cell("a", "?"), Cell("a", "?"))}, "unique"),
        ({"cells": (Cell("a", "?", teachers=("nobody",)),)}, "nobody"),
        ({"cells": (Cell("a", "?", k=50),)}, "cache_k"),
        ({"arm_steps": 0}, "arm_steps"),
    ],
)
def test_invalid_studies_are_refused(override, match):
    with pytest.raises(ValueError, match=match):
        StudyConfig.tiny(**override).check()


# ---------------------------------------------------------------------- the analysis


def synthetic(cell: str, sft, uld, gld) -> list[dict]:
    return [
        {"cell": cell, "arm": arm.value, "seed": s, "accuracy": acc}
        for arm, values in ((Arm.SFT, sft), (Arm.ULD, uld), (Arm.GLD, gld))
        for s, acc in enumerate(values)
    ]


def test_effects_goal_and_verdict_on_known_numbers():
    sft = [40.0, 50.0, 45.0, 55.0, 60.0]
    uld = [41.0, 50.0, 46.0, 54.0, 61.0]
    gld = [48.0, 57.0, 51.0, 62.0, 66.0]  # +6.8 on SFT, +6.4 on ULD, every seed
    rows = synthetic("good", sft, uld, gld) + synthetic("flat", sft, sft, sft)
    effects = cell_effects(rows, ["good", "flat"])
    good = {e["comparison"]: e for e in effects if e["cell"] == "good"}
    assert good["GLD-SFT"]["mean"] == pytest.approx(6.8)
    assert good["GLD-ULD"]["mean"] == pytest.approx(6.4)
    assert good["GLD-SFT"]["p"] < 0.001 and good["ULD-SFT"]["mean"] == pytest.approx(0.4)
    # Holm over two cells: the flat cell's p = 1 leaves the good one's doubled
    assert good["GLD-ULD"]["p_holm"] == pytest.approx(min(1.0, 2 * good["GLD-ULD"]["p"]))
    assert goal_met(effects, "good") and not goal_met(effects, "flat")
    text = verdict(effects, ["good", "flat"], 5)
    assert "Met in 1 of 2 cells: good" in text
    # a large but noisy gain does not count
    noisy = synthetic("noisy", sft, sft, [s + d for s, d in zip(sft, [30, -20, 25, -15, 20])])
    assert not goal_met(cell_effects(noisy, ["noisy"]), "noisy")
    assert "Met in none of the 1 cells run" in verdict(cell_effects(noisy, ["noisy"]), ["noisy"], 5)


# ------------------------------------------------------------------ runs and resumes


def read_outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


def test_killed_study_resumes_to_the_same_report(tmp_path):
    """Kill a 2-worker run mid-way, rerun it: the report equals an uninterrupted 1-worker run."""
    from fusion.demo.study import run_study

    reference = tmp_path / "reference"
    result = run_study(StudyConfig.tiny(workers=1), reference, progress=False, echo=None)
    expected = read_outputs(reference)
    total = result.stats.ran
    assert total > 10 and result.stats.reused == 0
    with open(reference / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * 3  # cells x seeds x arms
    assert all(0 <= float(r["accuracy"]) <= 100 for r in rows)
    assert "## Verdict" in expected["report.md"].decode()
    assert expected["effects.png"][:8] == b"\x89PNG\r\n\x1a\n"

    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "fusion", "study", "--tiny", "--workers", "2"]
    proc = subprocess.Popen(
        [*command, "--out", str(killed), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the workers die with it
    )
    deadline = time.monotonic() + 600
    try:
        while len(list(killed.glob("jobs/*/result.json"))) < total // 3:
            assert proc.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = len(list(killed.glob("jobs/*/result.json")))
    assert done < total and not (killed / "report.md").exists()

    again = run_study(StudyConfig.tiny(workers=1), killed, progress=False, echo=None)
    assert again.stats.reused == done and again.stats.ran == total - done
    assert read_outputs(killed) == expected
    assert not [p for p in killed.rglob("*") if p.name.endswith(".tmp")]


def test_study_command_lists_cells_and_refuses_unknown_ones(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    listing = subprocess.run(
        [sys.executable, "-m", "fusion", "study", "--list", "--cells", "n64", "beta4"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert listing.returncode == 0, listing.stderr
    assert "n64" in listing.stdout and "beta4" in listing.stdout and "n1024" not in listing.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion",
            "study",
            "--tiny",
            "--cells",
            "nope",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "unknown cells" in bad.stderr
