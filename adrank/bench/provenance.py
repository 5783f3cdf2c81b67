"""Where a leaderboard row came from: the machine that trained it, and re-trainings that
reproduced it.

Every benchmark row records the code version that trained it (``BenchmarkRun.code``) and
the machine (:func:`machine_line`). ``adrank benchmark --verify MODEL --seed S --record``
appends its outcome to ``verified.jsonl`` next to ``runs.jsonl``; the leaderboard's code
column then names, for a model whose rows carry no code version, the version that
re-trained one of them bit for bit (:func:`code_cells`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Verification records, one JSON object per line, next to a benchmark's ``runs.jsonl``.
VERIFIED_FILE = "verified.jsonl"
#: Marks a code cell taken from a verification (the rows themselves record no version).
VERIFIED_MARK = "‡"
#: The code cell of rows without a version whose latest re-training did not reproduce them.
STALE = "stale ✗"


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_kind() -> str:
    """The CPU's vendor and the vector instruction set torch's kernels use on it, e.g.
    ``GenuineIntel/AVX512`` or ``AuthenticAMD/AVX2``.

    CPU training is bit-for-bit reproducible between machines of one kind, not across kinds:
    MKL and torch pick other kernels on other CPUs, which sum in another order, and a few
    optimizer steps amplify the last-bit differences (on frappe, 2 epochs of DeepFM moved
    the test AUC by 2e-3 between an AMD EPYC and an Intel Xeon). Pinned numbers are kept
    per kind."""
    import torch

    vendor = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{vendor or platform.machine()}/{torch.backends.cpu.get_cpu_capability()}"


def pinned_for(pins: dict[str, Any], kind: str) -> Any:
    """``pins[kind]``, else the pins of the kind's vendor alone (``pins["AuthenticAMD"]``:
    numbers recorded before kinds named the instruction set), else ``None``."""
    if kind in pins:
        return pins[kind]
    return pins.get(kind.split("/", 1)[0])


#: The reference workload of :func:`speed_index`: a 3-layer MLP's forward and backward on a
#: fixed 1,024-row batch of 400 inputs (hidden 400), the shape of a frappe/Criteo DNN step.
SPEED_INDEX_SHAPE = (1024, 400, 400)


def speed_index(threads: int | None = None, *, repeats: int = 5, steps: int = 10) -> float:
    """Reference MLP steps per second on this machine, now, with ``threads`` torch threads
    (``None``: the current count): the best of ``repeats`` timings of ``steps`` forward +
    backward passes of a fixed float32 workload (:data:`SPEED_INDEX_SHAPE`).

    A benchmark row records it just before training, so time columns from different
    machines, or from a machine under load, can be put on one scale (``train s`` times the
    index is roughly machine-free). The inputs are deterministic (no RNG is drawn, so the
    run's seeded stream is untouched) and the thread count is restored."""
    import time

    import torch

    if repeats < 1 or steps < 1:
        raise ValueError(f"speed_index needs repeats and steps >= 1, got {repeats}, {steps}")
    rows, width, hidden = SPEED_INDEX_SHAPE
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.enable_grad():
            x = torch.linspace(-1.0, 1.0, rows * width).reshape(rows, width)
            weights = [
                torch.linspace(-0.05, 0.05, a * b).reshape(a, b).requires_grad_()
                for a, b in ((width, hidden), (hidden, hidden), (hidden, 1))
            ]

            def step() -> None:
                h = x
                for w in weights[:-1]:
                    h = torch.relu(h @ w)
                (h @ weights[-1]).sum().backward()

            step()  # warm-up: allocator and kernels
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return round(steps / best, 1)


def machine_line() -> str:
    """CPU model, core count, torch version and the current torch thread count, Python."""
    import torch

    return (
        f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


@dataclass
class Verification:
    """One ``--verify --record`` outcome."""

    model: str
    seed: int
    reproduced: bool
    #: code version of the re-training, and of the row (empty: the row records none)
    code: str
    recorded_code: str
    machine: str
    test_auc: float
    auc_diff: float
    logloss_diff: float
    date: str = ""


def record_verification(results_path: Path, verification: Verification) -> Path:
    """Append ``verification`` to ``verified.jsonl`` beside ``results_path``; its path."""
    if not verification.date:
        verification.date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    path = results_path.parent / VERIFIED_FILE
    with open(path, "a") as fh:
        fh.write(json.dumps(asdict(verification)) + "\n")
    return path


def read_verifications(results_dir: Path) -> list[Verification]:
    """The records of ``results_dir/verified.jsonl`` (none when it is missing); a malformed
    line is skipped with a warning."""
    path = results_dir / VERIFIED_FILE
    out: list[Verification] = []
    if not path.exists():
        return out
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Verification(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            logger.warning(
                "%s line %d is not a verification record (%s): skipped", path, number, exc
            )
    return out


def short_code(code: str) -> str:
    """``0.1.0+g17ddaba1234`` -> ``g17ddaba123``; a bare version stays as it is."""
    return code.rpartition("+")[2] if "+" in code else code


def code_cells(
    runs: Iterable[tuple[str, str]], verifications: Iterable[Verification] = ()
) -> dict[str, str]:
    """Model -> the code column of its leaderboard row, from (model, code) of its runs.

    The distinct versions of its runs, oldest first as recorded; for a model none of whose
    runs records a version, its latest verification: the version that re-trained one of
    them bit for bit, marked :data:`VERIFIED_MARK`, or :data:`STALE` when that re-training
    differed; ``–`` when there is neither."""
    versions: dict[str, dict[str, None]] = {}
    for model, code in runs:
        versions.setdefault(model, {})
        if code:
            versions[model][short_code(code)] = None
    latest = {v.model: v for v in verifications if v.code}  # the last record wins
    out = {}
    for model, codes in versions.items():
        if codes:
            out[model] = ", ".join(codes)
        elif model in latest:
            v = latest[model]
            out[model] = f"{short_code(v.code)} {VERIFIED_MARK}" if v.reproduced else STALE
        else:
            out[model] = "–"
    return out
