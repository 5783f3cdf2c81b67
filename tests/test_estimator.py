from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

import adrank
from adrank.serve.predictor import Predictor


def make_frame(n: int, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 50, n)
    item = rng.integers(0, 30, n)
    price = rng.normal(size=n)
    logit = np.where(user % 2 == 0, 1.5, -1.5) + np.where(item < 10, 1.0, -0.5) + 0.8 * price
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pl.DataFrame({"user": [f"u{u}" for u in user], "item": item, "price": price})
    return frame, y


def test_fit_predict_proba_score_and_save(tmp_path: Path) -> None:
    X, y = make_frame(6000, 0)
    X_test, y_test = make_frame(2000, 1)
    clf = adrank.CTRClassifier(
        model="deepfm",
        params={"hidden_units": [32], "batch_norm": False, "net_dropout": 0.0},
        train={"batch_size": 256, "max_epochs": 8, "learning_rate": 3e-3, "progress": False},
    )
    assert clf.fit(X, y) is clf
    assert [f.name for f in clf.schema_.features] == ["user", "item", "price"]
    assert clf.schema_.features[2].type == "numeric"
    proba = clf.predict_proba(X_test)
    assert proba.shape == (2000, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert clf.score(X_test, y_test) > 0.75
    assert set(np.unique(clf.predict(X_test))) <= {0, 1}
    clf.save(tmp_path / "run")
    served = Predictor.load(tmp_path / "run").predict(X_test.head(50))
    np.testing.assert_allclose(served, proba[:50, 1], atol=1e-6)


def test_pandas_input_and_errors() -> None:
    pd = pytest.importorskip("pandas")
    X, y = make_frame(600, 2)
    clf = adrank.CTRClassifier(
        model="lr", train={"batch_size": 128, "max_epochs": 1, "progress": False}
    )
    with pytest.raises(RuntimeError, match="not fitted"):
        clf.predict_proba(X)
    clf.fit(X.to_pandas(), y)
    assert clf.predict_proba(pd.DataFrame(X.to_dict(as_series=False))).shape == (600, 2)
    with pytest.raises(ValueError, match="only 0 and 1"):
        clf.fit(X, np.full(600, 2))
    with pytest.raises(ValueError, match="rows"):
        clf.fit(X, y[:10])
