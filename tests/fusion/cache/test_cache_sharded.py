"""Sharded builds: ranks write disjoint shards, resume, and merge into one manifest.

The reference is a one-process build from the same checkpoint path and data path, so a
sharded build must reproduce its shards *and* its manifest byte for byte.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from fusion.cache import CacheError, TeacherCache, build, merge, read_manifest
from fusion.cache.__main__ import main

OPTS = dict(k=5, batch_size=2, examples_per_shard=2, progress=False, device="cpu")
# 13 examples in 7 shards: rank 0 of 2 owns shards 0, 2, 4, 6 and rank 1 owns 1, 3, 5.
RANK0 = ["shard-00000.safetensors", "shard-00002.safetensors", "shard-00004.safetensors"]


def _cache_files(path):
    """Shards and manifest, i.e. everything but the ranks' progress records."""
    return {
        p.name: p.read_bytes() for p in sorted(path.iterdir()) if not p.name.startswith("rank-")
    }


def _build(tiny, out, **opts):
    return build(str(tiny.ckpt), None, str(tiny.data), out, **{**OPTS, **opts})


def _cli(tiny, out, *extra):
    args = ["--teacher", str(tiny.ckpt), "--data", str(tiny.data), "--out", str(out)]
    args += ["--k", "5", "--batch-size", "2", "--examples-per-shard", "2", "--device", "cpu"]
    return [sys.executable, "-m", "fusion.cache", "build", *args, "--quiet", *extra]


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded-reference") / "cache"
    _build(tiny, out)
    return out


