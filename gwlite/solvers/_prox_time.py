r"""The time model of ``method="proximal"``: what a ``time_limit`` must leave room for.

Every piece of work the solver may skip or cut is priced before it starts, from speeds
measured *in this call* (the machine's load and the BLAS thread count change between
calls, so nothing is cached across them):

* a matrix product's running speed (flop/s), the fastest of a few small products timed
  at the start of the call (:func:`measure`), times the share of the cores the process
  gets now (:func:`cpu_share`: core count over the load, as
  :func:`gwlite.solvers._common.machine_load` counts it);
* from it, the seconds of an exact step and of a Sinkhorn projection, of pricing a plan
  in float64, of the randomized SVD set-up of the low-rank phase (:meth:`TimeModel.svd_s`),
  of pricing a sparse plan through its support (:meth:`TimeModel.sparse_price_s`) and of
  one exact OT of the polish (:meth:`TimeModel.emd_s`);
* once a step (or a check) has run, the next is predicted by the slowest of the last
  three of its kind (:class:`StepClock`).

The constants below were measured on 2 shared CPU cores (``benchmarks/bench_time_limit.py``
and the profiles behind it); they count flop-equivalents of work, so a slower machine or
a busier moment scales every estimate through the measured speed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gwlite import _xp

__all__ = ["StepClock", "TimeModel", "cpu_share", "measure", "synchronise"]

# flop-equivalents of pricing one pair of a sparse plan's support (gathers of both
# matrices and a weighted sum: about 3e-7 s per pair at 8e9 flop/s, with a margin)
_PAIR_FLOPS = 4_000.0
# flop-equivalents of one exact OT (network simplex) per plan entry at n m = 1e6: about
# 6e-7 s per entry at 1e10 flop/s, with a margin; the network simplex's work per entry
# grows about as (n m)^0.15 (measured at n = 500 to 2000)
_EMD_FLOPS = 6_000.0
_EMD_GROWTH = 0.15
# the speed probe: at least this many products, for this share of the time limit, at
# most this many seconds
_MIN_PROBES = 3
_PROBE_SHARE = 0.02
_PROBE_MAX_S = 0.02
# flop-equivalents per plan entry of one Sinkhorn projection (two log-domain updates,
# then two matrix-vector products per scaling iteration): measured 2,000-4,000 with 20
# scaling iterations at n = 1000 (load 13, 2 cores), in units of the probe's speed
_PROJECT_FLOPS = 1_000.0
_PROJECT_FLOPS_PER_SCALING = 100.0
# the randomized SVD does 2 + 2 * power iterations products with n x k sketches, plus
# QR and a small SVD: this many times the products' flops
_SVD_OVERHEAD = 2.0


def _rate(xp, dtype, device, budget_s: float) -> float:
    """Matrix-product speed (flop/s) while the process runs: the fastest of products of
    a 256 x 256 block (after a warm-up product) timed one by one for about ``budget_s``
    seconds, at least three. On a shared machine a product of a millisecond either runs
    at full speed or loses a time slice to a neighbour; the fastest is the running speed
    (:func:`cpu_share` accounts for the neighbours). A block that fits the cache runs
    faster than the loop's products: divided by 1.5."""
    on_host = "cuda" not in str(device) and xp.__name__.split(".")[-1] != "cupy"
    k = 256 if on_host else 2048
    A = xp.ones((k, k), dtype=dtype, device=device)
    fastest, count = float("inf"), 0
    with _one_thread(on_host):
        float((A @ A)[0, 0])  # warm-up (library initialisation on a GPU)
        began = time.perf_counter()
        while count < _MIN_PROBES or time.perf_counter() - began < budget_s:
            tick = time.perf_counter()
            float((A @ A)[0, 0])
            fastest = min(fastest, time.perf_counter() - tick)
            count += 1
    return 2.0 * k**3 / max(fastest, 1e-9) / 1.5


def _one_thread(on_host: bool):
    """The probe runs on one BLAS thread: a product of a millisecond split over threads
    waits for the slowest, and on a busy machine one of them is often descheduled
    (measured at load 16 on 2 cores: 2 threads gave 3e8 flop/s on the probe and 1e10 on
    the loop's products, one thread 1e11 and 1e10). More threads are not counted as
    faster: the estimates err on the safe side."""
    import contextlib

    if not on_host:
        return contextlib.nullcontext()
    global _CONTROLLER
    if _CONTROLLER is None:  # finding the loaded BLAS libraries takes tens of ms: once
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


