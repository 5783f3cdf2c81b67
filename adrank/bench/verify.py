"""Re-train one recorded benchmark row and compare it with the record.

CPU runs are deterministic per seed, so a row trained by the current code must reproduce its
test AUC and logloss to within :data:`TOLERANCE`. The re-run goes to a fresh temporary
directory (removed afterwards); the recorded run directory and ``runs.jsonl`` are only read.
:func:`record` appends the outcome to ``verified.jsonl`` (``--verify ... --record``).
"""

from __future__ import annotations

import logging
import re
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from adrank.bench.provenance import (
    Verification,
    machine_line,
    read_verifications,
    record_verification,
)
from adrank.bench.reuse import RecordedRunConflict
from adrank.bench.runner import BenchmarkRun, _git, _read_finished, code_version, read_results
from adrank.config import ConfigError, RunConfig
from adrank.data.prepare import PreparedData, prepare_dataset
from adrank.pipeline import train_run

logger = logging.getLogger(__name__)

#: Largest |new - recorded| test AUC or logloss that counts as reproduced.
TOLERANCE = 1e-6
_COMMIT = re.compile(r"\+g([0-9a-f]{4,40})(-dirty)?$")


@dataclass
class VerifyResult:
    """A recorded row next to its re-run."""

    recorded: BenchmarkRun
    test_auc: float
    test_logloss: float
    #: code version of the re-run (:func:`adrank.bench.runner.code_version`)
    code: str
    #: where the re-run's config came from
    config_source: str
    #: torch intra-op threads of the re-run (float summation order, hence the numbers,
    #: depends on it; rows do not record theirs)
    num_threads: int
    tolerance: float = TOLERANCE
    #: the machine of the re-run (:func:`adrank.bench.provenance.machine_line`)
    machine: str = ""
    #: the CPU that trained the row: its machine's, else that of a verification that
    #: re-trained it bit for bit (``verified.jsonl``); empty when unknown
    recorded_cpu: str = ""
    #: the standard deviation of the model's test AUC over its recorded seeds (``None``:
    #: fewer than two), the scale of a difference that is not a change
    seed_std: float | None = None
    #: the re-run model's parameter count (``None``: not known): another count than the
    #: row's means another model, schema or dataset, not a CPU or code difference
    num_parameters: int | None = None
    #: ``--set`` overrides given to the re-run on top of the row's config
    overrides: tuple[str, ...] = ()

    @property
    def auc_diff(self) -> float:
        return self.test_auc - self.recorded.test_auc

    @property
    def logloss_diff(self) -> float:
        return self.test_logloss - self.recorded.test_logloss

    @property
    def reproduced(self) -> bool:
        return abs(self.auc_diff) <= self.tolerance and abs(self.logloss_diff) <= self.tolerance

    @property
    def same_code(self) -> bool:
        """The row was recorded by exactly this code version (a clean checkout of it)."""
        return bool(self.recorded.code) and self.recorded.code == self.code

    def report(self) -> list[str]:
        """Lines for the user: both numbers, their differences, the code versions, a verdict."""
        row = self.recorded
        lines = [
            f"{row.model} seed {row.seed}: config {self.config_source}; "
            f"{self.num_threads} torch thread(s)",
            f"{'':14}{'recorded':>12}{'re-run':>12}{'difference':>14}",
            f"{'test AUC':14}{row.test_auc:12.6f}{self.test_auc:12.6f}{self.auc_diff:+14.2e}",
            f"{'test logloss':14}{row.test_logloss:12.6f}{self.test_logloss:12.6f}"
            f"{self.logloss_diff:+14.2e}",
            *self._code_lines(),
            *self._cpu_lines(),
        ]
        other_model = self.num_parameters not in (None, row.num_parameters)
        if other_model:
            lines.append(
                f"parameters: the re-run's model has {self.num_parameters:,}, the row's "
                f"{row.num_parameters:,}"
            )
        if self.reproduced:
            lines.append(f"reproduced: both differences are within {self.tolerance:g}")
        elif other_model:
            lines.append(
                "NOT reproduced: the re-run trained another model than the row (another "
                "parameter count): is --dataset the row's, and are the config and --set "
                "the row's?"
            )
        elif self.overrides:
            lines.append(
                f"NOT reproduced with --set {' '.join(self.overrides)}, which the row was "
                "not trained with: the difference may come from them; verify without --set"
            )
        elif self.other_cpu:
            noise = f"a difference above {self.tolerance:g}"
            if self.seed_std:
                noise = (
                    f"the AUC difference is {abs(self.auc_diff) / self.seed_std:.2g}x the "
                    "model's spread over seeds"
                )
            lines.append(
                f"NOT reproduced bit for bit on this CPU: {noise}; to check the row itself, "
                f"re-run it on its CPU ({self.recorded_cpu})"
            )
        elif self.same_code:
            lines.append(
                f"NOT reproduced: same code version, yet a difference above {self.tolerance:g}; "
                "was the row trained with another thread count, torch version or CPU?"
            )
        else:
            lines.append(
                f"NOT reproduced (difference above {self.tolerance:g}): the row is stale for "
                "the current code (or was trained with another thread count); re-run it"
            )
        return lines

    @property
    def this_cpu(self) -> str:
        return _cpu_of(self.machine)

    @property
    def other_cpu(self) -> bool:
        """The row was trained on another CPU model than this re-run (as far as known)."""
        return bool(self.recorded_cpu and self.this_cpu) and self.recorded_cpu != self.this_cpu

    def _cpu_lines(self) -> list[str]:
        if not self.other_cpu:
            return []
        spread = ""
        if self.seed_std is not None:
            spread = f" (test AUC std over its seeds: {self.seed_std:.6f})"
        return [
            f"CPU: the row was trained on {self.recorded_cpu}, this re-run on {self.this_cpu}. "
            "CPU training repeats bit for bit on one kind of CPU only (other kernels sum in "
            "another order and training amplifies the last bits), so expect a difference "
            f"of the size of the model's spread over seeds{spread}"
        ]

    def _code_lines(self) -> list[str]:
        recorded = self.recorded.code
        if not recorded:
            return [
                "code version: the row records none (recorded before runs carried one), so "
                f"it may come from older training code; current is {self.code}"
            ]
        if self.same_code:
            return [f"code version: {recorded}, the same as the current code"]
        lines = [
            f"code version: the row was recorded by {recorded}, the current code is {self.code}"
        ]
        if self.code.endswith("-dirty"):
            lines.append("  the current checkout has uncommitted changes under adrank/ or configs/")
        changed = _training_code_changes(recorded)
        if changed is not None:
            lines.append(
                f"  adrank/ and configs/ differ in {len(changed)} file(s) between the "
                "recorded commit and HEAD"
                if changed
                else "  adrank/ and configs/ are identical at the recorded commit and HEAD"
            )
        return lines


