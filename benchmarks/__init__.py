"""Speed and scale benchmarks (not part of the test suite). Run ``python -m benchmarks``."""
