"""The CloudEvents 1.0 structured JSON envelope, with the W3C trace-context extension.

One envelope class per payload type; `Event` is their union, told apart by the `type` attribute.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, Union, cast

from pydantic import (
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    create_model,
    model_validator,
)

from schemas.base import Contract, Ident, Name, Timestamp
from schemas.events import PAYLOADS, Payload, Topic

P = TypeVar("P", bound=Payload)

TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
Traceparent = Annotated[str, Strict(), StringConstraints(pattern=TRACEPARENT_PATTERN)]
Tracestate = Annotated[str, Strict(), StringConstraints(max_length=512)]


class Envelope(Contract, Generic[P]):
    """A CloudEvents 1.0 event in structured JSON mode."""

    specversion: Literal["1.0"] = "1.0"
    id: Ident
    source: Name
    type: str
    time: Timestamp
    subject: Ident | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: Annotated[str, Strict(), StringConstraints(max_length=2048)] | None = None
    traceparent: Traceparent | None = None
    tracestate: Tracestate | None = None
    data: P

    PAYLOAD: ClassVar[builtins.type[Payload]]

    @model_validator(mode="after")
    def _subject_is_key(self) -> Envelope[P]:
        key = self.data.record_key()
        if self.subject is not None and key and self.subject != key:
            raise ValueError(
                f"subject {self.subject!r} must equal the record key {key!r} of the data"
            )
        return self

    @property
    def topic(self) -> Topic:
        return self.data.TOPIC

    def key(self) -> str:
        """The Kafka record key (the deployment id for rollout events)."""
        return self.subject or self.data.record_key()

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def _envelope_class(payload: type[Payload]) -> type[Envelope[Any]]:
    name = payload.__name__ + "Event"
    tag: Any = Literal[payload.EVENT_TYPE]  # one Literal per payload, built at import
    model: Any = create_model(
        name,
        __base__=Envelope[payload],  # type: ignore[valid-type]  # parametrised at runtime
        __module__=__name__,
        type=(tag, payload.EVENT_TYPE),
    )
    model.PAYLOAD = payload  # type: ignore[attr-defined]  # the pydantic plugin types create_model narrowly
    model.__doc__ = (
        f"CloudEvents envelope of {payload.EVENT_TYPE}: {(payload.__doc__ or '').strip()}"
    )
    return cast(type[Envelope[Any]], model)


ENVELOPES: dict[str, type[Envelope[Any]]] = {p.EVENT_TYPE: _envelope_class(p) for p in PAYLOADS}

#: Any event: the union of all envelopes, discriminated by `type`.
_ALL: Any = Union[tuple(ENVELOPES.values())]  # noqa: UP007  # built at runtime from PAYLOADS
Event: Any = Annotated[_ALL, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[Envelope[Any]] = TypeAdapter(Event)


def envelope_class(payload: type[Payload]) -> type[Envelope[Any]]:
    return ENVELOPES[payload.EVENT_TYPE]


def make_event(
    data: P,
    *,
    source: str,
    time: datetime | None = None,
    id: str | None = None,  # the CloudEvents attribute is called id
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> Envelope[P]:
    """Wrap a payload in its envelope. The subject is the record key; `time` defaults to now
    (callers in the core pass their own time) and `id` to a random UUID."""
    cls = ENVELOPES[data.EVENT_TYPE]
    event = cls(
        id=id or str(uuid.uuid4()),
        source=source,
        type=data.EVENT_TYPE,
        time=time or datetime.now(UTC),
        subject=data.record_key() or None,
        traceparent=traceparent,
        tracestate=tracestate,
        data=data,
    )
    return cast(Envelope[P], event)
