"""Read a set of generated images to evaluate: an ``.npz``/``.npy`` file or a folder.

- ``.npz``: the array ``arr_0``, uint8 [N, H, W, C] (C = 1 or 3) or [N, H, W], the layout
  guided-diffusion's sampling scripts write and its evaluator reads. When the array is
  stored uncompressed (``np.savez``) it is memory-mapped, so 50k large images need not fit
  in memory; a compressed one is read whole.
- ``.npy``: one such array, memory-mapped.
- a folder holding ``samples.npz`` (what ``diffuse sample`` writes): that file.
- any other folder: every image under it (recursively, as
  :func:`diffuse.data.folder.list_images` finds them), all of one size, grey when all
  are grey and RGB otherwise; not resized.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from diffuse.data.folder import IMAGE_EXTENSIONS, image_headers, list_images
from diffuse.data.resizing import GREY_MODES, to_mode
from diffuse.errors import DataError, MissingFileError
from diffuse.eval.preprocess import check_images

SAMPLES_KEY = "arr_0"
SAMPLES_FILE = "samples.npz"
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra length
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def load_samples(path: str | Path, *, one_size_hint: str = "") -> np.ndarray:
    """uint8 images [N, H, W, C] or [N, H, W] from an .npz, .npy or a folder of images.

    ``one_size_hint`` ends the error for a folder of images of several sizes (what the
    caller offers instead, e.g. the reference's ``--ref-size``).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(f"no samples at {path}: give an .npz file or a folder of images")
    if path.is_dir() and (path / SAMPLES_FILE).is_file():
        path = path / SAMPLES_FILE  # an output folder of `diffuse sample`
    if path.is_dir():
        images = read_image_folder(path, one_size_hint)
    elif path.suffix == ".npz":
        images = read_npz_array(path, SAMPLES_KEY)
    elif path.suffix == ".npy":
        images = np.load(path, mmap_mode="r")
    else:
        raise DataError(
            f"{path} is neither an .npz/.npy file nor a folder; save samples with "
            f"np.savez(path, arr_0=images) (uint8 [N, H, W, C])"
        )
    check_images(images, what=f"the samples in {path}")
    return images


def read_npz_array(path: Path, key: str) -> np.ndarray:
    """Array ``key`` of an .npz: memory-mapped when stored uncompressed, else read whole."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = f"{key}.npy"
            names = [name.removesuffix(".npy") for name in archive.namelist()]
            if member not in archive.namelist():
                raise DataError(
                    f"{path} has no array {key!r} (it holds {', '.join(names) or 'nothing'}); "
                    f"save the images with np.savez(path, {key}=images)"
                )
            info = archive.getinfo(member)
            with archive.open(member) as handle:
                read_header = _HEADER_READERS.get(np.lib.format.read_magic(handle))
                if info.compress_type != zipfile.ZIP_STORED or read_header is None:
                    handle.seek(0)
                    return np.lib.format.read_array(handle, allow_pickle=False)
                shape, fortran, dtype = read_header(handle)
                array_offset = handle.tell()
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise DataError(f"cannot read {path} as an .npz file: {error}") from error
    if dtype.hasobject:
        raise DataError(f"{path}: {key} holds Python objects, not uint8 pixels")
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        _, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(raw.read(30))
    data_offset = info.header_offset + 30 + name_length + extra_length + array_offset
    return np.memmap(
        path, dtype=dtype, mode="r", offset=data_offset, shape=shape, order="F" if fortran else "C"
    )


def read_image_folder(root: Path, one_size_hint: str = "") -> np.ndarray:
    """Every image under ``root`` as one uint8 array; sizes must agree (else a DataError
    ending with ``one_size_hint``)."""
    paths = list_images(root)
    if not paths:
        raise DataError(
            f"{root} holds no images (looked recursively for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    headers = image_headers(paths)
    grey = all(mode in GREY_MODES for _, mode in headers)
    size = headers[0][0]
    for path, (other, _) in zip(paths, headers, strict=True):
        if other != size:
            raise DataError(
                f"{path} is {other[0]}x{other[1]} while {paths[0]} is {size[0]}x{size[1]}: "
                f"images to evaluate must all have one size{one_size_hint}"
            )
    images = np.empty((len(paths), size[1], size[0], *(() if grey else (3,))), np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            images[i] = np.asarray(to_mode(image, grey))
    return images
