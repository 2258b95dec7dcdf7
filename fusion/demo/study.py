"""``python -m fusion study``: when does distillation help the pivot?

The demo's pivot learns from the same kind of exact labels its teachers learned from, so
their distributions carry little that the labels do not. The study puts the pivot in
regimes where they could: few labelled items (the teachers trained on many more),
prompts without labels that a teacher answers, teachers of different strength and
tokenizer, and a grid of loss options. Every **cell** is one such regime; in every cell,
seed by seed, three **arms** continue one SFT warm start with the same data order:
SFT, SFT + ULD, SFT + ULD + GLD. The task is multistep arithmetic (InfiGFusion's
headline claim), evaluated with Zero-shot-CoT and the paper's cleansing on held-out
items.

Cells share jobs wherever their inputs agree (:mod:`fusion.demo.jobs`): all loss cells
reuse the base cell's teacher, cache, warm starts and SFT arm, and a GLD option cell
reuses its SFT+ULD arm too. Everything is resumable (:mod:`fusion.demo.runner`), and the
report is a function of the finished jobs only, so a killed run that is started again
writes the same report as an uninterrupted one.
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fusion.demo.config import ModelSize, TokenizerSpec
from fusion.demo.data import DataSpec
from fusion.demo.jobs import (
    ArmJob,
    CacheJob,
    LabelJob,
    LossSpec,
    Schedule,
    TeacherJob,
    TokenizerJob,
    TrainSetJob,
    WarmJob,
)
from fusion.demo.models import Arm
from fusion.demo.runner import run_jobs
from fusion.demo.study_report import TASK, StudyResult, write_study_report

__all__ = [
    "TASK",
    "Cell",
    "StudyConfig",
    "StudyJobs",
    "StudyResult",
    "TeacherVariant",
    "default_cells",
    "describe_cells",
    "run_study",
    "study_jobs",
]


@dataclass(frozen=True)
class TeacherVariant:
    """One teacher the cells can distil from.

    Attributes
    ----------
    tokenizer : TokenizerSpec
    steps : int
        Training steps (0: the random initialisation, a teacher that knows nothing).
    seed : int
        Initialisation and data order.
    """

    tokenizer: TokenizerSpec
    steps: int
    seed: int = 101


@dataclass(frozen=True)
class Cell:
    """One regime of the study: the pivot's data, the teachers and the loss options.

    Attributes
    ----------
    name : str
        Used by ``--cells``.
    question : str
        What the cell asks, in one line (shown in the report).
    labelled : int
        The pivot's labelled items (the teachers trained on ``StudyConfig.teacher_items``).
    unlabelled : int
        Further prompts without labels, answered by the first teacher (its reasoning and
        answer become training examples for every arm).
    teachers : tuple of str
        Keys of ``StudyConfig.teachers``, weighted equally.
    lambda_, beta : float
    k, m : int
        GLD's kept entries and compared degrees.
    uld_top_k : int or None
        ULD's entries; ``None``: the teacher's whole vocabulary is cached, and ULD reads as
        many of its ranks as the pivot has tokens (all of the smaller vocabulary).
    gld_options : tuple of (str, value)
        Further :class:`fusion.GLDLoss` keywords.
    """

    name: str
    question: str
    labelled: int = 256
    unlabelled: int = 0
    teachers: tuple[str, ...] = ("strong",)
    lambda_: float = 0.5
    beta: float = 1.0
    k: int = 10
    m: int = 64
    uld_top_k: int | None = 10
    gld_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        values = dict(self.gld_options).get("values", "prob")
        if values != "prob":  # refused before any work, not an hour into the study
            raise ValueError(
                f"cell {self.name!r}: GLD values={values!r} needs the teacher's full logits; "
                "the study's teachers are top-k caches of log-probabilities"
            )


def gld_features_supported() -> tuple[str, ...]:
    """The values of :class:`fusion.GLDLoss`'s ``features`` option, or ``()`` without it."""
    from fusion.modules import GLDLoss

    parameter = inspect.signature(GLDLoss).parameters.get("features")
    if parameter is None:
        return ()
    from fusion import coactivation

    return tuple(getattr(coactivation, "FEATURES", ("shares", "degrees")))


def _degrees() -> tuple[tuple[str, Any], ...]:
    # InfiGFusion's m largest raw degrees, the form that m acts on. GLD's values="logit" and
    # "zscore" are not cells: they need the teacher's full logits, which a top-k cache of
    # log-probabilities cannot give (GLDLoss refuses them on cached teachers)
    return (("features", "degrees"),) if gld_features_supported() else ()


