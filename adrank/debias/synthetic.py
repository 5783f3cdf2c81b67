"""Semi-synthetic position-biased click logs built on real feature rows.

**Semi-synthetic**: the feature rows are real (e.g. frappe's), everything else is simulated:

1. *True relevance* ``r = sigmoid(logit(q) / temperature)``, where ``q`` is a strong model's
   probability for the row. Tempering pulls frappe's near-0/1 probabilities inwards, so that
   a click is a genuinely random event.
2. *Lists*: rows are put in a random order, stably sorted by ``group_column`` (the user), and
   cut into consecutive requests of ``list_size`` slots (a request may straddle two users;
   the last ``n mod list_size`` rows of a split are dropped).
3. *Logging policy*: a noisy score ``s = rho * z + sqrt(1 - rho^2) * eps`` per row, with ``z``
   the standardized tempered relevance logit, ``eps ~ N(0, 1)`` and ``rho = policy_strength``
   (the correlation of ``s`` with ``z``); each request's slots are filled by a Plackett-Luce
   draw over ``exp(s)`` (a Gumbel-perturbed sort). A uniform placement would leave a
   position-blind model unbiased; this one puts relevant rows on top more often.
4. *Clicks*: ``click = Bernoulli(examination[position]) * Bernoulli(r)`` (the position-based
   model), with ``examination[k] = (1 / k) ** examination_power`` unless given.
5. *Evaluation clicks*: ``click_unbiased = Bernoulli(r)``, an independent draw with
   examination = 1 (what each row would get if every slot were looked at).

Every draw comes from one ``numpy.random.Generator(seed)`` in a fixed order per split, so a
seed determines the logs exactly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from adrank.data.schema import CategoricalFeature, Schema, Task
from adrank.outputs import publish_dir

__all__ = [
    "PositionLogSpec",
    "position_log_schema",
    "simulate_position_logs",
    "write_position_logs",
]

logger = logging.getLogger(__name__)

#: the columns the simulation adds to the feature rows
LOG_COLUMNS = (
    "request_id", "position", "examination", "relevance", "click", "click_unbiased",
)  # fmt: skip


@dataclass(frozen=True)
class PositionLogSpec:
    """The stated parameters of the simulation (see the module docstring)."""

    list_size: int = 10
    temperature: float = 3.0
    policy_strength: float = 0.7
    examination_power: float = 1.0
    examination: tuple[float, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.list_size < 2:
            raise ValueError(f"list_size must be >= 2, got {self.list_size}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.policy_strength <= 1.0:
            raise ValueError(f"policy_strength must be in [0, 1], got {self.policy_strength}")
        curve = self.examination_curve()
        if len(curve) != self.list_size or not np.all((curve > 0) & (curve <= 1)):
            raise ValueError(
                f"examination must give list_size={self.list_size} probabilities in (0, 1], "
                f"got {list(curve)}"
            )

    def examination_curve(self) -> np.ndarray:
        """Examination probability of positions 1..list_size."""
        if self.examination is not None:
            return np.asarray(self.examination, dtype=np.float64)
        return (1.0 / np.arange(1, self.list_size + 1)) ** self.examination_power


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def simulate_split(
    frame: pl.DataFrame,
    relevance_logit: np.ndarray,
    spec: PositionLogSpec,
    rng: np.random.Generator,
    group_column: str | None,
    first_request: int = 0,
) -> pl.DataFrame:
    """One split's logs: ``frame``'s rows (those that fill whole lists) in list order, with
    the columns of :data:`LOG_COLUMNS` appended. ``relevance_logit`` (N,) is the strong
    model's logit per row of ``frame`` (before tempering)."""
    n = frame.height
    if relevance_logit.shape != (n,):
        raise ValueError(f"relevance_logit has shape {relevance_logit.shape}, expected ({n},)")
    if not np.all(np.isfinite(relevance_logit)):
        raise ValueError("relevance_logit has non-finite values")
    k = spec.list_size
    order = rng.permutation(n)
    if group_column is not None:
        # a missing group value is one more group (sorted first), not a failed comparison
        groups = frame.get_column(group_column).cast(pl.Utf8).fill_null("").to_numpy()[order]
        order = order[np.argsort(groups, kind="stable")]
    lists = n // k
    order = order[: lists * k]
    logit = relevance_logit[order] / spec.temperature
    relevance = _sigmoid(logit)
    z = (logit - logit.mean()) / max(float(logit.std()), 1e-12)
    rho = spec.policy_strength
    score = rho * z + np.sqrt(1.0 - rho**2) * rng.standard_normal(lists * k)
    gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, lists * k)))
    perturbed = (score + gumbel).reshape(lists, k)
    slot_order = np.argsort(-perturbed, axis=1, kind="stable")  # slot j holds item slot_order[j]
    rows = (slot_order + np.arange(lists)[:, None] * k).reshape(-1)
    position = np.tile(np.arange(1, k + 1), lists)
    relevance = relevance[rows]
    examination = spec.examination_curve()[position - 1]
    examined = rng.uniform(size=lists * k) < examination
    click = examined & (rng.uniform(size=lists * k) < relevance)
    click_unbiased = rng.uniform(size=lists * k) < relevance
    out = frame[order[rows]]
    return out.with_columns(
        pl.Series("request_id", np.repeat(np.arange(lists) + first_request, k), pl.Int64),
        pl.Series("position", position, pl.Int64),
        pl.Series("examination", examination, pl.Float64),
        pl.Series("relevance", relevance, pl.Float64),
        pl.Series("click", click.astype(np.int64), pl.Int64),
        pl.Series("click_unbiased", click_unbiased.astype(np.int64), pl.Int64),
    )


