"""Structured logs: one JSON object a line, ISO UTC timestamps, and the trace of the line.

Our own loggers (`structlog.get_logger()`) and the standard library's (faust, aiokafka,
kafka-python) go through the same processors and the same renderer, so a line from a library
carries the same `timestamp`, `level` and `trace_id` fields as ours.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

_HANDLER_NAME = "rollout-controller"


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add `trace_id` and `span_id` (hex) of the current span, when there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def _orjson_dumps(obj: MutableMapping[str, Any], **_: Any) -> str:
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
    return orjson.dumps(obj, default=repr, option=options).decode()


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR")
    return number


def shared_processors() -> list[Processor]:
    """What every line goes through, ours and the standard library's, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_context,
    ]


def configure_logging(
    level: str | int = "INFO",
    json: bool = True,
    *,
    stdlib_level: str | int = "WARNING",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and route the standard library's records through the same renderer.

    `level` filters lines logged through structlog; `stdlib_level` filters lines logged straight
    to the standard library (faust and the Kafka clients are chatty at INFO). `json=False`
    renders for a terminal. Calling it again replaces the previous configuration."""
    out = stream if stream is not None else sys.stderr
    own_level = _level_number(level)
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared = shared_processors()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if json else _pass,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json else _pass,
            renderer,
        ],
    )
    foreign_level = _level_number(stdlib_level)
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    handler.addFilter(_SplitLevelFilter(own=own_level, foreign=foreign_level))

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(min(own_level, foreign_level))


class _SplitLevelFilter(logging.Filter):
    """Lines from structlog loggers pass at `own`, plain standard-library lines at `foreign`."""

    def __init__(self, *, own: int, foreign: int) -> None:
        super().__init__()
        self.own = own
        self.foreign = foreign

    def filter(self, record: logging.LogRecord) -> bool:
        from_structlog = isinstance(record.msg, dict)  # wrap_for_formatter passes the event dict
        return record.levelno >= (self.own if from_structlog else self.foreign)


def _pass(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return event_dict
