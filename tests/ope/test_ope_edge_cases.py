"""Off-policy evaluation without overlap with the logs, or with one round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from adrank.cli import app
from adrank.ope import OffPolicyDataError, evaluate_policy, logged_data, on_policy_value


def _logs(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"action": [0] * n, "position": [1] * n, "reward": [1, 0] * (n // 2) + [1] * (n % 2),
         "propensity": [0.5] * n}
    )  # fmt: skip


def test_a_policy_that_never_chooses_a_logged_action_is_refused(tmp_path: Path) -> None:
    """Before: IPS 0, SNIPS NaN with a NaN interval, and `--json` printed bare NaN."""
    with pytest.raises(OffPolicyDataError, match="no round carries weight"):
        evaluate_policy(logged_data(_logs(4)), np.array([[0.0], [1.0]]), "cell")
    _logs(4).write_csv(tmp_path / "logs.csv")
    np.save(tmp_path / "policy.npy", np.array([[0.0], [1.0]]))
    result = CliRunner().invoke(
        app, ["ope", str(tmp_path / "logs.csv"), "--policy", str(tmp_path / "policy.npy"),
              "--bootstrap", "20", "--json"],
    )  # fmt: skip
    assert result.exit_code == 1 and "no round carries weight" in result.output
    assert "NaN" not in result.output


def test_one_round_gives_no_interval() -> None:
    """Before: a 95% interval of width 0 ([1, 1]) from a single round."""
    with pytest.raises(ValueError, match="at least 2 rounds, got 1"):
        evaluate_policy(logged_data(_logs(1)), np.array([[1.0]]), "cell", n_bootstrap=20)
    with pytest.raises(ValueError, match="at least 2 rounds, got 1"):
        on_policy_value(np.array([1.0]), n_bootstrap=20)
    two = evaluate_policy(logged_data(_logs(2)), np.array([[1.0]]), "cell", n_bootstrap=50)
    assert all(e.lower <= e.value <= e.upper for e in two)
