"""Edge cases of the scikit-learn-style CTRClassifier (tiny data, one epoch)."""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest

import adrank
from adrank.artifact import ArtifactError
from adrank.data.schema import Schema
from adrank.outputs import OutputDirError
from adrank.serve.predictor import Predictor


def make_frame(n: int = 400, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 12, n)
    price = rng.normal(size=n)
    logit = np.where(user % 2 == 0, 1.0, -1.0) + price
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pl.DataFrame({"user": [f"u{u}" for u in user], "price": price})
    return frame, y


def classifier(**kw) -> adrank.CTRClassifier:
    train = {"batch_size": 64, "max_epochs": 1, "progress": False, "num_threads": 1}
    kw.setdefault("model", "lr")
    return adrank.CTRClassifier(train=train | kw.pop("train", {}), **kw)


@pytest.fixture(scope="module")
def fitted() -> tuple[adrank.CTRClassifier, pl.DataFrame, np.ndarray]:
    X, y = make_frame()
    return classifier().fit(X, y), X, y


def test_save_refuses_a_symlinked_processor_before_writing_anything(fitted, tmp_path):
    clf, _, _ = fitted
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(elsewhere, run / "processor")
    with pytest.raises(OutputDirError, match="symbolic link"):
        clf.save(run)
    assert sorted(os.listdir(elsewhere)) == ["keep.txt"]
    assert sorted(os.listdir(run)) == ["processor"]


def test_save_refuses_a_users_folder_named_like_run_files(fitted, tmp_path):
    """A user's folder holding only a `processor/` folder or a `config.yaml` used to be
    adopted as a pre-marker run directory and written into (the config overwritten)."""
    clf, _, _ = fitted
    mine = tmp_path / "mine"
    (mine / "processor").mkdir(parents=True)
    (mine / "processor" / "notes.txt").write_text("x")
    with pytest.raises(OutputDirError, match="not empty"):
        clf.save(mine)
    assert sorted(os.listdir(mine)) == ["processor"]
    assert os.listdir(mine / "processor") == ["notes.txt"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("my: config\n")
    with pytest.raises(OutputDirError, match="not empty"):
        clf.save(other)
    assert (other / "config.yaml").read_text() == "my: config\n"


def test_save_twice_and_load_round_trip(fitted, tmp_path):
    clf, X, _ = fitted
    expected = clf.predict_proba(X)
    clf.save(tmp_path / "run")
    clf.save(tmp_path / "run")  # its own run directory: replaced
    loaded = adrank.CTRClassifier.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(X), expected, atol=1e-6)
    np.testing.assert_allclose(Predictor.load(tmp_path / "run").predict(X), expected[:, 1], 1e-5)
    assert loaded.get_params()["model"] == "lr"


def test_load_of_a_damaged_directory_is_an_artifact_error(fitted, tmp_path):
    clf, _, _ = fitted
    run = clf.save(tmp_path / "run")
    (run / "feature_map.json").write_text("{")
    with pytest.raises(ArtifactError, match=r"feature_map\.json"):
        adrank.CTRClassifier.load(run)
    with pytest.raises(ArtifactError, match="not found"):
        adrank.CTRClassifier.load(tmp_path / "missing")


def test_get_params_set_params_and_clone():
    clf = classifier(valid_fraction=0.2)
    params = clf.get_params()
    assert set(params) == {"model", "params", "train", "schema", "valid_fraction", "random_state"}
    assert clf.set_params(model="dnn", random_state=7) is clf
    assert (clf.model, clf.random_state) == ("dnn", 7)
    with pytest.raises(ValueError, match="invalid parameter 'nope'"):
        clf.set_params(nope=1)
    sklearn_base = pytest.importorskip("sklearn.base")
    copy = sklearn_base.clone(clf)
    assert copy.get_params()["valid_fraction"] == 0.2 and not hasattr(copy, "model_")


def test_one_class_training_labels_are_refused():
    X, _ = make_frame()
    with pytest.raises(ValueError, match="both classes"):
        classifier(valid_fraction=0.0).fit(X, np.zeros(X.height))


def test_nan_and_badly_shaped_labels_are_named():
    X, y = make_frame()
    bad = y.astype(float)
    bad[5] = np.nan
    with pytest.raises(ValueError, match=r"only 0 and 1.*nan.*row 5"):
        classifier().fit(X, bad)
    with pytest.raises(ValueError, match="one label per row"):
        classifier().fit(X, np.stack([y, y], axis=1))


def test_eval_set_labels_are_checked_like_y():
    X, y = make_frame()
    with pytest.raises(ValueError, match="eval_set"):
        classifier().fit(X, y, eval_set=(X, y[:10]))


def test_bad_valid_fraction_is_refused():
    X, y = make_frame()
    with pytest.raises(ValueError, match="valid_fraction"):
        classifier(valid_fraction=-0.5).fit(X, y)


def test_predict_ignores_extra_columns_even_one_named_label(fitted):
    clf, X, _ = fitted
    expected = clf.predict_proba(X)
    shuffled = X.select("price", "user").with_columns(
        pl.lit(7).alias("label"), pl.lit("x").alias("extra")
    )
    np.testing.assert_allclose(clf.predict_proba(shuffled), expected, atol=1e-7)


def test_predict_on_no_rows_is_an_empty_result(fitted):
    clf, X, _ = fitted
    assert clf.predict_proba(X.head(0)).shape == (0, 2)
    assert clf.predict(X.head(0)).shape == (0,)


def test_a_given_schema_names_its_own_label():
    X, y = make_frame()
    schema = Schema.from_dict(
        {"labels": ["click"], "features": [{"name": "user", "type": "categorical"}]}
    )
    clf = classifier(schema=schema).fit(X, y)
    assert clf.predict_proba(X).shape == (X.height, 2)


