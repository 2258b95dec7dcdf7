"""Run a set of jobs and everything they depend on, in parallel, resumably.

Each job runs once: a worker writes its artifacts into the job's directory and then,
atomically, ``result.json``; a job whose ``result.json`` exists is done and is never run
again. Killing a run therefore loses at most the jobs in flight, and running it again
continues where it stopped, with the same results (every job is seeded, and runs with
one torch thread per process, so neither the worker count nor the interruption changes a
number).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion.demo.jobs import Context, Job
from fusion.jsonio import write_json_atomic
from gwlite.atomic import temp_target

__all__ = ["JobError", "RunStats", "expand", "run_jobs"]


class JobError(RuntimeError):
    """A job failed; the message names it and its directory."""


@dataclass
class RunStats:
    """What one call of :func:`run_jobs` did and what it cost.

    Attributes
    ----------
    ran, reused : int
        Jobs run now, and jobs found finished on disk.
    cpu_s, wall_s : dict of str to float
        Process CPU seconds and wall seconds of the jobs run now, summed per kind.
    total_wall_s : float
        Wall time of the call.
    total_cpu_s : float
        CPU time of this process and of its finished worker processes during the call.
    """

    ran: int = 0
    reused: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)
    total_wall_s: float = 0.0
    total_cpu_s: float = 0.0


def expand(targets: Iterable[Job]) -> list[Job]:
    """Targets and all their dependencies, each once, dependencies first (target order)."""
    order: list[Job] = []
    seen: set[str] = set()

    def visit(job: Job, path: tuple[str, ...]) -> None:
        if job.dirname in path:
            raise ValueError(f"dependency cycle through {job.label}")
        if job.dirname in seen:
            return
        for dep in job.deps():
            visit(dep, (*path, job.dirname))
        seen.add(job.dirname)
        order.append(job)

    for job in targets:
        visit(job, ())
    return order


def _init_worker(threads: int) -> None:
    import torch
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # save/load bars, once per job
    torch.set_num_threads(threads)


def execute(job: Job, root: str) -> dict[str, Any]:
    """Run one job (in whichever process calls this) and write its ``result.json``."""
    import warnings

    ctx = Context(Path(root))
    ctx.dir(job).mkdir(parents=True, exist_ok=True)
    cpu, wall = time.process_time(), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Trainer's and generate()'s advice, per job
        result = job.run(ctx)
    record = {
        "kind": job.kind,
        "label": job.label,
        "spec": job.describe(),
        "result": result,
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
    }
    write_json_atomic(ctx.result_path(job), record)
    return record


class _Inline:
    """An executor that runs each job at once in this process (``workers=1``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # delivered through the future, like a process pool
            future.set_exception(err)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _pool(workers: int, threads: int) -> Any:
    if workers <= 1:
        return _Inline()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker, safe whatever threads the parent has started
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads,),
    )


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _remove_leftovers(ctx: Context, jobs: Iterable[Job]) -> None:
    """Delete the temporary files and directories of writes a killed run left behind
    (``.NAME.XXXX.tmp`` in a job's directory, see :mod:`gwlite.atomic`): nothing reads
    them, and the job that was writing them runs again. Called before any worker
    starts, so no write of this run is in flight (one run per directory at a time)."""
    for job in jobs:
        directory = ctx.dir(job)
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if temp_target(path.name) is None:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def run_jobs(
    targets: Sequence[Job],
    root: str | os.PathLike,
    *,
    workers: int = 1,
    threads: int = 1,
    progress: bool = True,
    desc: str = "fusion",
) -> tuple[dict[str, dict[str, Any]], RunStats]:
    """Run ``targets`` and their dependencies; reuse every job already done under ``root``.

    Parameters
    ----------
    targets : sequence of Job
    root : path-like
        The run's directory (jobs live in ``root/jobs``).
    workers : int
        Worker processes (1: run in this process).
    threads : int
        ``torch.set_num_threads`` per worker.
    progress : bool
        A tqdm bar over the jobs still to run.
    desc : str
        The bar's label.

    Returns
    -------
    results : dict of str to dict
        ``{job.dirname: result record}`` of every job (targets and dependencies).
    stats : RunStats

    Raises
    ------
    JobError
        When a job fails (the jobs already finished stay on disk).
    """
    import torch
    import transformers
    from tqdm.auto import tqdm

    from fusion.jsonio import read_json

    ctx = Context(Path(root))
    jobs = expand(targets)
    records: dict[str, dict[str, Any]] = {}
    for job in jobs:
        path = ctx.result_path(job)
        if path.is_file():
            records[job.dirname] = read_json(path)
    todo = [job for job in jobs if job.dirname not in records]
    _remove_leftovers(ctx, jobs)
    stats = RunStats(reused=len(records))
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    start_children = _children_cpu()
    # workers=1 runs the jobs in this process: restore what the worker set-up changes
    saved = (
        torch.get_num_threads(),
        transformers.logging.get_verbosity(),
        transformers.logging.is_progress_bar_enabled(),
    )
    if workers <= 1:
        _init_worker(threads)
    pool = _pool(workers, threads) if todo else _Inline()
    bar = tqdm(total=len(todo), desc=desc, unit="job", disable=not progress or not todo)
    running: dict[Future, Job] = {}
    try:
        while todo or running:
            for job in list(todo):
                if len(running) >= max(workers, 1):
                    break
                if all(dep.dirname in records for dep in job.deps()):
                    todo.remove(job)
                    running[pool.submit(execute, job, str(ctx.root))] = job
            if not running:
                raise JobError("no job can start: a dependency is missing")  # pragma: no cover
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                try:
                    record = future.result()
                except Exception as err:
                    raise JobError(f"{job.label} failed ({ctx.dir(job)}): {err}") from err
                records[job.dirname] = record
                stats.ran += 1
                stats.cpu_s[job.kind] = stats.cpu_s.get(job.kind, 0.0) + record["cpu_s"]
                stats.wall_s[job.kind] = stats.wall_s.get(job.kind, 0.0) + record["wall_s"]
                bar.set_postfix_str(job.label)
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        torch.set_num_threads(saved[0])
        transformers.logging.set_verbosity(saved[1])
        if saved[2]:
            transformers.logging.enable_progress_bar()
    stats.total_wall_s = time.perf_counter() - start_wall
    stats.total_cpu_s = time.process_time() - start_cpu + _children_cpu() - start_children
    return records, stats
