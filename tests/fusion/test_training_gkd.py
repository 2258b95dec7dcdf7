"""The trainers' same-vocabulary JSD, on-policy distillation and shared option names."""

from __future__ import annotations

import inspect
import math
import os

import pytest
import torch

pytest.importorskip("transformers")

from transformers import TrainingArguments  # noqa: E402

import fusion  # noqa: E402
from fusion.cache import build  # noqa: E402
from fusion.teachers import OnlineTeacher  # noqa: E402
from fusion.tiny import bpe_tokenizer, char_tokenizer, tiny_causal_lm  # noqa: E402
from fusion.training import FusionTrainer, PromptResponseDataset, response_positions  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _pairs(n=8):
    return [{"prompt": f"Q: {i}+{i}=", "response": f" A: {2 * i}."} for i in range(n)]


@pytest.fixture(scope="module")
def same_vocab(tmp_path_factory):
    """A pivot and a teacher sharing one BPE tokenizer, and the teacher's cache."""
    root = tmp_path_factory.mktemp("gkd")
    pairs = _pairs()
    tok = bpe_tokenizer([p["prompt"] + p["response"] for p in pairs], vocab_size=300)
    teacher = tiny_causal_lm(tok, arch="llama", d_model=32, n_head=2, seed=7)
    vocab = int(teacher.config.vocab_size)
    build(teacher, tok, pairs, root / "cache", k=vocab, progress=False)
    build(teacher, tok, pairs, root / "q8", k=vocab, dtype="q8", progress=False)
    return {"root": root, "pairs": pairs, "tok": tok, "teacher": teacher}


def _args(tmp_path, **extra):
    opts = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        seed=0,
    )
    opts.update(extra)
    return TrainingArguments(**opts)


def _pivot(tok):
    return tiny_causal_lm(tok, arch="llama", d_model=32, n_head=2, seed=3)


def _trainer(setup, tmp_path, teachers, **options):
    return FusionTrainer(
        _pivot(setup["tok"]),
        _args(tmp_path, **options.pop("args", {})),
        teachers=teachers,
        train_dataset=setup["pairs"],
        processing_class=setup["tok"],
        **options,
    )


def test_jsd_trainer_loss_is_the_token_mean_jsd_to_the_teacher(same_vocab, tmp_path):
    """lambda_=1, beta=0: the loss is jsd_loss between pivot and teacher logits, exactly."""
    online = OnlineTeacher(same_vocab["teacher"], same_vocab["tok"])
    trainer = _trainer(
        same_vocab, tmp_path, [online], lambda_=1.0, beta=0.0, distillation="jsd", jsd_beta=0.3
    )
    items = [PromptResponseDataset(same_vocab["pairs"])[i] for i in range(4)]
    batch = trainer.data_collator(items)
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, batch)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        s_logits = model(**inputs).logits
        t_logits = same_vocab["teacher"](**inputs).logits
    s, targets = response_positions(s_logits, batch["labels"])
    t, _ = response_positions(t_logits, batch["labels"])
    ref = fusion.jsd_loss(s, t, beta=0.3, mask=targets != -100)
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    assert set(trainer.last_components) == {"ce", "jsd", "gld"}


@pytest.mark.parametrize("name,rel", [("cache", 2e-3), ("q8", 3e-2)])
def test_jsd_from_a_full_cache_equals_jsd_online(same_vocab, tmp_path, name, rel):
    """A cache holding every entry (k = V) gives the online teacher's JSD (to its rounding:
    fp16, or the compact encoding's 8-bit grid)."""
    online = OnlineTeacher(same_vocab["teacher"], same_vocab["tok"])
    options = {"lambda_": 0.5, "beta": 0.0, "distillation": "jsd", "jsd_beta": 0.5}
    cached = _trainer(same_vocab, tmp_path, [same_vocab["root"] / name], **options)
    live = _trainer(same_vocab, tmp_path, [online], **options)
    items = [PromptResponseDataset(same_vocab["pairs"])[i] for i in range(4)]
    values = []
    for trainer in (cached, live):
        trainer.model.train()
        trainer.compute_loss(trainer.model, trainer.data_collator(items))
        values.append(float(trainer.last_components["jsd"]))
    assert values[0] > 0
    assert values[0] == pytest.approx(values[1], rel=rel)


def test_jsd_refuses_a_teacher_with_another_vocabulary(same_vocab, tmp_path):
    other = char_tokenizer(["Q: 0123456789+=A."])
    teacher = OnlineTeacher(tiny_causal_lm(other, arch="llama", d_model=32, n_head=2), other)
    with pytest.raises(ValueError, match="pivot.s (vocabulary|tokenizer)"):
        _trainer(same_vocab, tmp_path, [teacher], distillation="jsd")
    with pytest.raises(ValueError, match="distillation"):
        _trainer(same_vocab, tmp_path, [teacher], distillation="kl")


