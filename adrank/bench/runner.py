"""Run models x seeds under the BARS protocol and collect one row per run.

Runs are resumable: a run directory that already has a manifest is read back instead of
retrained, so a long leaderboard can be built over several sessions.

On a multi-task dataset (several tasks in its schema) a single-task model is a *per-task
baseline*: ``dnn`` expands to one run per task (``dnn@click``, ``dnn@engaged``; a task with a
``given`` label is trained on the rows where it is 1, e.g. the clicked rows) and a combined
row ``dnn (per task)`` per seed whose test metrics score the runs' predictions together: the
CTCVR prediction is ``pctr x pcvr`` of the two runs (:func:`adrank.train.evaluation.
compute_metrics`). ``model@task`` in the model list asks for one task's run only.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from adrank.artifact import ArtifactError, load_split, read_manifest
from adrank.bench.provenance import machine_line, speed_index
from adrank.bench.reuse import check_dataset, check_row, check_run_dir, config_digest
from adrank.config import ConfigError, RunConfig, resolve_run_config
from adrank.data.feature_map import FeatureMap, TaskInfo
from adrank.data.prepare import PreparedData, prepare_dataset
from adrank.outputs import HOLD_LOCK, MARKER, claim_dir, release_dir
from adrank.pipeline import train_run

logger = logging.getLogger(__name__)

DEFAULT_SEEDS = (2021, 2022, 2023)
#: ``dnn@click``: model ``dnn`` trained on task ``click``
TASK_SEPARATOR = "@"
PAIR_SUFFIX = " (per task)"


#: how far the load average of a run that fills every CPU may exceed the CPU count before
#: its time is marked as measured under load (its own non-compute threads)
OWN_LOAD_MARGIN = 0.5


@dataclass
class BenchmarkRun:
    """One (model, seed) result.

    ``model`` is the model spec: a registered model name, ``model@task`` for a single-task
    model trained on one task of a multi-task dataset, or ``model (per task)`` for the row
    that combines a model's per-task runs (its counts and times are the parts' sums).
    """

    model: str
    seed: int
    test_auc: float
    test_logloss: float
    valid_auc: float
    num_parameters: int
    epochs: int
    best_epoch: int
    train_time_s: float
    train_samples_per_s: float
    run_dir: str
    #: adrank version (+ git commit, "-dirty" with uncommitted changes under adrank/ or
    #: configs/) that trained the run;
    #: empty for rows recorded before this field existed
    code: str = ""
    #: the task a single-task model learned (``model@task``); ``None`` otherwise
    task: str | None = None
    #: every test metric (:func:`~adrank.train.evaluation.compute_metrics` keys: ``auc``, and
    #: on a multi-task dataset ``click_auc``, ``engaged_auc`` (on clicked rows),
    #: ``pctcvr_auc``, ``*_gauc`` ..., and per domain ``auc@DOMAIN`` ... when the data declare
    #: a ``domain`` role); empty for rows recorded before this field existed
    metrics: dict[str, float] = field(default_factory=dict)
    #: the model's embedding dim (``None``: unknown or the model has none)
    embedding_dim: int | None = None
    #: the ``model@task`` rows a ``model (per task)`` row combines
    parts: list[str] = field(default_factory=list)
    #: the highest 1-minute load average seen at the start or end of training, the
    #: machine's CPU count and the run's torch threads (``None`` for rows recorded before
    #: runs measured them)
    load_average: float | None = None
    cpus: int | None = None
    threads: int | None = None
    #: the ``--set`` overrides the benchmark applied on top of the shipped config (so a row
    #: can be re-trained exactly, e.g. ``train.num_threads=1``)
    overrides: list[str] = field(default_factory=list)
    #: the machine that trained the run (:func:`adrank.bench.provenance.machine_line`: CPU,
    #: cores, torch version and threads, Python); empty for rows recorded before runs named it
    machine: str = ""
    #: :func:`adrank.bench.provenance.speed_index` (reference MLP steps/s at the run's
    #: threads), timed just before training; ``None`` for rows recorded before runs timed it
    speed_index: float | None = None
    #: the dataset the run trained on, and :func:`adrank.bench.reuse.config_digest` of its
    #: config (empty for rows recorded before runs named them; a per-task pair's row has
    #: no digest): a row is reused only for the same dataset and config
    dataset: str = ""
    config_digest: str = ""

    @property
    def timed_under_load(self) -> bool:
        """Trained while more runnable tasks than CPUs competed: its time is not comparable.

        A run whose torch threads fill every CPU counts its own Python and data threads in
        the load too (quiet 2-thread frappe runs on 2 CPUs end at 1.9-2.1), so it may exceed
        the CPU count by half a core (:data:`OWN_LOAD_MARGIN`) before it is marked."""
        if self.load_average is None or self.cpus is None:
            return False
        fills = self.threads is not None and self.threads >= self.cpus
        return self.load_average > self.cpus + (OWN_LOAD_MARGIN if fills else 0.0)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def code_version() -> str:
    """``<adrank version>+g<commit>`` when adrank runs from a git checkout, else the version."""
    import adrank

    root = Path(__file__).resolve().parent.parent.parent
    try:
        sha = _git(root, "rev-parse", "--short=10", "HEAD")
        # only code and configs count: the benchmark itself appends to runs.jsonl
        dirty = _git(
            root, "status", "--porcelain", "--untracked-files=no", "--", "adrank", "configs"
        )
    except (OSError, subprocess.SubprocessError):
        return adrank.__version__
    return f"{adrank.__version__}+g{sha}{'-dirty' if dirty else ''}" if sha else adrank.__version__


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"dnn@click"`` -> ``("dnn", "click")``; ``"dnn"`` -> ``("dnn", None)``."""
    model, sep, task = spec.partition(TASK_SEPARATOR)
    if sep and not (model and task):
        raise ValueError(f"model spec {spec!r} must be MODEL or MODEL{TASK_SEPARATOR}TASK")
    return model, (task or None)


