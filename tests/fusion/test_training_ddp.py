"""FusionTrainer under torchrun: two CPU processes on gloo, GLD's batch graph across ranks.

The test builds a pivot, a teacher cache and the data, launches this same file as the
worker with ``torchrun --standalone --nproc_per_node 2``, and compares what the ranks did
with one process computing the same global loss on the union of their batches.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORLD = 2
PER_RANK = 3
LR = 0.5


def _pairs() -> list[dict[str, str]]:
    return [
        {
            "prompt": f"Q: {a}*{b}=",
            "response": " " + " ".join([f"{a}*{b}"] * (a % 3)) + f" {a * b}.",
        }
        for a, b in ((2, 3), (4, 5), (6, 1), (7, 7), (3, 8), (5, 2))
    ]


def _trainer_options() -> dict:
    return {"k": 4, "m": 12, "gld_graph": "batch", "lambda_": 0.6, "beta": 1.5}


def worker(workdir: str) -> None:
    """One rank: one SGD step of FusionTrainer over the shared data; record what it saw."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from fusion.training import FusionTrainer

    torch.set_num_threads(1)
    root = Path(workdir)

    class Recording(FusionTrainer):
        def compute_loss(self, model, inputs, **kwargs):
            loss = super().compute_loss(model, inputs, **kwargs)
            self.seen.append(
                {
                    "index": inputs["index"].tolist(),
                    **{key: float(v) for key, v in self.last_components.items()},
                }
            )
            return loss

    args = TrainingArguments(
        output_dir=str(root / "out"),
        per_device_train_batch_size=PER_RANK,
        max_steps=1,
        optim="sgd",
        learning_rate=LR,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        use_cpu=True,
        ddp_backend="gloo",
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Recording(
        AutoModelForCausalLM.from_pretrained(root / "pivot"),
        args,
        teachers=[(root / "cache", 1.0)],
        train_dataset=str(root / "data.jsonl"),
        processing_class=AutoTokenizer.from_pretrained(root / "pivot"),
        **_trainer_options(),
    )
    trainer.seen = []
    trainer.train()
    rank = trainer.args.process_index
    logs = [h for h in trainer.state.log_history if "loss" in h]
    (root / f"rank{rank}.json").write_text(json.dumps({"seen": trainer.seen, "logs": logs}))
    torch.save(trainer.model.state_dict(), root / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    pytest.importorskip("transformers")
    from fusion.cache import build
    from fusion.tiny import bpe_tokenizer, char_tokenizer, tiny_causal_lm

    if shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("torchrun is not installed next to this Python")
    root = tmp_path_factory.mktemp("fusion_ddp")
    pairs = _pairs()
    (root / "data.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    corpus = [p["prompt"] + p["response"] for p in pairs]
    teacher_tok = char_tokenizer(corpus)
    teacher = tiny_causal_lm(teacher_tok, arch="gpt2", d_model=32, n_head=2, seed=1)
    build(teacher, teacher_tok, root / "data.jsonl", root / "cache", k=6, progress=False)
    pivot_tok = bpe_tokenizer(corpus, vocab_size=280)
    pivot = tiny_causal_lm(pivot_tok, arch="llama", d_model=32, n_head=2, seed=2)
    pivot.save_pretrained(root / "pivot")
    pivot_tok.save_pretrained(root / "pivot")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "torchrun"),
        "--standalone",
        f"--nproc_per_node={WORLD}",
        __file__,
        str(root),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in range(WORLD)]
    states = [torch.load(root / f"rank{r}.pt") for r in range(WORLD)]
    return {"root": root, "pairs": pairs, "ranks": ranks, "states": states}


def _reference(root: Path, indices: list[int]):
    """The global loss of one process over the union of the ranks' batches, and its step."""
    from torch.nn import functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import fusion
    from fusion.training import FusionCollator, PromptResponseDataset, split_batch

    opts = _trainer_options()
    model = AutoModelForCausalLM.from_pretrained(root / "pivot")
    tok = AutoTokenizer.from_pretrained(root / "pivot")
    data = PromptResponseDataset(root / "data.jsonl")
    batch = FusionCollator(tok, [root / "cache"])([data[i] for i in indices])
    inputs, labels, teachers, masks = split_batch(batch)
    logits = model(**inputs).logits[:, :-1]
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    uld = fusion.uld_loss(logits, teachers[0], targets != -100, masks[0], top_k=6)
    gld = fusion.gld_loss(
        logits, teachers[0], targets != -100, masks[0], k=opts["k"], m=opts["m"], graph="batch"
    )
    lam, beta = opts["lambda_"], opts["beta"]
    total = (1 - lam) * ce + lam * (uld + beta * gld)
    total.backward()
    stepped = {n: (p - LR * p.grad).detach() for n, p in model.named_parameters()}
    values = {"ce": ce, "uld": uld, "gld": gld, "total": total}
    return {key: float(v.detach()) for key, v in values.items()}, stepped


@pytest.mark.timeout(300)
def test_two_ranks_complete_with_finite_logged_losses(ddp_run):
    for rank in ddp_run["ranks"]:
        assert len(rank["seen"]) == 1 and len(rank["logs"]) == 1
        assert all(
            torch.isfinite(torch.tensor(rank["logs"][0][key]))
            for key in ("loss", "ce", "uld", "gld")
        )
    # the ranks saw disjoint halves of the data
    seen = [set(r["seen"][0]["index"]) for r in ddp_run["ranks"]]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == WORLD * PER_RANK


@pytest.mark.timeout(300)
def test_batch_graph_is_shared_and_step_equals_one_process(ddp_run):
    seen = [r["seen"][0] for r in ddp_run["ranks"]]
    union = seen[0]["index"] + seen[1]["index"]
    ref, stepped = _reference(ddp_run["root"], union)
    # each rank's components are its shares of the global window's means: they add up
    # to the one-process values (GLD: one graph over both ranks, counted for each half)
    for key in ("ce", "uld", "gld"):
        assert seen[0][key] + seen[1][key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7), key
    # the logged values are token-weighted over both ranks, agree on every rank, and add
    # up to the logged loss (the CE optimised, not a mean of per-rank means)
    logs = [r["logs"][0] for r in ddp_run["ranks"]]
    lam, beta = _trainer_options()["lambda_"], _trainer_options()["beta"]
    for log in logs:
        for key in ("ce", "uld", "gld", "loss"):
            want = ref["total" if key == "loss" else key]
            assert log[key] == pytest.approx(want, rel=1e-5, abs=1e-7), key
        parts = (1 - lam) * log["ce"] + lam * (log["uld"] + beta * log["gld"])
        assert log["loss"] == pytest.approx(parts, rel=1e-6)
    # DDP's averaged gradient is the gradient of the one-process global loss
    for state in ddp_run["states"]:
        for name, want in stepped.items():
            torch.testing.assert_close(state[name], want, rtol=1e-4, atol=2e-6)
    moved = max(
        float((stepped[n] - p.detach()).abs().max())
        for n, p in _initial(ddp_run["root"]).named_parameters()
    )
    assert moved > 1e-4


def _initial(root: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(root / "pivot")


if __name__ == "__main__":
    worker(sys.argv[1])
