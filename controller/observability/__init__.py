"""The one place that configures structlog and OpenTelemetry, and carries trace context
through Kafka records and CloudEvents envelopes."""

from controller.observability.logs import add_trace_context, configure_logging
from controller.observability.messaging import (
    SCOPE,
    Operation,
    links_to_records,
    messaging_attributes,
    process_span,
    send_span,
    start_batch_process_span,
    tracer_or_default,
)
from controller.observability.propagation import (
    Headers,
    context_from_traceparent,
    extract_from_headers,
    inject_headers,
    remote_parent,
    span_context_of,
    traceparent_of,
    tracestate_of,
)
from controller.observability.tracing import (
    TracingConfigError,
    build_tracer_provider,
    configure_tracing,
)

__all__ = [
    "SCOPE",
    "Headers",
    "Operation",
    "TracingConfigError",
    "add_trace_context",
    "build_tracer_provider",
    "configure_logging",
    "configure_tracing",
    "context_from_traceparent",
    "extract_from_headers",
    "inject_headers",
    "links_to_records",
    "messaging_attributes",
    "process_span",
    "remote_parent",
    "send_span",
    "span_context_of",
    "start_batch_process_span",
    "traceparent_of",
    "tracer_or_default",
    "tracestate_of",
]
