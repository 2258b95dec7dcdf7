r"""Co-activation graphs of next-token predictions, without ever forming them.

This module is the one place in :mod:`fusion` that turns logits into graph
quantities: the top-k entries of each position's distribution, and the weighted
degrees of the co-activation graph built from them (InfiGFusion, Wang et al. 2025).

For one sequence with unmasked positions :math:`t = 1 \dots T'` and per-position
vectors :math:`x_t = \mathrm{softmax}(z_t / \tau)`, keep the :math:`k` largest entries
of :math:`x_t` (not renormalised), :math:`\tilde x_t`. The co-activation graph and its
weighted degrees are

.. math::

    A = \frac{1}{T'} \sum_t \tilde x_t \tilde x_t^\top, \qquad
    f_i = \sum_j A_{ij} = \frac{1}{T'} \sum_t \tilde x_{t,i} \, S_t, \quad
    S_t = \sum_j \tilde x_{t,j},

so :math:`f` costs :math:`O(T k)` by scatter-add and :math:`A` (vocabulary x vocabulary)
is never formed.

Memory and compute design
-------------------------
The logits of a training step are the largest tensor in it (8192 x 152064 bf16 is
2.5 GB), so :func:`topk_values` is a custom :class:`torch.autograd.Function` that
walks over blocks of positions. Per block, the forward pass selects the top-k raw
logits (softmax is monotone, so the top-k of the logits are the top-k of the
probabilities) and one fp32 pass computes the normaliser; only ``(positions, k)``
values and the per-position shift survive. The backward pass recomputes the block's
probabilities and writes the closed-form gradient straight into the gradient tensor
in the logits' dtype, so the extra memory is the gradient itself plus one fp32
block buffer, whatever the number of positions.

On CUDA two steps are faster than plain torch ops and on by default: an exact
two-stage top-k (:func:`grouped_topk`) and the two dense passes compiled with
:func:`torch.compile` (one kernel each, no fp32 buffer); the knobs ``TOPK_IMPL`` and
``FUSED`` switch them (for benchmarks), and a failed compilation falls back to eager ops.

References
----------
Y. Wang et al. InfiGFusion: Graph-on-Logits Distillation via Efficient
Gromov-Wasserstein for Model Fusion. arXiv 2505.13893 (2025).
Z. Yan et al. InfiFusion: A Unified Framework for Enhanced Cross-Model Reasoning via
LLM Fusion. arXiv 2501.02795 (2025).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

from fusion.types import StudentTopK, TopK

__all__ = [
    "FEATURES",
    "GRAPHS",
    "NODES",
    "VALUES",
    "Degrees",
    "check_choice",
    "degree_features",
    "degrees",
    "normalize_mask",
    "share_profile",
    "student_topk",
    "teacher_topk_values",
    "topk_values",
]

VALUES = ("prob", "logit", "zscore")
#: what GLD compares per graph: co-activation shares (default) or the m largest degrees
FEATURES = ("shares", "degrees")
NODES = ("vocab", "rank")
GRAPHS = ("sequence", "batch")

#: bytes of the fp32 work buffer one block of positions may use (sets the block size)
BLOCK_BYTES = 512 * 2**20
#: group width of the two-stage top-k selection used on GPUs
TOPK_GROUP = 128
#: floor of the standard deviation in ``values="zscore"`` (logit units)
ZSCORE_MIN_STD = 1e-6
#: torch.compile the two dense passes of ``values="prob"``: "auto" (on CUDA), "on", "off";
#: if compiling fails the eager ops are used (with one warning)
FUSED = "auto"
#: "auto" (grouped on CUDA for large rows), "torch" or "grouped"; a knob for benchmarks
TOPK_IMPL = "auto"


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ValueError listing the accepted values when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # half types have too few mantissa bits for a normaliser over 1e5 entries
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------
# top-k selection
# ---------------------------------------------------------------------------------------


def _use_grouped(z: torch.Tensor, k: int) -> bool:
    if TOPK_IMPL == "torch":
        return False
    if TOPK_IMPL == "grouped":
        return True
    # torch.topk's radix select is slow on wide GPU rows; on CPU it is the faster one
    return z.is_cuda and z.shape[-1] >= 8 * k * TOPK_GROUP


def grouped_topk(z: torch.Tensor, k: int, group: int = TOPK_GROUP):
    r"""Exact top-k values along the last axis of a 2-D tensor, in two cheap stages.

    The row is cut into groups of ``group`` entries; the ``k`` groups with the largest
    maxima contain the ``k`` largest entries (each of the ``k`` largest lies in a group
    whose maximum is at least the ``k``-th largest value, and there are at most ``k``
    such groups unless ties make any choice equivalent). One read of the row finds the
    group maxima; the final selection runs over ``k * group`` candidates. The values
    equal those of :func:`torch.topk`; among tied values the indices may differ.

    Returns
    -------
    values, indices : tensors ``(rows, k)``, sorted in descending order.
    """
    rows, width = z.shape
    n_groups = width // group
    if n_groups < k:
        return torch.topk(z, k, dim=-1, sorted=True)
    body = z[:, : n_groups * group].unflatten(1, (n_groups, group))
    best = body.amax(dim=-1).topk(k, dim=-1, sorted=False).indices
    cand = torch.gather(body, 1, best[:, :, None].expand(rows, k, group)).flatten(1)
    offsets = torch.arange(group, device=z.device)
    cand_idx = (best[:, :, None] * group + offsets).flatten(1)
    if n_groups * group < width:  # the tail that does not fill a group is always a candidate
        tail_idx = torch.arange(n_groups * group, width, device=z.device)
        cand = torch.cat([cand, z[:, n_groups * group :]], dim=1)
        cand_idx = torch.cat([cand_idx, tail_idx.expand(rows, -1)], dim=1)
    values, pos = cand.topk(k, dim=-1, sorted=True)
    return values, torch.gather(cand_idx, 1, pos)


def _topk(z: torch.Tensor, k: int):
    if _use_grouped(z, k):
        return grouped_topk(z, k)
    values, indices = torch.topk(z, k, dim=-1, sorted=True)
    return values, indices


# ---------------------------------------------------------------------------------------
# blocks of positions
# ---------------------------------------------------------------------------------------


class _Block(NamedTuple):
    seq: int | None  # None: rows of the flattened (B*T, V) view
    start: int
    stop: int
    out_start: int  # first row of the block in the flattened output


def _flat_view(x: torch.Tensor) -> torch.Tensor | None:
    try:
        return x.view(-1, x.shape[-1])
    except RuntimeError:  # e.g. logits[:, :-1]: a copy would double the memory
        return None


def _blocks(x: torch.Tensor, rows_per_block: int) -> Iterator[_Block]:
    batch, length = x.shape[0], x.shape[1]
    if _flat_view(x) is not None:
        total = batch * length
        for start in range(0, total, rows_per_block):
            yield _Block(None, start, min(start + rows_per_block, total), start)
        return
    for b in range(batch):
        for start in range(0, length, rows_per_block):
            yield _Block(b, start, min(start + rows_per_block, length), b * length + start)


def _rows(x: torch.Tensor, block: _Block) -> torch.Tensor:
    if block.seq is None:
        return x.view(-1, x.shape[-1])[block.start : block.stop]
    return x[block.seq, block.start : block.stop]


def _rows_per_block(vocab: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size
    return max(1, BLOCK_BYTES // (4 * vocab))


# ---------------------------------------------------------------------------------------
# per-block statistics and gradients, one pair per value kind
# ---------------------------------------------------------------------------------------


def _casts_in_kernel(x: torch.Tensor) -> bool:
    """Whether mixed-dtype elementwise ops on ``x``'s device cast inside one kernel."""
    return x.is_cuda


