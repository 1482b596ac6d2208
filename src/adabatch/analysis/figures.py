"""PNG figures of one experiment: curves against samples, steps and wall-clock, and the two sides of
each adaptive test. Built on matplotlib.figure.Figure (no pyplot state), so any backend works."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogFormatter, LogLocator, NullFormatter

from .aggregate import AXES, SAMPLES, Axis, method_curves, tested_sides
from .runs import Experiment, Method

DPI = 150
PANEL_SIZE = (5.0, 4.2)  # inches per panel
MIN_WIDTH = 8.0  # inches; room for the legend under a single panel
LEGEND_COLUMN_WIDTH = 3.5  # inches per legend column, enough for a label of about 40 characters
MARKERS_UP_TO = 50  # points per line; sparser test records get markers so single points show
BAND_NOTE = "line: mean over seeds (n), band: min–max over seeds"

# The panels of each adaptive test: (title, left-side key, right-side key).
TEST_PANELS: dict[str, list[tuple[str, str, str]]] = {
    "norm": [(r"norm test: $V/b \leq \eta^2\|\bar g\|^2$", "test_lhs", "test_rhs")],
    "inner_product": [(r"inner-product test: $V_{ip}/b \leq \theta^2\|\bar g\|^4$", "test_lhs", "test_rhs")],
    "augmented_inner_product": [
        (r"augmented, inner-product part: $V_{ip}/b \leq \theta^2\|\bar g\|^4$", "test_lhs_ip", "test_rhs_ip"),
        (r"augmented, orthogonality part: $V_{orth}/b \leq \nu^2\|\bar g\|^2$", "test_lhs_orth", "test_rhs_orth"),
    ],
    "coordinate_norm": [
        (r"coordinate-norm test, deciding $j$: $V_j/b \leq \eta^2\bar g_j^2$", "test_lhs", "test_rhs"),
    ],
}


def method_colors(methods: list[Method]) -> dict[str, tuple]:
    """One color per method label, in method order, shared by all figures of an experiment."""
    if len(methods) <= 10:
        palette = matplotlib.colormaps["tab10"].colors
    else:
        palette = matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, len(methods)))
    return {method.label: tuple(palette[i]) for i, method in enumerate(methods)}


def legend_columns(fig_width: float) -> int:
    return max(1, int(fig_width // LEGEND_COLUMN_WIDTH))


def panel_figure(panels: int, legend_entries: int) -> tuple[Figure, list[Axes]]:
    """Up to three panels side by side, more on two rows; room below for the legend."""
    cols = panels if panels <= 3 else math.ceil(panels / 2)
    rows = math.ceil(panels / cols)
    width = max(PANEL_SIZE[0] * cols, MIN_WIDTH)
    legend_rows = math.ceil(legend_entries / legend_columns(width))
    fig = Figure(figsize=(width, PANEL_SIZE[1] * rows + 0.9 + 0.25 * legend_rows), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(rows, cols)).flat)
    for unused in axes[panels:]:
        fig.delaxes(unused)
    return fig, axes[:panels]


class PlainLogFormatter(LogFormatter):
    """Label log ticks as 1.5 or 0.01 rather than 1.5×10⁰; which ticks get a label is LogFormatter's call."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def plain_log_axis(ax: Axes) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PlainLogFormatter())
    ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def powers_of_two_axis(ax: Axes) -> None:
    """Batch sizes are mostly powers of two: tick them as plain numbers on a base-2 log scale."""
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_locator(LogLocator(base=2, numticks=12))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def add_legend(fig: Figure, handles: list, labels: list[str], title: str) -> None:
    rows = math.ceil(len(labels) / legend_columns(fig.get_figwidth()))
    ncols = math.ceil(len(labels) / rows)  # balanced columns, filled top to bottom
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, title=title, frameon=False)


