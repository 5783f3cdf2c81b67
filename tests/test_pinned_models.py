"""A guard on every frappe leaderboard model's training numbers, not only DeepFM's.

``tests/test_pinned_run.py`` pins DeepFM's 2-epoch frappe run. It could not have caught the
changes that moved FinalMLP's and EDCN's committed rows (issue 19: neither re-trains to its
row at 57c84ee, while DeepFM and 12 others do bit for bit), because those changes left
DeepFM alone. So each model with a committed frappe config is pinned too: its shipped config
trained for 2 epochs (seed 2021, 1 thread) on the first 16,384 training rows of the real
frappe split, tested on the first 4,096 test rows. Eight optimizer steps are enough for any
change to initialisation, dropout masks, batching order, losses, the optimizer or data
preparation to move the test AUC or logloss by far more than :data:`TOLERANCE`.

A change meant to move training numbers re-pins knowingly and re-runs the leaderboard::

    ADRANK_REPIN=1 ADRANK_DATA_DIR=../shared/data python -m pytest tests/test_pinned_models.py

(re-pinned models are reported as skipped, not passed), then
``adrank benchmark --dataset frappe --models all --seeds 3 --output benchmarks/results/frappe``.

Pins are per CPU kind (:func:`adrank.bench.provenance.cpu_kind`: vendor and instruction set):
other CPUs run other kernels, and 8 steps amplify their summation-order differences to
about 1e-3 of AUC, as large as a real change. On a kind with no pins the tests skip and say
so; ``ADRANK_REPIN=1`` adds the pins of the machine's kind and leaves the others alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from adrank.bench.provenance import cpu_kind, pinned_for
from adrank.bench.runner import code_version
from adrank.config import resolve_run_config
from adrank.data.prepare import PreparedData, prepare_dataset
from adrank.pipeline import train_run

pytestmark = pytest.mark.integration

PINS = Path(__file__).parent / "fixtures" / "pinned_models.json"
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "models" / "frappe"
MODELS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
#: leading rows of each split (the prepared splits are already shuffled by the BARS split)
ROWS = {"train": 16_384, "valid": 4_096, "test": 4_096}
OVERRIDES = ["train.seed=2021", "train.max_epochs=2", "train.num_threads=1", "train.progress=false"]
#: as test_pinned_run.py: far below a real change, above float summation-order noise
TOLERANCE = 1e-5
REPIN = os.environ.get("ADRANK_REPIN") == "1"


@pytest.fixture(scope="module")
def small_frappe(
    data_dir: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> PreparedData:
    prepared = prepare_dataset("frappe", data_dir=data_dir, cache_dir=cache_dir)
    out = tmp_path_factory.mktemp("frappe-head")
    splits = {}
    for name, rows in ROWS.items():
        splits[name] = out / f"{name}.parquet"
        pl.read_parquet(prepared.splits[name]).head(rows).write_parquet(splits[name])
    return replace(prepared, splits=splits, stats={}, cached=False)


KIND = cpu_kind()


def read_all_pins() -> dict[str, dict]:
    """CPU kind -> {"code": ..., "models": {model: {"test_auc": ..., "test_logloss": ...}}}."""
    return json.loads(PINS.read_text())["cpus"] if PINS.exists() else {}


def read_pins() -> dict[str, dict[str, float]] | None:
    """This CPU kind's pins (``None``: none recorded for it)."""
    entry = pinned_for(read_all_pins(), KIND)
    return None if entry is None else entry["models"]


def write_pin(model: str, values: dict[str, float]) -> None:
    cpus = read_all_pins()
    models = cpus.get(KIND, {}).get("models", {}) | {model: values}
    cpus[KIND] = {"code": code_version(), "models": dict(sorted(models.items()))}
    payload = {
        "about": "tests/test_pinned_models.py: 2 epochs of each shipped frappe config on the "
        "head of the frappe splits (seed 2021, 1 thread), per CPU kind "
        "(adrank.bench.provenance.cpu_kind); re-pin with ADRANK_REPIN=1",
        "cpus": dict(sorted(cpus.items())),
    }
    tmp = PINS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(PINS)


def pins_or_skip() -> dict[str, dict[str, float]]:
    pins = read_pins()
    if pins is None:
        pytest.skip(
            f"no pinned numbers for this CPU kind ({KIND}; pinned: {sorted(read_all_pins())}): "
            "pin them with ADRANK_REPIN=1 at a commit whose numbers are known to be right"
        )
    return pins


def test_every_frappe_config_is_pinned() -> None:
    if REPIN:
        pytest.skip("re-pinning")
    assert sorted(pins_or_skip()) == MODELS, (
        "pinned models differ from configs/models/frappe: re-pin with ADRANK_REPIN=1"
    )


@pytest.mark.parametrize("model", MODELS)
def test_short_frappe_run_gives_the_pinned_numbers(
    model: str, small_frappe: PreparedData, tmp_path: Path
) -> None:
    if not REPIN:
        pins_or_skip()  # before training: nothing to compare with on this CPU kind
    config = resolve_run_config("frappe", model, overrides=OVERRIDES)
    result = train_run(config, tmp_path / model, prepared=small_frappe)
    got = {"test_auc": result.test["auc"], "test_logloss": result.test["logloss"]}
    if REPIN:
        write_pin(model, got)
        pytest.skip(f"re-pinned {model}: {got}")
    pinned = pins_or_skip().get(model)
    assert pinned is not None, f"{model} has no pin in {PINS}: re-pin with ADRANK_REPIN=1"
    for key, value in got.items():
        assert value == pytest.approx(pinned[key], abs=TOLERANCE), (
            f"{model}: {key} {value:.8f} moved from the pinned {pinned[key]:.8f}. If the change "
            "is meant to move training numbers, re-pin (ADRANK_REPIN=1, see this module) and "
            "re-run the frappe leaderboard"
        )
