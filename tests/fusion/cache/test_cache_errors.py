"""Damaged, mismatched or malformed caches and bad inputs fail with clear errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from fusion.cache import CacheError, TeacherCache, build, tokenizer_sha256
from fusion.cache.__main__ import main
from fusion.tiny import char_tokenizer

SHARD1 = "shard-00001.safetensors"


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "cache"
    build(tiny.model, tiny.tok, tiny.data, out, k=4, examples_per_shard=5, progress=False)
    return out


@pytest.fixture
def cache_dir(built, tmp_path):
    """A fresh copy of a good cache that a test may damage."""
    return shutil.copytree(built, tmp_path / "cache")


def _flip(path, position):
    blob = bytearray(path.read_bytes())
    blob[position] ^= 0xFF
    path.write_bytes(bytes(blob))


def _edit_manifest(cache_dir, edit):
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    edit(manifest)
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))


def test_cache_corrupt_shard_lazy_full_and_none(cache_dir):
    _flip(cache_dir / SHARD1, -5)  # in the tensor data: the header still parses
    lazy = TeacherCache(cache_dir)  # lazy: nothing hashed yet
    assert lazy[0].logprobs.shape[1] == 4  # shard 0 is intact
    with pytest.raises(CacheError, match=f"{SHARD1}.*corrupt"):
        lazy[5]
    with pytest.raises(CacheError, match=f"{SHARD1}.*corrupt"):
        TeacherCache(cache_dir, verify="full")
    # verify="none" trades the check for speed: it reads the (damaged) bytes.
    TeacherCache(cache_dir, verify="none")[5]


def test_cache_corrupt_header_is_unreadable_even_without_hashing(cache_dir):
    _flip(cache_dir / SHARD1, 12)  # inside the JSON header
    with pytest.raises(CacheError, match=SHARD1):
        TeacherCache(cache_dir, verify="none")[5]


def test_cache_truncated_and_missing_shards(cache_dir):
    data = (cache_dir / SHARD1).read_bytes()
    (cache_dir / SHARD1).write_bytes(data[: len(data) // 2])
    for mode in ("none", "lazy", "full"):
        with pytest.raises(CacheError, match=f"{SHARD1}.*truncated"):
            TeacherCache(cache_dir, verify=mode)
    (cache_dir / SHARD1).unlink()
    with pytest.raises(CacheError, match=f"{SHARD1}.*missing"):
        TeacherCache(cache_dir)


def test_cache_shard_swapped_for_another_valid_shard(cache_dir):
    # Right size, valid safetensors, wrong content: only the hash can tell.
    (cache_dir / "shard-00002.safetensors").unlink()
    shutil.copy(cache_dir / "shard-00000.safetensors", cache_dir / "shard-00002.safetensors")
    _edit_manifest(cache_dir, lambda m: m["shards"][2].update(bytes=m["shards"][0]["bytes"]))
    with pytest.raises(CacheError, match="shard-00002.safetensors.*corrupt"):
        TeacherCache(cache_dir, verify="full")
    # Even with a manifest edited to bless it, its contents do not fit shard 2's entry:
    # a full verification reads them, a lazy reader finds out at the first read.
    _edit_manifest(cache_dir, lambda m: m["shards"][2].update(sha256=m["shards"][0]["sha256"]))
    with pytest.raises(CacheError, match="shard-00002.safetensors.*do not match"):
        TeacherCache(cache_dir, verify="full")
    cache = TeacherCache(cache_dir)
    with pytest.raises(CacheError, match="shard-00002.safetensors.*do not match"):
        cache[len(cache) - 1]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("k"), "missing field.*k"),
        (lambda m: m.update(format_version=99), "newer"),
        (lambda m: m.update(format="something.else"), "format"),
        (lambda m: m.update(vocab_size="13"), "vocab_size"),
        (lambda m: m["shards"][1].pop("sha256"), r"shards\[1\].*sha256"),
        (lambda m: m["shards"][1].update(first_example=3), SHARD1),
        (lambda m: m.update(complete=False), "incomplete"),
    ],
)
def test_cache_malformed_manifest(cache_dir, edit, message):
    _edit_manifest(cache_dir, edit)
    with pytest.raises(CacheError, match=message):
        TeacherCache(cache_dir)


def test_cache_missing_or_garbled_manifest(cache_dir):
    (cache_dir / "manifest.json").write_text("{not json")
    with pytest.raises(CacheError, match="not valid JSON"):
        TeacherCache(cache_dir)
    (cache_dir / "manifest.json").unlink()
    with pytest.raises(CacheError, match="no manifest"):
        TeacherCache(cache_dir)


def test_cache_expect(tiny, helpers, built):
    good = {"tokenizer_sha256": tokenizer_sha256(tiny.tok), "k": 4, "vocab_size": len(tiny.tok)}
    assert len(TeacherCache(built, expect=good)) == len(tiny.rows)
    other = char_tokenizer(helpers.corpus_of(tiny.rows) + ["~"])
    with pytest.raises(CacheError, match="tokenizer_sha256"):
        TeacherCache(built, expect={"tokenizer_sha256": tokenizer_sha256(other)})
    with pytest.raises(CacheError, match="k: cache has 4, expected 10"):
        TeacherCache(built, expect={"k": 10})
    with pytest.raises(ValueError, match="unknown"):
        TeacherCache(built, expect={"colour": "blue"})
    with pytest.raises(ValueError, match="verify"):
        TeacherCache(built, verify="sometimes")


def test_cache_tokenizer_hash_identifies_the_vocabulary(tiny, helpers):
    same = char_tokenizer(helpers.corpus_of(tiny.rows))
    assert tokenizer_sha256(same) == tokenizer_sha256(tiny.tok)
    assert tokenizer_sha256(char_tokenizer(["abc"])) != tokenizer_sha256(char_tokenizer(["abd"]))


def test_cache_cli_verify_reports_the_bad_shard(cache_dir):
    _flip(cache_dir / SHARD1, -5)
    proc = subprocess.run(
        [sys.executable, "-m", "fusion.cache", "verify", str(cache_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout.startswith("corrupt: ") and SHARD1 in proc.stdout
    assert proc.stdout.count("\n") == 1 and proc.stderr == ""


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda m: m.update(k=5), r"logprobs is F16 \[\d+, 4\], expected float16 \[\d+, 5\]"),
        (lambda m: m.update(k=3), r"indices is I32 \[\d+, 4\], expected int32 \[\d+, 3\]"),
        (lambda m: m.update(logprobs_dtype="bfloat16"), "logprobs is F16 .* expected bfloat16"),
        (lambda m: m.update(indices_dtype="int64"), "indices is I32 .* expected int64"),
        (lambda m: m.update(vocab_size=5), r"indices outside \[0, 5\)"),
        (lambda m: m.update(num_tokens=m["num_tokens"] + 1), "tokens, manifest says"),
        (lambda m: m.update(num_examples=14), "num_examples=14"),
        (lambda m: m.update(examples_per_shard=4), "examples_per_shard=4"),
        (lambda m: m.update(data_sha256="0" * 64), "manifest's data_sha256"),
        (lambda m: m["shards"][1].update(data_sha256="0" * 64), f"{SHARD1}: example hashes"),
        (
            lambda m: (
                m["shards"][1].update(num_tokens=m["shards"][1]["num_tokens"] + 1)
                or m.update(num_tokens=m["num_tokens"] + 1)
            ),
            f"{SHARD1}: shard contents do not match",
        ),
    ],
)
def test_cache_cli_verify_reads_what_it_verifies(cache_dir, capsys, edit, problem):
    assert main(["verify", str(cache_dir)]) == 0  # the intact copy
    assert capsys.readouterr().out.startswith(f"ok: {cache_dir}: ")
    _edit_manifest(cache_dir, edit)
    assert main(["verify", str(cache_dir)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("corrupt: ") and out.count("\n") == 1
    assert re.search(problem, out), out


def test_cache_cli_verify_incomplete_and_not_a_cache(cache_dir, tmp_path, capsys):
    _edit_manifest(cache_dir, lambda m: m.update(complete=False, shards=m["shards"][:2]))
    assert main(["verify", str(cache_dir)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"incomplete: {cache_dir}: 10 examples") and "1 of 3 shards" in out
    assert "ok" not in out.split(":")[0]
    (cache_dir / "shard-00001.safetensors").write_bytes(b"x")  # a written shard is damaged
    assert main(["verify", str(cache_dir)]) == 1
    assert capsys.readouterr().out.startswith("corrupt: ")
    assert main(["verify", str(tmp_path / "nothing")]) == 2
    assert "no manifest" in capsys.readouterr().err


# -- bad input to build --------------------------------------------------------


def _build(tiny, data, out, **opts):
    return build(tiny.model, tiny.tok, data, out, progress=False, **{"k": 3, **opts})


def test_cache_missing_data_file(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        _build(tiny, tmp_path / "nope.jsonl", tmp_path / "c")


def test_cache_empty_data(tiny, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="no examples"):
        _build(tiny, tmp_path / "empty.jsonl", tmp_path / "c")
    with pytest.raises(ValueError, match="no examples"):
        _build(tiny, [], tmp_path / "c")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "Q: 1+1="}', r"line 3: missing 'response'"),
        ('{"response": "2"}', r"line 3: missing 'prompt'"),
        ('{"prompt": 1, "response": "2"}', r"line 3: 'prompt' must be a string"),
        ('["Q", "A"]', "line 3: expected a JSON object"),
        ('{"prompt": "Q", ', "line 3 is not valid JSON"),
    ],
)
def test_cache_bad_data_line_is_named(tiny, helpers, tmp_path, line, message):
    good = json.dumps(tiny.rows[0])
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{line}\n{good}\n")  # blank line 2 is skipped, not miscounted
    with pytest.raises(ValueError, match=message):
        _build(tiny, path, tmp_path / "c")
    assert not (tmp_path / "c").exists()  # bad data is refused before anything is written


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"k": 0}, "k must be"),
        ({"k": -3}, "k must be"),
        ({"k": 2.5}, "k must be"),
        ({"k": 10_000}, "exceeds the teacher's vocabulary size"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"dtype": "fp32"}, "dtype"),
        ({"batch_size": 0}, "batch_size"),
        ({"examples_per_shard": 0}, "examples_per_shard"),
        ({"max_length": 1}, "max_length"),
        ({"on_mismatch": "guess"}, "on_mismatch"),
    ],
)
def test_cache_bad_options(tiny, tmp_path, opts, message):
    with pytest.raises(ValueError, match=message):
        _build(tiny, tiny.data, tmp_path / "c", **opts)


def test_cache_k_equal_to_vocab_is_fine(tiny, tmp_path):
    vocab = len(tiny.tok)
    _build(tiny, tiny.rows[:2], tmp_path / "c", k=vocab)
    assert TeacherCache(tmp_path / "c")[0].indices.shape[1] == vocab


def test_cache_bad_teacher(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="teacher checkpoint"):
        build(tmp_path / "no-model", None, tiny.data, tmp_path / "c")
    with pytest.raises(ValueError, match="tokenizer is required"):
        build(tiny.model, None, tiny.data, tmp_path / "c")


def test_cache_cli_reports_bad_input(tiny, tmp_path, capsys):
    status = main(
        [
            "build",
            "--teacher",
            str(tiny.ckpt),
            "--data",
            str(tmp_path / "x.jsonl"),
            "--out",
            str(tmp_path / "c"),
            "--quiet",
        ]
    )
    assert status == 2
    assert "data file not found" in capsys.readouterr().err
