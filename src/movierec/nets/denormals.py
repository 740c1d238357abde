"""Flushing float32 values under the smallest normal to zero on the threads that run the
softmax kernel and the step around it, as TensorFlow does on its own threads.

As training goes on, a softmax row puts almost all of its mass on a few columns: the other
probabilities, their products with the elu slopes and the Adam moments of rarely touched rows
fall under 1.2e-38, where x86 CPUs compute in microcode, tens of times slower per operation. On
the full-size twin the step on the host slowed by a third from the third epoch on. With the
FTZ and DAZ bits of the MXCSR register set, such values are zero, which changes no figure that
matters (they are 1e-38 of a probability) and is what TensorFlow's kernels compute.

Only x86-64 has the register; elsewhere :func:`flush_denormals` changes nothing.
"""

from __future__ import annotations

import contextlib
import platform

from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

FTZ_DAZ = 0x8040  # MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6)
X86_64 = platform.machine().lower() in ("x86_64", "amd64")


@intrinsic
def _mxcsr_swap(typingctx, set_bits, value):
    """This thread's MXCSR becomes ``old | value`` (``set_bits``) or ``value``; returns old."""
    def codegen(context, builder, signature, args):
        i32, i8p = ir.IntType(32), ir.IntType(8).as_pointer()
        slot = cgutils.alloca_once(builder, i32)
        ptr = builder.bitcast(slot, i8p)
        fnty = ir.FunctionType(ir.VoidType(), [i8p])
        store = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.stmxcsr")
        load = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.ldmxcsr")
        builder.call(store, [ptr])
        old = builder.load(slot)
        new = builder.select(builder.icmp_unsigned("!=", args[0], ir.Constant(i32, 0)),
                             builder.or_(old, args[1]), args[1])
        builder.store(new, slot)
        builder.call(load, [ptr])
        return old
    return types.int32(types.int32, types.int32), codegen


@njit(nogil=True, cache=True)
def _swap_here(set_bits, value):
    return _mxcsr_swap(set_bits, value)


@njit(nogil=True, parallel=True, cache=True)
def _flush_on_workers(n_threads):
    for _ in prange(n_threads):  # one iteration per thread of numba's pool
        _mxcsr_swap(1, FTZ_DAZ)


@contextlib.contextmanager
def flush_denormals():
    """Within: this thread and numba's threads flush denormals to zero. On leaving, this
    thread's mode is restored; numba's threads, which run only these kernels, keep it."""
    if not X86_64:
        yield
        return
    import numba

    old = _swap_here(1, FTZ_DAZ)
    _flush_on_workers(numba.config.NUMBA_NUM_THREADS)
    try:
        yield
    finally:
        _swap_here(0, old)
