"""The tracer provider of a process, configured from the standard OTEL_* variables.

    OTEL_TRACES_EXPORTER      otlp | console | none, or a comma list (default: none)
    OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT   read by the OTLP exporter
    OTEL_EXPORTER_OTLP_PROTOCOL   only http/protobuf is installed
    OTEL_SERVICE_NAME         overrides the service name the program passes
    OTEL_SDK_DISABLED=true    the provider hands out no-op tracers and nothing is exported

Only the process's entry point calls `configure_tracing`; library code takes a tracer argument.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from typing import TextIO

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from controller.errors import RolloutError

EXPORTERS = ("otlp", "console", "none")

_lock = threading.Lock()
_provider: TracerProvider | None = None


class TracingConfigError(RolloutError, ValueError):
    """An OTEL_* variable names something this build cannot do."""


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER asks for, checked against the known ones."""
    raw = environ.get("OTEL_TRACES_EXPORTER", "none")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()] or ["none"]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={raw!r}: unknown exporter {unknown[0]!r}; "
            f"known: {', '.join(EXPORTERS)}"
        )
    return [n for n in names if n != "none"]


def sdk_disabled(environ: Mapping[str, str]) -> bool:
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _exporter(name: str, environ: Mapping[str, str], console_out: TextIO | None) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter(out=console_out if console_out is not None else sys.stdout)
    protocol = environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol and protocol != "http/protobuf":
        raise TracingConfigError(
            f"OTLP protocol {protocol!r} is not installed; set OTEL_EXPORTER_OTLP_PROTOCOL="
            "http/protobuf (and the endpoint of an OTLP/HTTP receiver, port 4318 by default)"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def build_tracer_provider(
    service_name: str,
    environ: Mapping[str, str] | None = None,
    *,
    console_out: TextIO | None = None,
) -> TracerProvider:
    """A new provider as the variables in `environ` (default: the process's) describe it.

    The console exporter writes to `console_out` (default: standard output)."""
    env = os.environ if environ is None else environ
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    if not sdk_disabled(env):
        for name in exporter_names(env):
            provider.add_span_processor(BatchSpanProcessor(_exporter(name, env, console_out)))
    return provider


def configure_tracing(service_name: str) -> TracerProvider:
    """Build the process's provider from the environment and make it the global one.

    Idempotent: later calls return the provider of the first."""
    global _provider
    with _lock:
        if _provider is None:
            _provider = build_tracer_provider(service_name)
            trace.set_tracer_provider(_provider)
        return _provider