def simulate_position_logs(
    frames: Mapping[str, pl.DataFrame],
    relevance_logits: Mapping[str, np.ndarray],
    spec: PositionLogSpec,
    group_column: str | None = None,
    drop_columns: Sequence[str] = (),
) -> dict[str, pl.DataFrame]:
    """Semi-synthetic logs for every split of ``frames`` (in the mapping's order; request ids
    are unique across splits). ``relevance_logits[split]`` is the strong model's logit per
    row; ``drop_columns`` (e.g. the original label) are removed from the output."""
    rng = np.random.default_rng(spec.seed)
    out: dict[str, pl.DataFrame] = {}
    first = 0
    for name, frame in frames.items():
        if name not in relevance_logits:
            raise KeyError(f"no relevance logits for split {name!r}")
        if frame.height < spec.list_size:
            raise ValueError(
                f"split {name!r} has {frame.height} rows, fewer than one list "
                f"(list_size={spec.list_size}): its logs would be empty"
            )
        logs = simulate_split(
            frame.drop(list(drop_columns)),
            np.asarray(relevance_logits[name], dtype=np.float64),
            spec,
            rng,
            group_column,
            first,
        )
        first += logs.height // spec.list_size
        out[name] = logs
    return out


def position_log_schema(feature_columns: Sequence[str], name: str = "position_logs") -> Schema:
    """The schema to train on the logs: categorical ``feature_columns``, the task ``click``,
    and the roles ``position``, ``list_id`` (``request_id``) and ``examination``."""
    return Schema(
        features=tuple(CategoricalFeature(c) for c in feature_columns),
        tasks=(Task(name="click", label="click"),),
        roles={"position": "position", "list_id": "request_id", "examination": "examination"},
        name=name,
    )


def write_position_logs(
    logs: Mapping[str, pl.DataFrame],
    output_dir: str | Path,
    spec: PositionLogSpec,
    provenance: Mapping[str, object],
) -> Path:
    """Write ``{split}.parquet`` per split plus ``meta.json`` (the spec, the examination
    curve, ``provenance`` and a ``semi_synthetic: true`` flag) into ``output_dir`` (built in
    a temp directory and renamed into place)."""

    def build(tmp: Path) -> None:
        for name, frame in logs.items():
            pq.write_table(frame.to_arrow(), tmp / f"{name}.parquet")
        meta = {
            "semi_synthetic": True,
            "description": "semi-synthetic position-biased click logs: real feature rows, "
            "simulated relevance, list placement, examination and clicks",
            "spec": asdict(spec),
            "examination_curve": spec.examination_curve().tolist(),
            "rows": {name: frame.height for name, frame in logs.items()},
            "click_rate": {name: float(frame["click"].mean()) for name, frame in logs.items()},
            "provenance": dict(provenance),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))

    return publish_dir(output_dir, "position_logs", build)
