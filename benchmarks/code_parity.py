"""Do two versions of adrank train bit-identical models? (``python -m benchmarks.code_parity``)

Trains the same short run (default: DeepFM, 2 epochs, seed 2021 on ``frappe``) with the
adrank of two source trees, each in its own process, and compares the test predictions
(``test_predictions.npy``) bit for bit. Used to show that a refactor leaves training
unchanged, e.g. format v2 against the commit it started from::

    git worktree add /tmp/base ddec7fe
    python -m benchmarks.code_parity --base /tmp/base --head . --output /tmp/parity

Exit status 0 when the predictions are identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def train(root: Path, run_dir: Path, args: argparse.Namespace) -> np.ndarray:
    """Train with the adrank found under ``root``; return its test predictions."""
    if not (run_dir / "test_predictions.npy").exists():
        env = dict(os.environ, PYTHONPATH=str(root.resolve()))
        cmd = [
            sys.executable, "-m", "adrank", "train",
            "--dataset", args.dataset, "--model", args.model, "--run-dir", str(run_dir),
            "--set", f"train.max_epochs={args.epochs}", "--set", f"train.seed={args.seed}",
            "--set", f"train.num_threads={args.threads}",
        ]  # fmt: skip
        subprocess.run(cmd, env=env, check=True, cwd=root)
    return np.load(run_dir / "test_predictions.npy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="source tree of the baseline")
    parser.add_argument("--head", type=Path, default=Path("."), help="source tree to check")
    parser.add_argument("--output", type=Path, required=True, help="directory for both runs")
    parser.add_argument("--dataset", default="frappe")
    parser.add_argument("--model", default="deepfm")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    base = train(args.base, args.output / "base", args)
    head = train(args.head, args.output / "head", args)
    base, head = base.reshape(len(base), -1), head.reshape(len(head), -1)
    same = base.shape == head.shape and base.tobytes() == head.tobytes()
    report = {
        "dataset": args.dataset,
        "model": args.model,
        "epochs": args.epochs,
        "seed": args.seed,
        "rows": len(base),
        "bit_identical": bool(same),
        "max_abs_diff": float(np.abs(base - head).max()) if base.shape == head.shape else None,
    }
    print(json.dumps(report))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
