"""Tables, files and a plain reading of a demo run's numbers.

A run's results are :class:`Row` objects (one model, seed and task each); everything here
is a function of those rows, so a rerun that reuses every job writes the same bytes.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion.demo.config import TASKS
from fusion.demo.models import Arm, ModelId, Role
from fusion.demo.stats import paired_comparison
from gwlite.atomic import atomic_open, atomic_write_bytes

__all__ = [
    "AVERAGE",
    "Row",
    "format_table",
    "plot",
    "reading",
    "summarise",
    "summarise_rows",
    "write_csv",
]

#: The pseudo-task of per-seed means over the tasks.
AVERAGE = "average"


@dataclass(frozen=True)
class Row:
    """One evaluation: a model (and seed) on a task."""

    model: ModelId
    seed: int
    task: str
    n: int
    accuracy: float
    robust_accuracy: float

    def as_record(self) -> dict[str, Any]:
        """A flat dict for CSV files (the model by label, role and arm)."""
        return {
            "model": self.model.label,
            "role": self.model.role.value,
            "arm": self.model.arm.value if self.model.arm is not None else "",
            "seed": self.seed,
            "task": self.task,
            "n": self.n,
            "accuracy": self.accuracy,
            "robust_accuracy": self.robust_accuracy,
        }


def _task_order(task: str) -> int:
    return TASKS.index(task) if task in TASKS else len(TASKS) + (task == AVERAGE)


def summarise_rows(rows: Sequence[Row]) -> list[Row]:
    """``rows`` plus, per model and seed with several tasks, an ``"average"`` row."""
    groups: dict[tuple[ModelId, int], list[Row]] = {}
    for r in rows:
        if r.task != AVERAGE:
            groups.setdefault((r.model, r.seed), []).append(r)
    averages = [
        Row(
            model,
            seed,
            AVERAGE,
            sum(r.n for r in rs),
            statistics.fmean(r.accuracy for r in rs),
            statistics.fmean(r.robust_accuracy for r in rs),
        )
        for (model, seed), rs in groups.items()
        if len(rs) > 1
    ]
    return [*rows, *averages]


def summarise(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Mean, sample standard deviation, min and max over seeds per (model, task).

    Includes an ``"average"`` task (per seed, the mean over tasks). Entries are sorted by
    task, then in table order of the models.
    """
    groups: dict[tuple[ModelId, str], list[Row]] = {}
    for r in summarise_rows(rows):
        groups.setdefault((r.model, r.task), []).append(r)
    out = []
    for (model, task), rs in groups.items():
        entry: dict[str, Any] = {"model": model, "task": task, "seeds": len(rs)}
        for key in ("accuracy", "robust_accuracy"):
            values = [getattr(r, key) for r in rs]
            entry[f"{key}_mean"] = statistics.fmean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            entry[f"{key}_min"], entry[f"{key}_max"] = min(values), max(values)
        out.append(entry)
    return sorted(out, key=lambda e: (_task_order(e["task"]), e["model"].sort_key()))


