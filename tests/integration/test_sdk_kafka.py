"""The serving SDK against a real broker: predictions arrive complete, commands apply once,
and one trace runs from the controller's send to the router's apply and acknowledgement."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

import schemas as s
from controller.observability import extract_from_headers, span_context_of
from controller.sdk import CommandListener, PredictionReporter, emit
from controller.settings import Settings, load_settings
from tests.factories import T0
from tests.kafka_read import read_topic
from tests.otel import make_recorder

pytestmark = pytest.mark.kafka

MakeTopic = Callable[..., str]
#: A group that joins before a just-created topic's metadata reached the client is assigned
#: nothing until the next metadata refresh: make that come within the tests' 30 s.
FAST_METADATA = {"metadata_max_age_ms": 2_000}


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    return load_settings(bootstrap_servers=kafka_bootstrap)


def decoded(record: ConsumerRecord) -> s.Envelope[Any]:
    event = s.decode(record.value)
    assert isinstance(event, s.Envelope), event
    return event


def make_prediction(i: int) -> s.Prediction:
    return s.Prediction(
        version="v2" if i % 10 == 0 else "v1",
        cohort="canary" if i % 10 == 0 else "baseline",
        request_id=f"req-{i}",
        event_time=T0,
        latency_ms=float(i % 300),
        prediction=0.5,
    )


def make_command(**overrides: Any) -> s.Command:
    fields: dict[str, Any] = {
        "command_id": f"cmd-{uuid.uuid4().hex[:8]}",
        "deployment_id": "dep-1",
        "action": "set_traffic",
        "canary_percent": 25.0,
        "step": 1,
        "model": "fraud",
        "candidate_version": "v2",
        "baseline_version": "v1",
        "reason": "step 1: canary healthy",
        "issued_at": T0,
    }
    fields.update(overrides)
    return s.Command(**fields)


def poll_until(
    listener: CommandListener, done: Callable[[], bool], timeout_s: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        listener.poll_once(timeout_ms=200)


def test_reported_predictions_arrive_complete_in_keyed_traced_batches(
    settings: Settings, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=3)
    n = 1234
    rec = make_recorder()  # without a configured tracer there is no trace context to carry
    with PredictionReporter(
        settings,
        topic=topic,
        deployment_id="dep-1",
        model="fraud",
        source="fraud-serving",
        batch_size=500,
        tracer=rec.tracer,
    ) as reporter:
        accepted = sum(reporter.report(make_prediction(i)) for i in range(n))
        assert reporter.flush(timeout=30)
        stats = reporter.stats()

    def count(records: list[ConsumerRecord]) -> int:
        return sum(len(decoded(r).data.predictions) for r in records)

    records = read_topic(settings.bootstrap_servers, topic, lambda rs: count(rs) >= n)

    assert (n, n, 0, 0) == (accepted, stats.sent, stats.dropped, stats.send_errors)
    assert n == count(records)
    assert all(isinstance(decoded(r).data, s.PredictionBatch) for r in records)
    assert [f"req-{i}" for i in range(n)] == [
        p.request_id for r in records for p in decoded(r).data.predictions
    ]
    assert {b"dep-1"} == {r.key for r in records}
    send_spans = {span.context.span_id for span in rec.named(f"send {topic}")}
    for r in records:
        headers = dict(r.headers)
        assert headers["traceparent"].decode() == decoded(r).traceparent
        assert span_context_of(extract_from_headers(r.headers)).span_id in send_spans


def test_single_mode_sends_one_prediction_per_record(
    settings: Settings, make_topic: MakeTopic
) -> None:
    topic = make_topic()
    with PredictionReporter(
        settings,
        topic=topic,
        deployment_id="dep-1",
        model="fraud",
        source="fraud-serving",
        report_single=True,
    ) as reporter:
        for i in range(50):
            reporter.report(make_prediction(i))

    records = read_topic(settings.bootstrap_servers, topic, lambda rs: len(rs) >= 50)

    events = [decoded(r) for r in records]
    assert 50 == len(events)
    assert all(isinstance(e.data, s.PredictionServed) for e in events)
    assert {"dep-1"} == {e.data.deployment_id for e in events}


def test_a_command_produced_twice_is_applied_once_and_acknowledged(
    settings: Settings, make_topic: MakeTopic
) -> None:
    commands, acks = make_topic(), make_topic()
    command = make_command()
    record = s.make_event(command, source="rollout-controller", time=T0).to_json()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    for _ in range(2):
        producer.send(commands, value=record, key=b"dep-1")
    producer.flush(30)
    producer.close()
    applied: list[s.Command] = []

    with CommandListener(
        settings,
        apply=applied.append,
        applied_by="router-a",
        deployment_ids=["dep-1"],
        group_id=f"test-{uuid.uuid4()}",
        topic=commands,
        ack_topic=acks,
        ack_duplicates=False,
        consumer_options=FAST_METADATA,
    ) as listener:
        poll_until(listener, lambda: listener.stats().received >= 2)
        stats = listener.stats()

    assert [command] == applied
    assert (2, 1, 1) == (stats.received, stats.applied, stats.duplicates)
    (ack,) = read_topic(settings.bootstrap_servers, acks, lambda rs: len(rs) >= 1, timeout_s=10)
    event = decoded(ack)
    assert isinstance(event.data, s.TrafficApplied)
    assert (command.command_id, 25.0, "router-a") == (
        event.data.command_id,
        event.data.canary_percent,
        event.data.applied_by,
    )
    assert b"dep-1" == ack.key


def test_one_trace_from_the_controllers_send_to_the_routers_apply_and_ack(
    settings: Settings, make_topic: MakeTopic
) -> None:
    commands, acks = make_topic(), make_topic()
    rec = make_recorder()
    command = make_command()
    event = s.make_event(command, source="rollout-controller", time=T0)

    assert 1 == emit(settings, [event], topic_for=lambda _: commands, tracer=rec.tracer)
    with CommandListener(
        settings,
        apply=lambda _: None,
        applied_by="router-a",
        group_id=f"test-{uuid.uuid4()}",
        topic=commands,
        ack_topic=acks,
        tracer=rec.tracer,
        consumer_options=FAST_METADATA,
    ) as listener:
        poll_until(listener, lambda: listener.stats().applied >= 1)
    (ack,) = read_topic(settings.bootstrap_servers, acks, lambda rs: len(rs) >= 1, timeout_s=10)

    send, apply = rec.one(f"send {commands}"), rec.one(f"apply {commands}")
    assert send.context.trace_id == apply.context.trace_id
    assert apply.parent is not None and send.context.span_id == apply.parent.span_id
    ack_context = span_context_of(extract_from_headers(ack.headers))
    assert (apply.context.trace_id, apply.context.span_id) == (
        ack_context.trace_id,
        ack_context.span_id,
    )
    assert f"00-{apply.context.trace_id:032x}-" in (decoded(ack).traceparent or "")
