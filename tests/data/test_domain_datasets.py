"""The multi-domain datasets: ``frappe_domains``, ``movielens_100k_domains`` and its fixed
thinned variant keep their base datasets' rows and splits and declare the domain role on a
column that is also a feature. Unit tests on tiny frames; integration tests on the real
data in ``$ADRANK_DATA_DIR``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from adrank.data.datasets import get_dataset
from adrank.data.datasets.domains import THIN_DOMAIN, age_band, thin_domain
from tests.data.test_funnel_movielens import _build

SPLITS = ("train", "valid", "test")


def test_age_bands_edges() -> None:
    ages = pl.DataFrame({"age": ["7", "24", "25", "34", "35", "73"]})
    got = ages.select(age_band(pl.col("age")))["age_band"].to_list()
    assert got == ["under_25", "under_25", "25_to_34", "25_to_34", "35_plus", "35_plus"]


def test_thin_domain_keeps_a_fixed_tenth_in_order() -> None:
    frame = pl.DataFrame({"d": ["a"] * 50 + ["b"] * 30, "i": np.arange(80)})
    thin = thin_domain(frame, "d", "a", 0.1, seed=17)
    assert thin.filter(pl.col("d") == "a").height == 5
    assert thin.filter(pl.col("d") == "b")["i"].to_list() == list(range(50, 80))
    assert thin["i"].is_sorted()
    assert thin.equals(thin_domain(frame, "d", "a", 0.1, seed=17))
    with pytest.raises(KeyError, match="'nope'"):
        thin_domain(frame, "nope", "a", 0.1, seed=17)


@pytest.mark.parametrize(
    ("name", "column"),
    [
        ("frappe_domains", "homework"),
        ("movielens_100k_domains", "age_band"),
        ("movielens_100k_domains_thin", "age_band"),
    ],
)
def test_domain_role_is_also_a_feature(name: str, column: str) -> None:
    schema = get_dataset(name).schema()
    assert schema.roles["domain"] == column
    assert column in [f.name for f in schema.features]
    assert [t.name for t in schema.tasks] == (["label"] if name == "frappe_domains" else ["like"])


@pytest.mark.integration
def test_frappe_domains_real(data_dir: Path) -> None:
    domains = _build(data_dir, "frappe_domains")
    frappe = get_dataset("frappe").build_splits(data_dir)
    for split in SPLITS:
        assert domains[split].equals(frappe[split])
    full = pl.concat(list(domains.values()))
    logs = full.filter(pl.col("label") == 1)
    shares = logs["homework"].value_counts(normalize=True).sort("homework")
    assert [round(100 * s, 1) for s in shares["proportion"]] == [16.4, 78.7, 4.9]
    # the stated limit: every domain's click rate is 1/3 by construction
    rates = full.group_by("homework").agg(pl.col("label").mean())["label"].to_list()
    assert all(r == pytest.approx(1 / 3) for r in rates)


@pytest.mark.integration
def test_movielens_100k_domains_real(data_dir: Path) -> None:
    domains = _build(data_dir, "movielens_100k_domains")
    base = get_dataset("movielens_100k").build_splits(data_dir)
    for split in SPLITS:
        assert domains[split].height == base[split].height
        assert domains[split]["like"].equals(base[split]["like"])
        assert domains[split]["item_id"].equals(base[split]["item_id"])
    full = pl.concat(list(domains.values()))
    counts = dict(full["age_band"].value_counts().iter_rows())
    assert sum(counts.values()) == 100_000
    assert 25_000 < counts["under_25"] < 30_000
    assert 33_000 < counts["25_to_34"] < 37_000
    assert 36_000 < counts["35_plus"] < 40_000
    thin = _build(data_dir, "movielens_100k_domains_thin")
    for split in ("valid", "test"):
        assert thin[split].equals(domains[split])
    for d in counts:
        n_full = domains["train"].filter(pl.col("age_band") == d).height
        n_thin = thin["train"].filter(pl.col("age_band") == d).height
        assert n_thin == (n_full // 10 if d == THIN_DOMAIN else n_full), d


def test_source_histories_hold_only_earlier_source_items() -> None:
    from adrank.data.datasets.domains import source_histories

    users = np.array([0, 0, 0, 0, 1, 1])
    times = np.array([1, 2, 2, 3, 1, 5])
    is_source = np.array([True, False, True, True, True, True])
    items = np.array(["a", "T", "b", "c", "x", "y"])
    got = source_histories(users, times, is_source, {"h": items}, max_len=1)["h"]
    # row 2 shares row 1's time and so sees only "a"; max_len 1 keeps the newest
    assert got == ["", "a", "a", "b", "", "x"]
    full = source_histories(users, times, is_source, {"h": items}, max_len=50)["h"]
    assert full[3] == "a|b"


@pytest.mark.integration
def test_movielens_100k_cross_real(data_dir: Path) -> None:
    from adrank.data.datasets.domains import TARGET_GENRES

    cross = _build(data_dir, "movielens_100k_cross")
    base = get_dataset("movielens_100k").build_splits(data_dir)
    for split in ("valid", "test"):
        assert cross[split]["item_id"].equals(base[split]["item_id"])
    train = cross["train"]
    n_target = base["train"].filter(pl.col("genre").is_in(sorted(TARGET_GENRES))).height
    assert train.filter(pl.col("domain") == "target").height == n_target // 10
    assert set(train["domain"].unique()) == {"source", "target"}
    genres = {g for h in cross["test"]["hist_genre"].to_list() for g in h.split("|") if g}
    assert genres and not genres & TARGET_GENRES  # histories are source-domain only
