"""The driver killed with SIGKILL mid-run, then rerun on the same store: identical results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import gwlite
from gwlite.datasets import atlas

pytest.importorskip("zarr", reason="needs gwlite[pairwise] (zarr)")

# the driver: two worker processes; each tile write is followed by a pause so that the
# kill lands in the middle of the run whatever the speed of the machine
DRIVER = textwrap.dedent(
    """
    import sys, time
    import gwlite
    from gwlite.datasets import atlas
    from gwlite.pairs import store

    write = store.PairStore.write_tile

    def slow_write(self, *args):
        write(self, *args)
        time.sleep(0.1)

    store.PairStore.write_tile = slow_write
    data = atlas()
    spaces = [data[k] for k in range(0, len(data), 25)]
    gwlite.pairwise(spaces, lower="slb", store=sys.argv[1], chunk=5, engine=2, progress=False)
    print("finished")
    """
)


def _done_chunks(path: Path) -> int:
    folder = path / "main" / "done" / "c"
    return sum(len(files) for _, _, files in os.walk(folder)) if folder.exists() else 0


@pytest.mark.slow
def test_driver_killed_then_rerun_on_the_same_store(tmp_path):
    path = tmp_path / "atlas.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its worker processes too, for the clean-up below
    )
    try:
        deadline = time.monotonic() + 240
        while _done_chunks(path) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # orphaned workers of the killed driver
        except ProcessLookupError:
            pass
    killed_at = _done_chunks(path)
    data = atlas()
    spaces = [data[k] for k in range(0, len(data), 25)]
    fresh = gwlite.pairwise(spaces, lower="slb", engine=1, progress=False)
    resumed = gwlite.pairwise(spaces, lower="slb", store=path, engine=1, progress=False)
    assert 0 < killed_at < 66  # 11 x 11 tiles of 5 spaces: 66 on or above the diagonal
    assert resumed.diagnostics["pairs_from_store"] > 0
    assert resumed.diagnostics["pairs_computed"] < resumed.n_pairs
    for name in ("lower", "upper", "certified"):
        assert np.array_equal(getattr(resumed, name), getattr(fresh, name)), name
    assert np.isfinite(resumed.upper).all() and resumed.n_evaluated == resumed.n_pairs
