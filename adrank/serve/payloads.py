"""The request and response bodies of the HTTP service (pydantic models).

Requests are strict: an unknown field is a 422 that names it. The auction rules are in
:mod:`adrank.serve.ranking`, and the endpoints in :mod:`adrank.serve.app` and
``docs/serving.md`` ("Input rules"):

* **money** (``bid``, ``reserve_price``, ``reserve_ecpm``): a JSON number (not a string, not
  a boolean), finite, in [0, :data:`MAX_MONEY`]. ``NaN``, ``Infinity`` and overflowing
  literals such as ``1e999`` (which parse to infinity) are refused;
* **ids** (``ad_id``, ``creative_id``): a non-empty string of at most
  :data:`MAX_ID_CHARS` characters, or an integer in [0, 2^53 - 1] (exact in every JSON
  decoder, JavaScript's included). Two ids with the same text (``7`` and ``"7"``) in one
  request are duplicates: ties and logs compare ids as strings;
* **feature values**: non-finite numbers are refused (:func:`feature_errors`); ``null`` or
  a missing optional field takes the schema's missing value. A list (a history) holds
  strings and integers only: a boolean or a float in it is refused, not converted;
* **text**: ids, ``request_id``, feature names and string values must be valid Unicode. JSON
  can spell an unpaired UTF-16 surrogate (``"\\ud800"``), which decodes to a Python string
  that no UTF-8 encoder accepts (it used to make the response a 500); it is refused.

Every error is a 422 whose ``loc`` names the field; :func:`json_safe` keeps error bodies
encodable when the offending input is a NaN, an infinity or an unpaired surrogate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainValidator,
    StrictInt,
    StrictStr,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from adrank.serve.ranking import Billing

MAX_SLOTS = 100
#: The largest bid or reserve, in the bid's currency per billing event (reserve_ecpm: per
#: 1000 impressions). Far above any real bid, so it only refuses mistakes (micro-units sent
#: as currency units, overflow), and it keeps 1000 × bid × q and every price exact to
#: ~1e-7 in float64 and finite in every JSON decoder.
MAX_MONEY = 1e6
MAX_ID_CHARS = 128
MAX_ID_INT = 2**53 - 1
#: Largest magnitude of a numeric feature value (model inputs are float32).
MAX_FEATURE_MAGNITUDE = 3.4e38
#: The one error of a feature value of no allowed type (an object, say).
FEATURE_VALUE_ERROR = (
    "a feature value must be a string, a number, a boolean or null, or (for a history) a "
    "list of strings and integers"
)


class _OneError:
    """Marks a union whose failure is one error (``FEATURE_VALUE_ERROR``), not one per
    member type: pydantic's own union reports five for an object. It is set in the core
    schema (no Python code runs per value), and leaves the JSON schema as it is."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        schema = handler(source)
        union = schema["schema"] if schema["type"] == "nullable" else schema
        union["custom_error_type"] = "feature_value"
        union["custom_error_message"] = FEATURE_VALUE_ERROR
        return schema


