"""A LoRA-wrapped pivot (peft) trains, checkpoints its adapters and resumes exactly."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("transformers")

from peft import LoraConfig, PeftModel  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from fusion.cache import build  # noqa: E402
from fusion.tiny import bpe_tokenizer, char_tokenizer, tiny_causal_lm  # noqa: E402
from fusion.training import FusionTrainer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _pairs():
    return [
        {"prompt": f"Q: {a}+{b}=", "response": f" {a}+{b} is {a + b}."}
        for a, b in ((1, 2), (3, 4), (5, 6), (7, 8), (9, 1), (2, 2), (4, 6), (8, 3))
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion_peft")
    pairs = _pairs()
    corpus = [p["prompt"] + p["response"] for p in pairs]
    teacher_tok = char_tokenizer(corpus)
    teacher = tiny_causal_lm(teacher_tok, arch="gpt2", d_model=32, n_head=2, seed=1)
    build(teacher, teacher_tok, pairs, root / "cache", k=6, progress=False)
    return {"root": root, "pairs": pairs, "cache": root / "cache", "pivot": bpe_tokenizer(corpus)}


def _trainer(setup, out, steps, **extra):
    torch.manual_seed(0)  # the adapters' initialisation
    model = tiny_causal_lm(setup["pivot"], arch="llama", d_model=32, n_head=2, seed=3)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=4,
        max_steps=steps,
        learning_rate=5e-2,
        save_strategy="steps",
        save_steps=1,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return FusionTrainer(
        model,
        args,
        teachers=[(setup["cache"], 1.0)],
        k=4,
        train_dataset=setup["pairs"],
        processing_class=setup["pivot"],
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        **extra,
    )


def _adapters(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_lora_pivot_trains_checkpoints_and_resumes(setup, tmp_path):
    full = _trainer(setup, tmp_path / "full", steps=2)
    assert isinstance(full.model, PeftModel)
    base = {n: p.detach().clone() for n, p in full.model.named_parameters() if "lora_" not in n}
    start = _adapters(full.model)
    full.train()
    # only the adapters moved
    for name, p in full.model.named_parameters():
        if "lora_" in name:
            continue
        assert torch.equal(p, base[name]), name
    trained = _adapters(full.model)
    assert any(not torch.equal(trained[n], start[n]) for n in trained)
    # a checkpoint holds the adapters (not a copy of the whole model) and the optimiser
    ckpt = tmp_path / "full" / "checkpoint-1"
    assert (ckpt / "adapter_model.safetensors").is_file()
    assert not (ckpt / "model.safetensors").exists()
    assert (ckpt / "optimizer.pt").is_file()
    # resuming from step 1 ends where the uninterrupted run ended
    resumed = _trainer(setup, tmp_path / "resumed", steps=2)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.state.global_step == 2
    for name, value in _adapters(resumed.model).items():
        torch.testing.assert_close(value, trained[name], rtol=1e-5, atol=1e-7)
    # and logs the same step-2 values (the step-1 line comes from the checkpoint's history)
    (last,) = [h for h in resumed.state.log_history if "loss" in h and h["step"] == 2]
    (want,) = [h for h in full.state.log_history if "loss" in h and h["step"] == 2]
    for key in ("loss", "ce", "uld", "gld"):
        assert last[key] == pytest.approx(want[key], rel=1e-5), key
