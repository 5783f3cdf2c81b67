"""Warnings a user training on a small log of their own needs: a batch size that gives a
step or two per epoch (4,096 on 3,000 rows trained one step per epoch, calibration ratio
4.6, without a word), and a --resume of a finished run that silently trains nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from adrank.train import Trainer
from tests.train.test_train_robustness import config, make_data, new_model


def test_few_steps_per_epoch_are_named_with_a_batch_size_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = make_data(3_000, 0)
    with caplog.at_level(logging.WARNING, logger="adrank.train.guards"):
        Trainer(new_model(), config(batch_size=4096, max_epochs=1)).fit(data)
    (record,) = [r for r in caplog.records if "step(s) per epoch" in r.getMessage()]
    message = record.getMessage()
    assert "of 3,000 rows make 1 step(s) per epoch at train.batch_size=4096" in message
    assert "train.batch_size=128" in message  # the power of two <= 3,000 / 20
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adrank.train.guards"):
        Trainer(new_model(), config(batch_size=128, max_epochs=1)).fit(data)  # 24 steps
    assert not [r for r in caplog.records if "step(s) per epoch" in r.getMessage()]


def test_resuming_a_finished_run_says_nothing_is_left_to_train(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_data(600, 1)
    cfg = config(batch_size=64, max_epochs=2)
    first = Trainer(new_model(), cfg, run_dir=tmp_path).fit(data, data)
    with caplog.at_level(logging.WARNING, logger="adrank.train.trainer"):
        again = Trainer(new_model(), cfg, run_dir=tmp_path).fit(data, data, resume=True)
    assert again.best_epoch == first.best_epoch
    (record,) = [r for r in caplog.records if "finished run" in r.getMessage()]
    assert "reached train.max_epochs after epoch 2" in record.getMessage()