def _training_code_changes(recorded_code: str) -> list[str] | None:
    """Files under adrank/ and configs/ changed between the recorded commit and HEAD, or
    None when that cannot be told (no commit in the version, no git checkout)."""
    match = _COMMIT.search(recorded_code)
    if match is None:
        return None
    root = Path(__file__).resolve().parent.parent.parent
    try:
        out = _git(root, "diff", "--name-only", match.group(1), "HEAD", "--", "adrank", "configs")
    except (OSError, subprocess.SubprocessError):
        return None
    return [line for line in out.splitlines() if line]


def find_row(results_path: Path, model: str, seed: int) -> BenchmarkRun:
    """The recorded row for (model, seed); a ``KeyError`` naming what is there otherwise."""
    if not results_path.exists():
        raise FileNotFoundError(f"no recorded runs: {results_path} does not exist")
    rows = read_results(results_path)
    row = rows.get((model, seed))
    if row is None:
        seeds = sorted(s for m, s in rows if m == model)
        have = f"seeds {seeds}" if seeds else f"no rows for {model!r}"
        raise KeyError(f"{results_path} has no row for {model} seed {seed} ({have})")
    return row


def row_config(
    row: BenchmarkRun, dataset: str, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[RunConfig, str]:
    """The config that trained ``row``: the recorded run directory's ``config.yaml`` when it
    is still there, else the shipped config for (dataset, model) with the row's seed, as
    ``adrank benchmark`` builds it; then ``overrides``. Also returns where it came from."""
    recorded = Path(row.run_dir) / "config.yaml"
    if row.run_dir and recorded.is_file():
        try:
            cfg = RunConfig.load(recorded).with_overrides(list(overrides))
            cfg.dataset = dataset
            return cfg, str(recorded)
        except ConfigError as exc:
            logger.warning("cannot reuse %s (%s); using the shipped config", recorded, exc)
    from adrank.bench.runner import spec_config

    applied = list(dict.fromkeys([*row.overrides, *overrides, f"train.seed={row.seed}"]))
    cfg = spec_config(dataset, row.model, applied)
    return cfg, f"shipped config for {dataset}/{row.model} with {' '.join(applied)}"


def verify_run(
    dataset: str,
    model: str,
    seed: int,
    results_path: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    prepared: PreparedData | None = None,
    force_progress: bool = False,
) -> VerifyResult:
    """Re-train the row for (model, seed) of ``results_path`` in a temporary directory."""
    row = find_row(Path(results_path), model, seed)
    if row.dataset and row.dataset != dataset:
        raise RecordedRunConflict(
            f"{results_path}: {model} seed {seed} was trained on {row.dataset}, not "
            f"{dataset}: give --dataset {row.dataset}"
        )
    cfg, source = row_config(row, dataset, overrides)
    if prepared is None:
        prepared = prepare_dataset(dataset, data_dir=data_dir, cache_dir=cache_dir)
    code = code_version()
    threads = cfg.train.num_threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix=f"adrank-verify-{model}-{seed}-") as tmp:
        run_dir = Path(tmp) / "run"
        logger.info("verify: re-training %s seed %d in %s", model, seed, run_dir)
        train_run(cfg, run_dir, prepared=prepared, force_progress=force_progress)
        new = _read_finished(run_dir, model, seed)
    if new is None:
        raise RuntimeError(f"the re-run of {model} seed {seed} finished without a manifest")
    return VerifyResult(
        row,
        new.test_auc,
        new.test_logloss,
        code,
        source,
        threads,
        machine=machine_line(),
        recorded_cpu=_recorded_cpu(row, Path(results_path)),
        seed_std=_seed_std(Path(results_path), model),
        num_parameters=new.num_parameters,
        overrides=tuple(o for o in overrides if o not in row.overrides),
    )


