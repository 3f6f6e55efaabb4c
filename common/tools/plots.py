"""The comparison's figures, drawn with matplotlib (Agg backend: files only, no display).

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure` (tests read its titles and labels);
:func:`save` writes it as PNG and closes it. Only the repository tools use matplotlib; bundles never import it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

__all__ = ["DiceGroup", "dice_figure", "case_montage_figure", "learning_curve_figure", "save", "orthogonal_planes"]

# class colours of the label maps (index 0, background, is transparent)
LABEL_COLOURS = ["#e63946", "#2a9d8f", "#457b9d", "#f4a261", "#8338ec", "#ffd166"]
# difference overlay: 1 = false positive (predicted, not in the ground truth), 2 = false negative, 3 = wrong class
COLUMNS = ("image", "ground truth", "prediction", "difference")
DIFFERENCE_COLOURS = {1: ("#ff7f0e", "false positive"), 2: ("#1f77b4", "false negative"), 3: ("#bcbd22", "wrong class")}


@dataclass
class DiceGroup:
    """One bar of the Dice figure: a bundle (or twin), its per-run mean Dice and every test case's Dice."""

    label: str
    run_means: Sequence[float]
    case_values: Sequence[float] = field(default_factory=list)


def save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=110, bbox_inches="tight")
    return path


def dice_figure(groups: Sequence[DiceGroup], title: str = "Dice per method on the test cases") -> Figure:
    """Bars of the mean over seeds, a black dot per seed's run mean, grey dots per test case (all seeds), values."""
    figure = Figure(figsize=(max(6.0, 1.1 * len(groups) + 2.0), 4.8))
    axes = figure.add_subplot()
    rng = np.random.default_rng(0)  # jitter of the points only
    positions = np.arange(len(groups))
    for x, group in zip(positions, groups, strict=True):
        mean = float(np.mean(group.run_means))
        std = float(np.std(group.run_means, ddof=1)) if len(group.run_means) > 1 else 0.0
        colour = "#9ecae1" if group.label.endswith("_twin") else "#3182bd"
        axes.bar(x, mean, width=0.6, color=colour, yerr=std, capsize=4, zorder=1)
        cases = np.asarray(group.case_values, dtype=float)
        axes.scatter(x + rng.uniform(-0.22, 0.22, len(cases)), cases, s=9, color="0.55", alpha=0.7, zorder=2)
        runs = np.asarray(group.run_means, dtype=float)
        axes.scatter(x + np.linspace(-0.12, 0.12, len(runs)), runs, s=26, color="black", zorder=3)
        axes.annotate(f"{mean:.3f}", (x, min(mean + std, 1.0)), xytext=(0, 4), textcoords="offset points",
                      ha="center", va="bottom", fontsize=8)  # fmt: skip
    axes.set_xticks(positions, [g.label for g in groups], rotation=30, ha="right")
    axes.set_ylim(0.0, 1.08)
    axes.set_xlabel("bundle (light: supervised twin)")
    axes.set_ylabel("Dice (mean over classes)")
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(
        handles=[
            Patch(color="#3182bd", label="mean over seeds ± std"),
            axes.scatter([], [], s=26, color="black", label="one seed (mean over test cases)"),
            axes.scatter([], [], s=9, color="0.55", label="one test case"),
        ],
        loc="lower right",
        fontsize=8,
    )
    return figure


def orthogonal_planes(volume: np.ndarray, centre: Sequence[int]) -> list[tuple[str, np.ndarray]]:
    """The three planes of a ``(X, Y, Z)`` volume through ``centre``, named by the axis they cut."""
    x, y, z = (int(c) for c in centre)
    return [(f"z = {z}", volume[:, :, z]), (f"y = {y}", volume[:, y, :]), (f"x = {x}", volume[x, :, :])]


def _foreground_centre(label: np.ndarray) -> list[int]:
    """The foreground's centre of mass (the volume's centre when there is no foreground)."""
    points = np.argwhere(label > 0)
    return [int(v) for v in (points.mean(0) if len(points) else np.asarray(label.shape) / 2)]


def _best_slice(label: np.ndarray) -> int:
    return int(np.argmax((label > 0).reshape(-1, label.shape[-1]).sum(0)))


