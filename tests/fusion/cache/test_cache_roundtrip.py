"""A cache read back equals the teacher's own top-k, computed one example at a time."""

from __future__ import annotations

import pickle

import pytest
import torch

from fusion.cache import TeacherCache, build, collate, estimate_bytes
from fusion.cache.__main__ import main
from fusion.tiny import bpe_tokenizer, char_tokenizer, tiny_causal_lm
from fusion.types import TopK


def _plain_reference(tok, row):
    """Full ids and prompt length for plain concatenation, from the tokenizer alone."""
    prompt = tok(row["prompt"], add_special_tokens=False)["input_ids"]
    full = tok(row["prompt"] + row["response"], add_special_tokens=False)["input_ids"]
    assert full[: len(prompt)] == prompt, "fixture data must not hit the boundary fix-up"
    return full + [tok.eos_token_id], len(prompt)


def test_cache_roundtrip_char_gpt2(tiny, helpers, tmp_path, capsys):
    k, tau = 5, 1.0
    manifest = build(
        tiny.model, tiny.tok, tiny.data, tmp_path / "c", k=k, batch_size=3, examples_per_shard=4
    )
    cache = TeacherCache(tmp_path / "c", verify="full")
    assert len(cache) == len(tiny.rows) == manifest["num_examples"]
    assert manifest["num_shards"] == 4 and len(manifest["shards"]) == 4
    for i, row in enumerate(tiny.rows):
        full, p = _plain_reference(tiny.tok, row)
        ref = helpers.reference_topk(tiny.model, full, p, k, tau)
        ex = cache.example(i)
        assert ex.topk.logprobs.dtype == torch.float16 and ex.topk.indices.dtype == torch.int32
        helpers.assert_topk_matches(cache[i], ref, k, tol=1e-3)
        assert ex.token_ids.tolist() == full[max(p, 1) :]
        assert ex.prompt_length == p
        assert torch.equal(cache.token_ids(i), ex.token_ids)
    # The empty prompt loses its first response token (nothing predicts position 0);
    # the empty response keeps only EOS.
    assert cache.token_ids(len(tiny.rows) - 1).tolist() == [tiny.tok.eos_token_id]
    assert isinstance(cache[0], TopK)
    assert torch.equal(cache[-1].logprobs, cache[len(cache) - 1].logprobs)

    # The printed estimate counts the tensor bytes; files add a small header per shard.
    err = capsys.readouterr().err
    assert f"{manifest['num_tokens']} response tokens" in err
    on_disk = sum(s["bytes"] for s in manifest["shards"])
    tensor_bytes = manifest["num_tokens"] * (k * (2 + 4) + 4) + len(cache) * (12 + 32)
    assert estimate_bytes(manifest["num_tokens"], len(cache), k) == tensor_bytes
    assert tensor_bytes <= on_disk <= tensor_bytes + 1024 * len(manifest["shards"])


def test_cache_roundtrip_bpe_llama_bf16_temperature(helpers, tmp_path):
    rows = helpers.make_examples(9, seed=1)
    tok = bpe_tokenizer(helpers.corpus_of(rows), vocab_size=300)
    model = tiny_causal_lm(tok, arch="llama", d_model=32, n_head=2, seed=3)
    k, tau = 7, 2.0
    build(
        model,
        tok,
        rows,
        tmp_path / "c",
        k=k,
        temperature=tau,
        dtype="bf16",
        batch_size=4,
        examples_per_shard=5,
        progress=False,
    )
    cache = TeacherCache(tmp_path / "c")
    assert cache.manifest["logprobs_dtype"] == "bfloat16" and cache.temperature == tau
    for i, row in enumerate(rows):
        full, p = _plain_reference(tok, row)
        ref = helpers.reference_topk(model, full, p, k, tau)
        assert cache[i].logprobs.dtype == torch.bfloat16
        helpers.assert_topk_matches(cache[i], ref, k, tol=1e-2)