def default_cells() -> tuple[Cell, ...]:
    """The study's cells: data regimes, teachers, then loss options on the base regime.

    The base regime is 256 labelled items and the strong teacher; each loss cell changes
    one option of the base. GLD's ``m``, ``values`` and the raw-degree form are compared
    in InfiGFusion's degree form; the granularity-normalised form (``features="shares"``)
    has its own cell when this version of :class:`fusion.GLDLoss` offers it.
    """
    degrees = _degrees()
    cells = [
        Cell("n64", "64 labelled items: SFT alone barely learns", labelled=64),
        Cell("n256", "256 labelled items (the base regime)"),
        Cell("n1024", "1024 labelled items: little left for the teacher to add", labelled=1024),
        Cell(
            "n64+u1024",
            "64 labelled items and 1024 prompts answered by the teacher",
            labelled=64,
            unlabelled=1024,
        ),
        Cell(
            "n256+u1024",
            "256 labelled items and 1024 prompts answered by the teacher",
            unlabelled=1024,
        ),
        Cell("weak", "a weak teacher (trained a third as long)", teachers=("weak",)),
        Cell(
            "weak+u1024",
            "64 labelled items and 1024 prompts answered by the weak teacher",
            labelled=64,
            unlabelled=1024,
            teachers=("weak",),
        ),
        Cell(
            "untrained",
            "a teacher that knows nothing (placebo: regularisation or knowledge?)",
            teachers=("untrained",),
        ),
        Cell(
            "same-tokenizer",
            "a teacher with the pivot's own tokenizer (no granularity gap)",
            teachers=("same-tokenizer",),
        ),
        Cell(
            "two-teachers",
            "two teachers, different tokenizers, weighted 1/2 each",
            teachers=("strong", "same-tokenizer"),
        ),
        Cell("lambda0.2", "less weight on distillation (lambda = 0.2)", lambda_=0.2),
        Cell("lambda0.8", "more weight on distillation (lambda = 0.8)", lambda_=0.8),
        Cell("beta0.25", "a smaller GLD weight (beta = 0.25)", beta=0.25),
        Cell("beta4", "a larger GLD weight (beta = 4)", beta=4.0),
        Cell("k5", "GLD keeps 5 entries per position", k=5),
        Cell("k20", "GLD keeps 20 entries per position", k=20),
        Cell("m16", "GLD compares 16 degrees (degree form)", m=16, gld_options=degrees),
        Cell("m128", "GLD compares 128 degrees (degree form)", m=128, gld_options=degrees),
        Cell(
            "uld-full",
            "ULD over every rank both vocabularies have (the smaller one in full), not the top 10",
            uld_top_k=None,
        ),
    ]
    for value in gld_features_supported():
        cells.append(
            Cell(
                f"features-{value}",
                f"GLD's graph features = {value!r} (granularity: shares are normalised, "
                "degrees are InfiGFusion's raw top-m)",
                gld_options=(("features", value),),
            )
        )
    return tuple(cells)


#: The pivot's tokenizer: 40 merges beyond the bytes, finer than the teachers'.
PIVOT_TOKENIZER = TokenizerSpec("bpe", 300, corpus="odd")


def _default_teachers() -> dict[str, TeacherVariant]:
    # On arithmetic alone a BPE runs out of merges at about 325 entries: "420" is every
    # merge there is, so the teachers' tokens are coarser than the pivot's.
    bpe = TokenizerSpec("bpe", 420)
    return {
        "strong": TeacherVariant(bpe, 1200),
        "weak": TeacherVariant(bpe, 400),
        "untrained": TeacherVariant(bpe, 0),
        # finer tokens learn more slowly: more steps, for a teacher of similar strength
        "same-tokenizer": TeacherVariant(PIVOT_TOKENIZER, 2000, seed=102),
    }


