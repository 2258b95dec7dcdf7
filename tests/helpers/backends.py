"""The array backends every backend-parametrised test runs on, and conversion to them.

NumPy and torch-CPU always run; CUDA and CuPy cases are marked ``gpu`` and skipped with a
visible reason where no device exists (``benchmarks/gpu_check.sh`` runs them on one).
"""

import numpy as np
import pytest
import torch


def cupy_module():
    """CuPy with a usable device, or a skip that says why not."""
    try:
        import cupy

        cupy.zeros(1)  # fails without a usable device
        return cupy
    except Exception as err:  # ImportError, CUDARuntimeError, ...
        pytest.skip(f"CuPy unavailable: {type(err).__name__}: {err}")


BACKENDS = [
    "numpy",
    "torch-cpu",
    pytest.param("torch-cuda", marks=pytest.mark.gpu),
    pytest.param("cupy", marks=pytest.mark.gpu),
]


def convert(x, backend):
    """``x`` (NumPy or None) as an array of ``backend``."""
    if x is None:
        return None
    if backend == "numpy":
        return np.asarray(x)
    if backend == "torch-cpu":
        return torch.as_tensor(x)
    if backend == "torch-cuda":
        if not torch.cuda.is_available():
            pytest.skip("torch has no CUDA device here")
        return torch.as_tensor(x, device="cuda")
    return cupy_module().asarray(x)
