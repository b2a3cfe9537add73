"""Kafka spans follow the messaging semantic conventions and connect producer and consumer."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from controller.observability import (
    Operation,
    inject_headers,
    messaging_attributes,
    process_span,
    send_span,
    start_batch_process_span,
)
from controller.observability.propagation import Headers
from tests.otel import make_recorder


@dataclass
class Record:
    headers: Headers | None


def test_a_send_span_is_a_producer_span_named_after_the_topic() -> None:
    rec = make_recorder()

    with send_span("rollout.predictions", tracer=rec.tracer, key="dep-1", batch_count=3):
        pass

    span = rec.one("send rollout.predictions")
    assert SpanKind.PRODUCER == span.kind
    assert {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "rollout.predictions",
        "messaging.kafka.message.key": "dep-1",
        "messaging.batch.message_count": 3,
    } == dict(span.attributes or {})


def test_a_process_span_is_the_child_of_the_send_span_in_the_headers() -> None:
    rec = make_recorder()
    with send_span("rollout.commands", tracer=rec.tracer):
        headers = inject_headers()

    with process_span(
        "rollout.commands",
        tracer=rec.tracer,
        headers=headers,
        key=b"dep-1",
        partition=2,
        offset=41,
        group="router-a",
        operation_name="apply",
    ):
        pass

    sent, applied = rec.one("send rollout.commands"), rec.one("apply rollout.commands")
    assert SpanKind.CONSUMER == applied.kind
    assert applied.parent is not None
    assert sent.context.span_id == applied.parent.span_id
    assert sent.context.trace_id == applied.context.trace_id
    attributes = dict(applied.attributes or {})
    assert "process" == attributes["messaging.operation.type"]
    assert "apply" == attributes["messaging.operation.name"]
    assert "dep-1" == attributes["messaging.kafka.message.key"]
    assert "2" == attributes["messaging.destination.partition.id"]
    assert 41 == attributes["messaging.kafka.offset"]
    assert "router-a" == attributes["messaging.consumer.group.name"]


def test_a_process_span_falls_back_to_the_envelope_traceparent() -> None:
    rec = make_recorder()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    with process_span("t", tracer=rec.tracer, headers=[], traceparent=traceparent):
        pass

    span = rec.one("process t")
    assert 0x0AF7651916CD43DD8448EB211C80319C == span.context.trace_id
    assert span.parent is not None and 0xB7AD6B7169203331 == span.parent.span_id


def test_an_exception_in_a_process_span_is_recorded_and_raised() -> None:
    rec = make_recorder()

    with pytest.raises(RuntimeError), process_span("t", tracer=rec.tracer):
        raise RuntimeError("boom")

    span = rec.one("process t")
    assert StatusCode.ERROR == span.status.status_code
    assert ["exception"] == [e.name for e in span.events]


def test_a_batch_process_span_links_every_records_producer_span_once() -> None:
    rec = make_recorder()
    headers = []
    for i in range(3):
        with rec.tracer.start_as_current_span(f"send {i}"):
            headers.append(inject_headers())
    records = [Record(h) for h in headers] + [Record(headers[0]), Record(None), Record([])]

    span = start_batch_process_span("rollout.predictions", records, tracer=rec.tracer, group="g")
    span.end()

    batch = rec.one("process rollout.predictions")
    senders = [rec.one(f"send {i}").context for i in range(3)]
    assert [(s.trace_id, s.span_id) for s in senders] == [
        (link.context.trace_id, link.context.span_id) for link in batch.links
    ]
    assert SpanKind.CONSUMER == batch.kind
    assert 6 == (batch.attributes or {})["messaging.batch.message_count"]
    assert batch.parent is None


def test_absent_attributes_are_left_out() -> None:
    assert {
        "messaging.system": "kafka",
        "messaging.operation.type": "receive",
        "messaging.operation.name": "receive",
        "messaging.destination.name": "t",
    } == messaging_attributes(Operation.RECEIVE, "t")


def test_operations_know_their_span_kind() -> None:
    assert SpanKind.PRODUCER == Operation.SEND.span_kind()
    assert SpanKind.CONSUMER == Operation.PROCESS.span_kind()
