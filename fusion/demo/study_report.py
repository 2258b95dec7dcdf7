"""The study's report: per-run rows, paired comparisons per cell, a figure, a verdict.

Everything here is a function of the finished jobs' results (never of timings, worker
counts or the order jobs finished in), so that a resumed study writes the same
``runs.csv``, ``effects.csv``, ``effects.png`` and ``report.md`` bytes as an uninterrupted
one. Costs go to ``timings.json``.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fusion.demo.models import Arm
from fusion.demo.pipeline import baseline_rows
from fusion.demo.report import png_bytes, write_csv
from fusion.demo.runner import RunStats
from fusion.demo.stats import holm, paired_comparison
from fusion.jsonio import write_json_atomic
from gwlite.atomic import atomic_write_bytes

__all__ = [
    "COMPARISONS",
    "GOAL_POINTS",
    "TASK",
    "StudyResult",
    "cell_effects",
    "write_study_report",
]

#: The study's task.
TASK = "multistep_arithmetic"


@dataclass
class StudyResult:
    """What a study run produced: the per-run table, the comparisons and the files."""

    runs: list[dict[str, Any]]
    effects: list[dict[str, Any]]
    teachers: list[dict[str, Any]]
    verdict: str
    paths: dict[str, Path]
    stats: RunStats


#: The paired comparisons of every cell: (name, arm a, arm b), differences a - b.
COMPARISONS = (
    ("GLD-SFT", Arm.GLD, Arm.SFT),
    ("GLD-ULD", Arm.GLD, Arm.ULD),
    ("ULD-SFT", Arm.ULD, Arm.SFT),
)

#: The effect the study looks for: SFT+ULD+GLD this many points above both SFT and SFT+ULD.
GOAL_POINTS = 5.0
ALPHA = 0.05


def _accuracy(record: Mapping[str, Any], task: str, key: str = "accuracy") -> float:
    return 100 * float(record["result"]["scores"][task][key])


def run_rows(plan: Any, records: Mapping[str, Mapping[str, Any]], task: str) -> list[dict]:
    """One row per (cell, arm, seed): accuracy in points and the last training log."""
    rows = []
    for (cell, arm, seed), job in plan.arms.items():
        record = records[job.dirname]
        log = record["result"].get("log", {})
        rows.append(
            {
                "cell": cell,
                "arm": arm.value,
                "seed": seed,
                "n": int(record["result"]["scores"][task]["n"]),
                "accuracy": _accuracy(record, task),
                "robust_accuracy": _accuracy(record, task, "robust_accuracy"),
                "ce": log.get("ce", math.nan),
                "uld": log.get("uld", math.nan),
                "gld": log.get("gld", math.nan),
                "job": job.dirname,
            }
        )
    return rows


def cell_effects(rows: Sequence[Mapping[str, Any]], cells: Sequence[str]) -> list[dict]:
    """Paired comparisons (:data:`COMPARISONS`) per cell, with Holm-adjusted p-values.

    The Holm family of each comparison is the set of cells (one test per cell).
    """
    by = {(r["cell"], r["arm"], r["seed"]): r["accuracy"] for r in rows}
    out = []
    for cell in cells:
        for name, a, b in COMPARISONS:
            seeds = sorted(
                s for (c, arm, s) in by if c == cell and arm == a.value and (c, b.value, s) in by
            )
            if len(seeds) < 2:
                continue
            comp = paired_comparison(
                [by[(cell, a.value, s)] for s in seeds], [by[(cell, b.value, s)] for s in seeds]
            )
            out.append({"cell": cell, "comparison": name, **comp.as_dict()})
    for name, _, _ in COMPARISONS:
        family = [e for e in out if e["comparison"] == name]
        for entry, adjusted in zip(family, holm([e["p"] for e in family])):
            entry["p_holm"] = adjusted
    return out


def arm_summary(rows: Sequence[Mapping[str, Any]], cell: str, arm: Arm) -> tuple[float, float]:
    """Mean and sample standard deviation of an arm's accuracy over seeds, in points."""
    values = [r["accuracy"] for r in rows if r["cell"] == cell and r["arm"] == arm.value]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def goal_met(effects: Sequence[Mapping[str, Any]], cell: str, p_key: str = "p") -> bool:
    """Whether GLD beats SFT and SFT+ULD by >= :data:`GOAL_POINTS` with p < 0.05 in ``cell``."""
    found = {e["comparison"]: e for e in effects if e["cell"] == cell}
    return all(
        name in found and found[name]["mean"] >= GOAL_POINTS and found[name][p_key] < ALPHA
        for name in ("GLD-SFT", "GLD-ULD")
    )


