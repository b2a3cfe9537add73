"""The end-to-end harness: real workers on the real broker, a simulated fleet, an observer.

Each test gets its own world (`Rollouts`): a unique topic prefix and consumer group, its topics
created in code, worker processes started exactly as in production
(`python -m controller.cli worker`), a router (`CommandListener`) that applies the worker's
commands to a simulated serving fleet (`Fleet`, reporting through `PredictionReporter`), and an
`Observer` that reads everything the workers publish so a test can `wait_for` it.

Nothing here imitates Kafka or the worker: the only simulated part is the model servers.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from controller.sdk import CommandListener, PredictionReporter, assign_cohort, emit
from controller.settings import Settings, load_settings
from controller.stream.app import partition_of
from controller.topics import create_topics, topic_name
from schemas import (
    Alert,
    Cohort,
    Command,
    DeadLetter,
    Decision,
    DeploymentRequested,
    Envelope,
    MonitorDecision,
    Payload,
    Prediction,
    RolloutPlan,
    Topic,
    TrafficStep,
    decode,
    make_event,
)

TERMINAL_PHASES = frozenset({"promoted", "rolled_back", "aborted"})
#: What the observer reads: everything the workers publish.
OUTPUT_TOPICS = (Topic.DECISIONS, Topic.COMMANDS, Topic.ALERTS, Topic.DEAD_LETTER)
#: Seconds a test waits for something the worker should do "soon" (generous: CI is slow).
SOON_S = 30.0
TICK_INTERVAL_S = 0.5
PARTITIONS = 3
#: Faust's group session (default 60 s) decides how long a restarted worker waits for its dead
#: predecessor's partitions; 6 s is the broker's minimum. Faust reads these from the environment.
FAUST_ENV = {
    "BROKER_SESSION_TIMEOUT": "6",
    "BROKER_HEARTBEAT_INTERVAL": "1",
    "BROKER_REBALANCE_TIMEOUT": "20",
}


# ---------------------------------------------------------------------------------------------
# Plans and requests
# ---------------------------------------------------------------------------------------------


def step(
    percent: float, *, bake_s: float = 2.0, samples: int = 50, approval: bool = False
) -> TrafficStep:
    """One traffic step with small gates (the policy's defaults are 60 s and 200 samples)."""
    return TrafficStep(
        canary_percent=percent,
        min_bake_s=bake_s,
        min_samples=samples,
        requires_approval=approval,
    )


def plan(*steps: TrafficStep, **kw: Any) -> RolloutPlan:
    """A plan of `steps` (default 10 / 50 / 100 %, 2 s and 50 canary requests each) and the
    policy's guardrails as they are."""
    return RolloutPlan(steps=steps or (step(10), step(50), step(100)), **kw)


def deployment_request(
    deployment_id: str,
    rollout_plan: RolloutPlan | None = None,
    *,
    model: str = "fraud",
    baseline: str = "v1",
    candidate: str = "v2",
) -> DeploymentRequested:
    return DeploymentRequested(
        deployment_id=deployment_id,
        model=model,
        candidate_version=candidate,
        baseline_version=baseline,
        plan=rollout_plan or plan(),
        requested_by="e2e",
    )


# ---------------------------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------------------------


class WorkerProcess:
    """`rollout worker` as a subprocess, its output in a log file."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> WorkerProcess:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"==== {self.name}: start #{self.starts} ====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "worker", "--loglevel", "info"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_path.parent,  # its `<group>-data` folder goes beside its log
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed or committed."""
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM without waiting: Faust stops its agents, commits and leaves the group."""
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_lines(self) -> list[str]:
        if not self.log_path.exists():
            return []
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_lines()[-lines:])


# ---------------------------------------------------------------------------------------------
# The observer: everything the workers publish
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    topic: Topic
    event: Envelope[Any]
    partition: int
    offset: int


class Observer:
    """Reads the decisions, commands, alerts and dead-letter topics from the start, on a thread.

    The lists keep every record as published (duplicates included), in the order read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._by_name = {topic_name(settings, t): t for t in OUTPUT_TOPICS}
        self._seen: list[Seen] = []
        self._undecodable: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-observer", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> Observer:
        self._thread.start()
        if not self._ready.wait(SOON_S):
            raise AssertionError("the observer's consumer did not start")
        if self._error is not None:
            raise self._error
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            consumer = KafkaConsumer(
                *self._by_name,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # the topics may be created after this subscribes: learn of them within a second
                metadata_max_age_ms=1_000,
                **self.settings.kafka_client_options(),  # type: ignore[arg-type]
            )
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=100)
                if not polled:
                    continue
                with self._cond:
                    for records in polled.values():
                        for r in records:
                            event = decode(r.value)
                            if isinstance(event, Envelope):
                                seen = Seen(self._by_name[r.topic], event, r.partition, r.offset)
                                self._seen.append(seen)
                            else:
                                self._undecodable.append((r.topic, r.value))
                    self._cond.notify_all()
        finally:
            consumer.close()

    # ---- reading ----------------------------------------------------------------------

    def records(self, topic: Topic, deployment_id: str | None = None) -> list[Seen]:
        with self._cond:
            return [
                s
                for s in self._seen
                if s.topic is topic and (deployment_id is None or s.event.key() == deployment_id)
            ]

    def decisions(self, deployment_id: str) -> list[Decision]:
        """A rollout's decisions (not its model's monitor's, which share the topic and may
        share the key when a deployment is named after its model)."""
        return [
            s.event.data
            for s in self.records(Topic.DECISIONS, deployment_id)
            if isinstance(s.event.data, Decision)
        ]

    def monitor_decisions(self, model: str) -> list[MonitorDecision]:
        return [
            s.event.data
            for s in self.records(Topic.DECISIONS, model)
            if isinstance(s.event.data, MonitorDecision)
        ]

    def commands(self, deployment_id: str) -> list[Command]:
        return [s.event.data for s in self.records(Topic.COMMANDS, deployment_id)]

    def alerts(self, deployment_id: str) -> list[Alert]:
        """A rollout's alerts (its model's monitor's left out: their kind is monitor.*)."""
        return [
            s.event.data
            for s in self.records(Topic.ALERTS, deployment_id)
            if not s.event.data.kind.startswith("monitor.")
        ]

    def dead_letters(self) -> list[DeadLetter]:
        return [s.event.data for s in self.records(Topic.DEAD_LETTER)]

    def undecodable(self) -> list[tuple[str, bytes]]:
        with self._cond:
            return list(self._undecodable)

    def phase(self, deployment_id: str) -> str | None:
        """The phase of the latest decision for the deployment (None before the first)."""
        decisions = self.decisions(deployment_id)
        return decisions[-1].to_phase if decisions else None

    def terminal(self, deployment_id: str) -> Decision | None:
        return next(
            (d for d in self.decisions(deployment_id) if d.to_phase in TERMINAL_PHASES), None
        )

    # ---- waiting ----------------------------------------------------------------------

    def wait_for(
        self,
        predicate: Callable[[], Any],
        *,
        timeout: float = SOON_S,
        what: str,
        diagnose: Callable[[], str] | None = None,
    ) -> Any:
        """Wait until `predicate()` is truthy and return its value; AssertionError at timeout.

        Re-checked on every record read and every 0.1 s (for conditions outside the topics)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                detail = diagnose() if diagnose else ""
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{detail}")
            with self._cond:
                self._cond.wait(min(left, 0.1))

    def holds(
        self,
        predicate: Callable[[], Any],
        *,
        for_s: float,
        what: str,
        diagnose: Callable[[], str] | None = None,
    ) -> None:
        """Assert `predicate()` stays truthy for `for_s` seconds (checked as records arrive)."""
        deadline = time.monotonic() + for_s
        while time.monotonic() < deadline:
            if not predicate():
                detail = diagnose() if diagnose else ""
                raise AssertionError(f"{what} did not hold for {for_s:g} s\n{detail}")
            with self._cond:
                self._cond.wait(min(max(deadline - time.monotonic(), 0.0), 0.1))
        if not predicate():
            raise AssertionError(f"{what} did not hold for {for_s:g} s")

    def timeline(self, deployment_ids: Iterable[str] | None = None) -> str:
        """What was published, one line a record, for failure messages."""
        wanted = None if deployment_ids is None else set(deployment_ids)
        lines = []
        with self._cond:
            seen = list(self._seen)
        for s in seen:
            key = s.event.key()
            if wanted is not None and key not in wanted and s.topic is not Topic.DEAD_LETTER:
                continue
            d = s.event.data
            if isinstance(d, Decision):
                line = f"decision {key} {d.from_phase}->{d.to_phase} step {d.step}: {d.reason}"
            elif isinstance(d, Command):
                line = f"command  {key} {d.action.value} {d.canary_percent:g}% [{d.command_id}]"
            elif isinstance(d, Alert):
                line = f"alert    {key} {d.status} {d.severity.value} {d.kind}: {d.summary}"
            elif isinstance(d, DeadLetter):
                line = f"dead     {d.source_topic}@{d.offset} key={d.key}: {d.reason}"
            else:
                line = f"{s.event.type} {key}"
            lines.append(line[:400])
        return "\n".join(lines) or "(nothing published)"


# ---------------------------------------------------------------------------------------------
# The serving side: a fleet per deployment and one router for all of them
# ---------------------------------------------------------------------------------------------


@dataclass
class Fleet:
    """The model servers of one deployment: baseline and candidate behind a router.

    Requests arrive at `rate` per second; a sticky hash of the user sends `canary_percent` of
    them to the candidate (the share the router last applied). Each served request is reported
    through `PredictionReporter` with event_time now. `canary_silent` models a candidate that
    receives its share of traffic and emits nothing at all.
    """

    deployment: DeploymentRequested
    settings: Settings
    rate: float = 400.0
    latency_ms: float = 40.0
    canary_latency_factor: float = 1.0
    error_rate: float = 0.002
    canary_error_rate: float | None = None
    canary_silent: bool = False
    seed: int = 0
    canary_percent: float = 0.0
    #: Stop serving once a terminal command is applied (the rollout is over).
    stop_on_terminal: bool = True
    served: dict[str, int] = field(default_factory=lambda: {"baseline": 0, "canary": 0})
    reported: dict[str, int] = field(default_factory=lambda: {"baseline": 0, "canary": 0})
    applied: list[Command] = field(default_factory=list)
    finished: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.reporter = PredictionReporter(
            self.settings,
            deployment_id=self.deployment.deployment_id,
            model=self.deployment.model,
            source=f"e2e-fleet/{self.deployment.model}",
            linger_ms=50,
        )
        self._thread = threading.Thread(
            target=self._run, name=f"fleet-{self.deployment.deployment_id}", daemon=True
        )

    @property
    def deployment_id(self) -> str:
        return self.deployment.deployment_id

    def start(self) -> Fleet:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.reporter.close(timeout=10)

    def apply(self, command: Command) -> None:
        """The router's side of a command: move the traffic share."""
        with self._lock:
            self.applied.append(command)
            self.canary_percent = command.canary_percent
            if command.action.is_terminal() and self.stop_on_terminal:
                self.finished = True

    def _latency(self, canary: bool) -> float:
        base = self.rng.lognormvariate(math.log(self.latency_ms), 0.2)
        return round(base * (self.canary_latency_factor if canary else 1.0), 3)

    def _run(self) -> None:
        tick, debt, n = 0.05, 0.0, 0
        dep = self.deployment
        while not self._stop.is_set():
            if self.finished:
                self._stop.wait(tick)
                continue
            debt += self.rate * tick
            now = datetime.now(UTC)
            with self._lock:
                percent = self.canary_percent
            while debt >= 1:
                debt -= 1
                n += 1
                user = f"user-{self.rng.randrange(1_000_000)}"
                cohort = assign_cohort(user, percent, salt=dep.deployment_id)
                canary = cohort is Cohort.CANARY
                self.served[cohort.value] += 1
                if canary and self.canary_silent:
                    continue
                rate = self.canary_error_rate if canary else None
                ok = self.rng.random() >= (self.error_rate if rate is None else rate)
                self.reporter.report(
                    Prediction(
                        version=dep.candidate_version if canary else dep.baseline_version,
                        cohort=cohort,
                        request_id=f"{dep.deployment_id}-{n}",
                        event_time=now,
                        latency_ms=self._latency(canary),
                        ok=ok,
                        error_type=None if ok else "internal",
                        prediction=round(self.rng.betavariate(2, 5), 4) if ok else None,
                        user_key=user,
                    )
                )
                self.reported[cohort.value] += 1
            self._stop.wait(tick)


