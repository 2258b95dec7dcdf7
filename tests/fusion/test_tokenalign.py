"""Token alignment across tokenizers (FuseLLM's MinED): paths, costs, vocabularies, rows."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion import TopK, jsd_loss
from fusion.tokenalign import (
    PAD_LOGPROB,
    align_tokens,
    map_vocab,
    project_topk,
    token_strings,
)

TOKEN = st.text(alphabet="ab c", min_size=0, max_size=4)
SEQ = st.lists(TOKEN, min_size=1, max_size=4)


def lev(a: str, b: str) -> int:
    """Textbook Levenshtein distance (Wagner-Fischer), independent of rapidfuzz."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def all_paths(n: int, m: int):
    """Every monotone path from (0, 0) to (n-1, m-1) with steps (1,0), (0,1), (1,1)."""

    @functools.cache
    def rest(i: int, j: int) -> list[tuple]:
        if (i, j) == (n - 1, m - 1):
            return [((i, j),)]
        out = []
        for di, dj in ((1, 1), (1, 0), (0, 1)):
            if i + di < n and j + dj < m:
                out += [((i, j), *tail) for tail in rest(i + di, j + dj)]
        return out

    return rest(0, 0)


def path_cost(source, target, pairs) -> int:
    return sum(lev(source[i], target[j]) for i, j in pairs)


@settings(max_examples=60, deadline=None)
@given(SEQ)
def test_identical_sequences_align_one_to_one(tokens):
    a = align_tokens(tokens, tokens)
    assert a.pairs.tolist() == [[i, i] for i in range(len(tokens))]
    assert a.cost == 0
    assert a.source_for_target().tolist() == list(range(len(tokens)))


@settings(max_examples=80, deadline=None)
@given(SEQ, SEQ)
def test_path_is_monotone_complete_and_optimal(source, target):
    a = align_tokens(source, target)
    pairs = a.pairs
    assert pairs[0].tolist() == [0, 0]
    assert pairs[-1].tolist() == [len(source) - 1, len(target) - 1]
    steps = np.diff(pairs, axis=0).tolist()
    assert all(step in ([1, 0], [0, 1], [1, 1]) for step in steps)  # monotone, no jumps
    # the cost is the summed edit distances of the returned pairs, and no path does better
    assert a.cost == path_cost(source, target, pairs.tolist())
    assert a.cost == min(path_cost(source, target, p) for p in all_paths(len(source), len(target)))
    assert align_tokens(target, source).cost == a.cost  # the optimum is symmetric


@settings(max_examples=60, deadline=None)
@given(SEQ, SEQ)
def test_source_for_target_is_monotone_and_starts_together(source, target):
    a = align_tokens(source, target)
    chosen = a.source_for_target()
    assert chosen.shape == (len(target),)
    assert chosen[0] == 0
    kept = chosen[chosen >= 0]
    assert (np.diff(kept) > 0).all()  # one teacher row per student position, in order
    pairs = {tuple(p) for p in a.pairs.tolist()}
    for j, i in enumerate(chosen.tolist()):
        if i >= 0:
            assert (i, j) in pairs
            assert j == 0 or (i - 1, j - 1) in pairs  # entered diagonally: both tokens start


def test_known_examples_from_the_papers_description():
    # one-to-one where the tokens agree, a word split by the student (one-to-many on the
    # student's side): the student's "ld" starts inside the teacher's " world"
    a = align_tokens([" hello", " world"], [" hello", " wor", "ld"])
    assert a.pairs.tolist() == [[0, 0], [1, 1], [1, 2]]
    assert a.cost == lev(" world", " wor") + lev(" world", "ld")
    assert a.source_for_target().tolist() == [0, 1, -1]
    # a word the teacher splits in two (many-to-one): the student's token gets the first
    b = align_tokens([" hel", "lo", " wonderful"], [" hello", " wonderful"])
    assert b.pairs.tolist() == [[0, 0], [1, 0], [2, 1]]
    assert b.source_for_target().tolist() == [0, 2]
    # the method's limit: a long token far (in edit distance) from each of its pieces pairs
    # a piece with the next token, the cheaper sum
    src, tgt = [" un", "believ", "able", "!"], [" unbelievable", "!"]
    c = align_tokens(src, tgt)
    assert c.pairs.tolist() == [[0, 0], [1, 1], [2, 1], [3, 1]]
    assert c.cost < path_cost(src, tgt, [(0, 0), (1, 0), (2, 0), (3, 1)])


@pytest.mark.parametrize(
    ("source", "target", "match"),
    [
        ([], ["a"], "source is empty"),
        (["a"], [], "target is empty"),
        ("abc", ["a"], "not one string"),
        (["a", 3], ["a"], "must hold strings"),
    ],
)
def test_bad_sequences_are_named(source, target, match):
    with pytest.raises(ValueError, match=match):
        align_tokens(source, target)