def _shifted(buf, z, shift):
    """``buf = z - shift`` in the buffer's dtype, without a full-size copy of ``z``."""
    if _casts_in_kernel(z):
        return torch.sub(z, shift, out=buf)  # one kernel: casts while it reads
    # CPU kernels cast mixed dtypes through a temporary; copying first is 3x faster
    return buf.copy_(z).sub_(shift)


def _store(out, buf, scale, offset=None):
    """``out = buf * scale (+ offset)``, cast to the gradient's dtype as it is written."""
    if _casts_in_kernel(out):
        if offset is None:
            return torch.mul(buf, scale, out=out)
        return torch.add(buf.mul_(scale), offset, out=out)
    buf.mul_(scale)
    return out.copy_(buf if offset is None else buf.add_(offset))


def _put(out, idx, src):
    """``out[r, idx[r, j]] = src[r, j]``; ``index_copy_`` on the flat view (bf16 ``scatter_``
    is 500x slower on CPU). Top-k ids are distinct per row, so no write collides."""
    rows, width = out.shape
    flat = torch.arange(rows, device=out.device)[:, None] * width + idx
    out.view(-1).index_copy_(0, flat.reshape(-1), src.reshape(-1).to(out.dtype))


def _prob_shift_pass(z, zmax, tau: float):
    """One fused pass (under torch.compile): the shift c from the logits and their maximum."""
    total = torch.exp((z.to(zmax.dtype) - zmax) / tau).sum(dim=-1, keepdim=True)
    return zmax + tau * torch.log(total)


