"""Teacher cache builds on the CPU: sharded throughput, and the response-only head.

Two measurements, each against its baseline in the same run:

``sharded``
    One tiny GPT-2 teacher over the same data, built (a) by one process with one thread,
    (b) by one process with two threads, (c) by two ranks (``--rank/--world-size``) with
    one thread each, started together. Time: from the first rank entering ``build`` to
    the last one leaving it (the merge included; imports and model loading excluded,
    they are the same in every case). The run checks that (c) wrote the same shards and
    manifest as (a).
``head``
    A teacher with a 32,000-entry vocabulary over long prompts and short responses,
    built with the output layer at every position (the default) and with
    ``response_only_head=True``, each in a fresh process: time in ``build`` and peak
    resident memory above the process's memory when ``build`` starts. The run checks
    that both caches hold the same values.

Usage::

    PYTHONPATH=$PWD python benchmarks/bench_cache.py --json benchmarks/results/bench_cache_cpu.json
    PYTHONPATH=$PWD python benchmarks/bench_cache.py --quick      # a smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARDED = {"examples": 192, "prompt": 96, "response": 96, "d_model": 256, "n_layer": 4}
HEAD = {"examples": 32, "prompt": 448, "response": 64, "vocab": 32000, "d_model": 64}
QUICK_SHARDED = {"examples": 16, "prompt": 16, "response": 16, "d_model": 32, "n_layer": 1}
QUICK_HEAD = {"examples": 8, "prompt": 64, "response": 8, "vocab": 2000, "d_model": 32}
OPTS = {"k": 10, "batch_size": 8, "examples_per_shard": 16}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(args: argparse.Namespace) -> None:
    """One build in this process; prints a JSON line with its timings and memory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fusion.cache import build

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.teacher).eval()
    tok = AutoTokenizer.from_pretrained(args.teacher)
    before = _rss_bytes()
    start = time.time()
    manifest = build(
        model,
        tok,
        args.data,
        args.out,
        **OPTS,
        progress=False,
        rank=args.rank,
        world_size=args.world_size,
        response_only_head=args.response_only_head,
        teacher_name="bench",
    )
    end = time.time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "start": start,
                "end": end,
                "tokens": manifest["num_tokens"] if manifest["complete"] else None,
                "peak_above_start": peak - before,
            }
        )
    )


