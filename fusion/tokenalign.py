r"""Token alignment across tokenizers: FuseLLM's minimum-edit-distance (MinED) alignment.

A teacher and a student that tokenise differently cut the same text into different tokens,
so the teacher's distribution at its position :math:`i` (over its vocabulary) has no
student position or student token to compare with. FuseLLM (Wan et al. 2024, Sec. 3.3 and
App. A) aligns the two token sequences with dynamic programming, the cost of pairing two
tokens being the edit distance between their strings, and maps each teacher vocabulary
entry to the student entry of minimum edit distance. Three steps here:

:func:`align_tokens`
    The monotone many-to-many alignment of two token sequences minimising the summed
    edit distances of the paired tokens (dynamic time warping with a Levenshtein cost).
:func:`map_vocab`
    Teacher vocabulary ids to student vocabulary ids: the same string where the student
    has it, else the student string of minimum edit distance (MinED).
:func:`project_topk`
    A teacher's cached top-k rows (:class:`fusion.TopK`) moved onto the student's
    positions and vocabulary, with the mask of the student positions that received one;
    the result feeds :func:`fusion.jsd_loss` (``teacher_logits=`` and ``mask=``) like a
    teacher that shares the student's tokenizer.

Token strings are compared after :func:`token_strings` decodes each id on its own, so
byte-level BPE (``"Ġworld"``) and SentencePiece (``"▁world"``) spell the same text alike.

References
----------
F. Wan, X. Huang, D. Cai, X. Quan, W. Bi, S. Shi. Knowledge Fusion of Large Language
Models. ICLR 2024, arXiv:2401.10491.
H. Sakoe, S. Chiba. Dynamic programming algorithm optimization for spoken word
recognition. IEEE Trans. ASSP 26(1), 1978 (dynamic time warping).
V. I. Levenshtein. Binary codes capable of correcting deletions, insertions, and
reversals. Soviet Physics Doklady 10(8), 1966.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusion.types import TopK

__all__ = ["TokenAlignment", "align_tokens", "map_vocab", "project_topk", "token_strings"]

PAD_LOGPROB = -1.0e4
"""Log-probability of the entries that pad a projected row: finite, as the losses require,
and ``exp(PAD_LOGPROB)`` is exactly 0 in float32 and float64."""

# query rows per block of the vocabulary distance matrix (block x |student vocab| int32)
_VOCAB_BLOCK = 256


@dataclass(frozen=True)
class TokenAlignment:
    """A monotone alignment of a source (teacher) and a target (student) token sequence.

    Attributes
    ----------
    pairs : numpy.ndarray ``(P, 2)`` int64
        ``(source position, target position)`` pairs along the path, from ``(0, 0)`` to
        ``(n - 1, m - 1)``; each step advances the source, the target or both by one, so
        every position of either sequence is in at least one pair.
    cost : float
        Sum of the edit distances of the paired tokens: the minimum over all such paths.
    """

    pairs: np.ndarray
    cost: float

    @property
    def starts(self) -> np.ndarray:
        """``(P,)`` bool: the pairs where both tokens start together.

        The first pair, and every pair entered by a diagonal step: the source and target
        tokens there begin at the same point of the aligned text.
        """
        steps = np.diff(self.pairs, axis=0)
        return np.concatenate([[True], (steps == 1).all(axis=1)])

    def source_for_target(self, target_length: int | None = None) -> np.ndarray:
        """``(m,)`` int64: the source position whose prediction each target position gets.

        Target position ``j`` gets source position ``i`` when ``(i, j)`` is a pair where
        both tokens start together (:attr:`starts`): the teacher's distribution there
        predicts a token that begins where the student's token ``j`` begins. Target
        positions inside a longer source token (many-to-one) get ``-1``. Where one target
        token spans several source tokens (one-to-many), it gets the first of them.
        """
        m = int(self.pairs[-1, 1]) + 1 if target_length is None else target_length
        out = np.full(m, -1, dtype=np.int64)
        chosen = self.pairs[self.starts]
        out[chosen[:, 1]] = chosen[:, 0]
        return out


def _check_tokens(name: str, tokens: Sequence[str]) -> list[str]:
    if isinstance(tokens, str):
        raise ValueError(f"{name} must be a sequence of token strings, not one string")
    tokens = list(tokens)
    if not tokens:
        raise ValueError(f"{name} is empty: there is nothing to align")
    bad = next((t for t in tokens if not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(f"{name} must hold strings, found {type(bad).__name__} {bad!r}")
    return tokens


def _levenshtein():
    try:
        from rapidfuzz.distance import Levenshtein
        from rapidfuzz.process import cdist
    except ImportError as err:  # pragma: no cover - the fusion extra installs it
        raise ImportError("token alignment needs rapidfuzz: pip install 'gwlite[fusion]'") from err
    return Levenshtein.distance, cdist


def _edit_costs(source: list[str], target: list[str]) -> np.ndarray:
    distance, cdist = _levenshtein()
    return cdist(source, target, scorer=distance, dtype=np.int32, workers=1).astype(np.float64)


def _accumulate(cost: np.ndarray) -> np.ndarray:
    """``D[i, j] = cost[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])`` (Sakoe-Chiba)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        row, above = acc[i], acc[i - 1]
        # the diagonal and vertical moves do not depend on this row: take them at once
        best = np.minimum(above[:-1], above[1:]) + cost[i - 1]
        for j in range(1, m + 1):  # the horizontal move chains along the row
            row[j] = min(best[j - 1], row[j - 1] + cost[i - 1, j - 1])
    return acc[1:, 1:]


