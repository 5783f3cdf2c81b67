"""Run models x seeds under the BARS protocol and collect one row per run.

Runs are resumable: a run directory that already has a manifest is read back instead of
retrained, so a long leaderboard can be built over several sessions.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from adrank.artifact import ArtifactError, read_manifest
from adrank.config import resolve_run_config
from adrank.data.prepare import prepare_dataset
from adrank.pipeline import train_run

logger = logging.getLogger(__name__)

DEFAULT_SEEDS = (2021, 2022, 2023)


@dataclass
class BenchmarkRun:
    """One (model, seed) result."""

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


def _read_finished(run_dir: Path, model: str, seed: int, code: str = "") -> BenchmarkRun | None:
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
    )


def read_results(path: Path) -> dict[tuple[str, int], BenchmarkRun]:
    """Finished runs recorded in a ``runs.jsonl`` (the last line for a (model, seed) wins)."""
    out: dict[tuple[str, int], BenchmarkRun] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = BenchmarkRun(**json.loads(line))
                out[(row.model, row.seed)] = row
    return out


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
    keep_going: bool = True,
    failures: list[tuple[str, int, str]] | None = None,
) -> list[BenchmarkRun]:
    """Train every model with every seed (tuned config per model) and return the rows.

    Each finished run is appended to ``output_dir/runs.jsonl``, the source of truth for
    resuming: (model, seed) pairs recorded there are not retrained. Run directories
    (weights, checkpoints) go to ``output_dir/runs/`` and an interrupted run resumes from
    its last epoch checkpoint. With ``keep_going`` a failing run is logged (and appended
    to ``failures``) and the benchmark moves on.
    """
    failures = failures if failures is not None else []
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results_path = output_dir / "runs.jsonl"
    done = read_results(results_path)
    prepared = None
    rows: list[BenchmarkRun] = []
    for model in models:
        for seed in seeds:
            row = done.get((model, seed))
            if row is not None:
                logger.info(
                    "benchmark: %s seed %d already recorded in %s", model, seed, results_path
                )
            else:
                run_dir = output_dir / "runs" / f"{model}-seed{seed}"
                row = _read_finished(run_dir, model, seed)
                if row is None:
                    if prepared is None:
                        prepared = prepare_dataset(dataset, data_dir=data_dir, cache_dir=cache_dir)
                    cfg = resolve_run_config(
                        dataset, model, overrides=[*overrides, f"train.seed={seed}"]
                    )
                    logger.info("benchmark: %s seed %d -> %s", model, seed, run_dir)
                    code = code_version()  # at the start: the code that trains the run
                    train_run(
                        cfg, run_dir, prepared=prepared, resume=True, force_progress=force_progress
                    )
                    row = _read_finished(run_dir, model, seed, code)
                    if row is None:
                        raise RuntimeError(f"run {run_dir} finished without a manifest")
                with open(results_path, "a") as fh:
                    fh.write(json.dumps(asdict(row)) + "\n")
            rows.append(row)
            if on_run:
                on_run(row)
    return rows
