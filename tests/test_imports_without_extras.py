"""The GPU benchmark and the training path it uses import and run without polars and
without the serving extras (fastapi, uvicorn): the GPU machine has neither."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = ("polars", "fastapi", "uvicorn")
TRAINING_PATH = (
    "adrank.config",
    "adrank.data.batches",
    "adrank.data.device_loader",
    "adrank.data.feature_map",
    "adrank.models",
    "adrank.nn",
    "adrank.tasks",
    "adrank.train",
    "adrank.train.trainer",
    "benchmarks.gpu",
    "benchmarks.gpu_accuracy",
    "benchmarks.gpu_profile",
)

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, sys

    BLOCKED = {blocked!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{{name}} is blocked (not on the GPU machine)")
            return None

    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    sys.meta_path.insert(0, Blocker())
    for module in {modules!r}:
        importlib.import_module(module)
    from benchmarks import gpu
    gpu.main(["--cells", "deepfm-8192", "--rows", "200", "--max-cardinality", "30",
              "--repeats", "1", "--epochs", "1", "--device", "cpu", "--results-dir", {out!r},
              "--variants", "reduce-overhead"])
    gpu.main(["--profile", "--profile-steps", "1", "--ablation-batch", "16", "--rows", "200",
              "--max-cardinality", "30", "--device", "cpu", "--results-dir", {out!r}])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("LOADED", loaded)
    """
)


def test_gpu_benchmark_and_training_path_need_neither_polars_nor_serving(tmp_path: Path) -> None:
    script = SCRIPT.format(blocked=BLOCKED, modules=TRAINING_PATH, out=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout
    assert (tmp_path / "gpu.json").exists() and (tmp_path / "gpu_profile.md").exists()


def test_the_blocker_does_block(tmp_path: Path) -> None:
    """The check above would pass vacuously if the blocker let polars through."""
    script = SCRIPT.format(blocked=BLOCKED, modules=("adrank.data.processor",), out=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode != 0
    assert "polars is blocked" in proc.stderr
