"""Format 3: the compact encoding (dtype="q8"), and format-2 caches still read."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.cache import CacheError, TeacherCache, build, collate
from fusion.cache._compact import FLOOR_NATS, LEVELS, decode_rows, encode_rows, index_dtype
from fusion.tiny import bpe_tokenizer, tiny_causal_lm

DATA = Path(__file__).parent / "data"


def _v2_maker():
    spec = importlib.util.spec_from_file_location("make_v2_cache", DATA / "make_v2_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bound(values: np.ndarray) -> np.ndarray:
    """Per row, the promised largest error: (hi - max(lo, hi - 80)) / 510, plus float32 slack."""
    hi, lo = values[:, 0], np.maximum(values[:, -1], values[:, 0] - FLOOR_NATS)
    return (hi - lo) / (2 * LEVELS) + 1e-5 * (1 + np.abs(values[:, -1]))


# ----------------------------------------------------------------------- the codec


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(0, 6),
    k=st.integers(1, 40),
    vocab=st.sampled_from((40, 255, 256, 257, 49_152, 65_536, 70_000)),
    spread=st.floats(0.0, 200.0),
    seed=st.integers(0, 2**31),
)
def test_codec_keeps_ids_exactly_and_values_within_the_stated_bound(rows, k, vocab, spread, seed):
    rng = np.random.default_rng(seed)
    k = min(k, vocab)
    values = -np.sort(rng.random((rows, k)) * spread, axis=1).astype(np.float32)
    values -= rng.random((rows, 1)).astype(np.float32) * 3
    ids = np.array([rng.choice(vocab, size=k, replace=False) for _ in range(rows)], dtype=np.int64)
    ids = ids.reshape(rows, k)
    got_values, got_ids = decode_rows(encode_rows(values, ids, vocab), rows, k, vocab)
    got_values, got_ids = got_values.numpy(), got_ids.numpy()
    assert got_values.shape == got_ids.shape == (rows, k)
    assert np.all(got_values[:, 1:] <= got_values[:, :-1])  # still sorted, decreasing
    bound = _bound(values) if rows else np.zeros(0)
    for r in range(rows):
        exact = dict(zip(ids[r].tolist(), values[r].tolist()))
        assert sorted(got_ids[r].tolist()) == sorted(exact)  # the same ids, exactly
        errors = [abs(exact[i] - v) for i, v in zip(got_ids[r].tolist(), got_values[r].tolist())]
        floor = values[r, 0] - FLOOR_NATS  # entries below the floor are raised to it
        allowed = [
            bound[r] if exact[i] >= floor else floor - exact[i] + bound[r]
            for i in got_ids[r].tolist()
        ]
        assert all(e <= a for e, a in zip(errors, allowed))
        assert got_values[r, 0] == values[r, 0]  # the largest is exact (float32)


def test_index_dtype_is_the_narrowest_unsigned_type():
    assert index_dtype(256) == np.uint8 and index_dtype(257) == np.uint16
    assert index_dtype(49_152) == np.uint16 and index_dtype(65_536) == np.uint16
    assert index_dtype(65_537) == np.uint32


def test_a_damaged_blob_is_refused():
    blob = encode_rows(np.zeros((2, 3), np.float32) - 1, np.array([[1, 2, 3], [4, 5, 6]]), 10)
    with pytest.raises(ValueError, match="undecodable"):
        decode_rows(blob[:-3], 2, 3, 10)
    with pytest.raises(ValueError, match="expected"):
        decode_rows(blob, 3, 3, 10)


# --------------------------------------------------------------------- the caches


@pytest.fixture(scope="module")
def teacher():
    maker = _v2_maker()
    model, tok = maker.teacher()
    return maker, model, tok


def test_format_2_cache_written_by_the_old_code_is_still_read(teacher, tmp_path):
    """The committed format-2 cache reads, verifies and equals today's dense build byte for byte."""
    maker, model, tok = teacher
    old = TeacherCache(DATA / "v2_cache", verify="full")
    assert old.manifest["format_version"] == 2 and old.manifest["encoding"] == "dense"
    build(model, tok, maker.ROWS, tmp_path / "new", k=4, examples_per_shard=3, progress=False)
    new = TeacherCache(tmp_path / "new", verify="full")
    assert new.manifest["format_version"] == 3
    assert len(old) == len(new) == len(maker.ROWS)
    for i in range(len(old)):
        a, b = old.example(i), new.example(i)
        assert torch.equal(a.topk.logprobs, b.topk.logprobs)
        assert torch.equal(a.topk.indices, b.topk.indices)
        assert torch.equal(a.token_ids, b.token_ids) and a.prompt_length == b.prompt_length
    assert np.array_equal(old.example_hashes(), new.example_hashes())
    assert collate([old[i] for i in range(len(old))]).mask.sum() == sum(old.lengths())