def test_on_policy_windows_are_completed_by_the_pivot(same_vocab, tmp_path):
    online = OnlineTeacher(same_vocab["teacher"], same_vocab["tok"])
    trainer = _trainer(
        same_vocab,
        tmp_path,
        [online],
        lambda_=0.5,
        beta=0.0,
        distillation="jsd",
        lmbda=1.0,
        generation_kwargs={"max_new_tokens": 6, "do_sample": False},
        args={"max_steps": 2},
    )
    seen = []
    original = trainer.compute_loss

    def spy(model, inputs, *args, **kwargs):
        seen.append(inputs)
        return original(model, inputs, *args, **kwargs)

    trainer.compute_loss = spy
    trainer.train()
    assert trainer.on_policy.windows == 2 and trainer.on_policy.completed == 2
    # the first window's responses are the untrained pivot's greedy completions
    tok, fresh = same_vocab["tok"], _pivot(same_vocab["tok"])
    first = seen[0]
    for b, prompt in enumerate(first["prompts"]):
        assert prompt in {p["prompt"] for p in same_vocab["pairs"]}
        encoded = trainer.data_collator.encoder.encode([{"prompt": prompt, "response": ""}])[0]
        head = torch.tensor([encoded.input_ids[: encoded.start]])
        out = fresh.generate(head, max_new_tokens=6, do_sample=False, pad_token_id=0)
        new = out[0, head.shape[1] :].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        expected = tok.decode(new, skip_special_tokens=True)
        labelled = first["labels"][b][first["labels"][b] != -100]
        assert tok.decode(labelled, skip_special_tokens=True) == expected
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["jsd"]) for h in logs)


def test_on_policy_is_drawn_per_window_with_the_seed(same_vocab, tmp_path):
    online = OnlineTeacher(same_vocab["teacher"], same_vocab["tok"])
    counts = []
    for _ in range(2):
        trainer = _trainer(
            same_vocab,
            tmp_path,
            [online],
            lmbda=0.5,
            generation_kwargs={"max_new_tokens": 3},
            args={"max_steps": 6, "per_device_train_batch_size": 2},
        )
        trainer.train()
        counts.append(trainer.on_policy.completed)
    assert counts[0] == counts[1]  # reproducible
    assert 0 <= counts[0] <= 6


def test_on_policy_refuses_caches_and_bad_fractions(same_vocab, tmp_path):
    with pytest.raises(ValueError, match="online teachers only"):
        _trainer(same_vocab, tmp_path, [same_vocab["root"] / "cache"], lmbda=0.5)
    online = OnlineTeacher(same_vocab["teacher"], same_vocab["tok"])
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="lmbda"):
            _trainer(same_vocab, tmp_path, [online], lmbda=bad)


def test_old_option_names_warn_and_mean_the_same(same_vocab, tmp_path):
    cache = [same_vocab["root"] / "cache"]
    with pytest.warns(FutureWarning, match="student_temperature"):
        old = _trainer(same_vocab, tmp_path, cache, student_temperature=2.0, uld_top_k=5)
    new = _trainer(same_vocab, tmp_path, cache, temperature=2.0, top_k=5)
    assert repr(old.fusion_loss) == repr(new.fusion_loss)
    assert new.fusion_loss.uld.top_k == 5 and new.fusion_loss.uld.temperature == 2.0
    with pytest.raises(TypeError, match="old name"):
        _trainer(same_vocab, tmp_path, cache, student_temperature=2.0, temperature=3.0)
    with pytest.warns(FutureWarning, match="temperature"):
        module = fusion.ULDLoss(student_temperature=0.5)
    assert module.temperature == 0.5


def test_both_trainers_show_one_set_of_fusion_options():
    from fusion.training import FusionTrainingMixin
    from fusion.trl import FusionSFTTrainer

    options = list(inspect.signature(FusionTrainingMixin._init_fusion).parameters)[2:]
    for cls in (FusionTrainer, FusionSFTTrainer):
        params = inspect.signature(cls.__init__).parameters
        for name in options:
            assert name in params, (cls.__name__, name)
            assert (
                params[name].default
                == inspect.signature(FusionTrainingMixin._init_fusion).parameters[name].default
            )
        assert "student_temperature" not in params and "uld_top_k" not in params


def test_evaluation_reports_jsd_as_a_token_mean(same_vocab, tmp_path):
    """eval_jsd is the token mean over the whole set; eval_loss the training objective."""
    online = OnlineTeacher(same_vocab["teacher"], same_vocab["tok"])
    lam, beta = 0.4, 0.5
    trainer = _trainer(
        same_vocab,
        tmp_path,
        [online],
        lambda_=lam,
        beta=beta,
        k=4,
        distillation="jsd",
        eval_dataset=same_vocab["pairs"],
        args={"per_device_eval_batch_size": 3},
    )
    metrics = trainer.evaluate()
    items = [PromptResponseDataset(same_vocab["pairs"], with_index=False)[i] for i in range(8)]
    batch = trainer.data_collator(items)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask")}
    with torch.no_grad():
        s, targets = response_positions(trainer.model(**inputs).logits, batch["labels"])
        t, _ = response_positions(same_vocab["teacher"](**inputs).logits, batch["labels"])
    expected = fusion.jsd_loss(s, t, beta=0.5, mask=targets != -100)
    assert metrics["eval_jsd"] == pytest.approx(float(expected), rel=1e-4)
    total = (1 - lam) * metrics["eval_ce"] + lam * (
        metrics["eval_jsd"] + beta * metrics["eval_gld"]
    )
    assert metrics["eval_loss"] == pytest.approx(total, rel=1e-6)
