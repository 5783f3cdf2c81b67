"""The declarations a :class:`~adrank.data.schema.Schema` is made of: the id convention,
features (categorical, numeric, sequence, pretrained), tasks and their canonical outputs,
and the table of column roles. Import them from :mod:`adrank.data.schema`, which re-exports
every name here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PAD_ID = 0
OOV_ID = 1
NUM_RESERVED_IDS = 2

Normalizer = Literal["none", "standard", "minmax", "log1p"]
NORMALIZERS: tuple[str, ...] = ("none", "standard", "minmax", "log1p")


class SchemaError(ValueError):
    """Raised when a schema is malformed or does not match the data."""


@dataclass(frozen=True)
class CategoricalFeature:
    """A single-valued categorical column.

    Attributes:
        name: column name in the raw data.
        min_count: values seen fewer times than this in the training split map to OOV.
        hash_buckets: if set, values are hashed into this many buckets instead of a fitted
            vocabulary (bounded table size for huge vocabularies).
        share_vocab_with: name of another categorical/sequence feature whose vocabulary
            (and embedding table) this feature reuses.
        embedding_dim: optional per-feature embedding size (default: the model's).
        source: raw column to read (defaults to ``name``).
    """

    name: str
    min_count: int = 1
    hash_buckets: int | None = None
    share_vocab_with: str | None = None
    embedding_dim: int | None = None
    source: str | None = None
    type: Literal["categorical"] = "categorical"


@dataclass(frozen=True)
class NumericFeature:
    """A numeric column.

    Attributes:
        fill_value: value used for missing entries (before normalization).
        normalizer: ``none``, ``standard`` (z-score), ``minmax`` or ``log1p``.
        buckets: if set, quantile-bucketize into this many bins; the feature then becomes
            categorical (ids ``2..buckets+1``, missing -> OOV).
    """

    name: str
    fill_value: float = 0.0
    normalizer: Normalizer = "none"
    buckets: int | None = None
    embedding_dim: int | None = None
    source: str | None = None
    type: Literal["numeric"] = "numeric"


@dataclass(frozen=True)
class SequenceFeature:
    """A variable-length list of ids (e.g. a user's behaviour history), stored as a
    delimited string or a list column.

    Attributes:
        delimiter: separator for string-encoded sequences.
        max_len: sequences are truncated (keeping the most recent, i.e. last, items) and
            padded to this length.
        padding: ``left`` or ``right`` side padding.
        share_vocab_with: categorical feature whose vocabulary this sequence uses (the
            usual case: history of ``item_id`` shares the ``item_id`` vocabulary).
        target: the categorical feature a model compares this history with (DIN's target
            item: ``hist_item_id`` targets ``item_id``).
        aligned_with: another sequence feature this one is aligned with position by
            position (a multi-attribute history: ``hist_genre`` aligned with
            ``hist_item_id``). Both must have the same ``max_len`` and ``padding``.
    """

    name: str
    max_len: int
    delimiter: str = "|"
    padding: Literal["left", "right"] = "left"
    share_vocab_with: str | None = None
    min_count: int = 1
    embedding_dim: int | None = None
    source: str | None = None
    target: str | None = None
    aligned_with: str | None = None
    type: Literal["sequence"] = "sequence"


@dataclass(frozen=True)
class PretrainedFeature(CategoricalFeature):
    """Pretrained vectors of an id feature: one float vector per id, read from Parquet.

    The field's ids are those of ``share_vocab_with`` (required: the categorical id feature
    the vectors belong to, e.g. ``item_id``), encoded with its vocabulary; its embedding
    table is the vectors, aligned row by row to that vocabulary by the processor. Ids
    without a vector (padding, OOV, ids absent from the file) get zeros. A sequence that
    ``share_vocab_with`` this feature (aligned with the id history) gives a history of the
    vectors.

    Attributes:
        vectors: Parquet file with one row per id (relative paths are relative to the schema
            file's folder when the schema is loaded from a file). May be left out when the
            vectors are passed in code (``FeatureProcessor.fit(frame, vectors=...)``, or a
            dataset that builds them, such as ``movielens_100k_text``).
        id_column: the Parquet column holding the ids (raw values, as in the data).
        vector_column: the Parquet column holding the vectors (a list of floats per row).
        dim: the expected vector length (checked when given).
        freeze: ``True`` keeps the vectors fixed in training; ``False`` fine-tunes them.
    """

    vectors: str | None = None
    id_column: str = "id"
    vector_column: str = "vector"
    dim: int | None = None
    freeze: bool = True
    type: Literal["pretrained"] = "pretrained"  # type: ignore[assignment]


Feature = CategoricalFeature | NumericFeature | SequenceFeature

TaskType = Literal["binary", "regression"]
#: canonical CTR/CVR outputs: click per impression, conversion given a click, and
#: click-and-conversion per impression (``pctcvr = pctr * pcvr``)
CANONICAL_OUTPUTS: tuple[str, ...] = ("pctr", "pcvr", "pctcvr")


@dataclass(frozen=True)
class Task:
    """One prediction target.

    Attributes:
        name: the task's name (metric prefix, ``--set task=NAME``).
        label: the label column.
        type: ``binary`` (0/1 label, BCE loss) or ``regression`` (real label, MSE loss).
        weight: the task's weight in the training loss.
        given: a binary label column; the task is defined only on rows where it is 1 (CVR is
            given a click). Its loss and its metrics ignore the other rows.
        output: the canonical output this task's label corresponds to (``pctr``, ``pcvr`` or
            ``pctcvr``). Left out, it is inferred (see :func:`infer_outputs`).
    """

    name: str
    label: str
    type: TaskType = "binary"
    weight: float = 1.0
    given: str | None = None
    output: str | None = None


@dataclass(frozen=True)
class RoleSpec:
    """A column role besides features and labels.

    ``kind`` says how the processor stores it: ``float`` (float32), ``int`` (int64),
    ``hash`` (a stable 64-bit hash of the value, for ids such as users or lists), ``vocab``
    (ids fitted on the training split, 0 = unseen) and ``raw`` (the value as text, never a
    tensor: it reaches prediction output and never a model).
    """

    name: str
    kind: Literal["float", "int", "hash", "vocab", "raw"]
    description: str
    multi: bool = False
    bounds: tuple[float, float] | None = None  # allowed range (inclusive upper, exclusive 0)


#: Every role a schema may declare. Adding a role is one entry here: the processor, the
#: feature map and :class:`~adrank.data.batches.Batch` carry it generically.
ROLES: dict[str, RoleSpec] = {
    r.name: r
    for r in (
        RoleSpec("group", "hash", "group/user id: gAUC and per-user metrics"),
        RoleSpec("time", "int", "event time (integer, e.g. Unix seconds): ordering, streams"),
        RoleSpec("weight", "float", "per-row sample weight multiplying the loss (>= 0)"),
        RoleSpec("domain", "vocab", "domain/scenario id for multi-domain models and slices"),
        RoleSpec("position", "int", "display position of the impression (1 = top)"),
        RoleSpec("list_id", "hash", "id of the list/request an impression was shown in"),
        RoleSpec(
            "propensity",
            "float",
            "the logging policy's probability of showing the item (off-policy evaluation)",
            bounds=(0.0, 1.0),
        ),
        RoleSpec(
            "examination",
            "float",
            "the probability that the slot was looked at (unbiased learning to rank)",
            bounds=(0.0, 1.0),
        ),
        RoleSpec("passthrough", "raw", "metadata copied to prediction output", multi=True),
    )
}
FEATURE_TYPES: dict[str, type] = {
    "categorical": CategoricalFeature,
    "numeric": NumericFeature,
    "sequence": SequenceFeature,
    "pretrained": PretrainedFeature,
}


def infer_outputs(tasks: tuple[Task, ...] | list[Task]) -> list[str]:
    """Each task's output name, in task order.

    An explicit ``output`` wins. Otherwise a binary task with a ``given`` label is ``pcvr``
    (when it is the only such task), the binary task whose label is that ``given`` (or the
    only task of the schema) is ``pctr``, and any other task is named after itself.
    """
    tasks = list(tasks)
    explicit = {t.output for t in tasks if t.output}
    conditional = [t for t in tasks if t.given is not None and t.type == "binary"]
    cvr = conditional[0] if len(conditional) == 1 and "pcvr" not in explicit else None
    out: list[str] = []
    for t in tasks:
        if t.output:
            out.append(t.output)
        elif t is cvr:
            out.append("pcvr")
        elif (
            t.type == "binary"
            and t.given is None
            and "pctr" not in explicit
            and ((cvr is not None and t.label == cvr.given) or len(tasks) == 1)
        ):
            out.append("pctr")
        else:
            out.append(t.name)
    return out