def difference_map(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """0 agree, 1 false positive, 2 false negative, 3 both foreground but another class."""
    diff = np.zeros(truth.shape, np.int64)
    diff[(pred > 0) & (truth == 0)] = 1
    diff[(pred == 0) & (truth > 0)] = 2
    diff[(pred > 0) & (truth > 0) & (pred != truth)] = 3
    return diff


def _show_labels(axes, image: np.ndarray, labels: np.ndarray, colours: Sequence[str]) -> None:
    axes.imshow(image.T, cmap="gray", origin="lower")
    masked = np.ma.masked_equal(labels.T, 0)
    axes.imshow(masked, cmap=ListedColormap(colours), vmin=1, vmax=len(colours), alpha=0.6, origin="lower",
                interpolation="nearest")  # fmt: skip


def case_montage_figure(
    image: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str, spatial_dims: int = 3
) -> Figure:
    """Image, ground truth, prediction and their difference (coloured overlay) of one case.

    ``spatial_dims`` 2 (a 2D method on a stack of slices): the slice with the most foreground; 3: the three
    orthogonal planes through the foreground's centre, one row each.
    """
    if image.shape != truth.shape or truth.shape != pred.shape:
        raise ValueError(f"image {image.shape}, ground truth {truth.shape} and prediction {pred.shape} differ")
    if spatial_dims == 2:
        z = _best_slice(truth)
        rows = [(f"slice {z}", image[..., z], truth[..., z], pred[..., z])]
    else:
        centre = _foreground_centre(truth)
        planes = [orthogonal_planes(volume, centre) for volume in (image, truth, pred)]
        rows = [(name, i, t, p) for (name, i), (_, t), (_, p) in zip(*planes, strict=True)]
    num_classes = int(max(truth.max(), pred.max(), 1))
    class_colours = (LABEL_COLOURS * (num_classes // len(LABEL_COLOURS) + 1))[:num_classes]
    figure = Figure(figsize=(11.0, 2.9 * len(rows) + 0.6))
    grid = figure.subplots(len(rows), 4, squeeze=False)
    for row, (name, img, gt, pr) in zip(grid, rows, strict=True):
        row[0].imshow(img.T, cmap="gray", origin="lower")
        _show_labels(row[1], img, gt, class_colours)
        _show_labels(row[2], img, pr, class_colours)
        _show_labels(row[3], img, difference_map(gt, pr), [c for c, _ in DIFFERENCE_COLOURS.values()])
        for axes, column in zip(row, COLUMNS, strict=True):
            axes.set_title(f"{column} ({name})", fontsize=9)
            axes.set_xticks([])
            axes.set_yticks([])
    figure.legend(
        handles=[Patch(color=c, label=f"class {i + 1}") for i, c in enumerate(class_colours)]
        + [Patch(color=c, label=name) for c, name in DIFFERENCE_COLOURS.values()],
        loc="lower center",
        ncol=num_classes + len(DIFFERENCE_COLOURS),
        fontsize=8,
    )
    figure.suptitle(title)
    return figure


Curve = Sequence[tuple[int, float]]


def learning_curve_figure(curves: Mapping[str, Sequence[tuple[Curve, Curve]]]) -> Figure:
    """Validation Dice (left) and the supervised training loss (right) against the iteration: per bundle or twin the
    mean over its seeds as a line and their range as a band, a twin dashed in its bundle's colour.

    ``curves`` maps a label to one ``(validation points, supervised loss points)`` per seed. Labels without validation
    points (LA and Pancreas have no validation split) are named in the Dice panel. The loss is a running mean over
    1/20 of the run: the per-iteration loss of a few labeled images is too noisy to tell methods apart.
    """
    figure = Figure(figsize=(12.0, 4.6))
    dice_axes, loss_axes = figure.subplots(1, 2)
    colours: dict[str, str] = {}
    missing = []
    for label, runs in curves.items():
        colour = colours.setdefault(label.removesuffix("_twin"), f"C{len(colours) % 10}")
        style = {"color": colour, "linestyle": "--" if label.endswith("_twin") else "-", "label": label}
        validation = [points for points, _ in runs if points]
        if validation:
            _mean_and_range(dice_axes, validation, style, marker="o", markersize=3)
        else:
            missing.append(label)
        losses = [_running_mean(points) for _, points in runs if points]
        if losses:
            _mean_and_range(loss_axes, losses, style)
    dice_axes.set_title("validation Dice (mean over seeds, band: range)")
    dice_axes.set_xlabel("iteration")
    dice_axes.set_ylabel("mean Dice (validation cases)")
    dice_axes.set_ylim(0.0, 1.0)
    loss_axes.set_title("supervised training loss (running mean)")
    loss_axes.set_xlabel("iteration")
    loss_axes.set_ylabel("supervised loss (labeled batch)")
    for axes in (dice_axes, loss_axes):
        axes.grid(alpha=0.3)
    if missing:
        note = "no validation split: " + ", ".join(missing)
        dice_axes.text(0.5, 0.5, textwrap.fill(note, 50), transform=dice_axes.transAxes, ha="center", fontsize=8)
    handles, labels = loss_axes.get_legend_handles_labels()
    if not handles:
        handles, labels = dice_axes.get_legend_handles_labels()
    if handles:
        columns = min(4, len(handles))
        figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=columns, fontsize=8)
    return figure


def _mean_and_range(axes, series: Sequence[Curve], style: Mapping[str, str], **line) -> None:
    """The mean over ``series`` at the iterations they all have, and a band from their minimum to their maximum."""
    steps = sorted(set.intersection(*(set(dict(points)) for points in series)))
    if not steps:
        return
    values = np.array([[dict(points)[step] for step in steps] for points in series], dtype=float)
    axes.plot(steps, values.mean(axis=0), linewidth=1.2, **style, **line)
    if len(series) > 1:
        axes.fill_between(steps, values.min(axis=0), values.max(axis=0), color=style["color"], alpha=0.12, lw=0)


def _running_mean(points: Curve, fraction: float = 0.05) -> Curve:
    steps, values = zip(*points, strict=True)
    window = max(1, int(len(values) * fraction))
    smoothed = np.convolve(np.asarray(values, dtype=float), np.ones(window) / window, mode="valid")
    return list(zip(steps[window - 1 :], smoothed.tolist(), strict=True))
