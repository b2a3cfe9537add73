"""Run the core over a recorded log: the same decisions, byte for byte, every time.

A log is JSON lines of CloudEvents envelopes exactly as they travel on the topics (what
`rollout simulate` writes, or what `rollout export` took from a live run's topics). `Runner`
holds one `RolloutState` per deployment and drives the same `controller.engine.Engine` as the
live worker: each event is applied with `now` = the event's CloudEvents `time`; between events
the rollouts that are due are ticked on a grid of `tick_s` seconds of event time (like the live
worker's timer), so silences, bake times and deadlines act without events.

Time never runs backwards: `now` is the largest event time seen so far (a record stamped a
little before the previous one, as happens when producers' clocks and batching interleave, is
applied at the previous time). Ticks fall on multiples of `tick_s` (epoch-aligned); the ticks
due at or before an event's time run before it is applied.

The outputs (commands, alerts, decisions) come out as the envelopes the worker publishes, in
its order, with its deterministic ids (`command_id`, `decision_id`, `alert_id`) and `time` = the
output's own timestamp: the same log and policy give the same bytes.

Labels are joined to their predictions as the worker's label join does (`LogJoin`: in memory,
by deployment and request id; a label that comes first waits for its prediction; the first
label of a request joins, a later one is a duplicate), and the pairs joined since the last tick
reach their rollouts (`Engine.on_labels`) and their models' monitors (`Engine.on_monitor_labels`)
at the tick, as the join's deltas (and their monitor twins) reach the worker's
rollouts after each poll.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

import schemas as s
from controller.core.monitor import MonitoringPolicy, MonitorState
from controller.core.pipelines import PipelineState, PoolState
from controller.core.policy import Policy
from controller.core.state import RolloutState
from controller.core.stats.labelled import LabelFold
from controller.engine import SOURCE, Effects, Engine, MonitorEffects, next_tick
from controller.security.signing import KeyRing, SigningKey
from controller.stream.deltas import Folder
from schemas import Envelope, Rejection, Topic

DEFAULT_TICK_S = 1.0


@dataclass
class DeploymentReport:
    """What happened to one deployment during a replay."""

    deployment_id: str
    created_at: float | None = None
    phase: str = "pending"
    step: int = 0
    steps: int = 0
    canary_percent: float = 0.0
    decided_at: float | None = None
    reason: str = ""
    commands: int = 0
    decisions: int = 0
    alerts: int = 0
    canary_requests: int = 0
    baseline_requests: int = 0

    @property
    def steps_passed(self) -> int:
        """Traffic steps passed: all of them once promoted, else those before the current one."""
        return self.steps if self.phase == "promoted" else self.step

    @property
    def time_to_decision_s(self) -> float | None:
        """Seconds from the deployment request to the terminal decision."""
        if self.decided_at is None or self.created_at is None:
            return None
        return self.decided_at - self.created_at


@dataclass
class LogJoin:
    """The label join of a replay, in memory (controller.stream.pending's rules): the served
    predictions of the log, by (deployment, request id); labels that came first; the pairs
    joined since the last `drain`, folded per deployment and (cohort, version)."""

    pending: dict[tuple[str, str], tuple[str, str, str, float, Any]] = field(default_factory=dict)
    early: dict[tuple[str, str], tuple[Any, float]] = field(default_factory=dict)
    joined: set[tuple[str, str]] = field(default_factory=set)
    folds: dict[str, dict[tuple[str, str], LabelFold]] = field(default_factory=dict)
    #: each deployment's model (its monitor takes the pairs too)
    models: dict[str, str] = field(default_factory=dict)
    pairs: int = 0
    duplicates: int = 0
    unusable: int = 0

    def predictions(self, data: s.PredictionServed | s.PredictionBatch) -> None:
        items = data.predictions if isinstance(data, s.PredictionBatch) else (data,)
        for item in items:
            if not item.ok or item.prediction is None:
                continue
            key = (data.deployment_id, item.request_id)
            if key in self.pending:
                continue
            prediction = item.prediction
            if not isinstance(prediction, float | int | str):
                prediction = dict(prediction.items())
            entry = (data.model, item.version, str(item.cohort), item.event_time.timestamp())
            self.pending[key] = (*entry, prediction)
            waiting = self.early.pop(key, None)
            if waiting is not None:
                self._join(key, *waiting)

    def label(self, data: s.LabelReported) -> None:
        key = (data.deployment_id, data.request_id)
        if key in self.joined or key in self.early:
            self.duplicates += 1
        elif key in self.pending:
            self._join(key, data.label, data.event_time.timestamp())
        else:
            self.early[key] = (data.label, data.event_time.timestamp())

    def _join(self, key: tuple[str, str], label: Any, labelled_at: float) -> None:
        model, version, cohort, predicted_at, prediction = self.pending[key]
        self.models[key[0]] = model
        self.joined.add(key)
        folds = self.folds.setdefault(key[0], {})
        fold = folds.get((cohort, version))
        if fold is None:  # not setdefault: a LabelFold per pair costs three sketches
            fold = folds[(cohort, version)] = LabelFold()
        try:
            added = fold.add(key[1], prediction, label, predicted_at, labelled_at)
        except ValueError:
            added = False
        if added:
            self.pairs += 1
        else:
            self.unusable += 1

    def drain(self) -> list[tuple[str, list[tuple[str, str, LabelFold]]]]:
        """The pairs joined since the last drain: per deployment, its folds."""
        drained = [
            (deployment, [(c, v, f) for (c, v), f in sorted(folds.items())])
            for deployment, folds in sorted(self.folds.items())
        ]
        self.folds = {}
        return drained


@dataclass
class MonitorReport:
    """What happened to one model's monitor during a replay."""

    model: str
    version: str | None = None
    stage: str = "unmonitored"
    predictions: int = 0
    #: labelled predictions (joined pairs) it took, of every version
    labels: int = 0
    fired: int = 0
    resolved: int = 0
    firing: list[str] = field(default_factory=list)
    last_reason: str = ""


@dataclass
class Runner:
    """The engine over a stream of events: one state per deployment, ticks between events.

    `feed(event)` returns what the controller published because of it (and of the ticks
    before it), as envelopes. The same sequence of events gives the same outputs.
    `tick_every_rollout=True` ticks every live rollout at every grid time instead of only those
    due (the same outputs, slower: a property test holds the two equal).
    """

    policy: Policy
    tick_s: float = DEFAULT_TICK_S
    source: str = SOURCE
    tick_every_rollout: bool = False
    states: dict[str, RolloutState] = field(default_factory=dict)
    reports: dict[str, DeploymentReport] = field(default_factory=dict)
    #: the models' monitors (keyed by model), and what happened to each
    monitoring: MonitoringPolicy | None = None
    monitors: dict[str, MonitorState] = field(default_factory=dict)
    monitor_reports: dict[str, MonitorReport] = field(default_factory=dict)
    #: the worker's identities (verify control events) and command key (sign commands): with
    #: the worker's own, a replay refuses and signs what the worker did
    identities: KeyRing | None = None
    command_key: SigningKey | None = None
    #: the controller's own monitor configurations found in the log (re-derived, not applied)
    skipped_own: int = 0
    now: float | None = None
    events: int = 0
    #: rollouts judged by the timer
    ticked: int = 0
    engine: Engine = field(init=False)
    _next_tick: float | None = None
    #: predictions since the last tick, folded by deployment (the worker's lane, per second)
    _folder: Folder = field(init=False)
    #: labels joined to their predictions (the worker's label join)
    join: LogJoin = field(default_factory=LogJoin)
    #: quota pools (by pool) and each deployment's pipelines (by deployment id), as the
    #: worker's tables hold them
    pools: dict[str, PoolState] = field(default_factory=dict)
    pipelines: dict[str, dict[str, PipelineState]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        extra: dict[str, Any] = {}
        if self.monitoring is not None:
            extra["monitoring"] = self.monitoring
        self.engine = Engine(
            self.policy,
            source=self.source,
            tick_every_rollout=self.tick_every_rollout,
            identities=self.identities,
            command_key=self.command_key,
            **extra,
        )
        self._folder = Folder()

    def feed(self, event: Envelope[Any]) -> list[Envelope[Any]]:
        """Apply one event at its time, after the ticks due before it."""
        t = event.time.timestamp()
        published = self.advance(t)
        now = self.now if self.now is not None and self.now > t else t
        self.now = now
        self.events += 1
        key = event.key()
        data = event.data
        if self.engine.feeds_pool(event):
            pool, judged = self.engine.on_pool_event(self.pools.get(key), event, now)
            if pool is not None:
                self.pools[key] = pool
            return published + [record.event for record in judged.records]
        if self.engine.feeds_pipeline(event):
            states = self.pipelines.setdefault(key, {})
            done = self.engine.on_pipeline_event(key, states, event, now)
            published += [record.event for record in done.records]
        if isinstance(data, s.MonitorConfigured | s.MonitorDeleted):
            if event.source == self.source and isinstance(data, s.MonitorConfigured):
                self.skipped_own += 1  # a rollout's own: replay derives it again
                return published
            return published + self._monitor_event(event, now)
        if isinstance(data, s.PredictionServed | s.PredictionBatch):
            self._folder.add(event)  # for the model's monitor, at the next tick
            self.join.predictions(data)
        elif isinstance(data, s.LabelReported):
            self.join.label(data)
        effects = self.engine.on_event(self.states.get(key), event, now)
        if effects.state is not None:
            self.states[key] = effects.state
        published += self._publish(key, effects)
        return published

    def finish(self) -> None:
        """At the end of the log: the predictions since the last tick reach their monitors
        (counted; judged only by a check, which a later tick would have made)."""
        if self.now is not None:
            self._observe(self.now)

    def _monitor_event(self, event: Envelope[Any], now: float) -> list[Envelope[Any]]:
        model = event.key()
        effects = self.engine.on_monitor_event(self.monitors.get(model), event, now)
        return self._publish_monitor(model, effects)

    def _observe(self, now: float) -> None:
        """Hand the predictions folded since the last tick to their models' monitors."""
        if not self._folder:
            return
        for fold in self._folder.drain():
            model = fold.model
            cohorts = [(c, v, stats) for (c, v), stats in sorted(fold.cohorts.items())]
            effects = self.engine.on_monitor_delta(
                self.monitors.get(model), model, cohorts, None, now
            )
            if effects.state is not None:
                self.monitors[model] = effects.state
                self._monitor_report(model, effects.state)

    def _publish_monitor(self, model: str, effects: MonitorEffects) -> list[Envelope[Any]]:
        state = effects.state
        if state is not None:
            self.monitors[model] = state
        report = self._monitor_report(model, state)
        envelopes = [record.event for record in effects.records]
        for envelope in envelopes:
            payload = envelope.data
            if isinstance(payload, s.MonitorDecision):
                if payload.action == "alert_fired":
                    report.fired += 1
                    report.last_reason = payload.reason
                elif payload.action == "alert_resolved":
                    report.resolved += 1
        return envelopes

    def _monitor_report(self, model: str, state: MonitorState | None) -> MonitorReport:
        report = self.monitor_reports.get(model)
        if report is None:
            report = self.monitor_reports[model] = MonitorReport(model)
        if state is not None:
            report.version = state.version
            report.stage = state.stage()
            report.predictions = state.requests + state.other_requests
            report.labels = state.labels + state.other_labels
            report.firing = state.firing()
        return report

    def advance(self, until: float) -> list[Envelope[Any]]:
        """Tick the rollouts that are due at each grid time up to `until` (inclusive)."""
        if self.tick_s <= 0.0:
            return []
        if self._next_tick is None:
            self._next_tick = next_tick(until, self.tick_s)
            return []
        published: list[Envelope[Any]] = []
        while self._next_tick <= until:
            tick_at = self._next_tick
            self._next_tick = tick_at + self.tick_s
            if self.now is None or tick_at > self.now:
                self.now = tick_at
            for key, folds in self.join.drain():
                state = self.states.get(key)
                if state is not None:
                    published += self._publish(
                        key, self.engine.on_labels(state, folds, None, self.now)
                    )
                model = self.join.models[key]
                watched = self.engine.on_monitor_labels(
                    self.monitors.get(model), model, folds, None, self.now
                )
                if watched.state is not None:
                    self.monitors[model] = watched.state
                    self._monitor_report(model, watched.state)
            for key in self.engine.due(sorted(self.states), self.now):
                state = self.states[key]
                if not state.is_live():
                    continue
                self.ticked += 1
                published += self._publish(key, self.engine.on_tick(state, self.now))
            self._observe(self.now)
            for model in self.engine.monitors_due(sorted(self.monitors), self.now):
                effects = self.engine.on_monitor_tick(self.monitors[model], self.now)
                published += self._publish_monitor(model, effects)
            for pool in self.engine.pools_due(sorted(self.pools), self.now):
                self.pools[pool], checked = self.engine.on_pool_tick(self.pools[pool], self.now)
                published += [record.event for record in checked.records]
            for key in self.engine.pipelines_due(sorted(self.pipelines), self.now):
                done = self.engine.on_pipeline_tick(key, self.pipelines[key], self.now)
                published += [record.event for record in done.records]
        return published

    def _publish(self, key: str, effects: Effects) -> list[Envelope[Any]]:
        state = effects.state
        report = self.reports.get(key)
        if report is None and state is not None:
            report = self.reports[key] = DeploymentReport(
                key, created_at=state.created_at, steps=len(state.steps)
            )
        envelopes = [record.event for record in effects.records]
        for record in effects.records:
            if record.topic is Topic.DEPLOYMENTS:  # a rollout configures its model's monitor
                envelopes += self._monitor_event(record.event, self.now or 0.0)
        if report is not None:
            for envelope in envelopes:
                payload = envelope.data
                if isinstance(payload, s.Command):
                    report.commands += 1
                elif isinstance(payload, s.Alert):
                    if payload.kind.startswith("monitor."):
                        continue
                    report.alerts += 1
                elif isinstance(payload, s.Decision):
                    report.decisions += 1
                    if payload.to_phase in ("promoted", "rolled_back", "aborted"):
                        report.decided_at = payload.at.timestamp()
                        report.reason = payload.reason
        if report is not None and state is not None:
            report.phase = state.phase.value
            report.step = state.step
            report.canary_percent = state.canary_percent
            report.canary_requests = state.canary.requests
            report.baseline_requests = state.baseline.requests
        return envelopes


# ---------------------------------------------------------------------------------------------
# Logs: lines in, outputs and rejections out
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejected:
    """A line of the log that is not a valid event, with why: skipped and counted."""

    line: int
    rejection: Rejection

    def to_dict(self) -> dict[str, Any]:
        r = self.rejection
        return {
            "kind": "rejected",
            "line": self.line,
            "reason": r.reason,
            "event_type": r.event_type,
            "event_id": r.event_id,
            "errors": [e.model_dump() for e in r.errors],
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass
class ReplayResult:
    """Counts of a replay and what happened to each deployment (in order of appearance)."""

    lines: int = 0
    events: int = 0
    rejected: int = 0
    outputs: int = 0
    deployments: list[DeploymentReport] = field(default_factory=list)
    monitors: list[MonitorReport] = field(default_factory=list)


def _ignore(_: Any) -> None:
    return None


def replay(
    lines: Iterable[bytes | str],
    policy: Policy,
    *,
    tick_s: float = DEFAULT_TICK_S,
    emit: Callable[[Envelope[Any]], None] = _ignore,
    reject: Callable[[Rejected], None] = _ignore,
    tick_every_rollout: bool = False,
    until: float | None = None,
    monitoring: MonitoringPolicy | None = None,
    identities: KeyRing | None = None,
    command_key: SigningKey | None = None,
) -> ReplayResult:
    """Run the core over the lines of a log; `emit` gets each output, `reject` each bad line.

    Blank lines are skipped; any other line that does not decode to an event is rejected
    (reported, counted, skipped) and the replay goes on. `until` (epoch seconds) ticks on past
    the last event to that time, as the worker's timer did until the log was taken (`rollout
    export` says when): a decision the clock made after the last input (a bake that ends after
    the traffic stopped) is replayed too. `identities` and `command_key`: the worker's, to
    verify control events and sign commands as it did.
    """
    runner = Runner(
        policy,
        tick_s=tick_s,
        tick_every_rollout=tick_every_rollout,
        monitoring=monitoring,
        identities=identities,
        command_key=command_key,
    )
    result = ReplayResult()
    for number, line in enumerate(lines, start=1):
        raw = line.encode() if isinstance(line, str) else line
        if not raw.strip():
            continue
        result.lines += 1
        decoded = s.decode(raw)
        if isinstance(decoded, Rejection):
            result.rejected += 1
            reject(Rejected(number, decoded))
            continue
        for output in runner.feed(decoded):
            result.outputs += 1
            emit(output)
    if until is not None and runner.now is not None and until > runner.now:
        for output in runner.advance(until):
            result.outputs += 1
            emit(output)
    runner.finish()
    result.events = runner.events
    result.deployments = list(runner.reports.values())
    result.monitors = list(runner.monitor_reports.values())
    return result


def read_lines(path: str) -> Iterator[bytes]:
    """The lines of a log file ("-" for standard input), as bytes."""
    import sys

    if path == "-":
        yield from sys.stdin.buffer
        return
    with open(path, "rb") as f:
        yield from f


# ---------------------------------------------------------------------------------------------
# The summary table
# ---------------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _cell(text: str, width: int) -> str:
    """Text for one table cell: no pipes or line breaks, at most `width` characters."""
    text = text.replace("|", "/").replace("\n", " ")
    return text[: width - 3] + "..." if len(text) > width else text


def summary_table(result: ReplayResult, *, reason_width: int = 100) -> str:
    """A Markdown table, one row per deployment, and the counts of the replay."""
    rows = [
        "| deployment | final phase | steps passed | time to decision | canary / baseline "
        "requests | reason |",
        "|---|---|---|---|---|---|",
    ]
    for d in result.deployments:
        reason = _cell(d.reason, reason_width)
        rows.append(
            f"| {d.deployment_id} | {d.phase} | {d.steps_passed}/{d.steps} | "
            f"{_seconds(d.time_to_decision_s)} | {d.canary_requests} / {d.baseline_requests} | "
            f"{reason or '-'} |"
        )
    if result.monitors:
        rows += [
            "",
            "| model | version | monitor | predictions | alerts fired / resolved | firing now "
            "| last alert |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in result.monitors:
            reason = _cell(m.last_reason, reason_width)
            rows.append(
                f"| {m.model} | {m.version or '-'} | {m.stage} | {m.predictions} | "
                f"{m.fired} / {m.resolved} | {', '.join(m.firing) or '-'} | {reason or '-'} |"
            )
    rows.append("")
    rows.append(
        f"{result.lines} lines, {result.events} events applied, {result.rejected} rejected, "
        f"{result.outputs} outputs"
    )
    return "\n".join(rows)