def test_cache_batch_composition_does_not_matter(tiny, tmp_path):
    build(tiny.model, tiny.tok, tiny.data, tmp_path / "a", k=4, batch_size=1, progress=False)
    build(tiny.model, tiny.tok, tiny.data, tmp_path / "b", k=4, batch_size=13, progress=False)
    a, b = TeacherCache(tmp_path / "a"), TeacherCache(tmp_path / "b")
    for i in range(len(a)):
        torch.testing.assert_close(a[i].logprobs.float(), b[i].logprobs.float(), atol=1e-3, rtol=0)


def test_cache_chat_template_boundary(helpers, tmp_path):
    rows = helpers.make_examples(5)
    tok = char_tokenizer(helpers.corpus_of(rows))
    tok.chat_template = helpers.chat_template
    model = tiny_causal_lm(tok, d_model=32, n_head=2, seed=1)
    k = 4
    manifest = build(model, tok, rows, tmp_path / "c", k=k, progress=False)
    assert manifest["template"] == "chat" and manifest["chat_template_sha256"]
    cache = TeacherCache(tmp_path / "c")
    for i, row in enumerate(rows):
        prompt_text = f"<user>{row['prompt']}</s><assistant>"
        full_text = prompt_text + f"{row['response']}</s>"
        full = tok(full_text, add_special_tokens=False)["input_ids"]
        p = len(tok(prompt_text, add_special_tokens=False)["input_ids"])
        ex = cache.example(i)
        # The template's end of turn belongs to the response: the teacher's stop signal.
        assert tok.decode(ex.token_ids.tolist()) == row["response"] + "</s>"
        assert ex.prompt_length == p
        helpers.assert_topk_matches(
            ex.topk, helpers.reference_topk(model, full, p, k, 1.0), k, 1e-3
        )


def _merging_tokenizer():
    # Trained so that "xyz" is one token: prompt "x" + response "yzw" merges across the boundary.
    return bpe_tokenizer(["xyz"] * 50 + ["w"], vocab_size=262)


def test_cache_boundary_mismatch_split(tmp_path):
    tok = _merging_tokenizer()
    rows = [{"prompt": "x", "response": "yzw"}, {"prompt": "w", "response": "xyz"}]
    prompt_ids = tok("x", add_special_tokens=False)["input_ids"]
    full_ids = tok("xyzw", add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] != prompt_ids, "precondition: a merge crosses the boundary"
    model = tiny_causal_lm(tok, d_model=32, n_head=2)
    manifest = build(model, tok, rows, tmp_path / "c", k=3, progress=False)
    assert manifest["stats"]["boundary_fixups"] == 1
    cache = TeacherCache(tmp_path / "c")
    for i, row in enumerate(rows):
        ids = cache.token_ids(i).tolist()
        assert ids[-1] == tok.eos_token_id
        assert tok.decode(ids[:-1]) == row["response"]
        assert cache.example(i).prompt_length == len(tok(row["prompt"])["input_ids"])


def test_cache_boundary_mismatch_error(tmp_path):
    tok = _merging_tokenizer()
    model = tiny_causal_lm(tok, d_model=32, n_head=2)
    rows = [{"prompt": "w", "response": "xyz"}, {"prompt": "x", "response": "yzw"}]
    with pytest.raises(ValueError, match="example 1"):
        build(model, tok, rows, tmp_path / "c", k=3, on_mismatch="error", progress=False)


