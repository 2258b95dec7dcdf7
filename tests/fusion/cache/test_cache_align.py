"""Per-row content hashes: stored by the build, checked against the training items."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.cache import (
    CacheError,
    TeacherCache,
    build,
    check_alignment,
    data_sha256,
    example_sha256,
    read_manifest,
)
from fusion.cache.__main__ import main

text = st.text(max_size=12)
pairs = st.tuples(text, text)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": text}
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(pair=pairs, extra=st.dictionaries(st.sampled_from(["index", "id", "score"]), st.integers()))
def test_example_hash_ignores_extra_fields_and_formatting(pair, extra):
    row = {"response": pair[1], **extra, "prompt": pair[0]}
    reformatted = json.loads(json.dumps(row, indent=3, ensure_ascii=True))
    assert example_sha256(row) == example_sha256(pair) == example_sha256(reformatted)


@settings(max_examples=60, deadline=None)
@given(a=st.one_of(pairs, messages), b=st.one_of(pairs, messages))
def test_example_hash_tells_contents_apart(a, b):
    def row(x):
        return {"messages": x} if isinstance(x, list) else {"prompt": x[0], "response": x[1]}

    same = row(a) == row(b)
    assert (example_sha256(row(a)) == example_sha256(row(b))) == same


def test_example_hash_is_the_documented_payload():
    payload = b'{"prompt":"Q: \xc3\xa9","response":"A"}'
    assert example_sha256(("Q: é", "A")) == hashlib.sha256(payload).hexdigest()
    convo = {"messages": [{"role": "user", "content": "hi"}]}
    expected = hashlib.sha256(b'{"messages":[{"content":"hi","role":"user"}]}').hexdigest()
    assert example_sha256(convo) == expected


@pytest.fixture(scope="module")
def cache(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("align") / "cache"
    build(tiny.model, tiny.tok, tiny.data, out, k=3, examples_per_shard=4, progress=False)
    return TeacherCache(out)


def test_cache_rows_carry_their_example_hash(tiny, cache):
    assert [cache.example_sha256(i) for i in range(len(cache))] == [
        example_sha256(r) for r in tiny.rows
    ]
    assert cache.example_hashes().shape == (len(tiny.rows), 32)
    assert cache.manifest["data_sha256"] == data_sha256(tiny.rows)
    flat = b"".join(bytes.fromhex(example_sha256(r)) for r in tiny.rows)
    assert cache.manifest["data_sha256"] == hashlib.sha256(flat).hexdigest()


class Items(torch.utils.data.Dataset):
    """A custom dataset of indexed items, as a user would write one."""

    def __init__(self, rows, indices):
        self.rows, self.indices = rows, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = self.indices[i]
        return {**self.rows[j % len(self.rows)], "index": j}


def test_aligned_data_passes(tiny, cache):
    check_alignment(tiny.data, [cache])  # the file itself
    check_alignment(tiny.rows, [cache, cache.path])  # rows in memory; caches by path
    check_alignment(Items(tiny.rows, [5, 0, 7]), [cache])  # indexed subset, any order


def test_wrong_index_names_the_first_bad_item(tiny, cache):
    items = Items(tiny.rows[1:] + tiny.rows[:1], [0, 1, 2, 3])  # item i holds example i + 1
    with pytest.raises(CacheError) as info:
        check_alignment(items, [cache])
    message = str(info.value)
    assert "teacher 0" in message and str(cache.path) in message
    assert "training item 0 (index 0) is not the cache's row 0" in message
    assert "its text is the cache's row 1" in message  # the hint for shifted indices


def test_other_text_is_found_nowhere(tiny, cache):
    rows = [dict(r) for r in tiny.rows]
    rows[6]["response"] += " (edited)"
    with pytest.raises(CacheError, match="data_sha256 differs.*item 6 .*in no row of the cache"):
        check_alignment(rows, [cache])


def test_positional_data_must_have_every_row(tiny, cache):
    with pytest.raises(CacheError, match="holds 13 examples, the training data 12"):
        check_alignment(tiny.rows[:-1], [cache])


def test_items_without_index_are_refused_up_front(tiny, cache):
    class NoIndex(Items):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            if i == 2:
                del item["index"]
            return item

    with pytest.raises(ValueError, match="training item 2 has no 'index'"):
        check_alignment(NoIndex(tiny.rows, [0, 1, 2]), [cache])
    with pytest.raises(CacheError, match="index 40, but the cache holds 13"):
        check_alignment(Items(tiny.rows, [0, 40]), [cache])


def test_items_without_text_or_iterable_datasets_are_refused(cache):
    class Tokenised(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"index": i, "input_ids": [1, 2]}

    with pytest.raises(ValueError, match="training item 0 carries no example text"):
        check_alignment(Tokenised(), [cache])

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield {"index": 0, "prompt": "a", "response": "b"}

    with pytest.raises(ValueError, match="iterable dataset"):
        check_alignment(Stream(), [cache])


def test_version_1_caches_are_refused_clearly(cache, tmp_path, capsys):
    import shutil

    old = shutil.copytree(cache.path, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="format version 1 predates.*rebuild"):
        read_manifest(old)
    assert main(["verify", str(old)]) == 2
    assert "--overwrite" in capsys.readouterr().err
