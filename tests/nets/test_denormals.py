"""Denormals flushed to zero inside ``flush_denormals``, on the calling thread and numba's,
and the calling thread's mode given back on leaving (x86-64: elsewhere it changes nothing)."""

import numpy as np
import pytest
from numba import njit, prange

from movierec.nets.denormals import X86_64, flush_denormals

TINY, SMALL = np.float32(1e-30), np.float32(1e-10)  # their product, 1e-40, is a denormal


@njit
def _product(a, b):
    return a * b


@njit(parallel=True)
def _products(a, b, out):
    for i in prange(out.shape[0]):
        out[i] = a[i] * b[i]


@pytest.mark.skipif(not X86_64, reason="the MXCSR register is x86-64's")
def test_denormals_are_zero_inside_and_the_callers_mode_comes_back():
    assert _product(TINY, SMALL) > 0 and TINY * SMALL > 0
    out = np.ones(16, np.float32)
    with flush_denormals():
        _products(np.full(16, TINY), np.full(16, SMALL), out)
        assert _product(TINY, SMALL) == 0 and TINY * SMALL == 0
        assert (out == 0).all()
        assert _product(np.float32(1e-20), SMALL) == np.float32(1e-30)  # normal: untouched
    assert _product(TINY, SMALL) > 0 and TINY * SMALL > 0
