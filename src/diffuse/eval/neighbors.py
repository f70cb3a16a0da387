"""Nearest training images of generated samples: the memorization check of DDPM Figs. 12, 15.

DDPM (Ho et al. 2020, appendix D, Figs. 12 and 15) shows each sample beside its nearest
training images, by Euclidean distance in pixel space and in the feature space of an
Inception network, to show that the model does not reproduce its training set.

- :func:`nearest_vectors`: exact k nearest neighbours of vectors by Euclidean distance,
  over references processed a chunk at a time (60k references or more in bounded memory).
- :func:`embed`: images as the vectors compared: raw pixels or Inception pool_3 features.
- :func:`nearest_neighbors`: both in one call, for images.
- :func:`neighbor_figure`: the labelled grid (sample, then its k neighbours, per row).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from diffuse.errors import ConfigError, DataError, is_int_at_least
from diffuse.eval.features import InceptionExtractor
from diffuse.eval.metrics import squared_distances
from diffuse.eval.preprocess import check_images
from diffuse.rendering import Figure

SPACES = ("pixel", "inception")
# ITU-R BT.601 luma weights 0.299, 0.587, 0.114 in 16-bit fixed point, as PIL converts
# RGB to grey ("L").
LUMA_WEIGHTS = np.array([19595, 38470, 7471], dtype=np.uint32)


def nearest_vectors(
    queries,
    references,
    k: int,
    *,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` references nearest to each query by Euclidean distance.

    Args:
        queries: [Q, ...] array or tensor; each row is flattened to one vector.
        references: [R, ...] of the same row size (numpy arrays, memory maps included,
            or tensors); read ``batch_size`` rows at a time.
        k: neighbours per query, 1 <= k <= R.
        batch_size: references (and queries) per distance block.
        device: where the distances are computed.
        progress: show a progress bar over the references.

    Returns ``(indices, distances)``, int64 and float64 [Q, k], nearest first; of equally
    distant references the lower index comes first. Distances are computed in float64 as
    |q|^2 - 2 q.r + |r|^2 (exact for integer pixels), so near-duplicates are not reordered
    by rounding.
    """
    if not (is_int_at_least(k, 1) and k <= len(references)):
        raise ConfigError(f"k must be an integer in 1 .. {len(references)} (the references)")
    if len(queries) == 0:
        raise DataError("there are no queries to find neighbours of")
    query_rows = _rows(queries, device)
    width = int(np.prod(references.shape[1:]))
    if query_rows.shape[1] != width:
        raise DataError(
            f"queries have {query_rows.shape[1]} values per row, references {width}: "
            "compare vectors of one kind (same image size and channels, or same features)"
        )
    best_squared = torch.empty(len(query_rows), 0, dtype=torch.float64, device=device)
    best_indices = torch.empty(len(query_rows), 0, dtype=torch.long, device=device)
    bar = tqdm(total=len(references), desc="neighbours", unit="ref", disable=not progress)
    for start in range(0, len(references), batch_size):
        block = _rows(references[start : start + batch_size], device)
        squared = torch.cat(
            [
                squared_distances(query_rows[first : first + batch_size], block)
                for first in range(0, len(query_rows), batch_size)
            ]
        )
        indices = torch.arange(start, start + len(block), device=device)
        # The running best come first and hold lower indices, so a stable sort keeps the
        # lowest index first among equal distances.
        squared = torch.cat([best_squared, squared], dim=1)
        indices = torch.cat([best_indices, indices.expand(len(query_rows), -1)], dim=1)
        order = squared.sort(dim=1, stable=True).indices[:, :k]
        best_squared, best_indices = squared.gather(1, order), indices.gather(1, order)
        bar.update(len(block))
    bar.close()
    return best_indices.cpu().numpy(), best_squared.sqrt().cpu().numpy()


