"""diffuse's C kernels (``group_norm_kernels.c``), compiled for this machine on first use
and loaded with ctypes.

The source is compiled by the system's C compiler (``$CC``, else ``cc``, ``gcc`` or
``clang``) with ``-O3 -march=native -fopenmp`` into diffuse's cache folder
(``kernels/``, see ``user_cache_dir``), under a name that hashes the source, the
compiler's version, the flags and the CPU's instruction flags: a machine with other
instructions, or a new compiler, builds its own. The build takes a fraction of a second
and needs no Python headers and no PyTorch headers. Built by gcc, the library asks for
``libgomp.so.1``, which in a PyTorch process is PyTorch's own OpenMP runtime, already
loaded: the kernels run on PyTorch's threads. Where there is no compiler, or the build
fails, :func:`group_norm_kernels` returns None and the callers use their PyTorch code;
``DIFFUSE_NATIVE_KERNELS=0`` asks for that everywhere.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from diffuse.data.locate import user_cache_dir
from diffuse.hardware import cpu_instructions, cpuinfo_fields

SOURCE = Path(__file__).with_name("group_norm_kernels.c")
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp") + (
    # where the CPU has AVX-512, use its full width (compilers default to 256 bits): the
    # kernels ran 10-25 % faster so on the AMX Xeon of 2026-12-05
    ("-mprefer-vector-width=512",) if platform.machine().lower() in ("x86_64", "amd64") else ()
)
# DIFFUSE_NATIVE_KERNELS=0 keeps every operation in PyTorch
OPT_OUT = "DIFFUSE_NATIVE_KERNELS"
COMPILE_SECONDS = 120

_ptr, _i64, _int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
# every exported function's argument types, in the order of its C signature (pointers to
# float32 or float64 arrays, passed as addresses)
SIGNATURES = {
    "diffuse_group_norm_act_forward": (
        (_ptr,) * 5 + (_i64,) * 4 + (ctypes.c_double, _int) + (_ptr,) * 5 + (_int,)
    ),
    "diffuse_group_norm_act_backward": (
        (_ptr,) * 8 + (_i64,) * 4 + (_int,) + (_ptr,) * 3 + (_int,)
    ),
}


def native_kernels_wanted(environ: os._Environ | dict[str, str] = os.environ) -> bool:
    """Whether the environment allows the C kernels (``DIFFUSE_NATIVE_KERNELS`` not 0)."""
    return environ.get(OPT_OUT, "1").strip() != "0"


def find_compiler() -> list[str] | None:
    """The C compiler's command: ``$CC`` where set (split as a shell would: "gcc -m64"),
    else the first of cc, gcc and clang on the PATH."""
    own = shlex.split(os.environ.get("CC", ""))
    if own:
        return own
    found = (shutil.which(name) for name in ("cc", "gcc", "clang"))
    return next(([path] for path in found if path), None)


def build_key(compiler: list[str]) -> str:
    """What the compiled library depends on, hashed: source, compiler, flags, CPU."""
    version = subprocess.run(
        [*compiler, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version.encode(), " ".join(FLAGS).encode()):
        digest.update(part)
        digest.update(b"\0")
    digest.update(" ".join(sorted(cpu_instructions(cpuinfo_fields()))).encode())
    return digest.hexdigest()[:20]


def build(compiler: list[str], target: Path) -> None:
    """Compile :data:`SOURCE` into ``target``, atomically (a build that fails, or runs in
    another process at the same time, never leaves a partial library under that name)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".part")
    os.close(fd)
    try:
        subprocess.run(
            [*compiler, *FLAGS, "-o", partial, str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=COMPILE_SECONDS,
            check=True,
        )
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def load(path: Path) -> ctypes.CDLL:
    """The library at ``path`` with every exported function's argument types set."""
    library = ctypes.CDLL(str(path))
    for name, arguments in SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes, function.restype = arguments, None
    return library


@functools.cache
def group_norm_kernels() -> ctypes.CDLL | None:
    """The compiled kernels of ``group_norm_kernels.c``, built on first use; None where
    they are turned off, there is no C compiler (both silently), or building or loading
    fails (with a warning: the callers then run slower, not wrong)."""
    if not native_kernels_wanted():
        return None
    compiler = find_compiler()
    if compiler is None:
        return None
    try:
        target = user_cache_dir("kernels") / f"group_norm_kernels-{build_key(compiler)}.so"
        if not target.exists():
            build(compiler, target)
        return load(target)
    except subprocess.CalledProcessError as error:
        warnings.warn(
            f"diffuse's C kernels did not compile ({error.stderr.strip()[-500:]}); "
            f"PyTorch's operations stand in ({OPT_OUT}=0 stops trying)",
            RuntimeWarning,
            stacklevel=2,
        )
    except (OSError, subprocess.SubprocessError, AttributeError) as error:
        warnings.warn(
            f"diffuse's C kernels are not available ({error}); PyTorch's operations stand in "
            f"(DIFFUSE_CACHE names a writable cache folder; {OPT_OUT}=0 stops trying)",
            RuntimeWarning,
            stacklevel=2,
        )
    return None