def test_position_methods_train_through_the_estimator(tmp_path):
    X, y = make_frame()
    X = X.with_columns(pl.Series("position", np.arange(X.height) % 3 + 1))
    schema = Schema.from_dict(
        {
            "labels": ["label"],
            "features": [{"name": "user", "type": "categorical"}],
            "roles": {"position": "position"},
        }
    )
    for method in ("feature", "kd"):
        clf = classifier(
            model="dnn",
            params={"hidden_units": [4]},
            schema=schema,
            train={"position_method": method, "position_max": 3},
        ).fit(X, y)
        served = clf.predict_proba(X.drop("position"))
        assert served.shape == (X.height, 2)
        run = clf.save(tmp_path / method)
        np.testing.assert_allclose(Predictor.load(run).predict(X.drop("position")), served[:, 1])
    # kd's teacher gets the student's hyperparameters (docs/debiasing.md)
    teacher = clf.position_.teacher.inner
    assert next(m.out_features for m in teacher.modules() if hasattr(m, "out_features")) == 4
    meta = json.loads((tmp_path / "kd" / "manifest.json").read_text())
    assert meta["model"] == "dnn"


def test_save_refuses_a_training_run_unless_overwrite(fitted, tmp_path):
    """save() wrote a DNN's model.pt beside a DIN training run's checkpoint.pt, best.pt
    and metrics.jsonl (and the run no longer evaluated): a training run is replaced only
    with overwrite=True, and then none of its files is left beside the new one."""
    from adrank.outputs import claim_dir

    clf, X, _ = fitted
    run = claim_dir(tmp_path / "trained", "run")
    for name in ("checkpoint.pt", "best.pt", "metrics.jsonl", "model.pt", "manifest.json"):
        (run / name).write_text("from adrank train")
    with pytest.raises(OutputDirError, match=r"holds a training run .*overwrite=True"):
        clf.save(run)
    assert (run / "model.pt").read_text() == "from adrank train"
    clf.save(run, overwrite=True)
    assert not (run / "checkpoint.pt").exists() and not (run / "metrics.jsonl").exists()
    assert not (run / ".adrank-replaced").exists()
    loaded = adrank.CTRClassifier.load(run)
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), atol=1e-6)


def test_schema_may_be_given_as_a_dict(tmp_path):
    """CTRClassifier(schema={...}) failed with AttributeError: 'dict' object has no
    attribute 'labels'."""
    import polars as pl

    clicks = [int(i % 5 == 0 or i % 7 == 0) for i in range(400)]
    frame = pl.DataFrame({"ad": [f"a{i % 5}" for i in range(400)], "click": clicks})
    schema = {"tasks": ["click"], "features": [{"name": "ad", "type": "categorical"}]}
    clf = adrank.CTRClassifier(model="lr", schema=schema, train={"max_epochs": 1, "batch_size": 64})
    clf.fit(frame.drop("click"), frame["click"])
    assert clf.get_params()["schema"] is schema and clf.schema_.labels == ("click",)
    with pytest.raises(TypeError, match="schema must be a Schema"):
        adrank.CTRClassifier(schema=3).fit(frame.drop("click"), frame["click"])


def test_scikit_learn_model_selection_treats_it_as_a_classifier() -> None:
    """``__sklearn_tags__`` (scikit-learn >= 1.6; ``_estimator_type`` before): is_classifier,
    and cross_val_score with a probability scorer, which refused it before."""
    import pandas as pd
    from sklearn.base import is_classifier
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"user": rng.integers(0, 20, 600).astype(str),
                      "ad": rng.integers(0, 10, 600).astype(str)})  # fmt: skip
    y = (rng.random(600) < 0.2 + 0.1 * (X["ad"].astype(int) % 5)).astype(int)
    train = {"max_epochs": 1, "batch_size": 32, "num_threads": 1, "progress": False}
    clf = adrank.CTRClassifier("lr", train=train)
    assert is_classifier(clf)
    scores = cross_val_score(clf, X, y, cv=2, scoring="roc_auc")
    assert scores.shape == (2,) and np.all((scores > 0.5) & (scores <= 1.0))


def test_a_saved_estimator_run_exports_with_parity_on_raw_records(fitted, tmp_path):
    """An estimator run has no prepared data: export says to give --input, and with raw
    records (encoded by the run's own processor) it writes the file, parity-checked."""
    from typer.testing import CliRunner

    from adrank.cli import app

    model, frame, _ = fitted
    run = model.save(tmp_path / "run")
    runner = CliRunner()
    done = runner.invoke(app, ["export", str(run)])
    assert done.exit_code == 1 and "--input FILE" in done.output
    frame.write_csv(tmp_path / "rows.csv")
    done = runner.invoke(app, ["export", str(run), "--input", str(tmp_path / "rows.csv")])
    assert done.exit_code == 0, done.output
    exported = json.loads((run / "manifest.json").read_text())["exports"]["torchscript"]
    assert exported["split"] == "records of rows.csv"
    assert exported["rows_checked"] == frame.height and exported["max_abs_diff"] <= 1e-5
    scored = Predictor.load(run, backend="torchscript").predict(frame.head(5).to_dicts())
    assert np.allclose(scored, model.predict_proba(frame.head(5))[:, 1], atol=1e-5)
    (tmp_path / "empty.csv").write_text(",".join(frame.columns) + "\n")
    done = runner.invoke(app, ["export", str(run), "--input", str(tmp_path / "empty.csv")])
    assert done.exit_code == 1 and "has a header but no rows" in done.output
