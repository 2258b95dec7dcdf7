"""Fuzz harness for the fusion side and the pair store (issue 24): generated cases, one contract.

* **Losses** (GLD with shares/degrees/batch graphs, ULD full and top-k): shapes from
  empty to ragged, fp32/fp64/bf16/fp16, random bool masks, NaN/+inf/-inf at random
  places of the student or the teacher, cached ``TopK`` teachers with NaN or positive
  log-probabilities. Contract: a clean input gives a finite loss with finite gradients
  (or a ``ValueError`` for an impossible request such as ``k`` above the vocabulary);
  a defect raises a ``ValueError`` naming it, or with ``nan_policy="propagate"`` gives a
  NaN loss. Never a finite loss with NaN gradients, never another exception type.
* **Answer cleansing**: completions of random lengths (up to ``MAX_TEXT_CHARS`` and
  beyond), long digit runs, huge and tiny exponents, Unicode digits and minus signs,
  number words, boxed answers. Contract: ``cleanse_answer`` returns a string or refuses
  an over-long text with ``ValueError``; robust numeric answers are canonical numbers;
  ``is_correct`` returns a bool. The module's timeout guards against a hang.
* **Stores**: tiny ``gwlite.pairwise`` runs whose store then has a chunk garbled,
  truncated, emptied or deleted, a metadata file truncated, or its lock held by another
  writer. Contract: the identical numbers of a fresh run, or one ``GWInputError`` line
  naming the problem; with ``repair=True`` a damaged chunk gives the fresh numbers.

Findings when it was written (each fixed, with a regression test): a deleted values
chunk read back as NaN values of pairs marked done
(``test_deleted_values_chunk_is_not_read_as_missing_values``); running the gwlite
harness at a smaller scale, ``proximal``/``auto`` reporting ``marginal_error=nan`` when
the time limit stopped the loop before its first step
(``test_time_limit_before_the_first_step_reports_a_finite_marginal_error``).

Derandomised like ``tests/gwlite/test_fuzz.py`` (``GWLITE_FUZZ_RANDOM=1`` explores fresh
seeds, ``GWLITE_FUZZ_SCALE`` multiplies the counts); the count and outcomes are printed
at the end of the module.
"""

from __future__ import annotations

import collections
import math
import os
import re

import numpy as np
import pytest
import torch
from fuzzing import fuzz, pick, seeds, write_report
from hypothesis import given

import fusion
from fusion import TopK
from fusion.eval import cleanse_answer, is_correct
from fusion.eval.cleansing import MAX_TEXT_CHARS, canonical_number
from fusion.eval.spec import TASKS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800, method="thread")]

OUTCOMES: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    write_report(request, "fusion + store fuzz", OUTCOMES)


# ---------------------------------------------------------------------------------- losses
DTYPES = [torch.float32] * 3 + [torch.float64, torch.bfloat16, torch.float16]
DEFECTS = ["none"] * 4 + ["nan", "+inf", "-inf", "topk_nan", "topk_positive"]
LOSS_KINDS = ["gld", "gld_degrees", "gld_batch", "gld_rank", "uld", "uld_topk"]
BAD = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf}


def _loss(kind: str, k: int, policy: str):
    if kind.startswith("gld"):
        extra = {
            "gld": {},
            "gld_degrees": {"features": "degrees", "m": 5},
            "gld_batch": {"graph": "batch"},
            "gld_rank": {"nodes": "rank"},
        }[kind]
        return fusion.GLDLoss(k=k, nan_policy=policy, **extra)
    return fusion.ULDLoss(top_k=k if kind == "uld_topk" else None, nan_policy=policy)


