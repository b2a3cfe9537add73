"""The prediction reporter never blocks the serving path and accounts for every prediction.

The only stand-in is the Kafka producer (`spec_set` of kafka.KafkaProducer): its `send` records
what it is given and returns a kafka-python future that the test resolves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import create_autospec

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from kafka.future import Future
from opentelemetry.trace import SpanKind

import schemas as s
from controller.observability import extract_from_headers, span_context_of
from controller.sdk import PredictionReporter, ReporterStats
from controller.settings import load_settings
from tests.factories import T0
from tests.otel import Recorder, make_recorder

TOPIC = "rollout.predictions"


def prediction_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "version": "v2",
        "cohort": "canary",
        "request_id": "req-1",
        "event_time": T0,
        "latency_ms": 120.0,
        "prediction": 0.42,
    }
    fields.update(overrides)
    return fields


def make_item(**overrides: Any) -> s.Prediction:
    return s.Prediction(**prediction_fields(**overrides))


@dataclass
class Sent:
    topic: str
    value: bytes
    key: bytes
    headers: list[tuple[str, bytes]]

    def event(self) -> s.Envelope[Any]:
        event = s.decode(self.value)
        assert isinstance(event, s.Envelope), event
        return event


@dataclass
class FakeProducer:
    """A KafkaProducer stand-in whose sends succeed unless told otherwise."""

    producer: Any
    sent: list[Sent] = field(default_factory=list)
    outcome: Callable[[Sent], Future] = lambda _: Future().success(None)


def fake_producer() -> FakeProducer:
    producer = create_autospec(KafkaProducer, instance=True, spec_set=True)
    fake = FakeProducer(producer)

    def send(topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Future:
        record = Sent(topic, value, key, headers)
        fake.sent.append(record)
        return fake.outcome(record)

    producer.send.side_effect = send
    return fake


@pytest.fixture
def fake() -> FakeProducer:
    return fake_producer()


@pytest.fixture
def rec() -> Recorder:
    return make_recorder()


@pytest.fixture
def make_reporter(rec: Recorder) -> Iterator[Callable[..., PredictionReporter]]:
    made: list[PredictionReporter] = []

    def make(producer: Any, **kw: Any) -> PredictionReporter:
        kw.setdefault("deployment_id", "dep-1")
        kw.setdefault("model", "fraud")
        kw.setdefault("source", "fraud-serving")
        kw.setdefault("topic", TOPIC)
        kw.setdefault("tracer", rec.tracer)
        reporter = PredictionReporter(producer=producer, **kw)
        made.append(reporter)
        return reporter

    yield make
    for reporter in made:
        reporter.close(timeout=5)


def test_reported_predictions_arrive_as_one_keyed_batch_record(
    fake: FakeProducer, make_reporter: Callable[..., PredictionReporter]
) -> None:
    reporter = make_reporter(fake.producer, linger_ms=10_000)

    accepted = [reporter.report(make_item(request_id=f"req-{i}")) for i in range(5)]
    assert reporter.flush(timeout=5)

    assert [True] * 5 == accepted
    (record,) = fake.sent
    event = record.event()
    assert (TOPIC, b"dep-1") == (record.topic, record.key)
    assert isinstance(event.data, s.PredictionBatch)
    assert ("dep-1", "fraud", "fraud-serving") == (
        event.data.deployment_id,
        event.data.model,
        event.source,
    )
    assert [f"req-{i}" for i in range(5)] == [p.request_id for p in event.data.predictions]
    assert (
        ReporterStats(
            reported=5, sent=5, dropped=0, send_errors=0, invalid=0, queue_depth=0, records_sent=1
        )
        == reporter.stats()
    )


def test_keywords_are_a_prediction_and_the_event_time_defaults_to_the_clock(
    fake: FakeProducer, make_reporter: Callable[..., PredictionReporter]
) -> None:
    reporter = make_reporter(fake.producer, clock=lambda: T0)
    fields = prediction_fields()
    del fields["event_time"]

    assert reporter.report(**fields)
    assert reporter.flush(timeout=5)

    (item,) = fake.sent[0].event().data.predictions
    assert make_item(event_time=T0) == item


def test_batches_are_cut_at_batch_size(
    fake: FakeProducer, make_reporter: Callable[..., PredictionReporter]
) -> None:
    reporter = make_reporter(fake.producer, batch_size=3, linger_ms=10_000)

    for i in range(7):
        reporter.report(make_item(request_id=f"req-{i}"))
    assert reporter.flush(timeout=5)

    assert [3, 3, 1] == [len(r.event().data.predictions) for r in fake.sent]


def test_a_batch_is_sent_after_linger_without_a_flush(
    fake: FakeProducer, make_reporter: Callable[..., PredictionReporter]
) -> None:
    reporter = make_reporter(fake.producer, linger_ms=20)

    reporter.report(make_item())
    deadline = time.monotonic() + 5
    while not fake.sent and time.monotonic() < deadline:
        time.sleep(0.01)

    assert 1 == len(fake.sent)


def test_report_never_blocks_when_the_producer_hangs_and_counts_the_drops(
    fake: FakeProducer, make_reporter: Callable[..., PredictionReporter]
) -> None:
    entered, release, left = threading.Event(), threading.Event(), threading.Event()

    def hang(_: Sent) -> Future:
        entered.set()
        release.wait(120)
        left.set()
        return Future().success(None)

    fake.outcome = hang
    reporter = make_reporter(fake.producer, max_queue=10, batch_size=1, linger_ms=0)
    assert reporter.report(make_item(request_id="first"))
    assert entered.wait(5)  # the sender is stuck in send(): nothing leaves the queue now

    accepted = [reporter.report(make_item(request_id=f"req-{i}")) for i in range(15)]

    # Every call came back while the sender was still stuck in send(): none waited for it.
    assert not left.is_set()
    assert [True] * 10 + [False] * 5 == accepted
    stats = reporter.stats()
    assert (5, 10) == (stats.dropped, stats.queue_depth)

    release.set()
    assert reporter.close(timeout=5)
    assert (11, 5) == (reporter.stats().sent, reporter.stats().dropped)


def test_the_send_span_links_the_spans_current_when_predictions_were_reported(
    fake: FakeProducer, rec: Recorder, make_reporter: Callable[..., PredictionReporter]
) -> None:
    reporter = make_reporter(fake.producer, linger_ms=10_000)
    for i in range(3):
        with rec.tracer.start_as_current_span(f"request {i}"):
            reporter.report(make_item(request_id=f"req-{i}"))
    reporter.report(make_item(request_id="untraced"))
    assert reporter.flush(timeout=5)

    send = rec.one(f"send {TOPIC}")
    requests = [rec.one(f"request {i}").context for i in range(3)]
    assert [r.span_id for r in requests] == [link.context.span_id for link in send.links]
    assert SpanKind.PRODUCER == send.kind
    assert 4 == (send.attributes or {})["messaging.batch.message_count"]
    (record,) = fake.sent
    header_span = span_context_of(extract_from_headers(record.headers))
    assert (send.context.trace_id, send.context.span_id) == (
        header_span.trace_id,
        header_span.span_id,
    )
    assert dict(record.headers)["traceparent"].decode() == record.event().traceparent


def test_single_mode_sends_one_record_per_prediction_as_a_child_of_the_request(
    fake: FakeProducer, rec: Recorder, make_reporter: Callable[..., PredictionReporter]
) -> None:
    reporter = make_reporter(fake.producer, report_single=True)
    with rec.tracer.start_as_current_span("request"):
        reporter.report(make_item(request_id="req-1"))
    reporter.report(make_item(request_id="req-2"))
    assert reporter.flush(timeout=5)

    events = [r.event() for r in fake.sent]
    assert all(isinstance(e.data, s.PredictionServed) for e in events)
    assert ["req-1", "req-2"] == [e.data.request_id for e in events]
    assert ("dep-1", "fraud") == (events[0].data.deployment_id, events[0].data.model)
    request = rec.one("request")
    first, second = rec.named(f"send {TOPIC}")
    assert first.parent is not None and request.context.span_id == first.parent.span_id
    assert second.parent is None
    assert 2 == reporter.stats().records_sent


def test_an_invalid_prediction_is_counted_and_the_rest_are_sent(
    fake: FakeProducer, make_reporter: Callable[..., PredictionReporter]
) -> None:
    reporter = make_reporter(fake.producer, linger_ms=10_000)

    assert reporter.report(version="v2")  # no cohort, request id, latency: found later
    assert reporter.report(make_item())
    assert reporter.report(object())  # type: ignore[arg-type]  # a caller's bug must not raise
    assert reporter.flush(timeout=5)

    stats = reporter.stats()
    assert (3, 2, 1) == (stats.reported, stats.invalid, stats.sent)


def test_a_prediction_served_is_reported_as_its_prediction_fields(
    fake: FakeProducer, make_reporter: Callable[..., PredictionReporter]
) -> None:
    reporter = make_reporter(fake.producer)
    served = s.PredictionServed(deployment_id="dep-1", model="fraud", **prediction_fields())

    reporter.report(served)
    assert reporter.flush(timeout=5)

    assert (make_item(),) == fake.sent[0].event().data.predictions


def test_send_failures_are_counted_and_the_sender_goes_on(
    fake: FakeProducer, make_reporter: Callable[..., PredictionReporter]
) -> None:
    outcomes = iter(
        [
            KafkaTimeoutError("metadata"),
            Future().failure(NotLeaderForPartitionError()),
            Future().success(None),
        ]
    )

    def next_outcome(_: Sent) -> Future:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    fake.outcome = next_outcome
    reporter = make_reporter(fake.producer, batch_size=2, linger_ms=10_000)

    for i in range(6):
        reporter.report(make_item(request_id=f"req-{i}"))
    assert reporter.flush(timeout=5)

    stats = reporter.stats()
    assert (4, 2, 1) == (stats.send_errors, stats.sent, stats.records_sent)


def test_a_batch_too_large_for_one_record_is_split(
    fake: FakeProducer, make_reporter: Callable[..., PredictionReporter]
) -> None:
    reporter = make_reporter(fake.producer, linger_ms=10_000)
    blob = "x" * 200_000

    for i in range(8):
        reporter.report(make_item(request_id=f"req-{i}", features={"blob": blob}))
    reporter.report(make_item(request_id="huge", features={"blob": "x" * 1_100_000}))
    assert reporter.flush(timeout=5)

    assert all(len(r.value) <= s.MAX_RECORD_BYTES for r in fake.sent)
    sent_ids = [p.request_id for r in fake.sent for p in r.event().data.predictions]
    assert [f"req-{i}" for i in range(8)] == sent_ids
    stats = reporter.stats()
    assert (8, 1) == (stats.sent, stats.send_errors)


def test_after_close_reports_are_dropped_and_close_is_idempotent(
    fake: FakeProducer, make_reporter: Callable[..., PredictionReporter]
) -> None:
    reporter = make_reporter(fake.producer, linger_ms=10_000)
    reporter.report(make_item())

    assert reporter.close(timeout=5)
    assert reporter.close(timeout=5)
    assert not reporter.report(make_item())

    assert (1, 1) == (reporter.stats().sent, reporter.stats().dropped)
    fake.producer.flush.assert_called()
    fake.producer.close.assert_not_called()  # the caller's producer: the caller closes it


def test_the_context_manager_closes_and_sends_what_is_queued(fake: FakeProducer) -> None:
    with PredictionReporter(
        producer=fake.producer,
        topic=TOPIC,
        deployment_id="dep-1",
        model="fraud",
        source="svc",
        linger_ms=10_000,
    ) as reporter:
        reporter.report(make_item())

    assert 1 == len(fake.sent)


def test_without_a_broker_the_predictions_count_as_send_errors() -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:9")  # the discard port: nobody there
    reporter = PredictionReporter(
        settings,
        deployment_id="dep-1",
        model="fraud",
        source="svc",
        producer_options={"bootstrap_timeout_ms": 300},
    )
    try:
        for i in range(3):
            assert reporter.report(make_item(request_id=f"req-{i}"))
        assert reporter.flush(timeout=10)
        assert (3, 0) == (reporter.stats().send_errors, reporter.stats().sent)
        assert "rollout.predictions" == reporter.topic
    finally:
        reporter.close(timeout=5)


@pytest.mark.parametrize(
    ("option", "value"),
    [("batch_size", 0), ("batch_size", 10_001), ("max_queue", 0), ("linger_ms", -1)],
)
def test_nonsense_options_are_refused(fake: FakeProducer, option: str, value: int) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ValueError, match=option):
        PredictionReporter(
            producer=fake.producer,
            topic=TOPIC,
            deployment_id="dep-1",
            model="fraud",
            source="svc",
            **options,
        )