def _prob_grad_pass(z, shift, scale, tau: float, out) -> None:
    """One fused pass (under torch.compile): ``out = scale * exp((z - c) / tau)``."""
    out.copy_(torch.exp((z.to(shift.dtype) - shift) / tau) * scale)


_PASSES = {"shift": _prob_shift_pass, "grad": _prob_grad_pass}
_compiled: dict[str, Any] = {}
_fused_failed = False
_FAILED = object()


def _fused(z: torch.Tensor) -> bool:
    if _fused_failed or FUSED == "off":
        return False
    return FUSED == "on" or z.is_cuda


def _run_fused(name: str, *args):
    """The compiled pass's result, or ``_FAILED`` (after one warning) if compiling fails."""
    global _fused_failed
    try:
        if name not in _compiled:
            _compiled[name] = torch.compile(_PASSES[name], dynamic=False)
        return _compiled[name](*args)
    except Exception as exc:  # no Triton, no compiler, an unsupported build: stay correct
        _fused_failed = True
        warnings.warn(
            f"fusion: torch.compile of the GLD passes failed ({exc!r}); using eager ops",
            stacklevel=2,
        )
        return _FAILED


class _Work:
    """The block's fp32 work buffer, allocated on first use (compiled passes need none)."""

    def __init__(self, rows: int, width: int, dtype: torch.dtype, device) -> None:
        self.shape, self.dtype, self.device = (rows, width), dtype, device
        self._buf: torch.Tensor | None = None

    def take(self, rows: int) -> torch.Tensor:
        if self._buf is None:
            self._buf = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        return self._buf[:rows]


def _prob_forward(z, top, tau, work):
    r"""Kept probabilities :math:`\exp((z_{i_r} - c)/\tau)` and the shift :math:`c`.

    :math:`c = \max z + \tau \log \sum_j e^{(z_j - \max z)/\tau}`, so that
    :math:`x_j = e^{(z_j - c)/\tau}`. The maximum is the first top-k value: no extra pass.
    """
    zmax = top[:, :1].to(work.dtype)
    shift = _run_fused("shift", z, zmax, tau) if _fused(z) else _FAILED
    if shift is _FAILED:
        buf = _shifted(work.take(z.shape[0]), z, zmax)
        if tau != 1.0:
            buf.mul_(1.0 / tau)
        shift = zmax + tau * torch.log(buf.exp_().sum(dim=-1, keepdim=True))
    return torch.exp((top.to(work.dtype) - shift) / tau), shift[:, 0]


def _prob_backward(z, stat, idx, vals, g, tau, work, out, g_ce=None):
    r""":math:`\partial z_j = \frac1\tau \big(\sum_r g_r x_r [j = i_r] - x_j \sum_r g_r x_r\big)`.

    ``g_ce`` (only at :math:`\tau = 1`, where the kept values and the cross-entropy share
    one softmax) adds :math:`g_{ce}\, x_j` to every entry in the same dense pass; the
    target's :math:`-g_{ce}` is added by the caller.
    """
    c = (g * vals).sum(dim=-1, keepdim=True)
    shift = stat[:, None]
    scale = -c / tau if g_ce is None else g_ce[:, None] - c
    if not _fused(z) or _run_fused("grad", z, shift, scale, tau, out) is _FAILED:
        buf = _shifted(work.take(z.shape[0]), z, shift)
        if tau != 1.0:
            buf.mul_(1.0 / tau)
        _store(out, buf.exp_(), scale)
    # the kept entries in full precision: (x_r / tau) (g_r - c) [+ g_ce x_r]
    kept = vals * (g - c) / tau
    _put(out, idx, kept if g_ce is None else kept + vals * g_ce[:, None])


def _logit_forward(z, top, tau, work):
    return top.to(work.dtype) / tau, torch.zeros(z.shape[0], dtype=work.dtype, device=z.device)


def _logit_backward(z, stat, idx, vals, g, tau, work, out):
    out.zero_()
    _put(out, idx, g / tau)