def base_model(name: str) -> str:
    """The registered model of a row name: ``dnn@click`` and ``dnn (per task)`` -> ``dnn``."""
    return name.removesuffix(PAIR_SUFFIX).partition(TASK_SEPARATOR)[0]


def spec_config(dataset: str, spec: str, overrides: Sequence[str] = ()) -> RunConfig:
    """The run config of a model spec: the model's config for ``dataset`` (shipped tuned
    config or defaults), ``task=TASK`` for ``model@task``, then ``overrides``."""
    model, task = split_spec(spec)
    extra = [f"task={task}"] if task else []
    return resolve_run_config(dataset, model, overrides=[*extra, *overrides])


def _embedding_dim(run_dir: Path, model: str) -> int | None:
    from adrank.models.registry import model_params

    try:
        params = RunConfig.load(run_dir / "config.yaml").params
    except (ConfigError, OSError):
        params = {}
    try:
        value = params.get("embedding_dim", model_params(model).get("embedding_dim"))
    except KeyError:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _read_finished(
    run_dir: Path, model: str, seed: int, code: str = "", task: str | None = None
) -> BenchmarkRun | None:
    try:
        read_manifest(run_dir)
    except ArtifactError:
        return None
    m = json.loads((run_dir / "metrics.json").read_text())
    return BenchmarkRun(
        model=model,
        seed=seed,
        test_auc=m["test"]["auc"],
        test_logloss=m["test"]["logloss"],
        valid_auc=m["valid"].get("auc", float("nan")),
        num_parameters=m["num_parameters"],
        epochs=m["epochs_run"],
        best_epoch=m["best_epoch"],
        train_time_s=m["train_time_s"],
        train_samples_per_s=m["train_samples_per_s"],
        run_dir=str(run_dir),
        code=code,
        task=task,
        metrics={k: float(v) for k, v in m["test"].items()} | domain_metrics(m),
        embedding_dim=_embedding_dim(run_dir, split_spec(model)[0]),
        **_machine_load(m),
    )


def domain_metrics(metrics: dict) -> dict[str, float]:
    """A run's per-domain test metrics (``metrics.json`` ``test_by_domain``, written when
    the data declare a ``domain`` role) as ``METRIC@DOMAIN`` keys: ``auc@home``,
    ``gauc@home``, ``rows@home`` ..."""
    return {
        f"{k}@{domain}": float(v)
        for domain, values in (metrics.get("test_by_domain") or {}).items()
        for k, v in values.items()
    }


def _machine_load(metrics: dict) -> dict:
    load = metrics.get("machine_load") or {}
    values = [v for v in (load.get("load_average_start"), load.get("load_average_end")) if v]
    return {
        "load_average": max(values) if values else None,
        "cpus": load.get("cpus"),
        "threads": load.get("threads"),
    }


