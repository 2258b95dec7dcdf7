"""What every benchmark row records about the machine at its start (imported by the
benchmark scripts, which run with ``benchmarks/`` on the path)."""

from __future__ import annotations

import os

from threadpoolctl import threadpool_info


def context() -> dict:
    """The 1-minute, 5-minute and 15-minute load averages and the BLAS libraries'
    thread counts (threadpoolctl) right now."""
    blas = [
        {"api": i["internal_api"], "threads": i["num_threads"]}
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]
    return {"loadavg": list(os.getloadavg()), "blas": blas}
