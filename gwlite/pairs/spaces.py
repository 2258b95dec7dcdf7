"""The inputs of :func:`gwlite.pairwise`: spaces in, validated arrays and a hash out.

Every space is checked before any work starts, by the same rules as
:func:`gwlite.gromov_wasserstein` (:func:`gwlite.problem.make_problem`); a bad space is
refused with its index. A dataset is computed in one array library and one dtype (the
widest of its spaces).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gwlite import _xp
from gwlite.errors import GWInputError
from gwlite.problem import make_problem

__all__ = ["SpaceSet", "as_spaces", "digest"]


@dataclass(frozen=True)
class SpaceSet:
    """Validated spaces: ``spaces[i] = (C, p)`` and optional display ``names``.

    For a dataset of point clouds (``clouds``), ``spaces[i] = (cloud, None)``: the cloud
    carries its weights (see :mod:`gwlite.pairs.clouds`)."""

    spaces: list
    names: tuple | None
    backend: str
    clouds: bool = False

    def __len__(self) -> int:
        return len(self.spaces)

    @property
    def sizes(self) -> np.ndarray:
        if self.clouds:
            return np.array([c.n for c, _ in self.spaces], dtype=np.int64)
        return np.array([int(C.shape[0]) for C, _ in self.spaces], dtype=np.int64)

    def host(self) -> list:
        """The spaces as host NumPy arrays (the precomputation runs on the host); clouds
        are host arrays already."""
        if self.clouds:
            return list(self.spaces)
        return [(_xp.to_numpy(C), _xp.to_numpy(p)) for C, p in self.spaces]


def _is_graph(x) -> bool:
    return hasattr(x, "nodes") and hasattr(x, "edges") and hasattr(x, "adj")


def _ndim(x) -> int:
    # arrays of every library carry ndim; np.ndim would copy a GPU array to the host
    return int(x.ndim) if hasattr(x, "ndim") else int(np.ndim(x))


def _split(item):
    """``(C, p)`` from a matrix, a ``(C, p)`` pair or a graph (graphs handled outside)."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        try:
            if _ndim(item[0]) == 2:
                return item[0], item[1]
        except (TypeError, ValueError):
            pass  # ragged nested lists: make_problem names the problem
    return item, None


def _prefix(k: int, err: GWInputError) -> GWInputError:
    text = str(err).replace("C1 ", "C ").replace("C1,", "C,")
    return GWInputError(f"spaces[{k}]: {text}")


def as_spaces(
    spaces,
    loss_fun: str,
    *,
    kind: str = "adjacency",
    weight: str | None = None,
    node_weights: str = "uniform",
) -> SpaceSet:
    """Validate ``spaces`` (matrices, ``(C, p)`` pairs or networkx graphs; or point
    clouds, all of them, see :func:`gwlite.pairs.clouds.check_clouds`).

    Raises
    ------
    GWInputError
        Naming the first bad space by its index, before any pair is computed.
    """
    from gwlite.graphs import from_networkx

    names = getattr(spaces, "names", None)
    if isinstance(spaces, (str, bytes)) or not isinstance(spaces, Sequence):
        try:
            spaces = list(spaces)
        except TypeError as err:
            raise GWInputError(
                "spaces must be a sequence of matrices, (C, p) pairs or networkx graphs"
            ) from err
    if len(spaces) == 0:
        raise GWInputError("spaces is empty: pairwise needs at least one space")
    from gwlite.pairs.clouds import check_clouds

    if check_clouds(spaces):
        # pairwise on clouds runs on the host (features, tiles, processes and stores are
        # NumPy): torch or CuPy clouds are copied there once, n x d each
        hosted = [(c.to_host(), None) for c in spaces]
        return SpaceSet(hosted, _names(names, len(spaces)), "numpy", True)
    out = []
    for k, item in enumerate(spaces):
        if _is_graph(item):
            try:
                C, p = from_networkx(item, kind=kind, weight=weight, node_weights=node_weights)
            except GWInputError as err:
                raise _prefix(k, err) from None
        else:
            C, p = _split(item)
        try:
            problem = make_problem(C, C, p, p, loss_fun)
        except GWInputError as err:
            raise _prefix(k, err) from None
        if problem.requires_grad:
            raise GWInputError(
                f"spaces[{k}] requires grad: pairwise computes values, not gradients; "
                "pass detached tensors (x.detach())"
            )
        out.append((problem.C1, problem.p))
    backends = [_xp.backend_name(C) for C, _ in out]
    for k, name in enumerate(backends):
        if name != backends[0]:
            raise GWInputError(
                f"spaces[{k}] is a {name} array but spaces[0] is {backends[0]}: pass every "
                "space in the same array library"
            )
    if backends[0] == "torch":
        devices = [str(C.device) for C, _ in out]
        for k, dev in enumerate(devices):
            if dev != devices[0]:
                raise GWInputError(f"spaces[{k}] is on {dev} but spaces[0] is on {devices[0]}")
    xp = _xp.array_namespace(out[0][0])
    dtype = out[0][0].dtype
    for C, _ in out[1:]:
        dtype = xp.result_type(dtype, C.dtype)
    out = [(xp.astype(C, dtype, copy=False), xp.astype(p, dtype, copy=False)) for C, p in out]
    return SpaceSet(out, _names(names, len(out)), backends[0])


def _names(names, n: int) -> tuple | None:
    if names is None:
        return None
    names = tuple(str(x) for x in names)
    if len(names) != n:
        raise GWInputError(f"{len(names)} names for {n} spaces")
    return names


def digest(space_set: SpaceSet, config: dict) -> str:
    """SHA-256 of every space (shape, dtype, bytes of C and p; of a cloud, its metric,
    coordinates and weights) and of ``config``."""
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    if space_set.clouds:
        pairs = [(c.X, c.p) for c, _ in space_set.spaces]
        h.update(json.dumps([c.metric for c, _ in space_set.spaces]).encode())
    else:
        pairs = space_set.host()
    for C, p in pairs:
        for a in (C, p):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()
