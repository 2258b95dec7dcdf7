"""The real-teacher distillation study (benchmarks/real_teacher_study.py).

The metric is checked against closed forms, the split against its promise, and the whole
command end to end at toy size, with a tiny teacher (fast) and with SmolLM2 (slow): it
must write every field docs/study_real_teacher.md reads, and a second run must reuse
every finished stage.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "real_teacher_study.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("real_teacher_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


study = _load_script()


@pytest.fixture(scope="module")
def examples():
    return study.docstrings()


def test_split_keeps_modules_and_texts_apart(examples):
    train, test = study.split(examples)
    assert train and test
    assert not {e["module"] for e in train} & {e["module"] for e in test}
    assert not {e["response"] for e in train} & {e["response"] for e in test}
    for e in train + test:
        assert 80 <= len(e["response"]) <= 400 and e["response"].isascii()


def _char_model(texts):
    from fusion.tiny import char_tokenizer, tiny_causal_lm

    tokenizer = char_tokenizer(texts)
    model = tiny_causal_lm(tokenizer, arch="llama", seed=0)
    return tokenizer, model


def test_bits_per_byte_of_a_uniform_model_is_log2_vocab():
    """Zero logits give p = 1/V for every token; one character per token, ASCII bytes."""
    examples = [{"prompt": "Doc of f:\n", "response": "Return the sum of a and b."},
                {"prompt": "Doc of g:\n", "response": "Parse text; raise on bad input."}]  # fmt: skip
    tokenizer, model = _char_model([e["prompt"] + e["response"] for e in examples])
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    expected = math.log2(model.get_output_embeddings().out_features)
    assert study.bits_per_byte(model, tokenizer, examples) == pytest.approx(expected, rel=1e-6)


def test_bits_per_byte_of_a_trained_direction_is_lower():
    """Raising the logit of every response character lowers the bits below log2 V."""
    examples = [{"prompt": "Doc:\n", "response": "aaaa bbbb aaaa"}]
    tokenizer, model = _char_model([e["prompt"] + e["response"] for e in examples])
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight.zero_()
    uniform = study.bits_per_byte(model, tokenizer, examples)
    with torch.no_grad():
        model.lm_head = torch.nn.Linear(head.in_features, head.out_features, bias=True)
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        for ch in "ab ":
            model.lm_head.bias[tokenizer.convert_tokens_to_ids(ch)] = 3.0
    assert study.bits_per_byte(model, tokenizer, examples) < uniform


def test_unigram_level_without_counts_is_log2_vocab():
    from fusion.tiny import char_tokenizer

    test = [{"prompt": "", "response": "hello world"}]
    tokenizer = char_tokenizer(["hello world"])
    expected = math.log2(len(tokenizer))
    assert study.unigram_bits_per_byte(tokenizer, [], test) == pytest.approx(expected)
    # counting the test text itself can only make it cheaper
    assert study.unigram_bits_per_byte(tokenizer, test, test) < expected


def test_bytes_per_token_of_a_character_tokenizer_is_one():
    from fusion.tiny import char_tokenizer

    examples = [{"prompt": "", "response": "one char per token"}]
    tokenizer = char_tokenizer(["one char per token"])
    assert study.bytes_per_token(tokenizer, examples) == 1.0


PAGE_FIELDS = ("complete", "n_train", "n_held_out", "held_out_bytes", "teacher", "k", "student",
               "schedule", "seeds", "teacher_bpb", "unigram_bpb", "bytes_per_token", "bpb",
               "last_log", "vs_sft", "timing", "setting")  # fmt: skip


def _check_document(doc, seeds):
    from fusion.demo.models import Arm

    for name in PAGE_FIELDS:
        assert name in doc, name
    assert doc["complete"] is True
    assert set(doc["bpb"]) == {a.value for a in Arm}
    for arm in Arm:
        assert sorted(int(s) for s in doc["bpb"][arm.value]) == seeds
        assert all(math.isfinite(v) and v > 0 for v in doc["bpb"][arm.value].values())
    for arm in (Arm.ULD, Arm.GLD):
        c = doc["vs_sft"][arm.value]
        assert c["n"] == len(seeds)
        lo, hi = c["ci95"]
        assert lo <= c["mean_difference_bpb"] <= hi
        diffs = [doc["bpb"][arm.value][s] - doc["bpb"]["SFT"][s] for s in doc["bpb"]["SFT"]]
        assert c["mean_difference_bpb"] == pytest.approx(sum(diffs) / len(diffs))
    assert doc["timing"]["cache_tokens_per_s"] > 0
    assert doc["setting"]["torch_threads"] == 1


def _run(tmp_path, extra):
    import json

    out = tmp_path / "r.json"
    argv = ["--train", "24", "--held-out", "6", "--seeds", "0", "1", "--steps", "3",
            "--work", str(tmp_path / "work"), "--json", str(out), *extra]  # fmt: skip
    assert study.main(argv) == 0
    return json.loads(out.read_text())


def _tiny_teacher(tmp_path, examples):
    from fusion.tiny import bpe_tokenizer, tiny_causal_lm

    tokenizer = bpe_tokenizer([e["prompt"] + e["response"] for e in examples[:300]],
                              vocab_size=400)  # fmt: skip
    model = tiny_causal_lm(tokenizer, arch="llama", seed=1)
    path = tmp_path / "teacher"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_end_to_end_with_a_tiny_teacher_and_resume(tmp_path, examples):
    teacher = _tiny_teacher(tmp_path, examples)
    threads = torch.get_num_threads()
    try:
        first = _run(tmp_path, ["--teacher", str(teacher)])
        _check_document(first, [0, 1])
        arms = sorted((tmp_path / "work").rglob("*-seed*.json"))
        assert len(arms) == 6
        stamps = [p.stat().st_mtime_ns for p in arms]
        second = _run(tmp_path, ["--teacher", str(teacher)])
    finally:
        torch.set_num_threads(threads)
    assert [p.stat().st_mtime_ns for p in arms] == stamps  # every arm reused, none retrained
    assert second["bpb"] == first["bpb"]
    assert second["teacher_bpb"] == first["teacher_bpb"]


@pytest.mark.slow
def test_end_to_end_with_smollm2(tmp_path):
    from fusion.models import smollm2_gguf

    try:
        smollm2_gguf()
    except FileNotFoundError as err:
        pytest.fail(f"the real model is missing: {err}")
    threads = torch.get_num_threads()
    try:
        doc = _run(tmp_path, [])
    finally:
        torch.set_num_threads(threads)
    _check_document(doc, [0, 1])
    # a pretrained 135M model knows English far better than a uniform byte model (8 bits)
    assert doc["teacher_bpb"] < 4