def read_results(path: Path) -> dict[tuple[str, int], BenchmarkRun]:
    """Finished runs recorded in a ``runs.jsonl`` (the last line for a (model, seed) wins).

    Rows written before a field existed load with its default."""
    known = {f.name for f in fields(BenchmarkRun)}
    out: dict[tuple[str, int], BenchmarkRun] = {}
    if path.exists():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                data = json.loads(line)
                unknown = sorted(set(data) - known)
                if unknown:
                    raise ValueError(f"{path} line {number}: unknown field(s) {unknown}")
                row = BenchmarkRun(**data)
                out[(row.model, row.seed)] = row
    return out


@dataclass(frozen=True)
class _Entry:
    """A leaderboard entry: one spec, or a per-task pair (``parts``) combined into ``name``."""

    name: str
    parts: tuple[str, ...] = ()


def benchmark_tasks(dataset: str, prepared: PreparedData | None = None) -> tuple[TaskInfo, ...]:
    """The dataset's tasks (with their output names): from ``prepared`` when given, else
    from the registered dataset's schema (no data needed)."""
    if prepared is not None:
        return prepared.feature_map.tasks
    from adrank.data.datasets import get_dataset
    from adrank.data.schema import infer_outputs

    tasks = get_dataset(dataset).schema().tasks
    return tuple(
        TaskInfo(t.name, t.label, t.type, float(t.weight), t.given, output)
        for t, output in zip(tasks, infer_outputs(tasks), strict=True)
    )


def _is_single_task(spec: str, dataset: str, feature_map: FeatureMap) -> bool:
    from adrank.models.registry import build_model, get_model_class

    if get_model_class(spec).outputs is not None:
        return False
    params = spec_config(dataset, spec).params
    return build_model(spec, feature_map, default_init=False, **params).outputs is None


def plan_entries(
    specs: Sequence[str], tasks: Sequence[TaskInfo], is_single_task: Callable[[str], bool]
) -> list[_Entry]:
    """Expand plain single-task models on a multi-task dataset into per-task pairs."""
    names = [t.name for t in tasks]
    out: list[_Entry] = []
    for spec in specs:
        model, task = split_spec(spec)
        if task is not None and task not in names:
            raise ValueError(f"model spec {spec!r}: unknown task {task!r}; tasks: {names}")
        if task is None and len(names) > 1 and is_single_task(model):
            parts = tuple(f"{model}{TASK_SEPARATOR}{n}" for n in names)
            out.append(_Entry(f"{model}{PAIR_SUFFIX}", parts))
        else:
            out.append(_Entry(spec))
    return out


def combine_runs(
    name: str,
    seed: int,
    parts: list[BenchmarkRun],
    feature_map: FeatureMap,
    test: Any,
    code: str = "",
) -> BenchmarkRun:
    """The row of a per-task pair: the parts' test predictions (``test_predictions.npy``)
    scored together on the test split ``test`` (a TensorData), so CTCVR is ``pctr x pcvr``."""
    from adrank.train.evaluation import Predictions, compute_metrics

    by_name = {t.name: t for t in feature_map.tasks}
    columns, outputs = [], []
    for part in parts:
        path = Path(part.run_dir) / "test_predictions.npy"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: cannot combine {name} seed {seed}")
        columns.append(np.load(path).reshape(-1))
        outputs.append(by_name[part.task or ""].output)
    batch = test.data
    roles = {k: v.numpy() for k, v in batch.roles.items()}
    predictions = Predictions(
        np.stack(columns, axis=1),
        batch.labels.numpy(),
        roles.get("group"),
        roles=roles,
        outputs=outputs,
    )
    metrics = compute_metrics(predictions, feature_map)
    dims = {p.embedding_dim for p in parts}
    return BenchmarkRun(
        model=name,
        seed=seed,
        test_auc=metrics["auc"],
        test_logloss=metrics["logloss"],
        valid_auc=float(np.mean([p.valid_auc for p in parts])),
        num_parameters=sum(p.num_parameters for p in parts),
        epochs=sum(p.epochs for p in parts),
        best_epoch=max(p.best_epoch for p in parts),
        train_time_s=sum(p.train_time_s for p in parts),
        train_samples_per_s=float(np.mean([p.train_samples_per_s for p in parts])),
        run_dir="",
        code=code,
        metrics=metrics,
        embedding_dim=dims.pop() if len(dims) == 1 else None,
        parts=[p.model for p in parts],
        load_average=max((p.load_average for p in parts if p.load_average), default=None),
        cpus=next((p.cpus for p in parts if p.cpus), None),
        threads=next((p.threads for p in parts if p.threads), None),
        # the slowest pace any part trained at
        speed_index=min((p.speed_index for p in parts if p.speed_index), default=None),
    )


