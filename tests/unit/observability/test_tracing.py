"""The tracer provider follows the standard OTEL_* variables."""

from __future__ import annotations

import io

import pytest
from opentelemetry import trace

from controller.observability import TracingConfigError, build_tracer_provider, configure_tracing
from controller.observability.tracing import exporter_names


def test_no_exporter_unless_asked() -> None:
    assert [] == exporter_names({})
    assert [] == exporter_names({"OTEL_TRACES_EXPORTER": "none"})
    assert ["otlp", "console"] == exporter_names({"OTEL_TRACES_EXPORTER": "otlp, Console"})


def test_an_unknown_exporter_names_the_known_ones() -> None:
    with pytest.raises(TracingConfigError, match="known: otlp, console, none"):
        exporter_names({"OTEL_TRACES_EXPORTER": "jaeger"})


def test_the_service_name_variable_wins_over_the_programs() -> None:
    named = build_tracer_provider("rollout-worker", {"OTEL_SERVICE_NAME": "fraud-router"})
    default = build_tracer_provider("rollout-worker", {})

    assert "fraud-router" == named.resource.attributes["service.name"]
    assert "rollout-worker" == default.resource.attributes["service.name"]


def test_the_console_exporter_prints_finished_spans() -> None:
    out = io.StringIO()
    provider = build_tracer_provider("svc", {"OTEL_TRACES_EXPORTER": "console"}, console_out=out)

    with provider.get_tracer("t").start_as_current_span("decide"):
        pass
    provider.shutdown()

    assert '"name": "decide"' in out.getvalue()


def test_the_otlp_exporter_is_built_from_the_environment() -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    provider = build_tracer_provider("svc", env)
    provider.shutdown()  # no span was started, so nothing is sent


def test_a_grpc_protocol_is_refused_with_what_to_set() -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(TracingConfigError, match="http/protobuf"):
        build_tracer_provider("svc", env)


def test_disabled_sdk_exports_nothing_even_when_asked() -> None:
    env = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "jaeger"}
    build_tracer_provider("svc", env)  # the unknown exporter is not even looked at


def test_configuring_twice_returns_the_first_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)

    first = configure_tracing("svc")
    second = configure_tracing("other")

    assert first is second
    assert first is trace.get_tracer_provider()