def summary_records(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`summarise` entries with the model as its label (for CSV files)."""
    return [{**e, "model": e["model"].label} for e in summary]


def format_table(summary: Sequence[dict[str, Any]], key: str = "accuracy") -> str:
    """Task x model table of ``mean ± std`` in percent (std over seeds; one run: no ±)."""
    cells = {(e["task"], e["model"]): e for e in summary}
    models = sorted({e["model"] for e in summary}, key=ModelId.sort_key)
    tasks = sorted({e["task"] for e in summary}, key=_task_order)
    header = ["task", *(m.label for m in models)]
    lines = []
    for task in tasks:
        line = [task]
        for model in models:
            e = cells.get((task, model))
            if e is None:
                line.append("-")
                continue
            mean, std = 100 * e[f"{key}_mean"], 100 * e[f"{key}_std"]
            line.append(f"{mean:5.1f} ± {std:4.1f}" if e["seeds"] > 1 else f"{mean:5.1f}")
        lines.append(line)
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return " | ".join(
            str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        )

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(r) for r in lines)])


def _per_seed(rows: Sequence[Row], arm: Arm, task: str) -> dict[int, float]:
    model = ModelId.pivot(arm)
    return {
        r.seed: 100 * r.accuracy
        for r in summarise_rows(rows)
        if r.model == model and r.task == task
    }


def reading(rows: Sequence[Row], own_tasks: dict[ModelId, str] | None = None) -> str:
    """A one-paragraph plain reading of the numbers, whichever way they go.

    Teachers are compared with the majority answer on their own family; each distilled
    arm with SFT, seed by seed (the arms of one seed share the initialisation, the warm
    start and the data order), on the average over tasks: a difference counts when the
    95% interval of the paired t-test excludes zero (with fewer than two seeds nothing
    counts). ``own_tasks`` names each teacher's family (default: its best task).
    """
    cell = {(e["task"], e["model"]): e for e in summarise(rows)}

    def pct(task: str, model: ModelId) -> float:
        return 100 * cell[(task, model)]["accuracy_mean"]

    baseline = ModelId.baseline()
    teachers = sorted({r.model for r in rows if r.model.role is Role.TEACHER}, key=ModelId.sort_key)
    own = own_tasks or {}
    parts = []
    for teacher in teachers:
        best = own.get(teacher) or max(
            (t for t in TASKS if (t, teacher) in cell), key=lambda t: pct(t, teacher)
        )
        others = [t for t in TASKS if t != best and (t, teacher) in cell]
        text = (
            f"{teacher.label} scores {pct(best, teacher):.0f}% on its own family ({best}; "
            f"the majority answer scores {pct(best, baseline):.0f}%)"
        )
        if others:
            text += " and " + ", ".join(f"{pct(t, teacher):.0f}% on {t}" for t in others)
        parts.append(text)
    tasks = [t for t in TASKS if (t, ModelId.pivot(Arm.SFT)) in cell]
    sft = ModelId.pivot(Arm.SFT)
    summary_task = AVERAGE if (AVERAGE, sft) in cell else tasks[0]
    seeds = cell[(summary_task, sft)]["seeds"]
    text = "Reading: " + "; ".join(parts) + ". " if parts else "Reading: "
    text += (
        "The pivot with SFT alone reaches "
        + ", ".join(f"{pct(t, sft):.0f}% on {t}" for t in tasks)
        + f" ({summary_task} {pct(summary_task, sft):.1f} ± "
        f"{100 * cell[(summary_task, sft)]['accuracy_std']:.1f} over {seeds} seed"
        f"{'s' if seeds != 1 else ''})."
    )
    base = _per_seed(rows, Arm.SFT, summary_task)
    verdicts = []
    for arm in (Arm.ULD, Arm.GLD):
        mine = _per_seed(rows, arm, summary_task)
        common = sorted(set(base) & set(mine))
        if not common:
            continue
        diffs = [mine[s] - base[s] for s in common]
        mean = statistics.fmean(diffs)
        wins = sum(d > 0 for d in diffs)
        if len(common) < 2:
            text += f" {arm.value}: {mean:+.1f} points against SFT (one seed: no test)."
            verdicts.append("none")
            continue
        c = paired_comparison([mine[s] for s in common], [base[s] for s in common])
        verdict = "better" if c.ci_low > 0 else "worse" if c.ci_high < 0 else "same"
        verdicts.append(verdict)
        words = {
            "better": "beats SFT",
            "worse": "falls behind SFT",
            "same": "is not distinguishable from SFT",
        }[verdict]
        text += (
            f" {arm.value} {words}: {c.mean:+.1f} points, 95% interval "
            f"[{c.ci_low:+.1f}, {c.ci_high:+.1f}] (paired over {c.n} seeds, better in "
            f"{wins} of {c.n}; p = {c.p:.2g})."
        )
    text += _versus_majority(cell, tasks)
    if "worse" in verdicts:
        text += _WHY_WORSE
    elif "better" in verdicts:
        text += " Distillation from the cached teachers helps here beyond the seed noise."
    elif "same" in verdicts:
        text += " At this scale the distillation terms neither help nor hurt measurably."
    return text + (
        " These are 0.2M-parameter models trained for minutes: the demo shows the pipeline "
        "working end to end and how to read its numbers; `python -m fusion study` measures "
        "when distillation helps."
    )


def _versus_majority(cell: dict, tasks: Sequence[str]) -> str:
    """Whether any pivot arm's mean accuracy beats the majority answer on some task.

    Without that, the arms' differences are among models that have not learned the tasks,
    which the reading must say before any "+x points against SFT".
    """
    baseline = ModelId.baseline()
    pivots = [ModelId.pivot(arm) for arm in Arm]
    tasks = [t for t in tasks if (t, baseline) in cell]
    if not tasks:
        return ""
    wins = [
        f"{model.label} on {task} ({100 * cell[(task, model)]['accuracy_mean']:.0f}% against "
        f"{100 * cell[(task, baseline)]['accuracy_mean']:.0f}%)"
        for task in tasks
        for model in pivots
        if (task, model) in cell
        and cell[(task, model)]["accuracy_mean"] > cell[(task, baseline)]["accuracy_mean"]
    ]
    if wins:
        return " Above the majority-answer baseline: " + ", ".join(wins) + "."
    majority = ", ".join(
        f"{100 * cell[(task, baseline)]['accuracy_mean']:.0f}% on {task}" for task in tasks
    )
    return (
        f" No pivot beats the majority-answer baseline on any task ({majority}): the "
        "differences above are between pivots that have not learned the tasks."
    )


_WHY_WORSE = (
    " Why distillation can cost accuracy here: across tokenizers ULD and GLD see only the "
    "shape of each teacher's distribution (sorted probabilities, sorted degrees), never which "
    "token it prefers, so they push the pivot to be as confident as the teacher about whatever "
    "it currently predicts; each teacher is distilled on both families although it never saw "
    "one of them; and lambda moves weight away from the cross-entropy."
)


def write_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Atomically write dict records as CSV (columns of the first record)."""
    if not records:
        raise ValueError(f"no records to write to {path}")
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def png_bytes(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (metadata-free, so equal figures give equal bytes)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def plot(summary: Sequence[dict[str, Any]], rows: Sequence[Row], path: Path) -> None:
    """Grouped bars (mean over seeds, std as error bars, each seed a dot), PNG, atomically.

    The majority-answer baseline is a dashed line across each task's group of bars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell = {(e["task"], e["model"]): e for e in summary}
    every = summarise_rows(rows)
    models = sorted(
        {e["model"] for e in summary if e["model"].role is not Role.BASELINE}, key=ModelId.sort_key
    )
    tasks = sorted({e["task"] for e in summary}, key=_task_order)
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for i, model in enumerate(models):
        xs = [t + (i - (len(models) - 1) / 2) * width for t in range(len(tasks))]
        present = [(x, t) for x, t in zip(xs, tasks) if (t, model) in cell]
        means = [100 * cell[(t, model)]["accuracy_mean"] for _, t in present]
        stds = [100 * cell[(t, model)]["accuracy_std"] for _, t in present]
        ax.bar([x for x, _ in present], means, width, yerr=stds, capsize=3, label=model.label)
        for x, task in present:
            seeds = [100 * r.accuracy for r in every if r.model == model and r.task == task]
            ax.plot([x] * len(seeds), seeds, "k.", markersize=3)
    baseline = ModelId.baseline()
    for t, task in enumerate(tasks):
        if (task, baseline) in cell:
            level = 100 * cell[(task, baseline)]["accuracy_mean"]
            label = baseline.label if t == 0 else None
            ax.hlines(level, t - 0.45, t + 0.45, colors="grey", linestyles="--", label=label)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("Zero-shot-CoT accuracy (%), paper cleansing")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("fusion demo: teachers and pivots on held-out items")
    fig.tight_layout()
    atomic_write_bytes(path, png_bytes(fig))
