"""Negative down-sampling and its correction.

Keeping every positive and a fraction ``rate`` of the negatives makes training on a large,
mostly negative log cheaper. A model trained that way predicts q, the probability on the
sampled data; the probability on the real traffic is

    p = q / (q + (1 - q) / rate)

(He et al., "Practical Lessons from Predicting Clicks on Ads at Facebook", 2014). The
rate is saved in the run's config (``train.negative_sampling_rate``) and every consumer
(validation metrics, the Predictor, the HTTP service) applies this correction to the sampled
output, so reported logloss and calibration are on the true base rate.

Sampling is on the click task: the single task of a single-task model, or the ``pctr`` task
of a multi-task model. Conversions given a click are unaffected (every clicked row is a
click positive and is kept). A model that emits ``pctcvr`` directly is refused: its negatives
are sampled at two different rates, and no single correction undoes that.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from adrank.data.batches import TensorData, _take
from adrank.data.feature_map import FeatureMap
from adrank.tasks import TaskError
from adrank.train.evaluation import Predictions

__all__ = ["correct_predictions", "correct_probabilities", "downsample_negatives", "sampled_output"]

logger = logging.getLogger(__name__)


def sampled_output(outputs: list[str]) -> str:
    """The output whose negatives are down-sampled (see the module docstring)."""
    if len(outputs) == 1:
        return outputs[0]
    if "pctcvr" in outputs:
        raise TaskError(
            "negative down-sampling is not supported for models that emit pctcvr directly "
            f"(outputs {outputs}); set train.negative_sampling_rate=1"
        )
    if "pctr" not in outputs:
        raise TaskError(f"negative down-sampling needs a pctr output; outputs are {outputs}")
    return "pctr"


def correct_probabilities(q: np.ndarray, rate: float) -> np.ndarray:
    """Map probabilities learned on down-sampled data back to the true base rate."""
    if rate >= 1.0:
        return q
    q64 = np.asarray(q, dtype=np.float64)
    return (q64 / (q64 + (1.0 - q64) / rate)).astype(np.asarray(q).dtype)


def correct_predictions(predictions: Predictions, rate: float) -> Predictions:
    """``predictions`` with the sampled output's column corrected (a no-op at rate 1)."""
    if rate >= 1.0 or predictions.outputs is None or predictions.probs.size == 0:
        return predictions
    column = predictions.outputs.index(sampled_output(predictions.outputs))
    probs = predictions.probs.copy()
    if probs.ndim == 1:
        probs = correct_probabilities(probs, rate)
    else:
        probs[:, column] = correct_probabilities(probs[:, column], rate)
    predictions.probs = probs
    return predictions


def downsample_negatives(
    data: TensorData, feature_map: FeatureMap, label: str, rate: float, seed: int
) -> TensorData:
    """Every row whose ``label`` is 1 and a seeded fraction ``rate`` of the others."""
    if rate >= 1.0:
        return data
    y = data.data.labels[:, feature_map.label_index(label)]
    gen = torch.Generator().manual_seed(seed + 7_777)
    keep = (y == 1) | (torch.rand(len(y), generator=gen) < rate)
    idx = torch.nonzero(keep).squeeze(1)
    logger.info(
        "negative down-sampling at rate %g: %d of %d training rows kept", rate, len(idx), len(y)
    )
    return TensorData(_take(data.data, idx))


def filter_domain(data: TensorData, feature_map: FeatureMap, domain: str) -> TensorData:
    """The rows of ``data`` whose ``domain`` role is ``domain`` (a raw value, as in the
    data); ValueError naming the value and the known domains when it is not one."""
    role = feature_map.roles.get("domain")
    if role is None or "domain" not in data.data.roles:
        raise ValueError(
            f"domain_filter={domain!r} needs a 'domain' role in the schema and the data"
        )
    if domain not in role.values:
        raise ValueError(
            f"domain_filter={domain!r} is not a domain of the training data; domains: "
            f"{list(role.values)}"
        )
    ids = data.data.roles["domain"]
    idx = torch.nonzero(ids == role.values.index(domain) + 1).squeeze(1)
    logger.info("domain_filter=%s: %d of %d rows kept", domain, len(idx), len(ids))
    return TensorData(_take(data.data, idx))
