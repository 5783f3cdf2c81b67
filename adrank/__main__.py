"""``python -m adrank``: the CLI, also as the entry of ``torchrun -m adrank train ...`` workers.

``record`` writes a worker's uncaught exception to the file the elastic launcher names, so
the launcher can report the root cause of a failed distributed job.
"""

from __future__ import annotations

from torch.distributed.elastic.multiprocessing.errors import record

from adrank.cli import app


@record
def main() -> None:
    app(prog_name="adrank")


if __name__ == "__main__":
    main()
