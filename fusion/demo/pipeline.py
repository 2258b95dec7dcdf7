"""The demo run: two teachers, their caches, a pivot trained three ways, one table.

:func:`demo_jobs` turns a :class:`~fusion.demo.config.DemoConfig` into jobs
(:mod:`fusion.demo.jobs`), :func:`run_demo` runs them (:mod:`fusion.demo.runner`: in
parallel, and resumably: rerunning into the same directory reuses every finished job)
and writes the tables, CSV files, the plot and a Markdown report.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fusion.demo.config import TASKS, DemoConfig
from fusion.demo.data import DataSpec
from fusion.demo.jobs import (
    ArmJob,
    CacheJob,
    Context,
    LossSpec,
    Schedule,
    TeacherJob,
    TokenizerJob,
    TrainSetJob,
    WarmJob,
)
from fusion.demo.models import Arm, ModelId
from fusion.demo.report import (
    Row,
    format_table,
    plot,
    reading,
    summarise,
    summary_records,
    write_csv,
)
from fusion.demo.runner import RunStats, run_jobs
from gwlite.atomic import atomic_write_bytes

__all__ = ["DemoJobs", "DemoResult", "baseline_rows", "demo_jobs", "run_demo"]

#: Seeds of the two teachers (their initialisation and data order).
TEACHER_SEEDS = {"coin": 100, "arith": 101}


@dataclass(frozen=True)
class DemoJobs:
    """The jobs of a demo run.

    Attributes
    ----------
    data : DataSpec
    teachers : dict of str to TeacherJob
        ``"coin"`` and ``"arith"``.
    own_tasks : dict of str to str
        Each teacher's family.
    trainset : TrainSetJob
        The pivot's training file (both families).
    caches : dict of str to CacheJob
        Each teacher over that file.
    arms : dict of (Arm, int) to ArmJob
        One pivot per arm and seed.
    """

    data: DataSpec
    teachers: dict[str, TeacherJob]
    own_tasks: dict[str, str]
    trainset: TrainSetJob
    caches: dict[str, CacheJob]
    arms: dict[tuple[Arm, int], ArmJob]

    def targets(self) -> list[Any]:
        """Every job whose result the report reads (dependencies follow)."""
        return [*self.teachers.values(), *self.arms.values()]


def demo_jobs(config: DemoConfig) -> DemoJobs:
    """The jobs of a demo run with ``config``'s sizes.

    The teachers train on their own family's teacher items; the pivot's training file
    holds both families' pivot items (drawn apart from the teachers'); both teachers are
    cached over it, weighted 1/2 each; per seed, one warm start and one pivot per arm.
    """
    config.check()
    data = DataSpec(
        tasks=TASKS,
        seed=config.data_seed,
        terms=config.arithmetic_terms,
        max_abs=config.arithmetic_max_abs,
        teacher_items=config.teacher_items,
        pivot_items=config.pivot_items,
        eval_items=config.eval_items,
    )
    tokenizers = {
        "coin": TokenizerJob(data, config.coin_tokenizer),
        "arith": TokenizerJob(data, config.arith_tokenizer),
        "pivot": TokenizerJob(data, config.pivot_tokenizer),
    }
    own = {"coin": "coin_flip", "arith": "multistep_arithmetic"}
    sizes = {"coin": config.teacher_coin, "arith": config.teacher_arith}
    steps = {"coin": config.coin_teacher_steps, "arith": config.arith_teacher_steps}
    batch = {"coin": config.coin_teacher_batch_size, "arith": config.arith_teacher_batch_size}
    teachers = {
        name: TeacherJob(
            name,
            tokenizers[name],
            sizes[name],
            Schedule(
                steps[name],
                config.learning_rate,
                batch[name],
                config.warmup_steps,
                "whole",
                seed=TEACHER_SEEDS[name],
            ),
            (own[name],),
            config.teacher_items,
            config.eval_batch_size,
        )
        for name in ("coin", "arith")
    }
    trainset = TrainSetJob(
        data, tuple((task, config.pivot_items) for task in TASKS), (), order_seed=config.data_seed
    )
    caches = {name: CacheJob(job, trainset, config.cache_k) for name, job in teachers.items()}
    weight = 1.0 / len(caches)
    arms = {}
    for seed in config.seeds:
        warm = None
        if config.pivot_warmup_steps:
            warm = WarmJob(
                tokenizers["pivot"],
                config.pivot,
                trainset,
                Schedule(
                    config.pivot_warmup_steps,
                    config.learning_rate,
                    config.batch_size,
                    config.warmup_steps,
                    "start",
                    seed=seed,
                ),
                init_seed=seed,
            )
        schedule = Schedule(
            config.pivot_steps,
            config.learning_rate,
            config.batch_size,
            config.warmup_steps,
            "finish" if warm else "whole",
            # after a warm start: a fresh data order, the same for every arm
            seed=seed + 1000 if warm else seed,
        )
        for arm in Arm:
            loss = LossSpec.for_arm(
                arm, lambda_=config.lambda_, beta=config.beta, k=config.k, m=config.m
            )
            teachers_of_arm = (
                tuple((cache, weight) for cache in caches.values()) if arm.uses_teachers else ()
            )
            arms[(arm, seed)] = ArmJob(
                arm,
                tokenizers["pivot"],
                config.pivot,
                trainset,
                schedule,
                init_seed=seed,
                warm=warm,
                teachers=teachers_of_arm,
                loss=loss,
                eval_batch_size=config.eval_batch_size,
            )
    return DemoJobs(data, teachers, own, trainset, caches, arms)


def baseline_rows(data: DataSpec) -> list[Row]:
    """The majority answer's accuracy on the held-out items (paper and robust cleansing)."""
    from fusion.eval import is_correct

    rows = []
    for task, answer in data.majority_answers().items():
        items = data.held_out[task]
        acc, robust = (
            statistics.fmean(is_correct(answer, it["answer"], task, mode) for it in items)
            for mode in ("paper", "robust")
        )
        rows.append(Row(ModelId.baseline(), 0, task, len(items), acc, robust))
    return rows