class Router:
    """One `CommandListener` applying every deployment's commands to its fleet."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.fleets: dict[str, Fleet] = {}
        self.listener = CommandListener(settings, apply=self._apply, applied_by=name)

    def _apply(self, command: Command) -> None:
        fleet = self.fleets.get(command.deployment_id)
        if fleet is not None:
            fleet.apply(command)

    def start(self) -> Router:
        self.listener.start()
        return self

    def close(self) -> None:
        self.listener.close()


# ---------------------------------------------------------------------------------------------
# One test's world
# ---------------------------------------------------------------------------------------------


class Rollouts:
    """A test's own topics, workers, router, fleets and observer on the session broker."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        self.run = uuid.uuid4().hex[:8]
        self.tmp_path = tmp_path
        self.settings = load_settings(
            bootstrap_servers=bootstrap,
            topic_prefix=f"test.{self.run}.",
            topic_partitions=PARTITIONS,
            consumer_group=f"test.{self.run}.worker",
            tick_interval_s=TICK_INTERVAL_S,
        )
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
        self.env = {
            **inherited,  # but no policy file or other setting of the developer's shell
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ROLLOUT_TOPIC_PREFIX": self.settings.topic_prefix,
            "ROLLOUT_TOPIC_PARTITIONS": str(PARTITIONS),
            "ROLLOUT_CONSUMER_GROUP": self.settings.consumer_group,
            "ROLLOUT_TICK_INTERVAL_S": str(TICK_INTERVAL_S),
            # several workers on one machine: each serves its metrics on a free port (logged)
            "ROLLOUT_METRICS_PORT": "0",
            "OTEL_TRACES_EXPORTER": "none",
            **FAUST_ENV,
        }
        self.workers: list[WorkerProcess] = []
        self.fleets: dict[str, Fleet] = {}
        self._router: Router | None = None
        create_topics(self.settings)
        self.observer = Observer(self.settings).start()

    # ---- parts ------------------------------------------------------------------------

    def topic(self, topic: Topic) -> str:
        return topic_name(self.settings, topic)

    def start_worker(self, name: str | None = None) -> WorkerProcess:
        name = name or f"worker-{len(self.workers) + 1}"
        worker = WorkerProcess(name, self.env, self.tmp_path / f"{name}.log").start()
        self.workers.append(worker)
        return worker

    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = Router(self.settings, f"e2e-router-{self.run}").start()
        return self._router

    def send(self, *payloads: Payload) -> None:
        emit(self.settings, [make_event(p, source="e2e") for p in payloads])

    def deploy(self, request: DeploymentRequested, **fleet: Any) -> Fleet:
        """Start serving `request`'s deployment (the router applies its commands), then ask for
        the rollout."""
        served = Fleet(request, self.settings, **fleet)
        self.fleets[request.deployment_id] = served
        self.router.fleets[request.deployment_id] = served
        served.start()
        self.send(request)
        return served

    # ---- waiting ----------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], Any], *, timeout: float = SOON_S, what: str) -> Any:
        return self.observer.wait_for(predicate, timeout=timeout, what=what, diagnose=self.diagnose)

    def holds(self, predicate: Callable[[], Any], *, for_s: float, what: str) -> None:
        self.observer.holds(predicate, for_s=for_s, what=what, diagnose=self.diagnose)

    def wait_terminal(self, deployment_id: str, timeout: float = 60.0) -> Decision:
        """The rollout's terminal decision, once the commands it names have arrived as well:
        commands travel on a topic of their own and may reach the observer after it."""
        ended: Decision = self.wait_for(
            lambda: self.observer.terminal(deployment_id),
            timeout=timeout,
            what=f"{deployment_id} to end",
        )

        def commands_arrived() -> bool:
            seen = {c.command_id for c in self.observer.commands(deployment_id)}
            return set(ended.command_ids) <= seen

        self.wait_for(commands_arrived, what=f"the commands of {deployment_id}'s last decision")
        return ended

    def firing_alerts(self, deployment_id: str) -> list[Alert]:
        """The firing alerts of a rollout, once the first has arrived: alerts travel on a topic
        of their own and may reach the observer after the decision that raised them."""
        found: list[Alert] = self.wait_for(
            lambda: [a for a in self.observer.alerts(deployment_id) if a.status == "firing"],
            what=f"a firing alert of {deployment_id}",
        )
        return found

    def diagnose(self) -> str:
        parts = ["--- published ---", self.observer.timeline()]
        for fleet in self.fleets.values():
            parts.append(
                f"--- fleet {fleet.deployment_id}: at {fleet.canary_percent:g}%, served "
                f"{fleet.served}, reported {fleet.reported}, {fleet.reporter.stats()}"
            )
        for worker in self.workers:
            state = (
                "alive" if worker.alive() else f"exited ({worker.proc and worker.proc.returncode})"
            )
            parts.append(f"--- {worker.name} ({state}), {worker.log_path.name} ---")
            parts.append(worker.tail())
        return "\n".join(parts)

    # ---- the end ----------------------------------------------------------------------

    def close(self) -> None:
        for fleet in self.fleets.values():
            with contextlib.suppress(Exception):
                fleet.close()
        if self._router is not None:
            self._router.close()
        for worker in self.workers:  # all at once: each takes a second or two to stop
            worker.terminate()
        for worker in self.workers:
            worker.stop()
        self.observer.close()
        self._delete_topics()

    def _delete_topics(self) -> None:
        """The test's topics, the workers' internal ones and the consumer groups: all of them
        carry the run's id."""
        with contextlib.suppress(KafkaError, OSError):
            admin = self.admin()
            try:
                mine = [t for t in admin.list_topics() if self.run in t]
                if mine:
                    admin.delete_topics(mine)
                groups = [g["group_id"] for g in admin.list_groups() if self.run in g["group_id"]]
                if groups:
                    admin.delete_groups(groups)
            finally:
                admin.close()

    def admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(
            client_id="e2e-admin",
            **self.settings.kafka_client_options(),  # type: ignore[arg-type]
        )

    def group_members(self) -> int:
        """Members of the workers' consumer group once it is stable, else 0."""
        admin = self.admin()
        try:
            group = admin.describe_groups([self.settings.consumer_group])
        finally:
            admin.close()
        info = group.get(self.settings.consumer_group) or {}
        return len(info.get("members", ())) if info.get("group_state") == "Stable" else 0


