"""Bad or unusual hyperparameters, as a user writes them in a YAML config or with
``--set params.X=...``: each is refused by ``build_model`` with a ValueError (what the CLI
reports) naming the hyperparameter, instead of a TypeError/ZeroDivisionError from inside
torch, a crash in the middle of the first forward pass, or a silently degenerate model.

Unknown names, missing histories/roles/tasks and all-padding histories are covered in
``test_models.py``, ``test_sequence_models.py``, ``test_multitask.py`` and
``tests/nn/test_domain.py``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from test_models import model_feature_map, random_features

from adrank.config import RunConfig
from adrank.models import build_model


def build(name: str, **params: Any):
    torch.manual_seed(0)
    return build_model(name, model_feature_map(name, with_numeric=False), **params)


#: values of the wrong type (YAML reads ``64`` as an int, ``"400,400"`` stays text, a
#: quoted ``"false"`` is text, which is truthy)
WRONG_TYPES = [
    ("dnn", "hidden_units", 64),
    ("dnn", "hidden_units", "400,400"),
    ("deepfm", "embedding_dim", "10"),
    ("deepfm", "embedding_dim", 10.5),
    ("dnn", "embedding_dim", True),
    ("dnn", "batch_norm", "false"),
    ("mmoe", "net_dropout", "high"),
    ("star", "hidden_units", [16, "8"]),
    ("pepnet", "persona_fields", "user"),
    ("fibinet", "bilinear_type", "field_every"),
]


@pytest.mark.parametrize(("name", "key", "value"), WRONG_TYPES, ids=str)
def test_wrong_type_is_refused_naming_the_hyperparameter(name: str, key: str, value: Any) -> None:
    expected = rf"'{key}' of model '{name}' must be .*, got {re.escape(repr(value))}"
    with pytest.raises(ValueError, match=expected):
        build(name, **{key: value})


def test_a_float_spelled_as_text_is_read_as_a_float() -> None:
    """YAML 1.1 reads ``1e-1`` as a string; ``train`` settings take it as a float, so do
    model hyperparameters (and the model equals the one given the float)."""
    config = RunConfig.from_dict({"model": "dnn"}).with_overrides(["params.net_dropout=1e-1"])
    assert config.params["net_dropout"] == "1e-1"
    fmap = model_feature_map("dnn", with_numeric=False)
    torch.manual_seed(0)
    from_text = build_model("dnn", fmap, hidden_units=[8], **config.params)
    torch.manual_seed(0)
    from_float = build_model("dnn", fmap, hidden_units=[8], net_dropout=0.1)
    features = random_features(fmap, 8, seed=0)
    from_text.eval()
    from_float.eval()
    with torch.no_grad():
        assert torch.equal(from_text(features), from_float(features))


#: out-of-range values: each crashed inside torch (RuntimeError/ZeroDivisionError), failed in
#: the first forward pass, or built a model whose output ignores its input
OUT_OF_RANGE = [
    ("dnn", {"embedding_dim": 0}, "embedding_dim"),  # built; constant output
    ("xdeepfm", {"embedding_dim": 0}, "embedding_dim"),  # forward: reshape error
    ("bst", {"embedding_dim": 0}, "embedding_dim"),  # ZeroDivisionError
    ("dnn", {"embedding_dim": -4}, "embedding_dim"),  # RuntimeError: negative dimension
    ("dnn", {"hidden_units": [0]}, "hidden_units"),  # forward: IndexError in BatchNorm
    ("ipnn", {"hidden_units": [0]}, "hidden_units"),  # built; constant output
    ("star", {"hidden_units": [16, 0]}, "hidden_units"),  # built; constant output
    ("pepnet", {"hidden_units": [0]}, "hidden_units"),  # built; constant output
    ("pepnet", {"gate_hidden_dim": 0}, "gate_hidden_dim"),  # built; every gate constant
    ("dnn", {"hidden_units": [-3]}, "hidden_units"),  # RuntimeError: negative dimension
    ("dnn", {"net_dropout": -0.1}, "dropout"),  # built; silently no dropout
    ("autoint", {"net_dropout": 1.0}, "dropout"),  # built; attention weights all dropped
    ("autoint", {"net_dropout": -0.1}, "dropout"),  # forward: dropout probability
    ("autoint", {"num_heads": 0}, "num_heads"),  # ZeroDivisionError
    ("bst", {"num_heads": 0}, "num_heads"),  # ZeroDivisionError
    ("finalmlp", {"num_heads": 0}, "num_heads"),  # ZeroDivisionError
    ("twin", {"top_k": 0}, "top_k"),  # built; the history is never attended
    ("eta", {"top_k": 0}, "top_k"),  # built; the history is never attended
    ("eta", {"num_bits": 0}, "num_bits"),  # built; every behaviour at Hamming distance 0
    ("sdim", {"num_hashes": 0}, "num_hashes"),  # built; NaN output
    ("adaptdhm", {"num_clusters": 0}, "num_clusters"),  # forward: argmax over 0 clusters
    ("adaptdhm", {"routing_iterations": -1}, "routing_iterations"),  # silently 0
    ("masknet", {"parallel_num_blocks": 0}, "parallel_num_blocks"),  # forward: empty cat
    ("dcn", {"crossing_layers": -1}, "crossing_layers"),  # silently 0
    ("dien", {"gru_hidden_dim": -1}, "gru_hidden_dim"),  # RuntimeError: negative dimension
]


@pytest.mark.parametrize(("name", "params", "key"), OUT_OF_RANGE, ids=str)
def test_out_of_range_value_is_refused_at_build_time(name: str, params: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        build(name, **params)


def test_seeds_may_be_negative() -> None:
    """The ``>= 0`` rule is for counts and widths; a seed is any integer."""
    model = build("eta", hash_seed=-1)
    fmap = model.feature_map
    with torch.no_grad():
        assert torch.isfinite(model.eval()(random_features(fmap, 4, seed=0))).all()
