"""Typed run configuration and YAML loading. Unknown keys are errors that name the key.

A run config file (``configs/models/<dataset>/<model>.yaml``) looks like::

    model: deepfm
    params:            # keyword arguments of the model class (validated by the registry)
      embedding_dim: 10
      hidden_units: [400, 400, 400]
      net_dropout: 0.2
      batch_norm: true
    train:             # TrainConfig fields
      embedding_regularizer: 0.05
      batch_size: 4096

``--set train.batch_size=1024`` / ``--set params.net_dropout=0.1`` overrides use the same
dotted paths; values are parsed as YAML scalars (never ``eval``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

#: Rows per forward pass when scoring (validation, test, batch prediction, export parity).
#: Small batches keep the activations in cache: scoring 57,722 frappe-shaped rows on 2 CPU
#: threads (``python -m benchmarks kernels``) took DeepFM 561 / 281 / 283 / 287 ms and
#: AutoInt 9.9 / 9.2 / 9.3 / 5.7 s at 65,536 / 16,384 / 8,192 / 4,096 rows per batch.
SCORE_BATCH_SIZE = 4096


class ConfigError(ValueError):
    """A config file or override is invalid."""


@dataclass
class TrainConfig:
    """Everything the trainer needs besides the model and data (BARS protocol defaults)."""

    batch_size: int = 4096
    eval_batch_size: int = SCORE_BATCH_SIZE
    learning_rate: float = 1e-3
    embedding_regularizer: float = 0.0
    embedding_regularizer_scope: Literal["table", "batch"] = "table"
    net_regularizer: float = 0.0
    max_epochs: int = 100
    #: stop after this many epochs in a row without a better validation metric (0 acts as 1)
    patience: int = 2
    #: the validation metric early stopping follows: a name (``auc``, ``logloss``,
    #: ``click_auc``, ``pctcvr_auc``, ...) or a weighted mean of several
    #: (``{click_auc: 0.5, pctcvr_auc: 0.5}``); ``auc`` of a multi-task run is the mean
    #: over its tasks. Names ending in ``logloss``/``ece``/``mse`` are minimized.
    monitor: str | dict[str, float] = "auc"
    #: the task a single-task model learns on a multi-task dataset (``--set task=NAME``)
    task: str | None = None
    #: keep every positive and this fraction of the negatives (of the ``pctr`` task, or the
    #: single task) in the training split; predictions are corrected back to the true base
    #: rate, p = q / (q + (1 - q) / rate). The rate is saved with the run.
    negative_sampling_rate: float = 1.0
    #: the learning rate is multiplied by this (in (0, 1]) after every epoch without
    #: improvement, down to ``min_lr`` (never raised to it)
    lr_decay_factor: float = 0.1
    min_lr: float = 1e-6
    #: clip the gradients' global L2 norm to this (> 0); ``None``: no clipping
    grad_clip_norm: float | None = 10.0
    #: sparse embedding gradients + lazy Adam (``SparseAdam``) for the embedding tables:
    #: a step updates only the rows its batch used. For large (hashed) vocabularies; needs
    #: embedding_regularizer=0 or embedding_regularizer_scope="batch". Single process.
    sparse_embeddings: bool = False
    seed: int = 2021
    deterministic: bool = False
    device: str = "cpu"
    amp: bool = False
    #: torch's intra-op threads; ``None`` or 0: torch's default
    num_threads: int | None = None
    progress: bool = True
    # ---- GPU training (issue 18); every one of these leaves CPU training unchanged ----
    #: on a CUDA device, a training/evaluation split whose tensors fit in this share of the
    #: device's free memory is moved there once and shuffled and sliced there
    #: (:class:`adrank.data.device_loader.DeviceLoader`); a larger one is served from pinned
    #: host memory, copied on a side stream one batch ahead. 0 keeps every split on the host.
    device_data_fraction: float = 0.5
    #: Adam's kernel: ``auto`` (the fused one where torch has it, else the default),
    #: ``fused``, ``foreach`` or ``single_tensor``
    adam_implementation: Literal["auto", "fused", "foreach", "single_tensor"] = "auto"
    #: TF32 tensor cores for float32 matmuls on CUDA (about 10 mantissa bits per product):
    #: ``auto`` (on when training on CUDA, off elsewhere), ``true`` or ``false``; ``true``
    #: is ignored (with a warning) on CPU. Measured on an H200 (docs/gpu.md): 1.35x DeepFM's
    #: samples/s at batch 65,536.
    tf32: bool | Literal["auto"] = "auto"
    #: ``torch.compile`` the model's training forward on CUDA: ``auto`` (``default`` mode on
    #: one CUDA device, falling back to eager with a warning if compilation fails; off on
    #: CPU and in distributed runs), ``false``, ``true`` (= ``default``),
    #: ``reduce-overhead`` (CUDA graphs) or ``max-autotune``; an explicit mode is ignored
    #: (with a warning) on CPU and in distributed runs. Measured on an H200: 1.71x.
    compile: bool | str = "auto"
    #: record the whole training step (forward, backward, clipping, Adam) once as a CUDA
    #: graph and replay it for every batch of the same size: one launch per step instead
    #: of hundreds, for small batches where the host bounds the step
    #: (:mod:`adrank.train.graph_step`). One CUDA device, no fp16 AMP, position methods,
    #: distillation or sparse embeddings (``true`` is ignored there, with a warning);
    #: ``auto`` (the default): on wherever it applies, silently off elsewhere (CPU
    #: included). Measured on an H200 (session 16): 1.9-8.6x the plain loop.
    cuda_graph: bool | Literal["auto"] = "auto"
    #: the dropout mask on CPU: ``torch`` (``F.dropout``, what the published leaderboards
    #: were trained with) or ``fast`` (15-bit slices of int64 random words, a different
    #: random stream; faster, A/B-tested in ``benchmarks/results/frappe/dropout_ab.md``;
    #: see :mod:`adrank.nn.dropout`). On CUDA both are ``F.dropout``.
    dropout_kernel: Literal["torch", "fast"] = "torch"
    # ---- position bias (issue 15; adrank.debias.position, docs/debiasing.md) ----
    #: how clicks logged at display positions are learned: ``none`` (position-blind),
    #: ``feature`` (position as an input field, fixed at ``position_serving`` when scoring),
    #: ``pal`` (position tower x model), ``kd`` (position-aware teacher -> position-free
    #: student), ``ips`` (BCE weighted by the ``examination`` role) or ``dla`` (dual learning
    #: of examination and relevance). All but ``none`` need a ``position`` role (``ips``:
    #: an ``examination`` role); all but ``feature`` serve a position-free model.
    position_method: Literal["none", "feature", "pal", "kd", "ips", "dla"] = "none"
    #: positions are clipped to [1, position_max] (the position tower's / field's size)
    position_max: int = 10
    #: the position ``feature`` scores at (validation, test, serving) and at which the
    #: ``kd`` teacher's soft labels are taken; 1 = the top slot
    position_serving: int = 1
    #: IPS/DLA: propensities (and DLA's relevance estimates) are clipped below at this
    ips_clip: float = 0.05
    #: PAL/DLA: the examination tower learns at this multiple of learning_rate (its few
    #: parameters get far fewer useful updates per epoch than the model's)
    position_lr_scale: float = 10.0
    #: KD: the weight of the teacher's soft label in the student's loss (1 - it: the clicks)
    kd_alpha: float = 0.8
    #: KD: the teacher's registered model name (default: the student's model and params)
    kd_teacher: str | None = None
    # ---- knowledge distillation (issue 15; adrank.debias.distill, docs/debiasing.md) ----
    #: distil a frozen teacher run into the model: ``none``, ``vanilla`` ((1 - distill_alpha)
    #: x BCE(labels) + distill_alpha x T^2 x BCE(teacher's probability at temperature T)) or
    #: ``trilateral`` (a per-sample ratio learned from the student/teacher/label geometry)
    distill: Literal["none", "vanilla", "trilateral"] = "none"
    #: the teacher: a finished run directory trained on the same dataset preparation
    kd_teacher_run: str | None = None
    #: vanilla KD's ratio of the teacher's soft label; trilateral KD's initial ratio
    distill_alpha: float = 0.5
    #: the temperature T of the soft labels (1: the teacher's probabilities as they are)
    distill_temperature: float = 1.0
    #: trilateral KD: Adam learning rate of the ratio network's outer (validation) steps
    distill_meta_lr: float = 1e-2
    #: trilateral KD: one outer step of the ratio network every this many training steps
    distill_meta_every: int = 1
    #: train, validate and test on the rows of this one ``domain`` role value only (a
    #: per-domain baseline, see docs/multidomain.md); ``None``: every domain (pooled)
    domain_filter: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("batch_size and eval_batch_size must be >= 1")
        if not 0 < self.learning_rate < math.inf:
            raise ConfigError(f"learning_rate must be > 0 and finite, got {self.learning_rate}")
        for name in ("embedding_regularizer", "net_regularizer", "min_lr"):
            if not 0 <= getattr(self, name) < math.inf:  # < 0 would reward large weights
                raise ConfigError(f"{name} must be >= 0 and finite, got {getattr(self, name)}")
        if not 0 < self.lr_decay_factor <= 1:
            raise ConfigError(
                f"lr_decay_factor must be in (0, 1] (1: no decay), got {self.lr_decay_factor}"
            )
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            # 0 would stop every update and a negative norm flips the gradients' sign
            raise ConfigError(
                f"grad_clip_norm must be > 0, or null for no clipping, got {self.grad_clip_norm}"
            )
        if self.num_threads is not None and self.num_threads < 0:
            raise ConfigError(
                f"num_threads must be >= 1, or 0/null for torch's default, got {self.num_threads}"
            )
        if self.embedding_regularizer_scope not in ("table", "batch"):
            raise ConfigError("embedding_regularizer_scope must be 'table' or 'batch'")
        monitor_direction(self.monitor)
        if not 0.0 < self.negative_sampling_rate <= 1.0:
            raise ConfigError(
                f"negative_sampling_rate must be in (0, 1], got {self.negative_sampling_rate}"
            )
        if self.domain_filter is not None and not isinstance(self.domain_filter, str):
            raise ConfigError(
                f"domain_filter must be a domain name (a string), got {self.domain_filter!r}; "
                "quote a value YAML reads as a number: --set 'train.domain_filter=\"2024\"'"
            )
        if self.task is not None and (not isinstance(self.task, str) or not self.task):
            raise ConfigError(f"task must be a task name, got {self.task!r}")
        if self.max_epochs < 1:
            raise ConfigError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0 (0 acts as 1), got {self.patience}")
        if not 0.0 <= self.device_data_fraction <= 1.0:
            raise ConfigError(
                f"device_data_fraction must be in [0, 1], got {self.device_data_fraction}"
            )
        if self.adam_implementation not in ADAM_IMPLEMENTATIONS:
            raise ConfigError(
                f"adam_implementation must be one of {list(ADAM_IMPLEMENTATIONS)}, got "
                f"{self.adam_implementation!r}"
            )
        if self.dropout_kernel not in DROPOUT_KERNELS:
            raise ConfigError(
                f"dropout_kernel must be one of {list(DROPOUT_KERNELS)}, got "
                f"{self.dropout_kernel!r}"
            )
        if self.position_method not in POSITION_METHOD_NAMES:
            raise ConfigError(
                f"position_method must be one of {list(POSITION_METHOD_NAMES)}, got "
                f"{self.position_method!r}"
            )
        if self.position_max < 1 or not 1 <= self.position_serving <= self.position_max:
            raise ConfigError(
                f"need position_max >= 1 and 1 <= position_serving <= position_max, got "
                f"position_max={self.position_max}, position_serving={self.position_serving}"
            )
        if not 0.0 < self.ips_clip <= 1.0:
            raise ConfigError(f"ips_clip must be in (0, 1], got {self.ips_clip}")
        if self.position_lr_scale <= 0:
            raise ConfigError(f"position_lr_scale must be > 0, got {self.position_lr_scale}")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ConfigError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}")
        if self.distill not in DISTILL_NAMES:
            raise ConfigError(f"distill must be one of {list(DISTILL_NAMES)}, got {self.distill!r}")
        if self.distill != "none" and not self.kd_teacher_run:
            raise ConfigError(f"distill={self.distill!r} needs train.kd_teacher_run=RUN_DIR")
        if self.distill != "none" and self.position_method != "none":
            raise ConfigError(
                f"distill={self.distill!r} and position_method={self.position_method!r} are "
                "both training strategies; use one at a time"
            )
        if not 0.0 <= self.distill_alpha <= 1.0 or self.distill_temperature <= 0:
            raise ConfigError(
                f"need 0 <= distill_alpha <= 1 and distill_temperature > 0, got "
                f"{self.distill_alpha}, {self.distill_temperature}"
            )
        if self.distill_meta_lr <= 0 or self.distill_meta_every < 1:
            raise ConfigError("need distill_meta_lr > 0 and distill_meta_every >= 1")
        if self.compile not in (True, False, "auto", *COMPILE_MODES):
            raise ConfigError(
                f"compile must be true, false, 'auto' or one of {list(COMPILE_MODES)}, got "
                f"{self.compile!r}"
            )
        if not (isinstance(self.cuda_graph, bool) or self.cuda_graph == "auto"):
            raise ConfigError(f"cuda_graph must be true, false or 'auto', got {self.cuda_graph!r}")
        if self.tf32 not in (True, False, "auto"):
            raise ConfigError(f"tf32 must be true, false or 'auto', got {self.tf32!r}")

    @property
    def compile_mode(self) -> str | None:
        """The explicitly asked ``torch.compile`` mode, or ``None`` when compilation is off
        or ``auto`` (see :meth:`resolved_compile_mode`)."""
        if self.compile is True:
            return "default"
        return None if self.compile in (False, "off", "auto") else str(self.compile)

    def resolved_compile_mode(self, device_type: str, distributed: bool) -> str | None:
        """The mode training on ``device_type`` uses: ``auto`` is ``default`` on one CUDA
        device and off elsewhere; an explicit mode is returned as asked."""
        if self.compile == "auto":
            return "default" if device_type == "cuda" and not distributed else None
        return self.compile_mode

    def resolved_tf32(self, device_type: str) -> bool:
        """Whether TF32 matmuls are on when training on ``device_type`` (CUDA only)."""
        return device_type == "cuda" and self.tf32 in (True, "auto")


#: values of :attr:`TrainConfig.position_method`
POSITION_METHOD_NAMES = ("none", "feature", "pal", "kd", "ips", "dla")
#: values of :attr:`TrainConfig.distill`
DISTILL_NAMES = ("none", "vanilla", "trilateral")
#: values of :attr:`TrainConfig.adam_implementation`
ADAM_IMPLEMENTATIONS = ("auto", "fused", "foreach", "single_tensor")
#: as adrank.nn.dropout.DROPOUT_KERNELS (config does not import torch)
DROPOUT_KERNELS = ("torch", "fast")
#: string values of :attr:`TrainConfig.compile` (``off`` = false)
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


_MINIMIZED_SUFFIXES = ("logloss", "ece", "mse")


def monitor_direction(monitor: str | dict[str, float]) -> bool:
    """``True`` if higher is better for ``monitor``; :class:`ConfigError` if it is malformed
    or mixes metrics to maximize with metrics to minimize."""
    names = [monitor] if isinstance(monitor, str) else monitor
    if not isinstance(monitor, (str, dict)) or not names:
        raise ConfigError(f"monitor must be a metric name or a mapping of them, got {monitor!r}")
    if isinstance(monitor, dict):
        for key, weight in monitor.items():
            if not isinstance(key, str) or isinstance(weight, bool):
                raise ConfigError(f"monitor: {key!r}: {weight!r} is not 'metric: weight'")
            if not isinstance(weight, (int, float)) or weight <= 0:
                raise ConfigError(f"monitor weight of {key!r} must be > 0, got {weight!r}")
    higher = {not str(n).endswith(_MINIMIZED_SUFFIXES) for n in names}
    if len(higher) > 1:
        raise ConfigError(f"monitor {monitor!r} mixes metrics to maximize and to minimize")
    return higher.pop()


def monitor_names(monitor: str | dict[str, float]) -> list[str]:
    """The metric names ``monitor`` follows (one, or the keys of a weighted mean)."""
    return [monitor] if isinstance(monitor, str) else list(monitor)


def monitor_value(logs: dict[str, Any], monitor: str | dict[str, float], prefix: str = "val_"):
    """The monitored value from a metrics line (``None`` if a metric is missing)."""
    if isinstance(monitor, str):
        return logs.get(f"{prefix}{monitor}")
    values = [logs.get(f"{prefix}{name}") for name in monitor]
    if any(v is None for v in values):
        return None
    total = sum(monitor.values())
    return sum(w * v for w, v in zip(monitor.values(), values, strict=True)) / total


@dataclass
class RunConfig:
    """Model name, model hyperparameters and training settings for one run.

    ``notes`` is free text about the config (why it departs from a reference setting, what
    tuning found); the benchmark prints it under the leaderboard."""

    model: str
    params: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: str | None = None
    notes: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "params": dict(self.params),
            "train": dataclasses.asdict(self.train),
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> RunConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        allowed = {"model", "params", "train", "dataset", "notes", "task"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        if "model" not in data:
            raise ConfigError(f"{where}: missing required key 'model'")
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: 'params' must be a mapping")
        notes = data.get("notes")
        if notes is not None and not isinstance(notes, str):
            raise ConfigError(f"{where}: 'notes' must be text, got {type(notes).__name__}")
        train = dict(data.get("train") or {})
        if data.get("task") is not None:  # `task:` at the top level is train.task
            train["task"] = data["task"]
        return cls(
            model=str(data["model"]),
            params=dict(params),
            train=train_config_from_dict(train, where=f"{where}: train"),
            dataset=data.get("dataset"),
            notes=" ".join(notes.split()) if notes else None,
        )

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse {path}: {exc}") from exc
        return cls.from_dict(data, where=str(path))

    def with_overrides(self, overrides: list[str]) -> RunConfig:
        """Apply ``key=value`` overrides: ``model=...``, ``params.X=...``, ``train.X=...``."""
        data = self.to_dict()
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value")
            key, raw = item.split("=", 1)
            try:
                value = yaml.safe_load(raw) if raw else None
            except yaml.YAMLError as exc:
                reason = " ".join(str(exc).split())
                raise ConfigError(
                    f"override {item!r}: the value is not valid YAML ({reason}); quote "
                    "text, write lists as [a, b]"
                ) from exc
            parts = key.strip().split(".")
            if len(parts) == 1 and parts[0] in ("model", "dataset"):
                data[parts[0]] = value
            elif len(parts) == 1 and parts[0] == "task":
                data["train"]["task"] = value
            elif len(parts) == 2 and parts[0] in ("params", "train"):
                if parts[0] == "train" and parts[1] not in data["train"]:
                    maybe = _did_you_mean([parts[1]], data["train"])
                    raise ConfigError(
                        f"unknown train setting {parts[1]!r}{maybe}; valid: {sorted(data['train'])}"
                    )
                data[parts[0]][parts[1]] = value
            else:
                raise ConfigError(
                    f"override key {key!r} must be 'model', 'dataset', 'task', 'params.NAME' "
                    "or 'train.NAME'"
                )
        return RunConfig.from_dict(data, where="overrides")


def train_config_from_dict(data: dict[str, Any], where: str = "train") -> TrainConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping")
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}{_did_you_mean(unknown, valid)}; "
            f"valid: {sorted(valid)}"
        )
    hints = get_type_hints(TrainConfig)
    declared = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    data = dict(data)
    for name, value in data.items():
        if isinstance(value, str) and float in _members(hints[name]):
            data[name] = value = _yaml_float(value)  # YAML 1.1 reads `1e-3` as a string
        if not _has_type(value, hints[name]):
            hint = ""
            if str in _members(hints[name]) and isinstance(value, (bool, int, float)):
                hint = f"; quote a value YAML reads otherwise: --set 'train.{name}=\"{value}\"'"
            if type(value) is float and math.isnan(value):
                raise ConfigError(f"{where}: {name} must be a finite number, got nan")
            raise ConfigError(
                f"{where}: {name} must be {declared[name]}, got {value!r} "
                f"({type(value).__name__}){hint}"
            )
    try:
        return TrainConfig(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _did_you_mean(unknown: list[str], valid: Any) -> str:
    """`` (did you mean 'max_epochs'?)`` for the closest valid name of each unknown one."""
    close = [m[0] for u in unknown if (m := difflib.get_close_matches(u, list(valid), n=1))]
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _members(hint: Any) -> tuple[Any, ...]:
    return get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)


def _yaml_float(text: str) -> float | str:
    """``text`` as a float if it spells one (``1e-3``, which YAML 1.1 leaves a string), else
    ``text`` unchanged."""
    try:
        return float(text)
    except ValueError:
        return text


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a config value read from YAML fits a :class:`TrainConfig` annotation (an int
    is a float; a bool is no number; ``Literal`` choices are checked by the config itself,
    which names them)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_has_type(value, arg) for arg in get_args(hint))
    if hint is Any or origin is Literal:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int
    if hint is float:  # NaN compares false with every bound the config checks
        return type(value) is int or (type(value) is float and not math.isnan(value))
    if hint is str:
        return isinstance(value, str)
    if origin is not None:  # dict[...], list[...], tuple[...]
        return isinstance(value, origin)
    return True


def config_root() -> Path:
    """Directory of the shipped YAML configs: ``$ADRANK_CONFIG_DIR`` or the repo's ``configs/``."""
    import os

    env = os.environ.get("ADRANK_CONFIG_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "configs"


def model_config_path(dataset: str, model: str) -> Path | None:
    """``configs/models/<dataset>/<model>.yaml`` if it exists."""
    path = config_root() / "models" / dataset / f"{model.lower()}.yaml"
    return path if path.exists() else None


def resolve_run_config(
    dataset: str, model: str, config_file: str | Path | None = None, overrides: list[str] = ()
) -> RunConfig:
    """The run config for ``model`` on ``dataset``: an explicit file, else the tuned config
    shipped for that dataset, else the model's defaults; then ``overrides``."""
    if config_file is not None:
        cfg = RunConfig.load(config_file)
    elif (path := model_config_path(dataset, model)) is not None:
        cfg = RunConfig.load(path)
    else:
        cfg = RunConfig(model=model)
    if cfg.model.lower() != model.lower():
        raise ConfigError(f"config is for model {cfg.model!r}, but --model is {model!r}")
    cfg.dataset = dataset
    out = cfg.with_overrides(list(overrides))
    # the config was chosen for (dataset, model): an override of either would train one
    # model or dataset with another's tuned config
    if out.model.lower() != model.lower():
        raise ConfigError(
            f"--set model={out.model} conflicts with the model {model!r} this config is for; "
            "choose the model with --model"
        )
    if out.dataset != dataset:
        raise ConfigError(
            f"--set dataset={out.dataset} conflicts with the dataset {dataset!r} this config "
            "is for; choose the dataset with --dataset"
        )
    return out
