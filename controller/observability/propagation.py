"""W3C trace context across Kafka: record headers and the CloudEvents `traceparent` attribute.

Kafka-python record headers are a list of `(str, bytes)` pairs; the CloudEvents distributed
tracing extension carries the same W3C `traceparent` / `tracestate` strings in the envelope.
Both are read and written with the W3C propagator alone, whatever OTEL_PROPAGATORS says, so the
header and the attribute always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

#: Kafka record headers as kafka-python produces and consumes them.
Headers = Sequence[tuple[str, bytes | None]]

_W3C = TraceContextTextMapPropagator()


class _KafkaHeaderGetter(Getter[Headers | None]):
    def get(self, carrier: Headers | None, key: str) -> list[str] | None:
        values = [
            value.decode("latin-1")
            for name, value in carrier or ()
            if value is not None and name.lower() == key
        ]
        return values or None

    def keys(self, carrier: Headers | None) -> list[str]:
        return [name for name, _ in carrier or ()]


_GETTER = _KafkaHeaderGetter()


def _carrier(context: Context | None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=context)
    return carrier


def inject_headers(context: Context | None = None) -> list[tuple[str, bytes]]:
    """Kafka record headers carrying the span of `context` (default: the current context).

    Empty when there is no valid span to propagate."""
    return [(name, value.encode("ascii")) for name, value in _carrier(context).items()]


def extract_from_headers(headers: Headers | None, context: Context | None = None) -> Context:
    """The context the headers carry, on top of `context` (default: an empty context)."""
    return _W3C.extract(headers, context=context, getter=_GETTER)


def traceparent_of(context: Context | None = None) -> str | None:
    """The W3C `traceparent` of the span in `context` (default: current), for the envelope."""
    return _carrier(context).get("traceparent")


def tracestate_of(context: Context | None = None) -> str | None:
    """The W3C `tracestate` of the span in `context`, or None when it is empty."""
    return _carrier(context).get("tracestate") or None


def context_from_traceparent(traceparent: str | None, tracestate: str | None = None) -> Context:
    """A context whose (remote) parent span is the one the envelope attribute names.

    An absent or malformed `traceparent` gives an empty context: a span started in it is a root."""
    carrier = {"traceparent": traceparent} if traceparent else {}
    if traceparent and tracestate:
        carrier["tracestate"] = tracestate
    return _W3C.extract(carrier)


def span_context_of(context: Context) -> trace.SpanContext:
    """The span context held by `context` (invalid when it holds none)."""
    return trace.get_current_span(context).get_span_context()


def remote_parent(
    headers: Headers | None, traceparent: str | None = None, tracestate: str | None = None
) -> Context:
    """The parent of a consumer span: the record headers, else the envelope's `traceparent`."""
    context = extract_from_headers(headers)
    if span_context_of(context).is_valid:
        return context
    return context_from_traceparent(traceparent, tracestate)


def distinct_valid(contexts: Iterable[trace.SpanContext | None]) -> list[trace.SpanContext]:
    """Valid span contexts, each once, in first-seen order (for span links)."""
    seen: dict[tuple[int, int], trace.SpanContext] = {}
    for sc in contexts:
        if sc is not None and sc.is_valid:
            seen.setdefault((sc.trace_id, sc.span_id), sc)
    return list(seen.values())