def _cpu_of(machine: str) -> str:
    """The CPU model of a :func:`~adrank.bench.provenance.machine_line` ("CPU, N cores, ...")."""
    return machine.split(",", 1)[0].strip()


def _recorded_cpu(row: BenchmarkRun, results_path: Path) -> str:
    """The CPU model that trained ``row`` (see :attr:`VerifyResult.recorded_cpu`)."""
    if row.machine:
        return _cpu_of(row.machine)
    for v in reversed(read_verifications(results_path.parent)):
        if (v.model, v.seed, v.reproduced) == (row.model, row.seed, True) and v.machine:
            return _cpu_of(v.machine)
    return ""


def _seed_std(results_path: Path, model: str) -> float | None:
    aucs = [r.test_auc for (m, _), r in read_results(results_path).items() if m == model]
    return statistics.stdev(aucs) if len(aucs) > 1 else None


def record(result: VerifyResult, results_path: str | Path) -> Path:
    """Append ``result`` to ``verified.jsonl`` beside ``results_path`` (see
    :mod:`adrank.bench.provenance`); its path."""
    row = result.recorded
    return record_verification(
        Path(results_path),
        Verification(
            model=row.model,
            seed=row.seed,
            reproduced=result.reproduced,
            code=result.code,
            recorded_code=row.code,
            machine=result.machine,
            test_auc=result.test_auc,
            auc_diff=result.auc_diff,
            logloss_diff=result.logloss_diff,
        ),
    )