def _zscore_forward(z, top, tau, work):
    r"""Z-scored logits :math:`(z_{i_r} - \mu) / \sigma` (population std over the vocabulary).

    :math:`\sigma` is floored at ``ZSCORE_MIN_STD`` so that constant rows give zeros.
    """
    buf = work.take(z.shape[0]).copy_(z)
    var, mean = torch.var_mean(buf, dim=-1, correction=0)
    # a constant row (e.g. padding) has no spread; the floor keeps y = 0 and gradients finite
    std = var.sqrt().clamp_min(ZSCORE_MIN_STD)
    return (top.to(buf.dtype) - mean[:, None]) / std[:, None], torch.stack([mean, std], dim=-1)


def _zscore_backward(z, stat, idx, vals, g, tau, work, out):
    r""":math:`\partial z_j = \frac1\sigma (h_j - \bar h - y_j \overline{h y})` with h = g at the kept ids.

    Away from the kept ids this is affine in :math:`z_j - \mu`:
    :math:`\beta (z_j - \mu) + a` with :math:`\beta = -\sum_r g_r y_{i_r} / (V \sigma^2)` and
    :math:`a = -\sum_r g_r / (V \sigma)`; the kept ids add :math:`g_r / \sigma`.
    """
    vocab = z.shape[-1]
    mean, std = stat[:, :1], stat[:, 1:]
    beta = -(g * vals).sum(dim=-1, keepdim=True) / (vocab * std * std)
    offset = -g.sum(dim=-1, keepdim=True) / (vocab * std)
    _store(out, _shifted(work.take(z.shape[0]), z, mean), beta, offset)
    # at a kept id, z - mu = sigma * y = sigma * vals
    _put(out, idx, beta * std * vals + offset + g / std)


_FORWARD = {"prob": _prob_forward, "logit": _logit_forward, "zscore": _zscore_forward}
_BACKWARD = {"prob": _prob_backward, "logit": _logit_backward, "zscore": _zscore_backward}


def _logsumexp(z, work):
    """Row-wise log-sum-exp at temperature 1 through the fp32 work buffer."""
    zmax = z.amax(dim=-1, keepdim=True).to(work.dtype)
    buf = _shifted(work.take(z.shape[0]), z, zmax)
    return zmax[:, 0] + torch.log(buf.exp_().sum(dim=-1))


def _shares_softmax(values: str, tau: float) -> bool:
    """Whether the kept values' normaliser is the cross-entropy's (one dense pass for both)."""
    return values == "prob" and tau == 1.0


class _TopKValues(torch.autograd.Function):
    """Top-k values (and optionally the cross-entropy) of each position, block by block.

    One pass over the logits selects the top-k, computes the normaliser and, when targets
    are given, the per-position cross-entropy; backward recomputes each block once and
    writes the gradient of everything that was computed from it.
    """

    @staticmethod
    def forward(ctx, logits, k, tau, values, rows_per_block, targets):
        batch, length, vocab = logits.shape
        cdtype = _compute_dtype(logits.dtype)
        device = logits.device
        n = batch * length
        vals = torch.empty(n, k, dtype=cdtype, device=device)
        idx = torch.empty(n, k, dtype=torch.long, device=device)
        stat_width = 2 if values == "zscore" else 1
        stats = torch.empty(n, stat_width, dtype=cdtype, device=device)
        with_ce = targets is not None
        nll = torch.zeros(n if with_ce else 0, dtype=cdtype, device=device)
        lse = torch.empty(n if with_ce else 0, dtype=cdtype, device=device)
        valid = targets >= 0 if with_ce else None
        safe_targets = torch.where(valid, targets, 0) if with_ce else None
        work = _Work(min(rows_per_block, n), vocab, cdtype, device)
        for block in _blocks(logits, rows_per_block):
            z = _rows(logits, block)
            rows = slice(block.out_start, block.out_start + z.shape[0])
            top, top_idx = _topk(z, k)
            v, s = _FORWARD[values](z, top, tau, work)
            vals[rows], idx[rows], stats[rows] = v, top_idx, s.reshape(z.shape[0], -1)
            if with_ce:
                lse[rows] = s if _shares_softmax(values, tau) else _logsumexp(z, work)
                picked = torch.gather(z, 1, safe_targets[rows, None])[:, 0].to(cdtype)
                nll[rows] = torch.where(valid[rows], lse[rows] - picked, 0.0)
        ctx.save_for_backward(logits, idx, stats, vals, safe_targets, valid, lse)
        ctx.config = (tau, values, rows_per_block, with_ce)
        ctx.mark_non_differentiable(idx)
        ctx.set_materialize_grads(False)  # an unused output (e.g. nll) costs no dense pass
        return vals.view(batch, length, k), idx.view(batch, length, k), nll.view(-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_vals, grad_idx, grad_nll):
        logits, idx, stats, vals, targets, valid, lse = ctx.saved_tensors
        tau, values, rows_per_block, with_ce = ctx.config
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        if grad_vals is None:
            g_all = torch.zeros_like(vals)
        else:
            g_all = grad_vals.reshape(-1, vals.shape[-1]).to(vals.dtype)
        g_ce_all = None
        if with_ce and grad_nll is not None:
            g_ce_all = torch.where(valid, grad_nll.to(vals.dtype), 0.0)
        width = min(rows_per_block, vals.shape[0])
        work = _Work(width, logits.shape[-1], vals.dtype, logits.device)
        backward = _BACKWARD[values]
        fold = g_ce_all is not None and _shares_softmax(values, tau)
        for block in _blocks(logits, rows_per_block):
            z = _rows(logits, block)
            rows = slice(block.out_start, block.out_start + z.shape[0])
            stat = stats[rows].squeeze(-1) if values == "prob" else stats[rows]
            # grad is contiguous, so the block's rows are a view of it
            out = _rows(grad, block)
            if fold:
                backward(
                    z, stat, idx[rows], vals[rows], g_all[rows], tau, work, out, g_ce_all[rows]
                )
            else:
                backward(z, stat, idx[rows], vals[rows], g_all[rows], tau, work, out)
            if g_ce_all is not None:
                g_ce = g_ce_all[rows]
                if not fold:  # softmax(z) at temperature 1, added to the gradient
                    buf = _shifted(work.take(z.shape[0]), z, lse[rows, None]).exp_()
                    out.add_(buf.mul_(g_ce[:, None]))
                # the target's -g_ce, in full precision on top of what is there
                where = targets[rows, None]
                target = torch.gather(out, 1, where).to(g_ce.dtype)
                _put(out, where, target - g_ce[:, None])
        return grad, None, None, None, None, None


