"""The train_speed report: ratios, AUC deltas and the network-parity table."""

from __future__ import annotations

from benchmarks.train_speed import markdown, summarize


def cell(rate_rows: int, seconds: list[float], aucs: list[float]) -> dict:
    return {
        "runs": [
            {"epoch_train_s": seconds, "train_rows": rate_rows, "test_auc": a, "test_logloss": 0.2}
            for a in aucs
        ]
    }


def test_summarize_skips_warmup_epoch_and_reports_median() -> None:
    s = summarize(cell(1000, [9.0, 1.0, 1.0], [0.97, 0.98]))
    assert s["samples_per_s"] == 1000.0  # epoch 1 (9 s) is warm-up
    assert abs(s["test_auc_mean"] - 0.975) < 1e-12
    assert summarize({"runs": [], "unavailable": "no such model"}) == {
        "available": False,
        "reason": "no such model",
    }


def test_markdown_has_ratios_and_parity_rows() -> None:
    results = {
        "config": {"train_rows": 1000, "batch_size": 4096, "threads": 2, "epochs": 3, "repeats": 2},
        "models": {
            "deepfm": {
                "adrank": summarize(cell(1000, [1.0, 0.5, 0.5], [0.9730])),
                "deepctr_torch": summarize(cell(1000, [1.0, 1.0, 1.0], [0.9710])),
            }
        },
        "parity": {
            "deepfm": {
                "max_abs_prob_diff": 0.0,
                "loss_diff": 0.0,
                "grad_rel_diff": {"embedding": 5.8e-7, "dnn_layer_1": 3.9e-7},
            },
            "dcnv2": {"runs": [], "error": "Traceback ...\nImportError: deepctr_torch"},
        },
    }
    md = markdown(results)
    assert "| deepfm | deepctr_torch | 1,000 | 1.00 | 0.9710 ± 0.0000 | 2.00× | +0.0020 |" in md
    assert "| deepfm | 0.0e+00 | 0.0e+00 | 5.8e-07 | 3.9e-07 |" in md
    assert "| dcnv2 | n/a |" in md and "ImportError: deepctr_torch" in md
