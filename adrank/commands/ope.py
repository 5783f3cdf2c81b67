"""``adrank ope``: off-policy evaluation of a policy on logged bandit data (docs/ope.md)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from adrank.cli import DataDirOpt, app, console, fail


class RewardModelName(str, Enum):
    cell = "cell"
    logistic = "logistic"
    none = "none"


@app.command("ope")
def ope_cmd(
    logs: Annotated[
        Path | None,
        typer.Argument(help="Logged data: Parquet, CSV or CSV.gz, one row per round."),
    ] = None,
    policy: Annotated[
        Path,
        typer.Option(
            help="The evaluation policy's action distribution: .npy (n_rounds, n_actions, "
            "n_positions) or (n_actions, n_positions), or .parquet (action, position, "
            "probability[, round])."
        ),
    ] = ...,  # type: ignore[assignment]
    open_bandit: Annotated[
        str | None,
        typer.Option(
            help="Read the logs from the Open Bandit data instead, as POLICY/CAMPAIGN "
            "(random or bts / men, women or all), e.g. random/all."
        ),
    ] = None,
    action_col: Annotated[str, typer.Option(help="Column of the action id (0..A-1).")] = "action",
    position_col: Annotated[str, typer.Option(help="Column of the position.")] = "position",
    reward_col: Annotated[str, typer.Option(help="Column of the reward (click).")] = "reward",
    propensity_col: Annotated[
        str, typer.Option(help="Column of the logging policy's propensity, in (0, 1].")
    ] = "propensity",
    context: Annotated[
        list[str] | None,
        typer.Option("--context-col", help="Context column for the logistic reward model."),
    ] = None,
    reward_model: Annotated[
        RewardModelName, typer.Option(help="Reward model of DM and DR (none: IPS, SNIPS only).")
    ] = RewardModelName.cell,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 12345,
    level: Annotated[float, typer.Option(help="Interval level.")] = 0.95,
    json_: Annotated[bool, typer.Option("--json", help="Print the estimates as JSON.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Estimate a policy's expected reward per round with DM, IPS, SNIPS and DR, each with a
    percentile bootstrap interval; the logs' own mean reward is printed for reference."""
    from adrank.data.datasets import DatasetUnavailableError, resolve_data_dir
    from adrank.ope import (
        OffPolicyDataError,
        evaluate_policy,
        load_action_dist,
        logged_data,
        on_policy_value,
        open_bandit_logs,
        read_table,
    )

    if context and reward_model is not RewardModelName.logistic:
        fail(
            f"--context-col is used by --reward-model logistic only (got "
            f"--reward-model {reward_model.value}, which would ignore it)"
        )
        return
    try:
        if open_bandit is not None:
            name, _, campaign = open_bandit.partition("/")
            data = open_bandit_logs(resolve_data_dir(data_dir), name, campaign)
            source = f"open_bandit {open_bandit}"
        elif logs is not None:
            data = logged_data(
                read_table(logs),
                action=action_col,
                position=position_col,
                reward=reward_col,
                propensity=propensity_col,
                context=tuple(context or ()),
            )
            source = str(logs)
        else:
            fail("give the logs (a file) or --open-bandit POLICY/CAMPAIGN")
            return
        dist = load_action_dist(policy, n_rounds=data.n_rounds)
        model = None if reward_model is RewardModelName.none else reward_model.value
        estimates = evaluate_policy(
            data, dist, model, n_bootstrap=bootstrap, seed=seed, level=level
        )
        logged = on_policy_value(data.reward, n_bootstrap=bootstrap, seed=seed, level=level)
    except (OffPolicyDataError, ValueError, FileNotFoundError, DatasetUnavailableError) as exc:
        fail(str(exc))
        return
    rows = [*estimates, logged]
    if json_:
        out = {
            "logs": source,
            "policy": str(policy),
            "rounds": data.n_rounds,
            "reward_model": reward_model.value,
            "bootstrap": bootstrap,
            "seed": seed,
            "estimates": [e.as_dict() for e in rows],
        }
        console.print_json(json.dumps(out))
        return
    table = Table(title=f"{policy} on {source} ({data.n_rounds:,} rounds)")
    for col in ("estimator", "value", f"{level:.0%} interval", "relative to logs"):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    for e in rows:
        name = "logged policy (mean reward)" if e.name == "on_policy" else e.name.upper()
        rel = e.value / logged.value if logged.value else float("nan")
        table.add_row(name, f"{e.value:.6f}", f"[{e.lower:.6f}, {e.upper:.6f}]", f"{rel:.3f}")
    console.print(table)
    console.print(
        f"reward model: {reward_model.value}; bootstrap: {bootstrap} resamples, seed {seed}"
    )
