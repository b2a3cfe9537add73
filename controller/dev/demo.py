"""`rollout demo`: two rollouts side by side on a real broker, a real worker, and a simulated
serving fleet that uses the SDK.

- `fraud-v2`: a healthy candidate, promoted through every traffic step.
- `ranker-v7`: a candidate whose latency is 2.5x the baseline's, rolled back by the worker.

The fleet reports predictions with `PredictionReporter` (batched, non-blocking), routes requests
to the canary with `assign_cohort` at the share the router last applied, and applies commands
with `CommandListener`, which acknowledges each with a `traffic.applied` event. The timeline
comes from the decisions, commands and alerts topics as the worker publishes them.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.settings import Settings, load_settings
from schemas import (
    Command,
    CommandAction,
    DeploymentRequested,
    MonitorDecision,
    Prediction,
    RolloutPlan,
    Topic,
    TrafficStep,
    decode,
    make_event,
)

TERMINAL = {"promoted", "rolled_back", "aborted"}


@dataclass
class Service:
    """One simulated model service: a baseline and a candidate behind a router."""

    deployment_id: str
    model: str
    baseline: str
    candidate: str
    latency_factor: float  # candidate latency / baseline latency
    rate: float  # requests per second across both cohorts
    canary_percent: float = 0.0
    finished: bool = False
    rng: random.Random = field(default_factory=random.Random)

    def latency_ms(self, canary: bool) -> float:
        base = self.rng.lognormvariate(math.log(38.0), 0.35)
        if self.rng.random() < 0.01:
            base *= self.rng.uniform(3, 6)  # the long tail
        return base * (self.latency_factor if canary else 1.0)


def _plan() -> RolloutPlan:
    return RolloutPlan(
        steps=(
            TrafficStep(canary_percent=10, min_bake_s=8, min_samples=60),
            TrafficStep(canary_percent=50, min_bake_s=8, min_samples=150),
            TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
        ),
        deadline_s=300,
        guardrails=(),
    )


def _fleet_loop(service: Service, reporter: Any, stop: threading.Event) -> None:
    from controller.sdk.cohort import assign_cohort

    tick = 0.05
    debt = 0.0
    n = 0
    while not stop.is_set() and not service.finished:
        debt += service.rate * tick
        now = datetime.now(UTC)
        while debt >= 1:
            debt -= 1
            n += 1
            user = f"user-{service.rng.randrange(1_000_000)}"
            cohort = assign_cohort(user, service.canary_percent, salt=service.deployment_id)
            canary = cohort.value == "canary"
            ok = service.rng.random() > 0.005
            reporter.report(
                Prediction(
                    version=service.candidate if canary else service.baseline,
                    cohort=cohort,
                    request_id=f"{service.deployment_id}-{n}",
                    event_time=now,
                    latency_ms=round(service.latency_ms(canary), 3),
                    ok=ok,
                    error_type=None if ok else "internal",
                    prediction=round(service.rng.betavariate(2, 5), 4) if ok else None,
                    user_key=user,
                )
            )
        time.sleep(tick)


class Timeline:
    """Prints the worker's decisions, commands and alerts as they arrive."""

    def __init__(
        self,
        settings: Settings,
        deployments: set[str],
        out: Callable[[str], None],
        models: set[str] | None = None,
    ):
        self.settings = settings
        self.deployments = deployments
        #: the models whose monitors' decisions are shown too
        self.models = models or set()
        #: the version each model's monitor watches, as its decisions say
        self.watched: dict[str, str] = {}
        self.out = out
        self.final: dict[str, str] = {}
        self.rollback_trace: dict[str, str] = {}
        self.commands: list[Command] = []
        self.started = time.monotonic()

    def follow(self, stop: threading.Event) -> None:
        from kafka import KafkaConsumer

        from controller.topics import topic_name

        consumer = KafkaConsumer(
            *(
                topic_name(self.settings, t)
                for t in (Topic.DECISIONS, Topic.COMMANDS, Topic.ALERTS)
            ),
            group_id=None,
            auto_offset_reset="earliest",
            consumer_timeout_ms=200,
            **self.settings.kafka_client_options(),
        )
        try:
            while not stop.is_set():
                for record in consumer:
                    self._show(decode(record.value))
        finally:
            consumer.close()

    def _show(self, event: Any) -> None:
        data = getattr(event, "data", None)
        t = f"{time.monotonic() - self.started:6.1f}s"
        if isinstance(data, MonitorDecision) and data.model in self.models:
            if data.version:
                self.watched[data.model] = data.version
            self.out(f"{t}  {data.model:10}  monitor {data.action}: {data.reason}")
            return
        if data is None or getattr(data, "deployment_id", None) not in self.deployments:
            return
        kind = event.type.removeprefix("dev.rollout.").removesuffix(".v1")
        if kind == "decision":
            self.out(
                f"{t}  {data.deployment_id:10}  {data.from_phase:>17} -> {data.to_phase:<17} "
                f"step {data.step} at {data.canary_percent:g}%: {data.reason}"
            )
            if data.to_phase in TERMINAL:
                self.final[data.deployment_id] = data.to_phase
        elif kind == "command":
            self.commands.append(data)
            self.out(
                f"{t}  {data.deployment_id:10}  command {data.action.value} "
                f"{data.canary_percent:g}%  [{data.command_id}]"
            )
            if data.action is CommandAction.ROLLBACK and event.traceparent:
                self.rollback_trace[data.deployment_id] = event.traceparent.split("-")[1]
        elif kind == "alert":
            self.out(
                f"{t}  {data.deployment_id:10}  alert {data.status} {data.severity.value} "
                f"{data.kind}: {data.summary}"
            )


