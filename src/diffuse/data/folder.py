"""Any folder of images, searched recursively.

- Files: extensions in ``IMAGE_EXTENSIONS`` (case-insensitive), in sorted path order;
  hidden files and folders (name starting with ".") are skipped.
- Classes (when asked for): the name of each first-level sub-folder, sorted; class k is
  the k-th name. An image directly in the folder while sub-folders hold the others is an
  error. Without sub-folders the set is unlabelled.
- Size: every image is fitted to the square ``image_size`` as ADM does (BOX halvings,
  BICUBIC, centre crop: :func:`diffuse.data.resizing.center_crop_resize`), so mixed sizes
  are fine. ``image_size=None`` takes the smallest side among all images.
- Mode: one grey channel when every image is grey (modes 1, L, LA, I, I;16, F), else RGB
  for all; alpha is dropped and palettes are expanded.
- Memory: the images are decoded once into memory when they fit in ``MEMORY_BUDGET``
  bytes (or as ``in_memory`` says), else decoded each time they are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from diffuse.data.dataset import FolderSource, LoadedImages
from diffuse.data.resizing import GREY_MODES
from diffuse.errors import DataError, MissingFileError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
MEMORY_BUDGET = 1 << 30


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, hidden entries skipped)."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def class_labels(root: Path, paths: list[Path]) -> tuple[list[int] | None, tuple[str, ...]]:
    """Labels from first-level sub-folder names, or (None, ()) when there are none."""
    firsts = [path.relative_to(root).parts[0] for path in paths]
    loose = [path for path, first in zip(paths, firsts, strict=True) if path.parent == root]
    if len(loose) == len(paths):
        return None, ()
    if loose:
        raise DataError(
            f"{root}: {len(loose)} image(s) such as {loose[0].name} lie directly in the folder "
            "while the others are in class sub-folders. Move them into a class folder, or "
            "load the folder without classes (class_cond=False)."
        )
    names = tuple(sorted(set(firsts)))
    index = {name: k for k, name in enumerate(names)}
    return [index[first] for first in firsts], names


def image_headers(paths: list[Path]) -> list[tuple[tuple[int, int], str]]:
    """(size, mode) of each image, read from its header; a bad file raises DataError."""
    headers = []
    for path in paths:
        try:
            with Image.open(path) as image:
                headers.append((image.size, image.mode))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"cannot read image {path}: {err}. Replace or delete it.") from err
    return headers


@dataclass(frozen=True)
class FolderSurvey:
    """A folder's images as listed and read from their headers, nothing decoded yet: what
    a training run needs to know to fit its network to them, and what loading them reuses.

    root:  the folder.
    paths: the image files, in data set order.
    sizes: (width, height) of each image.
    modes: PIL mode of each image.
    """

    root: Path
    paths: tuple[Path, ...]
    sizes: tuple[tuple[int, int], ...]
    modes: tuple[str, ...]

    @property
    def grey(self) -> bool:
        """Whether every image is grey (the set then has one channel, else three)."""
        return all(mode in GREY_MODES for mode in self.modes)

    @property
    def smallest_side(self) -> int:
        """The smallest width or height among the images."""
        return min(min(size) for size in self.sizes)

    def classes(self) -> tuple[list[int] | None, tuple[str, ...]]:
        """Labels and class names from the sub-folders (see :func:`class_labels`)."""
        return class_labels(self.root, list(self.paths))


def survey_folder(root: str | Path) -> FolderSurvey:
    """List the images under ``root`` and read their headers (see the module docstring);
    a missing, empty or unreadable folder raises an error that names it."""
    root = Path(root).expanduser()
    if not root.exists():
        raise MissingFileError(f"no folder {root}: give an existing folder of images")
    if not root.is_dir():
        raise DataError(
            f"{root} is a file, not a folder of images. Give the folder that holds the "
            "images; for MNIST, Fashion-MNIST or CIFAR-10 files give the set's name and "
            "the file's folder as --data-dir."
        )
    paths = list_images(root)
    if not paths:
        raise DataError(
            f"{root} holds no images (looked recursively for "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    headers = image_headers(paths)
    return FolderSurvey(
        root,
        tuple(paths),
        tuple(size for size, _ in headers),
        tuple(mode for _, mode in headers),
    )


def load_folder(
    root: str | Path | FolderSurvey,
    image_size: int | None,
    class_cond: bool,
    in_memory: bool | None,
    progress: bool = True,
    workers: int = 0,
) -> LoadedImages:
    """Read a folder of images (see the module docstring for every rule), or the folder of
    a :class:`FolderSurvey` already made; ``progress`` shows a bar while the images are
    decoded into memory, by ``workers`` processes (0: this one)."""
    survey = root if isinstance(root, FolderSurvey) else survey_folder(root)
    labels, class_names = survey.classes() if class_cond else (None, ())
    size = image_size or survey.smallest_side
    source = FolderSource(list(survey.paths), size, survey.grey)
    if in_memory is None:
        in_memory = len(survey.paths) * size * size * source.channels <= MEMORY_BUDGET
    pixels = source.load_all(progress, workers) if in_memory else source
    return LoadedImages(pixels, labels, class_names, str(survey.root))
