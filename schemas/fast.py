r"""The fast path for prediction and label records: the worker's hot loops decode them here.

`decode_predictions(raw)` accepts only what `schemas.decode` accepts, and returns lean values
(msgspec structs) instead of pydantic models, at about half the cost; `decode_label(raw)` does
the same for a `label.reported` record (the label join's input). Each is *sound* by design, not
complete: whenever it cannot vouch for a record (any failure, any other type) it answers `None`,
and the caller falls back to `schemas.decode`, which gives the full typed event or the
structured rejection. Tests check the soundness on every rejection case of `decode` and on
generated mutations of valid records. Like `decode`, it hands msgspec nothing larger than
`MAX_RECORD_BYTES`. Depth needs no scan of its own here: every type the fast path reads nests at
most five levels, so msgspec refuses a deeper value where it meets it, and one it must skip
(before the `type` tag) recurses until Python's recursion limit stops it; either way the record
goes to `decode`, which rejects anything nested deeper than `MAX_DEPTH` before parsing it. (A
scan on every record cost a fifth of the fast path's decode time.)

Identifiers are checked after decoding, not by msgspec's `pattern` (which runs a Python regex
per string and took two thirds of the decode time): an identifier is accepted only if it has no
line break and no whitespace (in the sense of `str.isspace`, a superset of the regex's `\s`) at
either end, which is stricter than `^\S(.*\S)?$`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from operator import attrgetter
from typing import Annotated, Literal

import msgspec

from schemas.decode import MAX_RECORD_BYTES
from schemas.envelope import TRACEPARENT_PATTERN
from schemas.events import MAX_BATCH, LabelReported, PredictionBatch, PredictionServed

#: an identifier's length; its blanks rule is checked by `_idents_ok`
Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
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


class Served(Item, forbid_unknown_fields=True, frozen=True, gc=False):
    """The data of a `prediction.served` record: one prediction and its deployment."""

    deployment_id: Ident = ""
    model: Ident = ""


class Batch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The data of a `prediction.batch` record."""

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
    traceparent: str | None = None  # checked by `_TRACEPARENT.fullmatch`
    tracestate: Annotated[str, msgspec.Meta(max_length=512)] | None = None


class _ServedEnvelope(_Envelope, tag=PredictionServed.EVENT_TYPE, frozen=True):
    data: Served | None = None


class _BatchEnvelope(_Envelope, tag=PredictionBatch.EVENT_TYPE, frozen=True):
    data: Batch | None = None


class LabelData(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """The data of a `label.reported` record, with the field names of `schemas.LabelReported`
    (a number label is a float, as there: an integer on the wire is accepted as a float)."""

    deployment_id: Ident
    request_id: Ident
    label: float | Name
    event_time: Aware


class _LabelEnvelope(_Envelope, tag=LabelReported.EVENT_TYPE, frozen=True):
    data: LabelData | None = None


#: a union (with a prediction's envelope, answered None) so that msgspec requires the type
#: tag: alone, a tagged struct takes a record without one
_LABEL_DECODER = msgspec.json.Decoder(_LabelEnvelope | _ServedEnvelope)

#: a prediction record as the fast path decodes it
PredictionEvent = _ServedEnvelope | _BatchEnvelope
_DECODER = msgspec.json.Decoder(PredictionEvent)
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)
_TAGS: dict[type[_Envelope], str] = {
    _ServedEnvelope: PredictionServed.EVENT_TYPE,
    _BatchEnvelope: PredictionBatch.EVENT_TYPE,
}
_VERSION = attrgetter("version")
_REQUEST_ID = attrgetter("request_id")
_EVENT_TIME = attrgetter("event_time")
_OK = attrgetter("ok")
_ERROR_TYPE = attrgetter("error_type")
MAX_FUTURE_SKEW = timedelta(minutes=5)


class Predictions(msgspec.Struct, frozen=True, gc=False):
    """The predictions of one record, as the fast path decoded them."""

    event_id: str
    event_type: str
    deployment_id: str
    model: str
    items: list[Item]
    traceparent: str | None


#: identifiers already found sound (deployment ids, model names and versions recur in every
#: record); bounded, cleared when full
_VETTED: set[str] = set()
_MAX_VETTED = 4096


def _idents_ok(idents: list[str]) -> bool:
    """No identifier has a line break or whitespace at either end (their lengths are checked
    by msgspec)."""
    return list(map(str.strip, idents)) == idents and "\n" not in "".join(idents)


def _pair_ok(a: str, b: str) -> bool:
    """`_idents_ok` for two identifiers that do not recur (an event id, a request id)."""
    return a.strip() == a and b.strip() == b and "\n" not in a and "\n" not in b


