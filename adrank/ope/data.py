"""Logged bandit data and evaluation policies for off-policy evaluation, validated.

Logs are a table (Parquet, CSV or CSV.gz) with one row per round: the action shown (an
integer id in [0, A)), its position, the reward and the logging policy's propensity of the
shown action, plus any context columns for a reward model. Positions are mapped to the
policy's position axis in ascending order of their distinct values (obp's dense rank:
Open Bandit's 1, 2, 3 become 0, 1, 2).

An evaluation policy is its action distribution ``pi_e(a | round, position)``:

* ``.npy``: float array (n_rounds, n_actions, n_positions), obp's ``action_dist`` (round i is
  row i of the log), or (n_actions, n_positions) for a policy that ignores the context
  (every round gets the same table);
* ``.parquet``: long format with columns ``action``, ``position`` (the axis index, 0-based)
  and ``probability``, plus ``round`` (0-based row of the log) for a per-round policy;
  missing (round, action, position) cells are 0.

Every (round, position) must sum to 1 over the actions (within ``1e-6``), and every
logging propensity must lie in (0, 1]; errors name the row and the column or position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

__all__ = [
    "LoggedData",
    "OffPolicyDataError",
    "check_action_dist",
    "load_action_dist",
    "logged_data",
    "open_bandit_logs",
    "read_table",
]

SUM_TOLERANCE = 1e-6


class OffPolicyDataError(ValueError):
    """Logged data or a policy that cannot be evaluated (names the row and column)."""


@dataclass(frozen=True)
class LoggedData:
    """Validated logs: ``action`` int64 (n,), ``position`` int64 (n,) in [0, K), ``reward``
    and ``propensity`` float64 (n,), ``context`` float64 (n, D) one-hot/numeric columns (or
    ``None``), ``positions`` the raw position values in axis order."""

    action: np.ndarray
    position: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    positions: tuple[str, ...]
    context: np.ndarray | None = None
    context_names: tuple[str, ...] = ()

    @property
    def n_rounds(self) -> int:
        return len(self.reward)


def read_table(path: Path | str) -> pl.DataFrame:
    """A Parquet, CSV or gzipped CSV file as a frame (format from the file name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    name = path.name.lower()
    if name.endswith(".parquet"):
        return pl.read_parquet(path)
    if name.endswith((".csv", ".csv.gz")):
        return pl.read_csv(path)
    raise OffPolicyDataError(f"{path}: expected a .parquet, .csv or .csv.gz file")


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _numeric(frame: pl.DataFrame, col: str, what: str) -> np.ndarray:
    try:
        values = frame.get_column(col).cast(pl.Float64, strict=True).to_numpy()
    except pl.exceptions.InvalidOperationError as exc:
        raise OffPolicyDataError(f"column {col!r} ({what}) must be numeric: {exc}") from None
    bad = ~np.isfinite(values)
    if bad.any():
        row = _first_bad(bad)
        raise OffPolicyDataError(
            f"column {col!r} ({what}) has {frame[col][row]!r} at row {row}; expected a number"
        )
    return values


def _indices(frame: pl.DataFrame, col: str, what: str) -> np.ndarray:
    """An integer column >= 0 as int64 (n,); the error names the first bad row."""
    values = _numeric(frame, col, what)
    bad = (values < 0) | (values != np.round(values))
    if bad.any():
        row = _first_bad(bad)
        raise OffPolicyDataError(
            f"column {col!r} ({what}) has {values[row]!r} at row {row}; expected an integer >= 0"
        )
    return values.astype(np.int64)


def logged_data(
    frame: pl.DataFrame,
    *,
    action: str = "action",
    position: str = "position",
    reward: str = "reward",
    propensity: str = "propensity",
    context: tuple[str, ...] = (),
) -> LoggedData:
    """Validate a log frame (rows are rounds, 0-based in messages) into :class:`LoggedData`.

    Categorical (string) context columns are one-hot encoded, numeric ones kept as they are.
    """
    needed = (action, position, reward, propensity, *context)
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise OffPolicyDataError(f"missing column(s) {missing}; the logs have {frame.columns}")
    if frame.height == 0:
        raise OffPolicyDataError("the logs have no rows")
    prop = _numeric(frame, propensity, "logging propensity")
    bad = (prop <= 0) | (prop > 1)
    if bad.any():
        row = _first_bad(bad)
        raise OffPolicyDataError(
            f"column {propensity!r} has {prop[row]!r} at row {row}; a logging propensity must "
            "be in (0, 1] (an action the logging policy could not show cannot be reweighted)"
        )
    acts = _indices(frame, action, "action id")
    rew = _numeric(frame, reward, "reward")
    raw_pos = frame.get_column(position)
    if raw_pos.null_count():
        row = _first_bad(raw_pos.is_null().to_numpy())
        raise OffPolicyDataError(f"column {position!r} is empty at row {row}")
    pos_values = _sorted_positions(raw_pos)
    lookup = {v: i for i, v in enumerate(pos_values)}
    pos = np.array([lookup[str(v)] for v in raw_pos.to_list()], dtype=np.int64)
    ctx, names = _context(frame, context)
    return LoggedData(
        action=acts,
        position=pos,
        reward=rew,
        propensity=prop,
        positions=tuple(pos_values),
        context=ctx,
        context_names=names,
    )


def _sorted_positions(raw: pl.Series) -> list[str]:
    """Distinct position values in ascending order (numerically when they are numbers)."""
    values = sorted({str(v) for v in raw.to_list()})
    try:
        return sorted(values, key=float)
    except ValueError:
        return values


def _context(frame: pl.DataFrame, cols: tuple[str, ...]) -> tuple[np.ndarray | None, tuple]:
    if not cols:
        return None, ()
    blocks, names = [], []
    for col in cols:
        series = frame.get_column(col)
        if series.dtype.is_numeric():
            blocks.append(_numeric(frame, col, "context")[:, None])
            names.append(col)
            continue
        values = series.cast(pl.String).fill_null("<null>")
        levels = sorted(values.unique().to_list())
        codes = values.to_numpy()
        blocks.append(np.stack([codes == v for v in levels], axis=1).astype(np.float64))
        names.extend(f"{col}={v}" for v in levels)
    return np.concatenate(blocks, axis=1), tuple(names)


def check_action_dist(action_dist: np.ndarray, n_rounds: int | None = None) -> np.ndarray:
    """``action_dist`` as float64 (n, A, K) or (A, K), checked: finite, in [0, 1], and each
    (round, position) summing to 1 over the actions; ``n_rounds`` checks the round count."""
    dist = np.asarray(action_dist, dtype=np.float64)
    if dist.ndim not in (2, 3):
        raise OffPolicyDataError(
            f"the policy's action distribution has shape {dist.shape}; expected "
            "(n_rounds, n_actions, n_positions) or (n_actions, n_positions)"
        )
    if dist.ndim == 3 and n_rounds is not None and dist.shape[0] != n_rounds:
        raise OffPolicyDataError(
            f"the policy has {dist.shape[0]} rounds but the logs have {n_rounds} rows"
        )
    full = dist if dist.ndim == 3 else dist[None]
    bad = ~np.isfinite(full) | (full < 0) | (full > 1)
    if bad.any():
        r, a, k = np.argwhere(bad)[0]
        where = f"row {r}, " if dist.ndim == 3 else ""
        raise OffPolicyDataError(
            f"policy {where}action {a}, position {k}: probability {float(full[r, a, k])!r} is "
            "not in [0, 1]"
        )
    sums = full.sum(axis=1)  # (n, K)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        r, k = np.argwhere(off)[0]
        where = f"row {r}, " if dist.ndim == 3 else ""
        hint = ""
        if k == 0 and sums[r, k] == 0 and full.shape[2] > 1:
            hint = "; positions are 0-based here (the top slot is 0), unlike the logs' 1-based ones"
        raise OffPolicyDataError(
            f"policy {where}position {k}: action probabilities sum to {sums[r, k]:.9g}, "
            f"expected 1 (within {SUM_TOLERANCE:g}){hint}"
        )
    return dist


def load_action_dist(path: Path | str, n_rounds: int | None = None) -> np.ndarray:
    """An evaluation policy's action distribution from ``.npy`` or ``.parquet`` (see the
    module docstring), checked by :func:`check_action_dist`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such policy file: {path}")
    if path.suffix == ".npy":
        return check_action_dist(np.load(path, allow_pickle=False), n_rounds)
    if path.suffix != ".parquet":
        raise OffPolicyDataError(f"{path}: a policy is a .npy or .parquet file")
    frame = pl.read_parquet(path)
    cols = ["action", "position", "probability"]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise OffPolicyDataError(f"{path}: missing column(s) {missing}; has {frame.columns}")
    ints = {}
    for col in ("action", "position", *(["round"] if "round" in frame.columns else [])):
        try:
            ints[col] = _indices(frame, col, "index")
        except OffPolicyDataError as exc:
            raise OffPolicyDataError(f"{path}: {exc}") from None
    prob = _numeric(frame, "probability", "probability")
    keys = [c for c in ("round", "action", "position") if c in ints]
    repeated = frame.select(keys).is_duplicated()
    if repeated.any():
        row = int(repeated.arg_max())  # type: ignore[arg-type]
        at = ", ".join(f"{c} {int(ints[c][row])}" for c in keys)
        raise OffPolicyDataError(
            f"{path}: {at} is given more than once (row {row} and another); each action "
            "and position (of a round) takes one probability"
        )
    n_actions, n_pos = int(ints["action"].max()) + 1, int(ints["position"].max()) + 1
    if "round" in ints:
        rounds = int(ints["round"].max()) + 1 if n_rounds is None else n_rounds
        if ints["round"].max() >= rounds:
            raise OffPolicyDataError(
                f"{path}: round {int(ints['round'].max())} but the logs have {rounds} rows"
            )
        dist = np.zeros((rounds, n_actions, n_pos))
        np.add.at(dist, (ints["round"], ints["action"], ints["position"]), prob)
    else:
        dist = np.zeros((n_actions, n_pos))
        np.add.at(dist, (ints["action"], ints["position"]), prob)
    return check_action_dist(dist, n_rounds)


OPEN_BANDIT_CONTEXT: tuple[str, ...] = tuple(f"user_feature_{i}" for i in range(4))


def open_bandit_logs(data_dir: Path | str, policy: str, campaign: str) -> LoggedData:
    """An Open Bandit log (``policy`` random or bts, ``campaign`` men, women or all) as
    :class:`LoggedData`: action = ``item_id``, position = ``position`` (1-3 -> 0-2), reward =
    ``click``, propensity = ``propensity_score``, context = the four user features one-hot."""
    from adrank.data.datasets.open_bandit import read_log

    frame = read_log(data_dir, policy, campaign).with_columns(
        pl.col("item_id").cast(pl.Int64), pl.col("position").cast(pl.Int64)
    )
    return logged_data(
        frame,
        action="item_id",
        position="position",
        reward="click",
        propensity="propensity_score",
        context=OPEN_BANDIT_CONTEXT,
    )