def _spawn(teacher, data, out, *, threads, rank=0, world_size=1, head=False):
    cmd = [sys.executable, __file__, "--worker", "--teacher", str(teacher), "--data", str(data)]
    cmd += ["--out", str(out), "--threads", str(threads), "--rank", str(rank)]
    cmd += ["--world-size", str(world_size)] + (["--response-only-head"] if head else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _collect(procs) -> list[dict]:
    results = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode:
            raise RuntimeError(f"worker failed ({p.returncode}):\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _teacher(root: Path, vocab_chars: list[str], d_model: int, n_layer: int, positions: int):
    from fusion.tiny import char_tokenizer, tiny_causal_lm

    tok = char_tokenizer(["".join(vocab_chars)], model_max_length=positions)
    model = tiny_causal_lm(
        tok, d_model=d_model, n_head=4, n_layer=n_layer, max_positions=positions, seed=0
    )
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return tok


def _data(path: Path, chars: list[str], n: int, prompt: int, response: int, seed: int = 0):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            p = "".join(rng.choices(chars, k=prompt))
            r = "".join(rng.choices(chars, k=response))
            f.write(json.dumps({"prompt": p, "response": r}, ensure_ascii=False) + "\n")


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir() if not p.name.startswith("rank-")}


def bench_sharded(root: Path, size: dict, repeat: int) -> list[dict]:
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789 .,+=")
    teacher = root / "sharded-teacher"
    _teacher(teacher, chars, size["d_model"], size["n_layer"], 512)
    data = root / "sharded.jsonl"
    _data(data, chars, size["examples"], size["prompt"], size["response"])
    rows = []
    for rep in range(repeat):
        for name, threads, world in (("1 process x 1 thread", 1, 1),
                                     ("1 process x 2 threads", 2, 1),
                                     ("2 ranks x 1 thread", 1, 2)):  # fmt: skip
            out = root / f"sharded-{rep}-{threads}-{world}"
            procs = [
                _spawn(teacher, data, out, threads=threads, rank=r, world_size=world)
                for r in range(world)
            ]
            res = _collect(procs)
            wall = max(r["end"] for r in res) - min(r["start"] for r in res)
            tokens = next(r["tokens"] for r in res if r["tokens"] is not None)
            load = os.getloadavg()[0]  # other jobs on the same cores, over the last minute
            rows.append(
                {"case": name, "repeat": rep, "seconds": wall, "tokens": tokens, "load": load}
            )
            print(
                f"sharded  {name:24s} {wall:7.2f} s  {tokens / wall:8.0f} tok/s  load {load:.1f}",
                flush=True,
            )
        same = _files(root / f"sharded-{rep}-1-2") == _files(root / f"sharded-{rep}-1-1")
        rows.append({"case": "2 ranks wrote the 1-process bytes", "repeat": rep, "ok": same})
        if not same:
            raise RuntimeError("the sharded build differs from the one-process build")
    return rows


def bench_head(root: Path, size: dict, repeat: int) -> list[dict]:
    chars = [chr(0x4E00 + i) for i in range(size["vocab"] - 4)]  # + 4 special tokens
    teacher = root / "head-teacher"
    tok = _teacher(teacher, chars, size["d_model"], 2, 1024)
    data = root / "head.jsonl"
    _data(data, chars, size["examples"], size["prompt"], size["response"])
    rows = []
    for rep in range(repeat):
        order = (False, True) if rep % 2 == 0 else (True, False)
        for head in order:
            out = root / f"head-{rep}-{int(head)}"
            (res,) = _collect([_spawn(teacher, data, out, threads=2, head=head)])
            name = "response-only head" if head else "full head"
            rows.append(
                {
                    "case": name,
                    "repeat": rep,
                    "seconds": res["end"] - res["start"],
                    "peak_mib": res["peak_above_start"] / 2**20,
                    "tokens": res["tokens"],
                    "load": os.getloadavg()[0],
                }
            )
            print(
                f"head     {name:24s} {rows[-1]['seconds']:7.2f} s  "
                f"peak +{rows[-1]['peak_mib']:7.1f} MiB",
                flush=True,
            )
    rows.append({"case": "max |logprob difference|", "value": _max_diff(root, repeat)})
    length = size["prompt"] + size["response"] + 1
    rows.append(
        {
            "case": "fp32 logits of one batch (B x L x V), analytic MiB",
            "full": OPTS["batch_size"] * length * len(tok) * 4 / 2**20,
            "response_only": OPTS["batch_size"] * (size["response"] + 1) * len(tok) * 4 / 2**20,
        }
    )
    return rows


def _max_diff(root: Path, repeat: int) -> float:
    from fusion.cache import TeacherCache

    worst = 0.0
    for rep in range(repeat):
        a, b = TeacherCache(root / f"head-{rep}-0"), TeacherCache(root / f"head-{rep}-1")
        for i in range(len(a)):
            diff = (a[i].logprobs.float() - b[i].logprobs.float()).abs().max()
            worst = max(worst, float(diff))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", choices=["sharded", "head"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for flag in ("--teacher", "--data", "--out"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    for flag, default in (("--threads", 1), ("--rank", 0), ("--world-size", 1)):
        parser.add_argument(flag, type=int, default=default, help=argparse.SUPPRESS)
    parser.add_argument("--response-only-head", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}",
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
        "options": OPTS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.only in (None, "sharded"):
            size = QUICK_SHARDED if args.quick else SHARDED
            result["sharded"] = {"size": size, "rows": bench_sharded(root, size, args.repeat)}
        if args.only in (None, "head"):
            size = QUICK_HEAD if args.quick else HEAD
            result["head"] = {"size": size, "rows": bench_head(root, size, args.repeat)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
