"""The IDX file format of MNIST and Fashion-MNIST, plain or gzip-compressed.

Layout (LeCun et al., the MNIST database page): two zero bytes, a type code, the number
of dimensions d, then d big-endian uint32 sizes, then the values in row-major order,
big-endian. A file is gzip-compressed when it starts with the gzip magic bytes,
whatever its name.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from diffuse.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzip or not), in native byte order.

    Raises DataError naming the file when it is truncated, has trailing bytes, or is not
    IDX or valid gzip.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex()!r})")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise DataError(f"{path} is truncated: its IDX header ends early")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header_end
    if found != expected:
        state = "truncated" if found < expected else "corrupt (trailing bytes)"
        raise DataError(
            f"{path} is {state}: shape {list(shape)} needs {expected} bytes of values, "
            f"the file has {found}. Download it again."
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _read_maybe_gzip(path: Path) -> bytes:
    data = path.read_bytes()
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path} is a truncated or corrupt gzip file ({err}). Download it again."
        ) from err
