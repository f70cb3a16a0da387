"""Line plots written as PNG (matplotlib, without a display)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence

from diffuse.io import atomic_path


@contextlib.contextmanager
def _figure(path: str | os.PathLike, **subplots) -> Iterator[tuple]:
    """A matplotlib figure and its axes (``plt.subplots(**subplots)``), saved atomically as
    a PNG at ``path`` when the block ends without an error, and closed in any case."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(dpi=120, **subplots)
    try:
        yield figure, axes
        figure.tight_layout()
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)


LEGEND_INSIDE = 5  # lines whose legend fits inside the axes


def plot_lines(
    path: str | os.PathLike,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
) -> None:
    """One line per entry of ``series`` against ``x``, saved atomically as a PNG; beyond
    :data:`LEGEND_INSIDE` lines the legend goes to the right of the axes, off the data.
    ``logy``: a logarithmic y axis (for values spanning orders of magnitude)."""
    outside = len(series) > LEGEND_INSIDE
    with _figure(path, figsize=(7.5 if outside else 5, 3.5)) as (_, axes):
        for label, values in series.items():
            axes.plot(x, values, marker="o" if len(x) <= 30 else None, label=label)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        if logx:
            # Plain labels at the swept values instead of matplotlib's 3x10^1 style.
            axes.set_xscale("log")
            axes.set_xticks(list(x), [f"{value:g}" for value in x])
            axes.minorticks_off()
        if logy:
            axes.set_yscale("log")
        if title:
            axes.set_title(title)
        if outside:
            axes.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
        elif len(series) > 1:
            axes.legend()
        axes.grid(alpha=0.3)


def plot_panels(
    path: str | os.PathLike,
    panels: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    title: str = "",
) -> None:
    """One panel per ``(ylabel, x, y)``, stacked over a shared x axis, saved atomically as
    a PNG: quantities of different units against one x (e.g. a training run's steps)."""
    size = (6, 1.2 + 1.8 * len(panels))
    with _figure(path, nrows=len(panels), sharex=True, squeeze=False, figsize=size) as (
        figure,
        axes,
    ):
        for row, (ylabel, x, y) in zip(axes[:, 0], panels, strict=True):
            row.plot(x, y, marker="o" if len(x) <= 30 else None, markersize=3)
            row.set_ylabel(ylabel)
            row.grid(alpha=0.3)
        axes[-1, 0].set_xlabel(xlabel)
        if title:
            figure.suptitle(title)


def plot_rate_distortion(path: str | os.PathLike, rows: Sequence[Mapping[str, float]]) -> None:
    """DDPM Fig. 5: distortion against rate along the reverse process."""
    lossy = [row for row in rows if row["step"] >= 0]
    plot_lines(
        path,
        [row["rate"] for row in lossy],
        {"distortion": [row["distortion"] for row in lossy]},
        xlabel="rate (bits/dim)",
        ylabel="distortion (RMSE, [0, 255])",
        title="progressive lossy compression",
    )
