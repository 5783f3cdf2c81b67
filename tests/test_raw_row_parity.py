"""One feature path for training and serving, for every registered dataset.

For each dataset of the registry (future ones included) a tiny model is trained for one
epoch; the dataset's raw test rows are exported as users have them (``export_splits``, the
code behind ``adrank datasets export``: raw columns, the inputs of declared transforms such
as Criteo's integers or Avazu's ``hour``, and behaviour histories as delimited lists), read
back from CSV and scored by the :class:`Predictor`, as a DataFrame and as records. The
scores must equal the trainer's ``test_predictions.npy`` to 1e-6. One dataset also goes
through ``adrank predict`` with the header, separator and column options.

Datasets whose files are absent are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from adrank.cli import app
from adrank.config import RunConfig, TrainConfig
from adrank.data.datasets import available_datasets, get_dataset
from adrank.data.export import export_splits
from adrank.data.prepare import prepare_dataset
from adrank.data.transforms import raw_inputs
from adrank.pipeline import train_run
from adrank.serve.predictor import Predictor

pytestmark = pytest.mark.integration

#: records scored through the per-record (dict) path
RECORDS = 64


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(name: str) -> RunConfig:
    tasks = get_dataset(name).schema().tasks
    if len(tasks) > 1:  # a multi-task model: (N, K) predictions, every task scored
        model = "sharebottom"
        params = {"embedding_dim": 4, "bottom_hidden_units": [16], "tower_hidden_units": [8]}
    else:
        model, params = "deepfm", {"embedding_dim": 4, "hidden_units": [16]}
    train = TrainConfig(max_epochs=1, progress=False, num_threads=1, seed=3, batch_size=2048)
    return RunConfig(model=model, dataset=name, params=params, train=train)


def _trained(name: str, data_dir: Path, cache_dir: Path, tmp: Path) -> tuple[Path, Path]:
    """(run dir, exported raw test CSV) for ``name``; skips if its files are absent."""
    builder = get_dataset(name)
    missing = builder.missing_files(data_dir)
    if missing:
        pytest.skip(f"{name}: files absent under {data_dir}: {[m.path for m in missing][:3]}")
    prepared = prepare_dataset(name, data_dir=data_dir, cache_dir=cache_dir)
    run_dir = tmp / "run"
    train_run(_config(name), run_dir, prepared=prepared)
    test = builder.build_splits(data_dir)["test"]
    paths = export_splits({"test": test}, builder.schema(), tmp / "export", "csv")
    return run_dir, paths["test"]


#: datasets whose tiny sample cannot be trained at all today (not a serving problem); an
#: undefined gAUC (aliexpress's 10-row valid split) is NaN since the lead's fix, not an error
CANNOT_TRAIN: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(reason=CANNOT_TRAIN[n], raises=ValueError))
        if n in CANNOT_TRAIN
        else n
        for n in available_datasets()
    ],
)
def test_raw_test_rows_score_as_in_training(
    name: str, data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run_dir, test_csv = _trained(name, data_dir, cache_dir, tmp_path)
    expected = np.load(run_dir / "test_predictions.npy")
    predictor = Predictor.load(run_dir)
    raw = predictor.read(test_csv)  # every value as text, as `adrank predict` reads a file
    schema = get_dataset(name).schema()
    derived_only = {t.name for t in schema.transforms} - set(raw_inputs(schema.transforms))
    assert not derived_only & set(raw.columns)  # derived columns are computed, not sent
    got = predictor.predict(raw)
    assert got.shape == expected.shape
    diff = float(np.max(np.abs(got - expected)))
    print(f"{name}: {len(raw):,} raw test rows, max |predictor - trainer| = {diff:.3g}")
    assert diff <= 1e-6
    records = raw.head(RECORDS).to_dicts()  # the serving path: one dict per candidate
    np.testing.assert_allclose(predictor.predict(records), expected[:RECORDS], atol=1e-6)


def test_adrank_predict_on_headerless_raw_criteo(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """``adrank predict`` on Criteo test rows as Criteo ships them (tab-separated, no
    header), named with --columns: the declared bucketing is applied (it was skipped
    silently before, and test AUC fell from 0.64 to 0.57)."""
    run_dir, test_csv = _trained("criteo", data_dir, cache_dir, tmp_path)
    expected = np.load(run_dir / "test_predictions.npy")
    frame = pl.read_csv(test_csv, infer_schema=False)
    raw = tmp_path / "test.tsv"
    frame.write_csv(raw, separator="\t", include_header=False)
    out = tmp_path / "scored.csv"
    res = CliRunner().invoke(
        app,
        ["predict", str(run_dir), "--input", str(raw), "--output", str(out), "--header", "no",
         "--columns", ",".join(frame.columns), "--separator", "\t"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    scored = pl.read_csv(out)
    assert scored.height == len(expected)
    assert np.max(np.abs(scored["pctr"].to_numpy() - expected)) <= 1e-6