_CONTROLLER = None


@dataclass(frozen=True)
class TimeModel:
    """Measured speeds and the predicted seconds of the solver's pieces.

    ``apply_s``: one exact gradient for the whole stack of starts (loop dtype);
    ``project_s``: one Sinkhorn projection of the stack; ``price64_s``: pricing one
    dense plan in float64; ``rate``, ``rate64``: flop/s.
    """

    apply_s: float
    project_s: float
    price64_s: float
    rate: float
    rate64: float

    @property
    def step_s(self) -> float:
        """One exact mirror-descent step of the stack."""
        return self.apply_s + self.project_s

    def final_s(self, dense: bool = True) -> float:
        """Pricing the 2S rounded plans (one stacked product of twice the size), then the
        chosen one in float64, with a margin for the rounding passes; with ``dense=False``
        only the permutations are priced (through their support, negligible)."""
        return 1.25 * (2 * self.apply_s + self.price64_s) if dense else 0.0

    def svd_s(self, n: int, m: int, r_max: int) -> float:
        """The randomized SVDs of both matrices with the first, small sketch (rank at
        most 32; a larger one follows only when it does not capture a matrix)."""
        from gwlite.solvers._operators import OVERSAMPLE, POWER_ITERS

        flops = 0.0
        for size in (n, m):
            k = min(size, min(32, r_max) + OVERSAMPLE)
            flops += 2.0 * size * size * k * (2 + 2 * POWER_ITERS)
        return _SVD_OVERHEAD * flops / self.rate

    def sparse_price_s(self, nnz: int) -> float:
        """Pricing a plan through its support of ``nnz`` entries (float64)."""
        return _PAIR_FLOPS * float(nnz) ** 2 / self.rate64

    def emd_s(self, n: int, m: int) -> float:
        """One exact OT of an ``n x m`` cost (a polish step), before one has been timed."""
        entries = float(n) * m
        return _EMD_FLOPS * entries * (entries / 1e6) ** _EMD_GROWTH / self.rate64


def measure(n, m, terms, symmetric, n_starts, inner_iter, xp, dtype, device, limit):
    """The :class:`TimeModel` of a problem: ``terms`` matrix pairs in the operator
    (one for the square loss), ``n_starts`` plans in the stack, ``inner_iter`` scaling
    iterations per projection, under a time limit of ``limit`` seconds."""
    flops = 2.0 * n * m * (n + m) * terms * (1 if symmetric else 2)
    rate = _rate(xp, dtype, device, min(_PROBE_MAX_S, _PROBE_SHARE * limit)) * cpu_share()
    # float64 products run about half as fast as float32 ones
    rate64 = rate if dtype == xp.float64 else rate / 2
    per_entry = _PROJECT_FLOPS + _PROJECT_FLOPS_PER_SCALING * inner_iter
    project = per_entry * n * m * n_starts
    return TimeModel(flops * n_starts / rate, project / rate, flops / rate64, rate, rate64)


def cpu_share() -> float:
    """The share of the full speed a process gets now: the core count over the load
    (:func:`gwlite.solvers._common.machine_load`), at most 1. A probe of milliseconds
    sees the speed while it runs; over seconds a process shares the cores with every
    runnable one (measured on 2 cores at load 16: large products ran 8 to 11 times
    slower than the fastest probe)."""
    from gwlite.solvers._common import machine_load, usable_cores

    return min(1.0, usable_cores() / max(machine_load(), 1e-9))


class StepClock:
    """The seconds of the last few steps of one kind: a step is predicted to take as
    long as the slowest of the last three (on a shared machine one step can be slowed
    by a neighbour; the next one usually is too)."""

    def __init__(self, guess: float = 0.0):
        self.recent: list[float] = []
        self.guess = guess

    def record(self, seconds: float) -> None:
        self.recent = (self.recent + [seconds])[-3:]

    @property
    def last(self) -> float:
        return self.recent[-1] if self.recent else self.guess

    @property
    def predict(self) -> float:
        return max(self.recent) if self.recent else self.guess


def synchronise(x) -> None:
    """Wait for a device (GPU) to finish ``x``: a time limit needs real step times."""
    if _xp.backend_name(x) != "numpy":
        float(x[(0,) * x.ndim])
