"""Entry point: ``python -m benchmarks [data] [--repeats N]``."""

from __future__ import annotations

import sys

from benchmarks import data_pipeline

SUITES = {"data": data_pipeline.main}


def main() -> None:
    args = sys.argv[1:]
    names = [a for a in args if a in SUITES] or list(SUITES)
    rest = [a for a in args if a not in SUITES]
    for name in names:
        print(f"== benchmark: {name}")
        SUITES[name](rest)


if __name__ == "__main__":
    main()
