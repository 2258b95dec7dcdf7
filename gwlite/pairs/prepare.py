r"""Per-space precomputation for the batched sorted bounds.

Everything the sorted bounds need from one space is computed once per space here, so
that a pair only costs a merge of two sorted lists and a small gather:

* the mean-row features :math:`s = C p` sorted, with the cumulative weights in that
  order (the closed form :math:`W_r^r(s_1 \# p, s_2 \# q)`), and likewise the
  eccentricities (FLB), the entries with weights :math:`p \otimes p` (SLB) and every row
  (TLB);
* the tie groups of the sorted coupling (the label-free refinement of
  :func:`gwlite.bounds.sorted_sparse_coupling`) with, per pair of groups
  :math:`(g, g')`, the weighted mean :math:`A_{gg'}` of the entries of :math:`C` between
  them and their spread :math:`V_{gg'}` (square loss), or the weighted share of entries
  above every level of the dataset (absolute loss).

Spaces are then stacked by *width* (their node count rounded up on a fixed ladder) and
padded with zero-weight atoms; :mod:`gwlite.pairs.kernels` explains why that padding
changes no bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gwlite import _xp
from gwlite.bounds import mean_row_features

__all__ = ["Buckets", "PreparedSpace", "prepare_spaces", "width_of"]

# widths of the padded stacks: 2^k x {1, 1.25, 1.5, 1.75} (waste below 25 % per axis)
_LADDER = sorted(
    {4}
    | {int(b * f) for b in (4, 8, 16, 32, 64, 128, 256, 512, 1024) for f in (1, 1.25, 1.5, 1.75)}
)
# beyond this many distinct entries in the dataset, the absolute-loss upper bound is
# computed pair by pair (level sets stop paying off), as gwlite.coupling does
MAX_LEVELS = 64


def width_of(n: int) -> int:
    """Padded width of a space with ``n`` nodes (a fixed function of n only, so that a
    pair's numbers never depend on which other pairs share its batch)."""
    for w in _LADDER:
        if w >= n:
            return w
    return int(2 ** np.ceil(np.log2(n)))


def _key_tol(dtype, scale: float) -> float:
    # the rule of gwlite.bounds: values within ~1024 ulp of their scale count as tied
    return 1024 * float(np.finfo(dtype).eps) * max(scale, np.finfo(np.float64).tiny)


@dataclass
class PreparedSpace:
    """Host (NumPy) arrays of one space, unpadded; see the module docstring."""

    n: int
    maxabs: float
    uniform: bool
    p: np.ndarray
    keys: list  # tie-refinement keys (host float64), in the order gwlite uses them
    key_scales: list
    parts: dict = field(default_factory=dict)
    stable: bool = True


def _sorted_with_cum(values: np.ndarray, weights: np.ndarray):
    order = np.argsort(values, kind="stable")
    return values[order], np.cumsum(weights[order])


def _keys(C: np.ndarray, p: np.ndarray, s: np.ndarray) -> list:
    # the same expressions as gwlite.bounds._refinement_keys, so the same floats
    k1 = C @ (p * s)
    k2 = C @ (p * k1)
    k3 = (C * C) @ p
    return [s, k1, k2, k3]


def refined_groups(keys, tols_own, tols_max):
    """Tie groups of the sorted coupling, and whether they hold for every pair.

    The same lexicographic refinement as :func:`gwlite.univariate.monotone_coupling`:
    the first key orders the nodes, values within the tolerance of their neighbour form
    a group, each further key re-orders inside groups and splits them. A pair uses, for
    each key, the larger of its two spaces' tolerances, which lies between this space's
    own tolerance and the dataset's largest; when no gap between neighbours falls in
    that band the groups are the same for every pair (``stable``). Otherwise the pairs
    of this space are computed one by one by :func:`gwlite.gromov_wasserstein`.
    """
    n = len(keys[0])
    order = np.arange(n)
    group = np.zeros(n, dtype=np.int64)
    stable = True
    for key, tol, tol_max in zip(keys, tols_own, tols_max):
        idx = np.lexsort((key[order], group))
        order, group = order[idx], group[idx]
        gaps = np.diff(key[order])
        same = group[1:] == group[:-1]
        if np.any(same & (gaps > tol) & (gaps <= tol_max)):
            stable = False
        splits = ~same | (gaps > tol)
        group = np.concatenate([[0], np.cumsum(splits)])
    return order, group, stable


def _group_aggregates(C, p, order, group, loss_fun, levels):
    """Group masses and the aggregated matrices of the sorted coupling (module doc)."""
    G = int(group[-1]) + 1
    ends = np.nonzero(np.r_[group[1:] != group[:-1], True])[0]
    w_sorted = p[order]
    gcum = np.cumsum(w_sorted)[ends]
    gmass = np.diff(gcum, prepend=0.0)
    node_mass = gmass[group]
    share = np.where(node_mass > 0, w_sorted / np.where(node_mass > 0, node_mass, 1), 0.0)
    Cs = C[np.ix_(order, order)]
    W = (share[:, None] * share[None, :]).astype(C.dtype)
    singletons = G == len(order)
    flat = None if singletons else (group[:, None] * G + group[None, :]).ravel()

    def aggregate(M):
        # sum over the node pairs (i, k) of each group pair (g, g') of share_i share_k M_ik
        if singletons:
            return W * M
        return np.bincount(flat, (W * M).ravel(), G * G).reshape(G, G).astype(C.dtype)

    A = aggregate(Cs)
    out = {"G": G, "gcum": gcum, "live": gmass > 0, "singletons": singletons, "A": A}
    if loss_fun == "square_loss":
        if singletons:
            out["V"] = np.zeros_like(A)
        else:
            D = Cs - A[np.ix_(group, group)]
            out["V"] = aggregate(D * D)
    elif levels is not None:
        above = [aggregate((Cs > z).astype(C.dtype)) for z in levels[:-1]]
        out["B"] = np.stack(above) if above else np.zeros((0, G, G), C.dtype)
    return out


def _prepare_one(C, p, parts, loss_fun, levels) -> PreparedSpace:
    r = 2 if loss_fun == "square_loss" else 1
    n = C.shape[0]
    s = mean_row_features(C, p)
    space = PreparedSpace(
        n=n,
        maxabs=float(np.max(np.abs(C))),
        uniform=bool(np.all(p == p[0])),
        p=p,
        keys=[k.astype(np.float64) for k in _keys(C, p, s)],
        key_scales=[],
    )
    space.key_scales = [space.maxabs] + [float(np.max(np.abs(k))) for k in space.keys[1:]]
    space.parts["value"] = _sorted_with_cum(s, p)
    if "flb" in parts:
        # the expression of gwlite.bounds._eccentricities
        ecc = np.squeeze((np.abs(C) ** r) @ p[..., None], axis=-1) ** (1.0 / r)
        space.parts["flb"] = _sorted_with_cum(ecc, p)
    if "slb" in parts:
        space.parts["slb"] = _sorted_with_cum(C.reshape(-1), (p[:, None] * p[None, :]).ravel())
    if "tlb" in parts:
        S = np.sort(C, axis=1)
        if space.uniform:
            cum = np.broadcast_to(np.cumsum(np.ones(n, dtype=C.dtype) / n), (n, n))
        else:
            cum = np.cumsum(
                np.take_along_axis(
                    np.broadcast_to(p, (n, n)), np.argsort(C, axis=1, kind="stable"), axis=1
                ),
                axis=1,
            )
        space.parts["tlb"] = (S, np.ascontiguousarray(cum))
    space.parts["_levels"] = levels
    return space


def dataset_levels(spaces, loss_fun):
    """Sorted distinct entries of the whole dataset (absolute loss), or None if too many."""
    if loss_fun != "abs_loss":
        return None
    values = np.unique(np.concatenate([C.reshape(-1) for C, _ in spaces]))
    return values if len(values) <= MAX_LEVELS + 1 else None


def prepare_spaces(spaces, parts, loss_fun) -> list[PreparedSpace]:
    """Prepare every space (host NumPy arrays ``(C, p)`` of one dtype)."""
    levels = dataset_levels(spaces, loss_fun) if "upper" in parts else None
    prepared = [_prepare_one(C, p, parts, loss_fun, levels) for C, p in spaces]
    if "upper" in parts:
        dtype = spaces[0][0].dtype
        n_keys = len(prepared[0].keys)
        tol_max = [_key_tol(dtype, max(sp.key_scales[t] for sp in prepared)) for t in range(n_keys)]
        for (C, p), sp in zip(spaces, prepared):
            tols = [_key_tol(dtype, sc) for sc in sp.key_scales]
            order, group, sp.stable = refined_groups(sp.keys, tols, tol_max)
            sp.parts["upper"] = _group_aggregates(C, p, order, group, loss_fun, levels)
            if loss_fun == "abs_loss" and levels is None and not sp.parts["upper"]["singletons"]:
                sp.stable = False  # no batched formula: computed pair by pair
    return prepared


@dataclass
class Buckets:
    """Prepared spaces stacked by width, in the array namespace of the computation.

    ``bucket[i]`` and ``slot[i]`` locate space ``i``; ``stacks[b]`` maps a part name to
    its padded arrays.
    """

    bucket: np.ndarray
    slot: np.ndarray
    widths: list
    stacks: list
    maxabs: np.ndarray
    stable: np.ndarray
    levels: np.ndarray | None
    loss_fun: str


def _pad_last(x: np.ndarray, width: int, value) -> np.ndarray:
    pad = width - x.shape[-1]
    if pad <= 0:
        return x
    fill = np.broadcast_to(np.asarray(value, dtype=x.dtype), x.shape[:-1] + (pad,))
    return np.concatenate([x, fill], axis=-1)


def _pad_cum(cum: np.ndarray, width: int) -> np.ndarray:
    # padded atoms repeat the last cumulative weight: they carry no mass
    return _pad_last(cum, width, cum[..., -1:]) if cum.shape[-1] < width else cum


def _pad_square(M: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros(M.shape[:-2] + (width, width), dtype=M.dtype)
    out[..., : M.shape[-2], : M.shape[-1]] = M
    return out


def _stack(spaces: list[PreparedSpace], width: int, parts, loss_fun) -> dict:
    st = {"n": np.array([sp.n for sp in spaces], dtype=np.int64)}
    vals, cums = zip(*(sp.parts["value"] for sp in spaces))
    st["value"] = (
        np.stack([_pad_last(v, width, 0) for v in vals]),
        np.stack([_pad_cum(c, width) for c in cums]),
    )
    for name, w in (("flb", width), ("slb", width * width)):
        if name in parts:
            vals, cums = zip(*(sp.parts[name] for sp in spaces))
            st[name] = (
                np.stack([_pad_last(v, w, 0) for v in vals]),
                np.stack([_pad_cum(c, w) for c in cums]),
            )
    if "tlb" in parts:
        S = [_pad_square(_pad_last(sp.parts["tlb"][0], width, 0), width) for sp in spaces]
        R = [_pad_square(_pad_cum(sp.parts["tlb"][1], width), width) for sp in spaces]
        st["tlb"] = (np.stack(S), np.stack(R))
        st["uniform"] = np.array([sp.uniform for sp in spaces])
        st["p"] = np.stack([_pad_last(sp.p, width, 0) for sp in spaces])
    if "upper" in parts:
        ups = [sp.parts["upper"] for sp in spaces]
        up = {
            "G": np.array([u["G"] for u in ups], dtype=np.int64),
            "gcum": np.stack([_pad_cum(u["gcum"], width) for u in ups]),
            "live": np.stack([_pad_last(u["live"], width, False) for u in ups]),
            "A": np.stack([_pad_square(u["A"], width) for u in ups]),
            "all_live": np.array([bool(np.all(u["live"])) for u in ups]),
            "singletons": np.array([u["singletons"] for u in ups]),
        }
        if loss_fun == "square_loss":
            up["V"] = np.stack([_pad_square(u["V"], width) for u in ups])
            gm = [np.diff(u["gcum"], prepend=0.0) for u in ups]
            up["v"] = np.array([m @ u["V"] @ m for m, u in zip(gm, ups)])
            up["any_V"] = np.array([bool(np.any(u["V"] != 0)) for u in ups])
        elif "B" in ups[0]:
            up["B"] = np.stack([_pad_square(u["B"], width) for u in ups])
        st["upper"] = up
    return st


def to_namespace(tree, like):
    """Move a nested dict/tuple of host arrays to the namespace and device of ``like``."""
    if like is None or _xp.backend_name(like) == "numpy":
        return tree
    if isinstance(tree, dict):
        return {k: to_namespace(v, like) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(to_namespace(v, like) for v in tree)
    if isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        return _xp.from_numpy(np.ascontiguousarray(tree), like)
    if isinstance(tree, np.ndarray):
        xp = _xp.array_namespace(like)
        return xp.asarray(np.ascontiguousarray(tree), device=_xp.device(like))
    return tree


def build_buckets(prepared: list[PreparedSpace], parts, loss_fun, like=None) -> Buckets:
    """Stack prepared spaces by width (see :func:`width_of`)."""
    widths = sorted({width_of(sp.n) for sp in prepared})
    index = {w: k for k, w in enumerate(widths)}
    bucket = np.array([index[width_of(sp.n)] for sp in prepared], dtype=np.int64)
    slot = np.zeros(len(prepared), dtype=np.int64)
    stacks = []
    for k, w in enumerate(widths):
        members = np.nonzero(bucket == k)[0]
        slot[members] = np.arange(len(members))
        host = _stack([prepared[i] for i in members], w, parts, loss_fun)
        stacks.append({"host": host, "xp": to_namespace(host, like)})
    levels = prepared[0].parts.get("_levels") if prepared else None
    return Buckets(
        bucket=bucket,
        slot=slot,
        widths=widths,
        stacks=stacks,
        maxabs=np.array([sp.maxabs for sp in prepared]),
        stable=np.array([sp.stable for sp in prepared]),
        levels=levels,
        loss_fun=loss_fun,
    )
