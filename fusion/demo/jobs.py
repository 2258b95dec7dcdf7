"""The jobs of a run: each builds, trains, labels, caches or evaluates one thing, once.

A job is a frozen dataclass whose fields are everything its output depends on. Its
:attr:`~Job.key` hashes those fields, so two cells of a study that need the same teacher
(or the same SFT pivot) share one job, and a rerun finds the finished ones on disk
(:mod:`fusion.demo.runner` executes them). The chain of one run:

``TokenizerJob`` -> ``TeacherJob`` -> (``LabelJob``: the teacher answers prompts that have
no labels) -> ``TrainSetJob`` (the pivot's training file) -> ``CacheJob`` (the teacher's
top-k over that file) -> ``WarmJob`` (the pivot's SFT warm start) -> ``ArmJob`` (one
pivot, one loss, evaluated).

Every training run goes through :class:`fusion.FusionTrainer`, every evaluation through
:func:`fusion.eval.evaluate` (Zero-shot-CoT, paper and robust cleansing), every cache
through :func:`fusion.cache.build`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from fusion.demo.config import ModelSize, TokenizerSpec
from fusion.demo.data import DataSpec, reasoning_examples, shuffled
from fusion.demo.models import Arm, build_tokenizer, new_model
from fusion.jsonio import read_json, read_jsonl, write_jsonl_atomic
from gwlite.atomic import atomic_write_bytes

__all__ = [
    "JOB_VERSION",
    "ArmJob",
    "CacheJob",
    "Context",
    "Job",
    "LabelJob",
    "LossSpec",
    "Schedule",
    "TeacherJob",
    "TokenizerJob",
    "TrainSetJob",
    "WarmJob",
    "evaluate_model",
    "resolved_gld_options",
    "train",
]

#: Part of every key: bump it when a job's code changes what it produces.
JOB_VERSION = 1


# ---------------------------------------------------------------------------------------
# settings shared by the jobs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Optimiser settings of one training run (AdamW, no weight decay).

    Attributes
    ----------
    steps, batch_size : int
    learning_rate : float
        Peak learning rate.
    warmup_steps : int
        Linear warm-up (ignored by ``phase="finish"``).
    phase : {"whole", "start", "finish"}
        ``"whole"``: warm-up then cosine decay; ``"start"``: warm-up then constant (a warm
        start that others continue); ``"finish"``: cosine decay from the peak, no warm-up
        (the continuation of a warm start).
    seed : int
        Data order and the Trainer's seed.
    """

    steps: int
    learning_rate: float
    batch_size: int
    warmup_steps: int = 0
    phase: str = "whole"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.phase not in ("whole", "start", "finish"):
            raise ValueError(f"phase must be 'whole', 'start' or 'finish', got {self.phase!r}")
        if self.steps < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError(f"need steps >= 1, batch_size >= 1, learning_rate > 0: {self}")


@dataclass(frozen=True)
class LossSpec:
    """The fusion loss of one pivot arm (:class:`fusion.FusionTrainer` arguments).

    Build it with :meth:`for_arm`, which sets what an arm does not use to neutral values,
    so that, e.g., the SFT+ULD arms of two cells that differ only in GLD's ``k`` are one
    job.

    Attributes
    ----------
    lambda_, beta : float
    k, m : int
        GLD's kept entries and compared degrees (0 when there is no GLD term).
    uld_top_k : int or None
        ULD's entries (``None``: all that the caches hold).
    gld_options : tuple of (str, value)
        Further :class:`fusion.GLDLoss` keywords, sorted by name.
    """

    lambda_: float = 0.0
    beta: float = 0.0
    k: int = 0
    m: int = 0
    uld_top_k: int | None = None
    gld_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def for_arm(
        cls,
        arm: Arm,
        *,
        lambda_: float = 0.5,
        beta: float = 1.0,
        k: int = 10,
        m: int = 64,
        uld_top_k: int | None = None,
        gld_options: Mapping[str, Any] | None = None,
    ) -> LossSpec:
        """The loss ``arm`` trains with, from the full set of options."""
        arm = Arm(arm)
        if arm is Arm.SFT:
            return cls()
        if not 0 < lambda_ <= 1:
            raise ValueError(f"a distilled arm needs 0 < lambda_ <= 1, got {lambda_}")
        if arm is Arm.ULD:
            return cls(lambda_=lambda_, uld_top_k=uld_top_k)
        if not beta > 0 or k < 1 or m < 1:
            raise ValueError(f"the GLD arm needs beta > 0, k >= 1, m >= 1; got {beta}, {k}, {m}")
        options = tuple(sorted(resolved_gld_options(gld_options).items()))
        return cls(lambda_, beta, k, m, uld_top_k, options)


