"""gwlite.pairwise on a Dask cluster: the local numbers, even when a worker is killed.

One LocalCluster (2 worker processes) is started for this module and shut down after it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import networkx as nx
import numpy as np
import pytest

import gwlite
from gwlite.datasets import families

distributed = pytest.importorskip("distributed", reason="needs gwlite[pairwise] (dask)")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
            # POT imports every array library it finds; these workers only need NumPy
            env={f"POT_BACKEND_DISABLE_{b}": "1" for b in ("PYTORCH", "JAX", "TENSORFLOW")},
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _same(a, b):
    for name in ("lower", "upper", "certified", "evaluated"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_cluster_gives_the_local_numbers(client):
    graphs = [nx.graph_atlas(i) for i in range(10, 1253, 37)]
    for options in ({"lower": "slb"}, {"lower": "tlb"}, {}):
        local = gwlite.pairwise(graphs, engine=1, progress=False, chunk=8, **options)
        remote = gwlite.pairwise(graphs, engine=client, progress=False, chunk=8, **options)
        _same(local, remote)
        assert remote.diagnostics["engine"].startswith("dask cluster at")
    small = graphs[:6]
    _same(
        gwlite.pairwise(small, method="cg", engine=1, progress=False),
        gwlite.pairwise(small, method="cg", engine=client, progress=False),
    )


def _gwlite_tasks_left(dask_scheduler):
    return sum(1 for key in dask_scheduler.tasks if str(key).startswith("gwlite-pairwise"))


@pytest.mark.slow
def test_a_worker_killed_mid_run_changes_nothing(client):
    data = families(16, (10, 12), seed=1)
    reference = gwlite.pairwise(data, method="cg", engine=1, progress=False)
    pids = client.run(os.getpid)
    out = {}

    def run():
        out["result"] = gwlite.pairwise(data, method="cg", engine=client, progress=False, chunk=2)

    thread = threading.Thread(target=run)
    thread.start()
    # wait until the tasks are submitted and a couple have finished
    deadline = time.monotonic() + 120
    submitted = 0
    while time.monotonic() < deadline:
        left = client.run_on_scheduler(_gwlite_tasks_left)
        submitted = max(submitted, left)
        if submitted and left <= submitted - 2:
            break
        time.sleep(0.02)
    busy = [addr for addr, keys in client.processing().items() if keys]
    assert busy and thread.is_alive(), "the run ended before a worker could be killed"
    os.kill(pids[busy[0]], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    result = out["result"]
    _same(result, reference)
    assert result.n_evaluated == result.n_pairs and np.isfinite(result.upper).all()
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
    assert set(client.run(os.getpid).values()) != set(pids.values())
