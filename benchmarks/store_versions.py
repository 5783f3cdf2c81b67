"""The versions ``python -m benchmarks.store_swap`` publishes: two small frappe DeepFMs (the
second trained on more rows, so its vocabularies are larger), copies of them with weights
moved by noise (a synthetic stand-in for a retraining, labelled so), and a broken copy
(``model.pt`` cut in half)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def train_frappe_pair(work: Path, data_dir: str | None, seed: int = 7) -> tuple[Path, Path]:
    """Two small DeepFMs on frappe, one epoch at one thread: ``base`` on the first 40% of
    the training rows, ``grown`` on all of them (so its vocabularies are larger)."""
    import torch

    from adrank.config import RunConfig, TrainConfig
    from adrank.data.datasets import get_dataset, resolve_data_dir
    from adrank.data.prepare import prepare_frames
    from adrank.pipeline import train_run

    torch.set_num_threads(1)
    dataset = get_dataset("frappe")
    splits = dataset.build_splits(resolve_data_dir(data_dir))
    runs = []
    for name, share in (("base", 0.4), ("grown", 1.0)):
        if (work / name / "manifest.json").is_file():
            runs.append(work / name)
            continue
        frames = dict(splits, train=splits["train"].head(int(len(splits["train"]) * share)))
        prepared = prepare_frames(dataset.schema(), frames, work / f"prepared-{name}")
        config = RunConfig(
            model="deepfm",
            dataset="frappe",
            params={"embedding_dim": 10, "hidden_units": [64, 64], "batch_norm": True},
            train=TrainConfig(max_epochs=1, progress=False, seed=seed, num_threads=1),
        )
        train_run(config, work / name, prepared=prepared)
        runs.append(work / name)
    return runs[0], runs[1]


def _copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("checkpoint.pt", "best.pt"))
    return dst


def perturbed(run: Path, dst: Path, seed: int) -> Path:
    """A copy of ``run`` whose float weights moved by N(0, 1e-3) (a synthetic retraining)."""
    import torch

    _copy_run(run, dst)
    state = torch.load(dst / "model.pt", weights_only=True)
    gen = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if value.is_floating_point():
            state[key] = value + 1e-3 * torch.randn(value.shape, generator=gen)
    torch.save(state, dst / "model.pt")
    return dst


def broken(run: Path, dst: Path) -> Path:
    """A copy of ``run`` whose ``model.pt`` was cut in half (a corrupt upload)."""
    _copy_run(run, dst)
    data = (dst / "model.pt").read_bytes()
    (dst / "model.pt").write_bytes(data[: len(data) // 2])
    return dst


def plan_versions(
    base: Path, grown: Path, work: Path, count: int, broken_at: int, grown_at: int
) -> list[dict[str, Any]]:
    """Version 1..count: what each is, its run directory, and whether it should serve."""
    plan: list[dict[str, Any]] = []
    lineage = base
    for version in range(1, count + 1):
        if version == 1:
            path, kind = _copy_run(base, work / "v1"), "base"
        elif version == broken_at:
            path, kind = broken(lineage, work / f"v{version}"), "broken (model.pt cut in half)"
        elif version == grown_at:
            path, kind = _copy_run(grown, work / f"v{version}"), "grown vocabulary (retrained)"
            lineage = grown
        else:
            path = perturbed(lineage, work / f"v{version}", seed=version)
            kind = "synthetic retraining (weights + N(0, 1e-3))"
        plan.append(
            {
                "version": version,
                "kind": kind,
                "good": version != broken_at,
                "dir": path,
                "vocabulary": vocabulary_sizes(path),
            }
        )
    return plan


def vocabulary_sizes(run: Path) -> dict[str, int]:
    """Each categorical field's vocabulary size (ids, padding and OOV included)."""
    fields = json.loads((run / "feature_map.json").read_text())["fields"]
    return {f["name"]: f["vocab_size"] for f in fields if f.get("vocab_size")}
