"""The fuzz harness's pieces: input generators and the contract every call must meet.

The contract (``docs/guide/input_contract.md``): a call either returns a result whose
numbers are finite, ``0 <= lower <= upper``, whose coupling is feasible and costs
``upper``, and whose ``certified`` does not depend on the unit of the inputs; or it
raises :class:`gwlite.GWInputError` / :class:`gwlite.GWSolverError` with a message.
Nothing else: no other exception type, no NaN, no warning from gwlite's own code.

Hypothesis draws one seed per case; the knobs (dtype, scale, shape, container, defect,
weights, method, options) and the arrays come from a NumPy generator seeded with it:
one draw per case keeps generation cheap enough for 10,000 cases, and every failure
prints its knobs. Each generated input carries ``bad``: the reason it must be refused,
or ``None`` when it is valid.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from reference import gw_cost_dense

import gwlite
from gwlite import _xp

SHAPES = ["square"] * 12 + ["one", "empty", "nonsquare", "vector", "cube"]
DTYPES = (
    ["float64"] * 10
    + ["float32"] * 3
    + ["float16", "int64", "int8", "bool", "longdouble", "complex128", "object", "str"]
)
CONTAINERS = ["ndarray"] * 12 + ["list", "matrix", "sparse", "masked", "masked_hit", "none"]
FAMILIES = ["euclidean", "random", "adjacency", "asymmetric", "zeros", "constant", "circulant"]
DEFECTS = [None] * 14 + ["nan", "inf", "-inf", "nan_diag"]
WEIGHTS = (
    ["none"] * 6
    + ["uniform", "random", "zeros"] * 2
    + ["negative", "unnormalised", "nan", "short", "integer", "float32", "list", "all_zero"]
)


def pick(rng: np.random.Generator, options):
    """One of ``options`` (a list; repeats weight the choice)."""
    return options[int(rng.integers(len(options)))]


def scale_exponent(rng) -> int:
    """Mostly unit scale, often moderate, sometimes extreme (1e-300 .. 1e300)."""
    kind = pick(rng, ["unit", "unit", "moderate", "extreme", "edge"])
    if kind == "unit":
        return 0
    if kind == "moderate":
        return int(rng.integers(-12, 13))
    if kind == "extreme":
        return int(rng.integers(-300, 301))
    return pick(rng, [-160, -150, -145, -140, 140, 150, 152, 154, 160])


@dataclass
class Matrix:
    value: Any  # what is passed to gwlite
    host: np.ndarray | None  # float64 reference (valid inputs only)
    bad: str | None  # why it must be refused, or None
    n: int
    knobs: dict = field(default_factory=dict)


@dataclass
class Weights:
    value: Any
    host: np.ndarray | None
    bad: str | None
    kind: str = "none"


def _base(family: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if family == "euclidean":
        X = rng.normal(size=(n, 2))
        return np.linalg.norm(X[:, None] - X[None], axis=-1)
    if family == "random":
        A = rng.random((n, n))
        return A + A.T
    if family == "adjacency":
        A = np.triu(rng.random((n, n)) < 0.5, 1).astype(float)
        return A + A.T
    if family == "asymmetric":
        return rng.normal(size=(n, n))
    if family == "zeros":
        return np.zeros((n, n))
    if family == "constant":
        return np.full((n, n), 1.5)
    # circulant: every row has the same entries, so every mean-row feature ties
    row = rng.integers(0, 3, size=n).astype(float)
    return np.stack([np.roll(row, k) for k in range(n)])


_SHAPES = {
    "square": lambda n: (n, n),
    "one": lambda n: (1, 1),
    "empty": lambda n: (0, 0),
    "nonsquare": lambda n: (n, n + 1),
    "vector": lambda n: (n,),
    "cube": lambda n: (2, n, n),
}
_SHAPE_BAD = {"empty": "empty", "nonsquare": "square", "vector": "shape", "cube": "shape"}
VALID_DTYPES = ["float64"] * 6 + ["float32", "float16", "int64", "bool", "longdouble", "object"]
VALID_CONTAINERS = ["ndarray"] * 6 + ["list", "matrix", "sparse", "masked"]


def make_matrix(rng, n=None, *, mode="any", shapes=SHAPES, dtypes=DTYPES, max_n=6) -> Matrix:
    """A structure matrix in any form gwlite might be handed (NumPy and friends).

    ``mode``: ``"any"`` (valid or not), ``"valid"`` (every valid form: dtypes,
    containers, scales) or ``"plain"`` (a float64 ndarray at unit scale).
    """
    n = int(rng.integers(1, max_n + 1)) if n is None else n
    plain, valid = mode == "plain", mode != "any"
    knobs = {
        "shape": "square" if valid else pick(rng, shapes),
        "dtype": "float64" if plain else pick(rng, VALID_DTYPES if valid else dtypes),
        "container": pick(rng, ["ndarray"] if plain else VALID_CONTAINERS if valid else CONTAINERS),
        "family": pick(rng, FAMILIES),
        "defect": None if valid else pick(rng, DEFECTS),
        "exponent": 0 if plain else scale_exponent(rng),
    }
    shape, dtype = knobs["shape"], knobs["dtype"]
    size = _SHAPES[shape](n)
    square = len(size) == 2 and size[0] == size[1] > 0
    base = _base(knobs["family"], size[0], rng) if square else None
    if base is None:
        base = rng.random(size)
    if dtype in ("int64", "int8", "bool"):
        base = np.round(base * 3)
        if dtype == "bool":
            base = base > 1
    else:
        base = base * 10.0 ** knobs["exponent"]
    bad = _SHAPE_BAD.get(shape)
    defect = knobs["defect"]
    if defect and base.size and dtype not in ("int64", "int8", "bool"):
        flat = base.reshape(-1)
        idx = 0 if defect == "nan_diag" else int(rng.integers(flat.size))
        flat[idx] = {"nan": np.nan, "nan_diag": np.nan, "inf": np.inf, "-inf": -np.inf}[defect]
        bad = bad or "non-finite"
    with np.errstate(all="ignore"):
        arr = _as_dtype(base, dtype)
    if dtype in ("complex128", "str"):
        bad = bad or ("complex" if dtype == "complex128" else "numeric")
    host = None
    if bad is None:
        with np.errstate(all="ignore"):
            host = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(host)):  # a cast to float16/32 overflowed
            bad, host = "non-finite", None
    if knobs["container"] == "none":
        return Matrix(None, None, "None", n, knobs)
    value, bad = _contain(arr, knobs["container"], bad)
    return Matrix(value, host if bad is None else None, bad, size[-1] if size else 0, knobs)


def _as_dtype(base: np.ndarray, dtype: str):
    if dtype == "complex128":
        return base.astype(np.complex128) + 1j
    if dtype == "object":
        return base.astype(object)
    if dtype == "str":
        return base.astype(str)
    return base.astype(np.dtype(dtype))


def _contain(arr, container: str, bad):
    if container == "list":
        return arr.tolist(), bad
    if container == "matrix" and arr.ndim == 2:
        return np.asmatrix(arr), bad
    if container == "sparse" and arr.ndim == 2 and arr.dtype.kind in "biufc" and arr.itemsize > 2:
        return scipy.sparse.csr_array(arr), bad
    if container in ("masked", "masked_hit"):
        mask = np.zeros(arr.shape, dtype=bool)
        if container == "masked_hit" and arr.size:
            mask.reshape(-1)[0] = True
            bad = bad or "masked"
        return np.ma.array(arr, mask=mask), bad
    return arr, bad


def make_weights(rng, n: int, *, mode="any") -> Weights:
    """Node weights of an n-node space: ``mode`` ``"any"`` or ``"valid"``."""
    valid_kinds = ["none", "uniform", "random", "zeros", "float32", "list"]
    kind = pick(rng, valid_kinds if mode != "any" else WEIGHTS)
    if kind == "none" or n == 0:
        return Weights(None, None if n == 0 else np.full(n, 1.0 / n), None, "none")
    w = rng.random(n) + 0.05
    bad = None
    if kind == "uniform":
        w = np.full(n, 1.0 / n)
    elif kind == "zeros" and n > 1:
        w[rng.integers(n)] = 0.0
    elif kind == "all_zero":
        w[:] = 0.0
        bad = "sum to 1"
    if kind not in ("unnormalised", "all_zero", "uniform"):
        w = w / w.sum()
    if kind == "negative":
        w[0] = -0.5
        bad = "negative"
    elif kind == "nan":
        w[0] = np.nan
        bad = "non-finite"
    if kind == "unnormalised":
        w = w * 3.0
        bad = "sum to 1"
    if kind == "short":
        w = np.full(max(n - 1, 1) if n > 1 else 2, 1.0 / max(n - 1, 1))
        bad = "nodes"
    value: Any = w
    host = None if bad else np.asarray(w, dtype=np.float64)
    if kind == "integer":
        value, host, bad = np.ones(n, dtype=np.int64), None, "integer"
    elif kind == "float32":
        value = w.astype(np.float32)
        # widened weights are divided by their sum (in float64): the reference does too
        host = value.astype(np.float64) / value.astype(np.float64).sum()
    elif kind == "list":
        value = w.tolist()
    return Weights(value, host, bad, kind)


seeds = st.integers(0, 2**32 - 1)

_SCALE = float(os.environ.get("GWLITE_FUZZ_SCALE", "1"))
_RANDOM = bool(os.environ.get("GWLITE_FUZZ_RANDOM"))


def fuzz(examples: int):
    """Hypothesis settings of a fuzz test: derandomised (reproducible CI) unless
    ``GWLITE_FUZZ_RANDOM=1``, ``examples`` cases times ``GWLITE_FUZZ_SCALE``."""
    return settings(
        max_examples=max(1, int(examples * _SCALE)),
        deadline=None,
        derandomize=not _RANDOM,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def write_report(request, title: str, outcomes) -> None:
    """Print a harness's case count and outcomes at the end of its module."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    total = sum(outcomes.values())
    lines = [f"{title}: {total} generated cases"] + [
        f"  {key}: {count}" for key, count in sorted(outcomes.items())
    ]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + "\n".join(lines))