#: what a benchmark output holds (adrank's own entries); a folder written before output
#: markers existed that holds nothing else is adopted as a benchmark output
BENCHMARK_ENTRIES: tuple[str, ...] = (
    "runs.jsonl", "runs", "leaderboard.md", "leaderboard.csv", "leaderboard.png",
    "verified.jsonl", "tuning_*.jsonl", "dropout_ab.*", "peer_*.json", "peer_*.md",
    "slices.json", "slices.md",
)  # fmt: skip


def claim_benchmark_dir(output_dir: str | Path, *, hold: bool = False) -> Path:
    """Create or reuse ``output_dir`` as a benchmark output (:func:`adrank.outputs.claim_dir`:
    resumable, never a folder holding files adrank did not write); ``hold``: for this
    process until :func:`adrank.outputs.release_dir` (a second benchmark is refused)."""
    path = Path(output_dir)
    legacy: frozenset[str] = frozenset()
    if path.is_dir():
        legacy = frozenset(
            p.name
            for p in path.iterdir()
            if any(fnmatch.fnmatchcase(p.name, pattern) for pattern in BENCHMARK_ENTRIES)
        )
    return claim_dir(path, "benchmark", legacy_entries=legacy, hold=hold)


def _remove_if_only_marker(path: Path) -> None:
    """Remove ``path`` when it holds nothing but adrank's marker and this process's lock (a
    folder just claimed); the lock file goes while still held."""
    names = {p.name for p in path.iterdir()}
    if MARKER in names and names <= {MARKER, HOLD_LOCK}:
        (path / HOLD_LOCK).unlink(missing_ok=True)
        release_dir(path)
        (path / MARKER).unlink()
        path.rmdir()


def run_benchmark(
    dataset: str,
    models: list[str],
    seeds: list[int],
    output_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    overrides: list[str] = (),  # type: ignore[assignment]
    on_run: Callable[[BenchmarkRun], None] | None = None,
    force_progress: bool = False,
    keep_going: bool = False,
    failures: list[tuple[str, int, str]] | None = None,
    prepared: PreparedData | None = None,
) -> list[BenchmarkRun]:
    """Train every model with every seed (tuned config per model) and return the rows.

    Each finished run is appended to ``output_dir/runs.jsonl``, the source of truth for
    resuming: (model, seed) pairs recorded there are not retrained. Run directories
    (weights, checkpoints) go to ``output_dir/runs/`` and an interrupted run resumes from
    its last epoch checkpoint. With ``keep_going`` a failing run is logged (and appended
    to ``failures``) and the benchmark moves on. ``models`` may name ``model@task`` runs;
    on a multi-task dataset a plain single-task model becomes a per-task pair (see the
    module docstring). ``prepared`` replaces preparing ``dataset``. ``output_dir`` must be
    new, empty, or a benchmark output (:func:`claim_benchmark_dir`); anything else is
    refused with :class:`adrank.outputs.OutputDirError`.
    """
    failures = failures if failures is not None else []
    created = not Path(output_dir).exists()
    output_dir = claim_benchmark_dir(output_dir, hold=True)
    try:  # held until the benchmark ends: a second one into it is refused at once
        state = _BenchmarkState(
            dataset, output_dir, data_dir, cache_dir, list(overrides), force_progress, prepared
        )
        try:
            try:
                tasks = benchmark_tasks(dataset, prepared)
            except KeyError:  # not a registered dataset: its prepared data tells (or the error)
                tasks = state.prepared_data().feature_map.tasks
        except Exception:
            if created:  # the folder this call made holds only its marker: take it back
                _remove_if_only_marker(output_dir)
            raise
        entries = plan_entries(
            models,
            tasks,
            lambda m: _is_single_task(m, dataset, state.prepared_data().feature_map),
        )
        rows: list[BenchmarkRun] = []

        def attempt(name: str, seed: int, make: Callable[[], BenchmarkRun | None]) -> None:
            try:
                row = make()
            except Exception as exc:
                if not keep_going:
                    raise
                logger.exception("benchmark: %s seed %d failed", name, seed)
                failures.append((name, seed, f"{type(exc).__name__}: {exc}"))
                return
            if row is not None:
                rows.append(row)
                if on_run:
                    on_run(row)

        for entry in entries:
            for spec in entry.parts or (entry.name,):
                for seed in seeds:
                    attempt(spec, seed, partial(state.run, spec, seed))
            for seed in seeds if entry.parts else ():
                attempt(entry.name, seed, partial(state.combine, entry, seed))
        return rows
    finally:
        release_dir(output_dir)


