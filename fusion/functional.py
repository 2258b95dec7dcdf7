r"""Distillation losses as pure functions, in the style of :mod:`torch.nn.functional`.

``gld_loss``
    Graph-on-Logits Distillation (InfiGFusion, Wang et al. 2025): compares the sorted
    weighted degrees of the student's and the teacher's co-activation graphs. The
    graphs live on different vocabularies; only sorted degree vectors are compared, so
    the loss needs no token alignment inside a sequence.
``uld_loss``
    Universal Logit Distillation (Boizard et al. 2024): per aligned position, the L1
    distance between the two distributions sorted in descending order, the smaller
    vocabulary zero-padded; with ``top_k`` the top-k variant used by InfiFusion
    (Yan et al. 2025), which compares only the ``k`` largest probabilities.

References
----------
Y. Wang et al. InfiGFusion: Graph-on-Logits Distillation via Efficient
Gromov-Wasserstein for Model Fusion. arXiv 2505.13893 (2025).
N. Boizard et al. Towards Cross-Tokenizer Distillation: the Universal Logit
Distillation Loss for LLMs. arXiv 2402.12030 (2024).
Z. Yan et al. InfiFusion: A Unified Framework for Enhanced Cross-Model Reasoning via
LLM Fusion. arXiv 2501.02795 (2025).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from fusion._deprecation import renamed
from fusion.coactivation import (
    FEATURES,
    GRAPHS,
    NODES,
    VALUES,
    check_choice,
    degree_features,
    degrees,
    normalize_mask,
    share_profile,
    teacher_topk_values,
    topk_values,
)
from fusion.types import StudentTopK, TopK
from fusion.validation import nan_where, nonfinite_sequences, zero_where
from gwlite import wasserstein_1d

__all__ = ["REDUCTIONS", "AlignedSpans", "align_spans", "gld_loss", "jsd_loss", "uld_loss"]

REDUCTIONS = ("mean", "sum", "none")

Teacher = torch.Tensor | TopK
Student = torch.Tensor | StudentTopK


def _student_shape(student: Student) -> tuple[int, ...]:
    """``(B, T_s, width)`` of the student logits or of a precomputed StudentTopK."""
    x = student.values if isinstance(student, StudentTopK) else student
    if x.ndim != 3:
        raise ValueError(f"student_logits must be (B, T_s, V_s), got {tuple(x.shape)}")
    return tuple(x.shape)


def _student_values(
    student: Student, k: int, *, temperature: float, values: str, chunk_size: int | None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The student's kept values and ids for ``k``, and its vocabulary size.

    Logits go through :func:`fusion.coactivation.topk_values`; a precomputed
    :class:`fusion.types.StudentTopK` is used as it is (its first ``k`` entries), after
    checking it was computed with the same options.
    """
    if not isinstance(student, StudentTopK):
        vals, idx = topk_values(
            student, k, temperature=temperature, values=values, chunk_size=chunk_size
        )
        return vals, idx, student.shape[-1]
    if student.values_kind != values or not math.isclose(student.temperature, temperature):
        raise ValueError(
            f"the precomputed StudentTopK holds values={student.values_kind!r} at temperature "
            f"{student.temperature}, the loss needs values={values!r} at {temperature}"
        )
    if student.values.shape[-1] < k:
        raise ValueError(
            f"the precomputed StudentTopK holds {student.values.shape[-1]} entries, fewer than k={k}"
        )
    return student.values[..., :k], student.indices[..., :k], student.vocab_size


def _teacher_shape(teacher: Teacher) -> tuple[int, int]:
    """``(B, T_t)`` of a teacher given as logits or as a cached TopK."""
    x = teacher.logprobs if isinstance(teacher, TopK) else teacher
    if x.ndim != 3:
        raise ValueError(
            f"the teacher must be (B, T_t, V_t) or TopK of (B, T_t, k'), got {x.ndim}-D"
        )
    return x.shape[0], x.shape[1]


def _check_student(student: Student, teacher: Teacher) -> None:
    s_batch = _student_shape(student)[0]
    batch, _ = _teacher_shape(teacher)
    if batch != s_batch:
        raise ValueError(f"student batch {s_batch} != teacher batch {batch}")


