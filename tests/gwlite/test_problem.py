"""Bad input gets a clear error, never a silent number."""

import numpy as np
import pytest
import torch

import gwlite
from gwlite.errors import GWInputError
from gwlite.problem import make_problem

GOOD = np.eye(3)


@pytest.mark.parametrize(
    ("C1", "message"),
    [
        (np.array([[0.0, np.nan], [1.0, 0.0]]), "non-finite"),
        (np.array([[0.0, np.inf], [1.0, 0.0]]), "non-finite"),
        (np.ones((2, 3)), "square"),
        (np.ones(3), "shape"),
        (np.ones((2, 2, 2)), "shape"),
        (np.zeros((0, 0)), "empty"),
        (np.array([["a", "b"], ["c", "d"]], dtype=object), "object"),
    ],
)
def test_bad_matrices(C1, message):
    with pytest.raises(GWInputError, match=message):
        gwlite.gromov_wasserstein(C1, GOOD)
    with pytest.raises(GWInputError, match=message):
        gwlite.gromov_wasserstein(GOOD, C1)


@pytest.mark.parametrize(
    ("p", "message"),
    [
        (np.array([0.5, 0.6, -0.1]), "negative"),
        (np.array([0.5, 0.5, 0.5]), "sum to 1"),
        (np.array([0.5, 0.5]), "3 nodes"),
        (np.array([np.nan, 0.5, 0.5]), "non-finite"),
        (np.array([1, 0, 0]), "integer"),
        (np.full((3, 1), 1 / 3), "shape"),
    ],
)
def test_bad_weights(p, message):
    with pytest.raises(GWInputError, match=message):
        gwlite.gromov_wasserstein(GOOD, GOOD, p, None)
    with pytest.raises(GWInputError, match=message):
        gwlite.lower_bound(GOOD, GOOD, None, p, lower="tlb")


def test_errors_are_value_errors():
    assert issubclass(GWInputError, ValueError)


def test_unknown_loss_lists_choices():
    with pytest.raises(GWInputError, match="abs_loss.*square_loss"):
        gwlite.gromov_wasserstein(GOOD, GOOD, loss_fun="l2")


def test_mixed_array_libraries_refused():
    with pytest.raises(GWInputError, match="mix array libraries"):
        gwlite.gromov_wasserstein(GOOD, torch.eye(3))


def test_lists_are_accepted():
    C = [[0, 1, 2], [1, 0, 3], [2, 3, 0]]
    res = gwlite.gromov_wasserstein(C, C, [0.2, 0.3, 0.5], [0.2, 0.3, 0.5])
    assert res.upper == 0.0 and res.certified


def test_weights_close_to_one_are_accepted():
    p = np.full(3, 1 / 3, dtype=np.float32)
    problem = make_problem(GOOD, GOOD, p, None)
    assert problem.p.dtype == np.float64


def test_batch_shape_mismatch():
    with pytest.raises(GWInputError, match="batch shapes"):
        gwlite.lower_bound(np.ones((2, 3, 3)), np.ones((3, 3, 3)))


def test_half_precision_is_computed_in_float32():
    problem = make_problem(GOOD.astype(np.float16), GOOD.astype(np.float16))
    assert problem.C1.dtype == np.float32


@pytest.mark.parametrize("kind", gwlite.LOWER_BOUNDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_every_bound_refuses_non_finite_entries(kind, bad):
    C = np.eye(4)
    C[1, 2] = bad
    p = np.array([0.5, 0.5, 0.0, 0.0])  # even a zero-weight column is caught
    with pytest.raises(GWInputError, match="non-finite"):
        gwlite.lower_bound(C, np.eye(4), p, None, lower=kind)
    with pytest.raises(GWInputError, match="non-finite"):
        gwlite.lower_bound(np.eye(4), C, None, p, lower=kind)