def _as_3d(logits: torch.Tensor) -> torch.Tensor:
    if logits.ndim == 3:
        return logits
    if logits.ndim == 2:
        return logits[None]
    return logits.reshape(-1, logits.shape[-2], logits.shape[-1])


def _check_topk_options(logits: torch.Tensor, k: int, temperature: float, values: str) -> None:
    check_choice("values", values, VALUES)
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"k must be in [1, {logits.shape[-1]}] (the vocabulary), got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def student_topk(
    logits: torch.Tensor,
    k: int,
    *,
    temperature: float = 1.0,
    values: str = "prob",
    targets: torch.Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> StudentTopK:
    r"""The student's top-``k`` entries (and cross-entropy), in one pass, for every loss.

    :func:`topk_values` plus, when ``targets`` are given, the per-position cross-entropy
    :math:`\mathrm{nll}_t = \log\sum_j e^{z_{t,j}} - z_{t,y_t}` computed in the same
    blockwise pass (the normaliser is shared when ``values="prob"`` and :math:`\tau = 1`),
    with one recomputing backward for all of them: the only full-size tensor created is
    the gradient, in the logits' dtype. Pass the result to :func:`fusion.gld_loss` and
    :func:`fusion.uld_loss` (top-k variant) in place of the logits; any ``k`` up to
    ``k_top`` uses its first entries.

    Parameters
    ----------
    logits : tensor ``(B, T, V)``
        Any floating dtype; bf16/fp16 are computed in fp32.
    k : int
        Entries kept per position (the largest ``k`` any consumer needs).
    temperature : float
        :math:`\tau` of the kept values (the cross-entropy is always at temperature 1).
    values : {"prob", "logit", "zscore"}
        See :func:`topk_values`.
    targets : long tensor ``(B, T)``, optional
        Next-token targets aligned with the logits, ``ignore_index`` where there is none.
    ignore_index : int
        Target value without a loss.
    chunk_size : int, optional
        Positions per block (default: a 512 MiB fp32 buffer).

    Returns
    -------
    fusion.types.StudentTopK

    Examples
    --------
    >>> import torch
    >>> from fusion.coactivation import student_topk
    >>> z = torch.randn(2, 5, 30, requires_grad=True)
    >>> y = torch.randint(0, 30, (2, 5))
    >>> st = student_topk(z, 4, targets=y)
    >>> ce = torch.nn.functional.cross_entropy(z.flatten(0, 1), y.flatten(), reduction="none")
    >>> bool(torch.allclose(st.nll.flatten(), ce))
    True
    """
    _check_topk_options(logits, k, temperature, values)
    x = _as_3d(logits)
    flat_targets = None
    if targets is not None:
        if tuple(targets.shape) != tuple(logits.shape[:-1]):
            raise ValueError(
                f"targets must have shape {tuple(logits.shape[:-1])}, got {tuple(targets.shape)}"
            )
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ValueError(f"targets must be integer token ids, got {targets.dtype}")
        flat_targets = targets.reshape(-1).to(device=logits.device, dtype=torch.long)
        flat_targets = torch.where(flat_targets == ignore_index, -1, flat_targets)
        if flat_targets.numel() and int(flat_targets.max()) >= logits.shape[-1]:
            raise ValueError(f"targets must lie in [0, {logits.shape[-1]}) or be {ignore_index}")
        if flat_targets.numel() and int(flat_targets.min()) < -1:
            raise ValueError(f"targets must lie in [0, {logits.shape[-1]}) or be {ignore_index}")
    rows = _rows_per_block(x.shape[-1], chunk_size)
    vals, idx, nll = _TopKValues.apply(x, k, float(temperature), values, rows, flat_targets)
    shape = logits.shape[:-1] + (k,)
    return StudentTopK(
        vals.reshape(shape),
        idx.reshape(shape),
        nll.reshape(logits.shape[:-1]) if targets is not None else None,
        int(logits.shape[-1]),
        float(temperature),
        values,
    )