def score_rows(model: ModelId, seed: int, scores: dict[str, dict[str, float]]) -> list[Row]:
    """Rows of one evaluated model (a job result's ``scores``)."""
    return [
        Row(model, seed, task, int(s["n"]), float(s["accuracy"]), float(s["robust_accuracy"]))
        for task, s in scores.items()
    ]


@dataclass
class DemoResult:
    """What a demo run produced.

    Attributes
    ----------
    rows : list of Row
        One per (model, seed, task).
    summary : list of dict
        :func:`~fusion.demo.report.summarise` of ``rows``.
    table, robust_table, reading : str
        The terminal output.
    paths : dict of str to Path
        Files written: ``results``, ``summary``, ``plot``, ``report``, ``train_data`` and
        ``cache-coin`` / ``cache-arith`` (the teacher caches).
    stats : RunStats
        Jobs run and reused, CPU and wall seconds.
    own_tasks : dict of ModelId to str
        Each teacher's family.
    """

    rows: list[Row]
    summary: list[dict[str, Any]]
    table: str
    robust_table: str
    reading: str
    paths: dict[str, Path] = field(default_factory=dict)
    stats: RunStats = field(default_factory=RunStats)
    own_tasks: dict[ModelId, str] = field(default_factory=dict)


def run_demo(
    config: DemoConfig | None = None,
    out_dir: str | os.PathLike = "fusion-demo",
    *,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    fresh: bool = False,
) -> DemoResult:
    """Run the whole pipeline and write its outputs under ``out_dir``.

    Parameters
    ----------
    config : DemoConfig, optional
        Sizes (default :meth:`fusion.demo.config.DemoConfig.full`).
    out_dir : str or path-like
        Receives ``jobs/`` (every model, cache and training file, one directory per job),
        ``results.csv`` (one row per model, seed and task), ``summary.csv``,
        ``accuracy.png`` and ``report.md``.
    progress : bool
        Show a tqdm bar over the jobs.
    echo : callable, optional
        Where the tables and the reading are printed (``None``: silent).
    fresh : bool
        Delete ``out_dir/jobs`` first instead of reusing finished jobs.

    Returns
    -------
    DemoResult

    Notes
    -----
    Rerunning into the same ``out_dir`` reuses every finished job (a killed run resumes;
    a run with more seeds only trains the new ones). With ``config.workers > 1`` the jobs
    run in spawned processes, which import the caller's main module: call ``run_demo``
    from a script under ``if __name__ == "__main__":`` (the command line needs nothing).
    """
    config = config or DemoConfig.full()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built here; never download
    plan = demo_jobs(config)
    out = Path(out_dir)
    if fresh:
        shutil.rmtree(out / "jobs", ignore_errors=True)
    records, stats = run_jobs(
        plan.targets(),
        out,
        workers=config.workers,
        threads=config.threads,
        progress=progress,
        desc="fusion demo",
    )
    rows = baseline_rows(plan.data)
    own = {}
    for name, job in plan.teachers.items():
        model = ModelId.teacher(name, _tokenizer_label(config, name))
        own[model] = plan.own_tasks[name]
        rows += score_rows(model, 0, records[job.dirname]["result"]["scores"])
    for (arm, seed), job in plan.arms.items():
        rows += score_rows(ModelId.pivot(arm), seed, records[job.dirname]["result"]["scores"])
    rows.sort(key=lambda r: (r.model.sort_key(), r.seed, TASKS.index(r.task)))
    summary = summarise(rows)
    ctx = Context(out)
    result = DemoResult(
        rows,
        summary,
        format_table(summary, "accuracy"),
        format_table(summary, "robust_accuracy"),
        reading(rows, own),
        {
            "train_data": plan.trainset.path(ctx),
            **{f"cache-{name}": job.path(ctx) for name, job in plan.caches.items()},
        },
        stats,
        own,
    )
    _write_outputs(result, config, out)
    if echo is not None:
        echo(report_text(result, config))
    return result


