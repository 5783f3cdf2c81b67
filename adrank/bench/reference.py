"""Published reference numbers (BARS leaderboard, single seed 2021).

Frappe_x1 uses negatives sampled by NFM's authors; adrank's ``frappe`` set is rebuilt from
the raw logs with the same rule but different random negatives, so these are a sanity
reference, not a target to hit to the digit.
"""

from __future__ import annotations

#: model -> (test AUC, test logloss) on BARS Frappe_x1
BARS_FRAPPE_X1: dict[str, tuple[float, float]] = {
    "lr": (0.9356, 0.3076),
    "fm": (0.9671, 0.2065),
    "dnn": (0.9833, 0.1622),
    "widedeep": (0.9841, 0.1490),
    "deepfm": (0.9842, 0.1482),
    "dcn": (0.9839, 0.1527),
    "dcnv2": (0.9845, 0.1491),
    "xdeepfm": (0.9845, 0.1466),
    "autoint": (0.9831, 0.1637),
    "autoint_plus": (0.9848, 0.1490),
    "fibinet": (0.9832, 0.1941),
    "masknet": (0.9837, 0.1696),
    "finalmlp": (0.9861, 0.1484),
    "finalnet": (0.9857, 0.1311),
    "ipnn": (0.9841, 0.1540),
    "dlrm": (0.9840, 0.1444),
    "edcn": (0.9850, 0.1547),
}

REFERENCES: dict[str, dict[str, tuple[float, float]]] = {"frappe": BARS_FRAPPE_X1}
REFERENCE_LABEL = "BARS Frappe_x1 (reference; different negatives)"
