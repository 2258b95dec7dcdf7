"""Does a more accurately solved relaxation certify more of ``gwlite verify``'s small pairs?

Question: on the instances of ``gwlite verify --quick`` (n = 6 and 8, seeds 0-1, both
losses, every family) that the quick study left uncertified, does ``method="sdp"``
certify GW, with SCS (the verify study's own solver, 60 s) and with ADMM (``solver=
"admm"``, 60 s, started from SCS's plan)? Where neither does, the ADMM bound shows how
far the relaxation itself is from the best coupling (a relaxation that is not tight
cannot certify, however accurately it is solved).

Run: ``python benchmarks/bench_sdp_verify_open.py --json
benchmarks/results/sdp_verify_open.json`` (resumes: instances already in the file are
skipped). One BLAS thread; ``uptime`` load recorded per instance.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gwlite  # noqa: E402
from gwlite.atomic import atomic_open  # noqa: E402
from gwlite.families import generate  # noqa: E402

QUICK = Path(__file__).parent / "results" / "verify" / "results.csv"


def open_instances(path: Path = QUICK):
    """(family, n, seed, loss) of the quick study's uncertified instances."""
    by_instance: dict = {}
    for row in csv.DictReader(path.open()):
        key = (row["family"], int(row["n"]), int(row["seed"]), row["loss"])
        by_instance.setdefault(key, row["reference_kind"])
    return [k for k, kind in by_instance.items() if not kind.endswith("(certified)")]


def measure(family, n, seed, loss, limit: float) -> dict:
    C1, C2 = generate(family, n, 2 * seed)[0], generate(family, n, 2 * seed + 1)[0]
    row = dict(family=family, n=n, seed=seed, loss=loss, load_1min=os.getloadavg()[0])
    plan = None
    for solver in ("scs", "admm"):
        tick = time.perf_counter()
        res = gwlite.gromov_wasserstein(
            C1, C2, method="sdp", loss_fun=loss, solver=solver, time_limit=limit, G0=plan
        )
        plan = res.coupling
        d = res.diagnostics
        row[solver] = dict(
            sdp_bound=d["sdp_bound"],
            lower=float(res.lower),
            upper=float(res.upper),
            certified=bool(res.certified),
            stop=d["stop_reason"],
            iterations=d["iterations"],
            wall_s=time.perf_counter() - tick,
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--time-limit", type=float, default=60.0)
    args = parser.parse_args()
    done = json.loads(args.json.read_text()) if args.json.exists() else {"rows": []}
    seen = {(r["family"], r["n"], r["seed"], r["loss"]) for r in done["rows"]}
    done["setting"] = dict(time_limit=args.time_limit, threads="OMP_NUM_THREADS=1")
    for key in open_instances():
        if key in seen:
            continue
        done["rows"].append(measure(*key, args.time_limit))
        print(json.dumps(done["rows"][-1]), flush=True)
        with atomic_open(args.json, "w") as f:
            json.dump(done, f, indent=1)


if __name__ == "__main__":
    main()
