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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

import schemas as s
from controller.core.policy import Policy
from controller.core.state import RolloutState
from controller.engine import SOURCE, Effects, Engine, next_tick
from schemas import Envelope, Rejection

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
    now: float | None = None
    events: int = 0
    #: rollouts judged by the timer
    ticked: int = 0
    engine: Engine = field(init=False)
    _next_tick: float | None = None

    def __post_init__(self) -> None:
        self.engine = Engine(
            self.policy, source=self.source, tick_every_rollout=self.tick_every_rollout
        )

    def feed(self, event: Envelope[Any]) -> list[Envelope[Any]]:
        """Apply one event at its time, after the ticks due before it."""
        t = event.time.timestamp()
        published = self.advance(t)
        now = self.now if self.now is not None and self.now > t else t
        self.now = now
        self.events += 1
        key = event.key()
        effects = self.engine.on_event(self.states.get(key), event, now)
        if effects.state is not None:
            self.states[key] = effects.state
        published += self._publish(key, effects)
        return published

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
            for key in self.engine.due(sorted(self.states), self.now):
                state = self.states[key]
                if not state.is_live():
                    continue
                self.ticked += 1
                published += self._publish(key, self.engine.on_tick(state, self.now))
        return published

    def _publish(self, key: str, effects: Effects) -> list[Envelope[Any]]:
        state = effects.state
        report = self.reports.get(key)
        if report is None and state is not None:
            report = self.reports[key] = DeploymentReport(
                key, created_at=state.created_at, steps=len(state.steps)
            )
        envelopes = [record.event for record in effects.records]
        if report is not None:
            for envelope in envelopes:
                payload = envelope.data
                if isinstance(payload, s.Command):
                    report.commands += 1
                elif isinstance(payload, s.Alert):
                    report.alerts += 1
                else:
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
) -> ReplayResult:
    """Run the core over the lines of a log; `emit` gets each output, `reject` each bad line.

    Blank lines are skipped; any other line that does not decode to an event is rejected
    (reported, counted, skipped) and the replay goes on. `until` (epoch seconds) ticks on past
    the last event to that time, as the worker's timer did until the log was taken (`rollout
    export` says when): a decision the clock made after the last input (a bake that ends after
    the traffic stopped) is replayed too.
    """
    runner = Runner(policy, tick_s=tick_s, tick_every_rollout=tick_every_rollout)
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
    result.events = runner.events
    result.deployments = list(runner.reports.values())
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


def summary_table(result: ReplayResult, *, reason_width: int = 100) -> str:
    """A Markdown table, one row per deployment, and the counts of the replay."""
    rows = [
        "| deployment | final phase | steps passed | time to decision | canary / baseline "
        "requests | reason |",
        "|---|---|---|---|---|---|",
    ]
    for d in result.deployments:
        reason = d.reason.replace("|", "/").replace("\n", " ")
        if len(reason) > reason_width:
            reason = reason[: reason_width - 3] + "..."
        rows.append(
            f"| {d.deployment_id} | {d.phase} | {d.steps_passed}/{d.steps} | "
            f"{_seconds(d.time_to_decision_s)} | {d.canary_requests} / {d.baseline_requests} | "
            f"{reason or '-'} |"
        )
    rows.append("")
    rows.append(
        f"{result.lines} lines, {result.events} events applied, {result.rejected} rejected, "
        f"{result.outputs} outputs"
    )
    return "\n".join(rows)
