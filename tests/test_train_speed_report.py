"""The train_speed report: ratios, AUC deltas and the network-parity table."""

from __future__ import annotations

import pytest

from benchmarks.train_speed import cell_key, markdown, summarize


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
    row = "| deepfm | deepctr_torch | 1,000 | 1.00 | 3.0 | 0.9710 ± 0.0000 | 2.00× | +0.0020 |"
    assert row in md
    assert "3 epochs per run" in md
    assert "| deepfm | 0.0e+00 | 0.0e+00 | 5.8e-07 | 3.9e-07 |" in md
    assert "| dcnv2 | n/a |" in md and "ImportError: deepctr_torch" in md


def test_fit_epochs_converge_decays_stops_and_restores_best(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The peers' BARS protocol: LR x 0.1 per bad epoch, stop after patience, best weights."""
    from pathlib import Path

    import numpy as np
    import torch

    monkeypatch.syspath_prepend(
        str(Path(__file__).resolve().parent.parent / "benchmarks" / "peers")
    )
    from common import fit_epochs

    model = torch.nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    y = np.array([0, 1, 0, 1], dtype=np.float32)
    good = np.array([0.1, 0.9, 0.2, 0.8])
    bad = np.array([0.9, 0.1, 0.8, 0.2])
    quality = iter([bad, good, bad, bad, good])  # epochs 1..5; 3 and 4 do not improve
    lrs: list[float] = []

    def run_epoch() -> None:
        lrs.append(opt.param_groups[0]["lr"])
        with torch.no_grad():
            model.weight.fill_(len(lrs))  # weights = epoch number

    spec = {"epochs": 10, "converge": True, "patience": 2}
    fit = fit_epochs(spec, model, opt, run_epoch, lambda: next(quality), y)
    assert len(fit["epoch_train_s"]) == 4  # stopped after 2 non-improving epochs
    assert fit["best_epoch"] == 2 and fit["valid_auc"] == 1.0
    assert lrs == [1.0, 1.0, 1.0, 0.1]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert model.weight.item() == 2.0  # epoch 2's weights restored

    fixed = fit_epochs({"epochs": 3}, model, opt, run_epoch, lambda: good, y)
    assert len(fixed["epoch_train_s"]) == 3 and fixed["valid_auc"] is None


def test_cell_key_ignores_repeats_only() -> None:
    spec = {"model": "deepfm", "seed": 2021, "repeats": 2, "epochs": 100, "converge": True}
    assert cell_key(spec) == cell_key({**spec, "repeats": 3})
    assert cell_key(spec) != cell_key({**spec, "seed": 2022})
    assert cell_key(spec) != cell_key({**spec, "converge": False})


def test_run_order_interleaves_frameworks_per_seed() -> None:
    from benchmarks.train_speed import run_order

    fws, seeds = ["adrank", "floor"], [2021, 2022]
    assert run_order(fws, seeds, "interleaved") == [
        ("adrank", 2021),
        ("floor", 2021),
        ("adrank", 2022),
        ("floor", 2022),
    ]
    assert run_order(fws, seeds, "grouped") == [
        ("adrank", 2021),
        ("adrank", 2022),
        ("floor", 2021),
        ("floor", 2022),
    ]
    with pytest.raises(ValueError, match="order must be one of"):
        run_order(fws, seeds, "random")


def test_paired_ratios_pair_runs_by_seed() -> None:
    """adrank ÷ floor is the median of per-seed ratios, each from the same round."""
    from benchmarks.train_speed import paired_ratios

    def runs(per_seed_s: dict[int, float]) -> dict:
        return {
            "runs": [
                {"seed": s, "epoch_train_s": [9.0, t], "train_rows": 1000, "test_auc": 0.97,
                 "test_logloss": 0.2}
                for s, t in per_seed_s.items()
            ]
        }  # fmt: skip

    # a slow spell in round 2022 hits both frameworks: the paired ratios stay 2.0 there
    cells = {
        "adrank/deepfm": runs({2021: 0.5, 2022: 1.0, 2023: 0.5}),
        "floor/deepfm": runs({2021: 1.0, 2022: 2.0, 2023: 0.8}),
        "fm_only/deepfm": {"runs": [], "unavailable": "no such model"},
    }
    summaries = {name.split("/")[0]: summarize(c) for name, c in cells.items()}
    paired_ratios(summaries, cells, "deepfm")
    assert summaries["floor"]["paired_ratios"] == [2.0, 2.0, 1.6]
    assert summaries["floor"]["paired_ratio"] == 2.0
    assert "paired_ratio" not in summaries["adrank"] and "paired_ratio" not in summaries["fm_only"]
    md = markdown(
        {
            "config": {"train_rows": 1000, "batch_size": 4096, "threads": 2, "epochs": 2,
                       "repeats": 3, "order": "interleaved"},
            "models": {"deepfm": {k: summaries[k] for k in ("adrank", "floor")}},
        }
    )  # fmt: skip
    assert "| 2.00× (1.60–2.00) |" in md
    assert "round-robin over the frameworks per seed" in md
