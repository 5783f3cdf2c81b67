"""The model registry: models register by name; configs are validated against the typed
``__init__`` signature so a bad key fails early with the list of valid ones.

Every module in ``adrank.models`` is imported on first lookup, so adding a model to adrank
is one file with an ``@register("name")`` decorator. A model of your own lives in your own
module: name it in the ``ADRANK_PLUGINS`` environment variable (comma-separated module
names, importable from ``sys.path``) and every ``adrank`` command, the Predictor and the
server find it (docs/python_api.md).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import numbers
import os
import pkgutil
import types
import weakref
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel, initialize_weights

_REGISTRY: dict[str, type[CTRModel]] = {}
_LOADED = False
M = TypeVar("M", bound=type[CTRModel])


def register(name: str):
    """Class decorator: ``@register("deepfm")``. Names are case-insensitive."""

    def wrap(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, CTRModel)):
            raise TypeError(
                f"@register({name!r}) decorates {cls!r}, which is not a CTRModel subclass "
                "(adrank.models.base.CTRModel)"
            )
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[key]}")
        _REGISTRY[key] = cls
        cls.registry_name = key  # type: ignore[attr-defined]
        return cls

    return wrap


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    import adrank.models as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name not in {"base", "registry"}:
            importlib.import_module(f"adrank.models.{mod.name}")
    _LOADED = True
    for module in plugin_modules():
        try:
            importlib.import_module(module)
        except Exception as exc:  # any error in the user's module: say which one
            raise PluginError(
                f"ADRANK_PLUGINS names {module!r}, which cannot be imported: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


class PluginError(ValueError):
    """A module named in ``ADRANK_PLUGINS`` cannot be imported."""


def plugin_modules() -> list[str]:
    """The modules ``ADRANK_PLUGINS`` names (comma-separated), imported after adrank's own
    models so that their ``@register`` calls add models of your own."""
    return [m.strip() for m in os.environ.get("ADRANK_PLUGINS", "").split(",") if m.strip()]


def available_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[CTRModel]:
    _load_all()
    key = name.lower()
    if key not in _REGISTRY:
        hint = (
            ""
            if plugin_modules()
            else (" (a model of your own: name its module in ADRANK_PLUGINS)")
        )
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}{hint}")
    return _REGISTRY[key]


def model_params(name: str) -> dict[str, Any]:
    """Hyperparameter names and defaults of a model (``inspect.Parameter.empty`` if required)."""
    sig = inspect.signature(get_model_class(name).__init__)
    return {
        p.name: p.default
        for p in list(sig.parameters.values())[2:]
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def build_model(
    name: str,
    feature_map: FeatureMap,
    *,
    default_init: bool = True,
    seed: int | None = None,
    **params: Any,
) -> CTRModel:
    """Instantiate a registered model, rejecting unknown hyperparameters by name, values
    of the wrong type (checked against the ``__init__`` annotations: ``hidden_units: 64``
    or ``"400,400"``, ``batch_norm: "false"``, a choice outside a ``Literal``), negative
    counts or widths (any ``int``, alone or in a list, but a ``*_seed``) and 0-wide layers
    (a 0 in any ``*_units`` list), naming the hyperparameter. A ``float`` given as text
    that spells one (``1e-3``, which YAML 1.1 reads as a string) is converted, as for
    ``train`` settings.

    With ``default_init`` the weights get :func:`initialize_weights` (FuxiCTR's scheme).
    ``seed``: seed every generator first (:func:`adrank.utils.seed_everything`), so the
    initial weights repeat; :class:`~adrank.train.trainer.Trainer` seeds again with
    ``TrainConfig.seed`` when ``fit`` starts, which is too late for the weights."""
    cls = get_model_class(name)
    valid = model_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for model {name!r}; valid: {sorted(valid)}"
        )
    try:
        hints = get_type_hints(cls.__init__)
    except (NameError, TypeError):  # an annotation only a type checker can resolve
        hints = {}
    params = {k: _checked(name, k, v, hints.get(k, Any)) for k, v in params.items()}
    if seed is not None:
        from adrank.utils import seed_everything

        seed_everything(seed)
    model = cls(feature_map, **params)
    if default_init:
        initialize_weights(model)
    _BUILT_WITH[model] = dict(params)
    return model


#: the hyperparameters each model built by :func:`build_model` was given (kept beside the
#: module, not on it: an attribute would travel into TorchScript and state dicts)
_BUILT_WITH: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def built_params(model: Any) -> dict[str, Any] | None:
    """The hyperparameters :func:`build_model` built ``model`` with (``None`` for a model
    built otherwise), e.g. for a teacher of the same architecture."""
    params = _BUILT_WITH.get(model)
    return None if params is None else dict(params)


def _checked(model: str, name: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits ``hint`` (a float spelled as text is converted), else
    ValueError naming the model, the hyperparameter, the expected type and the value."""
    members = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    if isinstance(value, str) and float in members:
        with contextlib.suppress(ValueError):
            value = float(value)
    if not _fits(value, hint):
        raise ValueError(
            f"hyperparameter {name!r} of model {model!r} must be {_spell(hint)}, got "
            f"{value!r} ({type(value).__name__})"
        )
    ints = [value] if _is_int(value) else []
    if isinstance(value, Sequence) and not isinstance(value, str):
        ints = [v for v in value if _is_int(v)]
    if not name.endswith("seed") and any(v < 0 for v in ints):
        raise ValueError(f"hyperparameter {name!r} of model {model!r} must be >= 0, got {value!r}")
    if name.endswith("_units") and any(v < 1 for v in ints):
        # a 0-wide layer makes the output constant or fails in forward; the layers' own
        # check names only "hidden_units", not which of the model's lists it was
        raise ValueError(
            f"hyperparameter {name!r} of model {model!r} must hold layer widths >= 1, got {value!r}"
        )
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a hyperparameter value (from Python or YAML) fits its annotation: a bool is
    no number, an int is a float, a string is no sequence; unknown annotations pass."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in get_args(hint))
    if origin is Literal:
        return value in get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    if hint is str:
        return isinstance(value, str)
    if origin in (Sequence, list, tuple) or hint in (Sequence, list, tuple):
        if isinstance(value, str) or not isinstance(value, Sequence):
            return False
        args = [a for a in get_args(hint) if a is not Ellipsis] or [Any]
        return all(any(_fits(v, a) for a in args) for v in value)
    return True


def _spell(hint: Any) -> str:
    """An annotation in a user's words: ``a list of int``, ``one of ['dot', 'cat']``."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_spell(arg) for arg in get_args(hint))
    if origin is Literal:
        return f"one of {list(get_args(hint))}"
    if origin in (Sequence, list, tuple):
        args = [a for a in get_args(hint) if a is not Ellipsis]
        return f"a list of {' or '.join(_spell(a) for a in args) or 'values'}"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))
