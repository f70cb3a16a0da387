"""Line plots written as PNG (matplotlib, without a display)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from diffuse.io import atomic_path


def plot_lines(
    path: str | os.PathLike,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
) -> None:
    """One line per entry of ``series`` against ``x``, saved atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.5), dpi=120)
    try:
        for label, values in series.items():
            axes.plot(x, values, marker="o" if len(x) <= 30 else None, label=label)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        if logx:
            # Plain labels at the swept values instead of matplotlib's 3x10^1 style.
            axes.set_xscale("log")
            axes.set_xticks(list(x), [f"{value:g}" for value in x])
            axes.minorticks_off()
        if title:
            axes.set_title(title)
        if len(series) > 1:
            axes.legend()
        axes.grid(alpha=0.3)
        figure.tight_layout()
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)


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
