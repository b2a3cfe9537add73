"""The one shell contract: an input (or a tick) in, output records out, with ids and order.

The live worker, `rollout replay`, `rollout simulate`, the benchmarks and the tests all drive the
core through an `Engine`, so they cannot drift apart: the same inputs give the same output
records (topic, key, envelope id, payload) in the same order. The engine holds no Faust, no
Kafka, no clock, no logging and no tracing; a shell adds the trace context of its own spans to
an output when it sends it (`OutputRecord.encode(traceparent=...)`).

```
Engine(policy)
  .on_event(state, envelope, now) -> Effects    # a deployment / label / metric / prediction
  .on_delta(state, cohorts, delta_id, now) -> Effects   # pre-folded statistics (the lane)
  .on_tick(state, now) -> Effects               # the timer, for a rollout that is due
  .due(keys, now) -> keys                       # which rollouts the timer must judge now
dead_letter(rejection, value, ...) -> OutputRecord      # one dead-letter form for every shell
```

Output ids are deterministic functions of the rollout and its transition: a command's
`command_id`, a decision's `decision_id`, an alert's `alert_id` (all from controller.core.ids);
a dead letter's id names the record it rejects (`dlq:{topic}:{partition}:{offset}`). Outputs come
in the core's order: as they occurred, a transition's command right before its decision.

**Wake-ups.** After every call the engine records the rollout's next wake-up
(`controller.core.rollout.next_wakeup`); `due` returns the rollouts whose wake-up has come,
and those it has not seen yet (a worker that just recovered its table). A tick of any other
rollout would decide nothing. `tick_every_rollout=True` turns this off (every live rollout is
due at every tick), as the property test and the benchmark's baseline do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from controller.core import monitor, rollout
from controller.core.access import SIGNED_REQUESTS
from controller.core.ids import derive_id
from controller.core.monitor import MonitoringPolicy, MonitorState
from controller.core.pipelines import (
    PipelinesPolicy,
    PipelinesResult,
    PipelineState,
    PoolState,
    pipeline,
    quota,
)
from controller.core.policy import Policy
from controller.core.rollout import Output, Result, RolloutState
from controller.core.rollout.result import cut_after
from controller.core.stats.cohort import CohortStats
from controller.core.stats.labelled import LabelFold
from controller.security.signing import KeyRing, SigningKey
from schemas import (
    ENVELOPES,
    Command,
    DataProfile,
    DeadLetter,
    Decision,
    Envelope,
    MonitorConfigured,
    MonitorDecision,
    MonitorDeleted,
    PipelineDecision,
    PipelineThrottle,
    QuotaPoolConfigured,
    QuotaPoolDeleted,
    Rejection,
    ResourceUsage,
    Topic,
    TrainingRun,
    make_event,
)
from schemas.base import Ident

#: The CloudEvents `source` of everything the controller publishes.
SOURCE = "rollout-controller"


def next_tick(t: float, tick_s: float) -> float:
    """The first tick after time `t`: ticks fall on multiples of `tick_s` seconds since the
    epoch, in the live worker (wall clock) and in replay (event time) alike.

    The shared grid is what keeps cause before effect in a replay: a decision the worker made
    at its tick g (a little after g, when the timer fired) is made by replay at g, so an input
    sent because of it (an approval after `awaiting_approval`, a rollback request after an
    alert) is stamped after g in both. With ticks at the worker's own phase, replay's tick could
    fall up to a tick after the worker's and apply such an input before the decision it
    answers."""
    return (math.floor(t / tick_s) + 1) * tick_s


@dataclass(frozen=True)
class OutputRecord:
    """One record to publish: its topic, key and envelope (without trace context).

    `raw_key`, when given, is the record key's bytes as they are (a dead letter's: the key of
    the record it rejects, which need not be UTF-8); `key` is then its text, if it has one."""

    topic: Topic
    key: str | None
    event: Envelope[Any]
    raw_key: bytes | None = None

    @property
    def id(self) -> str:
        return self.event.id

    def key_bytes(self) -> bytes | None:
        if self.raw_key is not None:
            return self.raw_key
        return None if self.key is None else self.key.encode()

    def encode(self, traceparent: str | None = None) -> bytes:
        """The record's value: the envelope's JSON, with the sender's trace context if any."""
        event = self.event
        if traceparent is not None:
            event = event.model_copy(update={"traceparent": traceparent})
        return event.to_json()


AnyOutput = Output | MonitorDecision | PipelineDecision | PipelineThrottle


