"""Models of your own (``ADRANK_PLUGINS``), the registry's checks, and seeded builds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adrank.models import build_model, registry
from adrank.models.registry import PluginError, register
from tests.train.test_trainer import FEATURE_MAP

PLUGIN = """
import torch

from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding


@register("sum_of_embeddings")
class SumOfEmbeddings(CTRModel):
    def __init__(self, feature_map, embedding_dim: int = 1):
        super().__init__(feature_map)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embedding(features).sum(dim=(1, 2))
"""


def _adrank_models(tmp_path: Path, plugins: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"ADRANK_PLUGINS": plugins, "PYTHONPATH": str(tmp_path)}
    code = "from adrank.models import available_models; print(available_models())"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_module_named_in_adrank_plugins_registers_its_models(tmp_path: Path) -> None:
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    done = _adrank_models(tmp_path, "my_plugin, ")
    assert done.returncode == 0, done.stderr
    assert "'sum_of_embeddings'" in done.stdout and "'deepfm'" in done.stdout


def test_a_plugin_that_cannot_be_imported_is_named(tmp_path: Path) -> None:
    done = _adrank_models(tmp_path, "no_such_plugin")
    assert done.returncode != 0
    assert "ADRANK_PLUGINS names 'no_such_plugin', which cannot be imported" in done.stderr
    assert issubclass(PluginError, ValueError)  # the commands print it as a one-line error


def test_unknown_model_says_where_a_model_of_your_own_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ADRANK_PLUGINS", raising=False)
    with pytest.raises(KeyError, match="name its module in ADRANK_PLUGINS"):
        registry.get_model_class("no_such_model")


def test_register_refuses_what_is_not_a_ctr_model() -> None:
    with pytest.raises(TypeError, match="not a CTRModel subclass"):
        register("not_a_model")(torch.nn.Linear)
    assert "not_a_model" not in registry.available_models()


def test_build_model_with_a_seed_repeats_the_initial_weights() -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        model = build_model("deepfm", FEATURE_MAP, seed=seed, embedding_dim=4, hidden_units=[8])
        return [p.detach().clone() for p in model.parameters()]

    first, again, other = weights(3), weights(3), weights(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_the_commands_print_a_bad_plugin_as_one_line(tmp_path: Path) -> None:
    env = os.environ | {"ADRANK_PLUGINS": "no_such_plugin"}
    done = subprocess.run(
        [sys.executable, "-m", "adrank", "models"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    assert "ADRANK_PLUGINS names 'no_such_plugin'" in done.stderr + done.stdout


def test_adrank_models_keeps_brackets_and_names_multi_domain_models() -> None:
    from typer.testing import CliRunner

    from adrank.cli import app

    done = CliRunner().invoke(app, ["models"], env={"COLUMNS": "400"})
    assert done.exit_code == 0, done.output
    rows = {line.split("│")[1].strip(): line for line in done.output.splitlines() if "│" in line}
    assert "CA(q = attributes(t), K = V = history)" in rows["daca"]  # not eaten as markup
    assert all("multi-domain" in rows[m] for m in ("star", "pepnet", "adaptdhm", "daca"))
    assert "multi-task" in rows["esmm"] and "sequence" in rows["din"]
