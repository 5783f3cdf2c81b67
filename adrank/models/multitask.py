"""The base of multi-task models: which outputs a model emits on a dataset, checked at
construction against the dataset's tasks (see :mod:`adrank.tasks`).

A multi-task model's ``forward`` returns (B, K) logits, one column per name in ``outputs``.
ShareBottom, MMoE and PLE emit the dataset's task outputs in task order; on a
click/conversion dataset that is ``("pctr", "pcvr")`` with the conversion task trained on
clicked rows (its ``given`` mask), or, with ``conversion_target="pctcvr"``, ``("pctr",
"pctcvr")`` with conversion learned on all impressions. ESMM and AITM fix their outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.tasks import TaskError, funnel, output_objective

ConversionTarget = Literal["pcvr", "pctcvr"]
CONVERSION_TARGETS: tuple[str, ...] = ("pcvr", "pctcvr")


def task_outputs(
    feature_map: FeatureMap, conversion_target: str = "pcvr", model_name: str = "model"
) -> tuple[str, ...]:
    """The outputs of a per-task multi-task model: one per task, in task order, with
    ``pcvr`` replaced by ``pctcvr`` when ``conversion_target="pctcvr"``."""
    if conversion_target not in CONVERSION_TARGETS:
        raise ValueError(
            f"conversion_target must be one of {list(CONVERSION_TARGETS)}, "
            f"got {conversion_target!r}"
        )
    tasks = feature_map.tasks
    if len(tasks) < 2:
        raise TaskError(
            f"{model_name} is a multi-task model but this dataset has one task "
            f"{[t.name for t in tasks]} (output {[t.output for t in tasks]}); train a "
            "single-task model (dnn, deepfm, ...) on it, or declare more tasks in the schema"
        )
    outputs = [t.output for t in tasks]
    if conversion_target == "pctcvr":
        if funnel(feature_map) is None:
            raise TaskError(
                f"{model_name}: conversion_target='pctcvr' needs a click/conversion dataset "
                f"(a task with `given: <click label>`); this dataset's outputs are {outputs}"
            )
        outputs = ["pctcvr" if o == "pcvr" else o for o in outputs]
    return tuple(outputs)


def check_outputs(
    model_name: str,
    feature_map: FeatureMap,
    outputs: Sequence[str],
    trained_outputs: Sequence[str] | None = None,
) -> None:
    """Raise :class:`TaskError` naming the output and the label it needs when ``feature_map``
    cannot score or train one of ``outputs`` / ``trained_outputs``."""
    needed = list(dict.fromkeys([*outputs, *(trained_outputs or ())]))
    have = {t.output: t for t in feature_map.tasks}
    for output in needed:
        try:
            output_objective(feature_map, output)
        except TaskError as exc:
            trained = f" (trained through {list(trained_outputs)})" if trained_outputs else ""
            missing, hint = f"no task with output {output!r}", ""
            if output == "pctr":
                hint = (
                    "; pctr is the output of the click task: a dataset's only task, the task "
                    "a conversion task is `given`, or one declared with `output: pctr` "
                    "(docs/schema.md)"
                )
            if output in ("pcvr", "pctcvr"):
                click = have.get("pctr")
                given = click.label if click is not None else "<click label>"
                missing = f"no conversion task (for {output!r})"
                hint = (
                    f"; {output} needs a task with `given: {given}` (a conversion label "
                    "defined on clicked rows)"
                )
            raise TaskError(
                f"{model_name} emits {list(outputs)}{trained} but this dataset has {missing}: "
                f"its tasks are {[t.name for t in feature_map.tasks]} with outputs "
                f"{list(have)}{hint}"
            ) from exc


class MultiTaskModel(CTRModel):
    """A model with one logit column per name in ``outputs`` (checked against the data).

    Subclasses call ``super().__init__(feature_map, outputs, trained_outputs)`` before
    building layers; ``num_outputs`` is K.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        outputs: Sequence[str],
        trained_outputs: Sequence[str] | None = None,
    ) -> None:
        super().__init__(feature_map)
        name = getattr(type(self), "registry_name", type(self).__name__.lower())
        check_outputs(name, feature_map, outputs, trained_outputs)
        self.outputs = tuple(outputs)
        self.trained_outputs = tuple(trained_outputs) if trained_outputs else None

    @property
    def num_outputs(self) -> int:
        return len(self.outputs or ())