@dataclass(frozen=True)
class StudyConfig:
    """Everything that sizes a study run.

    Attributes
    ----------
    seeds : tuple of int
        Pivot seeds; every arm of every cell runs every seed (the report needs >= 2; the
        full study has 5).
    cells : tuple of Cell
    teachers : dict of str to TeacherVariant
    teacher_items : int
        The teachers' training items.
    eval_items : int
        Held-out items (the same for every model).
    arithmetic_terms, arithmetic_max_abs : int
        Size of the items.
    pivot_tokenizer : TokenizerSpec
    teacher_size, pivot : ModelSize
    warm_steps, arm_steps : int
        Each seed's SFT warm start (on the cell's training set), then each arm.
    batch_size, learning_rate, warmup_steps :
        As in :class:`~fusion.demo.config.DemoConfig`.
    cache_k : int
        Entries cached per teacher token (at least every cell's ``k`` and ULD top-k).
    eval_batch_size, workers, threads, data_seed :
        As in :class:`~fusion.demo.config.DemoConfig`.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    cells: tuple[Cell, ...] = field(default_factory=default_cells)
    teachers: dict[str, TeacherVariant] = field(default_factory=_default_teachers)
    teacher_items: int = 2000
    eval_items: int = 500
    arithmetic_terms: int = 2
    arithmetic_max_abs: int = 2
    pivot_tokenizer: TokenizerSpec = PIVOT_TOKENIZER
    teacher_size: ModelSize = field(default_factory=ModelSize)
    pivot: ModelSize = field(default_factory=ModelSize)
    warm_steps: int = 400
    arm_steps: int = 400
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    cache_k: int = 20
    eval_batch_size: int = 64
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    threads: int = 1
    data_seed: int = 0

    @classmethod
    def full(cls, **overrides: Any) -> StudyConfig:
        """Every cell, five seeds, 500 held-out items."""
        return replace(cls(), **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> StudyConfig:
        """A smoke test of the machinery: three cells, two seeds, a few steps each."""
        bpe = TokenizerSpec("bpe", 420)
        small = ModelSize(d_model=32, n_head=2)
        tiny = cls(
            seeds=(0, 1),
            cells=(
                Cell("n32", "32 labelled items", labelled=32),
                Cell(
                    "n32+u16",
                    "32 labelled items and 16 answered prompts",
                    labelled=32,
                    unlabelled=16,
                ),
                Cell("beta4", "a larger GLD weight", labelled=32, beta=4.0),
            ),
            teachers={"strong": TeacherVariant(bpe, 20)},
            teacher_items=64,
            eval_items=12,
            arithmetic_max_abs=1,
            teacher_size=small,
            pivot=small,
            warm_steps=8,
            arm_steps=6,
            batch_size=8,
            warmup_steps=2,
            cache_k=10,
        )
        return replace(tiny, **overrides)

    def check(self) -> None:
        """Raise ValueError for settings that cannot run."""
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"a study needs at least 2 distinct seeds, got {self.seeds}")
        names = [c.name for c in self.cells]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"cell names must be unique and non-empty, got {names}")
        for cell in self.cells:
            for name in cell.teachers:
                if name not in self.teachers:
                    raise ValueError(
                        f"cell {cell.name!r} names teacher {name!r}; known: {sorted(self.teachers)}"
                    )
            if cell.labelled < 1 or cell.unlabelled < 0 or not cell.teachers:
                raise ValueError(f"cell {cell.name!r}: need labelled >= 1, unlabelled >= 0")
            if cell.k > self.cache_k or (cell.uld_top_k or 0) > self.cache_k:
                raise ValueError(
                    f"cell {cell.name!r}: k={cell.k} and uld_top_k={cell.uld_top_k} must not "
                    f"exceed cache_k={self.cache_k}"
                )
        for name in ("teacher_items", "eval_items", "warm_steps", "arm_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def select(self, names: Sequence[str] | None) -> tuple[Cell, ...]:
        """The cells called ``names`` (all when ``None``), in the configuration's order."""
        if not names:
            return self.cells
        known = {c.name for c in self.cells}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown cells {unknown}; known: {[c.name for c in self.cells]}")
        return tuple(c for c in self.cells if c.name in set(names))


@dataclass(frozen=True)
class StudyJobs:
    """The jobs of a study run.

    Attributes
    ----------
    data : DataSpec
    cells : tuple of Cell
    teachers : dict of str to TeacherJob
        The teachers the selected cells use.
    arms : dict of (str, Arm, int) to ArmJob
        ``(cell name, arm, seed)``.
    """

    data: DataSpec
    cells: tuple[Cell, ...]
    teachers: dict[str, TeacherJob]
    arms: dict[tuple[str, Arm, int], ArmJob]

    def targets(self) -> list[Any]:
        """Teachers first (the report shows them), then the arms cell by cell, seed by seed."""
        return [*self.teachers.values(), *self.arms.values()]


