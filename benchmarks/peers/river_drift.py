"""river (0.26) side of the drift-detection comparison (``benchmarks/stream_drift.py``).

    RIVER_PYTHON benchmarks/peers/river_drift.py RESULTS_DIR

Reads ``RESULTS_DIR/errors.npz`` (the fine-tuned model's 0/1 errors on each next chunk of
the SYNTHETIC drifting stream, rows in arrival order, with their chunk numbers), feeds
them one by one to river's ``drift.ADWIN()`` and ``drift.binary.DDM()`` with their default
settings, and writes the chunks in which each detector fired to
``RESULTS_DIR/river_detections.json``. No adrank imports (river runs in its own
environment, e.g. ``pip install --target DIR river`` and ``PYTHONPATH=DIR``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import river
from river import drift


def main(out: Path) -> None:
    data = np.load(out / "errors.npz")
    errors, chunks = data["errors"], data["chunk"]
    detectors = {"ADWIN (river)": drift.ADWIN(), "DDM (river)": drift.binary.DDM()}
    found: dict[str, list[int]] = {name: [] for name in detectors}
    for x, chunk in zip(errors.tolist(), chunks.tolist(), strict=True):
        for name, detector in detectors.items():
            detector.update(x)
            if detector.drift_detected:
                found[name].append(int(chunk))
    payload = {"river_version": river.__version__, "detections": found}
    tmp = out / ".river_detections.json.tmp"  # written whole, then renamed into place
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, out / "river_detections.json")
    print(json.dumps(payload))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