@settings(max_examples=40, deadline=None)
@given(st.lists(TOKEN, min_size=1, max_size=8), st.lists(TOKEN, min_size=1, max_size=8))
def test_map_vocab_is_exact_match_else_minimum_edit_distance(source, target):
    out = map_vocab(source, target)
    for i, text in enumerate(source):
        if text in target:
            assert out[i] == target.index(text)
        else:
            dists = [lev(text, t) for t in target]
            assert out[i] == int(np.argmin(dists))  # the lowest id among the nearest


def test_map_vocab_only_the_ids_asked_for():
    out = map_vocab(["a", "b", "c"], ["c", "b"], ids=[1, 2])
    assert out.tolist() == [-1, 1, 0]
    with pytest.raises(ValueError, match="ids must lie in"):
        map_vocab(["a"], ["a"], ids=[1])


def _rows(n: int, k: int, vocab: int, seed: int) -> TopK:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=gen, dtype=torch.float64)
    lp, idx = torch.log_softmax(logits, -1).topk(k, dim=-1)
    return TopK(lp, idx)


def test_identical_tokenizers_give_the_rows_back():
    tokens = [" a", "b", " c", "b"]
    rows = _rows(4, 3, 6, seed=0)
    out, mask = project_topk(rows, align_tokens(tokens, tokens), np.arange(6), 4)
    assert mask.tolist() == [[True] * 4]
    assert torch.equal(out.indices[0], rows.indices)
    assert torch.allclose(out.logprobs[0], rows.logprobs, rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10**6), st.lists(st.integers(0, 3), min_size=7, max_size=7))
def test_projected_rows_equal_the_mapped_distribution(seed, id_map):
    """JSD against the projected rows equals JSD against the teacher's top-k mass moved
    onto the student's vocabulary by hand (a dense reference)."""
    source, target = [" x", "y", " zz"], [" x", "y", " z", "z"]
    rows = _rows(3, 4, 7, seed)
    id_map = np.asarray(id_map)
    a = align_tokens(source, target)
    out, mask = project_topk(rows, a, id_map, 4)
    assert len(set(out.indices[0, 0].tolist())) == 4  # distinct ids in every row
    assert (out.logprobs[0].diff(dim=-1) <= 0).all()  # still sorted
    student = torch.randn(1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dense = torch.full((1, 4, 4), 0.0, dtype=torch.float64)
    for j, i in enumerate(a.source_for_target().tolist()):
        if i >= 0:
            probs = rows.logprobs[i].exp()
            dense[0, j].index_add_(0, torch.as_tensor(id_map)[rows.indices[i]], probs)
    assert mask[0].tolist() == (dense[0].sum(-1) > 0).tolist()
    got = jsd_loss(student, out, beta=0.5, mask=torch.as_tensor(mask), reduction="none")
    ref = jsd_loss(
        student,
        TopK(torch.log(dense.clamp(min=1e-300)), torch.arange(4).expand(1, 4, 4)),
        beta=0.5,
        mask=torch.as_tensor(mask),
        reduction="none",
    )
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_padding_is_zero_probability():
    assert np.exp(np.float32(PAD_LOGPROB)) == 0 and np.exp(PAD_LOGPROB) == 0


def test_project_topk_refuses_mismatches():
    a = align_tokens(["a", "b"], ["a", "b", "c"])
    rows = _rows(2, 2, 3, seed=0)
    with pytest.raises(ValueError, match="target_length is 4"):
        project_topk(rows, a, np.arange(3), 4)
    with pytest.raises(ValueError, match="unmapped"):
        project_topk(rows, a, np.array([-1, -1, -1]), 3)


def test_real_tokenizers_feed_jsd():
    """A BPE teacher and a character-level student on the same text, end to end."""
    from fusion.tiny import bpe_tokenizer, char_tokenizer

    corpus = ["the cat sat on the mat", "a dog ate the hat", "the cat ate"] * 20
    teacher, student = bpe_tokenizer(corpus, vocab_size=300), char_tokenizer(corpus)
    text = "the cat ate the hat"
    t_ids = teacher(text, add_special_tokens=False)["input_ids"]
    s_ids = student(text, add_special_tokens=False)["input_ids"]
    t_tok, s_tok = token_strings(teacher, t_ids), token_strings(student, s_ids)
    assert "".join(t_tok).replace(" ", "") == "".join(s_tok).replace(" ", "")
    a = align_tokens(t_tok, s_tok)
    assert len(t_ids) < len(s_ids)  # BPE merges characters
    id_map = map_vocab(
        token_strings(teacher, range(len(teacher))), token_strings(student, range(len(student)))
    )
    rows = _rows(len(t_ids), 5, len(teacher), seed=3)
    out, mask = project_topk(rows, a, id_map, len(s_ids))
    chosen = a.source_for_target()
    assert mask[0, 0] and mask.sum() == a.starts.sum() == (chosen >= 0).sum()
    for j in np.nonzero(chosen >= 0)[0]:  # each row keeps its teacher row's mass
        mass = torch.logsumexp(out.logprobs[0, j], -1)
        assert torch.allclose(mass, torch.logsumexp(rows.logprobs[chosen[j]], -1))
    logits = torch.randn(1, len(s_ids), len(student), requires_grad=True)
    loss = jsd_loss(logits, out, beta=0.5, mask=torch.as_tensor(mask))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