def _fmt_effect(e: Mapping[str, Any] | None) -> str:
    if e is None:
        return "-"
    p = f"{e['p']:.2g}" if e["p"] >= 0.001 else "<0.001"
    return f"{e['mean']:+.1f} [{e['ci_low']:+.1f}, {e['ci_high']:+.1f}] p={p}"


def verdict(effects: Sequence[Mapping[str, Any]], cells: Sequence[str], seeds: int) -> str:
    """A plain statement of what the comparisons show, whichever way they go."""
    met = [c for c in cells if goal_met(effects, c)]
    met_holm = [c for c in met if goal_met(effects, c, "p_holm")]
    lines = [
        f"Goal: SFT+ULD+GLD at least {GOAL_POINTS:.0f} points above both SFT and SFT+ULD "
        f"with p < {ALPHA} (paired t-test over {seeds} seeds) on multistep arithmetic."
    ]
    if met:
        lines.append(
            f"Met in {len(met)} of {len(cells)} cells: {', '.join(met)}"
            + (
                f" ({len(met_holm)} after Holm's correction across cells: "
                f"{', '.join(met_holm) or 'none'})."
                if len(cells) > 1
                else "."
            )
        )
    else:
        lines.append(f"Met in none of the {len(cells)} cells run.")
    for name, a, b in COMPARISONS:
        family = [e for e in effects if e["comparison"] == name]
        if not family:
            continue
        best = max(family, key=lambda e: e["mean"])
        worst = min(family, key=lambda e: e["mean"])
        up = [e["cell"] for e in family if e["ci_low"] > 0]
        down = [e["cell"] for e in family if e["ci_high"] < 0]
        lines.append(
            f"{a.value} - {b.value}: from {worst['mean']:+.1f} ({worst['cell']}) to "
            f"{best['mean']:+.1f} points ({best['cell']}, 95% interval "
            f"[{best['ci_low']:+.1f}, {best['ci_high']:+.1f}]); interval above zero in "
            f"{len(up)} cell(s){' (' + ', '.join(up) + ')' if up else ''}, below zero in "
            f"{len(down)}{' (' + ', '.join(down) + ')' if down else ''}."
        )
    detectable = [e["detectable"] for e in effects if e["comparison"] == "GLD-ULD"]
    detectable = [d for d in detectable if math.isfinite(d)]
    if detectable:
        lines.append(
            f"Power: with {seeds} seeds and the spreads observed, a true GLD - ULD difference "
            f"is detected with 80% power from {min(detectable):.1f} to {max(detectable):.1f} "
            f"points depending on the cell (median {statistics.median(detectable):.1f})."
        )
    return "\n".join(lines)