def topk_values(
    logits: torch.Tensor,
    k: int,
    *,
    temperature: float = 1.0,
    values: str = "prob",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The ``k`` largest entries of each position's distribution, differentiably.

    For ``values="prob"`` (default) the kept values are
    :math:`\tilde x_{t,r} = \mathrm{softmax}(z_t/\tau)_{i_r}` for the ids :math:`i_r` of the
    ``k`` largest logits, *not* renormalised. ``"logit"`` keeps :math:`z_{t,i_r}/\tau`;
    ``"zscore"`` keeps :math:`(z_{t,i_r} - \mu_t)/\sigma_t` with the mean and (population)
    standard deviation over the vocabulary (InfiFusion's logit standardisation; it does
    not depend on :math:`\tau`). The same ids are kept in all three cases.

    The gradient is computed block by block from the saved logits
    (for probabilities, :math:`\partial z_j = \frac1\tau(\sum_r g_r x_r [j = i_r] -
    x_j \sum_r g_r x_r)`), never through a materialised softmax; ties among the logits
    cannot produce NaN.

    Parameters
    ----------
    logits : tensor ``(B, T, V)`` (or ``(N, V)``)
        Any floating dtype; bf16/fp16 are computed in fp32, fp64 stays fp64.
    k : int
        Number of entries kept per position, ``1 <= k <= V``.
    temperature : float
        :math:`\tau > 0`.
    values : {"prob", "logit", "zscore"}
    chunk_size : int, optional
        Positions per block; by default as many as fit a 512 MiB fp32 buffer.

    Returns
    -------
    values : tensor ``(..., k)``
        In fp32 (fp64 for fp64 logits), sorted in descending order.
    indices : long tensor ``(..., k)``
    """
    st = student_topk(logits, k, temperature=temperature, values=values, chunk_size=chunk_size)
    return st.values, st.indices


def teacher_topk_values(
    teacher: torch.Tensor | TopK,
    k: int,
    *,
    temperature: float = 1.0,
    values: str = "prob",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":func:`topk_values` for a teacher given as logits or as a cached :class:`fusion.TopK`.

    A cache stores :math:`\log \mathrm{softmax}(z/\tau)` at its ``k'`` largest entries,
    sorted, so the first ``k`` of them are the kept probabilities: ``exp(logprobs[..., :k])``.
    The temperature is the cache's; it is not applied again. Logit-valued graphs
    need the whole row (the shift or the mean and spread over the vocabulary), which a
    cache does not hold: ``values`` other than ``"prob"`` raise.
    """
    if not isinstance(teacher, TopK):
        return topk_values(
            teacher, k, temperature=temperature, values=values, chunk_size=chunk_size
        )
    logprobs, indices = teacher
    if logprobs.shape != indices.shape:
        raise ValueError(
            f"TopK logprobs and indices must have the same shape, got "
            f"{tuple(logprobs.shape)} and {tuple(indices.shape)}"
        )
    if logprobs.shape[-1] < k:
        raise ValueError(f"the cached TopK holds k'={logprobs.shape[-1]} entries, fewer than k={k}")
    if values != "prob":
        raise ValueError(
            f"values={values!r} needs the teacher's full logits; a cached TopK holds "
            "log-probabilities of its top entries only (use values='prob' or pass logits)"
        )
    probs = torch.exp(logprobs[..., :k].to(_compute_dtype(logprobs.dtype)))
    return probs, indices[..., :k].long()


# ---------------------------------------------------------------------------------------
# masks, degrees and graph features
# ---------------------------------------------------------------------------------------


def normalize_mask(mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """A ``(B, T)`` bool mask (all positions when ``None``), shape- and dtype-checked.

    Only bool masks are accepted: casting a float or integer mask would silently turn
    0.5 (or 2) into True.
    """
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        kind = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(
            f"masks must be bool tensors, got {kind}: pass e.g. mask > 0.5 or mask.bool() "
            "to say which positions count"
        )
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"mask must have shape {(batch, length)}, got {tuple(mask.shape)}")
    return mask.to(device=device)


class Degrees(NamedTuple):
    r"""Weighted degrees and self-loops of one graph per row, and the positions behind each.

    Attributes
    ----------
    degrees : tensor ``(G, n)``
        :math:`f` of each graph (``G = B`` per-sequence graphs, or 1 for the batch graph).
    counts : tensor ``(G,)``
        Unmasked positions :math:`T'` of each graph (summed over ranks for a batch graph).
    self_loops : tensor ``(G, n)``
        The diagonal :math:`A_{ii} = \frac{1}{T'} \sum_t \tilde x_{t,i}^2`.
    """

    degrees: torch.Tensor
    counts: torch.Tensor
    self_loops: torch.Tensor


def _dist_world(process_group: Any) -> int:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(process_group)


def _all_reduce_sum(x: torch.Tensor, process_group: Any, world: int) -> torch.Tensor:
    """Sum over ranks; the local gradient is scaled by the world size.

    Every rank ends up with the same loss, and DDP averages gradients over ranks, so
    scaling by the world size makes the averaged gradient that of the global loss
    (the convention of a per-rank loss under DDP; no collective runs in backward).
    """
    import torch.distributed as dist

    total = x.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=process_group)
    return (total - world * x).detach() + world * x