# ---------------------------------------------------------------------------------------------
# Reading the outputs
# ---------------------------------------------------------------------------------------------


def spread_over_partitions(n: int, prefix: str = "") -> list[str]:
    """`n` deployment ids (`<prefix>svc<i>-v2`) whose records land on every partition of the
    keyed topics."""
    chosen: list[str] = []
    covered: set[int] = set()
    for i in itertools.count():
        candidate = f"{prefix}svc{i}-v2"
        part = partition_of(candidate, PARTITIONS)
        if part not in covered or len(covered) == PARTITIONS:
            chosen.append(candidate)
            covered.add(part)
        if len(chosen) == n:
            return chosen
    raise AssertionError("unreachable")


def unique_by_id(items: Iterable[Any], key: Callable[[Any], str]) -> list[Any]:
    """First occurrence of each id, in order (a republished output has the same id)."""
    seen: set[str] = set()
    out = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def transitions(decisions: Iterable[Decision]) -> list[tuple[str, str, int, float]]:
    """(from, to, step, canary %) of each distinct decision, in order."""
    return [
        (d.from_phase, d.to_phase, d.step, d.canary_percent)
        for d in unique_by_id(decisions, lambda d: d.decision_id)
    ]


def terminal_command_ids(commands: Iterable[Command]) -> set[str]:
    return {c.command_id for c in commands if c.action.is_terminal()}


def actions(commands: Iterable[Command]) -> list[tuple[str, float]]:
    """(action, canary %) of each distinct command, in order."""
    return [
        (c.action.value, c.canary_percent) for c in unique_by_id(commands, lambda c: c.command_id)
    ]