def _rows(array, device) -> torch.Tensor:
    """Rows of ``array`` as float64 vectors on ``device`` (numpy input is copied: it may be a
    read-only memory map)."""
    if not torch.is_tensor(array):
        array = torch.from_numpy(np.array(array, dtype=np.float64))
    return array.reshape(len(array), -1).to(device=device, dtype=torch.float64)


def embed(
    images,
    space: str,
    *,
    extractor: InceptionExtractor | None = None,
    progress: bool = False,
) -> np.ndarray:
    """The vectors that ``space`` compares for uint8 images [N, H, W(, C)].

    ``"pixel"``: the pixel values 0..255 (the images themselves, a vector per image);
    ``"inception"``: the pool_3 features of ``extractor`` (the default FID network when
    None), float64 [N, 2048].
    """
    check_space(space)
    check_images(images)
    if space == "pixel":
        return images
    return (extractor or InceptionExtractor())(images, progress=progress).pool


def check_space(space: str) -> None:
    """Refuse a space other than those of :data:`SPACES`."""
    if space not in SPACES:
        raise ConfigError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")


def nearest_neighbors(
    queries,
    references,
    k: int = 5,
    *,
    space: str = "pixel",
    extractor: InceptionExtractor | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` ``references`` nearest to each of the ``queries`` (both uint8 images).

    ``space`` is ``"pixel"`` (L2 between the 0..255 pixel values; both sets must have
    one shape) or ``"inception"`` (L2 between pool_3 features; any sizes and channels).
    Returns ``(indices, distances)`` as :func:`nearest_vectors` does.
    """
    check_space(space)
    check_images(queries, "the queries")
    check_images(references, "the references")
    if space == "pixel" and _hwc(queries) != _hwc(references):
        raise DataError(
            f"queries are {list(_hwc(queries))} images and references {list(_hwc(references))}"
            ": pixel distances need one size and channel count (see match_channels)"
        )
    vectors = [
        embed(x, space, extractor=extractor, progress=progress) for x in (queries, references)
    ]
    return nearest_vectors(*vectors, k, progress=progress)


def _hwc(images) -> tuple[int, int, int]:
    shape = tuple(images.shape[1:])
    return shape if len(shape) == 3 else (*shape, 1)


def match_channels(images: np.ndarray, channels: int, *, batch_size: int = 4096) -> np.ndarray:
    """uint8 images [N, H, W(, C)] as [N, H, W, channels]: grey copied to RGB, or RGB to its
    ITU-R BT.601 luma in PIL's fixed-point form (what ``convert("L")`` gives), computed
    ``batch_size`` images at a time."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[3] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=3)
    grey = np.empty((*images.shape[:3], 1), np.uint8)
    for start in range(0, len(images), batch_size):
        rgb = np.asarray(images[start : start + batch_size], dtype=np.uint32)
        grey[start : start + batch_size, ..., 0] = (rgb @ LUMA_WEIGHTS + 0x8000) >> 16
    return grey


def neighbor_figure(
    samples: np.ndarray, neighbors: np.ndarray, *, row_labels: list[str] | None = None
) -> Figure:
    """DDPM Figs. 12 and 15: a row per sample, the sample first, then its neighbours.

    ``samples`` are uint8 [n, H, W(, C)] and ``neighbors`` uint8 [n, k, H, W(, C)], nearest
    first. A grey sample beside RGB neighbours (or the reverse) is shown in RGB.
    """
    if neighbors.ndim == 4:
        neighbors = neighbors[..., None]
    channels = max(_hwc(samples)[2], neighbors.shape[4])
    samples = match_channels(np.asarray(samples), channels)
    k = neighbors.shape[1]
    flat = match_channels(neighbors.reshape(-1, *neighbors.shape[2:]), channels)
    tiles = np.concatenate([samples[:, None], flat.reshape(len(samples), k, *flat.shape[1:])], 1)
    labels = row_labels or [f"#{i}" for i in range(len(samples))]
    return Figure(tiles, labels, ["sample", *(f"NN {j + 1}" for j in range(k))])
