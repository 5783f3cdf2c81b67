"""``--set`` overrides and config files: a value of the wrong type is a clear ConfigError
naming the setting, not a TypeError from deep inside the config's checks."""

from __future__ import annotations

import math

import pytest

from adrank.config import ConfigError, RunConfig, resolve_run_config


def _base() -> RunConfig:
    return RunConfig.from_dict({"model": "deepfm", "train": {"max_epochs": 2}})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_epochs=abc", r"max_epochs must be int, got 'abc' \(str\)"),
        ("train.max_epochs=true", r"max_epochs must be int, got True \(bool\)"),
        ("train.patience=2.5", r"patience must be int, got 2.5 \(float\)"),
        ("train.learning_rate=fast", r"learning_rate must be float, got 'fast'"),
        ("train.learning_rate=.nan", r"learning_rate must be a finite number, got nan"),
        ("train.task=7", r"task must be str \| None, got 7 \(int\).*train.task=\"7\""),
    ],
)
def test_wrong_types_name_the_setting(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _base().with_overrides([override])


def test_numbers_yaml_leaves_as_text_are_read_as_floats() -> None:
    # YAML 1.1 reads `1e-3` (no dot) as a string; users write learning rates that way
    cfg = _base().with_overrides(["train.learning_rate=1e-3", "train.embedding_regularizer=5E-5"])
    assert cfg.train.learning_rate == pytest.approx(1e-3)
    assert cfg.train.embedding_regularizer == pytest.approx(5e-5)
    assert isinstance(cfg.train.learning_rate, float)


def test_ints_for_floats_and_valid_values_still_pass() -> None:
    cfg = _base().with_overrides(
        ["train.device_data_fraction=1", "train.compile=auto", "train.cuda_graph=true"]
    )
    assert cfg.train.device_data_fraction == 1 and cfg.train.cuda_graph is True
    assert not math.isnan(cfg.train.learning_rate)


def test_a_config_file_with_a_wrong_type_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: deepfm\ntrain:\n  batch_size: [4096]\n")
    with pytest.raises(ConfigError, match=rf"{path}: train: batch_size must be int"):
        RunConfig.load(path)


def test_an_override_that_is_not_yaml_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"override 'params.hidden_units=\[64,': the value is not"
    ):
        RunConfig(model="dnn").with_overrides(["params.hidden_units=[64,"])


def test_nan_is_refused_as_not_finite() -> None:
    with pytest.raises(ConfigError, match="learning_rate must be a finite number, got nan"):
        RunConfig(model="dnn").with_overrides(["train.learning_rate=.nan"])


def test_set_model_or_dataset_may_not_contradict_the_chosen_config() -> None:
    with pytest.raises(ConfigError, match="--set dataset=criteo conflicts with the dataset"):
        resolve_run_config("frappe", "deepfm", overrides=["dataset=criteo"])
    with pytest.raises(ConfigError, match="--set model=dcn conflicts with the model 'deepfm'"):
        resolve_run_config("frappe", "deepfm", overrides=["model=dcn"])
    same = resolve_run_config("frappe", "deepfm", overrides=["dataset=frappe", "model=DeepFM"])
    assert same.dataset == "frappe"


def test_a_misspelt_train_key_gets_a_suggestion(tmp_path) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown train setting 'max_epoch' \(did you mean 'max_epochs'\?\)"
    ):
        _base().with_overrides(["train.max_epoch=3"])
    path = tmp_path / "typo.yaml"
    path.write_text("model: deepfm\ntrain:\n  learning_rat: 0.01\n")
    with pytest.raises(
        ConfigError,
        match=r"typo.yaml: train: unknown key\(s\) \['learning_rat'\] "
        r"\(did you mean 'learning_rate'\?\)",
    ):
        RunConfig.load(path)
