"""The worker's Prometheus metrics and its health endpoints.

`WorkerMetrics` holds every metric of one worker in a registry of its own (a process runs one
worker; tests run many, each with its own registry). The agent, the prediction lane and the
label join report to it through plain methods, so none of them imports prometheus-client, and
the figures that are cheaper to read than to count (phases, lag) are read on a refresh.

`HealthServer` serves, on one port (`ROLLOUT_METRICS_PORT`):

- `/metrics`: the registry, in Prometheus' text format (OpenMetrics when asked for);
- `/healthz`: 200 while the worker's event loop turns (its heartbeat is younger than
  `stall_s`), 503 when it is stuck: the liveness probe;
- `/readyz`: 200 once the worker has joined its group, recovered its tables and started its
  lanes, 503 with the reason while it has not (a rebalance or a recovery makes it unready
  again): the readiness probe.

Both health bodies are JSON (`{"ok": true|false, "reason": ...}`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from schemas import Rejection

#: evaluation time buckets (s): a record is judged in tens of microseconds, a tick of many
#: rollouts in milliseconds
EVALUATION_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
TICK_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: rejection kinds a dead letter's reason label takes beyond the field errors' own kinds
_REFUSED, _INTERNAL, _OTHER = "refused", "internal_error", "other"


def rejection_reason(rejection: Rejection) -> str:
    """A dead letter's reason as a label of few values: the kind of its first field error
    (pydantic's error types, `json_invalid`, `wrong_topic`, ...), `refused` for a request the
    core could not apply, `internal_error` for a bug; never the free text."""
    for error in rejection.errors:
        if error.kind and error.kind != "key_base64":
            return error.kind
    if rejection.reason.startswith("refused"):
        return _REFUSED
    if rejection.reason.startswith("internal error"):
        return _INTERNAL
    return _OTHER


class WorkerMetrics:
    """Every metric of one worker (module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = False) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if process:  # the process' CPU, memory and file descriptors, Python's version
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        r = self.registry
        #: full topic name -> the topic's short name (the prefix dropped)
        self.topic_labels: dict[str, str] = {}
        self.events = Counter(
            "rollout_events",
            "Input records processed, by topic and event type.",
            ["topic", "type"],
            registry=r,
        )
        self.dead_letters = Counter(
            "rollout_dead_letters",
            "Records sent to the dead-letter topic, by source topic and reason.",
            ["topic", "reason"],
            registry=r,
        )
        self.commands = Counter(
            "rollout_commands", "Commands published, by action.", ["action"], registry=r
        )
        self.decisions = Counter(
            "rollout_decisions",
            "Decisions published: a rollout's by the phase it went to, a monitor's or a "
            "pipeline's by its action.",
            ["subject", "kind"],
            registry=r,
        )
        self.alerts = Counter(
            "rollout_alerts",
            "Alerts published, by kind, severity and status.",
            ["kind", "severity", "status"],
            registry=r,
        )
        self.rollouts = Gauge(
            "rollout_rollouts", "Rollouts held by this worker, by phase.", ["phase"], registry=r
        )
        self.live_rollouts = Gauge(
            "rollout_live_rollouts",
            "Rollouts held by this worker that are not finished (the ones a tick judges).",
            registry=r,
        )
        self.monitors = Gauge(
            "rollout_monitors",
            "Model monitors held by this worker, by stage.",
            ["stage"],
            registry=r,
        )
        self.firing = Gauge(
            "rollout_monitor_alerts_firing",
            "Alerts firing on the model monitors held by this worker.",
            registry=r,
        )
        self.evaluation = Histogram(
            "rollout_evaluation_seconds",
            "Time to judge one input record (`event`) or one tick of every due rollout, monitor "
            "and pipeline (`tick`), publishing included.",
            ["source"],
            buckets=EVALUATION_BUCKETS,
            registry=r,
        )
        self.tick_lag = Histogram(
            "rollout_tick_lag_seconds",
            "How late each tick starts after its point on the tick grid.",
            buckets=TICK_LAG_BUCKETS,
            registry=r,
        )
        self.last_tick = Gauge(
            "rollout_last_tick_timestamp_seconds",
            "When the last tick ran (Unix time): a worker whose ticks stop falls behind it.",
            registry=r,
        )
        self.lag = Gauge(
            "rollout_consumer_lag",
            "Records on an input partition not yet read by this worker (high watermark - "
            "position), by consumer group, topic and partition.",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.recovery = Gauge(
            "rollout_table_recovery_seconds",
            "How long the last recovery of the worker's tables from their changelogs took.",
            registry=r,
        )
        self.recoveries = Counter(
            "rollout_table_recoveries", "Recoveries of the worker's tables.", registry=r
        )
        self.ready = Gauge(
            "rollout_ready", "1 when the worker is ready (/readyz), 0 otherwise.", registry=r
        )
        self.lane_deltas = Counter(
            "rollout_lane_deltas",
            "Statistics deltas the prediction lane and the label join sent, by lane.",
            ["lane"],
            registry=r,
        )

    # ---- reports ----------------------------------------------------------------------

    def topic(self, name: str) -> str:
        return self.topic_labels.get(name, name)

    def event_in(self, topic: str, event_type: str, count: int = 1) -> None:
        self.events.labels(self.topic(topic), event_type).inc(count)

    def dead_letter(self, topic: str, rejection: Rejection) -> None:
        self.dead_letters.labels(self.topic(topic), rejection_reason(rejection)).inc()

    def command(self, action: str) -> None:
        self.commands.labels(action).inc()

    def decision(self, subject: str, kind: str) -> None:
        self.decisions.labels(subject, kind).inc()

    def alert(self, kind: str, severity: str, status: str) -> None:
        self.alerts.labels(kind, severity, status).inc()

    def set_counts(self, gauge: Gauge, counts: Mapping[str, int], known: Iterable[str]) -> None:
        """Set a gauge by label to `counts`, every label in `known` included (at 0)."""
        for label in {*known, *counts}:
            gauge.labels(label).set(counts.get(label, 0))

    def set_lag(self, group: str, lags: Mapping[tuple[str, int], int]) -> None:
        """The lag of each (topic, partition) a consumer group holds here; partitions it no
        longer holds are dropped."""
        current = {(self.topic(t), str(p)): lag for (t, p), lag in lags.items()}
        for labels in list(self._lag_labels(group)):
            if labels[1:] not in current:
                self.lag.remove(*labels)
        for (topic, partition), lag in current.items():
            self.lag.labels(group, topic, partition).set(max(0, lag))

    def _lag_labels(self, group: str) -> Iterable[tuple[str, str, str]]:
        for metric in self.lag.collect():
            for sample in metric.samples:
                if sample.labels.get("group") == group:
                    yield (group, sample.labels["topic"], sample.labels["partition"])


class HealthServer:
    """`/metrics`, `/healthz` and `/readyz` over HTTP, in a thread of its own (module
    docstring): the probes answer even while the event loop is busy or stuck."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        alive: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
        host: str = "0.0.0.0",
        port: int = 0,
    ) -> None:
        self.registry = registry
        self.alive = alive
        self.ready = ready
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="rollout-health", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._reply(200, content_type, encoder(server.registry))
                elif path in ("/healthz", "/readyz"):
                    ok, reason = (server.alive if path == "/healthz" else server.ready)()
                    body = json.dumps({"ok": ok, "reason": reason}).encode()
                    self._reply(200 if ok else 503, "application/json", body)
                else:
                    body = b"not found: /metrics, /healthz and /readyz are served here\n"
                    self._reply(404, "text/plain; charset=utf-8", body)

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Probes every few seconds are not news: nothing is logged per request."""

        return Handler
