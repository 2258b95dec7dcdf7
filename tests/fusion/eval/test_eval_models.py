"""HFModel with tiny randomly initialised models saved to disk and loaded back."""

from __future__ import annotations

import string

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fusion.eval import HFModel, evaluate, generate_task  # noqa: E402
from fusion.tiny import char_tokenizer, tiny_causal_lm  # noqa: E402

CORPUS = [string.printable]
PROMPTS = [
    "Q: A coin is heads up. Is it?\nA: Let's think step by step.",
    "Q: ((1 + 2) * 3) =\nA:",
    "x",
    'Q: Take the last letters of each words in "Amy Bob" and concatenate them.\nA:',
    "Q: short\nA:",
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Directories holding a tiny GPT-2 and a tiny Llama with a character tokenizer."""
    tok = char_tokenizer(CORPUS)
    dirs = {}
    for arch in ("gpt2", "llama"):
        path = tmp_path_factory.mktemp(arch)
        tiny_causal_lm(
            tok, arch=arch, d_model=32, n_head=2, max_positions=1024, seed=1
        ).save_pretrained(path)
        tok.save_pretrained(path)
        dirs[arch] = path
    return dirs


@pytest.fixture(scope="module")
def gpt2(saved):
    return HFModel(saved["gpt2"], device="cpu", batch_size=2)


def manual_greedy(model, tokenizer, prompt: str, steps: int) -> str:
    """Greedy decoding written out with plain forward passes (no `generate`)."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(input_ids=ids).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokenizer.decode(new, skip_special_tokens=True)


def test_loaded_model_matches_hand_written_greedy_decoding(gpt2):
    for prompt in PROMPTS[:3]:
        expected = manual_greedy(gpt2.model, gpt2.tokenizer, prompt, 6)
        assert gpt2(prompt, max_new_tokens=6) == expected


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_batched_equals_unbatched(saved, arch):
    model = HFModel(saved[arch], batch_size=3)
    batched = model.generate_batch(PROMPTS, max_new_tokens=8)
    single = [model(p, max_new_tokens=8) for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) > 1  # the prompts really produce different text
    # One character per token with this tokenizer, and special tokens are dropped.
    assert all(len(text) <= 8 for text in batched)
    assert model.generate_batch(PROMPTS, max_new_tokens=8) == batched  # deterministic


def test_model_object_and_tokenizer_object(saved, gpt2):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(saved["gpt2"])
    wrapped = HFModel(model, gpt2.tokenizer)
    assert wrapped.generate_batch(PROMPTS[:2], max_new_tokens=4) == gpt2.generate_batch(
        PROMPTS[:2], max_new_tokens=4
    )
    with pytest.raises(ValueError, match="tokenizer is required"):
        HFModel(model)


def test_tokenizer_without_pad_token_is_copied_not_mutated(saved, gpt2):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(saved["gpt2"])
    tok.pad_token = None
    model = HFModel(gpt2.model, tok)
    assert tok.pad_token is None
    assert model.tokenizer.pad_token == tok.eos_token
    assert len(model.generate_batch(PROMPTS[:3], max_new_tokens=3)) == 3


def test_bad_arguments(saved, gpt2):
    with pytest.raises(ValueError, match="max_new_tokens"):
        gpt2.generate_batch(PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        HFModel(gpt2.model, gpt2.tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="context length of 1024"):
        gpt2.generate_batch(["a" * 1020], max_new_tokens=8)
    with pytest.raises(OSError):
        HFModel(saved["gpt2"] / "missing")


def test_evaluate_with_hf_model_records_the_real_generations(gpt2):
    items = generate_task("coin_flip", 3, seed=2)
    result = evaluate(
        gpt2,
        items,
        task="coin_flip",
        max_new_tokens_reasoning=5,
        max_new_tokens_answer=3,
        batch_size=2,
        progress=False,
    )
    assert result.n == 3
    for record in result.records:
        assert record.reasoning == gpt2(record.prompt, max_new_tokens=5)
        assert record.answer_prompt == (
            record.prompt + record.reasoning + " \nTherefore, the answer (Yes or No) is"
        )
        assert record.answer_text == gpt2(record.answer_prompt, max_new_tokens=3)
    assert 0.0 <= result.accuracy <= 1.0


def test_evaluate_gives_the_same_records_at_every_batch_size(saved):
    """The default batch (many prompts per call, sorted by length) scores exactly what one
    prompt at a time scores, both stages of Zero-shot-CoT included."""
    items = generate_task("coin_flip", 5, seed=3)
    records = {}
    for batch in (1, 2, 64):
        model = HFModel(saved["llama"], batch_size=batch)
        result = evaluate(
            model,
            items,
            task="coin_flip",
            method="zero_shot_cot",
            max_new_tokens_reasoning=6,
            max_new_tokens_answer=4,
            batch_size=batch,
            progress=False,
        )
        records[batch] = [r.to_dict() for r in result.records]
    assert records[1] == records[2] == records[64]
    # prompts of different lengths in one batch: the left padding is exercised
    assert len({len(r["answer_prompt"]) for r in records[1]}) > 1


@pytest.mark.slow
@pytest.mark.parametrize("chat_template", [False, True])
def test_real_model_batched_equals_unbatched(chat_template):
    """SmolLM2-135M-Instruct: a batch of real prompts decodes as each prompt alone."""
    from fusion.eval import prompts as P
    from fusion.models import smollm2_gguf

    try:
        gguf = smollm2_gguf()
    except FileNotFoundError as err:  # visible in the report, never silent
        pytest.skip(f"real model not installed: {err}")
    model = HFModel(None, gguf_file=gguf, device="cpu", batch_size=4, chat_template=chat_template)
    items = generate_task("coin_flip", 2, seed=0) + generate_task("last_letters", 2, seed=0)
    prompts = [P.cot_stage1_prompt(items[0]["question"], P.DEFAULT_COT_TRIGGER)] + [
        P.zero_shot_prompt(it["question"], it["task"], None) for it in items[1:]
    ]
    assert len(set(model.count_tokens(prompts))) > 1  # different lengths: padding is exercised
    batched = model.generate_batch(prompts, max_new_tokens=12)
    single = [model.generate_batch([p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single
    assert all(text.strip() for text in batched)