def _tokenizer_label(config: DemoConfig, name: str) -> str:
    return {"coin": config.coin_tokenizer, "arith": config.arith_tokenizer}[name].label


def timing_text(stats: RunStats, workers: int) -> str:
    """One sentence on what a run cost: wall time, CPU time, per kind of job."""
    kinds = ", ".join(
        f"{kind} {stats.cpu_s[kind]:.0f} s"
        for kind in sorted(stats.cpu_s, key=stats.cpu_s.get)[::-1]
    )
    reused = f"; {stats.reused} finished jobs reused" if stats.reused else ""
    return (
        f"Wall time {stats.total_wall_s:.0f} s with {workers} worker process(es), CPU time "
        f"{stats.total_cpu_s:.0f} s; {stats.ran} jobs run (CPU per kind: {kinds or 'none'})"
        f"{reused}."
    )


def report_text(result: DemoResult, config: DemoConfig) -> str:
    """The terminal report: both tables, the reading and the cost."""
    seeds = ", ".join(map(str, config.seeds))
    return "\n".join(
        [
            "",
            f"Zero-shot-CoT accuracy (%) on {config.eval_items} held-out items per task, paper "
            f"cleansing; pivots: mean ± std over seeds {seeds}; teachers: one run",
            result.table,
            "",
            "Same, robust cleansing",
            result.robust_table,
            "",
            result.reading,
            "",
            timing_text(result.stats, config.workers),
        ]
    )


def _write_outputs(result: DemoResult, config: DemoConfig, out: Path) -> None:
    result.paths.update(
        results=out / "results.csv",
        summary=out / "summary.csv",
        plot=out / "accuracy.png",
        report=out / "report.md",
    )
    write_csv(result.paths["results"], [r.as_record() for r in result.rows])
    write_csv(result.paths["summary"], summary_records(result.summary))
    plot(result.summary, result.rows, result.paths["plot"])
    # how many processes ran the jobs changes no number: leave it out of the report
    sizes = {k: v for k, v in asdict(config).items() if k not in ("workers", "threads")}
    config_json = json.dumps(sizes, indent=2)
    text = "\n".join(
        [
            "# fusion demo",
            "",
            f"Zero-shot-CoT accuracy (%) on {config.eval_items} held-out items per task, paper "
            "cleansing; pivots: mean ± std over seeds; teachers: one run.",
            "",
            "```text",
            result.table,
            "```",
            "",
            "Robust cleansing:",
            "",
            "```text",
            result.robust_table,
            "```",
            "",
            result.reading,
            "",
            "![accuracy](accuracy.png)",
            "",
            "Configuration:",
            "",
            "```json",
            config_json,
            "```",
            "",
        ]
    )
    atomic_write_bytes(result.paths["report"], text.encode())