def output_id(payload: AnyOutput) -> str:
    """The deterministic CloudEvents id of an output of the core."""
    if isinstance(payload, Command | PipelineThrottle):
        return payload.command_id
    if isinstance(payload, Decision | MonitorDecision | PipelineDecision):
        return payload.decision_id
    return payload.alert_id


def output_time(payload: AnyOutput) -> datetime:
    return payload.issued_at if isinstance(payload, Command | PipelineThrottle) else payload.at


def output_record(payload: AnyOutput, source: str = SOURCE) -> OutputRecord:
    event: Envelope[Any] = make_event(
        payload, source=source, time=output_time(payload), id=output_id(payload)
    )
    return OutputRecord(payload.TOPIC, event.key(), event)


#: The most a dead letter's record may weigh, key and value: under the producers' request
#: limit (Faust's default is 1,000,000 bytes), so that no dead letter is refused as too large.
#: A letter over it keeps only the first bytes of the original (and says so).
MAX_DEAD_LETTER_BYTES = 900_000
#: A dead letter keeps a key up to this size whole, as its own record key and in the letter.
MAX_DEAD_LETTER_KEY_BYTES = 16_384

_SUBJECT: TypeAdapter[str] = TypeAdapter(Ident)


def dead_letter(
    rejection: Rejection,
    value: bytes | None,
    *,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    now: float,
    source: str = SOURCE,
) -> OutputRecord:
    """The dead letter of a record the controller cannot process: its original bytes, where
    it came from and why. Keyed like the original record, with its very key bytes
    (`OutputRecord.key_bytes`).

    It is built for any record, whatever its key and value: the key is kept exactly
    (`Rejection.to_dead_letter`) and is the envelope's `subject` only when it is a valid
    identifier (a key with blanks at its ends, a key that is not UTF-8, a key longer than 256
    characters leaves the subject out). A letter that would exceed `MAX_DEAD_LETTER_BYTES`
    keeps the first bytes of the original that fit, and a key over
    `MAX_DEAD_LETTER_KEY_BYTES` its first bytes in the letter and no record key."""
    at = datetime.fromtimestamp(now, UTC)
    raw = value or b""
    whole_key = key is None or len(key) <= MAX_DEAD_LETTER_KEY_BYTES
    record_key = key if whole_key else None
    to_letter = partial(
        rejection.to_dead_letter,
        raw,
        rejected_at=at,
        source_topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        keep_key_bytes=None if whole_key else MAX_DEAD_LETTER_KEY_BYTES,
    )
    letter = to_letter()
    event = _letter_event(letter, source, at, f"dlq:{topic}:{partition}:{offset}")
    size = len(event.to_json()) + len(record_key or b"")
    keep = len(raw)
    while size > MAX_DEAD_LETTER_BYTES and keep > 0:
        # base64 spends 4 bytes on 3; the margin covers the note that says what was cut
        keep = max(0, keep - (size - MAX_DEAD_LETTER_BYTES) * 3 // 4 - 256)
        letter = to_letter(keep_bytes=keep)
        event = _letter_event(letter, source, at, event.id)
        size = len(event.to_json()) + len(record_key or b"")
    return OutputRecord(Topic.DEAD_LETTER, letter.key, event, raw_key=record_key)


def _letter_event(letter: DeadLetter, source: str, at: datetime, id: str) -> Envelope[Any]:
    """The dead letter's envelope; its subject is the key when the key is an identifier."""
    subject = letter.key or None
    if subject is not None:
        try:
            _SUBJECT.validate_python(subject)
        except ValidationError:
            subject = None
    cls = ENVELOPES[DeadLetter.EVENT_TYPE]
    return cls(
        id=id, source=source, type=DeadLetter.EVENT_TYPE, time=at, subject=subject, data=letter
    )


@dataclass(frozen=True)
class Effects:
    """What one engine call produced: the new state, the output records in publishing order,
    and the core's result (verdicts, note)."""

    state: RolloutState | None
    records: tuple[OutputRecord, ...]
    result: Result

    def empty(self) -> bool:
        return not self.records

    def groups(self) -> tuple[tuple[OutputRecord, ...], ...]:
        """The records cut after each decision (a shell wraps each group in one span)."""
        return cut_after(self.records, lambda r: r.topic is Topic.DECISIONS)


@dataclass(frozen=True)
class MonitorEffects:
    """What one engine call on a model's monitor produced: the new state, the output records
    in publishing order, and why a configuration was refused (None when it applied)."""

    state: MonitorState | None
    records: tuple[OutputRecord, ...] = ()
    refusal: str | None = None

    def empty(self) -> bool:
        return not self.records


@dataclass(frozen=True)
class PipelineEffects:
    """What one engine call on a quota pool or a deployment's pipelines produced: the output
    records in publishing order, and why an input was refused (None when it applied)."""

    records: tuple[OutputRecord, ...] = ()
    refusal: str | None = None


#: The inputs of the pipelines core: pool configurations, usage, training runs, datasets.
PIPELINE_EVENTS = (QuotaPoolConfigured, QuotaPoolDeleted, ResourceUsage, TrainingRun, DataProfile)


def _default_pipelines() -> PipelinesPolicy:
    from controller.policy_io import default_pipelines_policy

    return default_pipelines_policy()


def _default_monitoring() -> MonitoringPolicy:
    from controller.policy_io import default_monitoring_policy

    return default_monitoring_policy()


@dataclass
class Engine:
    """The core plus a policy, and the rollouts' and monitors' wake-ups."""

    policy: Policy
    source: str = SOURCE
    tick_every_rollout: bool = False
    #: The next wake-up of each rollout seen (None: only an input can wake it).
    wakeups: dict[str, float | None] = field(default_factory=dict)
    #: The monitoring policy of monitors configured without one of their own.
    monitoring: MonitoringPolicy = field(default_factory=_default_monitoring)
    #: The next check of each model's monitor seen (None: only an input can wake it).
    monitor_wakeups: dict[str, float | None] = field(default_factory=dict)
    #: Inline monitoring policies, validated once each (by their JSON).
    _policies: dict[bytes, MonitoringPolicy] = field(default_factory=dict, repr=False)
    #: The pipelines policy: quota pools, training runs, datasets (controller/core/pipelines).
    pipelines: PipelinesPolicy = field(default_factory=_default_pipelines)
    #: The next check of each quota pool, and of each deployment's pipelines (by record key).
    pool_wakeups: dict[str, float | None] = field(default_factory=dict)
    pipeline_wakeups: dict[str, float | None] = field(default_factory=dict)
    #: The registered keys of people and CI systems (an identities file): when given,
    #: deployment requests and control events must be signed by a key of the identity they
    #: name, and that identity authorized (controller.core.access); None: nothing is verified.
    identities: KeyRing | None = None
    #: The controller's key: when given, every command and throttle is signed with it (at its
    #: `issued_at`, so a replay with the same key gives the same bytes).
    command_key: SigningKey | None = None

    @classmethod
    def from_policy_file(cls, path: Path | None, **kwargs: Any) -> Engine:
        from controller.policy_io import default_policy, load_policy

        return cls(load_policy(path) if path else default_policy(), **kwargs)

    # ---- the stored form --------------------------------------------------------------

    def load(self, raw: bytes) -> RolloutState:
        return RolloutState.from_dict(orjson.loads(raw))

    def dump(self, state: RolloutState) -> bytes:
        return orjson.dumps(state.to_dict())

    # ---- inputs -----------------------------------------------------------------------

    def on_event(self, state: RolloutState | None, event: Envelope[Any], now: float) -> Effects:
        """Apply one decoded event to its rollout (None until the deployment request).

        A rollout whose wake-up has come is ticked first: what the clock decided comes before
        the event, as it did in the worker whose timer got there first. Replay sees an event
        at its own time, the worker when it arrives: a router's acknowledgement of a command
        the worker's timer issued can carry a time before replay's next tick, and applied
        first it would acknowledge a command not issued yet."""
        before = None
        if state is not None and state.is_live():
            wake = self.wakeups.get(state.deployment_id)
            if wake is not None and wake <= now:
                before = self.on_tick(state, now)
        identity = None
        if self.identities is not None and isinstance(event.data, SIGNED_REQUESTS):
            identity = self.identities.identify(event.data, datetime.fromtimestamp(now, UTC))
        applied = rollout.apply(state, event, self.policy, now, identity=identity)
        after = self._effects(applied, now)
        if before is None or before.empty():
            return after
        return Effects(after.state, before.records + after.records, after.result)

    # ---- monitors ---------------------------------------------------------------------

    def load_monitor(self, raw: bytes) -> MonitorState:
        return MonitorState.from_dict(orjson.loads(raw))

    def dump_monitor(self, state: MonitorState) -> bytes:
        return orjson.dumps(state.to_dict())

    def monitoring_policy(self, state: MonitorState) -> MonitoringPolicy:
        """The monitor's own policy, else the engine's."""
        if state.policy is None:
            return self.monitoring
        key = orjson.dumps(state.policy, option=orjson.OPT_SORT_KEYS)
        found = self._policies.get(key)
        if found is None:
            found = self._policies[key] = MonitoringPolicy.from_mapping(state.policy)
        return found

    def on_monitor_event(
        self, state: MonitorState | None, event: Envelope[Any], now: float
    ) -> MonitorEffects:
        """A monitor.configured or monitor.deleted event for its model's monitor, decided at
        the event's own time (not after `now`): the worker, which applies a rollout's
        configuration when it has travelled the deployments topic, and replay, which applies
        it at once, record the same decision."""
        data = event.data
        at = min(now, event.time.timestamp())
        if isinstance(data, MonitorConfigured):
            result = monitor.configure(state, data, at)
        elif isinstance(data, MonitorDeleted):
            result = monitor.delete(state, data, at)
        else:
            raise TypeError(f"not a monitor event: {event.type}")
        return self._monitor_effects(result, now)

    def on_monitor_delta(
        self,
        state: MonitorState | None,
        model: str,
        cohorts: Iterable[tuple[str, str, CohortStats]],
        delta_id: str | None,
        now: float,
    ) -> MonitorEffects:
        """Pre-folded predictions of a model: counted now, judged at the next check."""
        state = monitor.observe(state, model, cohorts, delta_id, now)
        if state.model not in self.monitor_wakeups or self.monitor_wakeups[state.model] is None:
            self.monitor_wakeups[state.model] = monitor.next_check(
                state, self.monitoring_policy(state), now
            )
        return MonitorEffects(state)

    def on_monitor_labels(
        self,
        state: MonitorState | None,
        model: str,
        folds: Iterable[tuple[str, str, LabelFold]],
        delta_id: str | None,
        now: float,
    ) -> MonitorEffects:
        """Joined (prediction, label) pairs of a model: counted now, judged at the next check."""
        state = monitor.observe_labels(state, model, folds, delta_id, now)
        if state.model not in self.monitor_wakeups or self.monitor_wakeups[state.model] is None:
            self.monitor_wakeups[state.model] = monitor.next_check(
                state, self.monitoring_policy(state), now
            )
        return MonitorEffects(state)

    def on_monitor_tick(
        self, state: MonitorState, now: float, heard: float | None = None
    ) -> MonitorEffects:
        """The monitor's check (call it for the monitors `monitors_due`). `heard`: how far the
        inputs are known to be complete (None: up to now)."""
        policy = self.monitoring_policy(state)
        return self._monitor_effects(monitor.check(state, policy, now, heard), now)

    def monitors_due(self, keys: Iterable[str], now: float) -> list[str]:
        """The monitors among `keys` a tick at `now` must check (as `due` for rollouts)."""
        wakeups = self.monitor_wakeups
        due = []
        for key in keys:
            at = wakeups.get(key, now)
            if at is not None and at <= now:
                due.append(key)
        return due

    # ---- pipelines and quota pools (controller/core/pipelines) ---------------------------

    def load_pool(self, raw: bytes) -> PoolState:
        return PoolState.from_dict(orjson.loads(raw))

    def dump_pool(self, state: PoolState) -> bytes:
        return orjson.dumps(state.to_dict())

    def load_pipelines(self, raw: bytes) -> dict[str, PipelineState]:
        """A deployment's pipelines, by name (one stored value per record key)."""
        return {k: PipelineState.from_dict(v) for k, v in orjson.loads(raw).items()}

    def dump_pipelines(self, states: dict[str, PipelineState]) -> bytes:
        return orjson.dumps({k: v.to_dict() for k, v in sorted(states.items())})

    @staticmethod
    def feeds_pool(event: Envelope[Any]) -> bool:
        """A pool's input (keyed by the pool): its configuration, or usage that names it."""
        data = event.data
        if isinstance(data, QuotaPoolConfigured | QuotaPoolDeleted):
            return True
        return isinstance(data, ResourceUsage) and data.pool is not None

    @staticmethod
    def feeds_pipeline(event: Envelope[Any]) -> bool:
        """A pipeline's input (keyed by its deployment): a training run, a dataset's profile,
        usage that names a pipeline and no pool."""
        data = event.data
        if isinstance(data, TrainingRun | DataProfile):
            return True
        return isinstance(data, ResourceUsage) and data.pool is None and data.pipeline is not None

    def on_pool_event(
        self, state: PoolState | None, event: Envelope[Any], now: float
    ) -> tuple[PoolState | None, PipelineEffects]:
        """A pool's configuration, deletion or usage, decided at the event's own time (at most
        `now`)."""
        data = event.data
        at = min(now, event.time.timestamp())
        if isinstance(data, QuotaPoolConfigured):
            result = quota.configure(state, data, at)
        elif isinstance(data, QuotaPoolDeleted):
            result = quota.delete(state, data, at)
        elif isinstance(data, ResourceUsage) and data.pool is not None:
            result = PipelinesResult(quota.observe(state, data, at))
        else:
            raise TypeError(f"not a pool's input: {event.type}")
        return self._pool_effects(result, now)

    def on_pool_tick(self, state: PoolState, now: float) -> tuple[PoolState, PipelineEffects]:
        found, effects = self._pool_effects(quota.check(state, self.pipelines, now), now)
        return found or state, effects

    def _pool_effects(
        self, result: PipelinesResult[PoolState], now: float
    ) -> tuple[PoolState | None, PipelineEffects]:
        state = result.state
        if state is not None:
            self.pool_wakeups[state.pool] = quota.next_check(state, self.pipelines, now)
        records = tuple(self._record(o) for o in result.outputs)
        return state, PipelineEffects(records, result.refusal)

    def on_pipeline_event(
        self, key: str, states: dict[str, PipelineState], event: Envelope[Any], now: float
    ) -> PipelineEffects:
        """A training run, a dataset's profile or a pipeline's usage, for the pipelines of the
        record key `key` (its deployment), judged on arrival; `states` is updated in place."""
        data = event.data
        at = min(now, event.time.timestamp())
        policy = self.pipelines
        if isinstance(data, TrainingRun):
            name = data.pipeline
        elif isinstance(data, DataProfile):
            name = data.pipeline or data.deployment_id
        elif isinstance(data, ResourceUsage) and data.pipeline is not None:
            name = data.pipeline
        else:
            raise TypeError(f"not a pipeline's input: {event.type}")
        found = states.get(name)
        if isinstance(data, TrainingRun):
            result = pipeline.observe_run(found, data, policy, at)
        elif isinstance(data, DataProfile):
            result = pipeline.observe_profile(found, data, policy, at)
        else:
            result = PipelinesResult(pipeline.observe_usage(found, data, at))
        if result.state is not None:
            states[name] = result.state
        return self._pipeline_effects(key, states, result, now)

    def on_pipeline_tick(
        self, key: str, states: dict[str, PipelineState], now: float
    ) -> PipelineEffects:
        """The checks of a deployment's pipelines that are due (the idle-quota rule)."""
        outputs: list[Any] = []
        refusal = None
        for name in sorted(states):
            at = pipeline.next_check(states[name], self.pipelines, now)
            if at is None or at > now:
                continue
            result = pipeline.check(states[name], self.pipelines, now)
            if result.state is not None:
                states[name] = result.state
            outputs += result.outputs
            refusal = refusal or result.refusal
        return self._pipeline_effects(key, states, PipelinesResult(None, outputs, refusal), now)

    def _pipeline_effects(
        self,
        key: str,
        states: dict[str, PipelineState],
        result: PipelinesResult[PipelineState],
        now: float,
    ) -> PipelineEffects:
        due = [pipeline.next_check(s, self.pipelines, now) for s in states.values()]
        self.pipeline_wakeups[key] = min((t for t in due if t is not None), default=None)
        records = tuple(self._record(o) for o in result.outputs)
        return PipelineEffects(records, result.refusal)

    def pools_due(self, keys: Iterable[str], now: float) -> list[str]:
        """The pools among `keys` a tick at `now` must check (unknown ones: at once)."""
        return [k for k in keys if (at := self.pool_wakeups.get(k, now)) is not None and at <= now]

    def pipelines_due(self, keys: Iterable[str], now: float) -> list[str]:
        """The deployments among `keys` whose pipelines a tick at `now` must check."""
        return [
            k for k in keys if (at := self.pipeline_wakeups.get(k, now)) is not None and at <= now
        ]

    def _monitor_effects(self, result: monitor.MonitorResult, now: float) -> MonitorEffects:
        state = result.state
        if state is not None:
            self.monitor_wakeups[state.model] = monitor.next_check(
                state, self.monitoring_policy(state), now
            )
        records = tuple(self._record(o) for o in result.outputs)
        return MonitorEffects(state, records, result.refusal)

    def _monitor_configurations(
        self, state: RolloutState | None, result: Result
    ) -> tuple[OutputRecord, ...]:
        """Every rollout configures its model's monitor: at its start the baseline serves
        production; after a promote the candidate (with the request's training profile), after
        a rollback or abort the baseline again (after a rollback of the promoted model: the
        record's rollback version). Sent on the deployments topic, keyed by the model, so the
        worker that owns the model's monitor applies it."""
        if state is None:
            return ()
        request = state.deployment
        records = []
        for decision in result.decisions:
            if decision.from_phase == "pending":
                version, why = request.baseline_version, "started: the baseline serves"
            elif decision.to_phase == "promoted":
                version, why = request.candidate_version, "promoted: the candidate serves"
            elif decision.from_phase == "promoted":
                version = request.rollback_version()
                why = f"rolled back after promotion: {version} serves"
            elif decision.to_phase in ("rolled_back", "aborted"):
                version, why = request.baseline_version, f"{decision.to_phase}: the baseline serves"
            else:
                continue
            promoted = decision.to_phase == "promoted"
            config = MonitorConfigured(
                model=request.model,
                version=version,
                training_profile=request.training_profile if promoted else None,
                source=f"rollout:{request.deployment_id}",
                by=self.source,
                reason=f"rollout {request.deployment_id} {why}",
            )
            event: Envelope[Any] = make_event(
                config,
                source=self.source,
                time=decision.at,
                id=derive_id("moncfg", request.deployment_id, 0, decision.decision_id, 0),
            )
            records.append(OutputRecord(Topic.DEPLOYMENTS, request.model, event))
        return tuple(records)

    def on_delta(
        self,
        state: RolloutState,
        cohorts: Iterable[tuple[str, str, CohortStats]],
        delta_id: str | None,
        now: float,
    ) -> Effects:
        """Merge pre-folded statistics (the lane's delta), then judge."""
        rollout.merge(state, cohorts, now, delta_id=delta_id)
        result = rollout.evaluate(state, self.policy, now)
        return self._effects(result, now, state)

    def on_labels(
        self,
        state: RolloutState,
        folds: Iterable[tuple[str, str, LabelFold]],
        delta_id: str | None,
        now: float,
    ) -> Effects:
        """Merge joined labels (the label join's delta), then judge."""
        rollout.merge_labels(state, folds, now, delta_id=delta_id)
        result = rollout.evaluate(state, self.policy, now)
        return self._effects(result, now, state)

    def on_tick(self, state: RolloutState, now: float) -> Effects:
        """The timer: judge a rollout without new inputs (call it for the rollouts `due`)."""
        return self._effects(rollout.tick(state, self.policy, now), now, state)

    # ---- the timer --------------------------------------------------------------------

    def due(self, keys: Iterable[str], now: float) -> list[str]:
        """The rollouts among `keys` that a tick at `now` must judge, in the given order:
        those whose wake-up has come, and those the engine has not seen since it started."""
        wakeups = self.wakeups
        due = []
        for key in keys:
            if key not in wakeups:
                due.append(key)
                continue
            at = wakeups[key]
            if at is not None and at <= now:
                due.append(key)
        return due

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the wake-ups of rollouts this engine no longer owns (a rebalance)."""
        for key in keys:
            self.wakeups.pop(key, None)

    def _record(self, payload: AnyOutput) -> OutputRecord:
        """An output's record; a command or a throttle signed when the engine has a key."""
        if self.command_key is not None and isinstance(payload, Command | PipelineThrottle):
            payload = self.command_key.sign(payload, signed_at=payload.issued_at)
        return output_record(payload, self.source)

    def _effects(self, result: Result, now: float, state: RolloutState | None = None) -> Effects:
        state = result.state or state
        if state is not None:
            key = state.deployment_id
            if self.tick_every_rollout:
                self.wakeups[key] = now if state.is_live() else None
            else:
                self.wakeups[key] = rollout.next_wakeup(
                    state, self.policy, now, transitioned=bool(result.decisions)
                )
        records = tuple(self._record(o) for o in result.outputs)
        if result.decisions:
            records += self._monitor_configurations(state, result)
        return Effects(state, records, result)


__all__ = [
    "MAX_DEAD_LETTER_BYTES",
    "MAX_DEAD_LETTER_KEY_BYTES",
    "SOURCE",
    "Effects",
    "Engine",
    "MonitorEffects",
    "OutputRecord",
    "dead_letter",
    "output_id",
    "output_record",
    "output_time",
]