def _plot(
    rows: Sequence[Mapping[str, Any]],
    effects: Sequence[Mapping[str, Any]],
    cells: Sequence[str],
    baseline: float,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = 2.2 + 0.38 * len(cells)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, height), sharey=True)
    ys = list(range(len(cells)))[::-1]
    colours = {Arm.SFT: "tab:grey", Arm.ULD: "tab:blue", Arm.GLD: "tab:red"}
    for offset, arm in zip((-0.22, 0.0, 0.22), Arm):
        for y, cell in zip(ys, cells):
            values = [r["accuracy"] for r in rows if r["cell"] == cell and r["arm"] == arm.value]
            if not values:
                continue
            left.plot(values, [y + offset] * len(values), ".", color=colours[arm], alpha=0.5)
            label = arm.value if y == ys[0] else None
            left.plot(
                [statistics.fmean(values)],
                [y + offset],
                "D",
                color=colours[arm],
                markersize=5,
                label=label,
            )
    left.axvline(baseline, color="k", linestyle=":", linewidth=1, label="majority answer")
    left.set_xlabel("accuracy (%), each seed a dot, the mean a diamond")
    left.set_yticks(ys, cells)
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.22), "fontsize": 7, "ncol": 4}
    left.legend(**below)
    shown = {
        "GLD-SFT": ("tab:red", -0.15, "SFT+ULD+GLD vs SFT"),
        "GLD-ULD": ("tab:purple", 0.15, "SFT+ULD+GLD vs SFT+ULD"),
    }
    for name, (colour, offset, text) in shown.items():
        for y, cell in zip(ys, cells):
            e = next((e for e in effects if e["cell"] == cell and e["comparison"] == name), None)
            if e is None:
                continue
            right.errorbar(
                [e["mean"]],
                [y + offset],
                xerr=[[e["mean"] - e["ci_low"]], [e["ci_high"] - e["mean"]]],
                fmt="o",
                color=colour,
                capsize=2,
                markersize=4,
                label=text if y == ys[0] else None,
            )
    right.axvline(0, color="k", linewidth=1)
    right.axvline(GOAL_POINTS, color="tab:green", linestyle="--", linewidth=1, label="goal")
    right.set_xlabel("paired difference (points), 95% t interval over seeds")
    right.legend(**below)
    fig.suptitle("When does distillation help? Multistep arithmetic, Zero-shot-CoT", fontsize=10)
    fig.tight_layout()
    atomic_write_bytes(path, png_bytes(fig))


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _teacher_rows(plan: Any, config: Any, records: Mapping[str, Any], task: str) -> list[dict]:
    out = []
    for name, job in plan.teachers.items():
        variant = config.teachers[name]
        out.append(
            {
                "teacher": name,
                "tokenizer": variant.tokenizer.label,
                "steps": variant.steps,
                "accuracy": _accuracy(records[job.dirname], task),
            }
        )
    return out


def _label_rows(plan: Any, records: Mapping[str, Any]) -> list[dict]:
    seen, out = set(), []
    for job in plan.arms.values():
        for label in job.trainset.pseudo:
            if label.dirname in seen:
                continue
            seen.add(label.dirname)
            result = records[label.dirname]["result"]
            out.append(
                {
                    "teacher": label.teacher.name,
                    "prompts": result["prompts"],
                    "answered": result["answered"],
                    "accuracy": 100 * result["accuracy"],
                }
            )
    return out


def _config_json(config: Any) -> str:
    sizes = {k: v for k, v in asdict(config).items() if k not in ("workers", "threads")}
    return json.dumps(sizes, indent=2, default=str)


