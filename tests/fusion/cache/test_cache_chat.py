"""Chat data: ``messages`` rows through the chat template, targets on assistant turns only."""

from __future__ import annotations

import copy

import pytest

from fusion.cache import Conversation, Encoder, TeacherCache, build, read_examples
from fusion.tiny import char_tokenizer, tiny_causal_lm

CONVERSATIONS = [
    [("system", "be brief"), ("user", "2+2?"), ("assistant", "4"), ("user", "3+3?"),
     ("assistant", "6.")],
    [("user", "hi"), ("assistant", "hello there")],
    [("user", "a"), ("assistant", ""), ("user", "b")],  # empty turn, then a trailing user turn
    [("user", "no answer here")],
]  # fmt: skip


def _rows():
    rows = [{"messages": [{"role": r, "content": c} for r, c in conv]} for conv in CONVERSATIONS]
    return [*rows, {"prompt": "Q: 1+2=", "response": "3"}]  # pairs and conversations mix


@pytest.fixture(scope="module")
def chat(helpers):
    text = (
        "".join(c for conv in CONVERSATIONS for _, c in conv)
        + "Q: 1+2=3<>/abcdefghijklmnopqrstuvwxyz"
    )
    tok = char_tokenizer([text])
    tok.chat_template = helpers.chat_template
    return tok, tiny_causal_lm(tok, d_model=32, n_head=2, seed=2)


def _assistant_texts(conv):
    """What the test template puts in each assistant turn: its content and end of turn."""
    return [content + "</s>" for role, content in conv if role == "assistant"]


def test_cache_messages_targets_are_the_assistant_turns(chat, helpers, tmp_path):
    tok, model = chat
    manifest = build(model, tok, _rows(), tmp_path / "c", k=4, batch_size=2, progress=False)
    cache = TeacherCache(tmp_path / "c", verify="full")
    encoder = Encoder(tok, max_length=None, add_eos=True)
    encoded = encoder.encode(_rows())
    for i, conv in enumerate(CONVERSATIONS):
        ids = cache.token_ids(i).tolist()
        assert tok.decode(ids) == "".join(_assistant_texts(conv))
        # the training side labels exactly the cached rows, in order
        labels = [t for t in encoded[i].labels() if t != -100]
        assert labels == ids
        rendered = tok.apply_chat_template(
            [{"role": r, "content": c} for r, c in conv], tokenize=False
        )
        assert tok.decode(encoded[i].input_ids) == rendered
    assert len(cache.token_ids(3)) == 0 and manifest["stats"]["empty_examples"] == 1
    assert tok.decode(cache.token_ids(4).tolist()) == "3</s>"
    assert cache.example(0).prompt_length == encoded[0].spans[0][0]


def test_cache_messages_second_turn_rows_match_the_reference(chat, helpers, tmp_path):
    tok, model = chat
    build(model, tok, _rows()[:1], tmp_path / "c", k=4, progress=False)
    cache = TeacherCache(tmp_path / "c")
    (encoded,) = Encoder(tok, max_length=None, add_eos=True).encode(_rows()[:1])
    (lo0, hi0), (lo1, hi1) = encoded.spans
    ref = helpers.reference_topk(model, encoded.input_ids, 1, 4, 1.0)  # every position
    first, second = ref.values[lo0 - 1 : hi0 - 1], ref.values[lo1 - 1 : hi1 - 1]
    n0 = hi0 - lo0
    got = cache[0].logprobs.float()
    assert got.shape[0] == n0 + hi1 - lo1
    assert (got[:n0] - first[:, :4]).abs().max() < 1e-3
    assert (got[n0:] - second[:, :4]).abs().max() < 1e-3


def test_read_examples_accepts_messages(helpers, tmp_path):
    path = helpers.write_jsonl(tmp_path / "chat.jsonl", _rows())
    examples, _ = read_examples(path)
    assert isinstance(examples[0], Conversation)
    assert examples[0].messages[2] == ("assistant", "4")
    assert examples[-1] == ("Q: 1+2=", "3")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"messages": []}, "non-empty list"),
        ({"messages": "hi"}, "non-empty list"),
        ({"messages": [{"role": "user"}]}, "message 0: 'content' must be a string"),
        ({"messages": [{"role": 1, "content": "x"}]}, "'role' must be a string"),
        ({"messages": ["hi"]}, "message 0: expected an object"),
        (
            {"messages": [{"role": "user", "content": "x", "tool_calls": []}]},
            r"unsupported key\(s\) \['tool_calls'\]",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "prompt": "p"}, "both 'messages'"),
    ],
)
def test_bad_messages_rows_are_named(helpers, tmp_path, row, message):
    path = helpers.write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "response": "b"}, row])
    with pytest.raises(ValueError, match=f"line 2.*{message}"):
        read_examples(path)


def test_messages_need_a_chat_template(tiny, tmp_path):
    with pytest.raises(ValueError, match="example 0: a 'messages' example needs .*chat template"):
        build(tiny.model, tiny.tok, _rows()[:1], tmp_path / "c", k=2, progress=False)


def test_template_that_rewrites_earlier_turns_is_refused(chat, tmp_path):
    tok = copy.deepcopy(chat[0])
    # renders each turn with its index from the end: earlier turns change as turns are added
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ messages|length - loop.index }}"
        "</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    with pytest.raises(ValueError, match="example 0: .*assistant message 2"):
        Encoder(tok, max_length=None, add_eos=True).encode(_rows()[:1])
