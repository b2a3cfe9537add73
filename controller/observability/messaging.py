"""Kafka spans that follow the OpenTelemetry messaging semantic conventions.

A producer wraps each send in a PRODUCER span named `send <topic>`; a consumer wraps the handling
of one record in a CONSUMER span named `<operation> <topic>` (default `process <topic>`) whose
parent is the producer's span, read from the record headers or the CloudEvents `traceparent`.
A consumer that handles a batch in one go links every record's producer span instead.

Every helper takes an optional tracer; without one it asks the global provider at call time, so
library code never pins a provider and tests pass their own.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from controller.observability.propagation import (
    Headers,
    distinct_valid,
    extract_from_headers,
    remote_parent,
    span_context_of,
)

#: The instrumentation scope of every span this project records.
SCOPE = "rollout-controller"

SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
PARTITION = "messaging.destination.partition.id"
MESSAGE_KEY = "messaging.kafka.message.key"
OFFSET = "messaging.kafka.offset"
BATCH_COUNT = "messaging.batch.message_count"
CONSUMER_GROUP = "messaging.consumer.group.name"


class Operation(enum.StrEnum):
    """`messaging.operation.type`: what a span does with messages."""

    SEND = "send"
    RECEIVE = "receive"
    PROCESS = "process"

    def span_kind(self) -> SpanKind:
        return SpanKind.PRODUCER if self is Operation.SEND else SpanKind.CONSUMER


class HasHeaders(Protocol):
    """A consumed record as kafka-python returns it (only the headers are read)."""

    @property
    def headers(self) -> Headers | None: ...


def tracer_or_default(tracer: Tracer | None = None) -> Tracer:
    return tracer if tracer is not None else trace.get_tracer(SCOPE)


def _key_text(key: str | bytes | None) -> str | None:
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="replace")
    return key


def messaging_attributes(
    operation: Operation,
    topic: str,
    *,
    operation_name: str | None = None,
    key: str | bytes | None = None,
    partition: int | None = None,
    offset: int | None = None,
    batch_count: int | None = None,
    group: str | None = None,
) -> dict[str, AttributeValue]:
    """The semantic-convention attributes of a Kafka span; absent values are left out."""
    attrs: dict[str, AttributeValue] = {
        SYSTEM: "kafka",
        OPERATION_TYPE: operation.value,
        OPERATION_NAME: operation_name or operation.value,
        DESTINATION: topic,
    }
    key_text = _key_text(key)
    optional: dict[str, AttributeValue | None] = {
        MESSAGE_KEY: key_text,
        PARTITION: None if partition is None else str(partition),
        OFFSET: offset,
        BATCH_COUNT: batch_count,
        CONSUMER_GROUP: group,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    return attrs


@contextmanager
def send_span(
    topic: str,
    *,
    tracer: Tracer | None = None,
    key: str | bytes | None = None,
    context: Context | None = None,
    links: Sequence[Link] = (),
    batch_count: int | None = None,
) -> Iterator[Span]:
    """A current PRODUCER span `send <topic>`; inject its context into the record it sends."""
    attributes = messaging_attributes(Operation.SEND, topic, key=key, batch_count=batch_count)
    with tracer_or_default(tracer).start_as_current_span(
        f"send {topic}",
        context=context,
        kind=SpanKind.PRODUCER,
        links=links,
        attributes=attributes,
    ) as span:
        yield span


@contextmanager
def process_span(
    topic: str,
    *,
    tracer: Tracer | None = None,
    headers: Headers | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    key: str | bytes | None = None,
    partition: int | None = None,
    offset: int | None = None,
    group: str | None = None,
    operation_name: str = "process",
) -> Iterator[Span]:
    """A current CONSUMER span `<operation_name> <topic>` for one record.

    Its parent is the producer span that the record headers carry or, failing that, the one the
    envelope's `traceparent` names; with neither it starts a new trace. An exception escaping the
    block is recorded on the span and re-raised."""
    parent = remote_parent(headers, traceparent, tracestate)
    attributes = messaging_attributes(
        Operation.PROCESS,
        topic,
        operation_name=operation_name,
        key=key,
        partition=partition,
        offset=offset,
        group=group,
    )
    with tracer_or_default(tracer).start_as_current_span(
        f"{operation_name} {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield span


def links_to_records(records: Iterable[HasHeaders]) -> list[Link]:
    """One link to each distinct producer span that the records' headers carry."""
    contexts = (span_context_of(extract_from_headers(r.headers)) for r in records)
    return [Link(sc) for sc in distinct_valid(contexts)]


def start_batch_process_span(
    topic: str,
    records: Sequence[HasHeaders],
    *,
    tracer: Tracer | None = None,
    group: str | None = None,
    partition: int | None = None,
    operation_name: str = "process",
    context: Context | None = None,
) -> Span:
    """Start (not make current) a CONSUMER span for a batch, linked to every record's producer
    span. End it yourself, or use `with trace.use_span(span, end_on_exit=True):`."""
    attributes = messaging_attributes(
        Operation.PROCESS,
        topic,
        operation_name=operation_name,
        partition=partition,
        batch_count=len(records),
        group=group,
    )
    return tracer_or_default(tracer).start_span(
        f"{operation_name} {topic}",
        context=context,
        kind=SpanKind.CONSUMER,
        links=links_to_records(records),
        attributes=attributes,
    )