def resolved_gld_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` plus :class:`fusion.GLDLoss`'s default for ``features``, when it has one.

    A job's key must change when what it computes changes: pinning the default of an
    option whose default may change between versions keeps an old result from being
    reused for a different loss.
    """
    import inspect

    from fusion.modules import GLDLoss

    out = dict(options or {})
    parameter = inspect.signature(GLDLoss).parameters.get("features")
    if parameter is not None and parameter.default is not inspect.Parameter.empty:
        out.setdefault("features", parameter.default)
    return out


# ---------------------------------------------------------------------------------------
# the job protocol
# ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-ready form of a spec; nested jobs appear as their directory names."""
    if isinstance(value, Job):
        return value.dirname
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Context:
    """Where the jobs of a run keep their outputs: ``root/jobs/<kind>-<key>/``."""

    root: Path

    def dir(self, job: Job) -> Path:
        """The job's directory."""
        return self.root / "jobs" / job.dirname

    def result_path(self, job: Job) -> Path:
        """The file whose presence says the job is done."""
        return self.dir(job) / "result.json"

    def result(self, job: Job) -> dict[str, Any]:
        """A finished job's result."""
        return read_json(self.result_path(job))["result"]


class Job:
    """Base of the job dataclasses: a kind, dependencies, a key and a ``run``."""

    kind: ClassVar[str] = "job"

    def deps(self) -> tuple[Job, ...]:
        """Jobs that must be done first."""
        return ()

    def run(self, ctx: Context) -> dict[str, Any]:  # pragma: no cover - abstract
        """Do the work (in a worker process), write artifacts in ``ctx.dir(self)``."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """A short human-readable name for progress bars and errors."""
        return self.kind

    def describe(self) -> dict[str, Any]:
        """The fields, JSON-ready (nested jobs by directory name)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @cached_property
    def key(self) -> str:
        """16 hex digits of the SHA-256 of the kind, :data:`JOB_VERSION` and the fields."""
        text = json.dumps(
            {"kind": self.kind, "version": JOB_VERSION, "spec": self.describe()}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def dirname(self) -> str:
        """``<kind>-<key>``, the job's directory name."""
        return f"{self.kind}-{self.key}"


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place (an older copy is removed first)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _temp_dir(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".tmp"))


def load_tokenizer(path: Path) -> Any:
    """A tokenizer saved by :class:`TokenizerJob` (left padding, as generation needs)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    tokenizer.padding_side = "left"
    return tokenizer


# ---------------------------------------------------------------------------------------
# training and evaluation
# ---------------------------------------------------------------------------------------


def _training_args(out_dir: Path, schedule: Schedule):
    from transformers import TrainingArguments

    lr_type = {"whole": "cosine", "start": "constant_with_warmup", "finish": "cosine"}
    warmup = 0 if schedule.phase == "finish" else min(schedule.warmup_steps, schedule.steps - 1)
    return TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=schedule.batch_size,
        max_steps=schedule.steps,
        learning_rate=schedule.learning_rate,
        warmup_steps=max(warmup, 0),
        lr_scheduler_type=lr_type[schedule.phase],
        weight_decay=0.0,
        logging_steps=max(1, schedule.steps // 5),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=schedule.seed,
        data_seed=schedule.seed,
        dataloader_num_workers=0,
    )


def train(
    model: Any,
    tokenizer: Any,
    examples: str | os.PathLike | Sequence[Mapping[str, str]],
    schedule: Schedule,
    work_dir: Path,
    *,
    teachers: Sequence[tuple[Path, float]] = (),
    loss: LossSpec | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place with :class:`fusion.FusionTrainer`.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase
    examples : path or sequence of mapping
        ``prompt``/``response`` pairs; with ``teachers``, the file the caches were built on.
    schedule : Schedule
    work_dir : pathlib.Path
        The Trainer's output directory (nothing is saved there).
    teachers : sequence of (path, float)
        Caches and weights (used when ``loss.lambda_ > 0``).
    loss : LossSpec, optional
        Default plain SFT.

    Returns
    -------
    list of dict
        The training log lines (``loss``, ``ce``, and ``uld``/``gld`` when distilling).
    """
    from transformers import PrinterCallback

    from fusion.cache import TeacherCache
    from fusion.training import FusionTrainer

    loss = loss or LossSpec()
    distil = loss.lambda_ > 0
    options: dict[str, Any] = {}
    if distil:
        smallest = min(TeacherCache(path).k for path, _ in teachers)
        # without a GLD term, k and m only size the collator: the fewest entries that ULD reads
        uld_top_k = loss.uld_top_k
        if uld_top_k is None:
            # "the whole vocabulary": every cached entry that the pivot can match (ULD pairs
            # sorted probabilities rank by rank; the pivot has no more ranks than tokens)
            uld_top_k = min(smallest, int(model.get_output_embeddings().out_features))
        k = loss.k or uld_top_k
        options = dict(
            teachers=list(teachers),
            k=k,
            m=loss.m or 1,
            top_k=uld_top_k,
            gld_options=dict(loss.gld_options),
        )
    if isinstance(examples, str | os.PathLike):
        data: Any = str(examples)
    else:
        data = [{"prompt": e["prompt"], "response": e["response"]} for e in examples]
    trainer = FusionTrainer(
        model,
        _training_args(work_dir, schedule),
        lambda_=loss.lambda_,
        beta=loss.beta,
        train_dataset=data,
        processing_class=tokenizer,
        **options,
    )
    trainer.remove_callback(PrinterCallback)  # runs report through their own progress bar
    trainer.train()
    model.eval()
    shutil.rmtree(work_dir, ignore_errors=True)
    return [h for h in trainer.state.log_history if "loss" in h]


def evaluate_model(
    model: Any,
    tokenizer: Any,
    held_out: Mapping[str, Sequence[Mapping[str, Any]]],
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """Zero-shot-CoT accuracy of a model on the held-out items of every task.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase
    held_out : mapping of str to sequence of dict
        Items per task (:attr:`DataSpec.held_out`).
    batch_size : int
        Prompts per generation batch.

    Returns
    -------
    dict
        ``{task: {"n", "accuracy", "robust_accuracy"}}``: paper and robust cleansing.
    """
    from fusion.eval import HFModel, evaluate

    hf = HFModel(model, tokenizer=tokenizer, batch_size=batch_size)
    scores = {}
    for task, items in held_out.items():
        result = evaluate(
            hf,
            list(items),
            task=task,
            method="zero_shot_cot",
            batch_size=len(items),
            progress=False,
        )
        scores[task] = {
            "n": result.n,
            "accuracy": result.accuracy,
            "robust_accuracy": result.robust_accuracy,
        }
    return scores


def _last_log(log: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keep = ("loss", "ce", "uld", "gld", "step")
    return {k: float(v) for k, v in (log[-1] if log else {}).items() if k in keep}


def _save_model(model: Any, tokenizer: Any, final: Path) -> None:
    tmp = _temp_dir(final.parent, final.name)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _replace_dir(tmp, final)


def _load_model(path: Path) -> tuple[Any, Any]:
    from fusion.models import load_causal_lm

    return load_causal_lm(path), load_tokenizer(path)


# ---------------------------------------------------------------------------------------
# the jobs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerJob(Job):
    """Train a tokenizer on the run's tokenizer corpus and save it."""

    kind: ClassVar[str] = "tokenizer"
    data: DataSpec
    spec: TokenizerSpec

    @property
    def label(self) -> str:
        return f"tokenizer {self.spec.label}"

    def run(self, ctx: Context) -> dict[str, Any]:
        tokenizer = build_tokenizer(self.spec, self.data.corpus())
        final = ctx.dir(self) / "tokenizer"
        tmp = _temp_dir(final.parent, final.name)
        tokenizer.save_pretrained(tmp)
        _replace_dir(tmp, final)
        return {"vocab": len(tokenizer)}

    def load(self, ctx: Context) -> Any:
        """The saved tokenizer."""
        return load_tokenizer(ctx.dir(self) / "tokenizer")


@dataclass(frozen=True)
class TeacherJob(Job):
    """Train a teacher on its task families, evaluate it on them, save it.

    Attributes
    ----------
    name : str
        ``"coin"``, ``"arith"``... (shown as ``teacher-<name>``)
    tokenizer : TokenizerJob
    size : ModelSize
    schedule : Schedule
        Its ``seed`` also seeds the initialisation.
    tasks : tuple of str
        The families it trains on (the first ``items`` of each one's teacher stream).
    items : int
    eval_batch_size : int
    trained : bool
        ``False``: keep the random initialisation (a teacher that knows nothing, for
        placebo comparisons); ``schedule`` then only seeds it.
    """

    kind: ClassVar[str] = "teacher"
    name: str
    tokenizer: TokenizerJob
    size: ModelSize
    schedule: Schedule
    tasks: tuple[str, ...]
    items: int
    eval_batch_size: int = 64
    trained: bool = True

    @property
    def label(self) -> str:
        steps = f"{self.schedule.steps} steps" if self.trained else "untrained"
        return f"teacher-{self.name} ({steps})"

    def deps(self) -> tuple[Job, ...]:
        return (self.tokenizer,)

    def run(self, ctx: Context) -> dict[str, Any]:
        data = self.tokenizer.data
        tokenizer = self.tokenizer.load(ctx)
        examples = data.labelled([(t, self.items) for t in self.tasks], role="teacher")
        model = new_model(tokenizer, self.size, seed=self.schedule.seed)
        log = []
        if self.trained:
            log = train(model, tokenizer, examples, self.schedule, ctx.dir(self) / "trainer")
        held_out = {task: data.held_out[task] for task in self.tasks}
        scores = evaluate_model(model, tokenizer, held_out, self.eval_batch_size)
        _save_model(model, tokenizer, ctx.dir(self) / "model")
        return {"scores": scores, "log": _last_log(log)}

    def load(self, ctx: Context) -> tuple[Any, Any]:
        """The trained teacher and its tokenizer."""
        return _load_model(ctx.dir(self) / "model")


@dataclass(frozen=True)
class LabelJob(Job):
    """Let a teacher answer prompts without labels: its reasoning and answer become examples.

    The teacher runs the evaluation's own two Zero-shot-CoT stages on the first ``n``
    prompts of the ``"unlabelled"`` stream; each answered prompt gives the two examples of
    :func:`fusion.demo.data.reasoning_examples` with the teacher's text (right or wrong:
    the result records how often it was right).
    """

    kind: ClassVar[str] = "label"
    teacher: TeacherJob
    task: str
    n: int

    @property
    def label(self) -> str:
        return f"labels by teacher-{self.teacher.name} ({self.task}, {self.n})"

    def deps(self) -> tuple[Job, ...]:
        return (self.teacher,)

    def run(self, ctx: Context) -> dict[str, Any]:
        from fusion.eval import HFModel, evaluate

        data = self.teacher.tokenizer.data
        model, tokenizer = self.teacher.load(ctx)
        items = data.items(self.task, "unlabelled", self.n)
        hf = HFModel(model, tokenizer=tokenizer, batch_size=self.teacher.eval_batch_size)
        result = evaluate(hf, items, task=self.task, batch_size=len(items) or 1, progress=False)
        examples = []
        for record in result.records:
            if record.pred and record.reasoning and record.reasoning.strip():
                examples += reasoning_examples(
                    record.question, record.reasoning, record.pred, self.task
                )
        write_jsonl_atomic(ctx.dir(self) / "examples.jsonl", examples)
        return {
            "prompts": self.n,
            "answered": len(examples) // 2,
            "accuracy": result.accuracy if result.n else float("nan"),
        }


@dataclass(frozen=True)
class TrainSetJob(Job):
    """The pivot's training file: labelled items, then teacher-labelled prompts, shuffled.

    Attributes
    ----------
    data : DataSpec
    labelled : tuple of (str, int)
        ``(task, n)``: the first ``n`` items of each task's pivot stream.
    pseudo : tuple of LabelJob
        Teacher-labelled prompts added to them.
    order_seed : int
        Seed of the file's order.
    """

    kind: ClassVar[str] = "trainset"
    data: DataSpec
    labelled: tuple[tuple[str, int], ...]
    pseudo: tuple[LabelJob, ...] = ()
    order_seed: int = 0

    @property
    def label(self) -> str:
        parts = [f"{task} {n}" for task, n in self.labelled]
        parts += [f"+{job.n} labelled by teacher-{job.teacher.name}" for job in self.pseudo]
        return "training set " + ", ".join(parts)

    def deps(self) -> tuple[Job, ...]:
        return self.pseudo

    def path(self, ctx: Context) -> Path:
        """The JSONL file (``prompt``, ``response``, ``task`` per line)."""
        return ctx.dir(self) / "train.jsonl"

    def run(self, ctx: Context) -> dict[str, Any]:
        examples = self.data.labelled(self.labelled)
        counts = {"labelled": len(examples)}
        for job in self.pseudo:
            extra = read_jsonl(ctx.dir(job) / "examples.jsonl")
            counts[job.dirname] = len(extra)
            examples += extra
        if not examples:
            raise ValueError("the pivot's training set is empty")
        write_jsonl_atomic(self.path(ctx), shuffled(examples, self.order_seed))
        return {"examples": len(examples), "sources": counts}


@dataclass(frozen=True)
class CacheJob(Job):
    """Cache a teacher's top-``k`` over the pivot's training file (:func:`fusion.cache.build`).

    ``k = 0`` caches the teacher's whole vocabulary (for the full ULD).
    """

    kind: ClassVar[str] = "cache"
    teacher: TeacherJob
    trainset: TrainSetJob
    k: int

    @property
    def label(self) -> str:
        return f"cache of teacher-{self.teacher.name} (k={self.k or 'all'})"

    def deps(self) -> tuple[Job, ...]:
        return (self.teacher, self.trainset)

    def path(self, ctx: Context) -> Path:
        """The cache directory."""
        return ctx.dir(self) / "cache"

    def run(self, ctx: Context) -> dict[str, Any]:
        from fusion.cache import TeacherCache, build

        model, tokenizer = self.teacher.load(ctx)
        k = self.k or len(tokenizer)
        build(
            model,
            tokenizer,
            self.trainset.path(ctx),
            self.path(ctx),
            k=k,
            overwrite=True,  # a rerun after an interruption starts the (short) build afresh
            progress=False,
        )
        return {"rows": len(TeacherCache(self.path(ctx))), "k": k}


@dataclass(frozen=True)
class WarmJob(Job):
    """SFT of a fresh pivot on its training file, saved for the arms to continue."""

    kind: ClassVar[str] = "warm"
    tokenizer: TokenizerJob
    size: ModelSize
    trainset: TrainSetJob
    schedule: Schedule
    init_seed: int

    @property
    def label(self) -> str:
        return f"warm start seed {self.init_seed}"

    def deps(self) -> tuple[Job, ...]:
        return (self.tokenizer, self.trainset)

    def run(self, ctx: Context) -> dict[str, Any]:
        import torch

        tokenizer = self.tokenizer.load(ctx)
        model = new_model(tokenizer, self.size, seed=self.init_seed)
        log = train(
            model, tokenizer, self.trainset.path(ctx), self.schedule, ctx.dir(self) / "trainer"
        )
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        atomic_write_bytes(ctx.dir(self) / "state.pt", buffer.getvalue(), durable=False)
        return {"log": _last_log(log)}


@dataclass(frozen=True)
class ArmJob(Job):
    """Train one pivot with one loss (from its warm start, if any) and evaluate it.

    Attributes
    ----------
    arm : Arm
    tokenizer : TokenizerJob
        The pivot's.
    size : ModelSize
    trainset : TrainSetJob
    schedule : Schedule
    init_seed : int
        Seed of the initialisation (the warm start's own, when there is one).
    warm : WarmJob or None
    teachers : tuple of (CacheJob, float)
        Caches and weights (empty for SFT).
    loss : LossSpec
    eval_batch_size : int
    """

    kind: ClassVar[str] = "arm"
    arm: Arm
    tokenizer: TokenizerJob
    size: ModelSize
    trainset: TrainSetJob
    schedule: Schedule
    init_seed: int
    warm: WarmJob | None = None
    teachers: tuple[tuple[CacheJob, float], ...] = ()
    loss: LossSpec = field(default_factory=LossSpec)
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.arm.uses_teachers != bool(self.teachers):
            raise ValueError(f"arm {self.arm.value} with {len(self.teachers)} teachers")
        if self.arm.uses_teachers != (self.loss.lambda_ > 0):
            raise ValueError(f"arm {self.arm.value} with lambda_={self.loss.lambda_}")

    @property
    def label(self) -> str:
        return f"pivot {self.arm.value} seed {self.init_seed}"

    def deps(self) -> tuple[Job, ...]:
        warm = (self.warm,) if self.warm is not None else ()
        return (self.tokenizer, self.trainset, *warm, *(cache for cache, _ in self.teachers))

    def run(self, ctx: Context) -> dict[str, Any]:
        import torch

        tokenizer = self.tokenizer.load(ctx)
        model = new_model(tokenizer, self.size, seed=self.init_seed)
        if self.warm is not None:
            state = torch.load(ctx.dir(self.warm) / "state.pt", weights_only=True)
            model.load_state_dict(state)
        log = train(
            model,
            tokenizer,
            self.trainset.path(ctx),
            self.schedule,
            ctx.dir(self) / "trainer",
            teachers=[(cache.path(ctx), weight) for cache, weight in self.teachers],
            loss=self.loss,
        )
        data = self.trainset.data
        scores = evaluate_model(model, tokenizer, data.held_out, self.eval_batch_size)
        return {"scores": scores, "log": _last_log(log)}
