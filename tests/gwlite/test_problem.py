"""Bad input gets a clear error, never a silent number."""

import numpy as np
import pytest
import scipy.sparse
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


# ---------------------------------------------------------------- conversions
def _ref(C=None):
    A = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]]) if C is None else C
    return A, gwlite.gromov_wasserstein(A, GOOD)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.asmatrix itself
@pytest.mark.parametrize(
    "convert",
    [
        np.asmatrix,
        scipy.sparse.csr_matrix,
        scipy.sparse.csr_array,
        np.ma.array,  # no masked entry: converts cleanly
        lambda A: A.astype(object),
        lambda A: A.tolist(),
        lambda A: tuple(map(tuple, A)),
        lambda A: A.astype(np.longdouble),
    ],
    ids=["matrix", "csr_matrix", "csr_array", "masked", "object", "list", "tuple", "longdouble"],
)
def test_inputs_that_convert_cleanly_give_the_same_result(convert):
    A, ref = _ref()
    res = gwlite.gromov_wasserstein(convert(A), GOOD)
    assert res.value == ref.value and res.upper == ref.upper and res.certified == ref.certified
    assert type(res.coupling) is np.ndarray and res.coupling.dtype == np.float64


def test_pandas_frames_are_converted():
    pd = pytest.importorskip("pandas")
    A, ref = _ref()
    assert gwlite.gromov_wasserstein(pd.DataFrame(A), GOOD).upper == ref.upper


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (None, "C1 is None"),
        (np.eye(3) + 1j, "complex"),
        (np.eye(3, dtype=np.complex64), "complex"),
        (torch.eye(3, dtype=torch.complex64), "complex"),
        (np.ma.masked_greater(np.eye(3), 0.5), "masked entries"),
        (np.array([["a", "b"], ["c", "d"]]), "not numeric"),
        (np.array([[1, None], [None, 1]], dtype=object), "None entries"),
        ([[0, 1], [1]], "NumPy can convert"),
        ({"a": 1}, "object"),
        (np.array(["2020-01-01"], dtype="datetime64[D]").reshape(1, 1), "not numeric"),
    ],
)
def test_inputs_that_do_not_convert_are_refused(bad, message):
    other = torch.eye(3) if torch.is_tensor(bad) else GOOD
    with pytest.raises(GWInputError, match=message):
        gwlite.gromov_wasserstein(bad, other)
    with pytest.raises(GWInputError, match=message.replace("C1", "C2")):
        gwlite.lower_bound(other, bad, lower="tlb")


def test_complex_weights_are_refused():
    with pytest.raises(GWInputError, match="p is complex"):
        gwlite.gromov_wasserstein(GOOD, GOOD, np.full(3, 1 / 3) + 0j)


def test_float32_weights_sum_is_judged_as_given():
    # float32 weights of 1000 nodes sum to 1 only within ~1e-7: accepted for float64
    # matrices, and renormalised so that p and q have the same mass
    rng = np.random.default_rng(0)
    p = rng.random(1000).astype(np.float32)
    p /= p.sum()
    C = rng.random((1000, 1000))
    problem = make_problem(C, C, p, None)
    assert problem.p.dtype == np.float64
    assert abs(float(problem.p.sum()) - 1) < 1e-15


def test_weights_in_the_compute_dtype_are_used_bit_for_bit():
    p = np.full(7, 1 / 7)  # sums to 1 - 1 ulp
    problem = make_problem(np.eye(7), np.eye(7), p, None)
    assert np.array_equal(problem.p, p)


def test_symmetry_is_judged_relative_to_the_scale():
    A = np.array([[0.0, 1.0], [1.1, 0.0]]) * 1e-12  # 10% asymmetric, at any scale
    with pytest.raises(GWInputError, match="not symmetric"):
        gwlite.gromov_wasserstein(A, np.eye(2) * 1e-12, method="cg", symmetric=True)


def test_non_string_loss_is_refused():
    with pytest.raises(GWInputError, match="unknown loss_fun"):
        gwlite.gromov_wasserstein(GOOD, GOOD, loss_fun=["square_loss"])


def test_replaced_matrices_get_their_own_scale():
    import dataclasses

    problem = make_problem(GOOD, GOOD)
    assert problem.entry_scale() == 1.0 and problem.unit == 2.0
    bigger = dataclasses.replace(problem, C1=problem.C1 * 8)
    assert bigger.entry_scale() == 8.0 and bigger.scale() == 64.0
    assert make_problem(np.zeros((2, 2)), np.zeros((2, 2))).unit == 1.0