def test_format_2_partial_build_is_not_resumed_by_new_code(teacher, tmp_path):
    maker, model, tok = teacher
    partial = shutil.copytree(DATA / "v2_cache", tmp_path / "partial")
    manifest = json.loads((partial / "manifest.json").read_text())
    manifest["complete"], manifest["shards"] = False, manifest["shards"][:1]
    (partial / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="format_version: cache has 2, build has 3"):
        build(model, tok, maker.ROWS, partial, k=4, examples_per_shard=3, progress=False)


def test_compact_cache_is_the_exact_topk_within_the_bound(helpers, tmp_path):
    """Against top-k computed from the definition (fp32), example by example."""
    rows = helpers.make_examples(9)
    tok = bpe_tokenizer(helpers.corpus_of(rows), vocab_size=300)  # > 256 ids: uint16
    model = tiny_causal_lm(tok, arch="llama", d_model=32, n_head=2, seed=5)
    k = 24
    build(model, tok, rows, tmp_path / "q8", k=k, dtype="q8", examples_per_shard=4, progress=False)
    cache = TeacherCache(tmp_path / "q8", verify="full")
    m = cache.manifest
    assert (m["encoding"], m["indices_dtype"], m["logprobs_dtype"]) == (
        "compact",
        "uint16",
        "float32",
    )
    for i, row in enumerate(rows):
        if not row["prompt"]:  # no position predicts the first token: not a target
            continue
        prompt = tok(row["prompt"], add_special_tokens=False)["input_ids"]
        ex = cache.example(i)
        assert ex.prompt_length == len(prompt)
        full = prompt + ex.token_ids.tolist()  # the cache's own targets (response and EOS)
        ref = helpers.reference_topk(model, full, len(prompt), k, 1.0)
        values, ids = ref.values[:, :k].numpy(), ref.indices[:, :k].numpy()
        got_values, got_ids = ex.topk.logprobs.numpy(), ex.topk.indices.numpy()
        assert got_values.dtype == np.float32 and got_ids.dtype == np.int32
        bound = _bound(values)
        for r in range(values.shape[0]):
            exact = dict(zip(ids[r].tolist(), values[r].tolist()))
            # ids equal the exact top-k except where rank k and k+1 nearly tie
            near_tie = float(ref.values[r, k - 1] - ref.values[r, k]) < 1e-4
            if not near_tie:
                assert sorted(got_ids[r].tolist()) == sorted(exact)
            for j, v in zip(got_ids[r].tolist(), got_values[r].tolist()):
                if j in exact:
                    assert abs(exact[j] - v) <= bound[r] + 1e-5
            assert abs(got_values[r, 0] - values[r, 0]) <= 1e-5


def test_compact_builds_are_byte_identical_and_smaller(helpers, tmp_path):
    rows = helpers.make_examples(7)
    tok = bpe_tokenizer(helpers.corpus_of(rows), vocab_size=300)
    model = tiny_causal_lm(tok, arch="llama", d_model=32, n_head=2, seed=6)
    opts = {"k": 64, "examples_per_shard": 3, "progress": False}
    for name in ("a", "b"):
        build(model, tok, rows, tmp_path / name, dtype="q8", **opts)
    build(model, tok, rows, tmp_path / "fp16", **opts)
    for shard in sorted((tmp_path / "a").glob("shard-*")):
        assert shard.read_bytes() == (tmp_path / "b" / shard.name).read_bytes()
    size = {n: sum(p.stat().st_size for p in (tmp_path / n).glob("shard-*")) for n in ("a", "fp16")}
    assert size["a"] < size["fp16"] / 2


def test_damaged_compact_rows_are_named_when_hashing_is_off(teacher, tmp_path):
    maker, model, tok = teacher
    build(model, tok, maker.ROWS, tmp_path / "q8", k=4, dtype="q8", progress=False)
    shard = tmp_path / "q8" / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-40] ^= 0xFF  # inside the payload, near its end
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="sha256"):
        TeacherCache(tmp_path / "q8", verify="full")
    cache = TeacherCache(tmp_path / "q8", verify="none")
    with pytest.raises(CacheError, match="example"):
        for i in range(len(cache)):
            cache[i]
