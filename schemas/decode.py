"""Bytes in, a typed event or a structured rejection out. Never raises into a stream."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from schemas.envelope import ENVELOPES, EVENT_ADAPTER, Envelope
from schemas.events import DeadLetter, FieldError, PredictionBatch, PredictionServed

MAX_RECORD_BYTES = 1_048_576
MAX_FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Rejection:
    """Why a record was rejected: a one-line reason and the problems field by field."""

    reason: str
    errors: tuple[FieldError, ...] = ()
    event_type: str | None = None
    event_id: str | None = None

    def to_dead_letter(
        self,
        raw: bytes,
        *,
        rejected_at: datetime,
        source_topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | str | None = None,
    ) -> DeadLetter:
        if isinstance(key, bytes):
            key = key.decode("utf-8", errors="replace")
        return DeadLetter(
            original_b64=base64.b64encode(raw).decode("ascii"),
            original_size=len(raw),
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key,
            reason=self.reason,
            errors=self.errors,
            rejected_at=rejected_at,
        )


def _loc(parts: tuple[int | str, ...]) -> str:
    # pydantic puts the union tag (the event type) first in the location; readers want the path
    if parts and parts[0] in ENVELOPES:
        parts = parts[1:]
    return ".".join(str(p) for p in parts)


def _rejection_from(exc: ValidationError, raw: bytes) -> Rejection:
    errors = tuple(
        FieldError(loc=_loc(tuple(e["loc"])) or "$", message=e["msg"], kind=e["type"])
        for e in exc.errors(include_url=False, include_input=False)
    )
    kinds = {e.kind for e in errors}
    if "json_invalid" in kinds:
        detail = errors[0].message
        truncated = "EOF" in detail or "end of" in detail
        reason = ("truncated JSON: " if truncated else "not JSON: ") + detail
        return Rejection(reason=reason, errors=errors)
    if errors[0].loc == "$" and errors[0].kind in (
        "dict_type",
        "model_type",
        "model_attributes_type",
    ):
        return Rejection(reason="not a JSON object: a CloudEvent must be an object", errors=errors)
    event_type, event_id = _peek(raw)
    if "union_tag_invalid" in kinds:
        return Rejection(
            reason=f"unknown event type {event_type!r}",
            errors=errors,
            event_type=event_type,
            event_id=event_id,
        )
    if "union_tag_not_found" in kinds:
        return Rejection(
            reason="missing event type (the CloudEvents 'type' attribute)", errors=errors
        )
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Rejection(
        reason=f"invalid {event_type or 'event'}: {first.loc}: {first.message}{more}",
        errors=errors,
        event_type=event_type,
        event_id=event_id,
    )


def _peek(raw: bytes) -> tuple[str | None, str | None]:
    """Best effort: the type and id of a record that failed validation, for the rejection."""
    import orjson

    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    t, i = doc.get("type"), doc.get("id")
    return (t if isinstance(t, str) else None), (i if isinstance(i, str) else None)


def _future_problems(event: Envelope[Any], limit: datetime) -> list[FieldError]:
    problems = []
    if event.time > limit:
        problems.append(
            FieldError(
                loc="time", message=f"{event.time.isoformat()} is in the future", kind="future"
            )
        )
    data = event.data
    if isinstance(data, PredictionServed) and data.event_time > limit:
        problems.append(
            FieldError(
                loc="data.event_time",
                message=f"{data.event_time.isoformat()} is in the future",
                kind="future",
            )
        )
    elif isinstance(data, PredictionBatch):
        for i, p in enumerate(data.predictions):
            if p.event_time > limit:
                problems.append(
                    FieldError(
                        loc=f"data.predictions.{i}.event_time",
                        message=f"{p.event_time.isoformat()} is in the future",
                        kind="future",
                    )
                )
                break
    return problems


def decode(
    raw: bytes | bytearray | memoryview | None,
    *,
    now: datetime | None = None,
    max_bytes: int = MAX_RECORD_BYTES,
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
) -> Envelope[Any] | Rejection:
    """Decode one record value into a typed event, or say precisely why not.

    `now` (the caller's clock; replay passes none) enables the check that timestamps are not
    further than `max_future_skew` in the future.
    """
    if raw is None:
        return Rejection(reason="empty record: no value (a tombstone is not an event)")
    raw = bytes(raw)
    if len(raw) > max_bytes:
        return Rejection(
            reason=f"oversized payload: {len(raw)} bytes > limit {max_bytes}",
            errors=(FieldError(loc="$", message=f"{len(raw)} bytes", kind="too_large"),),
        )
    if not raw.strip():
        return Rejection(reason="empty record: no bytes")
    try:
        event = EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        return _rejection_from(exc, raw)
    except Exception as exc:  # a decoder must never raise into the stream
        return Rejection(reason=f"undecodable record: {type(exc).__name__}: {exc}")
    if now is not None:
        problems = _future_problems(event, now + max_future_skew)
        if problems:
            return Rejection(
                reason=f"timestamp too far in the future: {problems[0].loc}: {problems[0].message}",
                errors=tuple(problems),
                event_type=event.type,
                event_id=event.id,
            )
    return event
