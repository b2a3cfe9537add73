"""Produce ready-made envelopes to their topics: what `rollout emit` does."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.trace import Tracer

from controller.errors import RolloutError
from controller.observability import (
    context_from_traceparent,
    inject_headers,
    send_span,
    traceparent_of,
    tracestate_of,
)
from controller.settings import Settings, load_settings
from controller.topics import topic_name
from schemas import Envelope, Topic


class EmitError(RolloutError):
    """Some events were not delivered; the message says how many and the first error."""


def emit(
    settings: Settings | None,
    events: Iterable[Envelope[Any]],
    *,
    producer: Any = None,
    topic_for: Callable[[Topic], str] | None = None,
    tracer: Tracer | None = None,
    timeout: float = 30.0,
) -> int:
    """Send each envelope to its topic, keyed by its record key, with W3C trace headers; wait
    for the broker and return how many it acknowledged. Raises EmitError if any failed.

    Each send is a PRODUCER span `send <topic>`. An envelope that carries a `traceparent` keeps
    it, and its send span joins that trace; one without gets the send span's. `topic_for` maps a
    logical topic to a name (default: the settings' prefix); `producer` is a kafka-python
    producer to use (default: one created from the settings, closed at the end)."""
    settings = settings or load_settings()
    name_of = topic_for or (lambda t: topic_name(settings, t))
    own = producer is None
    if own:
        from kafka import KafkaProducer

        producer = KafkaProducer(acks="all", **settings.kafka_client_options())
    futures = []
    try:
        for event in events:
            topic = name_of(event.topic)
            parent = context_from_traceparent(event.traceparent, event.tracestate)
            with send_span(
                topic,
                tracer=tracer,
                key=event.key(),
                context=parent if event.traceparent else None,
            ):
                if event.traceparent is None:
                    event = event.model_copy(
                        update={"traceparent": traceparent_of(), "tracestate": tracestate_of()}
                    )
                futures.append(
                    producer.send(
                        topic,
                        value=event.to_json(),
                        key=event.key().encode() or None,
                        headers=inject_headers(),
                    )
                )
        producer.flush(timeout=timeout)
    finally:
        if own:
            producer.close(timeout=timeout)
    failed = [f for f in futures if not f.succeeded()]
    if failed:
        first = failed[0].exception
        raise EmitError(
            f"{len(failed)} of {len(futures)} events were not delivered; first error: "
            f"{first!r}. Check that the broker is reachable and the topics exist "
            "(`rollout topics create`)."
        )
    return len(futures)