def test_cache_max_length_truncates_response(tiny, tmp_path):
    with pytest.warns(UserWarning) as caught:
        manifest = build(
            tiny.model, tiny.tok, tiny.data, tmp_path / "c", k=3, max_length=9, progress=False
        )
    cache = TeacherCache(tmp_path / "c")
    cut = lost = 0
    for i, row in enumerate(tiny.rows):
        full, p = _plain_reference(tiny.tok, row)
        assert len(cache.token_ids(i)) == max(0, min(len(full), 9) - max(p, 1))
        cut += len(full) > 9
        lost += len(full) > 9 and len(cache.token_ids(i)) == 0
    assert manifest["stats"]["truncated_examples"] == cut > 0
    assert manifest["stats"]["responses_lost"] == lost > 0
    assert 0 in cache.lengths()  # prompts of 9+ characters leave no response at all
    # one warning, with both counts, naming the alternative
    (warning,) = [w for w in caught if "max_length=9" in str(w.message)]
    assert f"cut {cut} of {len(tiny.rows)} examples" in str(warning.message)
    assert f"{lost} of them lost every response token" in str(warning.message)
    assert "prompt_left" in str(warning.message)
    batch = collate([cache.example(i) for i in range(len(cache))])
    assert batch.mask.sum().item() == manifest["num_tokens"]


def test_cache_collate_pads_and_masks(tiny, tmp_path):
    build(tiny.model, tiny.tok, tiny.data, tmp_path / "c", k=4, progress=False)
    cache = TeacherCache(tmp_path / "c")
    items = [cache.example(i) for i in (0, 3, 12)]
    lengths = [len(cache.token_ids(i)) for i in (0, 3, 12)]
    out = collate(items, pad_to=max(lengths) + 2)
    assert out.topk.logprobs.shape == (3, max(lengths) + 2, 4)
    assert out.topk.indices.dtype == torch.long and out.token_ids.dtype == torch.long
    assert out.mask.sum(1).tolist() == lengths
    for b, (item, n) in enumerate(zip(items, lengths)):
        assert torch.equal(out.topk.logprobs[b, :n], item.topk.logprobs)
        assert torch.equal(out.topk.indices[b, :n], item.topk.indices.long())
        assert torch.equal(out.token_ids[b, :n], item.token_ids.long())
        assert bool((out.topk.logprobs[b, n:] == 0).all()) and bool(
            (out.topk.indices[b, n:] == 0).all()
        )
    plain = collate([cache[0], cache[3]])
    assert plain.token_ids is None and plain.topk.logprobs.shape[1] == max(lengths[:2])
    with pytest.raises(ValueError, match="shorter"):
        collate(items, pad_to=1)
    with pytest.raises(ValueError, match="different k"):
        collate([cache[0], TopK(cache[1].logprobs[:, :2], cache[1].indices[:, :2])])
    with pytest.raises(ValueError):
        collate([])


def test_cache_pickles_for_dataloader_workers(tiny, tmp_path):
    build(tiny.model, tiny.tok, tiny.data, tmp_path / "c", k=2, progress=False)
    cache = TeacherCache(tmp_path / "c")
    first = cache[4]
    clone = pickle.loads(pickle.dumps(cache))
    assert torch.equal(clone[4].indices, first.indices)
    with pytest.raises(IndexError):
        cache[len(cache)]
    with pytest.raises(TypeError):
        cache["0"]


def test_cache_cli_build_from_path_matches_model_object(tiny, tmp_path, capsys):
    args = ["--data", str(tiny.data), "--k", "5", "--batch-size", "3", "--examples-per-shard", "4"]
    cli_args = ["build", "--teacher", str(tiny.ckpt), "--out", str(tmp_path / "cli"), "--quiet"]
    assert main([*cli_args, "--device", "cpu", *args]) == 0
    build(
        tiny.model,
        tiny.tok,
        tiny.data,
        tmp_path / "obj",
        k=5,
        batch_size=3,
        examples_per_shard=4,
        progress=False,
    )
    cli, obj = TeacherCache(tmp_path / "cli"), TeacherCache(tmp_path / "obj")
    assert cli.manifest["teacher"] == str(tiny.ckpt)
    same = ("teacher_fingerprint", "tokenizer_sha256", "inputs_sha256", "data_sha256")
    assert all(cli.manifest[key] == obj.manifest[key] for key in same)
    for s in obj.manifest["shards"]:
        assert (tmp_path / "cli" / s["file"]).read_bytes() == (
            tmp_path / "obj" / s["file"]
        ).read_bytes()
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {tmp_path / 'cli'}: 13 examples")
