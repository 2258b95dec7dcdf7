"""Interrupted builds resume to the same bytes; mismatched resumes are refused."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest

from fusion.cache import CacheError, TeacherCache, build, read_manifest
from fusion.cache import _format as cache_format
from fusion.tiny import char_tokenizer, tiny_causal_lm

OPTS = dict(k=5, batch_size=2, examples_per_shard=4, progress=False)


class Injected(RuntimeError):
    pass


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _count_forward(monkeypatch, model, fail_at: int | None = None) -> list[int]:
    """Count the teacher's forward passes; raise on call ``fail_at`` (a crash mid-build)."""
    calls = [0]
    original = model.forward

    def forward(*args, **kwargs):
        calls[0] += 1
        if calls[0] == fail_at:
            raise Injected(f"fault injected in forward pass {fail_at}")
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    return calls


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "cache"
    build(tiny.model, tiny.tok, tiny.data, out, **OPTS)
    return out


def test_cache_fault_mid_shard_resumes_to_identical_bytes(tiny, reference, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    # Shard 0 holds 4 examples in 2 batches; pass 4 is the second batch of shard 1.
    calls = _count_forward(monkeypatch, tiny.model, fail_at=4)
    with pytest.raises(Injected):
        build(tiny.model, tiny.tok, tiny.data, out, **OPTS)
    assert calls[0] == 4
    partial = read_manifest(out)
    assert not partial["complete"] and [s["file"] for s in partial["shards"]] == [
        "shard-00000.safetensors"
    ]
    assert sorted(os.listdir(out)) == ["manifest.json", "shard-00000.safetensors"]  # no temp files
    with pytest.raises(CacheError, match="incomplete"):
        TeacherCache(out)
    assert len(TeacherCache(out, allow_incomplete=True)) == 4

    monkeypatch.undo()
    calls = _count_forward(monkeypatch, tiny.model)
    build(tiny.model, tiny.tok, tiny.data, out, **OPTS)
    total = read_manifest(reference)["num_shards"]
    assert calls[0] == 2 * (total - 1) - 1  # shard 0 was not recomputed (last shard: 1 example)
    assert _files(out) == _files(reference)


def test_cache_fault_while_writing_a_shard(tiny, reference, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("shard-00002.safetensors"):
            raise Injected("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(cache_format.os, "replace", failing_replace)
    with pytest.raises(Injected):
        build(tiny.model, tiny.tok, tiny.data, out, **OPTS)
    monkeypatch.undo()
    assert len(read_manifest(out)["shards"]) == 2
    assert not any(name.endswith(".tmp") for name in os.listdir(out))
    assert not (out / "shard-00002.safetensors").exists()
    build(tiny.model, tiny.tok, tiny.data, out, **OPTS)
    assert _files(out) == _files(reference)


def test_cache_leftover_temp_files_are_cleaned_on_resume(tiny, reference, tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(reference, out)
    manifest = read_manifest(out)
    manifest["complete"], manifest["shards"] = False, manifest["shards"][:1]
    cache_format.write_manifest(out, manifest)
    (out / ".shard-00001.safetensors.abc.tmp").write_bytes(b"half a shard")
    (out / "shard-00001.safetensors").write_bytes(b"garbage from a crash after rename")
    build(tiny.model, tiny.tok, tiny.data, out, **OPTS)
    assert _files(out) == _files(reference)


def test_cache_complete_cache_is_not_rebuilt(tiny, reference, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    shutil.copytree(reference, out)
    calls = _count_forward(monkeypatch, tiny.model)
    # Batch size is not part of the cache's identity: changing it to resume is allowed.
    build(tiny.model, tiny.tok, tiny.data, out, **{**OPTS, "batch_size": 1})
    assert calls[0] == 0
    assert _files(out) == _files(reference)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"k": 6}, "k"),
        ({"temperature": 2.0}, "temperature"),
        ({"dtype": "bf16"}, "logprobs_dtype"),
        ({"examples_per_shard": 3}, "examples_per_shard"),
        ({"max_length": 12}, "max_length"),
        ({"teacher": "other seed"}, "teacher_fingerprint"),
        ({"tokenizer": "other vocabulary"}, "tokenizer_sha256"),
        ({"data": "other data"}, "data_sha256"),
    ],
)
def test_cache_resume_with_other_options_is_refused(
    tiny, helpers, reference, tmp_path, change, field
):
    out = tmp_path / "cache"
    shutil.copytree(reference, out)
    before = _files(out)
    teacher, tok, data = tiny.model, tiny.tok, tiny.data
    if "teacher" in change:
        teacher = tiny_causal_lm(tiny.tok, d_model=32, n_head=2, seed=1)
    if "tokenizer" in change:
        tok = char_tokenizer(helpers.corpus_of(tiny.rows) + ["~|"])
        teacher = tiny_causal_lm(tok, d_model=32, n_head=2, seed=0)
    if "data" in change:
        data = helpers.write_jsonl(tmp_path / "other.jsonl", tiny.rows[:-1])
    opts = {
        **OPTS,
        **{key: v for key, v in change.items() if key not in ("teacher", "tokenizer", "data")},
    }
    with pytest.raises(CacheError, match=field) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # max_length=12 truncates: not the point
        build(teacher, tok, data, out, **opts)
    assert str(out) in str(info.value)
    assert _files(out) == before  # a refused resume leaves the cache untouched


def test_cache_mismatch_is_reported_before_loading_the_teacher(tiny, reference, tmp_path):
    # The checkpoint path does not exist: reaching the loader would raise FileNotFoundError.
    with pytest.raises(CacheError, match="k: cache has 5, build has 9"):
        build(tmp_path / "no-such-teacher", None, tiny.data, reference, **{**OPTS, "k": 9})


def test_cache_resume_refuses_damaged_completed_shard(tiny, reference, tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(reference, out)
    blob = bytearray((out / "shard-00001.safetensors").read_bytes())
    blob[-3] ^= 0xFF
    (out / "shard-00001.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CacheError, match="shard-00001.safetensors"):
        build(tiny.model, tiny.tok, tiny.data, out, **OPTS)


def test_cache_refuses_foreign_directory_unless_overwrite(tiny, reference, tmp_path):
    out = tmp_path / "cache"
    out.mkdir()
    (out / "notes.txt").write_text("not a cache")
    with pytest.raises(CacheError, match="not empty"):
        build(tiny.model, tiny.tok, tiny.data, out, **OPTS)
    # ... before loading the teacher: this checkpoint does not even exist
    with pytest.raises(CacheError, match="not empty"):
        build(tmp_path / "no-such-teacher", None, tiny.data, out, **OPTS)
    build(tiny.model, tiny.tok, tiny.data, out, overwrite=True, **{**OPTS, "k": 3})
    # overwrite=True replaces a cache built with other options too
    build(tiny.model, tiny.tok, tiny.data, out, overwrite=True, **OPTS)
    assert {n: b for n, b in _files(out).items() if n != "notes.txt"} == _files(reference)


def test_cli_resume_reports_the_work_done_not_the_totals(tiny, reference, tmp_path, capsys):
    """D6: after a resume, 'wrote N examples' counts what this run computed."""
    import json

    from fusion.cache.__main__ import main

    out = shutil.copytree(reference, tmp_path / "cache")
    manifest = json.loads((out / "manifest.json").read_text())
    kept = manifest["shards"][:1]
    for shard in manifest["shards"][1:]:
        (out / shard["file"]).unlink()
    manifest["complete"], manifest["shards"] = False, kept
    (out / "manifest.json").write_text(json.dumps(manifest))
    argv = ["build", "--teacher", str(tiny.ckpt), "--data", str(tiny.data), "--out", str(out)]
    argv += ["--k", "5", "--batch-size", "2", "--examples-per-shard", "4", "--quiet"]
    assert main(argv) == 0
    full = read_manifest(reference)
    done = (
        full["num_examples"] - kept[0]["num_examples"],
        full["num_tokens"] - kept[0]["num_tokens"],
    )
    line = capsys.readouterr().out
    assert f"wrote {done[0]} examples, {done[1]} tokens" in line
    assert f"resumed: {kept[0]['num_examples']} examples" in line
    assert f"holds {full['num_examples']} examples" in line
    shards = {name: data for name, data in _files(out).items() if name.startswith("shard")}
    assert shards == {n: d for n, d in _files(reference).items() if n.startswith("shard")}
    assert main(argv) == 0  # complete: nothing computed
    assert "wrote 0 examples, 0 tokens" in capsys.readouterr().out