def _all_reduce_max(value: int, device, process_group: Any) -> int:
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=process_group)
    return int(t.item())


def degrees(
    vals: torch.Tensor,
    indices: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    nodes: str = "vocab",
    num_nodes: int | None = None,
    graph: str = "sequence",
    process_group: Any = None,
) -> Degrees:
    r"""Weighted degrees of co-activation graphs in :math:`O(T k)`.

    .. math::

        f_i = \frac{1}{T'} \sum_{t \,\mathrm{unmasked}} \tilde x_{t,i} \, S_t, \qquad
        S_t = \sum_j \tilde x_{t,j},

    the row sums of :math:`A = \frac{1}{T'} \sum_t \tilde x_t \tilde x_t^\top`, by
    scatter-add of the ``(T, k)`` kept values (never forming :math:`A`).

    Parameters
    ----------
    vals, indices : tensors ``(B, T, k)``
        Kept values and their vocabulary ids (:func:`topk_values`).
    mask : bool tensor ``(B, T)``, optional
        Positions that count.
    nodes : {"vocab", "rank"}
        ``"vocab"``: nodes are vocabulary ids (``num_nodes`` of them).
        ``"rank"``: nodes are the ``k`` ranks of the descending-sorted kept vectors, a
        ``k x k`` graph that ignores token identities.
    num_nodes : int, optional
        Vocabulary size for ``nodes="vocab"``; ``max(indices) + 1`` when omitted.
    graph : {"sequence", "batch"}
        One graph per sequence, or one graph over all positions of the batch and, when
        :mod:`torch.distributed` is initialised, of all ranks (degree sums and position
        counts are all-reduced: ``n`` floats per rank).
    process_group : optional
        Group for the all-reduce (default group when ``None``).

    Returns
    -------
    Degrees
        Degrees, position counts and the self-loops
        :math:`A_{ii} = \frac{1}{T'}\sum_t \tilde x_{t,i}^2` (the same scatter-add). A graph
        with no unmasked position has zero degrees and ``counts == 0``.
    """
    check_choice("nodes", nodes, NODES)
    check_choice("graph", graph, GRAPHS)
    batch, length, k = vals.shape
    mask = normalize_mask(mask, batch, length, vals.device)
    # where(), not a product: a masked position holding inf/NaN must not leak in
    kept = torch.where(mask[..., None], vals, torch.zeros((), dtype=vals.dtype, device=vals.device))
    # per kept entry: its share of the row sums of A (x~_{t,r} S_t) and of the diagonal (x~^2)
    parts = torch.stack([kept * kept.sum(dim=-1, keepdim=True), kept * kept])
    counts = mask.sum(dim=-1).to(vals.dtype)
    if nodes == "rank":
        if vals.shape[-1] > 1:  # cached teachers are sorted, but the graph must not rely on it
            order = torch.argsort(kept, dim=-1, descending=True, stable=True)
            parts = torch.gather(parts, -1, order.expand_as(parts))
        sums = parts.sum(dim=2)
    else:
        sums = _vocab_sums(parts, indices, num_nodes)
    world = _dist_world(process_group) if graph == "batch" else 1
    if graph == "batch":
        sums, counts = sums.sum(dim=1, keepdim=True), counts.sum().reshape(1)
        if world > 1:
            sums = _all_reduce_sum(
                _pad_nodes(sums, nodes, vals.device, process_group), process_group, world
            )
            counts = _all_reduce_sum(counts, process_group, 1)
    scaled = sums / counts.clamp_min(1)[:, None]
    return Degrees(scaled[0], counts, scaled[1])