class _BenchmarkState:
    """What the runs of one benchmark share: the recorded rows and the prepared data."""

    def __init__(
        self,
        dataset: str,
        output_dir: Path,
        data_dir: str | Path | None,
        cache_dir: str | Path | None,
        overrides: list[str],
        force_progress: bool,
        prepared: PreparedData | None,
    ) -> None:
        self.dataset, self.output_dir = dataset, output_dir
        self.data_dir, self.cache_dir = data_dir, cache_dir
        self.overrides, self.force_progress = overrides, force_progress
        self.results_path = output_dir / "runs.jsonl"
        self.done = read_results(self.results_path)
        check_dataset(self.done.values(), dataset, self.results_path)
        self._prepared = prepared
        self._test = None

    def prepared_data(self) -> PreparedData:
        if self._prepared is None:
            self._prepared = prepare_dataset(
                self.dataset, data_dir=self.data_dir, cache_dir=self.cache_dir
            )
        return self._prepared

    def _record(self, row: BenchmarkRun) -> BenchmarkRun:
        with open(self.results_path, "a") as fh:
            fh.write(json.dumps(asdict(row)) + "\n")
        self.done[(row.model, row.seed)] = row
        return row

    def run(self, spec: str, seed: int) -> BenchmarkRun:
        cfg = spec_config(self.dataset, spec, [*self.overrides, f"train.seed={seed}"])
        digest = config_digest(cfg)
        row = self.done.get((spec, seed))
        if row is not None:
            check_row(row, digest, self.overrides, self.results_path)
            logger.info(
                "benchmark: %s seed %d already recorded in %s", spec, seed, self.results_path
            )
            return row
        task = split_spec(spec)[1]
        run_dir = self.output_dir / "runs" / f"{spec}-seed{seed}"
        check_run_dir(run_dir, cfg)
        row = _read_finished(run_dir, spec, seed, task=task)
        if row is None:
            prepared = self.prepared_data()
            logger.info("benchmark: %s seed %d -> %s", spec, seed, run_dir)
            code = code_version()  # at the start: the code that trains the run
            index = speed_index(cfg.train.num_threads)  # the machine's pace, just before
            train_run(
                cfg, run_dir, prepared=prepared, resume=True, force_progress=self.force_progress
            )
            row = _read_finished(run_dir, spec, seed, code, task=task)
            if row is None:
                raise RuntimeError(f"run {run_dir} finished without a manifest")
            row.machine = machine_line()  # after training: with the run's thread count
            row.speed_index = index
        row.overrides = list(self.overrides)
        row.dataset, row.config_digest = self.dataset, digest
        return self._record(row)

    def combine(self, entry: _Entry, seed: int) -> BenchmarkRun | None:
        row = self.done.get((entry.name, seed))
        if row is not None:
            check_row(row, "", self.overrides, self.results_path)
            return row
        missing = [spec for spec in entry.parts if (spec, seed) not in self.done]
        if missing:
            logger.warning("benchmark: %s seed %d lacks %s", entry.name, seed, missing)
            return None
        parts = [self.done[(spec, seed)] for spec in entry.parts]
        prepared = self.prepared_data()
        if self._test is None:
            self._test = load_split(prepared, "test")
        codes = {p.code for p in parts}
        row = combine_runs(
            entry.name,
            seed,
            parts,
            prepared.feature_map,
            self._test,
            codes.pop() if len(codes) == 1 else "",
        )
        machines = {p.machine for p in parts}
        row.machine = machines.pop() if len(machines) == 1 else ""
        row.overrides, row.dataset = list(self.overrides), self.dataset
        return self._record(row)
