"""Where the tasks run: this process, local worker processes, or a Dask cluster.

All engines run the same :func:`gwlite.pairs.tasks.run_task` on the same tasks and hand
each result back to the driver as soon as it is ready (the driver writes the store and
moves the progress bar), so they give identical numbers.

* :class:`InlineEngine`: this process, one task after the other (GPU inputs, one core,
  or work too small to pay for starting processes);
* :class:`ProcessEngine`: a pool of local worker processes (``spawn``, so it is safe with
  threads and on every platform); the work is pickled to each worker once;
* :class:`DaskEngine`: a ``dask.distributed.Client``; the work is scattered to every
  worker once (``broadcast=True``) and each task is a future that Dask reschedules if its
  worker dies.
"""

from __future__ import annotations

import os
import sys
import uuid
from contextlib import contextmanager

from gwlite.errors import GWInputError
from gwlite.pairs.tasks import run_task

__all__ = ["DaskEngine", "InlineEngine", "ProcessEngine", "cpu_count", "resolve_engine"]

# POT imports every array library it finds; a NumPy-only worker does not need them
_POT_QUIET = {
    "POT_BACKEND_DISABLE_PYTORCH": "1",
    "POT_BACKEND_DISABLE_JAX": "1",
    "POT_BACKEND_DISABLE_TENSORFLOW": "1",
    "POT_BACKEND_DISABLE_CUPY": "1",
}


def cpu_count() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


class InlineEngine:
    """Run every task in this process."""

    workers = 1

    def describe(self) -> str:
        return "this process"

    def run(self, work, tasks, on_result) -> None:
        for task in tasks:
            on_result(run_task(work, task))

    def close(self) -> None:
        pass


_WORK = None


@contextmanager
def _main_module_hidden():
    """Start ``spawn`` workers without re-running the caller's ``__main__``.

    A spawned child normally imports the parent's main script so that functions defined
    there can be unpickled; that re-runs any unguarded top-level code (a script calling
    ``gwlite.pairwise`` without ``if __name__ == "__main__":`` would recurse). The tasks
    only use gwlite functions, so the children do not need the main module.
    """
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if hasattr(main, k)}
    try:
        if main is not None:
            main.__spec__ = None
            if "__file__" in saved:
                del main.__file__
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def _install(work, env: dict) -> None:
    global _WORK
    os.environ.update(env)
    _WORK = work


def _run_installed(task):
    return run_task(_WORK, task)


class ProcessEngine:
    """A pool of ``workers`` local processes, started on the first run and kept for the
    next ones (``knn`` mode runs several rounds on the same work)."""

    def __init__(self, workers: int):
        self.workers = int(workers)
        self._pool = None
        self._work = None

    def describe(self) -> str:
        return f"{self.workers} local processes"

    def run(self, work, tasks, on_result) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        if self._pool is None or self._work is not work:
            self.close()
            env = _POT_QUIET if _numpy_only(work) else {}
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_install,
                initargs=(work, env),
            )
            self._work = work
        # workers are started on demand by submit(): all of them inside the guard
        with _main_module_hidden():
            futures = [self._pool.submit(_run_installed, task) for task in tasks]
        try:
            for future in as_completed(futures):
                on_result(future.result())
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._work = None


def _numpy_only(work) -> bool:
    from gwlite import _xp
    from gwlite.pointcloud._cloud import is_point_cloud

    first = work.spaces[0][0]
    return is_point_cloud(first) or _xp.backend_name(first) == "numpy"


class DaskEngine:
    """Tasks as futures on a ``dask.distributed.Client`` (the work scattered once)."""

    def __init__(self, client, retries: int = 2):
        self.client = client
        self.retries = retries
        self._data = None
        self._work = None
        self._token = uuid.uuid4().hex[:8]

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def describe(self) -> str:
        return f"dask cluster at {self.client.scheduler.address} ({self.workers} workers)"

    def run(self, work, tasks, on_result) -> None:
        from distributed import as_completed

        if self._work is not work:
            self._data = self.client.scatter(work, broadcast=True, hash=False)
            self._work = work
        futures = [
            self.client.submit(
                run_task,
                self._data,
                task,
                key=f"gwlite-pairwise-{self._token}-{task.layer}-{task.tile[0]}-{task.tile[1]}"
                f"-{uuid.uuid4().hex[:6]}",
                pure=False,
                retries=self.retries,
            )
            for task in tasks
        ]
        try:
            for future in as_completed(futures):
                on_result(future.result())
                future.release()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        if self._data is not None:
            self._data.release()
            self._data = None
            self._work = None


def _is_client(engine) -> bool:
    return type(engine).__name__ == "Client" and hasattr(engine, "scatter")


def resolve_engine(engine, backend: str, on_device: bool):
    """``engine=None`` (all local cores), an int (that many processes; 1: this process)
    or a ``dask.distributed.Client``."""
    if _is_client(engine):
        if on_device:
            raise GWInputError(
                "engine=<dask Client> with GPU arrays: move the spaces to NumPy (or run "
                "without a cluster, on the GPU, with engine=None)"
            )
        return DaskEngine(engine)
    if engine is None:
        workers = cpu_count()
    elif isinstance(engine, int) and not isinstance(engine, bool) and engine >= 1:
        workers = engine
    else:
        raise GWInputError(
            f"engine must be None (all local cores), a number of local processes (>= 1) or "
            f"a dask.distributed.Client, got {engine!r}"
        )
    if workers == 1 or on_device:
        return InlineEngine()
    return ProcessEngine(workers)
