"""The worker's metrics and its health server: reasons as labels of few values, lag gauges that
follow the partitions a worker holds, probes over real HTTP."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from controller.observability.metrics import HealthServer, WorkerMetrics, rejection_reason
from controller.stream.health import WorkerHealth
from schemas import FieldError, Rejection


def get(port: int, path: str, accept: str = "") -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def samples(metrics: WorkerMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_dead_letters_reason_is_its_first_errors_kind_never_its_free_text() -> None:
    invalid = Rejection(
        reason="not JSON: Invalid JSON at line 1 column 2",
        errors=(FieldError(loc="$", message="Invalid JSON", kind="json_invalid"),),
    )
    refused = Rejection(reason="refused: the rollout of ranker-7 has ended")
    bug = Rejection(reason="internal error while processing: KeyError: 'x'")

    assert "json_invalid" == rejection_reason(invalid)
    assert "refused" == rejection_reason(refused)
    assert "internal_error" == rejection_reason(bug)
    assert "other" == rejection_reason(Rejection(reason="something else"))


def test_dead_letters_and_events_are_labelled_by_the_topics_short_name() -> None:
    metrics = WorkerMetrics()
    metrics.topic_labels = {"prod.rollout.deployments": "deployments"}
    rejection = Rejection(
        reason="bad", errors=(FieldError(loc="type", message="x", kind="wrong_topic"),)
    )

    metrics.dead_letter("prod.rollout.deployments", rejection)
    metrics.event_in("prod.rollout.deployments", "invalid")
    found = samples(metrics)

    key = frozenset({("topic", "deployments"), ("reason", "wrong_topic")})
    assert 1 == found[("rollout_dead_letters_total", key)]
    key = frozenset({("topic", "deployments"), ("type", "invalid")})
    assert 1 == found[("rollout_events_total", key)]


def test_lag_gauges_follow_the_partitions_a_group_holds() -> None:
    metrics = WorkerMetrics()
    metrics.set_lag("workers", {("deployments", 0): 5, ("deployments", 1): 7})
    metrics.set_lag("workers.predictions", {("predictions", 0): 3})
    metrics.set_lag("workers", {("deployments", 1): 2})  # partition 0 went to another worker

    lags = {
        (dict(labels)["group"], dict(labels)["partition"]): value
        for (name, labels), value in samples(metrics).items()
        if name == "rollout_consumer_lag"
    }
    assert {("workers", "1"): 2, ("workers.predictions", "0"): 3} == lags


def test_phase_gauges_name_every_phase_even_at_zero() -> None:
    metrics = WorkerMetrics()
    metrics.set_counts(metrics.rollouts, {"progressing": 2}, ("progressing", "paused"))
    metrics.set_counts(metrics.rollouts, {}, ("progressing", "paused"))

    found = samples(metrics)
    assert 0 == found[("rollout_rollouts", frozenset({("phase", "progressing")}))]
    assert 0 == found[("rollout_rollouts", frozenset({("phase", "paused")}))]


def test_the_health_server_answers_probes_and_scrapes_over_http() -> None:
    metrics = WorkerMetrics(process=True)
    metrics.command("rollback")
    state = {"alive": (True, "the event loop turns"), "ready": (False, "rebalancing")}
    server = HealthServer(
        metrics.registry,
        alive=lambda: state["alive"],
        ready=lambda: state["ready"],
        host="127.0.0.1",
        port=0,
    ).start()
    try:
        status, kind, body = get(server.port, "/healthz")
        assert (200, "application/json") == (status, kind)
        assert {"ok": True, "reason": "the event loop turns"} == json.loads(body)
        status, _, body = get(server.port, "/readyz")
        assert (503, {"ok": False, "reason": "rebalancing"}) == (status, json.loads(body))
        state["ready"] = (True, "serving its partitions")
        assert 200 == get(server.port, "/readyz")[0]

        status, kind, body = get(server.port, "/metrics")
        assert 200 == status and kind.startswith("text/plain")
        assert 'rollout_commands_total{action="rollback"} 1.0' in body.decode()
        assert "process_cpu_seconds_total" in body.decode()
        _, kind, body = get(server.port, "/metrics", accept="application/openmetrics-text")
        assert kind.startswith("application/openmetrics-text")
        assert body.decode().rstrip().endswith("# EOF")
        assert 404 == get(server.port, "/")[0]
    finally:
        server.close()


def test_liveness_fails_when_the_event_loop_stops_turning() -> None:
    worker: Any = None  # alive() reads only the heartbeat
    health = WorkerHealth(worker, WorkerMetrics(), host="127.0.0.1", port=0, stall_s=30.0)

    assert health.alive()[0]
    health.beat = time.monotonic() - 31.0
    ok, reason = health.alive()
    assert not ok
    assert "has not turned for 31 s" in reason