def _reduce(per_item: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_item
    if reduction == "sum":
        return per_item.sum()
    return per_item.mean()


def sorted_l1(f_student: torch.Tensor, f_teacher: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_i |f_s(i) - f_t(i)|` between sorted vectors of equal length ``m``.

    Computed as :math:`m \, W_1` by :func:`gwlite.wasserstein_1d`, the project's single
    implementation of 1-D optimal transport by sorting.
    """
    return f_student.shape[-1] * wasserstein_1d(f_student, f_teacher, p=1)


def gld_loss(
    student_logits: Student,
    teacher: Teacher,
    student_mask: torch.Tensor | None = None,
    teacher_mask: torch.Tensor | None = None,
    *,
    k: int = 10,
    m: int = 64,
    temperature: float = 1.0,
    values: str = "prob",
    nodes: str = "vocab",
    graph: str = "sequence",
    features: str = "shares",
    reduction: str = "mean",
    chunk_size: int | None = None,
    process_group: Any = None,
    nan_policy: str = "raise",
) -> torch.Tensor:
    r"""Graph-on-Logits Distillation loss (InfiGFusion), without any vocab x vocab matrix.

    Per position, :math:`x_t = \mathrm{softmax}(z_t/\tau)` keeps its ``k`` largest
    entries, not renormalised (:math:`\tilde x_t`). Per sequence, over its :math:`T'`
    unmasked positions, the co-activation graph
    :math:`A = \frac{1}{T'}\sum_t \tilde x_t \tilde x_t^\top` has weighted degrees
    :math:`f_i = \frac{1}{T'}\sum_t \tilde x_{t,i} \sum_j \tilde x_{t,j}` and self-loops
    :math:`A_{ii} = \frac{1}{T'}\sum_t \tilde x_{t,i}^2` (by scatter-add, :math:`O(Tk)`).
    Two ways of comparing the student's graph with the teacher's (``features``):

    ``"shares"`` (default)
        Each node's co-activation share :math:`c_i = 1 - A_{ii}/f_i`, weighted by its
        degree :math:`\nu_i = f_i / \sum_l f_l` (:func:`fusion.coactivation.share_profile`),
        and the 1-D Wasserstein distance between the two weighted distributions,

        .. math::

            \mathrm{GLD} = W_1\Big(\sum_i \nu^s_i \delta_{c^s_i},\
            \sum_j \nu^t_j \delta_{c^t_j}\Big) \in [0, 1].

        Invariant to the tokenizers' granularity: sequence lengths, vocabulary sizes and
        token repetition do not enter, so two confident models score (close to) 0 and a
        uniform student :math:`1 - 1/k` (see docs/guide/gld.md, "Tokenizer granularity").
    ``"degrees"`` (InfiGFusion's graph feature compression)
        With :math:`\hat f` the ``m`` largest degrees sorted in descending order and
        zero-padded to ``m``,

        .. math::

            \mathrm{GLD} = \sum_{i=1}^{m} |\hat f_{\mathrm{student}}(i) - \hat f_{\mathrm{teacher}}(i)|.

        Padding both graphs with isolated nodes to a common size :math:`N`, uniform node
        weights, this is a truncation of the sorted closed form of GW (gwlite's
        ``method="sorted"``, :math:`W_1` between degree distributions):
        :math:`\mathrm{GLD} \le N^2 W_1 \le N^2 \mathrm{GW}_1(A_s, A_t)`, with equality in
        the first step when :math:`m = N`. Degrees scale with token frequencies, so this
        form is biased by tokenizer granularity.

    Both 1-D distances are computed by :func:`gwlite.wasserstein_1d`.

    Parameters
    ----------
    student_logits : tensor ``(B, T_s, V_s)`` or fusion.types.StudentTopK
        Any floating dtype (bf16/fp16 computed in fp32). Never copied as a whole. A
        :class:`~fusion.types.StudentTopK` from :func:`fusion.coactivation.student_topk`
        (same ``values`` and ``temperature``, at least ``k`` entries) reuses a top-k
        already computed for another loss or teacher.
    teacher : tensor ``(B, T_t, V_t)`` or :class:`fusion.TopK`
        Teacher logits, or cached ``TopK(logprobs, indices)`` of shape ``(B, T_t, k')``
        with ``k' >= k`` and ``logprobs = log_softmax(teacher_logits / temperature)``
        (the cache's temperature; it is not applied again).
    student_mask, teacher_mask : bool tensors ``(B, T_s)``, ``(B, T_t)``, optional
        Positions that count (answer span, no padding); all positions when omitted.
        Other dtypes are refused.
    k : int
        Entries kept per position (default 10).
    m : int
        Degrees kept per graph by ``features="degrees"`` (default 64).
    temperature : float
        :math:`\tau` of the softmax (default 1).
    values : {"prob", "logit", "zscore"}
        What the kept entries hold: probabilities (default), logits divided by
        :math:`\tau`, or z-scored logits (InfiFusion's standardisation). The kept ids
        are the same in all cases. ``"logit"``/``"zscore"`` need teacher logits and
        ``features="degrees"`` (signed values have no co-activation share).
    nodes : {"vocab", "rank"}
        Graph nodes: vocabulary ids (default), or the ``k`` ranks of the sorted kept
        vectors (a ``k x k`` graph).
    graph : {"sequence", "batch"}
        One graph per sequence (default), or one graph over all unmasked positions of
        the batch and, under :mod:`torch.distributed`, of all ranks (node sums and
        position counts are all-reduced; see :func:`fusion.coactivation.degrees` for the
        gradient convention).
    features : {"shares", "degrees"}
        What is compared per graph (above).
    reduction : {"mean", "sum", "none"}
        Over the ``B`` sequences (``"none"``: shape ``(B,)``). With ``graph="batch"``
        there is one graph: ``"mean"`` and ``"sum"`` give it as a 0-d tensor and
        ``"none"`` as shape ``(1,)``.
    chunk_size : int, optional
        Positions per block of the top-k pass (default: a 512 MiB fp32 buffer).
    process_group : optional
        Process group of the all-reduce for ``graph="batch"``.
    nan_policy : {"raise", "propagate"}
        Logits (or cached log-probabilities) holding NaN or +-inf, and a ``TopK`` with a
        positive log-probability, raise a ``ValueError`` (default); ``"propagate"`` gives
        the affected sequences (with ``graph="batch"``, the graph) a NaN loss instead.
        Never a finite loss with NaN gradients (:mod:`fusion.validation`).

    Returns
    -------
    tensor
        fp32 (fp64 for fp64 inputs). A graph with no unmasked position on either side
        contributes 0 (still counted in the mean's denominator ``B``).

    Examples
    --------
    >>> import torch, fusion
    >>> s = torch.randn(2, 7, 50, requires_grad=True)
    >>> t = torch.randn(2, 9, 80)
    >>> loss = fusion.gld_loss(s, t, k=4)
    >>> loss.backward()
    >>> bool(torch.isfinite(s.grad).all())
    True
    """
    _check_student(student_logits, teacher)
    for name, value, choices in (
        ("values", values, VALUES),
        ("nodes", nodes, NODES),
        ("graph", graph, GRAPHS),
        ("features", features, FEATURES),
        ("reduction", reduction, REDUCTIONS),
    ):
        check_choice(name, value, choices)
    if features == "shares" and values != "prob":
        raise ValueError(
            f"values={values!r} gives signed kept values, which have no co-activation share: "
            "use features='degrees' with it, or values='prob'"
        )
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    bad = nonfinite_sequences(student_logits, teacher, nan_policy=nan_policy)
    opts = {"temperature": temperature, "values": values, "chunk_size": chunk_size}
    s_vals, s_idx, s_nodes = _student_values(student_logits, k, **opts)
    t_vals, t_idx = teacher_topk_values(teacher, k, **opts)
    if bad is not None:  # "propagate": keep the 1-D transport finite, the NaN is put back below
        s_vals, t_vals = zero_where(s_vals, bad), zero_where(t_vals, bad)
    common = {"nodes": nodes, "graph": graph, "process_group": process_group}
    t_nodes = None if isinstance(teacher, TopK) else teacher.shape[-1]
    f_s = degrees(s_vals, s_idx, student_mask, num_nodes=s_nodes, **common)
    f_t = degrees(t_vals, t_idx, teacher_mask, num_nodes=t_nodes, **common)
    if features == "degrees":
        per_graph = sorted_l1(degree_features(f_s.degrees, m), degree_features(f_t.degrees, m))
    else:
        (c_s, w_s), (c_t, w_t) = share_profile(f_s), share_profile(f_t)
        per_graph = wasserstein_1d(c_s, c_t.to(c_s.dtype), w_s, w_t.to(c_s.dtype), p=1)
    empty = (f_s.counts == 0) | (f_t.counts == 0)
    per_graph = nan_where(torch.where(empty, torch.zeros_like(per_graph), per_graph), bad)
    if graph == "batch" and reduction != "none":
        return per_graph[0]
    return _reduce(per_graph, reduction)


# ---------------------------------------------------------------------------------------
# ULD
# ---------------------------------------------------------------------------------------


class AlignedSpans(NamedTuple):
    """Pairs of (student position, teacher position) that ULD compares.

    Attributes
    ----------
    student_seq, student_pos, teacher_seq, teacher_pos : long tensors ``(P,)``
        The i-th pair compares ``student[student_seq[i], student_pos[i]]`` with
        ``teacher[teacher_seq[i], teacher_pos[i]]`` (``student_seq == teacher_seq``).
    lengths : long tensor ``(B,)``
        Aligned positions per sequence: ``min(#student, #teacher)`` unmasked positions.
    """

    student_seq: torch.Tensor
    student_pos: torch.Tensor
    teacher_seq: torch.Tensor
    teacher_pos: torch.Tensor
    lengths: torch.Tensor


def align_spans(student_mask: torch.Tensor, teacher_mask: torch.Tensor) -> AlignedSpans:
    """Align the unmasked positions of each sequence by their start, truncated to the shorter.

    The j-th unmasked student position is paired with the j-th unmasked teacher position,
    for ``j < min(#student, #teacher)`` (the ULD convention for answer spans produced by
    different tokenizers; masks need not be contiguous).
    """
    lengths = torch.minimum(student_mask.sum(dim=1), teacher_mask.sum(dim=1))

    def first(mask: torch.Tensor):
        rank = torch.cumsum(mask.long(), dim=1) - 1
        return (mask & (rank < lengths[:, None])).nonzero(as_tuple=True)  # row-major order

    s_seq, s_pos = first(student_mask)
    t_seq, t_pos = first(teacher_mask)
    return AlignedSpans(s_seq, s_pos, t_seq, t_pos, lengths)


def _sorted_probs(z: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.softmax(z.to(_work_dtype(z)) / tau, dim=-1)
    return torch.sort(probs, dim=-1, descending=True)


def _padded_l1(ps: torch.Tensor, pt: torch.Tensor) -> torch.Tensor:
    """L1 between two descending vectors, the shorter one zero-padded (never materialised)."""
    common = min(ps.shape[-1], pt.shape[-1])
    d = (ps[:, :common] - pt[:, :common]).abs().sum(dim=-1)
    return d + ps[:, common:].sum(dim=-1) + pt[:, common:].sum(dim=-1)


def _side_grad(tau, order, probs, sign, g, out_dtype):
    r"""Gradient of :math:`\sum_i g\, s_i \, p_{(i)}` for sorted softmax probs, back to logits.

    ``h`` is the sign in vocabulary order; softmax backward gives
    :math:`\partial z = \frac1\tau\, p \odot (h - \langle h, p\rangle)` per row.
    """
    h = torch.empty_like(probs).scatter_(1, order, sign)
    p = torch.empty_like(probs).scatter_(1, order, probs)
    inner = (h * p).sum(dim=-1, keepdim=True)
    return (g[:, None] / tau * p * (h - inner)).to(out_dtype)


class _SortedL1(torch.autograd.Function):
    """ULD distances of aligned pairs, block by block, recomputing in backward."""

    @staticmethod
    def forward(ctx, student, teacher, s_seq, s_pos, t_seq, t_pos, taus, block):
        dist = []
        for start in range(0, s_seq.shape[0], block):
            sl = slice(start, start + block)
            ps, _ = _sorted_probs(student[s_seq[sl], s_pos[sl]], taus[0])
            pt, _ = _sorted_probs(teacher[t_seq[sl], t_pos[sl]], taus[1])
            dist.append(_padded_l1(ps, pt))
        ctx.save_for_backward(student, teacher, s_seq, s_pos, t_seq, t_pos)
        ctx.config = (taus, block)
        if not dist:
            return student.new_zeros(0, dtype=_work_dtype(student))
        return torch.cat(dist)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        student, teacher, s_seq, s_pos, t_seq, t_pos = ctx.saved_tensors
        (tau_s, tau_t), block = ctx.config
        need_s, need_t = ctx.needs_input_grad[:2]
        g_s = torch.zeros_like(student) if need_s else None
        g_t = torch.zeros_like(teacher) if need_t else None
        for start in range(0, s_seq.shape[0], block):
            sl = slice(start, start + block)
            zs, zt = student[s_seq[sl], s_pos[sl]], teacher[t_seq[sl], t_pos[sl]]
            ps, os_ = _sorted_probs(zs, tau_s)
            pt, ot = _sorted_probs(zt, tau_t)
            common = min(ps.shape[-1], pt.shape[-1])
            diff = torch.sign(ps[:, :common] - pt[:, :common])
            # past the shorter vocabulary the other side is compared with zeros: |p - 0| = p
            sign_s = torch.cat([diff, torch.ones_like(ps[:, common:])], dim=1)
            sign_t = torch.cat([-diff, torch.ones_like(pt[:, common:])], dim=1)
            g = grad[sl].to(ps.dtype)
            if need_s:
                g_s[s_seq[sl], s_pos[sl]] = _side_grad(tau_s, os_, ps, sign_s, g, g_s.dtype)
            if need_t:
                g_t[t_seq[sl], t_pos[sl]] = _side_grad(tau_t, ot, pt, sign_t, g, g_t.dtype)
        return g_s, g_t, None, None, None, None, None, None


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _uld_block(vocab: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size
    # the sort needs values and int64 indices per entry: ~16 bytes x 2 sides
    return max(1, (256 * 2**20) // (32 * vocab))


def uld_loss(
    student_logits: Student,
    teacher: Teacher,
    student_mask: torch.Tensor | None = None,
    teacher_mask: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    teacher_temperature: float = 1.0,
    top_k: int | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
    nan_policy: str = "raise",
    student_temperature: float | None = None,
) -> torch.Tensor:
    r"""Universal Logit Distillation loss (Boizard et al. 2024), and its top-k variant.

    Let :math:`p^s_t = \mathrm{sort}_\downarrow \mathrm{softmax}(z^s_t/\tau_s)` and
    :math:`p^u_u = \mathrm{sort}_\downarrow \mathrm{softmax}(z^u_u/\tau_t)` (teacher),
    the shorter zero-padded to :math:`\max(V_s, V_t)`. The unmasked positions of each
    sequence are aligned by their start and truncated to the shorter span
    (:func:`align_spans`), giving :math:`L_b` pairs :math:`(t_j, u_j)`; then

    .. math::

        \mathrm{ULD}_b = \frac{1}{L_b} \sum_{j=1}^{L_b} \sum_i |p^s_{t_j}(i) - p^u_{u_j}(i)|.

    With ``top_k = K`` (the top-k variant of InfiFusion), only the :math:`K` largest
    probabilities of each sorted distribution are kept (not renormalised):
    :math:`\sum_{i \le K} |p^s(i) - p^u(i)|`. It needs only the teacher's top entries,
    so it accepts a cached :class:`fusion.TopK` (``k' >= K``; its temperature is the
    cache's), and it costs one top-k instead of a full sort of the vocabulary.

    Parameters
    ----------
    student_logits : tensor ``(B, T_s, V_s)`` or fusion.types.StudentTopK
        A :class:`~fusion.types.StudentTopK` (probabilities at ``temperature``,
        at least ``top_k`` entries) only with ``top_k``: it reuses a top-k computed once
        for several losses or teachers.
    teacher : tensor ``(B, T_t, V_t)`` or :class:`fusion.TopK`
        ``TopK`` only with ``top_k`` (the full sorted distribution is not cached).
    student_mask, teacher_mask : bool tensors, optional
        The answer spans (all positions when omitted).
    temperature, teacher_temperature : float
        :math:`\tau_s` (the student's, named as in :func:`gld_loss`) and :math:`\tau_t`.
    top_k : int, optional
        ``None``: the full ULD; an int: the top-k variant.
    reduction : {"mean", "sum", "none"}
        Over the ``B`` sequences; a sequence with no aligned pair contributes 0.
    chunk_size : int, optional
        Aligned pairs per block of the full ULD (memory is one block's sort).
    nan_policy : {"raise", "propagate"}
        Non-finite logits or log-probabilities (and positive cached log-probabilities)
        raise a ``ValueError`` (default), or give the affected sequences a NaN loss.
    student_temperature : float, optional
        Deprecated name of ``temperature`` (FutureWarning).

    Returns
    -------
    tensor
        fp32 (fp64 for fp64 inputs).
    """
    student_temperature = renamed("student_temperature", student_temperature, temperature, 1.0)
    _check_student(student_logits, teacher)
    check_choice("reduction", reduction, REDUCTIONS)
    for name, tau in (
        ("temperature", student_temperature),
        ("teacher_temperature", teacher_temperature),
    ):
        if tau <= 0:
            raise ValueError(f"{name} must be > 0, got {tau}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    bad = nonfinite_sequences(student_logits, teacher, nan_policy=nan_policy)
    batch, t_len = _teacher_shape(teacher)
    s_len = _student_shape(student_logits)[1]
    device = (
        student_logits.values.device
        if isinstance(student_logits, StudentTopK)
        else (student_logits.device)
    )
    s_mask = normalize_mask(student_mask, batch, s_len, device)
    spans = align_spans(s_mask, normalize_mask(teacher_mask, batch, t_len, device))
    if top_k is None and isinstance(student_logits, StudentTopK):
        raise ValueError(
            "the full ULD sorts the student's whole distribution; a StudentTopK holds its top "
            "entries only: use the top-k variant (top_k=K) or pass the logits"
        )
    if top_k is not None:
        dist = _topk_uld(
            student_logits, teacher, spans, top_k, student_temperature, teacher_temperature
        )
    elif isinstance(teacher, TopK):
        raise ValueError(
            "the full ULD needs the teacher's whole distribution; with a cached TopK teacher "
            "use the top-k variant (top_k=K with K <= k')"
        )
    else:
        block = _uld_block(max(student_logits.shape[-1], teacher.shape[-1]), chunk_size)
        taus = (float(student_temperature), float(teacher_temperature))
        dist = _SortedL1.apply(student_logits, teacher, *spans[:4], taus, block)
    per_seq = torch.zeros(batch, dtype=dist.dtype, device=device).index_add(
        0, spans.student_seq, dist
    )
    per_seq = per_seq / spans.lengths.clamp_min(1).to(dist.dtype)
    return _reduce(nan_where(per_seq, bad), reduction)


def _topk_uld(student_logits, teacher, spans: AlignedSpans, k: int, tau_s: float, tau_t: float):
    opts = {"temperature": tau_s, "values": "prob", "chunk_size": None}
    s_vals, _, _ = _student_values(student_logits, k, **opts)
    t_vals, _ = teacher_topk_values(teacher, k, temperature=tau_t)
    # a cache is sorted by construction, but the comparison must not depend on it
    t_vals = torch.sort(t_vals, dim=-1, descending=True).values.to(s_vals.dtype)
    ps = s_vals[spans.student_seq, spans.student_pos]
    pt = t_vals[spans.teacher_seq, spans.teacher_pos]
    return (ps - pt).abs().sum(dim=-1)


# ---------------------------------------------------------------------------------------
# generalised Jensen-Shannon divergence (same-vocabulary teachers)
# ---------------------------------------------------------------------------------------


def _jsd_rows(
    student_rows: torch.Tensor, teacher_rows: torch.Tensor | TopK, beta: float, tau: float
) -> torch.Tensor:
    r"""Generalised JSD of each row pair ``(P, V)``, in TRL's convention; shape ``(P,)``.

    A dense teacher row is ``softmax(z_t / tau)``. A :class:`fusion.TopK` row is the
    teacher's top entries renormalised, :math:`q_i = e^{\ell_i} / \sum_{l \in K} e^{\ell_l}`
    on its support :math:`K` (0 elsewhere; ``tau`` is not applied again). Off the support
    the mixture is :math:`M_i = (1 - \beta) p_i`, so the student's mass there adds
    :math:`-(1-\beta) \log(1-\beta) (1 - \sum_{i \in K} p_i)` exactly, in :math:`O(k)`.
    """
    work = _work_dtype(student_rows)
    ls = torch.log_softmax(student_rows.to(work) / tau, dim=-1)
    if isinstance(teacher_rows, TopK):
        lt = teacher_rows.logprobs.to(work)
        lt = lt - torch.logsumexp(lt, dim=-1, keepdim=True)  # renormalised on its support
        ls_k = ls.gather(-1, teacher_rows.indices.long())
        outside = (1.0 - ls_k.exp().sum(dim=-1)).clamp_min(0.0)
    else:
        lt = torch.log_softmax(teacher_rows.to(work) / tau, dim=-1)
        ls_k, outside = ls, None

    def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """KL(p || q) per row, from log-probabilities (F.kl_div's argument order is swapped)."""
        return torch.nn.functional.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)

    if beta == 0:  # forward KL(teacher || student)
        return kl(lt, ls_k)
    if beta == 1:  # reverse KL(student || teacher); a TopK teacher is refused upstream
        return kl(ls, lt)
    log_m = torch.logaddexp(ls_k + math.log1p(-beta), lt + math.log(beta))
    out = beta * kl(lt, log_m) + (1.0 - beta) * kl(ls_k, log_m)
    if outside is not None:
        out = out - (1.0 - beta) * math.log1p(-beta) * outside
    return out


def check_jsd_options(beta: Any, temperature: Any, reduction: str) -> None:
    check_choice("reduction", reduction, REDUCTIONS)
    for name, value, ok in (
        ("beta", beta, lambda v: 0.0 <= v <= 1.0),
        ("temperature", temperature, lambda v: v > 0),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not ok(value):
            raise ValueError(
                f"{name} must be in [0, 1], got {value}"
                if name == "beta"
                else f"temperature must be > 0, got {value}"
            )


def jsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | TopK,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Generalised Jensen-Shannon divergence for a teacher with the student's vocabulary.

    The convention of TRL's ``GKDTrainer.generalized_jsd_loss`` (Agarwal et al. 2024,
    Eq. 1). Per position, with :math:`p = \mathrm{softmax}(z_s/\tau)` (student),
    :math:`q = \mathrm{softmax}(z_t/\tau)` (teacher) and the mixture
    :math:`M = \beta q + (1-\beta) p`,

    .. math::

        \mathrm{JSD}_\beta = \beta\,\mathrm{KL}(q \,\|\, M) + (1-\beta)\,\mathrm{KL}(p \,\|\, M),
        \quad 0 < \beta < 1,

    and, as in TRL, :math:`\beta = 0` is the forward :math:`\mathrm{KL}(q \,\|\, p)` and
    :math:`\beta = 1` the reverse :math:`\mathrm{KL}(p \,\|\, q)` (the formula itself
    tends to 0 at both ends; these endpoints are definitions, not limits).

    Parameters
    ----------
    student_logits : tensor ``(B, T, V)``
        Any floating dtype (computed in fp32, fp64 for fp64 input).
    teacher_logits : tensor ``(B, T, V)`` or :class:`fusion.TopK` ``(B, T, k)``
        Logits over the same vocabulary, position ``t`` predicting the same token as the
        student's. A cached ``TopK`` (log-probabilities at the cache's temperature, not
        applied again) stands for its entries renormalised to sum to 1, and the JSD to
        that distribution is exact (the student's mass off the teacher's support enters
        in closed form); its reverse KL is infinite, so ``beta=1`` needs logits.
    beta : float
        Interpolation in ``[0, 1]`` (default 0.5).
    temperature : float
        :math:`\tau`, dividing both logits (default 1).
    mask : bool tensor ``(B, T)``, optional
        Positions that count (TRL's ``labels != -100``); all when omitted.
    reduction : {"mean", "sum", "none"}
        ``"mean"``: over the unmasked positions (0 when there is none); ``"sum"``;
        ``"none"``: shape ``(B, T)``, 0 at masked positions.

    Returns
    -------
    tensor
        fp32 (fp64 for fp64 inputs).

    Raises
    ------
    ValueError
        For NaN or infinite logits, or positive cached log-probabilities (as
        :func:`gld_loss` and :func:`uld_loss` do).

    References
    ----------
    R. Agarwal et al. On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes. ICLR 2024 (arXiv 2306.13649).

    Examples
    --------
    >>> import torch, fusion
    >>> s = torch.randn(2, 5, 30, requires_grad=True)
    >>> loss = fusion.jsd_loss(s, torch.randn(2, 5, 30), beta=0.5)
    >>> loss.backward()
    >>> bool(loss >= 0)
    True
    """
    check_jsd_options(beta, temperature, reduction)
    if student_logits.ndim != 3:
        raise ValueError(f"student_logits must be (B, T, V), got {tuple(student_logits.shape)}")
    t_shape = tuple(
        teacher_logits.logprobs.shape if isinstance(teacher_logits, TopK) else teacher_logits.shape
    )
    s_shape = tuple(student_logits.shape)
    if isinstance(teacher_logits, TopK):
        if (
            t_shape[:2] != s_shape[:2]
            or teacher_logits.indices.shape != teacher_logits.logprobs.shape
        ):
            raise ValueError(
                f"a TopK teacher must be (B, T, k) with the student's (B, T) = {s_shape[:2]}, "
                f"got logprobs {t_shape} and indices {tuple(teacher_logits.indices.shape)}"
            )
        if beta == 1:
            raise ValueError(
                "beta=1 is the reverse KL(student || teacher), infinite against a top-k "
                "teacher (zero off its support): pass the teacher's logits, or beta < 1"
            )
        if teacher_logits.indices.numel() and int(teacher_logits.indices.max()) >= s_shape[2]:
            raise ValueError(
                f"the teacher's indices reach {int(teacher_logits.indices.max())}, outside the "
                f"student's vocabulary of {s_shape[2]}: JSD needs a shared vocabulary"
            )
    elif t_shape != s_shape:
        raise ValueError(
            f"teacher_logits {t_shape} must match student_logits {s_shape}: JSD compares "
            "distributions over one shared vocabulary, position by position"
        )
    # NaN/inf logits (or positive cached log-probabilities) would give NaN gradients
    # behind a finite loss: refused like GLD's and ULD's inputs
    nonfinite_sequences(student_logits, teacher_logits, nan_policy="raise")
    batch, length = s_shape[:2]
    mask = normalize_mask(mask, batch, length, student_logits.device)
    seq, pos = mask.nonzero(as_tuple=True)
    if isinstance(teacher_logits, TopK):
        t_rows: torch.Tensor | TopK = TopK(
            teacher_logits.logprobs[seq, pos], teacher_logits.indices[seq, pos]
        )
    else:
        t_rows = teacher_logits[seq, pos]
    per_pos = _jsd_rows(student_logits[seq, pos], t_rows, float(beta), float(temperature))
    if reduction == "sum":
        return per_pos.sum()
    if reduction == "mean":
        return per_pos.sum() / max(int(seq.shape[0]), 1)
    out = per_pos.new_zeros(batch, length)
    return out.index_put((seq, pos), per_pos)
