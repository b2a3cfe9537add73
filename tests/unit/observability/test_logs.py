"""Log lines are JSON, carry the trace they belong to, and library chatter stays quiet."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from controller.observability import configure_logging
from tests.otel import make_recorder


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_inside_a_span_carries_its_trace_and_span_ids(stream: io.StringIO) -> None:
    configure_logging(stream=stream)
    rec = make_recorder()
    log = structlog.get_logger("controller.test")

    with rec.tracer.start_as_current_span("work") as span:
        log.info("rollout.transition", deployment="dep-1", to="progressing")
    log.info("outside")

    inside, outside = lines(stream)
    context = span.get_span_context()
    assert f"{context.trace_id:032x}" == inside["trace_id"]
    assert f"{context.span_id:016x}" == inside["span_id"]
    assert "rollout.transition" == inside["event"]
    assert "dep-1" == inside["deployment"]
    assert "info" == inside["level"]
    assert str(inside["timestamp"]).endswith("Z")
    assert "trace_id" not in outside


def test_standard_library_lines_pass_at_warning_and_share_the_format(
    stream: io.StringIO,
) -> None:
    configure_logging(stream=stream)
    rec = make_recorder()
    chatty = logging.getLogger("aiokafka.consumer")

    with rec.tracer.start_as_current_span("work") as span:
        chatty.info("joined group")
        chatty.warning("heartbeat failed for %s", "group-1")

    (line,) = lines(stream)
    assert "heartbeat failed for group-1" == line["event"]
    assert "warning" == line["level"]
    assert "aiokafka.consumer" == line["logger"]
    assert f"{span.get_span_context().trace_id:032x}" == line["trace_id"]


def test_own_lines_follow_the_level_and_library_lines_their_own(stream: io.StringIO) -> None:
    configure_logging("WARNING", stdlib_level="INFO", stream=stream)

    structlog.get_logger("controller.test").info("dropped")
    structlog.get_logger("controller.test").error("kept")
    logging.getLogger("faust").info("library info kept")

    assert ["kept", "library info kept"] == [line["event"] for line in lines(stream)]


def test_exceptions_are_rendered_into_the_line(stream: io.StringIO) -> None:
    configure_logging(stream=stream)

    try:
        raise ValueError("bad")
    except ValueError:
        structlog.get_logger("controller.test").exception("failed")

    (line,) = lines(stream)
    assert "ValueError: bad" in str(line["exception"])


def test_configuring_again_replaces_the_handler(stream: io.StringIO) -> None:
    configure_logging(stream=io.StringIO())
    configure_logging(stream=stream)

    structlog.get_logger("controller.test").warning("once")

    assert 1 == len(lines(stream))


def test_console_rendering_for_a_terminal(stream: io.StringIO) -> None:
    configure_logging(json=False, stream=stream)

    structlog.get_logger("controller.test").info("hello", who="sre")

    assert "hello" in stream.getvalue() and "who=sre" in stream.getvalue()


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", stream=io.StringIO())
