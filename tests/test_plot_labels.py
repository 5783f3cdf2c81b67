"""The leaderboard plot is readable: the y-axis spans [best - 0.01, best + 0.001], models
below it are labelled edge markers with their value, and no two labels overlap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from adrank.bench.plot import Panel, Point, draw, leaderboard_panels
from adrank.bench.report import Headline, aggregate
from adrank.bench.runner import read_results

FRAPPE_RUNS = Path(__file__).parent.parent / "benchmarks" / "results" / "frappe" / "runs.jsonl"


def check_labels(fig, labels) -> None:
    import matplotlib.pyplot as plt

    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in labels]
    figure = fig.bbox
    for text, b in zip(labels, boxes, strict=True):
        inside = b.x0 >= figure.x0 and b.y0 >= figure.y0 and b.x1 <= figure.x1 and b.y1 <= figure.y1
        assert inside, f"label {text.get_text()!r} {b} leaves the figure {figure}"
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            assert not a.overlaps(boxes[j]), (
                f"labels {labels[i].get_text()!r} and {labels[j].get_text()!r} overlap"
            )
    plt.close(fig)


def test_frappe_leaderboard_plot_labels_do_not_overlap() -> None:
    rows = aggregate(list(read_results(FRAPPE_RUNS).values()), "frappe")
    # a crowded board: all 19 models
    assert len(rows) >= 19
    fig, labels = draw(leaderboard_panels(rows, []), "frappe")
    ax = fig.axes[0]
    best = max(r.auc_mean for r in rows)
    assert ax.get_ylim() == pytest.approx((best - 0.01, best + 0.001))
    texts = {t.get_text() for t in labels}
    assert len(labels) == len(rows)
    below = {t for t in texts if "below axis" in t}
    lr = next(r for r in rows if r.model == "lr")
    assert below == {
        f"lr {lr.auc_mean:.4f} (below axis)",
        f"fm {rows[-2].auc_mean:.4f} (below axis)",
    }
    check_labels(fig, labels)


def test_crowded_panels_labels_do_not_overlap() -> None:
    rng = np.random.default_rng(0)
    names = [f"model_{i:02d}" for i in range(22)]
    panels = []
    for k in range(3):
        means = 0.80 + rng.random(22) * 0.002  # 22 models within 0.002 AUC
        means[:2] = [0.70, 0.75]  # two far below the axis
        times = 100 * np.exp(rng.random(22) * 0.3)  # and within 35% of each other in time
        points = tuple(
            Point(n, float(t), float(m), 0.0003)
            for n, t, m in zip(names, times, means, strict=True)
        )
        panels.append(Panel(f"task {k} AUC", points))
    fig, labels = draw(panels, "crowded")
    assert len(labels) == 66 and len(fig.axes) == 3
    check_labels(fig, labels)


def test_multitask_panels_one_per_headline() -> None:
    from adrank.bench.report import LeaderboardRow

    def row(model: str, click: float, conv: float) -> LeaderboardRow:
        metrics = {"click_auc": (click, 0.001), "buy_auc": (conv, 0.002)}
        return LeaderboardRow(
            model, 3, 0.0, 0.0, 0.0, 0.0, 10, 1.0, 5.0, 1.0, None, None, metrics=metrics
        )

    rows = [row("esmm", 0.8, 0.7), row("dnn (per task)", 0.81, 0.68)]
    heads = [Headline("click", "click AUC"), Headline("buy", "buy AUC (CVR on click=1 rows)")]
    panels = leaderboard_panels(rows, heads)
    assert [p.title for p in panels] == ["click AUC", "buy AUC (CVR on click=1 rows)"]
    assert [(p.model, p.mean) for p in panels[1].points] == [
        ("esmm", 0.7),
        ("dnn (per task)", 0.68),
    ]
    fig, labels = draw(panels, "funnel")
    assert fig.axes[1].get_ylim() == pytest.approx((0.69, 0.701))
    check_labels(fig, labels)
