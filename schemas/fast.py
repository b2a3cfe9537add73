"""The fast path for prediction records: the worker's hot loop decodes them here.

`decode_predictions(raw)` accepts only what `schemas.decode` accepts, and returns lean values
(msgspec structs) instead of pydantic models, at about half the cost. It is *sound* by design,
not complete: whenever it cannot vouch for a record (any failure, any type but
`prediction.served` / `prediction.batch`) it answers `None`, and the caller falls back to
`schemas.decode`, which gives the full typed event or the structured rejection. Tests check the
soundness on every rejection case of `decode` and on generated mutations of valid records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

import msgspec

from schemas.envelope import TRACEPARENT_PATTERN
from schemas.events import MAX_BATCH, PredictionBatch, PredictionServed

_IDENT = r"^\S(.*\S)?$"
Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=_IDENT)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Aware = Annotated[datetime, msgspec.Meta(tz=True)]
Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
Latency = Annotated[float, msgspec.Meta(ge=0, le=3_600_000)]
Feature = int | float | str | bool | None


class Item(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """One prediction, with the field names of `schemas.Prediction`."""

    version: Ident
    cohort: Literal["baseline", "canary", "shadow"]
    request_id: Ident
    event_time: Aware
    latency_ms: Latency
    ok: bool = True
    error_type: Name | None = None
    prediction: float | Name | dict[str, Share] | None = None
    features: dict[str, Feature] | None = None
    user_key: Name | None = None


class _Served(Item, forbid_unknown_fields=True, frozen=True, gc=False):
    deployment_id: Ident = ""
    model: Ident = ""


class _Batch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    deployment_id: Ident
    model: Ident
    predictions: Annotated[list[Item], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class _Envelope(msgspec.Struct, forbid_unknown_fields=True, frozen=True, tag_field="type"):
    id: Ident
    source: Name
    time: Aware
    specversion: Literal["1.0"] = "1.0"
    subject: Ident | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    traceparent: Annotated[str, msgspec.Meta(pattern=TRACEPARENT_PATTERN)] | None = None
    tracestate: Annotated[str, msgspec.Meta(max_length=512)] | None = None


class _ServedEnvelope(_Envelope, tag=PredictionServed.EVENT_TYPE, frozen=True):
    data: _Served | None = None


class _BatchEnvelope(_Envelope, tag=PredictionBatch.EVENT_TYPE, frozen=True):
    data: _Batch | None = None


_DECODER = msgspec.json.Decoder(_ServedEnvelope | _BatchEnvelope)
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)


@dataclass(frozen=True, slots=True)
class Predictions:
    """The predictions of one record, as the fast path decoded them."""

    event_id: str
    event_type: str
    deployment_id: str
    model: str
    items: tuple[Item, ...] | list[Item]
    traceparent: str | None


def decode_predictions(
    raw: bytes, *, now: datetime | None = None, max_future_skew: timedelta = timedelta(minutes=5)
) -> Predictions | None:
    """The predictions of a `prediction.served` or `prediction.batch` record, or None when the
    fast path cannot vouch for the record (then use `schemas.decode`)."""
    try:
        event = _DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    data = event.data
    if data is None or not data.deployment_id or not data.model:
        return None
    if event.subject is not None and event.subject != data.deployment_id:
        return None
    items: tuple[Item, ...] | list[Item] = data.predictions if isinstance(data, _Batch) else (data,)
    for item in items:
        if item.ok is (item.error_type is not None):  # error_type iff ok is false
            return None
    if now is not None:
        limit = now + max_future_skew
        if event.time > limit or any(item.event_time > limit for item in items):
            return None
    return Predictions(
        event.id,
        type(event).__struct_config__.tag,
        data.deployment_id,
        data.model,
        items,
        event.traceparent,
    )