def _vetted(a: str, b: str, c: str) -> bool:
    """`_idents_ok` for identifiers that recur, remembered."""
    if a in _VETTED and b in _VETTED and c in _VETTED:
        return True
    if not _idents_ok([a, b, c]):
        return False
    if len(_VETTED) >= _MAX_VETTED:
        _VETTED.clear()
    _VETTED.update((a, b, c))
    return True


def decode_predictions(
    raw: bytes, *, now: datetime | None = None, max_future_skew: timedelta = MAX_FUTURE_SKEW
) -> Predictions | None:
    """The predictions of a `prediction.served` or `prediction.batch` record, or None when the
    fast path cannot vouch for the record (then use `schemas.decode`)."""
    event = _decode(raw, None if now is None else now + max_future_skew)
    if event is None:
        return None
    data = event.data
    assert data is not None  # _decode vouched for it
    items: list[Item] = data.predictions if isinstance(data, Batch) else [data]
    return Predictions(
        event.id, _TAGS[type(event)], data.deployment_id, data.model, items, event.traceparent
    )


def predictions_decoder(
    now: datetime, max_future_skew: timedelta = MAX_FUTURE_SKEW
) -> Callable[[bytes], PredictionEvent | None]:
    """The worker's hot path: `decode_predictions` for a group of records read at one time
    `now`, giving the decoded event as it is (its `data` is never None: a `Served`
    prediction, or a `Batch` of them)."""
    return partial(_decode, latest=now + max_future_skew)


def decode_label(
    raw: bytes, *, now: datetime | None = None, max_future_skew: timedelta = MAX_FUTURE_SKEW
) -> LabelData | None:
    """The data of a `label.reported` record, or None when the fast path cannot vouch for the
    record (then use `schemas.decode`)."""
    return label_decoder(now, max_future_skew)(raw) if now is not None else _label(raw, None)


def label_decoder(
    now: datetime, max_future_skew: timedelta = MAX_FUTURE_SKEW
) -> Callable[[bytes], LabelData | None]:
    """`decode_label` for a group of records read at one time `now`."""
    return partial(_label, latest=now + max_future_skew)


def _label(raw: bytes, latest: datetime | None) -> LabelData | None:
    """The record's label, when the fast path vouches for it."""
    if len(raw) > MAX_RECORD_BYTES:  # `decode` rejects it as oversized
        return None
    try:
        event = _LABEL_DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    if type(event) is not _LabelEnvelope:
        return None
    data = event.data
    if data is None:
        return None
    label = data.label
    if type(label) is float and not math.isfinite(label):  # a number too large: inf
        return None
    deployment_id, request_id, event_id = data.deployment_id, data.request_id, event.id
    if event.subject is not None and event.subject != deployment_id:
        return None
    traceparent = event.traceparent
    if traceparent is not None and _TRACEPARENT.fullmatch(traceparent) is None:
        return None
    if not _vetted(deployment_id, deployment_id, deployment_id):
        return None
    if not _pair_ok(event_id, request_id):
        return None
    if latest is not None and event.time > latest:  # as `decode`: the envelope's time
        return None
    return data


def _decode(raw: bytes, latest: datetime | None) -> PredictionEvent | None:
    """The record's event, when the fast path vouches for it."""
    if len(raw) > MAX_RECORD_BYTES:  # `decode` rejects it as oversized
        return None
    try:
        event: PredictionEvent = _DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    except RecursionError:  # a deep value skipped before the tag: `decode` rejects it
        return None
    data = event.data
    if data is None:
        return None
    deployment_id, model = data.deployment_id, data.model
    if not deployment_id or not model:
        return None
    if event.subject is not None and event.subject != deployment_id:
        return None
    traceparent = event.traceparent
    if traceparent is not None and _TRACEPARENT.fullmatch(traceparent) is None:
        return None
    # every prediction has an error_type iff it is not ok
    if isinstance(data, Batch):
        items = data.predictions
        if all(map(_OK, items)):
            if any(map(_ERROR_TYPE, items)):
                return None
        elif any(item.ok is (item.error_type is not None) for item in items):
            return None
        idents = [event.id, deployment_id, model, *set(map(_VERSION, items))]
        idents += map(_REQUEST_ID, items)
        if not _idents_ok(idents):
            return None
        if latest is not None and (event.time > latest or max(map(_EVENT_TIME, items)) > latest):
            return None
    else:
        if data.ok is (data.error_type is not None):
            return None
        if not _vetted(deployment_id, model, data.version):
            return None
        event_id, request_id = event.id, data.request_id
        if (
            event_id.strip() != event_id
            or request_id.strip() != request_id
            or "\n" in event_id
            or "\n" in request_id
        ):
            return None
        if latest is not None and (event.time > latest or data.event_time > latest):
            return None
    return event
