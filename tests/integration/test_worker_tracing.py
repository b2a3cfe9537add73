"""One trace from the predictions that hurt to the rollback that fixed it.

The worker runs embedded in this process (so its spans reach the same in-memory exporter as the
SDK's):
the reporter's send span, the lane's process span, the agent's process and decision spans, the
command's send span and the router's apply span must share one trace id.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from controller.engine import Engine
from controller.policy_io import default_policy
from controller.sdk import CommandListener, PredictionReporter, emit
from controller.settings import Settings
from controller.stream.app import RolloutWorker
from controller.stream.embedded import EmbeddedWorker
from controller.topics import stats_topic_name, topic_name
from schemas import (
    Command,
    CommandAction,
    DeploymentRequested,
    Prediction,
    RolloutPlan,
    Topic,
    TrafficStep,
    make_event,
)
from tests.otel import Recorder, make_recorder

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def recorder() -> Recorder:
    return make_recorder()


@pytest.fixture
def settings(worker_settings: Settings) -> Settings:
    return worker_settings


@pytest.fixture
def worker(settings: Settings, recorder: Recorder) -> Iterator[EmbeddedWorker]:
    engine = Engine(default_policy())
    with EmbeddedWorker(RolloutWorker(settings, engine, tracer=recorder.tracer)) as running:
        yield running


def test_a_rollback_is_one_trace_from_send_to_apply(
    settings: Settings, recorder: Recorder, worker: EmbeddedWorker
) -> None:
    applied: list[Command] = []
    listener = CommandListener(
        settings, apply=applied.append, applied_by="router-under-test", tracer=recorder.tracer
    )
    listener.start()
    deployment = DeploymentRequested(
        deployment_id="ranker-slow",
        model="ranker",
        candidate_version="v7",
        baseline_version="v6",
        plan=RolloutPlan(
            steps=(
                TrafficStep(canary_percent=20, min_bake_s=60, min_samples=500),
                TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
            )
        ),
    )
    emit(settings, [make_event(deployment, source="tests")], tracer=recorder.tracer)
    rng = random.Random(3)
    reporter = PredictionReporter(
        settings,
        deployment_id="ranker-slow",
        model="ranker",
        source="tests",
        linger_ms=20,
        tracer=recorder.tracer,
    )
    try:
        deadline = time.monotonic() + 90
        n = 0
        while time.monotonic() < deadline and not any(
            c.action is CommandAction.ROLLBACK for c in applied
        ):
            for _ in range(40):
                n += 1
                canary = n % 5 == 0
                reporter.report(
                    Prediction(
                        version="v7" if canary else "v6",
                        cohort="canary" if canary else "baseline",
                        request_id=f"r{n}",
                        event_time=datetime.now(UTC),
                        latency_ms=rng.lognormvariate(3.6, 0.3) * (3.0 if canary else 1.0),
                        prediction=rng.random(),
                    )
                )
            time.sleep(0.05)
    finally:
        reporter.close()
        listener.close()

    rollbacks = [c for c in applied if c.action is CommandAction.ROLLBACK]
    assert 1 == len(rollbacks), f"applied: {[c.action.value for c in applied]}"
    commands_topic = topic_name(settings, Topic.COMMANDS)
    apply_spans = [
        s
        for s in recorder.named(f"apply {commands_topic}")
        if s.attributes.get("messaging.kafka.message.key") == "ranker-slow"
    ]
    trace_ids = {s.context.trace_id for s in apply_spans}
    rollback_trace = _trace_with(recorder, trace_ids, "decide rollout", "rolled_back")
    names = {s.name for s in recorder.spans() if s.context.trace_id == rollback_trace}
    predictions_topic = topic_name(settings, Topic.PREDICTIONS)
    assert {
        f"send {predictions_topic}",  # the SDK's reporter
        f"process {predictions_topic}",  # the worker's prediction lane
        f"process {stats_topic_name(settings)}",  # the rollout agent
        "decide rollout",  # the decision
        f"send {commands_topic}",  # the command record
        f"apply {commands_topic}",  # the router's listener
    } <= names
    lane = next(
        s
        for s in recorder.spans()
        if s.context.trace_id == rollback_trace and s.name == f"process {predictions_topic}"
    )
    assert lane.links, "the lane's process span links the records of its batch"


def _trace_with(recorder: Recorder, trace_ids: set[int], name: str, to_phase: str) -> int:
    for span in recorder.named(name):
        if (
            span.context.trace_id in trace_ids
            and span.attributes.get("rollout.to_phase") == to_phase
        ):
            return span.context.trace_id
    raise AssertionError(f"no {name!r} span to {to_phase} in the traces of the apply spans")
