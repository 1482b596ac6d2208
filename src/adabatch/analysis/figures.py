"""PNG figures of one experiment: curves against samples, steps and wall-clock, the frontier (final
accuracy and training loss against steps, one point per method), and the two sides of each adaptive
test. Built on matplotlib.figure.Figure (no pyplot state), so any backend works."""
from __future__ import annotations

import itertools
import json
import math
import statistics
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogFormatter, LogLocator, NullFormatter

from ..batch_size import AdaptiveTest
from ..components import shipped
from .aggregate import AXES, EVALUATED, SAMPLES, STEPS, Axis, Band, method_curves, tested_sides
from .frontier import Series, Spread, frontier_series, method_point
from .runs import Experiment, Method

DPI = 150
PANEL_SIZE = (5.0, 4.2)  # inches per panel
MIN_WIDTH = 8.0  # inches; room for the legend under a single panel
LEGEND_COLUMN_WIDTH = 3.5  # inches per legend column, enough for a label of about 40 characters
LABEL_CHARACTER_WIDTH = 0.075  # inches per character of a legend label, at the legend's font size
TITLE_CHARACTER_WIDTH = 0.09  # inches per character of a figure's title, at its font size
MAX_CURVE_SERIES = 8  # series a curve panel shows (tab10 keeps them distinct)
MARKERS_UP_TO = 50  # points per line; sparser test records get markers so single points show
BAND_NOTE = (
    "markers: evaluations, each the mean over the n seeds of that evaluation; "
    "batch size: mean over seeds; bands: min–max over seeds"
)
FRONTIER_NOTE = "point: mean over completed seeds (n); bars: min–max over seeds, in steps and in y"
SINGLE_MARKERS = ("s", "^", "D", "v", "P", "X", "h", "*")  # methods outside a series; series use "o"
FRONTIER_PANELS = ("final_test_acc", "best_train_loss")
ANNOTATION_SIZE = 8.5  # points
ANNOTATION_OFFSET = 7  # points between a point and its label
LABEL_PAD = 2  # points kept clear around a label's estimated extent
# Where a label may go, in order of preference: right, above, below, left, then the diagonals.
LABEL_DIRECTIONS = [
    np.array(d) / np.hypot(*d) for d in ((1, 0), (0, 1), (0, -1), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))
]

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
    "gns": [(r"noise scale, averaged: $\mathrm{tr}\Sigma/b \leq \|G\|^2/k$", "test_lhs", "test_rhs")],
}


def palette(count: int) -> list[tuple]:
    """`count` distinct colors: tab10's up to ten, else spread over turbo."""
    if count <= 10:
        return [tuple(color) for color in matplotlib.colormaps["tab10"].colors[:count]]
    return [tuple(color) for color in matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, count))]


def method_colors(methods: list[Method]) -> dict[str, tuple]:
    """One color per method label, in method order, shared by the curve figures of an experiment."""
    return dict(zip((method.label for method in methods), palette(len(methods))))


def is_tested(method: Method) -> bool:
    """Whether the method's batch-size policy is an adaptive test (rather than a schedule)."""
    return issubclass(shipped("batch_size", method.config["batch_size"]["name"]), AdaptiveTest)


def row_methods(experiment: Experiment) -> list[Method]:
    """The experiment's own methods, drawn in the curves: those run with the plan most of its methods
    share. A frontier's extra points each override one plan key (b0, eta), so they are left to the
    frontier figure. Where more than MAX_CURVE_SERIES remain, the row is its schedules and the test most
    of its tested methods run (the paper's row: one test with several optimizers); the other tests go to
    the frontier figure too, so a curve panel keeps series a qualitative palette tells apart; where more
    still remain (a learning-rate grid), the best of them by their mean final headline value.
    Runs without a plan (a multirun, a single run) are all the experiment's own."""
    plans = [json.dumps(method.config.get("plan"), sort_keys=True) for method in experiment.methods]
    shared = max(plans, key=plans.count)
    own = [method for method, plan in zip(experiment.methods, plans) if plan == shared]
    if len(own) <= MAX_CURVE_SERIES:
        return own
    tests = [method.config["batch_size"]["name"] for method in own if is_tested(method)]
    row_test = max(tests, key=tests.count, default=None)
    own = [method for method in own if not is_tested(method) or method.config["batch_size"]["name"] == row_test]
    if len(own) > MAX_CURVE_SERIES:  # still too many (a learning-rate grid): the best by mean final headline value
        headline = experiment.headline
        final = {method.label: statistics.fmean(run.summary[headline.final_key] for run in method.completed)
                 for method in own if method.completed}
        ranked = sorted(final, key=final.get, reverse=headline.higher_is_better)[:MAX_CURVE_SERIES]
        own = [method for method in own if method.label in ranked]
    return own


