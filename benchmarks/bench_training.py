"""A FusionTrainer step with two teachers (ULD + GLD), before and after, in one run.

Two changes of the training step are measured against the code they replaced, which is
reproduced here as ``LegacyTrainer`` (the previous ``compute_loss``):

* **one student top-k per step** -- before, every loss and every teacher ran its own
  top-k / normaliser / backward pass over the student logits (4 passes with two
  teachers, ULD + GLD) and the cross-entropy its own fp32 ``log_softmax``; after, one
  blockwise pass serves them all (:func:`fusion.coactivation.student_topk`);
* **bf16 logits reach the loss in bf16** -- before, with ``bf16=True`` accelerate's
  mixed-precision wrapper cast the model outputs to fp32 before the loss; after, the
  trainer runs the forward under autocast without that cast.

Rows: ``step`` (``Trainer.training_step``: pivot forward + loss + backward, bf16 autocast
on CPU) and ``loss`` (the loss alone, forward + backward on fixed bf16 logits), each for
``before`` and ``after``; for the step's memory also ``after_fp32_outputs``, the current
loss with accelerate's fp32 cast of the outputs left in place (the bf16 change alone). Time: median of ``--repeat`` interleaved runs after one warm-up
(``time.perf_counter``). Memory: peak resident set size of a fresh process running one
step after one warm-up step (resident size sampled every 0.5 ms by a thread) minus its
resident size just before the step, so it counts every buffer the step allocates (the
logits, their gradient and every copy), not one-time costs of a first step.

Usage::

    python benchmarks/bench_training.py                           # 4 x 512 x 32000, CPU
    python benchmarks/bench_training.py --json benchmarks/results/bench_training_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEACHERS = ({"length": 600, "vocab": 24000}, {"length": 300, "vocab": 50000})
CACHE_K = 16
K, ULD_TOP_K = 10, 16
PROMPT = 16


def _caches(root: Path) -> list[Path]:
    """Two tiny real caches: the trainer wants TeacherCache objects (k, temperature)."""
    from fusion.cache import build
    from fusion.tiny import char_tokenizer, tiny_causal_lm

    pairs = [{"prompt": "a", "response": "bcdefghijklmnopqrstu"}] * 2
    tok = char_tokenizer(["abcdefghijklmnopqrstuvwxyz"])
    teacher = tiny_causal_lm(tok, d_model=32, n_head=2, seed=1)
    out = []
    for j in range(2):
        build(teacher, tok, pairs, root / f"t{j}", k=CACHE_K, progress=False)
        out.append(root / f"t{j}")
    return out


def make_batch(batch: int, length: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A collated batch: random pivot tokens (prompt of 16), two teachers' cached top-k."""
    from fusion.training import teacher_keys

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    labels = ids.clone()
    labels[:, :PROMPT] = -100
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    for j, t in enumerate(TEACHERS):
        z = torch.randn(batch * t["length"], t["vocab"], generator=g) + 3 * torch.randn(
            t["vocab"], generator=g
        )
        top = torch.log_softmax(z, -1).topk(CACHE_K, dim=-1)
        shape = (batch, t["length"], CACHE_K)
        fields = (
            top.values.reshape(shape).half(),
            top.indices.reshape(shape),
            torch.ones(batch, t["length"], dtype=torch.bool),
        )
        out.update(zip(teacher_keys(j), fields))
    return out


def make_model(vocab: int, length: int):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=length + 8,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def legacy_loss(fusion_loss, logits, targets, teachers, masks):
    """The previous FusionLoss path: separate passes per loss and teacher, fp32 CE."""
    from fusion.functional import gld_loss, uld_loss

    smask = targets != -100
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
    g, u = fusion_loss.gld, fusion_loss.uld
    distil = 0.0
    for t, m in zip(teachers, masks):
        distil = distil + 0.5 * (
            uld_loss(logits, t, smask, m, top_k=u.top_k)
            + fusion_loss.beta * gld_loss(logits, t, smask, m, k=g.k, m=g.m, features=g.features)
        )
    return (1 - fusion_loss.lambda_) * ce + fusion_loss.lambda_ * distil