def test_two_processes_give_the_one_process_cache(tiny, reference, tmp_path):
    out = tmp_path / "cache"
    # rank 0 from flags, rank 1 from torchrun's environment variables; run concurrently.
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2"}
    procs = [
        subprocess.Popen(_cli(tiny, out, "--rank", "0", "--world-size", "2"), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        subprocess.Popen(_cli(tiny, out), env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE),
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert _cache_files(out) == _cache_files(reference)
    assert sorted(p.name for p in out.glob("rank-*")) == [
        "rank-00000-of-00002.json",
        "rank-00001-of-00002.json",
    ]
    TeacherCache(out, verify="full")


class Injected(RuntimeError):
    pass


def test_rank_fault_resumes_and_the_last_rank_merges(tiny, reference, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    import transformers

    real = transformers.GPT2LMHeadModel.forward
    calls = [0]

    def failing(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:  # one batch per shard: rank 0 crashes computing shard 2
            raise Injected("fault injected")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(transformers.GPT2LMHeadModel, "forward", failing)
    with pytest.raises(Injected):
        _build(tiny, out, rank=0, world_size=2)
    monkeypatch.undo()
    record = read_manifest_like(out / "rank-00000-of-00002.json")
    assert [s["file"] for s in record["shards"]] == RANK0[:1] and not record["complete"]

    done = _build(tiny, out, rank=1, world_size=2)  # rank 1 finishes first: cannot merge
    assert done["rank"] == 1 and done["complete"] and len(done["shards"]) == 3
    assert not (out / "manifest.json").exists()
    with pytest.raises(CacheError, match="3 of 7 shard.*shard-00002.*rank-00000-of-00002"):
        merge(out)
    with pytest.raises(CacheError, match="merge"):
        TeacherCache(out)

    merged = _build(tiny, out, rank=0, world_size=2)  # resumes shard 2 on, then merges
    assert merged["complete"] and "rank" not in merged
    assert _cache_files(out) == _cache_files(reference)


def read_manifest_like(path):
    import json

    return json.loads(path.read_text())


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from fusion.cache import build

    real = os.replace
    def replace(src, dst):  # SIGKILL between writing shard 4 and renaming it
        if str(dst).endswith("shard-00004.safetensors"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    os.replace = replace
    build(sys.argv[1], None, sys.argv[2], sys.argv[3], k=5, batch_size=2,
          examples_per_shard=2, progress=False, device="cpu", rank=0, world_size=2)
    """
)


def test_kill_9_mid_shard_resumes_byte_identically(tiny, reference, tmp_path):
    out = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(tiny.ckpt), str(tiny.data), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    names = sorted(os.listdir(out))
    assert [n for n in names if n.endswith(".tmp")], "the half-written shard is still there"
    assert [s["file"] for s in read_manifest_like(out / "rank-00000-of-00002.json")["shards"]] == (
        RANK0[:2]
    )
    _build(tiny, out, rank=1, world_size=2)
    _build(tiny, out, rank=0, world_size=2)
    assert _cache_files(out) == _cache_files(reference)
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_resume_with_another_number_of_ranks(tiny, reference, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    _build(tiny, out, rank=0, world_size=2)  # 4 of 7 shards
    import transformers

    real = transformers.GPT2LMHeadModel.forward
    calls = [0]

    def counting(self, *args, **kwargs):
        calls[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(transformers.GPT2LMHeadModel, "forward", counting)
    manifest = _build(tiny, out)  # one process adopts rank 0's shards, computes 1, 3, 5
    assert calls[0] == 3 and manifest["complete"]  # one batch per shard
    assert _cache_files(out) == _cache_files(reference)


def test_merges_are_idempotent_and_safe_to_race(tiny, reference, tmp_path):
    out = tmp_path / "cache"
    for rank in range(3):  # 3 ranks this time; the last one merged
        _build(tiny, out, rank=rank, world_size=3)
    expected = _cache_files(reference)
    assert _cache_files(out) == expected
    with ThreadPoolExecutor(4) as pool:  # four concurrent merges: same bytes, no temp left
        results = list(pool.map(lambda _: merge(out), range(4)))
    assert all(r == results[0] for r in results)
    assert _cache_files(out) == expected


def test_merge_refuses_a_damaged_shard(tiny, tmp_path):
    out = tmp_path / "cache"
    _build(tiny, out, rank=0, world_size=2)
    shard = out / "shard-00002.safetensors"
    blob = bytearray(shard.read_bytes())
    blob[-2] ^= 0xFF
    shard.write_bytes(bytes(blob))
    # rank 1 finishes last, so it merges, and the merge hashes every shard
    with pytest.raises(CacheError, match="shard-00002.safetensors: fails its sha256 check"):
        _build(tiny, out, rank=1, world_size=2)
    assert not (out / "manifest.json").exists()
    with pytest.raises(CacheError, match="shard-00002.safetensors: fails its sha256 check"):
        merge(out)


def test_sharded_option_errors(tiny, reference, tmp_path, capsys, monkeypatch):
    with pytest.raises(ValueError, match="rank must be < world_size"):
        _build(tiny, tmp_path / "a", rank=2, world_size=2)
    with pytest.raises(ValueError, match="overwrite"):
        _build(tiny, tmp_path / "a", rank=0, world_size=2, overwrite=True)
    out = tmp_path / "b"
    _build(tiny, out, rank=0, world_size=2)
    # Another k in a rank record is refused before the teacher is loaded (no such path).
    with pytest.raises(CacheError, match="rank-00000-of-00002.json.*k: cache has 5, build has 6"):
        build(tmp_path / "no-teacher", None, str(tiny.data), out, **{**OPTS, "k": 6})
    assert main(["build", "--teacher", "x", "--data", "y", "--out", "z", "--rank", "0"]) == 2
    assert "both --rank and --world-size" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "two")
    assert main(["build", "--teacher", "x", "--data", "y", "--out", "z"]) == 2
    assert "$WORLD_SIZE must be an integer" in capsys.readouterr().err


def test_cli_verify_and_merge_of_an_unmerged_build(tiny, reference, tmp_path, capsys):
    out = tmp_path / "cache"
    _build(tiny, out, rank=1, world_size=2)
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    line = capsys.readouterr().out
    assert line.startswith("incomplete: ") and "3 of 7 shards" in line and "merge" in line
    assert main(["merge", str(out)]) == 2
    assert "4 of 7 shard(s) not written yet" in capsys.readouterr().err
    _build(tiny, out, rank=0, world_size=2)
    assert main(["merge", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {out}: merged 7 shard(s)")
    assert main(["verify", str(out)]) == 0
    assert read_manifest(out) == read_manifest(reference)
