"""FusionTrainer and FusionCollator on tiny offline models (single process)."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("transformers")

from transformers import TrainingArguments  # noqa: E402

import fusion  # noqa: E402
from fusion.cache import CacheError, TeacherCache, build  # noqa: E402
from fusion.teachers import OnlineTeacher  # noqa: E402
from fusion.tiny import bpe_tokenizer, char_tokenizer, tiny_causal_lm  # noqa: E402
from fusion.training import (  # noqa: E402
    FusionCollator,
    FusionTrainer,
    PromptResponseDataset,
    response_positions,
    split_batch,
    teacher_keys,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CACHE_K = 8


def make_pairs(n: int = 16) -> list[dict[str, str]]:
    """Sums whose responses differ in length, so token counts differ between batches."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        a, b = (int(x) for x in torch.randint(0, 50, (2,), generator=g))
        steps = " ".join(f"{a}+{j}={a + j}." for j in range(i % 4))
        out.append({"prompt": f"Q: {a}+{b}=", "response": f" {steps} A: {a + b}."})
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two teachers (char and BPE tokenizers) cached over the data, a BPE pivot tokenizer."""
    root = tmp_path_factory.mktemp("fusion_training")
    pairs = make_pairs()
    corpus = [p["prompt"] + p["response"] for p in pairs]
    char_tok = char_tokenizer(corpus)
    bpe_tok = bpe_tokenizer(corpus, vocab_size=290)
    caches, models = [], []
    for name, tok, arch in (("char", char_tok, "gpt2"), ("bpe", bpe_tok, "llama")):
        teacher = tiny_causal_lm(tok, arch=arch, d_model=32, n_head=2, seed=1)
        build(teacher, tok, pairs, root / name, k=CACHE_K, progress=False)
        caches.append(root / name)
        models.append((teacher, tok))
    pivot_tok = bpe_tokenizer(corpus, vocab_size=320)
    return {
        "root": root,
        "pairs": pairs,
        "caches": caches,
        "teachers": models,
        "char": char_tok,
        "pivot": pivot_tok,
    }


def pivot_model(tok, seed: int = 3):
    # llama: no dropout, so two runs over the same data give the same gradients
    return tiny_causal_lm(tok, arch="llama", d_model=32, n_head=2, seed=seed)


def training_args(tmp_path, **overrides) -> TrainingArguments:
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
    opts.update(overrides)
    return TrainingArguments(**opts)


TRAINER_OPTIONS = ("lambda_", "beta", "gld_graph", "eval_dataset", "eval_teachers", "top_k")


def make_trainer(setup, tmp_path, *, model=None, teachers=None, **overrides):
    kwargs = {k: overrides.pop(k) for k in list(overrides) if k in TRAINER_OPTIONS}
    return FusionTrainer(
        model if model is not None else pivot_model(setup["pivot"]),
        training_args(tmp_path, **overrides),
        teachers=teachers if teachers is not None else [(c, 0.5) for c in setup["caches"]],
        k=4,
        m=16,
        train_dataset=setup["pairs"],
        processing_class=setup["pivot"],
        **kwargs,
    )


# ------------------------------------------------------------------------- collator


def test_collator_attaches_each_teachers_cache_rows(setup):
    caches = [TeacherCache(c) for c in setup["caches"]]
    collator = FusionCollator(setup["char"], caches, teacher_entries=5)
    data = PromptResponseDataset(setup["pairs"])
    picks = [3, 0, 7]
    batch = collator([data[i] for i in picks])
    assert batch["index"].tolist() == picks
    for j, cache in enumerate(caches):
        logprobs, indices, mask = (batch[key] for key in teacher_keys(j))
        longest = max(len(cache[i].logprobs) for i in picks)
        assert logprobs.shape == (3, longest, 5) and indices.shape == (3, longest, 5)
        assert indices.dtype == torch.long and mask.dtype == torch.bool
        for b, i in enumerate(picks):
            n = len(cache[i].logprobs)
            assert int(mask[b].sum()) == n and bool(mask[b, :n].all())
            torch.testing.assert_close(logprobs[b, :n], cache[i].logprobs[:, :5])
            assert torch.equal(indices[b, :n], cache[i].indices[:, :5].long())


def test_collator_labels_exactly_the_response_and_eos(setup):
    # with a character tokenizer, the response has one token per character, plus EOS
    tok = setup["char"]
    data = PromptResponseDataset(setup["pairs"])
    batch = FusionCollator(tok)([data[i] for i in range(5)])
    assert not any(key.startswith("teacher_") for key in batch)
    for b in range(5):
        prompt, response = setup["pairs"][b]["prompt"], setup["pairs"][b]["response"]
        labelled = batch["labels"][b][batch["labels"][b] != -100]
        assert len(labelled) == len(response) + 1
        assert tok.decode(labelled[:-1]) == response
        assert int(labelled[-1]) == tok.eos_token_id
        length = len(prompt) + len(response) + 1
        assert int(batch["attention_mask"][b].sum()) == length
        # right padding: real tokens first, the labels start right after the prompt
        assert bool(batch["attention_mask"][b, :length].all())
        assert bool((batch["labels"][b, : len(prompt)] == -100).all())


def test_collator_and_pivot_spans_match_the_caches_own_token_ids(setup):
    # the char teacher's cached response tokens are the char tokenizer's labels
    cache = TeacherCache(setup["caches"][0])
    batch = FusionCollator(setup["char"], [cache])(
        [PromptResponseDataset(setup["pairs"])[i] for i in (2, 5)]
    )
    _, labels, teachers, masks = split_batch(batch)
    for b, i in enumerate((2, 5)):
        assert torch.equal(labels[b][labels[b] != -100], cache.token_ids(i).long())
        assert int(masks[0][b].sum()) == len(cache.token_ids(i))
    assert len(teachers) == 1


def test_collator_refuses_mixed_batches_and_too_large_k(setup):
    data = PromptResponseDataset(setup["pairs"])
    plain = PromptResponseDataset(setup["pairs"], with_index=False)
    collator = FusionCollator(setup["pivot"], setup["caches"])
    with pytest.raises(ValueError, match="index"):
        collator([data[0], plain[1]])
    with pytest.raises(ValueError, match="teacher_entries"):
        FusionCollator(setup["pivot"], setup["caches"], teacher_entries=CACHE_K + 1)


# -------------------------------------------------------------------------- trainer


def fixed_batch_loss(trainer, indices) -> float:
    data = PromptResponseDataset(trainer_pairs(trainer))
    batch = trainer.data_collator([data[i] for i in indices])
    trainer.model.eval()
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch))


def trainer_pairs(trainer):
    return [{"prompt": p, "response": r} for p, r in trainer.train_dataset.examples]


def test_training_steps_lower_the_fusion_loss(setup, tmp_path):
    trainer = make_trainer(setup, tmp_path, max_steps=8, per_device_train_batch_size=8)
    before = fixed_batch_loss(trainer, range(8))
    trainer.train()
    after = fixed_batch_loss(trainer, range(8))
    assert math.isfinite(before) and after < before
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 8
    for h in logs:
        for key in ("ce", "uld", "gld", "uld/0", "gld/1"):
            assert math.isfinite(h[key])
        # the logged loss is the FusionLoss formula over the logged components
        assert h["loss"] == pytest.approx(0.5 * h["ce"] + 0.5 * (h["uld"] + h["gld"]), rel=1e-6)
        assert h["uld"] == pytest.approx(0.5 * (h["uld/0"] + h["uld/1"]), rel=1e-5)
    assert logs[-1]["ce"] < logs[0]["ce"]


def test_components_match_fusion_loss_computed_directly(setup, tmp_path):
    trainer = make_trainer(setup, tmp_path, lambda_=0.3, beta=2.0)
    batch = trainer.data_collator([PromptResponseDataset(setup["pairs"])[i] for i in (1, 4, 6)])
    model = trainer.model.eval()
    with torch.no_grad():
        got = float(trainer.compute_loss(model, batch))
        inputs, labels, teachers, masks = split_batch(batch)
        logits = model(**inputs).logits[:, :-1]
        targets = labels[:, 1:]
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        uld = [
            fusion.uld_loss(logits, t, targets != -100, m, top_k=CACHE_K)
            for t, m in zip(teachers, masks)
        ]
        gld = [
            fusion.gld_loss(logits, t, targets != -100, m, k=4, m=16)
            for t, m in zip(teachers, masks)
        ]
    want = 0.7 * ce + 0.3 * sum(0.5 * (u + 2.0 * g) for u, g in zip(uld, gld))
    assert got == pytest.approx(float(want), rel=1e-5)


def one_sgd_step(setup, tmp_path, batch, accumulation, **extra):
    trainer = make_trainer(
        setup,
        tmp_path,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        **extra,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    step = {n: before[n] - p.detach() for n, p in trainer.model.named_parameters()}
    return step, trainer


def test_gradient_accumulation_equals_one_larger_batch(setup, tmp_path):
    # 16 examples, one optimiser step: 4 micro-batches of 4 against one batch of 16
    pairs = setup["pairs"]
    assert len(pairs) == 16
    accumulated, trainer = one_sgd_step(setup, tmp_path / "a", 4, 4)
    single, _ = one_sgd_step(setup, tmp_path / "b", 16, 1)
    for name in single:
        torch.testing.assert_close(accumulated[name], single[name], rtol=2e-4, atol=1e-6)
    assert any(float(v.abs().max()) > 1e-4 for v in single.values())
    # the micro-batches hold different numbers of target tokens: a per-micro-batch token
    # mean would not have matched
    counts = {len(p["response"]) for p in pairs}
    assert len(counts) > 1


def test_plain_sft_without_teachers(setup, tmp_path):
    trainer = make_trainer(setup, tmp_path, teachers=[], lambda_=0.0, max_steps=2)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all("uld" not in h for h in logs)
    assert all(h["loss"] == pytest.approx(h["ce"], rel=1e-5) for h in logs)
    with pytest.raises(ValueError, match="lambda_"):
        make_trainer(setup, tmp_path, teachers=[], lambda_=0.5)


def test_bf16_logits_reach_the_loss_in_bf16(setup, tmp_path):
    # accelerate's mixed-precision wrapper would cast the logits to fp32 before the loss
    trainer = make_trainer(setup, tmp_path, bf16=True, max_steps=2)
    seen = []
    real = trainer.fusion_loss.forward

    def observe(student_logits, *args, **kwargs):
        seen.append(student_logits.dtype)
        return real(student_logits, *args, **kwargs)

    trainer.fusion_loss.forward = observe
    trainer.train()
    assert seen and set(seen) == {torch.bfloat16}
    # and without bf16 the same logits arrive in fp32 (the observation can tell them apart)
    plain = make_trainer(setup, tmp_path / "fp32", max_steps=1)
    seen.clear()
    real = plain.fusion_loss.forward
    plain.fusion_loss.forward = observe
    plain.train()
    assert set(seen) == {torch.float32}
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all(math.isfinite(h[key]) for h in logs for key in ("loss", "ce", "uld", "gld"))


def test_eval_dataset_reports_cross_entropy(setup, tmp_path):
    trainer = FusionTrainer(
        pivot_model(setup["pivot"]),
        training_args(tmp_path, per_device_eval_batch_size=16),
        teachers=[(setup["caches"][0], 1.0)],
        k=4,
        m=16,
        train_dataset=setup["pairs"],
        eval_dataset=setup["pairs"],
        processing_class=setup["pivot"],
    )
    metrics = trainer.evaluate()
    plain = PromptResponseDataset(setup["pairs"], with_index=False)
    batch = FusionCollator(setup["pivot"])([plain[i] for i in range(len(plain))])
    with torch.no_grad():
        logits = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())
    assert metrics["eval_loss"] == pytest.approx(float(ce), rel=1e-4)


def test_refuses_misaligned_or_incompatible_caches(setup, tmp_path):
    shuffled = setup["pairs"][1:] + setup["pairs"][:1]
    with pytest.raises(CacheError, match="data_sha256"):
        FusionTrainer(
            pivot_model(setup["pivot"]),
            training_args(tmp_path),
            teachers=[(setup["caches"][0], 1.0)],
            train_dataset=shuffled,
            processing_class=setup["pivot"],
            k=4,
        )
    with pytest.raises(CacheError, match="examples"):
        FusionTrainer(
            pivot_model(setup["pivot"]),
            training_args(tmp_path),
            teachers=[(setup["caches"][0], 1.0)],
            train_dataset=setup["pairs"][:-1],
            processing_class=setup["pivot"],
            k=4,
        )
    with pytest.raises(ValueError, match="temperature"):
        FusionTrainer(
            pivot_model(setup["pivot"]),
            training_args(tmp_path),
            teachers=[setup["caches"][0]],
            teacher_temperature=2.0,
            train_dataset=setup["pairs"],
            processing_class=setup["pivot"],
            k=4,
        )
    with pytest.raises(ValueError, match="caches k="):
        FusionTrainer(
            pivot_model(setup["pivot"]),
            training_args(tmp_path),
            teachers=[setup["caches"][0]],
            train_dataset=setup["pairs"],
            processing_class=setup["pivot"],
            k=CACHE_K + 2,
        )


@pytest.mark.parametrize("prompt_length", [3, 40])
def test_response_positions_leave_every_loss_unchanged(prompt_length):
    # long prompts take the compacting path, short ones the no-copy path
    g = torch.Generator().manual_seed(prompt_length)
    batch, length, vocab = 3, prompt_length + 12, 50
    logits = torch.randn(batch, length, vocab, generator=g)
    labels = torch.full((batch, length), -100)
    for b, n in enumerate((12, 5, 9)):  # responses of different lengths, then padding
        labels[b, prompt_length : prompt_length + n] = torch.randint(0, vocab, (n,), generator=g)
    top = torch.log_softmax(torch.randn(batch, 10, 30, generator=g), -1).topk(6, dim=-1)
    teacher = fusion.TopK(top.values, top.indices)
    t_mask = torch.arange(10)[None] < torch.tensor([[10], [4], [7]])

    def losses(z, targets):
        mask = targets != -100
        return (
            F.cross_entropy(z.flatten(0, 1), targets.flatten(), ignore_index=-100),
            fusion.uld_loss(z, teacher, mask, t_mask, top_k=6),
            fusion.gld_loss(z, teacher, mask, t_mask, k=4, m=8),
        )

    full = losses(logits[:, :-1], labels[:, 1:])
    picked, targets = response_positions(logits, labels)
    if prompt_length > 20:
        assert picked.shape[1] == 12  # the longest response: 12 predicting positions
    for want, got in zip(full, losses(picked, targets)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------- exact logging


class Recording(FusionTrainer):
    """Remembers which examples each micro-batch held."""

    def compute_loss(self, model, inputs, **kwargs):
        self.seen = getattr(self, "seen", []) + inputs["index"].tolist()
        return super().compute_loss(model, inputs, **kwargs)


def reference_components(setup, indices, *, lam=0.5, beta=1.0):
    """CE (token mean), ULD and GLD (sequence means) of one process on these examples."""
    model = pivot_model(setup["pivot"]).eval()
    data = PromptResponseDataset(setup["pairs"])
    collator = FusionCollator(setup["pivot"], setup["caches"])
    batch = collator([data[i] for i in indices])
    inputs, labels, teachers, masks = split_batch(batch)
    with torch.no_grad():
        logits = model(**inputs).logits[:, :-1]
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    smask = targets != -100
    uld = [fusion.uld_loss(logits, t, smask, m, top_k=CACHE_K) for t, m in zip(teachers, masks)]
    gld = [fusion.gld_loss(logits, t, smask, m, k=4, m=16) for t, m in zip(teachers, masks)]
    out = {"ce": float(ce), "uld": float(sum(uld)) / 2, "gld": float(sum(gld)) / 2}
    out["loss"] = (1 - lam) * out["ce"] + lam * (out["uld"] + beta * out["gld"])
    return out


def test_logged_values_are_the_step_values_whatever_the_batch_split(setup, tmp_path):
    # one optimizer step over the same 8 examples, as 8 x 1, 4 x 2 and 1 x 8 micro-batches
    logged = {}
    for batch, accumulation in ((8, 1), (4, 2), (1, 8)):
        trainer = Recording(
            pivot_model(setup["pivot"]),
            training_args(
                tmp_path / f"{batch}x{accumulation}",
                per_device_train_batch_size=batch,
                gradient_accumulation_steps=accumulation,
            ),
            teachers=[(c, 0.5) for c in setup["caches"]],
            k=4,
            m=16,
            train_dataset=setup["pairs"],
            processing_class=setup["pivot"],
        )
        trainer.train()
        (log,) = [h for h in trainer.state.log_history if "loss" in h]
        logged[(batch, accumulation)] = (log, sorted(trainer.seen))
    (first, indices), *others = logged.values()
    ref = reference_components(setup, indices)
    for log, seen in logged.values():
        assert seen == indices
        for key in ("loss", "ce", "uld", "gld"):
            assert log[key] == pytest.approx(ref[key], rel=2e-5), key
        assert log["loss"] == pytest.approx(0.5 * log["ce"] + 0.5 * (log["uld"] + log["gld"]))
        assert log["uld"] == pytest.approx(0.5 * (log["uld/0"] + log["uld/1"]), rel=1e-6)


# ------------------------------------------------------------------ evaluation


def test_eval_reports_ce_and_components_exactly_whatever_the_eval_batch(setup, tmp_path):
    held_out = make_pairs(24)[16:]  # other examples than the training ones
    root = tmp_path / "eval_caches"
    eval_caches = []
    for j, (teacher, tok) in enumerate(setup["teachers"]):
        build(teacher, tok, held_out, root / str(j), k=CACHE_K, progress=False)
        eval_caches.append(root / str(j))
    metrics = {}
    for batch in (3, 8):
        trainer = make_trainer(
            setup,
            tmp_path,
            per_device_eval_batch_size=batch,
            eval_dataset=held_out,
            eval_teachers=eval_caches,
        )
        metrics[batch] = trainer.evaluate()
    for key in ("eval_loss", "eval_ce", "eval_uld", "eval_gld", "eval_uld/0", "eval_gld/1"):
        assert metrics[3][key] == pytest.approx(metrics[8][key], rel=1e-5), key
    m = metrics[3]
    assert m["eval_loss"] == pytest.approx(
        0.5 * m["eval_ce"] + 0.5 * (m["eval_uld"] + m["eval_gld"])
    )
    # the CE is the token mean over the whole set, computed directly
    plain = PromptResponseDataset(held_out, with_index=False)
    batch = FusionCollator(setup["pivot"])([plain[i] for i in range(len(plain))])
    model = pivot_model(setup["pivot"]).eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())
    assert m["eval_ce"] == pytest.approx(float(ce), rel=1e-5)
    # cached teachers of the training data cannot score the held-out examples: CE only
    ce_only = make_trainer(setup, tmp_path, eval_dataset=held_out).evaluate()
    assert ce_only["eval_loss"] == ce_only["eval_ce"] == pytest.approx(m["eval_ce"], rel=1e-5)
    assert "eval_uld" not in ce_only


def test_teacher_weights_are_validated(setup, tmp_path):
    c0, c1 = setup["caches"]
    with pytest.raises(ValueError, match="weight 0 is -1.0"):
        make_trainer(setup, tmp_path, teachers=[(c0, -1.0)])
    with pytest.raises(ValueError, match="weight 0 is None"):
        make_trainer(setup, tmp_path, teachers=[(c0, None), (c1, 0.3)])
    with pytest.raises(ValueError, match="no teacher"):
        make_trainer(setup, tmp_path, teachers=[(None, 0.3)])
    with pytest.raises(ValueError, match="every teacher weight is 0"):
        make_trainer(setup, tmp_path, teachers=[(c0, 0.0), (c1, 0.0)])
    uniform = make_trainer(setup, tmp_path, teachers=[c0, (c1, None)])
    assert uniform.fusion_loss.teacher_weights is None


# -------------------------------------------------------------- online teachers


def online(setup, **options):
    return [OnlineTeacher(model, tok, **options) for model, tok in setup["teachers"]]


def test_online_teacher_rows_equal_the_cache_rows(setup):
    pairs = [(p["prompt"], p["response"]) for p in setup["pairs"]]
    for teacher, cache in zip(online(setup, logprobs_dtype=torch.float16), setup["caches"]):
        cache = TeacherCache(cache)
        topk, mask = teacher.topk(teacher.encode(pairs[:6]), CACHE_K)
        for b in range(6):
            n = len(cache[b].logprobs)
            assert int(mask[b].sum()) == n
            torch.testing.assert_close(topk.logprobs[b, :n], cache[b].logprobs, rtol=0, atol=0)
            assert torch.equal(topk.indices[b, :n], cache[b].indices.long())


@pytest.mark.parametrize("rounding", [torch.float16, None])
def test_cache_and_the_same_teacher_online_give_the_same_loss(setup, tmp_path, rounding):
    data = PromptResponseDataset(setup["pairs"])
    items = [data[i] for i in (0, 5, 9, 14)]
    cached = make_trainer(setup, tmp_path)
    live = make_trainer(
        setup,
        tmp_path,
        teachers=[(t, 0.5) for t in online(setup, logprobs_dtype=rounding)],
        top_k=CACHE_K,  # the caches' default (online teachers default to more entries)
    )
    losses = []
    for trainer in (cached, live):
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, trainer.data_collator(items))
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in trainer.model.parameters()])
        losses.append((float(loss.detach()), dict(trainer.last_components), grad))
    (a, parts_a, grad_a), (b, parts_b, grad_b) = losses
    if rounding is None:  # fp32 teacher log-probabilities against the cache's fp16 ones
        assert b == pytest.approx(a, rel=1e-3)
        return
    assert b == a
    for key in parts_a:
        assert float(parts_b[key]) == float(parts_a[key]), key
    assert torch.equal(grad_a, grad_b)


def test_online_teachers_train_without_gradients(setup, tmp_path):
    teachers = online(setup)
    before = [[p.detach().clone() for p in t.model.parameters()] for t in teachers]
    trainer = make_trainer(
        setup, tmp_path, teachers=[(teachers[0], 0.7), (teachers[1], 0.3)], max_steps=3
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(math.isfinite(h["gld"]) for h in logs)
    for teacher, params in zip(teachers, before):
        for p, q in zip(teacher.model.parameters(), params):
            assert p.grad is None and torch.equal(p, q)
    # a model directory is a teacher too (run online), a cache directory a cache
    model, tok = setup["teachers"][0]
    model.save_pretrained(tmp_path / "char_teacher")
    tok.save_pretrained(tmp_path / "char_teacher")
    mixed = make_trainer(setup, tmp_path, teachers=[tmp_path / "char_teacher", setup["caches"][1]])
    assert isinstance(mixed.teachers[0], OnlineTeacher)
    assert isinstance(mixed.teachers[1], TeacherCache)
    with pytest.raises(FileNotFoundError, match="neither a teacher cache"):
        make_trainer(setup, tmp_path, teachers=[tmp_path / "nothing"])


# ---------------------------------------------------------------------- chat data

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def chat_rows():
    return [
        {
            "messages": [
                {"role": "user", "content": f"{a}+{b}="},
                {"role": "assistant", "content": f"{a + b}"},
                {"role": "user", "content": "and doubled?"},
                {"role": "assistant", "content": f"{2 * (a + b)}."},
            ]
        }
        for a, b in ((1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4))
    ]


def test_messages_rows_train_on_assistant_turns_with_cached_and_online_teachers(tmp_path):
    rows = chat_rows()
    corpus = [
        "".join(f"<{m['role']}>{m['content']}</s>" for m in r["messages"]) + "<assistant>"
        for r in rows
    ]
    teacher_tok = char_tokenizer(corpus)
    teacher_tok.chat_template = CHAT_TEMPLATE
    teacher = tiny_causal_lm(teacher_tok, arch="gpt2", d_model=32, n_head=2, seed=1)
    build(teacher, teacher_tok, rows, tmp_path / "cache", k=6, progress=False)
    pivot_tok = bpe_tokenizer(corpus, vocab_size=300)
    pivot_tok.chat_template = CHAT_TEMPLATE
    data = PromptResponseDataset(rows)
    assert "messages" in data[0] and data[0]["index"] == 0
    # the pivot is labelled on the assistant turns only, both of them
    batch = FusionCollator(pivot_tok)([data[i] for i in range(3)])
    for b in range(3):
        labelled = pivot_tok.decode(batch["labels"][b][batch["labels"][b] != -100])
        turns = [m["content"] for m in rows[b]["messages"] if m["role"] == "assistant"]
        assert labelled == "</s>".join(turns) + "</s>"
    # an online teacher's rows are the cache's rows, both assistant turns included
    cache = TeacherCache(tmp_path / "cache")
    live = OnlineTeacher(teacher, teacher_tok, logprobs_dtype=torch.float16)
    topk, mask = live.topk(live.encode([data[i] for i in range(4)]), 6)
    for b in range(4):
        n = len(cache[b].logprobs)
        assert int(mask[b].sum()) == n
        assert torch.equal(topk.logprobs[b, :n], cache[b].logprobs)
        assert torch.equal(topk.indices[b, :n], cache[b].indices.long())
    trainer = FusionTrainer(
        tiny_causal_lm(pivot_tok, arch="llama", d_model=32, n_head=2, seed=3),
        training_args(tmp_path, max_steps=2, per_device_train_batch_size=3),
        teachers=[(tmp_path / "cache", 0.5), (live, 0.5)],
        k=4,
        top_k=6,
        train_dataset=rows,
        processing_class=pivot_tok,
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["gld/1"]) for h in logs)
