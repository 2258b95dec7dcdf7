"""Shared fixtures for the teacher cache tests: tiny offline teachers and JSONL data."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fusion.tiny import char_tokenizer, tiny_causal_lm

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def make_examples(n: int = 11, seed: int = 0) -> list[dict[str, str]]:
    """Arithmetic prompts with chain-of-thought-like responses of varied lengths."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        a, b = (int(x) for x in torch.randint(0, 60, (2,), generator=g))
        steps = " ".join(f"{a}+{j}={a + j}." for j in range(i % 4))
        out.append({"prompt": f"Q: {a}+{b}=", "response": f"{steps} A: {a + b}".strip()})
    # Edge cases: an empty prompt (no previous position for the first response token)
    # and an empty response (only EOS remains to be predicted).
    out.append({"prompt": "", "response": "A: 7"})
    out.append({"prompt": "Q: 1+1=", "response": ""})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def corpus_of(rows: list[dict]) -> list[str]:
    return [r["prompt"] + r["response"] for r in rows] + ["<user><assistant>"]


def reference_topk(model, full_ids: list[int], prompt_length: int, k: int, tau: float):
    """Top-(k+1) of the teacher's log-softmax at each response token, one example at a time.

    Written from the definition (the logits at position t - 1 predict token t), without
    padding, batching or any code of ``fusion.cache``.
    """
    with torch.no_grad():
        logits = model(torch.tensor([full_ids])).logits[0].float()
    rows = logits[max(prompt_length, 1) - 1 : len(full_ids) - 1]
    return torch.topk(torch.log_softmax(rows / tau, dim=-1), k + 1, dim=-1)


def assert_topk_matches(cached, ref, k: int, tol: float) -> None:
    """Cached (T, k) top-k equals the reference: values to ``tol``, ids except near-ties."""
    values, indices = ref.values, ref.indices
    assert tuple(cached.logprobs.shape) == (values.shape[0], k)
    assert tuple(cached.indices.shape) == (values.shape[0], k)
    torch.testing.assert_close(cached.logprobs.float(), values[:, :k], atol=tol, rtol=tol)
    gaps = values[:, :-1] - values[:, 1:]  # gap between rank j and j + 1
    padded = torch.cat([torch.full_like(gaps[:, :1], float("inf")), gaps], dim=1)
    near_tie = torch.minimum(padded[:, :k], padded[:, 1:]) < 1e-4
    same = cached.indices.long() == indices[:, :k]
    assert bool((same | near_tie).all()), "top-k indices differ away from near-ties"
    assert float(near_tie.float().mean()) < 0.5, "too many near-ties for the test to mean anything"


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    """Helper functions for the tests (importlib mode cannot import conftest directly)."""
    return SimpleNamespace(
        make_examples=make_examples,
        write_jsonl=write_jsonl,
        corpus_of=corpus_of,
        reference_topk=reference_topk,
        assert_topk_matches=assert_topk_matches,
        chat_template=CHAT_TEMPLATE,
    )


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """A character-level GPT-2 teacher, saved to disk too, and its data file."""
    root = tmp_path_factory.mktemp("tiny")
    rows = make_examples()
    tok = char_tokenizer(corpus_of(rows))
    model = tiny_causal_lm(tok, d_model=32, n_head=2, seed=0)
    ckpt = root / "teacher"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    return SimpleNamespace(
        rows=rows, tok=tok, model=model, ckpt=ckpt, data=write_jsonl(root / "data.jsonl", rows)
    )
