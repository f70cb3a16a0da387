"""Freed memory kept in the process, so that a network's large tensors reuse pages instead
of faulting in new ones at every step.

glibc's malloc, which PyTorch's CPU allocator calls, serves each request above its mmap
threshold (128 KiB, raised as blocks are freed, to at most 32 MiB) with a fresh anonymous
mapping and unmaps it when it is freed. A U-Net step allocates and frees hundreds of
activations of a few to tens of MiB, so every step maps them again and the kernel faults
each of their 4 KiB pages in, zeroed, on first touch. On a 2-core Xeon virtual machine
(AMX) that was 115-195 thousand page faults per step of the 32x32 ``bench`` network in
float32 (batch 64) and a seventh of the training step's time: kept in the process, the
training step ran 23.8 images/s against 20.9 and the forward pass 73.1 against 65.3, with
at most a few thousand faults a step, at 5 % (training) and 11 % (forward) more peak resident
memory (``benchmarks/bench_unet.py``, rows ``ours`` and ``ours-returning``, 2026-12-04).
On the ``fashion`` network, whose tensors are smaller, the training step gained nothing
and the forward pass 5 %.

:func:`keep_freed_memory` tells glibc to serve every allocation from its heap
(``M_MMAP_MAX`` 0) and not to give the heap's free top back to the kernel
(``M_TRIM_THRESHOLD``), so the memory a step frees is what the next step allocates. The
price is that the process keeps its peak: memory freed after a large step stays
resident until the process ends. The ``diffuse`` command calls it at start-up; Python
code that trains or samples calls it once itself.
"""

from __future__ import annotations

import ctypes
import os

# mallopt's parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# the largest threshold mallopt takes (an int); the heap's top is in practice never trimmed
NEVER_TRIM = 2**31 - 1
# environment variables by which a user tunes glibc's malloc: their choice stands
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
# DIFFUSE_KEEP_FREED_MEMORY=0 leaves glibc's defaults as they are
OPT_OUT = "DIFFUSE_KEEP_FREED_MEMORY"


def user_tuned_malloc(environ: os._Environ | dict[str, str] = os.environ) -> bool:
    """Whether the environment sets glibc's malloc parameters itself, or asks diffuse to
    leave them (``DIFFUSE_KEEP_FREED_MEMORY=0``)."""
    return (
        any(name in environ for name in USER_SETTINGS)
        or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")
        or environ.get(OPT_OUT, "1").strip() == "0"
    )


def running_on_glibc() -> bool:
    """Whether this process's C library is glibc, asked of the library itself (not read
    from the interpreter's file, as ``platform.libc_ver`` does)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not a name this C library knows
        return False


def keep_freed_memory() -> bool:
    """Keep memory freed by this process for its next allocations (see the module).

    Returns whether the setting was applied: not where the C library is not glibc, nor
    where the environment tunes glibc's malloc already (``MALLOC_MMAP_MAX_``,
    ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES``), nor
    where ``DIFFUSE_KEEP_FREED_MEMORY=0`` turns it off (glibc's defaults then stand: any
    of glibc's own variables also fixes its mmap threshold at 128 KiB, which made the
    training step above slower still, 15.3 images/s). Calling it again changes nothing.
    """
    if not running_on_glibc() or user_tuned_malloc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
