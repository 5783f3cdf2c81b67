"""Entry point: ``python -m benchmarks [suite ...] [suite flags]``.

Suites: ``data`` (preprocessing + batch assembly on frappe), ``train`` (training throughput
vs peers and a pure-PyTorch floor), ``preprocess`` (adrank vs pandas preprocessing),
``inference`` (batch and in-process scoring), ``ooc`` (out-of-core training on synthetic
Criteo-scale data), ``load`` (HTTP /v1/rank load test), ``ddp`` (1 vs N processes),
``kernels`` (dropout, attention and scoring-batch micro-benchmarks), ``dropout`` (training
speed with the torch vs fast dropout kernel), ``gpu`` (adrank vs a
hand-written loop on one GPU; see ``benchmarks/GPU_RUNBOOK.md``), ``sequences`` (long-history
cost of the sequence models on synthetic histories), ``swap`` (a server following a model
store while versions are published under load). No suite name runs all
of them; flags go to every named suite, so pass suite-specific flags with one suite at a
time (see each module's docstring).
"""

from __future__ import annotations

import importlib
import sys

SUITES = {
    "data": "data_pipeline",
    "train": "train_speed",
    "preprocess": "preprocess_speed",
    "inference": "inference_speed",
    "ooc": "out_of_core",
    "load": "load_test",
    "ddp": "ddp_scaling",
    "kernels": "kernels",
    "dropout": "dropout_speed",
    "gpu": "gpu",
    "sequences": "sequences",
    "swap": "store_swap",
}


def main() -> None:
    args = sys.argv[1:]
    names = [a for a in args if a in SUITES] or list(SUITES)
    rest = [a for a in args if a not in SUITES]
    for name in names:
        print(f"== benchmark: {name}", flush=True)
        importlib.import_module(f"benchmarks.{SUITES[name]}").main(rest)


if __name__ == "__main__":
    main()
