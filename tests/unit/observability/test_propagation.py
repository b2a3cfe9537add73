"""W3C trace context survives Kafka headers and the CloudEvents traceparent attribute."""

from __future__ import annotations

from opentelemetry import trace

from controller.observability import (
    context_from_traceparent,
    extract_from_headers,
    inject_headers,
    remote_parent,
    span_context_of,
    traceparent_of,
    tracestate_of,
)
from tests.otel import make_recorder


def test_headers_carry_the_span_from_producer_to_consumer() -> None:
    rec = make_recorder()
    with rec.tracer.start_as_current_span("produce") as span:
        headers = inject_headers()

    received = span_context_of(extract_from_headers(headers))

    sent = span.get_span_context()
    assert (sent.trace_id, sent.span_id) == (received.trace_id, received.span_id)
    assert received.is_remote
    ((name, value),) = headers
    assert "traceparent" == name
    assert value.decode().startswith(f"00-{sent.trace_id:032x}-{sent.span_id:016x}-")


def test_without_a_span_there_is_nothing_to_inject() -> None:
    assert [] == inject_headers()
    assert traceparent_of() is None


def test_an_explicit_context_is_injected_rather_than_the_current_one() -> None:
    rec = make_recorder()
    with rec.tracer.start_as_current_span("other"):
        with rec.tracer.start_as_current_span("chosen") as chosen:
            context = trace.set_span_in_context(chosen)
        headers = inject_headers(context)

    assert (
        chosen.get_span_context().span_id == span_context_of(extract_from_headers(headers)).span_id
    )


def test_header_names_are_case_insensitive_and_missing_values_are_ignored() -> None:
    rec = make_recorder()
    with rec.tracer.start_as_current_span("produce") as span:
        traceparent = traceparent_of()
    assert traceparent is not None
    headers = [("other", None), ("TraceParent", traceparent.encode())]

    assert (
        span.get_span_context().trace_id == span_context_of(extract_from_headers(headers)).trace_id
    )
    assert not span_context_of(extract_from_headers(None)).is_valid
    assert not span_context_of(extract_from_headers([("traceparent", None)])).is_valid


def test_a_span_started_from_the_envelope_traceparent_is_a_child_of_the_producer() -> None:
    rec = make_recorder()
    with rec.tracer.start_as_current_span("produce") as producer:
        traceparent = traceparent_of()

    with rec.tracer.start_as_current_span("consume", context=context_from_traceparent(traceparent)):
        pass

    consume = rec.one("consume")
    assert producer.get_span_context().trace_id == consume.context.trace_id
    assert consume.parent is not None
    assert producer.get_span_context().span_id == consume.parent.span_id


def test_tracestate_travels_with_the_traceparent() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    context = context_from_traceparent(traceparent, "vendor=abc,other=1")

    assert traceparent == traceparent_of(context)
    assert "vendor=abc,other=1" == tracestate_of(context)


def test_absent_or_malformed_traceparent_gives_a_root_context() -> None:
    for value in (None, "", "not-a-traceparent", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"):
        assert not span_context_of(context_from_traceparent(value)).is_valid


def test_the_consumer_parent_prefers_headers_then_the_envelope_attribute() -> None:
    from_headers = "00-11111111111111111111111111111111-1111111111111111-01"
    from_envelope = "00-22222222222222222222222222222222-2222222222222222-01"
    headers = [("traceparent", from_headers.encode())]

    assert from_headers == traceparent_of(remote_parent(headers, from_envelope))
    assert from_envelope == traceparent_of(remote_parent([], from_envelope))
    assert traceparent_of(remote_parent(None, None)) is None
