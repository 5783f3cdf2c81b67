"""The leaderboard plot: test AUC against mean train time, one panel per headline metric.

Readable by construction:

* the y-axis spans ``[best - 0.01, best + 0.001]`` (best: the top mean in the panel), so
  the differences that matter between good models are visible;
* a model below that range (LR and FM on Frappe) is a marker on the bottom edge whose
  label carries its value;
* labels never overlap: :func:`place_labels` measures every rendered label and nudges
  overlapping ones apart vertically (deterministic), keeping them inside the axes, with a
  thin leader line to the point when a label had to move.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from adrank.bench.report import Headline, LeaderboardRow

logger = logging.getLogger(__name__)

#: the axis shows [best - BELOW, best + ABOVE]
BELOW, ABOVE = 0.01, 0.001
#: gap between labels and from a label to its point, in pixels
PAD_PX, OFFSET_PX = 1.5, 5.0
MAX_PASSES = 2000
#: how many label heights up or down a label may move to find a free spot
MAX_STEPS = 12
EPS = 1e-6


@dataclass(frozen=True)
class Point:
    """One model in one panel: mean (± std) of the metric against mean train time."""

    model: str
    time_s: float
    mean: float
    std: float


@dataclass(frozen=True)
class Panel:
    """One plot panel: its title and its points."""

    title: str
    points: tuple[Point, ...]


def leaderboard_panels(rows: list[LeaderboardRow], headlines: list[Headline]) -> list[Panel]:
    """One panel of test AUC per headline (``<key>_auc``), or one of ``auc`` without."""
    if not headlines:
        points = tuple(Point(r.model, r.train_time_s, r.auc_mean, r.auc_std) for r in rows)
        return [Panel("test AUC", points)]
    panels = []
    for h in headlines:
        stats = [(r, r.metrics.get(f"{h.key}_auc")) for r in rows]
        points = tuple(Point(r.model, r.train_time_s, *s) for r, s in stats if s is not None)
        panels.append(Panel(h.title, points))
    return panels


def draw(panels: list[Panel], title: str) -> tuple[Figure, list[Text]]:
    """The figure (Agg) and every point label, already placed; raises ``ImportError``
    without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    width = 9.0 if n == 1 else 6.5 * n
    fig, axes = plt.subplots(1, n, figsize=(width, 6.5), dpi=120, squeeze=False)
    models = dict.fromkeys(p.model for panel in panels for p in _by_mean(panel.points))
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}  # a model's colour in every panel
    anchors = [_draw_points(ax, panel, colours) for ax, panel in zip(axes[0], panels, strict=True)]
    fig.suptitle(title)
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    labels: list[Text] = []
    for ax, panel_anchors in zip(axes[0], anchors, strict=True):
        labels += place_labels(ax, panel_anchors, renderer)
    return fig, labels


@dataclass(frozen=True)
class Anchor:
    """What a label points at: a marker at (x, y) in data coordinates, with error bar
    ``y ± std`` (0 for an edge marker)."""

    x: float
    y: float
    std: float
    text: str
    colour: str


def _by_mean(points: tuple[Point, ...]) -> list[Point]:
    """Finite points, best first (ties by name)."""
    return sorted((p for p in points if math.isfinite(p.mean)), key=lambda q: (-q.mean, q.model))


