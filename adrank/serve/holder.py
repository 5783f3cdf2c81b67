"""The served model of the HTTP service: the current :class:`Predictor`, its reference in
the model root, and the swap (``/admin/reload`` and the store follower go through
:meth:`ModelHolder.reload`)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from adrank.serve.model_root import (
    BadModelReference,
    ModelNotFound,
    ModelRoot,
    OutsideModelRoot,
)
from adrank.serve.predictor import Predictor
from adrank.serve.swap_gate import SwapRefused, load_checked

logger = logging.getLogger("adrank.serve.app")


class ModelHolder:
    """The current Predictor and its reference in the model root. :meth:`reload` resolves a
    reference, loads the model fully, passes it through the swap gate, then swaps the
    reference under a lock (readers take a reference once per request and keep it)."""

    def __init__(
        self,
        root: ModelRoot,
        reference: str,
        *,
        predictor: Predictor | None = None,
        **predictor_kwargs: Any,
    ) -> None:
        self._kwargs = predictor_kwargs
        self._swap = threading.Lock()
        self._reloading = threading.Lock()
        self.root = root
        self.reference = reference
        self.run_dir = root.resolve(reference)
        if predictor is not None:  # already loaded and checked (a store follower's start)
            self.predictor = predictor
        else:
            try:
                self.predictor = load_checked(
                    self.run_dir, None, label=reference, **predictor_kwargs
                )
            except SwapRefused as exc:  # at start there is nothing to keep serving
                raise ValueError(str(exc)) from exc
        self.reloads = 0
        self.refused = 0

    def current(self) -> tuple[Predictor, Path]:
        with self._swap:
            return self.predictor, self.run_dir

    def serving(self) -> tuple[Predictor, str]:
        """The predictor and its reference, taken together (a swap changes both)."""
        with self._swap:
            return self.predictor, self.reference

    def reload(self, reference: str | None = None) -> tuple[str, str]:
        """Load ``reference`` (default: the serving one, resolved again, so a versioned
        model moves to its ``latest``) and swap it in -> (old, new) version. Raises
        :class:`~adrank.serve.model_root.ModelRootError` or :class:`SwapRefused`."""
        with self._reloading:  # one reload at a time; scoring never waits on this lock
            reference = self.reference if reference is None else reference
            try:
                target = self.root.resolve(reference)
                serving = self.current()[0]
                fresh = load_checked(target, serving, label=reference, **self._kwargs)
            except (SwapRefused, ModelNotFound, BadModelReference, OutsideModelRoot) as exc:
                self.refused += 1  # logged: an operator reads why in the server's log too
                logger.warning("reload of %r refused: %s", reference, exc)
                raise
            with self._swap:
                old = self.predictor
                self.predictor, self.run_dir, self.reference = fresh, target, reference
                self.reloads += 1
        logger.info("reloaded %s: %s -> %s", reference, old.version, fresh.version)
        return old.version, fresh.version