def trainers(root: Path, vocab: int, length: int):
    """``before`` (the previous compute_loss) and ``after`` FusionTrainers, prepared."""
    from transformers import TrainingArguments

    from fusion.training import FusionTrainer, response_positions, split_batch

    class LegacyTrainer(FusionTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            batch = split_batch(inputs, 2)
            outputs = model(**batch.inputs, use_cache=False)  # accelerate: fp32 outputs
            logits, targets = response_positions(outputs.logits, batch.labels)
            loss = legacy_loss(self.fusion_loss, logits, targets, batch.teachers, batch.masks)
            return (loss, outputs) if return_outputs else loss

    class FP32OutputsTrainer(FusionTrainer):
        """The current loss, but the logits cast to fp32 by accelerate (item 1 undone)."""

        def _pivot_forward(self, model, inputs):
            return model(**inputs, use_cache=False)

    caches = _caches(root)
    out = {}
    variants = (
        ("before", LegacyTrainer),
        ("after", FusionTrainer),
        ("after_fp32_outputs", FP32OutputsTrainer),
    )
    for name, cls in variants:
        args = TrainingArguments(
            output_dir=str(root / name), bf16=True, use_cpu=True, report_to=[], save_strategy="no"
        )
        trainer = cls(
            make_model(vocab, length),
            args,
            teachers=[(c, 0.5) for c in caches],
            k=K,
            top_k=ULD_TOP_K,
            data_collator=lambda rows: rows,
            check_data=False,
        )
        model = trainer.accelerator.prepare(trainer.model)  # what train() does
        out[name] = (trainer, model)
    return out


def loss_fns():
    import fusion

    loss = fusion.FusionLoss(0.5, 1.0, gld=fusion.GLDLoss(k=K), uld=fusion.ULDLoss(top_k=ULD_TOP_K))

    def before(logits, targets, teachers, masks):
        return legacy_loss(loss, logits, targets, teachers, masks)

    def after(logits, targets, teachers, masks):
        out = loss(logits, teachers, targets, student_mask=targets != -100, teacher_masks=masks)
        return out.total

    return {"before": before, "after": after}


def loss_inputs(batch: dict[str, torch.Tensor], vocab: int):
    from fusion.training import split_batch

    parts = split_batch(batch, 2)
    g = torch.Generator().manual_seed(1)
    b, length = parts.labels.shape
    logits = torch.randn(b, length - 1, vocab, generator=g).bfloat16().requires_grad_()
    return logits, parts.labels[:, 1:], parts.teachers, parts.masks


# ------------------------------------------------------------------------------- timing


def run_times(args) -> dict:
    batch = make_batch(args.batch, args.length, args.vocab)
    with tempfile.TemporaryDirectory() as tmp:
        steps = trainers(Path(tmp), args.vocab, args.length)
        logits, targets, teachers, masks = loss_inputs(batch, args.vocab)
        fns = loss_fns()

        def step(name):
            trainer, model = steps[name]
            trainer.training_step(model, batch)
            model.zero_grad(set_to_none=True)

        def loss(name):
            fns[name](logits, targets, teachers, masks).backward()
            logits.grad = None

        times = {f"{row}/{name}": [] for row in ("step", "loss") for name in ("before", "after")}
        for warm in (True, *([False] * args.repeat)):
            for row, fn in (("step", step), ("loss", loss)):
                for name in ("before", "after"):  # interleaved: the same noise for both
                    t0 = time.perf_counter()
                    fn(name)
                    if not warm:
                        times[f"{row}/{name}"].append(time.perf_counter() - t0)
        # the two paths compute the same loss
        with torch.no_grad():
            same = [float(fns[n](logits.detach(), targets, teachers, masks)) for n in fns]
    med = {key: 1e3 * statistics.median(v) for key, v in times.items()}
    return {"ms": med, "runs_ms": {k: [1e3 * x for x in v] for k, v in times.items()}, "loss": same}


# ------------------------------------------------------------------------------- memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS:
    """Samples the resident set size in a thread while a block runs."""

    def __enter__(self):
        import threading

        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.0005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def memory_worker(args) -> dict:
    """One step of one variant in this (fresh) process; peak RSS above the RSS before it."""
    batch = make_batch(args.batch, args.length, args.vocab)
    with tempfile.TemporaryDirectory() as tmp:
        if args.row == "step":
            trainer, model = trainers(Path(tmp), args.vocab, args.length)[args.variant]

            def run():
                trainer.training_step(model, batch)
                model.zero_grad(set_to_none=True)
        else:
            logits, targets, teachers, masks = loss_inputs(batch, args.vocab)
            fn = loss_fns()[args.variant]

            def run():
                fn(logits, targets, teachers, masks).backward()
                logits.grad = None

        run()  # warm-up: lazy imports, thread pools, first-call buffers
        with _PeakRSS() as rss:
            run()
    logits_mb = args.batch * args.length * args.vocab * 2 / 1e6
    return {"peak_above_start_MB": (rss.peak - rss.start) / 1e6, "bf16_logits_MB": logits_mb}


MEMORY_ROWS = (
    ("step", "before"),
    ("step", "after"),
    ("step", "after_fp32_outputs"),  # the current loss with accelerate's fp32 outputs
    ("loss", "before"),
    ("loss", "after"),
)


def run_memory(args) -> dict:
    out = {}
    for row, variant in MEMORY_ROWS:
        cmd = [sys.executable, __file__, "--memory-worker", "--row", row, "--variant", variant]
        sizes = ("--batch", args.batch, "--length", args.length, "--vocab", args.vocab)
        cmd += [str(x) for x in sizes]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[f"{row}/{variant}"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--row", choices=("step", "loss"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--variant", choices=("before", "after", "after_fp32_outputs"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the memory rows, merged into an existing --json file",
    )
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(args)))
        return {}
    if args.memory_only:
        result = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
        result["memory"] = run_memory(args)
        for key, value in result["memory"].items():
            print(f"{key:26s} peak above start {value['peak_above_start_MB']:8.1f} MB")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return result
    result = {
        "shape": [args.batch, args.length, args.vocab],
        "teachers": list(TEACHERS),
        "k": K,
        "uld_top_k": ULD_TOP_K,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "time": run_times(args),
    }
    if not args.skip_memory:
        result["memory"] = run_memory(args)
    ms = result["time"]["ms"]
    print(f"shape {result['shape']}, two cached teachers, ULD top-{ULD_TOP_K} + GLD k={K}, bf16")
    for row in ("step", "loss"):
        b, a = ms[f"{row}/before"], ms[f"{row}/after"]
        print(f"{row:5s} time  before {b:8.1f} ms   after {a:8.1f} ms   ratio {b / a:.2f}x")
    for key, value in result.get("memory", {}).items():
        print(f"{key:26s} peak above start {value['peak_above_start_MB']:8.1f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