# ---------------------------------------------------------------- the contract
class ContractViolation(AssertionError):
    pass


@contextlib.contextmanager
def strict_warnings():
    """Every warning is an error, except POT's own (gwlite records POT's solver warnings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("default", module=r"ot(\..*)?")
        # auto's documented notice that its budget ended before a stage ran depends on the
        # machine's load, not on the inputs: not a contract violation
        warnings.filterwarnings("default", message=r"method='auto': the time limit")
        yield


def call(fn, *args, bad: str | None = None, **kwargs):
    """Run ``fn``; return its result, or None after a refusal that keeps the contract.

    ``bad``: why the inputs must be refused (then a result is a violation).
    """
    try:
        with strict_warnings():
            out = fn(*args, **kwargs)
    except gwlite.GWInputError as err:
        if not str(err).strip():
            raise ContractViolation("GWInputError without a message") from err
        return None
    except gwlite.GWSolverError as err:
        message = str(err)
        if not message.strip() or " raised " in message:
            raise ContractViolation(f"unexpected solver exception: {message}") from err
        if bad is not None:
            raise ContractViolation(f"invalid input ({bad}) reached a solver: {message}") from err
        return None
    if bad is not None:
        raise ContractViolation(f"input that must be refused ({bad}) gave a result: {out!r}")
    return out


def _floats(res) -> tuple[float, float, float]:
    return tuple(_xp.as_float(getattr(res, f)) for f in ("value", "lower", "upper"))


@dataclass
class Reference:
    """What the harness knows about valid inputs, in float64 on the host."""

    C1: np.ndarray
    C2: np.ndarray
    p: np.ndarray
    q: np.ndarray
    loss_fun: str = "square_loss"
    low_precision: bool = False
    notes: dict = field(default_factory=dict)

    @property
    def r(self) -> int:
        return 2 if self.loss_fun == "square_loss" else 1

    @property
    def scale(self) -> float:
        top = max(np.abs(self.C1).max(), np.abs(self.C2).max())
        return float(top) ** self.r

    @property
    def rtol(self) -> float:
        return 1e-3 if self.low_precision else 1e-9


def check_result(res, ref: Reference, *, grad: bool = False) -> None:
    """The contract of a GWResult, checked against float64 references."""
    fields = [getattr(res, f) for f in ("value", "lower", "upper")]
    kinds = {type(x) for x in fields}
    if grad:
        if not all(torch.is_tensor(x) and x.ndim == 0 for x in fields):
            raise ContractViolation(f"with grad, value/lower/upper must be 0-d tensors: {kinds}")
    elif kinds != {float}:
        raise ContractViolation(f"value/lower/upper must be Python floats, got {kinds}")
    value, lower, upper = _floats(res)
    if not all(math.isfinite(x) for x in (value, lower, upper)):
        raise ContractViolation(f"non-finite result: {value}, [{lower}, {upper}]")
    if not 0 <= lower <= upper:
        raise ContractViolation(f"interval [{lower}, {upper}] is not 0 <= lower <= upper")
    if not isinstance(res.certified, bool) or not isinstance(res.converged, bool):
        raise ContractViolation("certified and converged must be bools")
    if not (math.isfinite(res.marginal_error) and res.marginal_error >= 0):
        raise ContractViolation(f"marginal_error {res.marginal_error}")
    tol = ref.rtol * ref.scale * 16
    if res.coupling is not None:
        T = np.asarray(_xp.to_numpy(res.coupling), dtype=np.float64)
        if T.shape != (len(ref.p), len(ref.q)):
            raise ContractViolation(f"coupling shape {T.shape}")
        mtol = 1e-4 if ref.low_precision else 1e-9
        if T.min() < -mtol or np.abs(T.sum(1) - ref.p).sum() > mtol * 10:
            raise ContractViolation("coupling is not feasible (rows)")
        if np.abs(T.sum(0) - ref.q).sum() > mtol * 10:
            raise ContractViolation("coupling is not feasible (columns)")
        cost = gw_cost_dense(ref.C1, ref.C2, T, ref.loss_fun)
        if abs(cost - upper) > tol:
            raise ContractViolation(f"upper {upper} is not the coupling's cost {cost}")
    # every coupling costs at least the lower bound: the product coupling is one
    product = gw_cost_dense(ref.C1, ref.C2, np.outer(ref.p, ref.q), ref.loss_fun)
    if lower > product + tol:
        raise ContractViolation(f"lower {lower} above the product coupling's cost {product}")
    if res.certified and len(ref.C1) <= 8 and len(ref.C2) <= 8 and not ref.low_precision:
        # a certified value is GW: no proven lower bound may exceed it
        tlb = gwlite.lower_bound(ref.C1, ref.C2, ref.p, ref.q, loss_fun=ref.loss_fun, lower="tlb")
        if tlb > upper + 1e-10 * ref.scale:
            raise ContractViolation(f"certified at {upper} but TLB proves GW >= {tlb}")


def scaled(x, s: float):
    """``s * x`` for the array types the harness passes (None stays None)."""
    if x is None:
        return None
    if torch.is_tensor(x):
        return x * s
    return np.asarray(x) * s
