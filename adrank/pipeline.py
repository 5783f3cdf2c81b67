"""End-to-end functional API: dataset -> prepared data -> trained run directory.

``train_run`` is what ``adrank train`` and the benchmark runner call. It prepares (or reuses)
the dataset, builds the model from the registry, trains with the :class:`Trainer` and writes
the artifact (see :mod:`adrank.artifact`).

Run inside a distributed worker (``adrank train --nproc N`` or ``torchrun -m adrank train``),
``train_run`` joins the process group from the environment, trains with DDP on a shard per
rank and lets rank 0 alone write the artifact (see ``docs/distributed.md``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from adrank.artifact import load_artifact, load_split, open_prepared_data, write_artifact
from adrank.config import RunConfig, monitor_names
from adrank.data.batches import InMemoryLoader, TensorData
from adrank.data.feature_map import FeatureMap
from adrank.data.prepare import PreparedData, prepare_dataset
from adrank.debias.position import build_position_method, build_position_model
from adrank.outputs import (
    HOLD_LOCK,
    MARKER,
    OutputDirError,
    claim_dir,
    read_marker,
    release_dir,
)
from adrank.tasks import model_outputs, resolve_objectives
from adrank.train.distributed import (
    barrier,
    env_world_size,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    local_batch_size,
    shutdown_distributed,
)
from adrank.train.evaluation import (
    Predictions,
    as_eval_loader,
    collect_predictions,
    compute_metrics,
    slice_metrics,
)
from adrank.train.guards import apply_num_threads
from adrank.train.sampling import (
    correct_predictions,
    downsample_negatives,
    filter_domain,
    sampled_output,
)
from adrank.train.trainer import Trainer, TrainResult
from adrank.utils import atomic_write, content_digest, seed_everything

if TYPE_CHECKING:
    from adrank.stream.warm_start import WarmStart

logger = logging.getLogger(__name__)

#: how long the other workers wait while local rank 0 prepares the dataset
PREPARE_TIMEOUT_S = 3600.0


@dataclass
class RunResult:
    """A finished run: where it is, what it scored and how long it took."""

    run_dir: Path
    model: str
    num_parameters: int
    train: TrainResult

    @property
    def test(self) -> dict[str, float]:
        return self.train.test or {}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to a path
        np.save(fh, array)


def train_run(
    config: RunConfig,
    run_dir: str | Path,
    *,
    prepared: PreparedData | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    force_progress: bool = False,
    init_from: str | Path | WarmStart | None = None,
) -> RunResult:
    """Train ``config.model`` on ``config.dataset`` (or ``prepared``) into ``run_dir``.

    ``init_from`` (a finished run directory) continues from that run's weights, optimizer
    state and processor, whose vocabularies grow on the new training split
    (:mod:`adrank.stream.warm_start`); single process, on ``config.dataset``, or on your own
    logs when it is a :class:`~adrank.stream.warm_start.WarmStart` whose
    :meth:`~adrank.stream.warm_start.WarmStart.prepare_splits` ran (``config.dataset`` empty).

    ``run_dir`` must be new, empty, or an adrank run directory (:func:`adrank.outputs.claim_dir`).
    One that holds a checkpoint is continued with ``resume=True`` or started over with
    ``overwrite=True`` (the earlier run's files are moved aside and removed only when the new
    run finishes, put back when it fails: :func:`prepare_run_dir`); anything else is refused
    before training.

    In a distributed worker (``WORLD_SIZE > 1`` in the environment) this joins the process
    group (and leaves it again if it joined it), and ``config.train.batch_size`` is the
    global batch: each rank trains on ``batch_size // world_size`` rows of its own shard.
    """
    joined = env_world_size() > 1 and not (dist.is_available() and dist.is_initialized())
    if joined:
        context = init_distributed(config.train.device)
        device = context.device(config.train.device)
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, device=device))
    try:
        warm = None
        if init_from is not None:
            warm = _warm_start(config, init_from, prepared, resume, data_dir, cache_dir)
            prepared = warm.prepared
        if prepared is None:
            if not config.dataset:
                raise ValueError("no dataset given: set config.dataset or pass prepared=")
            prepared = _prepare_once(config.dataset, data_dir, cache_dir)
        run_dir = Path(run_dir)
        held = is_main_process()
        parked, created, failed = False, not run_dir.exists(), True
        try:
            if held:  # holds run_dir until training ends: a second trainer is refused
                parked = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
            result = _train(config, run_dir, prepared, resume, force_progress, warm)
            failed = False
            if held:
                discard_replaced(run_dir)
            return result
        except BaseException as exc:
            if parked:
                settle_replaced(run_dir, exc)
            raise
        finally:
            if held:
                if failed and created:  # while still holding it: see remove_if_unused
                    remove_if_unused(run_dir)
                release_dir(run_dir)
    finally:
        if joined:
            shutdown_distributed()


#: the files a training run writes into its run directory (``overwrite`` removes these only)
RUN_FILES = (
    "checkpoint.pt", "best.pt", "metrics.jsonl", "test_predictions.npy", "manifest.json",
    "config.yaml", "schema.yaml", "feature_map.json", "model.pt", "metrics.json",
    "calibration.json", "model.torchscript.pt", "model.onnx", "growth.json",
)  # fmt: skip


def legacy_run_entries(run_dir: Path) -> frozenset[str]:
    """What an unmarked ``run_dir`` may hold to be adopted as a run written before output
    markers existed (:func:`adrank.outputs.claim_dir`): the run files and ``processor/``,
    but only when it holds a readable adrank manifest (a finished run) or a checkpoint (an
    interrupted one). A user's own ``config.yaml`` or ``processor/`` folder is never
    adopted: training would have overwritten or replaced it."""
    if not run_dir.is_dir() or read_marker(run_dir) is not None:
        return frozenset()
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    finished = isinstance(manifest, dict) and "format_version" in manifest
    if finished or (run_dir / "checkpoint.pt").is_file():
        return frozenset(RUN_FILES) | {"processor"}
    return frozenset()


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> bool:
    """Claim ``run_dir`` for a run; refuse to silently start over an interrupted run.

    ``overwrite`` moves the earlier run's files aside into ``run_dir/.adrank-replaced``
    (renames: no copy, no extra disk) and returns True; :func:`train_run` removes them when
    the new run finishes and puts them back when it fails (:func:`settle_replaced`)."""
    claim_dir(run_dir, "run", legacy_entries=legacy_run_entries(run_dir), hold=True)
    has_checkpoint = (run_dir / "checkpoint.pt").exists()
    if has_checkpoint and not (resume or overwrite):
        kept = (
            f"; the run it replaced is kept in {run_dir / REPLACED}"
            if (run_dir / REPLACED).is_dir()
            else ""
        )
        raise OutputDirError(
            f"{run_dir} holds a checkpoint of an earlier run (interrupted or finished); pass "
            f"--resume to continue it or --overwrite to start over{kept}"
        )
    if overwrite and not resume:
        park_run(run_dir)
        return True
    return False


#: where ``overwrite`` keeps the replaced run's files until the new run finishes
REPLACED = ".adrank-replaced"


def _run_entries(run_dir: Path) -> list[Path]:
    """The files (and ``processor/``) a training run wrote into ``run_dir``."""
    entries = [run_dir / name for name in RUN_FILES if (run_dir / name).is_file()]
    processor = run_dir / "processor"
    if processor.is_dir() and (processor / "processor.json").exists():
        entries.append(processor)
    return entries


def _remove(entries: list[Path]) -> None:
    for entry in entries:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def park_run(run_dir: Path) -> None:
    """Move the run files in ``run_dir`` into ``run_dir/.adrank-replaced``. When an earlier
    overwrite left that folder (it was interrupted), the folder keeps the last *finished*
    run: the unfinished files beside it are the ones being replaced and are removed, and a
    finished run beside it (its swap was cut short) supersedes it."""
    parked = run_dir / REPLACED
    entries = _run_entries(run_dir)
    if parked.is_dir():
        if not (run_dir / "manifest.json").is_file():
            _remove(entries)
            return
        shutil.rmtree(parked)
    if not entries:
        return
    tmp = run_dir / (REPLACED + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for entry in entries:
        entry.rename(tmp / entry.name)
    tmp.rename(parked)


def remove_if_unused(run_dir: Path) -> None:
    """Remove a run directory this call created when the run failed before writing into
    it (a setting refused after the folder was claimed): only adrank's marker and lock.
    Called while the lock is held, so no other trainer is inside; one that starts meanwhile
    re-creates its lock file and the ``rmdir`` fails, leaving the folder to it."""
    try:
        names = {p.name for p in run_dir.iterdir()}
        if names <= {MARKER, HOLD_LOCK}:
            for name in names:
                (run_dir / name).unlink()
            run_dir.rmdir()
    except OSError:  # another process wrote into it meanwhile: leave it
        pass


def discard_replaced(run_dir: Path) -> None:
    """The new run finished: drop the run it replaced."""
    parked = run_dir / REPLACED
    if parked.is_dir():
        shutil.rmtree(parked)
        logger.info("%s finished; the run it replaced was removed", run_dir)


def settle_replaced(run_dir: Path, exc: BaseException) -> None:
    """The new run of an overwrite did not finish. Interrupted (Ctrl-C, SIGTERM) it keeps
    its checkpoint for ``--resume`` and the replaced run stays in ``.adrank-replaced``;
    failed (an error, a full disk, divergence) its files are removed and the replaced run
    is put back, so ``--overwrite`` takes effect only when the new run finishes."""
    parked = run_dir / REPLACED
    if not parked.is_dir():
        return
    if isinstance(exc, KeyboardInterrupt):
        logger.warning(
            "the run this one replaces is kept in %s until this run finishes (--resume)", parked
        )
        return
    try:
        _remove(_run_entries(run_dir))
        for entry in parked.iterdir():
            entry.rename(run_dir / entry.name)
        parked.rmdir()
    except OSError as err:
        logger.error("the replaced run could not be put back from %s: %s", parked, err)
        return
    logger.warning("training failed; the run it was to replace was put back in %s", run_dir)


def _one_class(data: TensorData, objective: Any) -> str | None:
    """``"N rows, P positive, M negative"`` when a binary objective's target in ``data`` (its
    mask applied) holds one class or none, else ``None``."""
    if objective.type != "binary":
        return None
    labels = data.data.labels
    target = objective.target(labels)
    if objective.mask is not None:
        target = target[labels[:, objective.mask] == 1]
    positives, rows = int((target == 1).sum()), int(target.numel())
    if rows and 0 < positives < rows:
        return None
    return f"{rows} rows, {positives} positive, {rows - positives} negative"


def check_trainable(data: TensorData, feature_map: FeatureMap, objectives: list) -> None:
    """Refuse, before any training, a training split on which a task has one class only."""
    for objective in objectives:
        counts = _one_class(data, objective)
        if counts is not None:
            raise ValueError(
                f"the training split cannot train task {objective.task!r} ({objective.output}): "
                f"{counts}; a binary task needs both classes"
            )


def check_monitorable(data: TensorData, objectives: list, monitor: str | dict[str, float]) -> None:
    """Refuse, before any training, a validation split on which early stopping's monitored
    AUC is undefined: a task it follows has one class only there (every epoch's AUC would
    be NaN)."""
    names = monitor_names(monitor)
    for objective in objectives:
        followed = [
            n
            for n in names
            if n.endswith("auc")
            and ("_" not in n or n.split("_")[0] in (objective.task, objective.output))
        ]
        counts = _one_class(data, objective) if followed else None
        if counts is not None:
            raise ValueError(
                f"the validation split cannot score task {objective.task!r} "
                f"({objective.output}) by {followed[0]}: {counts}, and an AUC needs both "
                f"classes; early stopping follows train.monitor={monitor!r}: validate on rows "
                "of both classes, or monitor a metric defined on one (train.monitor=logloss)"
            )


def run_identity(config: RunConfig, prepared: PreparedData) -> dict[str, Any]:
    """What a checkpoint must have been trained with to be resumed by this run: the model,
    its parameters and the training data (a digest of the fitted processor, which defines
    what every id means, and of the training split's size and positive rates)."""
    processor = [p for p in Path(prepared.processor_dir).rglob("*") if p.is_file()]
    train = prepared.stats.get("train")
    rows = None if train is None else [train.rows, train.positive_rate]
    return {
        "model": config.model.lower(),
        "params": dict(config.params),
        "training data": content_digest(processor, extra=json.dumps(rows, sort_keys=True)),
    }


def _load_average() -> float | None:
    """The 1-minute load average (``None`` where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _prepare_once(
    dataset: str, data_dir: str | Path | None, cache_dir: str | Path | None
) -> PreparedData:
    """Local rank 0 prepares (or reuses) the dataset first; the other workers of its machine
    then reuse that cache instead of writing the same files at the same time."""
    if get_world_size() == 1:
        return prepare_dataset(dataset, data_dir=data_dir, cache_dir=cache_dir)
    first = int(os.environ.get("LOCAL_RANK", get_rank())) == 0
    prepared = prepare_dataset(dataset, data_dir=data_dir, cache_dir=cache_dir) if first else None
    barrier(timeout_s=PREPARE_TIMEOUT_S)
    return prepared or prepare_dataset(dataset, data_dir=data_dir, cache_dir=cache_dir)


def _warm_start(
    config: RunConfig,
    init_from: str | Path | WarmStart,
    prepared: PreparedData | None,
    resume: bool,
    data_dir: str | Path | None,
    cache_dir: str | Path | None,
) -> Any:
    """``--init-from``: the run to continue, with the new dataset encoded by its grown
    processor (``.prepared``). ``init_from`` may be a :class:`WarmStart` whose data are
    already prepared (your own logs: :meth:`WarmStart.prepare_splits`)."""
    from adrank.stream.warm_start import WarmStart

    given = isinstance(init_from, WarmStart) and init_from.prepared is not None
    if resume or prepared is not None or get_world_size() > 1 or (given == bool(config.dataset)):
        raise ValueError(
            "--init-from starts a new single-process run from a finished run, on --dataset or "
            "on your own logs (--train FILE); it does not combine with --resume, --prepared "
            "or --nproc"
        )
    warm = init_from if isinstance(init_from, WarmStart) else WarmStart(init_from)
    warm.check(config)
    if not given:
        warm.prepared = warm.prepare(config.dataset, data_dir=data_dir, cache_dir=cache_dir)
    return warm


def _domain_rows(data: TensorData, feature_map: FeatureMap, domain: str | None) -> TensorData:
    """``data``, or with ``train.domain_filter`` only that domain's rows."""
    return data if domain is None else filter_domain(data, feature_map, domain)


def _train(
    config: RunConfig,
    run_dir: Path,
    prepared: PreparedData,
    resume: bool,
    force_progress: bool,
    warm: Any = None,
) -> RunResult:
    cfg = config.train
    seed_everything(cfg.seed, cfg.deterministic)
    apply_num_threads(cfg.num_threads)  # a number this machine cannot run is one error
    feature_map = prepared.feature_map
    if warm is not None:  # --init-from: tables sized for the grown vocabularies
        feature_map = warm.feature_map(feature_map)
    model = build_position_model(config.model, feature_map, config.params, cfg)
    position = build_position_method(cfg, model, model_name=config.model, params=config.params)
    if warm is not None:
        warm.load_into(model)
    outputs = model_outputs(model, feature_map, cfg.task)
    train_data = _domain_rows(load_split(prepared, "train"), feature_map, cfg.domain_filter)
    objectives = resolve_objectives(model, feature_map, cfg.task)
    check_trainable(train_data, feature_map, objectives)
    if cfg.negative_sampling_rate < 1.0:
        sampled = next(o for o in objectives if o.output == sampled_output(outputs))
        label = feature_map.labels[sampled.label]  # type: ignore[index]
        train_data = downsample_negatives(
            train_data, feature_map, label, cfg.negative_sampling_rate, cfg.seed
        )
    world_size = get_world_size()
    train = InMemoryLoader(
        train_data,
        local_batch_size(cfg.batch_size, world_size),
        shuffle=True,
        seed=cfg.seed,
        rank=get_rank(),
        world_size=world_size,
    )
    valid, test = (
        _domain_rows(load_split(prepared, name), feature_map, cfg.domain_filter)
        if name in prepared.splits
        else None
        for name in ("valid", "test")
    )
    if valid is not None:
        check_monitorable(valid, objectives, cfg.monitor)
    trainer = Trainer(
        model,
        cfg,
        run_dir,
        force_progress=force_progress,
        position=position,
        run_identity=run_identity(config, prepared),
    )
    if warm is not None:  # the run's optimizer state, per-row step counts for the tables
        trainer.optimizer = warm.optimizer(model, cfg.learning_rate)
    load_before = _load_average()
    result = trainer.fit(train, valid, test, resume=resume)
    # Timings are only comparable on a quiet machine: record how busy it was.
    machine_load = {
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_start": load_before,
        "load_average_end": _load_average(),
    }
    if not is_main_process():
        return RunResult(run_dir, config.model, model.num_parameters(), result)
    by_domain: dict[str, dict[str, float]] = {}
    if test is not None:
        # Kept for the serving consistency check: the Predictor must reproduce these.
        predictions = collect_predictions(
            model, as_eval_loader(test, cfg.eval_batch_size), cfg.device, outputs=outputs
        )
        corrected = correct_predictions(predictions, cfg.negative_sampling_rate)
        probs = corrected.probs
        atomic_write(run_dir / "test_predictions.npy", lambda p: _save_npy(p, probs))
        if "domain" in corrected.roles:  # per-domain test metrics next to the overall ones
            by_domain = slice_metrics(corrected, feature_map, "domain")
            by_domain.pop("all")
    metrics: dict[str, Any] = {
        "valid": result.best_valid,
        "test": result.test,
        **({"test_by_domain": by_domain} if test is not None and by_domain else {}),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_time_s": result.train_time_s,
        "train_samples_per_s": result.train_samples_per_s,
        "num_parameters": model.num_parameters(),
        "world_size": world_size,
        # a run resumed in another process count trained with each of them
        **({"world_sizes": trainer.world_sizes} if len(trainer.world_sizes) > 1 else {}),
        "machine_load": machine_load,
        "outputs": outputs,
    }
    write_artifact(
        run_dir,
        config=config,
        processor_dir=prepared.processor_dir,
        feature_map=feature_map,
        model=model,
        metrics=metrics,
        extra={"prepared_data": str(prepared.directory)}
        | ({"init_from": str(warm.run_dir)} if warm is not None else {}),
    )
    if warm is not None:
        warm.save(run_dir)
    return RunResult(run_dir, config.model, model.num_parameters(), result)


def predict_split(
    run_dir: str | Path,
    split: str = "test",
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    prepared: str | Path | None = None,
) -> tuple[Any, TensorData, Predictions]:
    """Score a split of the run's prepared data (or of ``prepared``, the same data moved)
    with the saved model: ``(artifact, the split's processed data, predictions)``
    (negative down-sampling corrected)."""
    art = load_artifact(run_dir)
    data_source = open_prepared_data(art, data_dir=data_dir, cache_dir=cache_dir, prepared=prepared)
    data = load_split(data_source, split)
    train_cfg = art.config.train
    outputs = model_outputs(art.model, art.feature_map, train_cfg.task)
    preds = collect_predictions(
        art.model, as_eval_loader(data, train_cfg.eval_batch_size), outputs=outputs
    )
    return art, data, correct_predictions(preds, train_cfg.negative_sampling_rate)


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, float]:
    """Re-score a split of the run's dataset with the saved model."""
    t0 = time.perf_counter()
    art, _, preds = predict_split(run_dir, split, data_dir=data_dir, cache_dir=cache_dir)
    metrics = compute_metrics(preds, art.feature_map)
    metrics["seconds"] = time.perf_counter() - t0
    return metrics
