"""The model root: the one directory the server may load models from.

Layout (``docs/serving.md``, "The model root")::

    ROOT/
      <name>/                 a run directory (``manifest.json`` inside): served as is
      <name>/                 or a versioned model: numbered immutable run directories
        1/  2/  3/ ...        each a complete run directory (``adrank publish``, issue #16)
        latest                optional text file holding one version number ("3\\n"),
                              replaced atomically (write a temp file, then rename)

A **reference** names a model relative to the root: ``name`` (a run directory, or a
versioned model's ``latest`` version: the number in ``latest``, else the highest numbered
version), ``name/3`` (one version), ``name/latest``, or any deeper relative path
(``team/ctr/deepfm``), with ``/`` between components. Absolute paths, ``~``, ``..`` and
``.`` components, and anything that resolves outside the root (a symlink out included) are
refused with :class:`OutsideModelRoot`; an empty reference, ``\\``, control characters, text
that is not valid Unicode or an empty component with :class:`BadModelReference`. Numbered
versions are positive integers without leading zeros; a model's name should not be a number.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from adrank.artifact import MANIFEST, ArtifactError
from adrank.utils import atomic_write_text

#: The pointer file of a versioned model.
LATEST = "latest"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_REFERENCE_CHARS = 512


class ModelRootError(ValueError):
    """A model reference that the root refuses."""


class BadModelReference(ModelRootError):
    """The reference is not a well-formed relative name (HTTP 422)."""


class OutsideModelRoot(ModelRootError):
    """The reference points outside the model root (HTTP 403)."""


class ModelNotFound(ModelRootError):
    """The reference is well formed and inside the root but names no run (HTTP 409)."""


def is_version(name: str) -> bool:
    """A version directory's name: a positive integer without leading zeros."""
    return name.isdigit() and not name.startswith("0")


class ModelRoot:
    """Resolves references inside ``path`` (which must exist) to run directories."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_dir():
            raise FileNotFoundError(f"model root {path} is not a directory")

    @classmethod
    def around(cls, run_dir: str | Path) -> tuple[ModelRoot, str]:
        """``adrank serve RUN_DIR`` without ``--model-root``: the root is RUN_DIR's parent
        and the reference its name -> (root, reference)."""
        run_dir = Path(run_dir).resolve()
        if not run_dir.is_dir():
            raise ArtifactError(f"run directory not found: {run_dir}")
        return cls(run_dir.parent), run_dir.name

    def check_reference(self, reference: str) -> PurePosixPath:
        """The reference as relative path components, or raise (see the module docstring)."""
        if not isinstance(reference, str) or not reference.strip():
            raise BadModelReference("the model reference is empty")
        if len(reference) > MAX_REFERENCE_CHARS:
            raise BadModelReference(f"the model reference exceeds {MAX_REFERENCE_CHARS} chars")
        if "\\" in reference or _CONTROL.search(reference):
            raise BadModelReference(
                "the model reference may not contain '\\' or control characters"
            )
        if not reference.isascii():
            try:
                reference.encode("utf-8")
            except UnicodeEncodeError:  # JSON can send an unpaired surrogate ("\\ud800")
                raise BadModelReference(
                    "the model reference is not valid Unicode (it holds an unpaired surrogate)"
                ) from None
        ref = PurePosixPath(reference)
        if ref.is_absolute() or reference.startswith("~"):
            raise OutsideModelRoot(
                f"{reference!r} is an absolute or home path; models load only from the model root, "
                "give a name relative to it"
            )
        parts = reference.rstrip("/").split("/")
        if any(p in ("..", ".") for p in parts):
            raise OutsideModelRoot(f"{reference!r} leaves the model root ('..' or '.')")
        if "" in parts:
            raise BadModelReference(f"{reference!r} has an empty path component ('//')")
        return PurePosixPath(*parts)

    def _inside(self, path: Path, reference: str) -> Path:
        resolved = path.resolve()
        if resolved != self.path and not resolved.is_relative_to(self.path):
            raise OutsideModelRoot(
                f"{reference!r} resolves outside the model root (a symbolic link out of it?)"
            )
        return resolved

    def resolve(self, reference: str) -> Path:
        """The run directory a reference names (resolved, inside the root)."""
        rel = self.check_reference(reference)
        target = self._inside(self.path / rel, reference)
        if rel.name == LATEST and not (target / MANIFEST).exists():
            target = self._inside(target.parent, reference)
            return self._latest(target, reference)
        if not target.is_dir():
            raise ModelNotFound(f"no model {reference!r} under the model root")
        if (target / MANIFEST).exists():
            return target
        return self._latest(target, reference)

    def versions(self, model_dir: Path) -> list[int]:
        """The numbered versions of a versioned model directory, ascending."""
        if not model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in model_dir.iterdir() if is_version(p.name))

    def _latest(self, model_dir: Path, reference: str) -> Path:
        pointer = model_dir / LATEST
        if pointer.is_file():
            text = pointer.read_text().strip()
            if not is_version(text):
                raise ModelNotFound(
                    f"{reference!r}: {LATEST} holds {text[:40]!r}, not a version number"
                )
            return self._inside(model_dir / text, reference)
        versions = self.versions(model_dir)
        if not versions:
            raise ModelNotFound(
                f"{reference!r} under the model root is neither a run directory (no "
                f"{MANIFEST}) nor a versioned model (no numbered versions)"
            )
        return self._inside(model_dir / str(versions[-1]), reference)

    def reference_of(self, run_dir: Path) -> str:
        """A resolved run directory's reference relative to the root."""
        return run_dir.resolve().relative_to(self.path).as_posix()


def set_latest(model_dir: str | Path, version: int) -> None:
    """Point a versioned model's ``latest`` at ``version`` atomically (temp file, rename)."""
    model_dir = Path(model_dir)
    if not (model_dir / str(version) / MANIFEST).exists():
        raise FileNotFoundError(f"{model_dir / str(version)} is not a finished run directory")
    atomic_write_text(model_dir / LATEST, f"{version}\n")
