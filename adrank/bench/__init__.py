"""BARS-protocol benchmark runner: seeds, tuned configs, reference numbers, report + plot."""

from adrank.bench.runner import BenchmarkRun, run_benchmark

__all__ = ["BenchmarkRun", "run_benchmark"]
