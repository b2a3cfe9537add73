"""`emit` sends envelopes to their topics with keys and trace headers, and says what failed."""

from __future__ import annotations

from typing import Any
from unittest.mock import create_autospec

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

import schemas as s
from controller.observability import extract_from_headers, span_context_of
from controller.sdk import EmitError, emit
from controller.settings import load_settings
from tests.factories import make_event, sample_payloads
from tests.otel import make_recorder

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def producer_sending(*outcomes: Future) -> tuple[Any, list[dict[str, Any]]]:
    producer = create_autospec(KafkaProducer, instance=True, spec_set=True)
    sent: list[dict[str, Any]] = []
    results = iter(outcomes)

    def send(
        topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Future:
        sent.append({"topic": topic, "value": value, "key": key, "headers": headers})
        return next(results, None) or Future().success(None)

    producer.send.side_effect = send
    return producer, sent


def test_each_event_goes_to_its_topic_keyed_with_trace_headers() -> None:
    rec = make_recorder()
    producer, sent = producer_sending()
    command, alert = (p for p in sample_payloads() if isinstance(p, s.Command | s.Alert))

    count = emit(
        load_settings(topic_prefix="staging."),
        [make_event(command), make_event(alert)],
        producer=producer,
        tracer=rec.tracer,
    )

    assert 2 == count
    assert [("staging.commands", b"dep-1"), ("staging.alerts", b"dep-1")] == [
        (r["topic"], r["key"]) for r in sent
    ]
    spans = rec.named("send staging.commands")
    (span,) = spans
    header_context = span_context_of(extract_from_headers(sent[0]["headers"]))
    assert span.context.span_id == header_context.span_id
    event = s.decode(sent[0]["value"])
    assert isinstance(event, s.Envelope)
    assert f"-{span.context.span_id:016x}-" in (event.traceparent or "")


def test_an_envelope_keeps_its_traceparent_and_the_send_joins_its_trace() -> None:
    rec = make_recorder()
    producer, sent = producer_sending()
    event = make_event(sample_payloads()[0], traceparent=TRACEPARENT)

    emit(None, [event], producer=producer, topic_for=lambda t: f"x.{t}", tracer=rec.tracer)

    assert TRACEPARENT == s.decode(sent[0]["value"]).traceparent  # type: ignore[union-attr]
    span = rec.one("send x.deployments")
    assert 0x0AF7651916CD43DD8448EB211C80319C == span.context.trace_id
    assert span.parent is not None and 0xB7AD6B7169203331 == span.parent.span_id


def test_undelivered_events_raise_with_the_count_and_the_first_error() -> None:
    producer, _ = producer_sending(Future().failure(KafkaTimeoutError("no leader")))
    events = [make_event(p) for p in sample_payloads()[:3]]

    with pytest.raises(EmitError, match=r"1 of 3 events were not delivered.*no leader"):
        emit(None, events, producer=producer, topic_for=str)
