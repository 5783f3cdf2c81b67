"""Compatibility alias: the artifact module moved to :mod:`adrank.artifact`."""

from adrank.artifact import *  # noqa: F403
from adrank.artifact import (  # noqa: F401
    ARTIFACT_FORMAT_VERSION,
    CALIBRATION_FILE,
    MANIFEST,
    Artifact,
    ArtifactError,
    artifact_digest,
    load_artifact,
    load_split,
    open_prepared_data,
    read_manifest,
    save_calibration,
    update_manifest,
    write_artifact,
)