def _mask(rng, batch: int, length: int, dtype_ok: bool = True):
    choice = pick(rng, ["none", "none", "random", "all_false", "first"])
    if choice == "none":
        return None
    if choice == "all_false":
        return torch.zeros(batch, length, dtype=torch.bool)
    if choice == "first":
        m = torch.zeros(batch, length, dtype=torch.bool)
        m[:, : max(1, length // 2)] = True
        return m
    return torch.from_numpy(rng.random((batch, length)) < 0.6)


def _loss_case(seed: int):
    rng = np.random.default_rng(seed)
    batch, t_s, t_t = int(rng.integers(1, 4)), int(rng.integers(1, 7)), int(rng.integers(1, 7))
    v_s, v_t = int(rng.integers(2, 24)), int(rng.integers(2, 24))
    kind, defect = pick(rng, LOSS_KINDS), pick(rng, DEFECTS)
    dtype = pick(rng, DTYPES)
    k = int(rng.integers(1, 8))
    scale = float(pick(rng, [1.0, 1.0, 10.0, 1e-3, 30.0]))
    gen = torch.Generator().manual_seed(seed)
    student = (scale * torch.randn(batch, t_s, v_s, generator=gen, dtype=torch.float64)).to(dtype)
    teacher = (scale * torch.randn(batch, t_t, v_t, generator=gen, dtype=torch.float64)).to(dtype)
    use_topk = defect.startswith("topk") or (kind != "uld" and rng.random() < 0.3)
    if use_topk:
        lp = torch.log_softmax(teacher.double(), dim=-1)
        kk = min(v_t, k + int(rng.integers(0, 3)))
        vals, idx = torch.topk(lp, kk, dim=-1)
        teacher = TopK(vals.to(pick(rng, [torch.float32, torch.float16, torch.bfloat16])), idx)
    where = (int(rng.integers(batch)), int(rng.integers(t_s)), int(rng.integers(v_s)))
    if defect in BAD:
        if rng.random() < 0.5 or use_topk:
            student[where] = BAD[defect]
        else:
            teacher[where[0], int(rng.integers(t_t)), int(rng.integers(v_t))] = BAD[defect]
    elif defect == "topk_nan":
        teacher.logprobs[where[0], int(rng.integers(t_t)), 0] = math.nan
    elif defect == "topk_positive":
        teacher.logprobs[where[0], int(rng.integers(t_t)), 0] = float(rng.uniform(0.01, 3))
    masks = (_mask(rng, batch, t_s), _mask(rng, batch, t_t))
    return kind, defect, k, student, teacher, masks, pick(rng, ["raise", "propagate"])


@fuzz(900)
@given(seed=seeds)
def test_fuzz_losses(seed):
    kind, defect, k, student, teacher, masks, policy = _loss_case(seed)
    student = student.requires_grad_()
    loss_fn = _loss(kind, k, policy)
    try:
        loss = loss_fn(student, teacher, *masks)
    except ValueError as err:
        msg = str(err)
        if defect != "none" and policy == "raise":
            assert "holds" in msg, msg  # names the tensor and the value
            OUTCOMES[f"loss {defect}: refused"] += 1
            return
        # a request the inputs cannot meet: k above the vocabulary or the cached k'
        assert re.search(r"k'?=|fewer than k|vocab|k must|top_k|entries", msg), msg
        OUTCOMES["loss impossible request: refused"] += 1
        return
    if defect != "none":
        assert policy == "propagate", f"{defect} accepted under nan_policy='raise'"
        assert math.isnan(float(loss.detach())), f"{defect} gave a finite loss"
        OUTCOMES[f"loss {defect}: NaN loss (propagate)"] += 1
        return
    value = float(loss.detach())
    assert math.isfinite(value) and value >= -1e-6, value
    loss.backward()
    assert bool(torch.isfinite(student.grad).all()), "finite loss, non-finite gradient"
    OUTCOMES["loss clean: finite loss and gradient"] += 1


# ------------------------------------------------------------------------------ cleansing
UNICODE_DIGITS = ["\u0663", "\uff15", "\u096a", "\u0e52", "\U0001d7d9"]  # Arabic, full-width...
MINUS = ["-", "\u2212", "\u2013", "\uff0d"]
WORDS = ["The answer is", "Therefore", "\\boxed{", "}", "(B)", "yes", "no", "forty-two", "Q:\n"]


def _number(rng) -> str:
    kind = pick(rng, ["int", "int", "decimal", "exp", "huge_exp", "long", "unicode", "sep"])
    sign = pick(rng, ["", "", "", *MINUS])
    if kind == "int":
        return sign + str(int(rng.integers(0, 10**9)))
    if kind == "decimal":
        return f"{sign}{rng.integers(0, 10**6)}.{rng.integers(0, 10**6):06d}"
    if kind == "exp":
        return f"{sign}{rng.integers(1, 100)}e{rng.integers(-40, 40)}"
    if kind == "huge_exp":
        return f"{sign}1e{pick(rng, ['', '-'])}{rng.integers(10**3, 10**10)}"
    if kind == "long":
        return sign + "7" * int(rng.integers(100, 20_000))
    if kind == "unicode":
        return sign + "".join(pick(rng, UNICODE_DIGITS) for _ in range(int(rng.integers(1, 8))))
    return f"{sign}{rng.integers(1, 999)},{rng.integers(0, 999):03d},{rng.integers(0, 999):03d}"


def _completion(rng) -> str:
    parts = []
    for _ in range(int(rng.integers(0, 12))):
        parts.append(pick(rng, [_number(rng), pick(rng, WORDS), "word", " ", ".", "\n", "= ", "A"]))
    text = " ".join(parts)
    if rng.random() < 0.02:  # at and past the length limit
        text = " " + "7" * (MAX_TEXT_CHARS - 1 + int(rng.integers(0, 3)))
    return text


@fuzz(1000)
@given(seed=seeds)
def test_fuzz_cleansing(seed):
    rng = np.random.default_rng(seed)
    text = _completion(rng)
    task = pick(rng, sorted(TASKS))
    mode = pick(rng, ["paper", "robust"])
    method = pick(rng, ["zero_shot", "zero_shot_cot", "few_shot", "few_shot_cot"])
    try:
        pred = cleanse_answer(text, task, method, mode)
    except ValueError as err:
        assert len(text) > MAX_TEXT_CHARS and "MAX_TEXT_CHARS" in str(err), err
        OUTCOMES["cleansing over-long: refused"] += 1
        return
    assert isinstance(pred, str)
    if mode == "robust" and TASKS[task].kind == "numeric" and pred:
        assert canonical_number(pred) == pred, pred  # canonical, and a fixed point
        assert is_correct(pred, pred, task, "robust") is True
    gold = pick(rng, [_number(rng), "B", "yes", "] )", pred])
    assert isinstance(is_correct(pred, gold, task, mode), bool)
    OUTCOMES[f"cleansing {mode}: {'answer' if pred else 'no answer'}"] += 1


# ---------------------------------------------------------------------------------- stores
STORE_DEFECTS = ["none", "garbage", "truncate", "empty", "delete", "meta", "locked"]


def _store_spaces(rng):
    n = int(rng.integers(3, 6))
    out = []
    for _ in range(n):
        size = int(rng.integers(2, 5))
        A = rng.random((size, size))
        out.append((A + A.T) / 2)
    return out


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    return tmp_path_factory.mktemp("stores")


@fuzz(200)
@given(seed=seeds)
def test_fuzz_stores(store_root, seed):
    pytest.importorskip("zarr")
    import gwlite
    from gwlite.pairs.store import _lock

    rng = np.random.default_rng(seed)
    spaces = _store_spaces(rng)
    chunk = int(rng.integers(1, 3))
    quiet = {"engine": 1, "progress": False, "chunk": chunk}
    path = store_root / f"s{seed}.zarr"
    fresh = gwlite.pairwise(spaces, store=path, **quiet)
    defect = pick(rng, STORE_DEFECTS)
    files = sorted(p for p in path.rglob("*") if p.is_file() and "c" in p.relative_to(path).parts)
    lock = None
    if defect in ("garbage", "truncate", "empty", "delete") and files:
        f = files[int(rng.integers(len(files)))]
        data = f.read_bytes()
        if defect == "delete":
            f.unlink()
        else:
            f.write_bytes(
                {
                    "garbage": bytes(rng.integers(0, 256, 16, dtype=np.uint8)),
                    "truncate": data[: int(len(data) * rng.random())],
                    "empty": b"",
                }[defect]
            )
    elif defect == "meta":
        metas = sorted(path.rglob("zarr.json"))
        f = metas[int(rng.integers(len(metas)))]
        data = f.read_bytes()
        f.write_bytes(data[: int(len(data) * rng.random())])
    elif defect == "locked":
        lock = _lock(os.fspath(path))
    repair = bool(rng.random() < 0.5)
    try:
        again = gwlite.pairwise(spaces, store=path, repair=repair, **quiet)
    except gwlite.GWInputError as err:
        msg = str(err)
        assert "\n" not in msg.strip() or defect == "meta", msg
        expected = {
            "locked": "another process",
            "meta": "metadata is damaged|not one written|other inputs",
        }.get(defect, "cannot be read|without values")
        assert re.search(expected, msg), (defect, msg)
        assert not (repair and defect in ("garbage", "truncate", "empty", "delete")), msg
        OUTCOMES[f"store {defect}: refused"] += 1
        return
    finally:
        if lock is not None:
            lock.release()
    assert defect != "locked", "a second writer was let in"
    for name in ("lower", "upper", "certified"):
        assert np.array_equal(getattr(again, name), getattr(fresh, name), equal_nan=True), name
    how = "repaired, identical numbers" if again.diagnostics["store_repaired"] else "identical"
    OUTCOMES[f"store {defect}: {how}"] += 1