def write_study_report(
    plan: Any, config: Any, records: Mapping[str, Any], stats: RunStats, out: Path
) -> Any:
    """Write ``runs.csv``, ``effects.csv``, ``effects.png``, ``report.md``, ``timings.json``."""
    cells = [c.name for c in plan.cells]
    rows = run_rows(plan, records, TASK)
    effects = cell_effects(rows, cells)
    baseline = 100 * next(r.accuracy for r in baseline_rows(plan.data) if r.task == TASK)
    teachers = _teacher_rows(plan, config, records, TASK)
    labels = _label_rows(plan, records)
    text = verdict(effects, cells, len(config.seeds))
    paths = {
        "runs": out / "runs.csv",
        "effects": out / "effects.csv",
        "plot": out / "effects.png",
        "report": out / "report.md",
        "timings": out / "timings.json",
    }
    write_csv(paths["runs"], rows)
    write_csv(paths["effects"], effects)
    _plot(rows, effects, cells, baseline, paths["plot"])

    by_cell = {(e["cell"], e["comparison"]): e for e in effects}
    accuracy_table = []
    for cell in plan.cells:
        row = [cell.name, cell.question]
        for arm in Arm:
            mean, sd = arm_summary(rows, cell.name, arm)
            row.append(f"{mean:.1f} ± {sd:.1f}")
        accuracy_table.append(row)
    effect_table = [
        [
            c,
            *(_fmt_effect(by_cell.get((c, name))) for name, _, _ in COMPARISONS),
            f"{by_cell[(c, 'GLD-ULD')]['d_z']:+.2f}" if (c, "GLD-ULD") in by_cell else "-",
            f"{by_cell[(c, 'GLD-ULD')]['p_holm']:.2g}" if (c, "GLD-ULD") in by_cell else "-",
            f"{by_cell[(c, 'GLD-ULD')]['detectable']:.1f}" if (c, "GLD-ULD") in by_cell else "-",
            "yes" if goal_met(effects, c) else "no",
        ]
        for c in cells
    ]
    missing = [c.name for c in config.cells if c.name not in cells]
    seeds = ", ".join(map(str, config.seeds))
    parts = [
        "# When does distillation help? Study report",
        "",
        f"Multistep arithmetic ({config.arithmetic_terms} numbers per group in "
        f"[-{config.arithmetic_max_abs}, {config.arithmetic_max_abs}]), Zero-shot-CoT, paper "
        f"cleansing, {config.eval_items} held-out items. Per cell and seed ({seeds}), one SFT "
        f"warm start of {config.warm_steps} steps, then three arms of {config.arm_steps} steps "
        "each with the same data order: SFT, SFT+ULD, SFT+ULD+GLD. The majority answer scores "
        f"{baseline:.1f}%.",
        "",
        "## Teachers",
        "",
        _markdown_table(
            ["teacher", "tokenizer", "steps", "accuracy (%)"],
            [[t["teacher"], t["tokenizer"], t["steps"], f"{t['accuracy']:.1f}"] for t in teachers],
        ),
        "",
    ]
    if labels:
        parts += [
            "Prompts without labels, answered by a teacher (these answers train every arm):",
            "",
            _markdown_table(
                ["teacher", "prompts", "answered", "answers correct (%)"],
                [
                    [r["teacher"], r["prompts"], r["answered"], f"{r['accuracy']:.1f}"]
                    for r in labels
                ],
            ),
            "",
        ]
    parts += [
        "## Accuracy per cell (%, mean ± std over seeds)",
        "",
        _markdown_table(["cell", "regime", *(a.value for a in Arm)], accuracy_table),
        "",
        "## Paired differences (points; mean [95% t interval], two-sided paired t-test)",
        "",
        _markdown_table(
            [
                "cell",
                "+ULD+GLD vs SFT",
                "+ULD+GLD vs SFT+ULD",
                "SFT+ULD vs SFT",
                "d_z (GLD vs ULD)",
                "Holm p (GLD vs ULD)",
                "detectable (80% power)",
                "goal met",
            ],
            effect_table,
        ),
        "",
        "## Verdict",
        "",
        *(f"- {line}" for line in text.splitlines()),
        "",
        "![effects](effects.png)",
        "",
    ]
    if missing:
        parts += [f"Cells not in this run: {', '.join(missing)}.", ""]
    parts += ["Configuration:", "", "```json", _config_json(config), "```", ""]
    atomic_write_bytes(paths["report"], "\n".join(parts).encode())
    write_json_atomic(
        paths["timings"],
        {
            "jobs_run": stats.ran,
            "jobs_reused": stats.reused,
            "wall_s": stats.total_wall_s,
            "cpu_s": stats.total_cpu_s,
            "cpu_s_per_kind": stats.cpu_s,
            "wall_s_per_kind": stats.wall_s,
            "workers": config.workers,
            "threads": config.threads,
            "machine": f"{platform.machine()} {platform.system()}, {_cores()} cores",
        },
    )
    return StudyResult(rows, effects, teachers, text, paths, stats)


def _cores() -> int:
    import os

    return os.cpu_count() or 1
