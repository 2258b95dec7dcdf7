"""Truncation from the left of the prompt, and the teacher's head run on targets only."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.cache import CacheError, Encoder, TeacherCache, build
from fusion.tiny import tiny_causal_lm


def _plain(tok, row):
    prompt = tok(row["prompt"], add_special_tokens=False)["input_ids"]
    full = tok(row["prompt"] + row["response"], add_special_tokens=False)["input_ids"]
    return full + [tok.eos_token_id], len(prompt)


def test_prompt_left_keeps_the_responses(tiny, helpers, tmp_path):
    max_length, k = 12, 3
    with pytest.warns(UserWarning, match=r"\(truncation='prompt_left'\); 0 of them lost") as w:
        manifest = build(
            tiny.model,
            tiny.tok,
            tiny.data,
            tmp_path / "c",
            k=k,
            max_length=max_length,
            truncation="prompt_left",
            progress=False,
        )
    assert "prompt_left' (--truncation" not in str(w[0].message)  # no advice to use it
    assert manifest["truncation"] == "prompt_left" and manifest["stats"]["responses_lost"] == 0
    cache = TeacherCache(tmp_path / "c")
    for i, row in enumerate(tiny.rows):
        full, p = _plain(tiny.tok, row)
        # the definition: drop prompt tokens from the left (keeping one to predict the
        # first response token, there is no BOS), then cut the end if still too long
        drop = min(max(0, len(full) - max_length), max(0, p - 1))
        ids, p = full[drop:][:max_length], p - drop
        assert cache.token_ids(i).tolist() == ids[max(p, 1) :]
        assert cache.example(i).prompt_length == p
        if len(ids) > max(p, 1):
            ref = helpers.reference_topk(tiny.model, ids, p, k, 1.0)
            helpers.assert_topk_matches(cache[i], ref, k, 1e-3)


def test_resume_refuses_another_truncation(tiny, tmp_path):
    opts = dict(k=3, max_length=12, progress=False)
    with pytest.warns(UserWarning):
        build(tiny.model, tiny.tok, tiny.data, tmp_path / "c", **opts)
    with pytest.raises(CacheError, match="truncation: cache has 'response', build has"):
        build(tiny.model, tiny.tok, tiny.data, tmp_path / "c", truncation="prompt_left", **opts)
    with pytest.raises(ValueError, match="truncation must be one of"):
        build(tiny.model, tiny.tok, tiny.data, tmp_path / "d", truncation="left", **opts)


@settings(max_examples=40, deadline=None)
@given(
    prompt=st.text("Q: 0123456789+=", max_size=20),
    response=st.text("A: 0123456789+=.", max_size=20),
    max_length=st.integers(2, 30),
    truncation=st.sampled_from(["response", "prompt_left"]),
)
def test_truncation_contract(tiny, prompt, response, max_length, truncation):
    (whole,) = Encoder(tiny.tok, max_length=None, add_eos=True).encode([(prompt, response)])
    (cut,) = Encoder(tiny.tok, max_length=max_length, add_eos=True, truncation=truncation).encode(
        [(prompt, response)]
    )
    targets = [cut.input_ids[t] for t in cut.target_positions()]
    full_targets = [whole.input_ids[t] for t in whole.target_positions()]
    assert len(cut.input_ids) <= max_length and 0 not in cut.target_positions()
    assert cut.truncated == (len(whole.input_ids) > max_length)
    assert cut.lost == len(full_targets) - len(targets) >= 0
    if truncation == "response":
        assert cut.input_ids == whole.input_ids[:max_length]
        assert targets == full_targets[: len(targets)]
    else:
        # the response keeps its start, and keeps all of it whenever one prompt token and
        # the response fit
        assert targets == full_targets[: len(targets)]
        response_and_eos = len(whole.input_ids) - whole.prompt_length
        if response_and_eos + 1 <= max_length and whole.prompt_length >= 1:
            assert targets == full_targets


def test_response_only_head_gives_the_full_head_values(helpers, tmp_path):
    rows = helpers.make_examples(9, seed=4)
    from fusion.tiny import bpe_tokenizer

    tok = bpe_tokenizer(helpers.corpus_of(rows), vocab_size=300)
    model = tiny_causal_lm(tok, arch="llama", d_model=32, n_head=2, seed=5)
    opts = dict(k=6, batch_size=3, examples_per_shard=4, progress=False)
    full = build(model, tok, rows, tmp_path / "full", **opts)
    head = build(model, tok, rows, tmp_path / "head", response_only_head=True, **opts)
    assert full == head  # the manifest does not depend on it (like batch_size)
    a, b = TeacherCache(tmp_path / "full"), TeacherCache(tmp_path / "head")
    for i in range(len(rows)):
        assert torch.equal(a.token_ids(i), b.token_ids(i))
        torch.testing.assert_close(a[i].logprobs.float(), b[i].logprobs.float(), atol=1e-3, rtol=0)
        close = (a[i].logprobs.float() - b[i].logprobs.float()).abs() < 1e-3
        assert bool(((a[i].indices == b[i].indices) | close).all())


class _Bare(torch.nn.Module):
    """A teacher that is not a Hugging Face model: no ``logits_to_keep``."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_response_only_head_needs_logits_to_keep(tiny, tmp_path):
    bare = _Bare(tiny.model)  # in training mode, wrapping a model in eval mode
    build(bare, tiny.tok, tiny.rows[:3], tmp_path / "ok", k=2, progress=False)  # full head
    with pytest.raises(CacheError, match="response_only_head: .*_Bare.*logits_to_keep"):
        build(
            bare,
            tiny.tok,
            tiny.rows[:3],
            tmp_path / "c",
            k=2,
            response_only_head=True,
            progress=False,
        )
    # each module got its own mode back (the shared fixture model stays in eval mode)
    assert bare.training and not tiny.model.training