def curves_figure(experiment: Experiment, axis: Axis, colors: dict[str, tuple], title: str) -> Figure:
    methods = [method for method in experiment.methods if method.completed]
    fig, (loss_ax, acc_ax, size_ax) = panel_figure(3, len(methods))
    handles, labels = [], []
    for method in methods:
        curves = method_curves(method.completed, axis)
        color = colors[method.label]
        for ax, key in ((loss_ax, "train_loss"), (acc_ax, "test_acc"), (size_ax, "batch_size")):
            curve = curves[key]
            (line,) = ax.plot(curve.x, curve.mean, color=color, linewidth=1.6)
            ax.fill_between(curve.x, curve.low, curve.high, color=color, alpha=0.2, linewidth=0)
        handles.append(line)
        labels.append(f"{method.label} (n={len(method.completed)})")
    plain_log_axis(loss_ax)
    loss_ax.set_title("training loss (fixed training examples, at evaluations)", fontsize=10)
    loss_ax.set_ylabel("training loss (log scale)")
    acc_ax.set_title("test accuracy", fontsize=10)
    acc_ax.set_ylabel("test accuracy")
    powers_of_two_axis(size_ax)
    size_ax.set_title("batch size", fontsize=10)
    size_ax.set_ylabel("batch size (examples, log scale)")
    for ax in (loss_ax, acc_ax, size_ax):
        ax.set_xlabel(axis.label)
        if axis.log:
            ax.set_xscale("log")
        else:
            ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: against {axis.label}")
    add_legend(fig, handles, labels, BAND_NOTE)
    return fig


def panels_by_test(methods: list[Method]) -> dict[str, list[tuple[Method, str, str]]]:
    """Panel title -> the methods whose completed runs recorded that test, with its two keys."""
    panels: dict[str, list[tuple[Method, str, str]]] = {}
    for method in methods:
        name = method.config.get("batch_size", {}).get("name")
        for panel, lhs, rhs in TEST_PANELS.get(name, [(f"{name} test", "test_lhs", "test_rhs")]):
            if any(tested_sides(run, lhs, rhs)[0].size for run in method.completed):
                panels.setdefault(panel, []).append((method, lhs, rhs))
    return panels


def positive(values: np.ndarray) -> np.ndarray:
    """Log axes cannot show zeros (a coordinate with no variance): leave those points out."""
    return np.where(values > 0, values, np.nan)


def statistic_figure(experiment: Experiment, colors: dict[str, tuple], title: str) -> Figure | None:
    panels = panels_by_test([method for method in experiment.methods if method.completed])
    if not panels:
        return None
    tested = list(dict.fromkeys(method.label for entries in panels.values() for method, _, _ in entries))
    fig, axes = panel_figure(len(panels), len(tested) + 2)
    for ax, (panel, entries) in zip(axes, panels.items()):
        for method, lhs_key, rhs_key in entries:
            for run in method.completed:
                samples, lhs, rhs = tested_sides(run, lhs_key, rhs_key)
                marker = "o" if samples.size <= MARKERS_UP_TO else None
                style = {"color": colors[method.label], "marker": marker, "markersize": 4, "linewidth": 1.2}
                ax.plot(samples, positive(lhs), linestyle="-", **style)
                ax.plot(samples, positive(rhs), linestyle="--", markerfacecolor="none", **style)
        plain_log_axis(ax)
        ax.set_xlim(left=0)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel(SAMPLES.label)
        ax.set_ylabel("value of each side (log scale)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[label], linewidth=2) for label in tested]
    handles += [
        Line2D([], [], color="0.3", linestyle="-", marker="o", markersize=4),
        Line2D([], [], color="0.3", linestyle="--", marker="o", markersize=4, markerfacecolor="none"),
    ]
    labels = [*tested, "left side (variance / b)", "right side (threshold)"]
    fig.suptitle(f"{title}: adaptive test at each tested step")
    add_legend(fig, handles, labels, "one line per seed; the test holds where solid ≤ dashed")
    return fig


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def write_figures(experiment: Experiment, out_dir: Path, title: str) -> list[Path]:
    """All figures of `experiment` (which must have a completed run) under out_dir; their paths."""
    colors = method_colors(experiment.methods)
    written = [
        save(curves_figure(experiment, axis, colors, title), out_dir / f"curves_{axis.name}.png") for axis in AXES
    ]
    test_figure = statistic_figure(experiment, colors, title)
    if test_figure is not None:
        written.append(save(test_figure, out_dir / "test_statistic.png"))
    return written