#: A feature value; a list (a history) holds strings and integers only (strict: pydantic
#: would otherwise turn ``true`` or ``1.0`` in a list into the id ``1``).
FeatureValue = Annotated[str | int | float | bool | list[StrictStr | StrictInt] | None, _OneError()]


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no unpaired surrogate), so UTF-8 can encode it."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(text: str) -> str:
    """``text`` with each unpaired surrogate written as its escape (``\\ud800``)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _not_unicode(text: str) -> str:
    shown = _escaped(text if len(text) <= 40 else text[:37] + "...")
    return f"a string that is not valid Unicode ({shown!r} holds an unpaired surrogate)"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return f"{'-' if value < 0 else ''}Infinity (or a number too large for a double)"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


def _number(value: int | float) -> str:
    if type(value) is int and abs(value) >= 10**15:  # too long to show, maybe past a double
        return f"an integer of {len(str(abs(value)))} digits"
    if type(value) is float and not math.isfinite(value):
        return _describe(value)
    return repr(value)  # exact: 1000000.5 and 1e+308, never rounded to look in range


def _count(value: Any) -> Any:
    """A JSON number that is whole (``3`` or ``3.0``); ``true`` or ``"3"`` is refused
    (pydantic's lax mode would read them as 1 and 3)."""
    if type(value) is int or (type(value) is float and value.is_integer()):
        return int(value)
    raise PydanticCustomError(
        "count", "must be a whole JSON number, got {got}", {"got": repr(value)}
    )


#: A count (``slots``): a whole JSON number, bounds set by its Field.
Count = Annotated[int, BeforeValidator(_count)]


def _money(value: Any, info: ValidationInfo) -> float:
    if type(value) in (int, float) and 0 <= value <= MAX_MONEY:  # NaN compares False
        return float(value)
    raise PydanticCustomError(
        "money",
        "{field} must be a finite JSON number between 0 and {max}, got {got}",
        {
            "field": info.field_name or "money",
            "max": f"{MAX_MONEY:.0f}",
            "got": _number(value) if type(value) in (int, float) else _describe(value),
        },
    )


def _identifier(value: Any, info: ValidationInfo) -> str | int:
    if type(value) is str and 0 < len(value) <= MAX_ID_CHARS and is_unicode(value):
        return value
    if type(value) is int and 0 <= value <= MAX_ID_INT:
        return value
    raise PydanticCustomError(
        "identifier",
        "{field} must be a non-empty string of at most {chars} characters or an integer in "
        "[0, 2^53 - 1], got {got}",
        {
            "field": info.field_name or "id",
            "chars": MAX_ID_CHARS,
            "got": _bad_id(value),
        },
    )


def _bad_id(value: Any) -> str:
    if isinstance(value, str):
        if 0 < len(value) <= MAX_ID_CHARS:
            return _not_unicode(value)
        return f"a string of {len(value)} characters"
    return _number(value) if type(value) is int else _describe(value)


def _unicode_text(value: str, info: ValidationInfo) -> str:
    if is_unicode(value):
        return value
    raise PydanticCustomError(
        "unicode",
        "{field} must be valid Unicode, got {got}",
        {"field": info.field_name or "text", "got": _not_unicode(value)},
    )


#: A string that must be valid Unicode (:func:`is_unicode`).
Text = Annotated[str, AfterValidator(_unicode_text)]


def _id_length(value: str) -> str:
    if 1 <= len(value) <= MAX_ID_CHARS:
        return value
    raise PydanticCustomError(
        "string_length",
        "String should have 1 to {max} characters, got {n}",
        {"max": MAX_ID_CHARS, "n": len(value)},
    )


#: a client's request id: valid Unicode, 1 to MAX_ID_CHARS characters (checked on the
#: string, so the message speaks of characters, not of the optional field's "items")
RequestId = Annotated[str, AfterValidator(_unicode_text), AfterValidator(_id_length)]
Money = Annotated[
    float,
    PlainValidator(_money),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": MAX_MONEY}),
]
Identifier = Annotated[
    str | int,
    PlainValidator(_identifier),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
                {"type": "integer", "minimum": 0, "maximum": MAX_ID_INT},
            ]
        }
    ),
]


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as strings ("NaN", "Infinity", "-Infinity"), unpaired
    surrogates in strings as their escapes (``"\\ud800"``) and anything JSON cannot hold as
    its ``str``: error bodies echo inputs, and an echoed NaN or surrogate used to turn a 422
    into a 500 with a reset connection."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return value if is_unicode(value) else _escaped(value)
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        return {json_safe(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


def _bad_feature(name: str, value: Any, numeric: bool) -> str | None:
    if type(value) is float:
        if not math.isfinite(value):
            return f"feature {name!r} is {_describe(value)}; send null for a missing value"
        if abs(value) > MAX_FEATURE_MAGNITUDE:
            return f"feature {name!r} is {value:g}, beyond a float32 model input"
    elif numeric and type(value) is int:
        if abs(value) > MAX_FEATURE_MAGNITUDE:
            return f"feature {name!r} is {_number(value)}, beyond a float32 model input"
    elif numeric and type(value) is str:
        try:
            number = float(value)
        except ValueError:
            return None  # the Predictor names a non-numeric string
        if not math.isfinite(number) or abs(number) > MAX_FEATURE_MAGNITUDE:
            return f"feature {name!r} is {_describe(value)}, not a finite float32 number"
    return None


def _text_error(name: str, value: Any) -> str | None:
    """Why the feature ``name`` or its string value (or a string in its list) is not valid
    Unicode, or None."""
    if not is_unicode(name):
        return f"feature name {_not_unicode(name)}"
    if type(value) is str and not is_unicode(value):
        return f"feature {name!r} is {_not_unicode(value)}"
    if type(value) is list:
        bad = next((x for x in value if type(x) is str and not is_unicode(x)), None)
        if bad is not None:
            return f"feature {name!r} holds {_not_unicode(bad)}"
    return None


def feature_errors(
    where: Iterator[tuple[list[Any], Mapping[str, Any]]],
    numeric: frozenset[str],
    *,
    text: bool = True,
) -> list[dict[str, Any]]:
    """422 details for non-finite (or float32-overflowing) feature values, with ``loc``
    naming each field; ``where`` yields (location, features) and ``numeric`` names the
    numeric fields, whose numeric strings are checked too. With ``text``, feature names and
    string values that are not valid Unicode are refused as well (a body parsed by orjson,
    which refuses them, needs no such check)."""
    errors = []
    for loc, features in where:
        for name, value in features.items():
            if text:
                msg = _text_error(name, value)
                if msg:
                    at = [*loc, json_safe(name)]  # the name itself may be the bad text
                    errors.append({"loc": at, "msg": msg, "type": "unicode"})
                    continue
            if type(value) is float or (name in numeric and type(value) in (str, int)):
                msg = _bad_feature(name, value, name in numeric)
                if msg:
                    errors.append({"loc": [*loc, name], "msg": msg, "type": "finite_number"})
    return errors


def _duplicate(ids: list[str | int], where: str, what: str, before: str, after: str = "") -> None:
    """Raise a ``duplicate_id`` error for the first id of ``ids`` whose text repeats an
    earlier one, with the message ``before`` + the id + ``after``. A model
    validator's error is located at the model: ``ctx["loc"]`` is the repeated id's place in
    it (``["candidates", i, "ad_id"]``), which the HTTP app appends to ``loc``, and
    ``ctx["id"]`` the id, which it gives as the error's ``input``."""
    seen: set[str] = set()
    for i, value in enumerate(ids):
        text = str(value)
        if text in seen:
            shown = f"{before}{json_safe(value)!r}{after}"
            # the whole message is the template's last replacement: an id holding a
            # "{...}" of its own is shown as it is
            context = {"id": value, "loc": [where, i, what], "message": shown}
            raise PydanticCustomError("duplicate_id", "{message}", context)
        seen.add(text)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Strict):
    records: list[dict[str, FeatureValue]] = Field(min_length=1, description="raw records")
    context: dict[str, FeatureValue] = Field(
        default_factory=dict,
        description="fields shared by every record (e.g. the user and their history, a list "
        "oldest first); a record's own value wins",
    )


class PredictResponse(BaseModel):
    outputs: list[str] = Field(description="the output names of each prediction, in order")
    predictions: list[dict[str, float]] = Field(
        description="one {output: probability} object per record, in request order"
    )
    pctr: list[float] | None = Field(
        description="the click probability per record (kept for single-task clients); null "
        "when the model has no click output"
    )
    passthrough: list[dict[str, FeatureValue]] | None = Field(
        default=None, description="each record's pass-through columns, if the run has any"
    )
    model_version: str
    model_reference: str | None = Field(
        default=None,
        description="the served model in the model root (NAME/VERSION when following a store)",
    )


class CreativeIn(_Strict):
    creative_id: Identifier
    features: dict[str, FeatureValue] = Field(default_factory=dict)


class CandidateIn(_Strict):
    ad_id: Identifier
    bid: Money = Field(
        description="bid per billing event: per click for cpc, per conversion for cpa and "
        f"ocpc; a finite JSON number in [0, {MAX_MONEY:g}]",
    )
    billing: Billing = Field(
        default="cpc",
        description="cpc: ranked on pCTR, pays per click; cpa: ranked on pCTCVR, pays per "
        "conversion; ocpc: bids per conversion, ranked on pCTCVR, pays per click",
    )
    features: dict[str, FeatureValue] = Field(default_factory=dict)
    creatives: list[CreativeIn] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _unique_creatives(self) -> CandidateIn:
        if self.creatives:
            _duplicate(
                [c.creative_id for c in self.creatives],
                "creatives",
                "creative_id",
                f"ad {json_safe(self.ad_id)!r} lists creative_id ",
                " more than once",
            )
        return self


class RankRequest(_Strict):
    context: dict[str, FeatureValue] = Field(default_factory=dict)
    candidates: list[CandidateIn] = Field(min_length=1)
    slots: Count = Field(default=1, ge=1, le=MAX_SLOTS)
    reserve_price: Money = Field(
        default=0.0,
        description="legacy reserve per click, CPC-only requests (R_i = 1000 × r × pCTR_i)",
    )
    reserve_ecpm: Money = Field(
        default=0.0,
        description="reserve R per 1000 impressions: eligible iff score >= R",
    )
    request_id: RequestId | None = Field(
        default=None,
        description="the client's id of this request (echoed; one is generated when absent)",
    )

    @model_validator(mode="after")
    def _unique_ads(self) -> RankRequest:
        _duplicate(
            [c.ad_id for c in self.candidates],
            "candidates",
            "ad_id",
            "candidates list ad_id ",
            " more than once (ids are compared as text)",
        )
        return self


class SlotOut(BaseModel):
    slot: int
    ad_id: str | int
    creative_id: str | int | None
    bid: float
    pctr: float
    ecpm: float = Field(description="the ranking score (same as score)")
    price: float = Field(description="price per billing_event")
    billing: Billing
    billing_event: Literal["click", "conversion"]
    q: float = Field(description="pCTR for cpc, pCTCVR for cpa and ocpc")
    score: float = Field(description="1000 × bid × q")
    pcvr: float | None = None
    pctcvr: float | None = None


class RankResponse(BaseModel):
    slots: list[SlotOut]
    model_version: str
    model_reference: str | None = Field(
        default=None,
        description="the served model in the model root (NAME/VERSION when following a store)",
    )
    request_id: str = Field(description="the request's id (the client's, or generated)")
    scored_pairs: int
    eligible_ads: int


class ReloadRequest(_Strict):
    model: str | None = Field(
        default=None,
        description="a model reference relative to the model root (name, name/VERSION or "
        "name/latest); default: the serving reference, resolved again",
    )
    run_dir: str | None = Field(
        default=None, description="deprecated alias of model (also relative to the root)"
    )

    @model_validator(mode="after")
    def _one_reference(self) -> ReloadRequest:
        if self.model is not None and self.run_dir is not None:
            raise ValueError("give model (or its deprecated alias run_dir), not both")
        return self

    @property
    def reference(self) -> str | None:
        return self.model if self.model is not None else self.run_dir