def _backtrack(acc: np.ndarray) -> np.ndarray:
    """The path back from the last cell, preferring the diagonal, then the source step."""
    i, j = acc.shape[0] - 1, acc.shape[1] - 1
    path = [(i, j)]
    while i or j:
        moves = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]
        i, j = min(
            (m for m in moves if m[0] >= 0 and m[1] >= 0),
            key=lambda m: acc[m],  # min keeps the first of equal values: the order above
        )
        path.append((i, j))
    return np.asarray(path[::-1], dtype=np.int64)


def align_tokens(source: Sequence[str], target: Sequence[str]) -> TokenAlignment:
    r"""Minimum-edit-distance alignment of two token sequences (FuseLLM's MinED).

    Among the monotone paths of pairs :math:`(i_k, j_k)` from :math:`(0, 0)` to
    :math:`(n-1, m-1)` whose steps are :math:`(1, 0)`, :math:`(0, 1)` or :math:`(1, 1)`,
    the one minimising

    .. math::

        \sum_k \operatorname{lev}(s_{i_k}, t_{j_k}),

    the summed Levenshtein distances of the paired token strings, found by dynamic time
    warping in :math:`O(nm)` time and memory (Wan et al. 2024, Sec. 3.3). Ties go to the
    diagonal step, then to the step along the source, so identical sequences align one to
    one.

    Parameters
    ----------
    source, target : sequence of str
        Token strings of the same text in two tokenisations (:func:`token_strings`), the
        teacher's as ``source``, the student's as ``target``.

    Returns
    -------
    TokenAlignment
        The pairs and their cost.

    Raises
    ------
    ValueError
        If either sequence is empty, a single string, or holds a non-string.

    References
    ----------
    F. Wan et al. Knowledge Fusion of Large Language Models. ICLR 2024.

    Examples
    --------
    >>> a = align_tokens([" hello", " world"], [" hello", " wor", "ld"])
    >>> a.pairs.tolist()
    [[0, 0], [1, 1], [1, 2]]
    >>> a.source_for_target().tolist()
    [0, 1, -1]
    """
    source = _check_tokens("source", source)
    target = _check_tokens("target", target)
    acc = _accumulate(_edit_costs(source, target))
    return TokenAlignment(pairs=_backtrack(acc), cost=float(acc[-1, -1]))


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each id decoded on its own (special tokens kept): the strings :func:`align_tokens`
    and :func:`map_vocab` compare.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        The tokenizer the ids come from.
    ids : sequence of int
        Token ids (a sequence, or ``range(len(tokenizer))`` for the whole vocabulary).

    Returns
    -------
    list of str
        One string per id, space markers (``Ġ``, ``▁``) decoded to spaces.
    """
    return tokenizer.batch_decode(
        [[int(i)] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


def map_vocab(
    source_vocab: Sequence[str], target_vocab: Sequence[str], ids: Sequence[int] | None = None
) -> np.ndarray:
    """Source (teacher) vocabulary ids to target (student) ids by minimum edit distance.

    Id ``i`` maps to the target id holding the same string when there is one (the lowest
    such id), else to the target string of minimum Levenshtein distance to
    ``source_vocab[i]`` (ties: the lowest id), as FuseLLM maps distributions between
    vocabularies (Wan et al. 2024, App. A).

    Parameters
    ----------
    source_vocab, target_vocab : sequence of str
        Every id's string (:func:`token_strings` over ``range(len(tokenizer))``).
    ids : sequence of int, optional
        Map only these source ids (e.g. those in a cache's top-k entries); the rest map
        to ``-1``. Default: all. The cost is :math:`O(|ids| \\cdot |target|)` distances
        for the ids without an exact match.

    Returns
    -------
    numpy.ndarray ``(len(source_vocab),)`` int64
        The target id of each source id (``-1`` for ids not asked for).

    Raises
    ------
    ValueError
        For an empty vocabulary, non-strings, or ids outside the source vocabulary.
    """
    source_vocab = _check_tokens("source_vocab", source_vocab)
    target_vocab = _check_tokens("target_vocab", target_vocab)
    wanted = np.arange(len(source_vocab)) if ids is None else np.unique(np.asarray(ids, int))
    if wanted.size and (wanted.min() < 0 or wanted.max() >= len(source_vocab)):
        raise ValueError(f"ids must lie in [0, {len(source_vocab)}), got {wanted.min()}..")
    exact: dict[str, int] = {}
    for j, text in enumerate(target_vocab):
        exact.setdefault(text, j)
    out = np.full(len(source_vocab), -1, dtype=np.int64)
    rest = []
    for i in wanted.tolist():
        j = exact.get(source_vocab[i])
        if j is None:
            rest.append(i)
        else:
            out[i] = j
    distance, cdist = _levenshtein()
    for start in range(0, len(rest), _VOCAB_BLOCK):
        block = rest[start : start + _VOCAB_BLOCK]
        d = cdist([source_vocab[i] for i in block], target_vocab, scorer=distance, workers=1)
        out[block] = d.argmin(axis=1)  # argmin keeps the first of equal distances
    return out


def project_topk(
    topk: TopK, alignment: TokenAlignment, id_map: np.ndarray, target_length: int
) -> tuple[TopK, np.ndarray]:
    r"""A teacher's top-k rows on the student's positions and vocabulary.

    Student position :math:`j` receives the row of teacher position
    :meth:`TokenAlignment.source_for_target` ``[j]``, its ids mapped by ``id_map``; entries
    mapped to the same student id are merged (their probabilities add:
    :math:`\log \sum_r e^{\ell_r}`), and the row is re-sorted in descending order and padded
    to the width ``k`` with entries of probability 0 (:data:`PAD_LOGPROB`) on ids the row
    does not hold. Positions with no teacher row hold padding only and are masked out.

    Parameters
    ----------
    topk : TopK
        One example's teacher rows, ``logprobs`` and ``indices`` of shape ``(n, k)`` or
        ``(1, n, k)`` (a :class:`fusion.cache.TeacherCache` item), ``n`` the teacher's
        tokens as aligned.
    alignment : TokenAlignment
        From :func:`align_tokens` (teacher tokens as source, student tokens as target).
    id_map : numpy.ndarray
        From :func:`map_vocab`; every id in ``topk.indices`` must be mapped (``>= 0``).
    target_length : int
        The student's number of tokens ``m``.

    Returns
    -------
    (TopK, numpy.ndarray)
        ``TopK`` of shape ``(1, m, k)`` (same dtypes and device as the input) and the
        ``(1, m)`` bool mask of the positions that received a teacher row; pass them as
        ``teacher_logits=`` and ``mask=`` to :func:`fusion.jsd_loss`.

    Raises
    ------
    ValueError
        For shapes that disagree with the alignment or ids without a mapping.
    """
    import torch

    logprobs, indices = topk.logprobs, topk.indices
    if logprobs.ndim == 3:
        logprobs, indices = logprobs[0], indices[0]
    if logprobs.shape != indices.shape or logprobs.ndim != 2:
        raise ValueError(f"topk must hold (n, k) rows, got {tuple(topk.logprobs.shape)}")
    n = int(alignment.pairs[-1, 0]) + 1
    if logprobs.shape[0] != n or int(alignment.pairs[-1, 1]) + 1 != target_length:
        raise ValueError(
            f"the alignment covers {n} teacher and {int(alignment.pairs[-1, 1]) + 1} student "
            f"tokens, but topk has {logprobs.shape[0]} rows and target_length is {target_length}"
        )
    id_map = torch.as_tensor(np.asarray(id_map), device=indices.device)
    mapped = id_map[indices.long()]
    if (mapped < 0).any():
        raise ValueError("id_map leaves some teacher ids of topk unmapped (-1)")
    source = torch.as_tensor(alignment.source_for_target(target_length), device=indices.device)
    has = source >= 0
    rows_lp, rows_id = logprobs[source.clamp(min=0)], mapped[source.clamp(min=0)]
    merged_lp, merged_id = _merge_duplicates(rows_lp.double(), rows_id)
    merged_lp = torch.where(has[:, None], merged_lp, PAD_LOGPROB)
    out = TopK(merged_lp.to(logprobs.dtype)[None], merged_id.to(indices.dtype)[None])
    return out, has.cpu().numpy()[None]


def _merge_duplicates(lp, ids):
    """Per row, add the probabilities of equal ids, sort descending, pad to the width.

    Padding entries take ids absent from the row (the smallest ones; a row of ``k`` entries
    always finds them below ``k``) and the log-probability :data:`PAD_LOGPROB`, whose
    probability is exactly 0 in float32 and float64: the row is the same distribution
    with distinct ids, as :func:`fusion.jsd_loss` requires.
    """
    import torch

    width = ids.shape[1]
    order = torch.argsort(ids, dim=1, stable=True)
    ids_sorted, lp_sorted = ids.gather(1, order), lp.gather(1, order)
    first = torch.ones_like(ids_sorted, dtype=torch.bool)
    first[:, 1:] = ids_sorted[:, 1:] != ids_sorted[:, :-1]
    group = torch.cumsum(first.long(), dim=1) - 1  # group number of each entry in its row
    # log-sum-exp per group, shifted by the row maximum
    top = lp_sorted.max(dim=1, keepdim=True).values
    mass = torch.zeros_like(lp_sorted).scatter_add_(1, group, torch.exp(lp_sorted - top))
    merged_ids = torch.zeros_like(ids).scatter_(1, group, ids_sorted)
    n_real = group[:, -1:] + 1
    slot = torch.arange(width, device=ids.device)[None]
    real = slot < n_real
    # free ids: the smallest ids below the width that the row does not hold
    taken = torch.zeros_like(real)
    small = ids_sorted < width
    taken.scatter_(1, torch.where(small, ids_sorted, 0), small)
    free = torch.argsort(taken.long(), dim=1, stable=True)  # untaken ids first, ascending
    pad_ids = free.gather(1, (slot - n_real).clamp(min=0))
    merged = torch.where(real, torch.log(mass.clamp(min=1e-300)) + top, PAD_LOGPROB)
    merged_ids = torch.where(real, merged_ids, pad_ids)
    desc = torch.argsort(merged, dim=1, descending=True, stable=True)
    return merged.gather(1, desc), merged_ids.gather(1, desc)
