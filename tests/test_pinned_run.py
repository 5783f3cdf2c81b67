"""A guard on training numbers: a short deterministic frappe run must give a pinned test AUC.

CPU training is deterministic per seed and thread count, so any change that moves this value
(the dropout mask, initialisation, batching order, loss, optimizer, data preparation) moves
every leaderboard number too. Such a change must update ``PINNED_TEST_AUC`` knowingly, say
why in its commit, and re-run the frappe leaderboard (``adrank benchmark --dataset frappe
--models all --seeds 3 --output benchmarks/results/frappe``) so the published rows stay
what the code produces (``adrank benchmark --verify MODEL --seed S`` checks one row).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adrank.bench.provenance import cpu_kind, pinned_for
from adrank.config import resolve_run_config
from adrank.data.prepare import prepare_dataset
from adrank.pipeline import train_run

pytestmark = pytest.mark.integration

#: DeepFM, committed frappe config, seed 2021, 2 epochs, 2 threads, with F.dropout (issue 19,
#: adrank/nn/dropout.py; d50cf18's dropout kernel gave 0.9608651548727428 on the AMD EPYC),
#: per CPU kind (:func:`adrank.bench.provenance.cpu_kind`): other CPUs run other kernels,
#: whose summation order moves this AUC by about 1e-3; a kind with no pin skips.
PINNED_TEST_AUC = {
    "AuthenticAMD": 0.9635909831104987,  # AMD EPYC, pinned before kinds named the ISA
    "GenuineIntel/AVX512": 0.9640197414975233,  # Intel Xeon (AMX), session 10
}
#: Far below the 0.0008 that the dropout kernel change moved DeepFM's leaderboard AUC.
TOLERANCE = 1e-5


def test_deepfm_two_epochs_on_frappe_gives_the_pinned_test_auc(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    pinned = pinned_for(PINNED_TEST_AUC, cpu_kind())
    if pinned is None:
        pytest.skip(f"no pinned AUC for this CPU kind ({cpu_kind()}): pin it in this module")
    prepared = prepare_dataset("frappe", data_dir=data_dir, cache_dir=cache_dir)
    overrides = ["train.seed=2021", "train.max_epochs=2", "train.num_threads=2"]
    config = resolve_run_config("frappe", "deepfm", overrides=[*overrides, "train.progress=false"])
    result = train_run(config, tmp_path / "deepfm", prepared=prepared)
    assert result.test["auc"] == pytest.approx(pinned, abs=TOLERANCE), (
        f"test AUC {result.test['auc']:.8f} moved from the pinned {pinned:.8f} on "
        f"{cpu_kind()}: if "
        "the change is meant to move training numbers, update PINNED_TEST_AUC and re-run the "
        "leaderboard"
    )