def legend_columns(fig_width: float, labels: list[str] = ()) -> int:
    """Legend columns that fit the figure, each as wide as the longest label needs (a learning-rate grid's run
    more than twice the usual 40 characters)."""
    longest = max((len(label) for label in labels), default=0)
    return max(1, int(fig_width // max(LEGEND_COLUMN_WIDTH, LABEL_CHARACTER_WIDTH * longest + 0.6)))


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


def set_title(fig: Figure, text: str) -> None:
    """The figure's title, on as many lines as its width needs (a one-panel figure is narrow)."""
    fig.suptitle(textwrap.fill(text, max(40, int(fig.get_figwidth() / TITLE_CHARACTER_WIDTH))))


def add_legend(fig: Figure, handles: list, labels: list[str], title: str) -> None:
    rows = math.ceil(len(labels) / legend_columns(fig.get_figwidth(), labels))
    ncols = math.ceil(len(labels) / rows)  # balanced columns, filled top to bottom
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, title=title, frameon=False)


def draw_curve(ax: Axes, curve: Band, color: tuple, measured: bool) -> Line2D:
    """The mean as a line and the seeds' range as a band; `measured` points (evaluations) get a marker
    each, and the line only joins them. A curve of one point is a marker too, or it would not show."""
    marker = {"marker": "o", "markersize": 3} if measured or curve.x.size == 1 else {}
    (line,) = ax.plot(curve.x, curve.mean, color=color, linewidth=1.4, **marker)
    ax.fill_between(curve.x, curve.low, curve.high, color=color, alpha=0.2, linewidth=0)
    return line


def curves_figure(experiment: Experiment, axis: Axis, colors: dict[str, tuple], title: str) -> Figure:
    methods = [method for method in experiment.methods if method.completed]
    headline = experiment.headline
    fig, (loss_ax, acc_ax, size_ax) = panel_figure(3, len(methods))
    handles, labels = [], []
    for method in methods:
        curves = method_curves(method.completed, axis, headline.key)
        color = colors[method.label]
        for ax, key in ((loss_ax, "train_loss"), (acc_ax, "test_acc"), (size_ax, "batch_size")):
            line = draw_curve(ax, curves[key], color, measured=key in EVALUATED)
            if key == "test_acc":
                handles.append(line)
        labels.append(f"{method.label} (n={len(method.completed)})")
    plain_log_axis(loss_ax)
    loss_ax.set_title("training loss (fixed training examples, at evaluations)", fontsize=10)
    loss_ax.set_ylabel("training loss (log scale)")
    acc_ax.set_title(headline.label, fontsize=10)  # "test accuracy"; a validation loss (lower is better)
    acc_ax.set_ylabel(headline.label)
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
    set_title(fig, f"{title}: against {axis.label}")
    add_legend(fig, handles, labels, BAND_NOTE)
    return fig


def spread_errors(points: list[Spread]) -> np.ndarray:
    """Error bar lengths below and above each mean (errorbar's 2 x N form): min to max over seeds."""
    return np.array([[p.mean - p.low for p in points], [p.high - p.mean for p in points]])


def series_means(series: Series, key: str) -> np.ndarray:
    """(mean steps, mean `key`) of each method of the series, one row each."""
    points = [method_point(method) for method in series.methods]
    return np.array([[point["steps"].mean, point[key].mean] for point in points])


def draw_series(ax: Axes, series: Series, key: str, color: tuple, marker: str):
    """The series' methods at (mean steps, mean `key`) with min–max bars; joined when a series."""
    points = [method_point(method) for method in series.methods]
    return ax.errorbar(
        [p["steps"].mean for p in points], [p[key].mean for p in points],
        xerr=spread_errors([p["steps"] for p in points]), yerr=spread_errors([p[key] for p in points]),
        color=color, marker=marker, markersize=6, linestyle="-" if series.symbol else "none", linewidth=1.4,
        elinewidth=1.0, capsize=2.5,
    )


def points_along(xy: np.ndarray) -> np.ndarray:
    """Points along the segments joining consecutive rows of xy (display coordinates), ends included."""
    along = np.linspace(0, 1, 8)[:, None, None]
    return (xy[:-1] * (1 - along) + xy[1:] * along).reshape(-1, 2)


def drawn_points(ax: Axes) -> np.ndarray:
    """Display coordinates of points on everything drawn in ax: lines (markers and their segments) and
    line collections (error bars)."""
    pieces = []
    for line in ax.lines:
        xy = ax.transData.transform(line.get_xydata())
        pieces.append(points_along(xy) if len(xy) > 1 and line.get_linestyle() != "None" else xy)
    for collection in ax.collections:
        if isinstance(collection, LineCollection):
            pieces += [points_along(ax.transData.transform(segment)) for segment in collection.get_segments()]
    return np.vstack(pieces)


def label_box(ax: Axes, xy: np.ndarray, direction: np.ndarray, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Center and half size (display units) of `text` set off from the point xy towards `direction`."""
    pixels = ax.figure.dpi / 72
    half = (np.array([0.3 * ANNOTATION_SIZE * len(text), 0.6 * ANNOTATION_SIZE]) + LABEL_PAD) * pixels
    return xy + direction * ANNOTATION_OFFSET * pixels + np.sign(direction.round(1)) * half, half


def crowding(ax: Axes, center: np.ndarray, half: np.ndarray, obstacles: np.ndarray) -> tuple[bool, int]:
    """How bad a label box is: whether it leaves the axes, then how many obstacles it covers."""
    outside = np.any(center - half < ax.bbox.min) or np.any(center + half > ax.bbox.max)
    return bool(outside), int(np.all(np.abs(obstacles - center) <= half, axis=1).sum())


def annotate_series(ax: Axes, series: Series, key: str, color: tuple, taken: list[np.ndarray]) -> None:
    """Label each point with its value, on whichever of eight sides its label leaves the axes least and
    covers the fewest drawn points and labels placed before it (in `taken`, to which it adds its own).
    Matplotlib does not place labels itself, and points of two series often lie close together."""
    means = series_means(series, key)
    for method, point, xy in zip(series.methods, means, ax.transData.transform(means)):
        text = f"{series.symbol}={series.value(method):g}"
        obstacles = np.vstack([drawn_points(ax), *taken])
        direction = min(LABEL_DIRECTIONS, key=lambda d: crowding(ax, *label_box(ax, xy, d, text), obstacles))
        center, half = label_box(ax, xy, direction, text)
        taken.append(center + half * np.array([[x, y] for x in (-1, 0, 1) for y in (-1, 0, 1)]))
        ha = {-1: "right", 0: "center", 1: "left"}[int(np.sign(direction[0].round(1)))]
        va = {-1: "top", 0: "center", 1: "bottom"}[int(np.sign(direction[1].round(1)))]
        ax.annotate(
            text, point, xytext=direction * ANNOTATION_OFFSET, textcoords="offset points",
            ha=ha, va=va, fontsize=ANNOTATION_SIZE, color=color, in_layout=False,
        )


def frontier_figure(experiment: Experiment, title: str) -> Figure:
    """Final test accuracy (the final validation loss of token runs) and best training loss against
    optimizer steps, one point per method."""
    headline = experiment.headline
    panels = (headline.final_key, FRONTIER_PANELS[1])
    series = frontier_series([method for method in experiment.methods if method.completed])
    colors = palette(len(series))
    fig, axes = panel_figure(2, len(series))
    singles = itertools.cycle(SINGLE_MARKERS)
    handles, labels = [], []
    for entry, color in zip(series, colors):
        marker = "o" if entry.symbol else next(singles)
        for ax, key in zip(axes, panels):
            drawn = draw_series(ax, entry, key, color, marker)
        handles.append(drawn)
        seeds = sorted({len(method.completed) for method in entry.methods})
        labels.append(f"{entry.label} (n={'/'.join(map(str, seeds))})")
    acc_ax, loss_ax = axes
    final = "final test accuracy" if headline.key == "test_acc" else f"final {headline.label}"
    acc_ax.set_title(final, fontsize=10)
    acc_ax.set_ylabel(final + (" (%)" if headline.key == "test_acc" else ""))
    plain_log_axis(loss_ax)
    loss_ax.set_title("best training loss (fixed training examples, at evaluations)", fontsize=10)
    loss_ax.set_ylabel("best training loss (log scale)")
    for ax in axes:
        ax.set_xscale("log")
        ax.margins(0.08)  # room for the labels of the outermost points
        ax.set_xlabel(STEPS.label)
        ax.grid(alpha=0.3)
    compared = "accuracy" if headline.key == "test_acc" else "validation loss"
    set_title(fig, f"{title}: final {compared} and training loss against optimizer steps")
    add_legend(fig, handles, labels, FRONTIER_NOTE)
    fig.draw_without_rendering()  # lays the figure out: labels are placed where the points finally are
    for ax, key in zip(axes, panels):
        taken: list[np.ndarray] = []
        for entry, color in zip(series, colors):
            if entry.symbol:
                annotate_series(ax, entry, key, color, taken)
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
    set_title(fig, f"{title}: adaptive test at each tested step")
    add_legend(fig, handles, labels, "one line per seed; the test holds where solid ≤ dashed")
    return fig


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def write_figures(experiment: Experiment, out_dir: Path, title: str) -> list[Path]:
    """All figures of `experiment` (which must have a completed run) under out_dir; their paths."""
    own = Experiment(experiment.name, row_methods(experiment))
    left_out = len(experiment.methods) - len(own.methods)
    own_title = f"{title} (its own methods; {left_out} more in frontier.png)" if left_out else title
    colors = method_colors(own.methods)
    written = [save(curves_figure(own, axis, colors, own_title), out_dir / f"curves_{axis.name}.png") for axis in AXES]
    written.append(save(frontier_figure(experiment, title), out_dir / "frontier.png"))
    test_figure = statistic_figure(own, colors, own_title)
    if test_figure is not None:
        written.append(save(test_figure, out_dir / "test_statistic.png"))
    return written