def study_jobs(config: StudyConfig, cells: Sequence[str] | None = None) -> StudyJobs:
    """The jobs of ``config``'s cells (or of the named ones)."""
    config.check()
    chosen = config.select(cells)
    data = DataSpec(
        tasks=(TASK,),
        seed=config.data_seed,
        terms=config.arithmetic_terms,
        max_abs=config.arithmetic_max_abs,
        teacher_items=config.teacher_items,
        # every cell of the configuration, not only the chosen ones: the held-out items
        # must not depend on --cells
        pivot_items=max(c.labelled for c in config.cells),
        unlabelled_items=max(c.unlabelled for c in config.cells),
        eval_items=config.eval_items,
    )
    pivot_tok = TokenizerJob(data, config.pivot_tokenizer)
    teachers: dict[str, TeacherJob] = {}

    def teacher(name: str) -> TeacherJob:
        if name not in teachers:
            variant = config.teachers[name]
            teachers[name] = TeacherJob(
                name,
                TokenizerJob(data, variant.tokenizer),
                config.teacher_size,
                Schedule(
                    max(variant.steps, 1),
                    config.learning_rate,
                    config.batch_size,
                    config.warmup_steps,
                    "whole",
                    seed=variant.seed,
                ),
                (TASK,),
                config.teacher_items,
                config.eval_batch_size,
                trained=variant.steps > 0,
            )
        return teachers[name]

    arms: dict[tuple[str, Arm, int], ArmJob] = {}
    for cell in chosen:
        pseudo = (
            (LabelJob(teacher(cell.teachers[0]), TASK, cell.unlabelled),) if cell.unlabelled else ()
        )
        trainset = TrainSetJob(data, ((TASK, cell.labelled),), pseudo, order_seed=config.data_seed)
        cache_k = 0 if cell.uld_top_k is None else config.cache_k  # 0: the whole vocabulary
        caches = tuple(
            (CacheJob(teacher(name), trainset, cache_k), 1.0 / len(cell.teachers))
            for name in cell.teachers
        )
        for seed in config.seeds:
            warm = WarmJob(
                pivot_tok,
                config.pivot,
                trainset,
                Schedule(
                    config.warm_steps,
                    config.learning_rate,
                    config.batch_size,
                    config.warmup_steps,
                    "start",
                    seed=seed,
                ),
                init_seed=seed,
            )
            schedule = Schedule(
                config.arm_steps,
                config.learning_rate,
                config.batch_size,
                phase="finish",
                seed=seed + 1000,
            )
            for arm in Arm:
                loss = LossSpec.for_arm(
                    arm,
                    lambda_=cell.lambda_,
                    beta=cell.beta,
                    k=cell.k,
                    m=cell.m,
                    uld_top_k=cell.uld_top_k,
                    gld_options=dict(cell.gld_options),
                )
                arms[(cell.name, arm, seed)] = ArmJob(
                    arm,
                    pivot_tok,
                    config.pivot,
                    trainset,
                    schedule,
                    init_seed=seed,
                    warm=warm,
                    teachers=caches if arm.uses_teachers else (),
                    loss=loss,
                    eval_batch_size=config.eval_batch_size,
                )
    return StudyJobs(data, chosen, teachers, arms)


def describe_cells(config: StudyConfig, names: Sequence[str] | None = None) -> str:
    """A table of the cells: what each asks, and how many arm jobs it adds."""
    plan = study_jobs(config, names)
    seen: set[str] = set()
    lines = [f"{'cell':16s} {'new arms':>8s}  question"]
    for cell in plan.cells:
        new = 0
        for (name, _arm, _seed), job in plan.arms.items():
            if name == cell.name and job.dirname not in seen:
                seen.add(job.dirname)
                new += 1
        lines.append(f"{cell.name:16s} {new:8d}  {cell.question}")
    lines.append(
        f"{len(plan.cells)} cells x {len(config.seeds)} seeds x 3 arms = "
        f"{len(plan.arms)} pivots, {len(seen)} distinct (shared arms run once)"
    )
    return "\n".join(lines)


def run_study(
    config: StudyConfig | None = None,
    out_dir: str | os.PathLike = "fusion-study",
    *,
    cells: Sequence[str] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    fresh: bool = False,
) -> StudyResult:
    """Run the study's cells (or the named ones) and write the report under ``out_dir``.

    Parameters
    ----------
    config : StudyConfig, optional
        Default :meth:`StudyConfig.full`.
    out_dir : path-like
        Receives ``jobs/`` (one directory per job, reused by reruns), ``runs.csv`` (one
        row per cell, arm and seed), ``effects.csv`` (the paired comparisons per cell),
        ``effects.png``, ``report.md`` and ``timings.json``.
    cells : sequence of str, optional
        Names of the cells to run (``python -m fusion study --cells ...``).
    progress : bool
    echo : callable, optional
        Where the verdict and the cost are printed (``None``: silent).
    fresh : bool
        Delete ``out_dir/jobs`` first.

    Returns
    -------
    StudyResult

    Notes
    -----
    With ``config.workers > 1`` the jobs run in spawned processes: call ``run_study``
    under ``if __name__ == "__main__":`` in a script.
    """
    config = config or StudyConfig.full()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    plan = study_jobs(config, cells)
    out = Path(out_dir)
    if fresh:
        shutil.rmtree(out / "jobs", ignore_errors=True)
    records, stats = run_jobs(
        plan.targets(),
        out,
        workers=config.workers,
        threads=config.threads,
        progress=progress,
        desc="fusion study",
    )
    result = write_study_report(plan, config, records, stats, out)
    if echo is not None:
        echo(result.verdict)
    return result
