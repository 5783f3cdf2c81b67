"""Turn raw splits into processed, versioned training data.

``prepare_frames`` fits a :class:`FeatureProcessor` on the training split, transforms every
split, and writes (atomically) one Parquet file per split, ``feature_map.json``, the
processor directory and ``stats.json``. ``prepare_dataset`` does the same for a registered
public dataset and caches the result under a key that hashes the raw file contents, the
schema, the seed and the adrank version: preparing the same inputs again reuses the cache.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from adrank.data.feature_map import FeatureMap
from adrank.data.processor import FeatureProcessor
from adrank.data.schema import Schema, infer_outputs
from adrank.outputs import publish_dir
from adrank.utils import atomic_write_text, content_digest

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
PREPARED_FORMAT_VERSION = 1
#: rows per Parquet row group; the streaming loader reads one group at a time
ROW_GROUP_SIZE = 65_536


@dataclass
class SplitStats:
    """One prepared split: its rows, each label's mean, the seconds it took, and per task
    with a ``given`` label the rows whose label is 1 where the given label is 0 (see
    :func:`positives_without_given`)."""

    rows: int
    positive_rate: dict[str, float]
    seconds: float
    positives_without_given: dict[str, int] = field(default_factory=dict)


@dataclass
class PreparedData:
    """Paths and metadata of a prepared dataset directory."""

    directory: Path
    feature_map: FeatureMap
    splits: dict[str, Path]
    stats: dict[str, SplitStats] = field(default_factory=dict)
    cached: bool = False

    @property
    def processor_dir(self) -> Path:
        return self.directory / "processor"

    def processor(self) -> FeatureProcessor:
        return FeatureProcessor.load(self.processor_dir)

    @classmethod
    def open(cls, directory: str | Path) -> PreparedData:
        """Open a directory written by :func:`prepare_frames`."""
        directory = Path(directory)
        meta_path = directory / "stats.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{directory} is not a prepared dataset (no stats.json)")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{meta_path}: unreadable prepared-data metadata: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format_version") != PREPARED_FORMAT_VERSION:
            raise ValueError(f"{directory}: unsupported prepared-data format {meta!r}")
        stats = {k: SplitStats(**v) for k, v in meta["splits"].items()}
        return cls(
            directory=directory,
            feature_map=FeatureMap.load(directory / "feature_map.json"),
            splits={k: directory / f"{k}.parquet" for k in stats},
            stats=stats,
        )


def default_cache_dir() -> Path:
    """``$ADRANK_CACHE_DIR``, else ``~/.cache/adrank/processed``."""
    env = os.environ.get("ADRANK_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "adrank" / "processed"


def _positive_rates(frame: pl.DataFrame, labels: tuple[str, ...]) -> dict[str, float]:
    return {
        label: float(frame.get_column(label).cast(pl.Float64).mean() or 0.0)
        for label in labels
        if label in frame.columns
    }


def check_task_labels(schema: Schema, columns: list[str], where: str = "data") -> None:
    """Raise :class:`~adrank.data.schema.SchemaError` naming the task and its label (or
    ``given``) column when that column is not in ``columns``."""
    from adrank.data.schema import SchemaError

    present = set(columns)
    for task in schema.tasks:
        for kind, column in (("label", task.label), ("given", task.given)):
            if column is not None and column not in present:
                raise SchemaError(
                    f"task {task.name!r}: its {kind} column {column!r} is missing from {where}; "
                    f"available columns: {list(columns)}"
                )


def positives_without_given(schema: Schema, frame: pl.DataFrame) -> dict[str, int]:
    """Per binary task with a ``given`` label: the rows whose label is 1 where the given
    label is 0 (a conversion without a click, under ``given: click``). One vectorized pass."""
    tasks = [
        t
        for t in schema.tasks
        if t.given is not None and t.type == "binary" and {t.label, t.given} <= set(frame.columns)
    ]
    if not tasks or frame.height == 0:
        return {t.name: 0 for t in tasks}

    def number(column: str) -> pl.Expr:
        return pl.col(column).cast(pl.Float64, strict=False)

    counts = frame.select(
        ((number(t.given) == 0) & (number(t.label) == 1)).sum().alias(t.name) for t in tasks
    ).row(0, named=True)
    return {name: int(n or 0) for name, n in counts.items()}


def warn_positives_without_given(
    schema: Schema, split: str, rows: int, counts: dict[str, int]
) -> None:
    """Log a warning per task whose label is 1 in rows where its ``given`` label is 0,
    saying what training does with those rows (they are kept: dropping them would lose
    rows silently)."""
    outputs = dict(zip((t.name for t in schema.tasks), infer_outputs(schema.tasks), strict=True))
    ctr = next((t for t in schema.tasks if outputs[t.name] == "pctr"), None)
    for task in schema.tasks:
        n = counts.get(task.name, 0)
        if not n:
            continue
        given, label = task.given, task.label
        output = outputs[task.name]
        effect = (
            f"{output} ignores them (its loss and the {task.name}_* metrics are masked to "
            f"{given}=1 rows)"
        )
        if output == "pcvr" and ctr is not None and ctr.label == given:
            effect += (
                f"; pctcvr counts them as negatives (its label is {given} × {label} = 0), in "
                "ESMM's training and in the pctcvr_* metrics"
            )
        logger.warning(
            "the %s split: task %r (given: %s) has %d row(s) (%.2f%% of %d) with %s=1 but "
            "%s=0, outside the task as declared: a conversion without the %s (view-through) "
            "or a broken join of the %s and %s labels. They are kept: %s. To learn them as "
            "positives, declare the task per impression instead (no 'given'; output: pctcvr)",
            split, task.name, given, n, 100.0 * n / max(rows, 1), rows, label, given, given,
            given, label, effect,
        )  # fmt: skip


#: the output kind of prepared data (:mod:`adrank.outputs`)
PREPARED_KIND = "prepared"


def prepared_legacy_entries(split_names: Iterable[str]) -> frozenset[str]:
    """What prepared data written before output markers existed holds (it may be replaced)."""
    names = {f"{name}.parquet" for name in split_names}
    return frozenset({"processor", "feature_map.json", "stats.json"} | names)


def prepare_frames(
    schema: Schema,
    splits: dict[str, pl.DataFrame],
    output_dir: str | Path,
    on_split: Callable[[str, SplitStats], None] | None = None,
    extra_meta: dict[str, Any] | None = None,
    vectors: dict[str, pl.DataFrame] | None = None,
    fitted: FeatureProcessor | None = None,
) -> PreparedData:
    """Fit on ``splits["train"]``, transform all splits and write them to ``output_dir``.
    ``vectors`` gives pretrained features their vectors in code (see
    :meth:`FeatureProcessor.fit`); a ``fitted`` processor is used instead of fitting one
    (warm starts, :mod:`adrank.stream.warm_start`).

    The directory is built in a temp sibling and renamed into place, so an interrupted run
    never leaves a half-written dataset behind; an existing ``output_dir`` is replaced only
    when it is adrank's own prepared data (:func:`adrank.outputs.publish_dir`): never a
    folder with the user's files in it.
    """
    if "train" not in splits:
        raise ValueError(f"a 'train' split is required, got {sorted(splits)}")
    output_dir = Path(output_dir)
    result: dict[str, Any] = {}

    def build(tmp: Path) -> None:
        t0 = time.perf_counter()
        outside: dict[str, dict[str, int]] = {}
        for name, frame in splits.items():
            check_task_labels(schema, frame.columns, where=f"the {name} split")
            schema.check_columns(frame.columns, where=f"the {name} split")
            outside[name] = positives_without_given(schema, frame)
            warn_positives_without_given(schema, name, frame.height, outside[name])
        processor = fitted  # a given fitted processor encodes the splits as it is
        if processor is None:
            processor = FeatureProcessor(schema).fit(splits["train"], vectors=vectors)
        fit_s = time.perf_counter() - t0
        processor.save(tmp / "processor")
        feature_map = processor.feature_map()
        feature_map.save(tmp / "feature_map.json")
        stats: dict[str, SplitStats] = {}
        paths: dict[str, Path] = {}
        for name, frame in splits.items():
            t1 = time.perf_counter()
            encoded = processor.transform(frame)
            pq.write_table(
                encoded.to_arrow(), tmp / f"{name}.parquet", row_group_size=ROW_GROUP_SIZE
            )
            seconds = time.perf_counter() - t1 + (fit_s if name == "train" else 0.0)
            stats[name] = SplitStats(
                frame.height, _positive_rates(frame, schema.labels), seconds, outside[name]
            )
            paths[name] = output_dir / f"{name}.parquet"
            if on_split:
                on_split(name, stats[name])
        meta = {
            "format_version": PREPARED_FORMAT_VERSION,
            "schema": schema.to_dict(),
            "splits": {k: vars(v) for k, v in stats.items()},
            **(extra_meta or {}),
        }
        atomic_write_text(tmp / "stats.json", json.dumps(meta, indent=2))
        result.update(feature_map=feature_map, paths=paths, stats=stats)

    legacy = prepared_legacy_entries(splits)
    output_dir = publish_dir(output_dir, PREPARED_KIND, build, legacy_entries=legacy)
    result["paths"] = {k: output_dir / v.name for k, v in result["paths"].items()}
    return PreparedData(output_dir, result["feature_map"], result["paths"], result["stats"])


def dataset_cache_key(builder: Any, data_dir: Path, seed: int) -> str:
    """Hash of the raw files' bytes, the schema, the dataset definition version, the seed
    and the adrank version."""
    from adrank import __version__
    from adrank.data.datasets import find_file

    files = []
    for rf in (*builder.expected_files(data_dir), *builder.optional_files):
        found = find_file(data_dir, rf.path)
        if found is not None:
            files.append(found)
    extra = json.dumps(
        {
            "schema": builder.schema().to_dict(),
            "definition": getattr(builder, "version", 1),
            "seed": seed,
            "version": __version__,
            "format": PREPARED_FORMAT_VERSION,
        },
        sort_keys=True,
    )
    return content_digest(files, extra=extra)


def prepare_dataset(
    name: str,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    seed: int | None = None,
    bad_rows: str = "error",
    force: bool = False,
    download: bool = True,
    on_split: Callable[[str, SplitStats], None] | None = None,
) -> PreparedData:
    """Prepare a registered public dataset (downloading missing files if allowed)."""
    from adrank.data.datasets import ensure_files, get_dataset, resolve_data_dir

    builder = get_dataset(name)
    root = resolve_data_dir(data_dir)
    ensure_files(builder, root, download=download)
    seed = builder.default_seed if seed is None else seed
    key = dataset_cache_key(builder, root, seed)
    out = Path(cache_dir) if cache_dir else default_cache_dir()
    out = out / f"{name}-{key}"
    if not force and (out / "stats.json").exists():
        try:
            prepared = PreparedData.open(out)
            prepared.cached = True
            logger.info("reusing cached prepared data %s", out)
            if on_split:
                for split, st in prepared.stats.items():
                    on_split(split, st)
            return prepared
        except (ValueError, FileNotFoundError, KeyError) as exc:
            logger.warning("ignoring unreadable cache %s: %s", out, exc)
    t0 = time.perf_counter()
    splits = builder.build_splits(root, seed=seed, bad_rows=bad_rows)
    logger.info("built raw %s splits in %.2fs", name, time.perf_counter() - t0)
    return prepare_frames(
        builder.schema(),
        splits,
        out,
        on_split=on_split,
        extra_meta={
            "dataset": name,
            "dataset_version": getattr(builder, "version", 1),
            "seed": seed,
            "cache_key": key,
        },
        vectors=builder.pretrained_vectors(root),
    )
