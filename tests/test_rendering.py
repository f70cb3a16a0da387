"""uint8 conversion, grids and PNG writing."""

import numpy as np
import torch
from PIL import Image

from diffuse.rendering import (
    add_column_labels,
    add_row_labels,
    make_grid,
    save_png,
    to_uint8,
    upscale,
)


def test_to_uint8_maps_the_unit_range_to_bytes():
    x = torch.tensor([-1.0, -0.999, 0.0, 1.0, 3.0]).reshape(1, 1, 1, 5)
    assert to_uint8(x).reshape(-1).tolist() == [0, 0, 128, 255, 255]
    assert to_uint8(torch.zeros(2, 3, 4, 5)).shape == (2, 4, 5, 3)


def test_grid_places_every_image():
    images = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1).repeat(3, 1).repeat(2, 2)
    grid = make_grid(images, columns=2, padding=1)
    assert grid.shape == (3 * 4 + 1, 2 * 3 + 1, 1)
    assert grid[1, 1, 0] == 0 and grid[1, 4, 0] == 1 and grid[9, 1, 0] == 4
    assert grid[9, 4, 0] == 255  # the empty sixth cell is background
    assert upscale(images, 3).shape == (5, 9, 6, 1)


def test_labelled_png_round_trip(tmp_path):
    grid = make_grid(np.zeros((4, 8, 8, 1), np.uint8), columns=2)
    labelled = add_column_labels(add_row_labels(grid, ["zero", "one"], 8), ["a", "b"], 8)
    assert labelled.shape[0] == grid.shape[0] + 16 and labelled.shape[1] > grid.shape[1]
    save_png(tmp_path / "grid.png", labelled)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grid.png")), labelled)
    save_png(tmp_path / "grey.png", grid)
    assert Image.open(tmp_path / "grey.png").mode == "L"
    assert [p.name for p in tmp_path.iterdir()] != [] and not list(tmp_path.glob(".*tmp"))


def test_line_plots_move_a_long_legend_off_the_data(tmp_path):
    from diffuse.plots import LEGEND_INSIDE, plot_lines

    widths = {}
    for count in (LEGEND_INSIDE, LEGEND_INSIDE + 5):
        series = {f"series {i}": [i, i + 1.0] for i in range(count)}
        path = tmp_path / f"{count}.png"
        plot_lines(path, [100, 1000], series, xlabel="steps", ylabel="fid", logx=True)
        widths[count] = Image.open(path).size[0]
    assert widths[LEGEND_INSIDE + 5] > 1.3 * widths[LEGEND_INSIDE]  # room for it on the right


def test_line_plots_take_a_log_y_axis_for_values_across_magnitudes(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from diffuse.plots import plot_lines

    scales = []
    original = Axes.set_yscale

    def recording(axes, value, **kwargs):
        scales.append(value)
        return original(axes, value, **kwargs)

    monkeypatch.setattr(Axes, "set_yscale", recording)
    series = {"loss": [7000.0, 30.0, 2.0, 1.5]}
    plot_lines(tmp_path / "linear.png", [0, 1, 2, 3], series, xlabel="step", ylabel="loss")
    assert scales == []
    plot_lines(tmp_path / "log.png", [0, 1, 2, 3], series, xlabel="step", ylabel="loss", logy=True)
    assert scales == ["log"] and Image.open(tmp_path / "log.png").size[0] > 0
