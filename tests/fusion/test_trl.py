"""FusionSFTTrainer: GLD/ULD inside TRL's SFTTrainer, on tiny offline models."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from trl import SFTConfig, SFTTrainer  # noqa: E402

import fusion  # noqa: E402
from fusion.cache import CacheError, TeacherCache, build  # noqa: E402
from fusion.teachers import OnlineTeacher  # noqa: E402
from fusion.tiny import bpe_tokenizer, char_tokenizer, tiny_causal_lm  # noqa: E402
from fusion.training import online_keys, split_batch  # noqa: E402
from fusion.trl import FusionSFTTrainer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CACHE_K = 8


def _rows(n=12):
    return [
        {"prompt": f"Q: {a}+{a % 5}=", "response": " " + f"{a}+{a % 5}={a + a % 5}." * (1 + a % 3)}
        for a in range(10, 10 + n)
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion_trl")
    rows = _rows()
    corpus = [r["prompt"] + r["response"] for r in rows]
    char_tok = char_tokenizer(corpus)
    build(
        tiny_causal_lm(char_tok, arch="gpt2", d_model=32, n_head=2, seed=1),
        char_tok,
        rows,
        root / "cache",
        k=CACHE_K,
        progress=False,
    )
    bpe_tok = bpe_tokenizer(corpus, vocab_size=280)
    online = OnlineTeacher(
        tiny_causal_lm(bpe_tok, arch="llama", d_model=32, n_head=2, seed=2), bpe_tok
    )
    pivot_tok = bpe_tokenizer(corpus, vocab_size=300)
    dataset = datasets.Dataset.from_list(
        [{"prompt": r["prompt"], "completion": r["response"]} for r in rows]
    )
    return {
        "root": root,
        "rows": rows,
        "cache": root / "cache",
        "online": online,
        "pivot": pivot_tok,
        "dataset": dataset,
    }


def _pivot(tok):
    return tiny_causal_lm(tok, arch="llama", d_model=32, n_head=2, seed=3)


def _config(tmp_path, **extra):
    opts = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        bf16=False,  # SFTConfig's default is bf16 autocast; the comparisons below are in fp32
    )
    opts.update(extra)
    return SFTConfig(**opts)


def _trainer(setup, tmp_path, **extra):
    options = {key: extra.pop(key) for key in ("lambda_", "teachers") if key in extra}
    options.setdefault("teachers", [(setup["cache"], 0.5), (setup["online"], 0.5)])
    return FusionSFTTrainer(
        _pivot(setup["pivot"]),
        _config(tmp_path, **extra),
        k=4,
        top_k=CACHE_K,
        train_dataset=setup["dataset"],
        processing_class=setup["pivot"],
        **options,
    )


def test_trains_inside_sft_trainer_with_cached_and_online_teachers(setup, tmp_path):
    trainer = _trainer(setup, tmp_path)
    assert isinstance(trainer, SFTTrainer)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    for h in logs:
        assert all(math.isfinite(h[key]) for key in ("ce", "uld", "gld", "uld/1", "gld/0"))
        assert h["loss"] == pytest.approx(0.5 * h["ce"] + 0.5 * (h["uld"] + h["gld"]), rel=1e-6)
    assert logs[-1]["ce"] < logs[0]["ce"]


def test_loss_is_fusion_loss_on_trl_batches(setup, tmp_path):
    trainer = _trainer(setup, tmp_path)
    features = [trainer.train_dataset[i] for i in (0, 3, 7)]
    batch = trainer.data_collator(features)
    model = trainer.model.eval()
    with torch.no_grad():
        got = float(trainer.compute_loss(model, batch))
        parts = split_batch(batch, 2)
        logits = model(**parts.inputs).logits[:, :-1]
    targets = parts.labels[:, 1:]
    smask = targets != -100
    # the cached teacher's rows are the cache's rows of those examples
    cache = TeacherCache(setup["cache"])
    index = batch["index"].tolist()
    assert index == [0, 3, 7]
    for b, i in enumerate(index):
        n = len(cache[i].logprobs)
        torch.testing.assert_close(
            parts.teachers[0].logprobs[b, :n], cache[i].logprobs[:, :CACHE_K]
        )
    # the online teacher saw the same texts, without TRL's EOS text on the completion
    online = setup["online"]
    pairs = [(setup["rows"][i]["prompt"], setup["rows"][i]["response"]) for i in index]
    want = online.encode(pairs)
    assert torch.equal(batch[online_keys(1)[0]], want.input_ids)
    topk, mask = online.topk(want, CACHE_K)
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    teachers = [(parts.teachers[0], parts.masks[0]), (topk, mask)]
    uld = [fusion.uld_loss(logits, t, smask, m, top_k=CACHE_K) for t, m in teachers]
    gld = [fusion.gld_loss(logits, t, smask, m, k=4) for t, m in teachers]
    ref = 0.5 * ce + 0.5 * sum(0.5 * (u + g) for u, g in zip(uld, gld))
    assert got == pytest.approx(float(ref), rel=1e-5)


def test_cross_entropy_equals_trl_own_loss(setup, tmp_path):
    # lambda_ = 0: the fusion loss is the CE, and it is TRL's CE on the same batch
    fused = _trainer(setup, tmp_path, lambda_=0.0)
    plain = SFTTrainer(
        _pivot(setup["pivot"]),
        _config(tmp_path / "plain"),
        train_dataset=setup["dataset"],
        processing_class=setup["pivot"],
    )
    features = [fused.train_dataset[i] for i in (1, 2, 5, 8)]
    batch = fused.data_collator(features)
    trl_batch = plain.data_collator([plain.train_dataset[i] for i in (1, 2, 5, 8)])
    assert torch.equal(batch["labels"], trl_batch["labels"])
    with torch.no_grad():
        ours = fused.compute_loss(fused.model.eval(), batch)
        theirs = plain.compute_loss(plain.model.eval(), trl_batch)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_bf16_logits_reach_the_loss_in_bf16(setup, tmp_path):
    trainer = _trainer(setup, tmp_path, bf16=True, max_steps=1)
    seen = []
    real = trainer.fusion_loss.forward
    trainer.fusion_loss.forward = lambda z, *a, **kw: seen.append(z.dtype) or real(z, *a, **kw)
    trainer.train()
    assert seen == [torch.bfloat16]


def test_refusals(setup, tmp_path):
    with pytest.raises(ValueError, match="packing"):
        _trainer(setup, tmp_path, packing=True, max_length=64)
    shuffled = setup["dataset"].select([1, 0, *range(2, len(setup["dataset"]))])
    with pytest.raises(CacheError, match="data_sha256"):
        FusionSFTTrainer(
            _pivot(setup["pivot"]),
            _config(tmp_path),
            teachers=[(setup["cache"], 1.0)],
            k=4,
            train_dataset=shuffled,
            processing_class=setup["pivot"],
        )


def test_dataset_without_prompt_completion_columns_is_refused_by_name(setup, tmp_path):
    """D3: no bare KeyError('prompt'); the message names the missing and present columns."""
    text_only = datasets.Dataset.from_list(
        [{"text": r["prompt"] + r["response"]} for r in _rows(4)]
    )
    with pytest.raises(
        ValueError, match=r"lacks the column\(s\) \['prompt', 'completion'\].*'text'"
    ):
        FusionSFTTrainer(
            _pivot(setup["pivot"]),
            _config(tmp_path),
            teachers=[setup["online"]],
            train_dataset=text_only,
            processing_class=setup["pivot"],
        )
    renamed = datasets.Dataset.from_list([{"question": "a", "completion": "b"}])
    with pytest.raises(ValueError, match=r"\['prompt'\].*rename"):
        FusionSFTTrainer(
            _pivot(setup["pivot"]),
            _config(tmp_path),
            teachers=[setup["online"]],
            train_dataset=setup["dataset"],
            eval_dataset=renamed,
            processing_class=setup["pivot"],
        )
    splits = datasets.DatasetDict({"train": setup["dataset"]})
    with pytest.raises(ValueError, match="DatasetDict"):
        FusionSFTTrainer(
            _pivot(setup["pivot"]),
            _config(tmp_path),
            teachers=[setup["online"]],
            train_dataset=splits,
            processing_class=setup["pivot"],
        )


def test_on_policy_and_jsd_options_reach_the_sft_trainer(setup, tmp_path):
    """The SFT trainer takes the same fusion options (one definition) and trains on-policy."""
    trainer = _trainer(
        setup,
        tmp_path,
        teachers=[setup["online"]],
        lambda_=0.5,
        max_steps=2,
    )
    assert trainer.on_policy is None
    on = FusionSFTTrainer(
        _pivot(setup["pivot"]),
        _config(tmp_path, max_steps=2),
        teachers=[setup["online"]],
        k=4,
        top_k=CACHE_K,
        lmbda=1.0,
        generation_kwargs={"max_new_tokens": 4, "do_sample": False},
        train_dataset=setup["dataset"],
        processing_class=setup["pivot"],
    )
    on.train()
    assert on.on_policy.completed == 2
    logs = [h for h in on.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["uld"]) for h in logs)