def _draw_points(ax: Axes, panel: Panel, colours: dict[str, str]) -> list[Anchor]:
    """Error bars for points in range, edge markers for those below; returns the label
    anchors, best model first."""
    from matplotlib.ticker import LogFormatter

    points = _by_mean(panel.points)
    ax.set_title(panel.title, fontsize=10)
    ax.set_xscale("log")
    ax.set_xlabel("mean train time per run (s, log scale)")
    ax.set_ylabel("test AUC (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    if not points:
        return []
    best = max(p.mean for p in points)
    low, high = best - BELOW, best + ABOVE
    anchors = []
    for p in points:
        colour = colours[p.model]
        if p.mean >= low:
            ax.errorbar(p.time_s, p.mean, yerr=p.std, fmt="o", ms=4, capsize=2, color=colour)
            anchors.append(Anchor(p.time_s, p.mean, p.std, p.model, colour))
        else:
            ax.plot(p.time_s, low, marker="v", ms=7, color=colour, clip_on=False, zorder=3)
            text = f"{p.model} {p.mean:.4f} (below axis)"
            anchors.append(Anchor(p.time_s, low, 0.0, text, colour))
    times = [p.time_s for p in points]
    ax.set_xlim(min(times) / 1.5, max(times) * 1.5)
    for axis_formatter in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis_formatter(LogFormatter(labelOnlyBase=False))  # 20, 50, 100 rather than 2x10^1
    ax.set_ylim(low, high)
    ax.ticklabel_format(axis="y", useOffset=False)
    return anchors


Box = list[float]  # [left, bottom, width, height] in display pixels


def place_labels(ax: Axes, anchors: list[Anchor], renderer: Any) -> list[Text]:
    """Put one label next to each anchor so that no two labels overlap.

    Labels are placed in anchor order (best model first). Each takes the first free spot
    among: right of its point, left of it, then the same one, two, ... label heights higher
    or lower; a spot is free when it is inside the axes and overlaps no placed label and no
    marker or error bar. A label with no free spot nearby takes its first spot that is
    clear of labels only (markers may show through), and a last pass nudges any remaining
    overlaps apart vertically. Labels away from their point get a leader line.
    """
    box = ax.get_window_extent(renderer)
    inner = (box.x0 + PAD_PX, box.y0 + PAD_PX, box.x1 - PAD_PX, box.y1 - PAD_PX)
    obstacles = [_marker_box(ax, a) for a in anchors]
    texts, boxes, targets = [], [], []
    for anchor in anchors:
        text = ax.text(
            0, 0, anchor.text, fontsize=8, color=anchor.colour, ha="left", va="bottom",
            transform=ax.transAxes, clip_on=False, zorder=4,
        )  # fmt: skip
        extent = text.get_window_extent(renderer)
        px, py = ax.transData.transform((anchor.x, anchor.y))
        spots = _candidates(px, py, extent.width, extent.height, inner)
        free = [b for b in spots if not any(_intersects(b, o) for o in boxes + obstacles)]
        clear = [b for b in spots if not any(_intersects(b, o) for o in boxes)]
        texts.append(text)
        targets.append((px, py))
        boxes.append(list((free or clear or spots)[0]))
    if not _separate(boxes, inner[1], inner[3]):
        logger.warning("plot: some of %d labels still overlap in %r", len(boxes), ax.get_title())
    to_axes = ax.transAxes.inverted()
    for text, (left, bottom, width, height), (px, py) in zip(texts, boxes, targets, strict=True):
        text.set_position(to_axes.transform((left, bottom)))
        mid = bottom + height / 2
        if abs(mid - py) > height * 0.75:  # moved: a leader line from the point to the label
            edge = left if left > px else left + width
            ax.annotate(
                "",
                xy=to_axes.transform((px, py)),
                xycoords="axes fraction",
                xytext=to_axes.transform((edge, mid)),
                textcoords="axes fraction",
                arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6, "shrinkA": 0},
            )
    return texts


def _marker_box(ax: Axes, anchor: Anchor) -> Box:
    """The marker and error bar of ``anchor`` in display pixels."""
    px, low = ax.transData.transform((anchor.x, anchor.y - anchor.std))
    _, high = ax.transData.transform((anchor.x, anchor.y + anchor.std))
    half = 4.0
    low, high = min(low, high) - half, max(low, high) + half
    return [px - half, low, 2 * half, high - low]


def _candidates(
    px: float, py: float, width: float, height: float, inner: tuple[float, float, float, float]
) -> list[Box]:
    """Spots for a label of the given size near point (px, py), nearest first, clamped
    into ``inner`` = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = inner
    sides = [px + OFFSET_PX, px - OFFSET_PX - width]
    out: list[Box] = []
    for step in range(0, 2 * MAX_STEPS + 1):
        dy = (step + 1) // 2 * (height + PAD_PX) * (1 if step % 2 else -1)
        for left in sides:
            left = min(max(left, x0), x1 - width)
            bottom = min(max(py - height / 2 + dy, y0), y1 - height)
            spot = [left, bottom, width, height]
            if spot not in out:
                out.append(spot)
    return out


def _intersects(a: Box, b: Box) -> bool:
    return (
        a[0] < b[0] + b[2] + PAD_PX
        and b[0] < a[0] + a[2] + PAD_PX
        and a[1] < b[1] + b[3] + PAD_PX
        and b[1] < a[1] + a[3] + PAD_PX
    )


def _overlap(a: Box, b: Box) -> float:
    """Vertical overlap (plus the padding) of two boxes that overlap horizontally; 0 when
    they are apart."""
    if a[0] >= b[0] + b[2] + PAD_PX or b[0] >= a[0] + a[2] + PAD_PX:
        return 0.0
    return max(0.0, min(a[1] + a[3], b[1] + b[3]) + PAD_PX - max(a[1], b[1]))


def _separate(boxes: list[Box], floor: float, ceiling: float) -> bool:
    """Nudge boxes apart vertically in place; True when no two overlap in the end."""
    for _ in range(MAX_PASSES):
        moved = False
        order = sorted(range(len(boxes)), key=lambda i: (boxes[i][1], i))
        for n, i in enumerate(order):
            for j in order[n + 1 :]:
                lower, upper = boxes[i], boxes[j]
                if lower[1] > upper[1]:
                    lower, upper = upper, lower
                overlap = _overlap(lower, upper)
                if overlap <= EPS:
                    continue
                moved = True
                down = min(overlap / 2, lower[1] - floor)
                up = min(overlap - down, ceiling - upper[1] - upper[3])
                down = min(overlap - up, lower[1] - floor)
                lower[1] -= down
                upper[1] += up
        if not moved:
            return True
    pairs = ((a, b) for n, a in enumerate(boxes) for b in boxes[n + 1 :])
    return not any(_overlap(a, b) > EPS for a, b in pairs)