def _vocab_sums(parts: torch.Tensor, indices: torch.Tensor, num_nodes: int | None):
    """Scatter-add ``parts`` ``(P, B, T, k)`` into ``(P, B, num_nodes)`` by vocabulary id."""
    n_parts, batch = parts.shape[0], parts.shape[1]
    flat = indices.reshape(batch, -1)
    if flat.numel():  # one host sync: a bad id would be a device-side assert on CUDA
        low, high = (int(v) for v in torch.aminmax(flat))
        num_nodes = high + 1 if num_nodes is None else num_nodes
        if low < 0 or high >= num_nodes:
            raise ValueError(f"indices must lie in [0, {num_nodes}) (the vocabulary)")
    num_nodes = 1 if num_nodes is None else num_nodes
    out = torch.zeros(n_parts, batch, num_nodes, dtype=parts.dtype, device=parts.device)
    index = flat.to(parts.device).expand(n_parts, -1, -1)
    return out.scatter_add(2, index, parts.reshape(n_parts, batch, -1))


def _pad_nodes(sums: torch.Tensor, nodes: str, device, process_group: Any) -> torch.Tensor:
    """Give every rank's degree vector the same length before the all-reduce."""
    if nodes == "rank":
        return sums
    width = _all_reduce_max(sums.shape[-1], device, process_group)
    return torch.nn.functional.pad(sums, (0, width - sums.shape[-1]))


def degree_features(f: torch.Tensor, m: int) -> torch.Tensor:
    r"""Graph feature compression: the ``m`` largest degrees, descending, zero-padded to ``m``.

    Padding is what a graph with fewer than ``m`` nodes gets from isolated nodes.
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    top = torch.topk(f, min(m, f.shape[-1]), dim=-1, sorted=True).values
    return torch.nn.functional.pad(top, (0, m - top.shape[-1]))


def share_profile(d: Degrees) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Each node's co-activation share and its degree weight: a granularity-free profile.

    .. math::

        c_i = 1 - \frac{A_{ii}}{f_i} = \frac{\sum_{j \ne i} A_{ij}}{\sum_j A_{ij}}, \qquad
        \nu_i = \frac{f_i}{\sum_l f_l},

    the fraction of node :math:`i`'s co-activation that goes to *other* tokens, weighted
    by the node's share of the graph's degree mass. Both are ratios of sums over
    positions, so they do not depend on how many positions a tokenizer cuts the text
    into, nor on how often a token repeats: a confident model (one token per position)
    has :math:`c \equiv 0` whatever its vocabulary and sequence length, a flat top-``k``
    has :math:`c \equiv 1 - 1/k`. Nodes of zero degree get zero weight.

    Parameters
    ----------
    d : Degrees
        From :func:`degrees` (``values="prob"``: non-negative kept values).

    Returns
    -------
    shares, weights : tensors ``(G, n)``
        :math:`c` in ``[0, 1]`` and :math:`\nu` (summing to 1 per non-empty graph).
    """
    f, a = d.degrees, d.self_loops
    active = f > 0
    safe = torch.where(active, f, torch.ones((), dtype=f.dtype, device=f.device))
    shares = torch.where(active, 1 - a / safe, torch.zeros((), dtype=f.dtype, device=f.device))
    mass = torch.where(active, f, torch.zeros((), dtype=f.dtype, device=f.device))
    total = mass.sum(dim=-1, keepdim=True)
    weights = mass / torch.where(total > 0, total, torch.ones_like(total))
    return shares.clamp(0.0, 1.0), weights
