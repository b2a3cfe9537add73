"""Report served predictions to Kafka without ever slowing the serving path.

`PredictionReporter.report()` only puts the prediction on a bounded in-memory queue; when the
queue is full the prediction is dropped and counted, never waited for. A daemon thread drains the
queue, groups predictions into `PredictionBatch` records (up to `batch_size`, or what arrived
within `linger_ms`), wraps each in a CloudEvents envelope and sends it keyed by deployment id.

Tracing: the sender wraps each record in a PRODUCER span `send <topic>` whose context goes into
the record headers and the envelope's `traceparent`. The span of a batch links the spans that
were current when each of its predictions was reported (one link per distinct span; the SDK
keeps the first 128); a single-prediction record (`report_single=True`) is instead a child of
the span current at `report()`.

What `report()` validates: nothing. Validation happens on the sender thread; a prediction that
fails it is counted as `invalid` and logged, never raised into the caller.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Status, StatusCode, Tracer
from pydantic import ValidationError

from controller.observability import (
    inject_headers,
    send_span,
    traceparent_of,
    tracer_or_default,
    tracestate_of,
)
from controller.observability.propagation import distinct_valid
from controller.settings import Settings, load_settings
from controller.topics import topic_name
from schemas import (
    MAX_RECORD_BYTES,
    Payload,
    Prediction,
    PredictionBatch,
    PredictionServed,
    Topic,
    make_event,
)
from schemas.events import MAX_BATCH

log = structlog.get_logger(__name__)

#: What the span of a batch links at most (the SDK's default span limit).
MAX_LINKS = 128
#: How often the sender logs that predictions were dropped.
DROP_LOG_INTERVAL_S = 10.0
#: How long the sender waits before it tries again to create a producer that failed.
CONNECT_BACKOFF_S = 5.0

Clock = Callable[[], datetime]
Item = tuple[Prediction | Mapping[str, Any], SpanContext]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ReporterStats:
    """Counts of predictions (not records) since the reporter started.

    Once the queue is drained: reported = sent + send_errors + invalid (+ in flight)."""

    reported: int
    """Accepted by report() onto the queue."""
    sent: int
    """In records the broker acknowledged."""
    dropped: int
    """Refused by report(): the queue was full, or the reporter closed."""
    send_errors: int
    """In records that could not be sent (no producer, broker error, too large)."""
    invalid: int
    """Accepted, then failed validation on the sender thread."""
    queue_depth: int
    records_sent: int


@dataclass
class _Control:
    """A marker on the queue: ship what is pending, flush the producer, maybe stop."""

    stop: bool
    timeout: float | None
    done: threading.Event = field(default_factory=threading.Event)


class PredictionReporter:
    """Reports served predictions of one deployment to the predictions topic.

    Use it as a context manager, or call `close()` at shutdown; a prediction still queued when
    the process exits without `close()` is lost.

    `producer` is a kafka-python `KafkaProducer` to use (its owner closes it); without one the
    reporter creates its own on the sender thread from `settings`, so constructing a reporter
    never waits for a broker. `topic` overrides the topic name the settings give.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        deployment_id: str,
        model: str,
        source: str,
        producer: Any = None,
        topic: str | None = None,
        max_queue: int = 10_000,
        batch_size: int = 500,
        linger_ms: float = 50,
        report_single: bool = False,
        compression_type: str | None = "gzip",
        producer_options: Mapping[str, Any] | None = None,
        tracer: Tracer | None = None,
        clock: Clock = utc_now,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be within [1, {MAX_BATCH}], got {batch_size}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        if linger_ms < 0:
            raise ValueError(f"linger_ms must not be negative, got {linger_ms}")
        if settings is None and (producer is None or topic is None):
            settings = load_settings()
        self.deployment_id = deployment_id
        self.model = model
        self.source = source
        if topic is None:
            assert settings is not None
            topic = topic_name(settings, Topic.PREDICTIONS)
        self.topic = topic
        self.batch_size = batch_size
        self.linger_s = linger_ms / 1000
        self.report_single = report_single
        self._settings = settings
        self._producer = producer
        self._owns_producer = producer is None
        self._producer_options = {
            "acks": 1,
            "enable_idempotence": False,  # idempotence needs acks=all
            "linger_ms": int(linger_ms),
            "compression_type": compression_type,
            "client_id": f"prediction-reporter.{deployment_id}",
            **(producer_options or {}),
        }
        self._tracer = tracer_or_default(tracer)
        self._clock = clock
        self._key = deployment_id.encode()
        self._queue: queue.Queue[Item | _Control] = queue.Queue(maxsize=max_queue)
        self._put = self._queue.put_nowait

        self._lock = threading.Lock()  # guards the counters below
        self._dequeued = 0
        self._dropped = 0
        self._sent = 0
        self._records_sent = 0
        self._send_errors = 0
        self._invalid = 0
        self._dropped_logged = 0
        self._next_drop_log = 0.0
        self._next_connect = 0.0
        self._next_error_log = 0.0

        self._closing = False
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"prediction-reporter.{deployment_id}", daemon=True
        )
        self._thread.start()

    # -- the serving path -----------------------------------------------------------------

    def report(self, prediction: Prediction | None = None, /, **fields: Any) -> bool:
        """Queue one prediction; True if queued, False if dropped. Never blocks, never raises.

        Pass a `schemas.Prediction`, or its fields as keywords (`event_time` defaults to the
        reporter's clock). Invalid fields are found later, on the sender thread."""
        try:
            if self._closing:
                self._count_drop()
                return False
            if prediction is None and "event_time" not in fields:
                fields["event_time"] = self._clock()
            context = trace.get_current_span().get_span_context()
            self._put((fields if prediction is None else prediction, context))
            return True
        except queue.Full:
            self._count_drop()
            return False
        except Exception:  # report() must never raise into the serving path
            self._count_drop()
            return False

    def _count_drop(self) -> None:
        with self._lock:
            self._dropped += 1

    # -- control ----------------------------------------------------------------------------

    def stats(self) -> ReporterStats:
        depth = self._queue.qsize()
        with self._lock:
            return ReporterStats(
                reported=self._dequeued + depth,
                sent=self._sent,
                dropped=self._dropped,
                send_errors=self._send_errors,
                invalid=self._invalid,
                queue_depth=depth,
                records_sent=self._records_sent,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything reported so far and wait for the broker; False if `timeout` passed
        first. Blocks: call it from a shutdown hook or a test, not on the serving path."""
        if not self._thread.is_alive():
            return self._queue.empty()
        return self._control(stop=False, timeout=timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Stop accepting predictions, send the queued ones, flush and stop. Idempotent.

        False if the queue could not be drained within `timeout` (what is left is lost)."""
        with self._close_lock:
            if self._closed:
                return True
            self._closing = True
            deadline = None if timeout is None else time.monotonic() + timeout
            drained = self._control(stop=True, timeout=timeout)
            if drained:
                self._thread.join(_remaining(deadline))
            if self._owns_producer and self._producer is not None:
                try:
                    self._producer.close(timeout=_remaining(deadline))
                except Exception as exc:  # closing must not fail the caller's shutdown
                    log.warning("reporter.producer_close_failed", error=repr(exc))
            self._closed = True
            if not drained:
                log.warning(
                    "reporter.close_timeout",
                    deployment=self.deployment_id,
                    left_in_queue=self._queue.qsize(),
                )
            return drained

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _control(self, *, stop: bool, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        marker = _Control(stop=stop, timeout=timeout)
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(_remaining(deadline))

    # -- the sender thread ------------------------------------------------------------------

    def _run(self) -> None:
        pending: list[Item] = []
        deadline = 0.0
        while True:
            try:
                if not pending:
                    entry = self._queue.get(timeout=DROP_LOG_INTERVAL_S)
                else:
                    wait = deadline - time.monotonic()
                    entry = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                self._ship(pending)
                pending = []
                self._log_drops()
                continue
            if isinstance(entry, _Control):
                self._ship(pending)
                pending = []
                self._flush_producer(entry.timeout)
                self._log_drops(force=True)
                entry.done.set()
                if entry.stop:
                    return
                continue
            with self._lock:
                self._dequeued += 1
            pending.append(entry)
            if len(pending) == 1:
                deadline = time.monotonic() + self.linger_s
            if len(pending) >= self.batch_size:
                self._ship(pending)
                pending = []
                self._log_drops()

    def _ship(self, items: Sequence[Item]) -> None:
        """Validate, then send the items as one batch record or one record each."""
        if not items:
            return
        try:
            checked = [(self._validate(item), ctx) for item, ctx in items]
            good = [(p, ctx) for p, ctx in checked if p is not None]
            if self.report_single:
                for p, ctx in good:
                    parent = trace.set_span_in_context(NonRecordingSpan(ctx), Context())
                    single = PredictionServed(
                        deployment_id=self.deployment_id, model=self.model, **_fields(p)
                    )
                    self._send(single, 1, context=parent if ctx.is_valid else Context())
            elif good:
                self._send_batch([p for p, _ in good], [ctx for _, ctx in good])
        except Exception:  # the sender thread must survive anything a batch does
            log.exception("reporter.ship_failed", deployment=self.deployment_id)
            with self._lock:
                self._send_errors += len(items)

    def _send_batch(self, predictions: list[Prediction], contexts: list[SpanContext]) -> None:
        links = [Link(sc) for sc in distinct_valid(contexts)[:MAX_LINKS]]
        batch = PredictionBatch(
            deployment_id=self.deployment_id, model=self.model, predictions=tuple(predictions)
        )
        if not self._send(batch, len(predictions), context=Context(), links=links):
            half = len(predictions) // 2
            self._send_batch(predictions[:half], contexts[:half])
            self._send_batch(predictions[half:], contexts[half:])

    def _validate(self, item: Prediction | Mapping[str, Any]) -> Prediction | None:
        try:
            if type(item) is Prediction:
                return item
            if isinstance(item, Prediction):  # a PredictionServed, say: keep the item fields
                return Prediction(**_fields(item))
            return Prediction(**item)
        except (ValidationError, TypeError) as exc:
            with self._lock:
                self._invalid += 1
                first = self._invalid == 1
            if first:  # the first one in full; the count shows how many followed
                log.warning("reporter.invalid_prediction", error=str(exc))
            return None

    def _send(
        self, payload: Payload, count: int, *, context: Context, links: Sequence[Link] = ()
    ) -> bool:
        """Send one record; False (and nothing sent) when it is too large and can be split."""
        producer = self._producer_or_none()
        if producer is None:
            with self._lock:
                self._send_errors += count
            return True
        with send_span(
            self.topic,
            tracer=self._tracer,
            key=self.deployment_id,
            context=context,
            links=links,
            batch_count=count if count > 1 else None,
        ) as span:
            event = make_event(
                payload,
                source=self.source,
                time=self._clock(),
                traceparent=traceparent_of(),
                tracestate=tracestate_of(),
            )
            value = event.to_json()
            if len(value) > MAX_RECORD_BYTES:
                span.set_status(Status(StatusCode.ERROR, f"record of {len(value)} bytes"))
                if count > 1:
                    return False
                with self._lock:
                    self._send_errors += count
                log.warning("reporter.record_too_large", size=len(value))
                return True
            try:
                future = producer.send(
                    self.topic, value=value, key=self._key, headers=inject_headers()
                )
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                self._on_error(count, exc)
                return True
            future.add_callback(self._on_sent, count)
            future.add_errback(self._on_error, count)
            return True

    def _on_sent(self, count: int, _metadata: object) -> None:
        with self._lock:
            self._sent += count
            self._records_sent += 1

    def _on_error(self, count: int, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            self._send_errors += count
            total = self._send_errors
            should_log = now >= self._next_error_log
            if should_log:
                self._next_error_log = now + DROP_LOG_INTERVAL_S
        if should_log:  # at most one line per interval; the total says how many
            log.error("reporter.send_failed", topic=self.topic, error=repr(exc), send_errors=total)

    def _producer_or_none(self) -> Any:
        if self._producer is not None:
            return self._producer
        now = time.monotonic()
        if now < self._next_connect:
            return None
        try:
            from kafka import KafkaProducer

            assert self._settings is not None  # set in __init__ whenever no producer is given
            options = {**self._settings.kafka_client_options(), **self._producer_options}
            self._producer = KafkaProducer(**options)
        except Exception as exc:
            self._next_connect = time.monotonic() + CONNECT_BACKOFF_S
            log.error(
                "reporter.producer_unavailable",
                error=repr(exc),
                retry_in_s=CONNECT_BACKOFF_S,
            )
            return None
        return self._producer

    def _flush_producer(self, timeout: float | None) -> None:
        if self._producer is None:
            return
        try:
            self._producer.flush(timeout=timeout)
        except Exception as exc:
            log.warning("reporter.flush_failed", error=repr(exc))

    def _log_drops(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_drop_log:
            return
        with self._lock:
            dropped = self._dropped
        if dropped > self._dropped_logged:
            log.warning(
                "reporter.dropped",
                deployment=self.deployment_id,
                dropped=dropped - self._dropped_logged,
                dropped_total=dropped,
                queue_max=self._queue.maxsize,
            )
            self._dropped_logged = dropped
        self._next_drop_log = now + DROP_LOG_INTERVAL_S


def _fields(prediction: Prediction) -> dict[str, Any]:
    """The fields of a `Prediction` (without those a subclass adds), as model objects."""
    return {name: getattr(prediction, name) for name in Prediction.model_fields}


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
