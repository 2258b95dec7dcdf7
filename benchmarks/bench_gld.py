"""GLD forward + backward against one torch.topk and a naive implementation, in one run.

Rows (all on the same student logits, teacher given as a cached ``fusion.TopK``):

``read``
    one ``amax`` over the logits: the memory-bandwidth floor of any pass over them.
``torch.topk``
    one ``torch.topk(logits, k)`` (forward only): the issue's yardstick.
``gld``
    ``fusion.gld_loss`` forward + backward (the default, blockwise path), with the
    default co-activation shares (``--features``) and with InfiGFusion's degrees (the
    form the naive construction computes).
``gld, eager passes`` / ``gld, eager + torch.topk select`` (CUDA only)
    the same without the torch.compile'd dense passes, and also without the two-stage
    grouped top-k selection: the plain composition of torch ops.
``naive``
    fp32 copy of the logits, full softmax, top-k, and per sequence the dense
    co-activation graph over the union of the kept token ids, all through autograd.

Time: median of ``--repeat`` runs after ``--warmup`` runs (CUDA events on a GPU,
``time.perf_counter`` on CPU). Memory (GPU only): peak allocated during one forward +
backward minus what was allocated before (the inputs), so the gradient (1x the logits'
bytes) is included. The run also checks that ``gld`` and ``naive`` agree.

Usage::

    python benchmarks/bench_gld.py                        # CPU, small shapes
    python benchmarks/bench_gld.py --device cuda --full --json gld.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

import fusion
from fusion import TopK, coactivation

FULL = {"batch": 2, "length": 4096, "vocab": 152064, "teacher_vocab": 128256}
SMALL = {"batch": 2, "length": 256, "vocab": 32000, "teacher_vocab": 24000}


def make_inputs(shape: dict, k_cache: int, device: str, seed: int = 0):
    """bf16 student logits with a shared per-token bias (so top tokens recur, as in text)."""
    g = torch.Generator(device=device).manual_seed(seed)
    B, T, V, Vt = shape["batch"], shape["length"], shape["vocab"], shape["teacher_vocab"]
    logits = torch.randn(B, T, V, generator=g, device=device, dtype=torch.bfloat16)
    logits.add_(3 * torch.randn(V, generator=g, device=device, dtype=torch.bfloat16))
    # a cache holds sorted log-probs of the teacher's top entries; build it block by block
    t_lp, t_idx = [], []
    bias = 3 * torch.randn(Vt, generator=g, device=device)
    for _ in range(B):
        for start in range(0, T, 512):
            z = torch.randn(min(512, T - start), Vt, generator=g, device=device) + bias
            top = torch.log_softmax(z, dim=-1).topk(k_cache, dim=-1)
            t_lp.append(top.values)
            t_idx.append(top.indices)
    lp = torch.cat(t_lp).reshape(B, T, k_cache).to(torch.bfloat16)
    idx = torch.cat(t_idx).reshape(B, T, k_cache).int()
    return logits.requires_grad_(), TopK(lp, idx)


def naive_gld(logits: torch.Tensor, teacher: TopK, k: int, m: int) -> torch.Tensor:
    """The textbook construction: fp32 copy, full softmax, dense union graph per sequence."""
    probs = torch.softmax(logits.float(), dim=-1)
    top = probs.topk(k, dim=-1)
    t_vals = torch.exp(teacher.logprobs[..., :k].float())
    t_idx = teacher.indices[..., :k].long()
    losses = []
    for b in range(logits.shape[0]):
        f_s = _dense_union_degrees(top.values[b], top.indices[b])
        f_t = _dense_union_degrees(t_vals[b], t_idx[b])
        f_s, f_t = (torch.nn.functional.pad(f, (0, max(0, m - f.numel())))[:m] for f in (f_s, f_t))
        losses.append((f_s - f_t).abs().sum())
    return torch.stack(losses).mean()


def _dense_union_degrees(vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    ids, inverse = torch.unique(idx, return_inverse=True)
    X = torch.zeros(vals.shape[0], ids.numel(), device=vals.device).scatter(1, inverse, vals)
    A = X.T @ X / vals.shape[0]  # U x U, U = number of distinct kept ids
    return A.sum(dim=1).sort(descending=True).values


def timed(fn: Callable[[], None], device: str, warmup: int, repeat: int) -> float:
    """Median milliseconds of ``fn``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def peak_above_inputs(fn: Callable[[], None], device: str) -> float | None:
    """GB allocated at the peak of ``fn`` beyond what was allocated before (GPU only)."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 1e9


def run(args: argparse.Namespace) -> dict:
    device = args.device
    shape = dict(FULL if args.full else SMALL)
    for key in ("batch", "length", "vocab"):
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    logits, teacher = make_inputs(shape, args.cache_k, device)
    k, m = args.k, args.m

    def fwd_bwd(fn):
        def step():
            fn().backward()
            logits.grad = None

        return step

    def gld_with(topk_impl: str, fused: str, features: str = args.features):
        def loss():
            saved = coactivation.TOPK_IMPL, coactivation.FUSED
            coactivation.TOPK_IMPL, coactivation.FUSED = topk_impl, fused
            try:
                return fusion.gld_loss(logits, teacher, k=k, m=m, features=features)
            finally:
                coactivation.TOPK_IMPL, coactivation.FUSED = saved

        return loss

    with torch.no_grad():
        detached = logits.detach()
        variants: list[tuple[str, Callable[[], None]]] = [
            ("read (amax)", lambda: detached.amax()),
            (f"torch.topk (k={k})", lambda: torch.topk(detached, k, dim=-1)),
        ]
    rows = []
    for name, fn in variants:
        with torch.no_grad():
            ms = timed(fn, device, args.warmup, args.repeat)
            rows.append({"name": name, "ms": ms, "peak_gb": peak_above_inputs(fn, device)})
    grad_variants = [(f"gld fwd+bwd ({args.features})", gld_with("auto", "auto"))]
    if args.features != "degrees":
        grad_variants.append(("gld fwd+bwd (degrees)", gld_with("auto", "auto", "degrees")))
    if device == "cuda":  # the two GPU-only parts of the default path, switched off
        grad_variants.append(("gld, eager passes", gld_with("auto", "off")))
        grad_variants.append(("gld, eager + torch.topk select", gld_with("torch", "off")))
    if not args.no_naive:
        grad_variants.append(("naive fwd+bwd", lambda: naive_gld(logits, teacher, k, m)))
    for name, loss in grad_variants:
        step = fwd_bwd(loss)
        ms = timed(step, device, args.warmup, args.repeat)
        rows.append({"name": name, "ms": ms, "peak_gb": peak_above_inputs(step, device)})
    topk_ms = rows[1]["ms"]
    for row in rows:
        row["x_topk"] = row["ms"] / topk_ms
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "compiled_passes_failed": coactivation._fused_failed,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "shape": shape,
        "k": k,
        "m": m,
        "features": args.features,
        "cache_k": args.cache_k,
        "logits_gb": logits.numel() * logits.element_size() / 1e9,
        "rows": rows,
    }
    if not args.no_naive:
        result["check"] = agreement(logits, teacher, k, m)
    return result


def _cpu_name() -> str:
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores, no GPU)"


def agreement(logits, teacher, k, m) -> dict:
    """Relative differences of loss and gradient between gld and the naive construction."""
    out = {}
    for name, fn in (("gld", fusion.gld_loss), ("naive", naive_gld)):
        if name == "gld":  # the naive construction is InfiGFusion's top-m degrees
            loss = fn(logits, teacher, k=k, m=m, features="degrees")
        else:
            loss = fn(logits, teacher, k, m)
        (grad,) = torch.autograd.grad(loss, logits)
        out[name] = (loss.detach().double(), grad.double())
    (l1, g1), (l2, g2) = out["gld"], out["naive"]
    return {
        "loss_gld": float(l1),
        "loss_naive": float(l2),
        "loss_rel_diff": float((l1 - l2).abs() / l2.abs().clamp_min(1e-30)),
        "grad_rel_diff": float((g1 - g2).norm() / g2.norm().clamp_min(1e-30)),
    }


def print_table(result: dict) -> None:
    s = result["shape"]
    print(
        f"GLD benchmark on {result['device']} (torch {result['torch']}, "
        f"{result['threads']} threads): student logits {s['batch']}x{s['length']}x{s['vocab']} "
        f"bf16 ({result['logits_gb']:.2f} GB), teacher TopK k'={result['cache_k']} "
        f"(V_t={s['teacher_vocab']}), k={result['k']}, m={result['m']}"
    )
    print(f"| {'what':<32} | {'ms':>9} | {'x topk':>7} | {'peak above inputs':>17} |")
    print(f"| {'-' * 32} | {'-' * 9}:| {'-' * 6}:| {'-' * 16}:|")
    for row in result["rows"]:
        peak = "n/a" if row["peak_gb"] is None else f"{row['peak_gb']:.2f} GB"
        peak_x = ""
        if row["peak_gb"] is not None:
            peak_x = f" ({row['peak_gb'] / result['logits_gb']:.2f}x)"
        print(
            f"| {row['name']:<32} | {row['ms']:9.2f} | {row['x_topk']:7.2f} | {peak + peak_x:>17} |"
        )
    if "check" in result:
        c = result["check"]
        print(
            f"gld (degrees) vs naive: loss {c['loss_gld']:.6g} vs {c['loss_naive']:.6g} "
            f"(rel diff {c['loss_rel_diff']:.1e}), gradient rel diff {c['grad_rel_diff']:.1e}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--full", action="store_true", help="8192 x 152064 bf16 (the issue's shape)"
    )
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--length", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--m", type=int, default=64)
    parser.add_argument("--cache-k", type=int, default=16, help="k' stored by the teacher cache")
    parser.add_argument("--features", default="shares", choices=["shares", "degrees"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--json", default=None, help="also write the results to this path")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    result = run(args)
    print_table(result)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
