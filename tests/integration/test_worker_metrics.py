"""The worker's metrics and probes, scraped over HTTP from a worker running on the real broker:
what it read, what it dead-lettered and why, what it decided and sent, the rollouts it holds by
phase, its lag, its recovery, and whether it is alive and ready."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from controller.engine import Engine
from controller.policy_io import default_policy
from controller.sdk import emit
from controller.settings import Settings
from controller.stream.app import RolloutWorker
from controller.stream.embedded import EmbeddedWorker
from controller.topics import topic_name
from schemas import DeploymentRequested, RolloutPlan, Topic, TrafficStep, make_event
from tests.integration.conftest import report_baseline

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def settings(worker_settings: Settings) -> Settings:
    return worker_settings


@pytest.fixture
def worker(settings: Settings) -> Iterator[EmbeddedWorker]:
    with EmbeddedWorker(RolloutWorker(settings, Engine(default_policy()))) as running:
        yield running


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(port: int) -> Samples:
    status, body = get(port, "/metrics")
    assert 200 == status
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_worker_serves_what_it_read_decided_and_holds(
    settings: Settings, worker: EmbeddedWorker
) -> None:
    health = worker.worker.health
    port = wait_for(lambda: health.port, "the metrics port")
    status, body = get(port, "/healthz")
    assert (200, True) == (status, json.loads(body)["ok"])
    wait_for(lambda: get(port, "/readyz")[0] == 200, "the worker to be ready")
    assert 404 == get(port, "/nothing-here")[0]

    deployment = DeploymentRequested(
        deployment_id="ranker-metrics",
        model="ranker",
        candidate_version="v2",
        baseline_version="v1",
        plan=RolloutPlan(
            steps=(
                TrafficStep(canary_percent=20, min_bake_s=600, min_samples=500),
                TrafficStep(canary_percent=100),
            )
        ),
    )
    emit(settings, [make_event(deployment, source="tests")])
    producer = KafkaProducer(**settings.kafka_client_options())
    producer.send(topic_name(settings, Topic.DEPLOYMENTS), key=b"ranker-metrics", value=b"{oops")
    producer.flush()
    producer.close()
    report_baseline(settings, "ranker-metrics", 50)

    def settled() -> Samples | None:
        samples = scrape(port)
        done = (
            value(samples, "rollout_commands_total", action="set_traffic")
            and value(
                samples, "rollout_dead_letters_total", topic="deployments", reason="json_invalid"
            )
            and (
                value(samples, "rollout_events_total", topic="predictions", type="prediction") or 0
            )
            >= 50
        )
        return samples if done else None

    samples = wait_for(settled, "the worker's counts")
    assert 1 == value(samples, "rollout_commands_total", action="set_traffic")
    assert 1 == value(
        samples, "rollout_dead_letters_total", topic="deployments", reason="json_invalid"
    )
    assert 1 == value(samples, "rollout_decisions_total", subject="rollout", kind="progressing")
    requested = DeploymentRequested.EVENT_TYPE
    assert 1 == value(samples, "rollout_events_total", topic="deployments", type=requested)
    assert 1 == value(samples, "rollout_events_total", topic="deployments", type="invalid")
    assert 50 == value(samples, "rollout_events_total", topic="predictions", type="prediction")
    assert 1 == value(samples, "rollout_rollouts", phase="progressing")
    assert 0 == value(samples, "rollout_rollouts", phase="rolled_back")
    assert 1 == value(samples, "rollout_live_rollouts")
    assert 1 == value(samples, "rollout_ready")
    assert (value(samples, "rollout_evaluation_seconds_count", source="event") or 0) >= 2
    assert (value(samples, "rollout_evaluation_seconds_count", source="tick") or 0) >= 1
    assert (value(samples, "rollout_tick_lag_seconds_count") or 0) >= 1
    assert (value(samples, "rollout_table_recoveries_total") or 0) >= 1
    assert value(samples, "rollout_table_recovery_seconds") is not None
    lags = {dict(labels)["group"] for (name, labels) in samples if name == "rollout_consumer_lag"}
    assert {settings.consumer_group, f"{settings.consumer_group}.predictions"} <= lags
    assert value(samples, "process_resident_memory_bytes")