@contextlib.contextmanager
def _broker(settings: Settings, out: Callable[[str], None]) -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield settings.bootstrap_servers
        return
    from controller.dev.kafka import LocalKafka

    broker = LocalKafka.from_settings(settings)
    was_running = broker.is_running()
    out(
        f"starting the local Kafka broker on 127.0.0.1:{settings.kafka_port} "
        "(the first run fetches its jars)..."
    )
    bootstrap = broker.start(timeout=180)
    try:
        yield bootstrap
    finally:
        if not was_running:
            broker.stop()


@contextlib.contextmanager
def _worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "worker", "--loglevel", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_demo(*, timeout_s: float = 110.0, out: Callable[[str], None] = print) -> int:
    from controller.observability import configure_logging
    from controller.sdk import CommandListener, PredictionReporter
    from controller.sdk.emit import emit
    from controller.topics import create_topics

    # the timeline is the demo's output; library chatter only when something goes wrong
    configure_logging(level="WARNING", json=False, stdlib_level="ERROR")
    run = uuid.uuid4().hex[:6]
    base = load_settings()
    with _broker(base, out) as bootstrap:
        settings = load_settings(
            bootstrap_servers=bootstrap,
            topic_prefix=f"demo.{run}.",
            topic_partitions=3,
            consumer_group=f"rollout-demo-{run}",
            tick_interval_s=0.5,
        )
        create_topics(settings)
        services = {
            "fraud-v2": Service("fraud-v2", "fraud", "v1", "v2", 1.0, 400.0, rng=random.Random(1)),
            "ranker-v7": Service(
                "ranker-v7", "ranker", "v6", "v7", 2.5, 400.0, rng=random.Random(2)
            ),
        }
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ROLLOUT_TOPIC_PREFIX": settings.topic_prefix,
            "ROLLOUT_TOPIC_PARTITIONS": str(settings.topic_partitions),
            "ROLLOUT_CONSUMER_GROUP": settings.consumer_group,
            "ROLLOUT_TICK_INTERVAL_S": str(settings.tick_interval_s),
            # the worker's folder beside its log, not in the directory the demo runs in
            "ROLLOUT_DATA_DIR": tempfile.gettempdir(),
            # its metrics and health on any free port (logged), not one that may be taken
            "ROLLOUT_METRICS_PORT": os.environ.get("ROLLOUT_METRICS_PORT", "0"),
        }
        log_path = Path(tempfile.gettempdir()) / f"rollout-demo-{run}-worker.log"
        out(f"broker {bootstrap}; topics demo.{run}.*; worker log {log_path}")

        def apply(command: Command) -> None:
            service = services.get(command.deployment_id)
            if service is None:
                return
            service.canary_percent = command.canary_percent
            if command.action.is_terminal():
                service.finished = True

        stop = threading.Event()
        timeline = Timeline(settings, set(services), out, {s.model for s in services.values()})
        with _worker(env, log_path) as worker, contextlib.ExitStack() as stack:
            listener = CommandListener(settings, apply=apply, applied_by=f"demo-router-{run}")
            listener.start()
            stack.callback(listener.close)
            reporters = {}
            for service in services.values():
                reporter = PredictionReporter(
                    settings,
                    deployment_id=service.deployment_id,
                    model=service.model,
                    source=f"demo-fleet/{service.model}",
                    linger_ms=100,
                )
                stack.callback(reporter.close)
                reporters[service.deployment_id] = reporter
            emit(
                settings,
                [
                    make_event(
                        DeploymentRequested(
                            deployment_id=s.deployment_id,
                            model=s.model,
                            candidate_version=s.candidate,
                            baseline_version=s.baseline,
                            plan=_plan(),
                            requested_by="demo",
                        ),
                        source="rollout-demo",
                    )
                    for s in services.values()
                ],
            )
            threads = [threading.Thread(target=timeline.follow, args=(stop,), daemon=True)]
            threads += [
                threading.Thread(
                    target=_fleet_loop, args=(s, reporters[s.deployment_id], stop), daemon=True
                )
                for s in services.values()
            ]
            for t in threads:
                t.start()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and set(timeline.final) != set(services):
                if worker.poll() is not None:
                    out(f"the worker exited with code {worker.returncode}; see {log_path}")
                    break
                time.sleep(0.2)
            # the rollouts hand production to their models' monitors right after their ends
            handed = {"fraud": "v2", "ranker": "v6"}
            settle = time.monotonic() + 5.0
            while time.monotonic() < settle and timeline.watched != handed:
                time.sleep(0.2)
            stop.set()
            for t in threads:
                t.join(timeout=5)
        out("")
        ok = timeline.final == {"fraud-v2": "promoted", "ranker-v7": "rolled_back"}
        for deployment_id in services:
            out(f"{deployment_id:10}  {timeline.final.get(deployment_id, 'unfinished')}")
        for model, version in sorted(timeline.watched.items()):
            out(f"{model:10}  monitored in production: version {version}")
        trace_id = timeline.rollback_trace.get("ranker-v7")
        if trace_id:
            out(f"trace of the rollback: {trace_id}")
        if not ok:
            out(f"the demo did not end as expected; the worker log is {log_path}")
        return 0 if ok else 1
