"""Image tensors to uint8 arrays, grids, labelled figures and PNG files."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from diffuse.io import atomic_write_bytes

MIN_TILE_PIXELS = 48
PADDING = 2


@dataclass(frozen=True)
class Figure:
    """A grid of images with labels.

    tiles:          uint8 [rows, columns, H, W, C].
    row_labels:     one label per row.
    column_labels:  one label per column.
    """

    tiles: np.ndarray
    row_labels: list[str]
    column_labels: list[str]

    def render(self, min_pixels: int = MIN_TILE_PIXELS) -> np.ndarray:
        """The labelled grid as uint8 [H, W, 3], tiles enlarged to ``min_pixels``."""
        rows, columns, height = self.tiles.shape[:3]
        factor = max(1, math.ceil(min_pixels / height))
        flat = upscale(self.tiles.reshape(rows * columns, *self.tiles.shape[2:]), factor)
        tile = height * factor
        grid = make_grid(flat, columns, padding=PADDING)
        grid = add_row_labels(grid, self.row_labels, tile, padding=PADDING)
        return add_column_labels(grid, self.column_labels, tile, padding=PADDING)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1], [N, C, H, W] -> uint8 [N, H, W, C] (rounded, clipped)."""
    x = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def make_grid(images: np.ndarray, columns: int, padding: int = 2, fill: int = 255) -> np.ndarray:
    """Tile uint8 images [N, H, W, C] into one [rows*(H+p)+p, cols*(W+p)+p, C] array."""
    n, h, w, c = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    grid = np.full(
        (rows * (h + padding) + padding, columns * (w + padding) + padding, c), fill, np.uint8
    )
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = image
    return grid


def upscale(images: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of uint8 [N, H, W, C], so small images stay legible."""
    return images.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else images


def add_row_labels(grid: np.ndarray, labels: Sequence[str], row_height: int, padding: int = 2):
    """Prefix each row of a grid with a text label in a white margin."""
    font = ImageFont.load_default()
    width = max(font.getbbox(label)[2] for label in labels) + 8 if labels else 0
    canvas = Image.new("RGB", (grid.shape[1] + width, grid.shape[0]), "white")
    canvas.paste(Image.fromarray(_as_rgb(grid)), (width, 0))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(labels):
        top = padding + i * (row_height + padding) + row_height // 2 - 6
        draw.text((4, top), label, fill="black", font=font)
    return np.asarray(canvas)


def add_column_labels(grid: np.ndarray, labels: Sequence[str], column_width: int, padding: int = 2):
    """Put a text label above each column of a grid."""
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + 16), "white")
    canvas.paste(Image.fromarray(_as_rgb(grid)), (0, 16))
    draw = ImageDraw.Draw(canvas)
    offset = grid.shape[1] - len(labels) * (column_width + padding) - padding
    for i, label in enumerate(labels):
        draw.text(
            (offset + padding + i * (column_width + padding), 2), label, fill="black", font=font
        )
    return np.asarray(canvas)


def _as_rgb(array: np.ndarray) -> np.ndarray:
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 [H, W, C] (C = 1 or 3) or [H, W] array as PNG, atomically."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
