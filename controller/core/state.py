"""The state of one rollout: plain data that lives in a table and round-trips through a dict.

`RolloutState` is what the core knows about a rollout between two events: where it stands
(phase, step, traffic, approvals), the statistics of each cohort, the alerts firing, the ids of
recently applied events, and the transition sequence number that command and decision ids derive
from. `to_dict()` gives plain JSON values; `from_dict(to_dict())` is equal (`==`) to the
original. Both, and `==`, derive from the dataclass fields (`field_codecs`: one codec per field
type), so a new field needs no other edit; a field of a type without a codec fails at import
(`NoCodecError`). The fields whose names start with `_` are derived caches, rebuilt on demand
and not part of the value. A stored state that lacks a field with a default (stored before the
field existed) loads with the default.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import BaseModel

from controller.core.phases import Phase
from controller.core.policy import Policy, RuleSet
from controller.core.stats.checkpoint import Checkpoint, trim
from controller.core.stats.cohort import CohortStats, FeatureValue, PredictionValue
from controller.core.stats.labelled import LabelledStats
from controller.core.stats.profile import FeatureProfile as StatsProfile
from controller.core.verdict import Verdict
from controller.errors import RolloutError
from schemas import Command, DeploymentRequested, TrafficStep, TrainingProfile

STATE_VERSION = 1
MAX_RECENT_IDS = 1024
MAX_RECENT_DATA_IDS = 256
MAX_KEY = 256
#: Checkpoints kept for the change-point tests (the newest, and every step's cuts; 10 minutes
#: at the default 10 s).
MAX_CHECKPOINTS = 60
#: The grain, in seconds of completion time, at which held data is kept and released, and at
#: which a step's traffic change is cut (controller.core.rollout.alignment).
SLOT_S = 0.1

BASELINE, CANARY, SHADOW = "baseline", "canary", "shadow"
COHORTS = (BASELINE, CANARY, SHADOW)


class Served(NamedTuple):
    """One served prediction as plain values: the fast path's item (a plain tuple works too)."""

    cohort: str
    version: str
    ok: bool
    latency_ms: float
    event_time: float
    error_type: str | None = None
    prediction: PredictionValue | None = None
    features: Mapping[str, FeatureValue] | None = None


# ---------------------------------------------------------------------------------------------
# Recent-window statistics: two rotating panes
# ---------------------------------------------------------------------------------------------


@dataclass(eq=True)
class Panes:
    """The last one to two pane widths of a cohort: `previous` and `current` panes.

    The pane boundaries are multiples of the width on the caller's clock (`now`), so the same
    inputs rotate the same way in the worker and in a replay.
    """

    width_s: float
    start: float
    previous: CohortStats
    current: CohortStats

    @classmethod
    def empty(cls, width_s: float, now: float) -> Panes:
        return cls(width_s, _floor(now, width_s), CohortStats(), CohortStats())

    def rotate(self, now: float) -> None:
        if now < self.start + self.width_s:
            return
        if now < self.start + 2 * self.width_s:
            self.previous, self.current = self.current, CohortStats(self.current.config)
            self.start += self.width_s
        else:
            self.previous, self.current = (
                CohortStats(self.current.config),
                CohortStats(self.current.config),
            )
            self.start = _floor(now, self.width_s)

    def view(self) -> CohortStats:
        return self.previous.merged(self.current)

    def to_dict(self) -> dict[str, Any]:
        return {
            "width_s": self.width_s,
            "start": self.start,
            "previous": self.previous.to_dict(),
            "current": self.current.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Panes:
        return cls(
            float(data["width_s"]),
            float(data["start"]),
            CohortStats.from_dict(data["previous"]),
            CohortStats.from_dict(data["current"]),
        )


def _floor(now: float, width: float) -> float:
    return math.floor(now / width) * width


# ---------------------------------------------------------------------------------------------
# The state
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedVerdict:
    """A rule's last verdict, reused until `every_n` more canary requests arrive."""

    at_requests: int
    profile_version: int
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "at_requests": self.at_requests,
            "profile_version": self.profile_version,
            "verdict": self.verdict.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CachedVerdict:
        return cls(
            int(data["at_requests"]),
            int(data["profile_version"]),
            Verdict.from_dict(data["verdict"]),
        )


@dataclass(eq=False)
class RolloutState:
    """Everything the core knows about one rollout; plain data (see `to_dict`)."""

    deployment: DeploymentRequested
    phase: Phase
    created_at: float
    #: Index of the current traffic step (its traffic is set once `traffic_started`).
    step: int = 0
    canary_percent: float = 0.0
    #: The transition sequence number: grows by one with every decision; ids derive from it.
    seq: int = 0
    #: Alerts emitted so far: an alert's id derives from it (controller.core.ids).
    alert_seq: int = 0
    traffic_started: bool = False
    step_started_at: float | None = None
    step_command_id: str | None = None
    step_samples: int = 0
    #: The step whose approval gate the rollout waits at (or waited at before a pause).
    gate: int | None = None
    #: Approvals received, by step index: who approved, and the reason they gave.
    approvals: dict[int, str] = field(default_factory=dict)
    approval_reasons: dict[int, str] = field(default_factory=dict)
    #: The key that signed each approval, by step, when it was verified (controller.core.access)
    approval_keys: dict[int, str] = field(default_factory=dict)
    #: Digests of the signatures of the control events applied, newest last (at most
    #: MAX_CONTROL_SIGNATURES): a replayed copy of one is recognised and ignored.
    control_signatures: list[str] = field(default_factory=list)
    #: Where a resume returns to.
    resume_phase: Phase | None = None
    stats: dict[str, CohortStats] = field(
        default_factory=lambda: {c: CohortStats() for c in COHORTS}
    )
    #: Recent-window panes of baseline and canary (only when a rule uses `window: recent`).
    panes: dict[str, Panes] | None = None
    #: Inputs left out, by reason (version mismatch, after the end, ...).
    ignored: dict[str, int] = field(default_factory=dict)
    training_profile: TrainingProfile | None = None
    profile_version: int = 0
    labels: int = 0
    #: Alerts firing, by dedup key: their severity.
    firing: dict[str, str] = field(default_factory=dict)
    recent_ids: list[str] = field(default_factory=list)
    recent_data_ids: list[str] = field(default_factory=list)
    deadline_fired: bool = False
    terminal_command_id: str | None = None
    rule_cache: dict[str, CachedVerdict] = field(default_factory=dict)
    #: Counts at the newest MAX_CHECKPOINTS checkpoints, oldest first (change-point tests), and
    #: the clock slot (now // checkpoint_s) of the newest, or of the first judgement with canary
    #: requests, from which the first checkpoint counts.
    checkpoints: list[Checkpoint] = field(default_factory=list)
    checkpoint_slot: int | None = None
    #: Event-time alignment of the cohorts (controller.core.rollout.alignment): how long data
    #: may wait for the other cohort (the policy's `evaluation.align_s` when the rollout was
    #: created; 0: none), each cohort's latest completion reported, and the data held back, by
    #: cohort and slot, with each slot's latest completion.
    align_s: float = 0.0
    received: dict[str, float] = field(default_factory=dict)
    held: dict[str, dict[int, CohortStats]] = field(default_factory=dict)
    held_done: dict[str, dict[int, float]] = field(default_factory=dict)
    #: Cuts where a step changes the traffic share (alignment): the completion slot of the
    #: change while its cut is pending (data completing in or after it waits for the cut) and
    #: the cohorts whose reports it waits for (those both steps send traffic to), then
    #: whether the settle cut is pending (at the step's start plus settle_s: the router's
    #: acknowledgement moves it), and settle_s (the policy's `evaluation.settle_s` when the
    #: rollout was created).
    cut_slot: int | None = None
    cut_waits_for: list[str] = field(default_factory=list)
    settling: bool = False
    settle_s: float = 0.0
    #: The router's acknowledgements (`traffic.applied`): whether it acknowledges (the
    #: policy's `router.acknowledges` when the rollout was created), and the share acknowledged
    #: last, since when (its clamped `applied_at`). Before a step's acknowledgement the canary
    #: is judged at that share.
    acks: bool = False
    acked_percent: float = 0.0
    acked_at: float | None = None
    #: While the step's acknowledgement is awaited (None once it came, or with a router that
    #: does not acknowledge): the step's set_traffic, sent again as it was
    #: `router.ack_timeout_s` after it was issued, then after twice as long each time (a router
    #: acknowledges a command id it has seen again), and how many times it was.
    step_command: Command | None = None
    resends: int = 0
    #: Labels joined to their predictions (controller.core.stats.labelled): each cohort's
    #: pairs; the spans of prediction time at one canary share ([from, percent], oldest
    #: first, a span per share change); per span, the loss events and pairs of both cohorts
    #: ([canary events, canary pairs, baseline events, baseline pairs]); when each cohort's
    #: labels last came; and the pairs no span could take (in a bucket a change falls in, or
    #: before the first span).
    labelled: dict[str, LabelledStats] = field(default_factory=dict)
    share_spans: list[list[float]] = field(default_factory=list)
    label_strata: list[list[int]] = field(default_factory=list)
    label_seen: dict[str, float] = field(default_factory=dict)
    labels_unplaced: int = 0
    #: The serving pool's free capacity by resource (cpu, gpu, memory_gb: the limit less the
    #: use of the deployment's last `resource.usage` of each), for the plan's capacity guard.
    free_capacity: dict[str, float] = field(default_factory=dict)
    # ---- derived, not part of the value (rebuilt on demand) ----
    _seen: set[str] | None = field(default=None, repr=False)
    _seen_data: set[str] | None = field(default=None, repr=False)
    _rules: tuple[Policy, RuleSet] | None = field(default=None, repr=False)
    _profile: tuple[int, Mapping[str, StatsProfile], StatsProfile | None] | None = field(
        default=None, repr=False
    )

    # ---- reading ----------------------------------------------------------------------

    @property
    def deployment_id(self) -> str:
        return self.deployment.deployment_id

    @property
    def steps(self) -> tuple[TrafficStep, ...]:
        return self.deployment.plan.steps

    @property
    def baseline(self) -> CohortStats:
        return self.stats[BASELINE]

    @property
    def canary(self) -> CohortStats:
        return self.stats[CANARY]

    @property
    def shadow(self) -> CohortStats:
        return self.stats[SHADOW]

    def is_live(self) -> bool:
        """Still worth evaluating (not terminal)."""
        return not self.phase.is_terminal()

    def has_training_profile(self) -> bool:
        profile = self.training_profile
        return profile is not None and bool(profile.features or profile.prediction)

    def seen(self, event_id: str) -> bool:
        return event_id in self._seen_ids()

    def seen_data(self, data_id: str) -> bool:
        return data_id in self._seen_data_ids()

    def remember(self, event_id: str) -> None:
        index = self._seen_ids()
        if event_id not in index:
            _remember(self.recent_ids, index, event_id, MAX_RECENT_IDS)

    def remember_data(self, data_id: str) -> None:
        index = self._seen_data_ids()
        if data_id not in index:
            _remember(self.recent_data_ids, index, data_id, MAX_RECENT_DATA_IDS)

    def _seen_ids(self) -> set[str]:
        """The index of `recent_ids` (built on first use)."""
        if self._seen is None:
            self._seen = set(self.recent_ids)
        return self._seen

    def _seen_data_ids(self) -> set[str]:
        """The index of `recent_data_ids` (built on first use)."""
        if self._seen_data is None:
            self._seen_data = set(self.recent_data_ids)
        return self._seen_data

    def count_ignored(self, reason: str, n: int = 1) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + n

    def rules(self, policy: Policy) -> RuleSet:
        """The rollout's rules under `policy` (bound once per policy object); PolicyError."""
        cached = self._rules
        if cached is not None and cached[0] is policy:
            return cached[1]
        bound = policy.bind(self.deployment.plan.guardrails, self.deadline_s(policy))
        self._rules = (policy, bound)
        return bound

    def deadline_s(self, policy: Policy) -> float | None:
        """Seconds from the request to the deadline: the plan's, else the policy's."""
        plan_deadline = self.deployment.plan.deadline_s
        return plan_deadline if plan_deadline is not None else policy.deadline.after_s

    def profiles(self) -> tuple[Mapping[str, StatsProfile], StatsProfile | None]:
        """The training profile as the detectors take it (features by name, prediction)."""
        cached = self._profile
        if cached is not None and cached[0] == self.profile_version:
            return cached[1], cached[2]
        features: dict[str, StatsProfile] = {}
        prediction: StatsProfile | None = None
        if self.training_profile is not None:
            for f in self.training_profile.features:
                features[f.name] = StatsProfile.from_dict(f.model_dump(mode="json"))
            if self.training_profile.prediction is not None:
                prediction = StatsProfile.from_dict(
                    self.training_profile.prediction.model_dump(mode="json")
                )
        self._profile = (self.profile_version, features, prediction)
        return features, prediction

    def pending_cut(self) -> int | None:
        """The completion slot (of SLOT_S seconds) of the cut the rollout waits to take: the
        step's traffic change, then the step's start (the router's, once acknowledged) plus
        `settle_s`; None when no cut is pending."""
        if self.cut_slot is not None:
            return self.cut_slot
        if self.settling and self.step_started_at is not None:
            return math.ceil((self.step_started_at + self.settle_s) / SLOT_S - 1e-9)
        return None

    def take_checkpoint(
        self, now: float, every_s: float, rules: RuleSet | None = None
    ) -> Checkpoint | None:
        """Record the counts at the pending cut once the cohorts have reported past it (see
        `pending_cut` and controller.core.rollout.alignment), else when `now` has entered a
        new slot of `every_s` seconds since the last checkpoint (the first slot starts once the
        canary has requests; none while a cut is pending; at once when the newest checkpoint
        fixed no slow-request threshold and the baseline now has latencies), with the slow
        requests of every quantile a rule on the whole rollout restarts on. The k-th checkpoint
        gets index k, however many the state still keeps; at most one is taken per call."""
        last = self.checkpoints[-1] if self.checkpoints else None
        quantiles = () if rules is None else rules.checkpoint_quantiles()
        index = last.index + 1 if last is not None else 1
        cut = self.pending_cut()
        if cut is not None:
            first = self.cut_slot is not None  # the change: the interval it starts is mixed
            waits_for = self.cut_waits_for if first else self.routed()
            if not self.reported_past(cut * SLOT_S, waits_for):
                return None
            self.cut_slot, self.cut_waits_for, self.settling = None, [], first
            checkpoint = Checkpoint.take(
                index,
                cut * SLOT_S,
                self.baseline,
                self.canary,
                quantiles,
                last,
                cut=True,
                tested=not first,
            )
        else:
            if every_s <= 0 or self.canary.requests == 0:
                return None
            slot = math.floor(now / every_s)
            if not self._fixes_slots(last, quantiles):
                if self.checkpoint_slot is None:
                    self.checkpoint_slot = slot
                    return None
                if slot <= self.checkpoint_slot:
                    return None
            self.checkpoint_slot = slot
            checkpoint = Checkpoint.take(index, now, self.baseline, self.canary, quantiles, last)
        self.checkpoints.append(checkpoint)
        trim(self.checkpoints, MAX_CHECKPOINTS)
        return checkpoint

    def _fixes_slots(self, last: Checkpoint | None, quantiles: Sequence[float]) -> bool:
        """Whether a checkpoint now would fix a slow-request threshold the newest one could
        not (a cut taken before the baseline had latencies): then it is taken at once, so the
        slow-request tests start with the step, not a slot of `every_s` later."""
        if last is None or not self.baseline.latency.count:
            return False
        return any(last.slow_count(q) is None for q in quantiles)

    def reported_past(self, at: float, cohorts: Sequence[str]) -> bool:
        """Whether `cohorts` have reported what completed before `at` (completion time): each
        has reported a completion at or after it, or one cohort has reported `align_s` past
        it (another stalls). Read from the reports, not the clock, like the alignment."""
        if any(r >= at + self.align_s for r in self.received.values()):
            return True
        reached = [self.received.get(c) for c in cohorts]
        return all(r is not None and r >= at for r in reached)

    def routed(self) -> tuple[str, ...]:
        """The cohorts the current step sends traffic to (both, or the one that has it all)."""
        return routed_at(self.canary_percent)

    def awaiting_ack(self) -> bool:
        """Whether the router has yet to acknowledge the current step's set_traffic (never,
        for a router that does not acknowledge)."""
        return self.step_command is not None

    def applied(self) -> tuple[float, float | None]:
        """The canary's share the router has put in place (percent) and since when: the
        current step's from its start, or, while its acknowledgement is awaited, the share
        acknowledged last (0, before the first)."""
        if self.awaiting_ack():
            return self.acked_percent, self.acked_at
        return self.canary_percent, self.step_started_at

    def inputs_reach(self) -> float | None:
        """How far in event time the inputs of the cohorts the step routes to have reported
        (the earliest of their watermarks): None until each has reported."""
        reached = [self.received.get(c) for c in self.routed()]
        if any(r is None for r in reached):
            return None
        return min(r for r in reached if r is not None)

    # ---- plain values -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: `"v"`, then every value field in declaration order (see
        `field_codecs`)."""
        data: dict[str, Any] = {"v": STATE_VERSION}
        for f in _FIELDS:
            data[f.name] = f.codec.encode(getattr(self, f.name))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        """The state `to_dict` wrote; a field the stored dict lacks takes its default (a state
        stored before the field existed), or fails when it has none."""
        if data.get("v") != STATE_VERSION:
            raise ValueError(f"not a rollout state of version {STATE_VERSION}: {data.get('v')!r}")
        values: dict[str, Any] = {}
        for f in _FIELDS:
            if f.name in data:
                values[f.name] = f.codec.decode(data[f.name])
            elif f.required:
                raise ValueError(f"not a rollout state: {f.name!r} is missing")
        return cls(**values)

    def copy(self) -> RolloutState:
        """An independent copy (the functions of this module update their state in place)."""
        return RolloutState.from_dict(self.to_dict())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RolloutState):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in _FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable


def routed_at(canary_percent: float) -> tuple[str, ...]:
    """The cohorts a canary share sends traffic to (both, or the one that has it all)."""
    if canary_percent >= 100.0:
        return (CANARY,)
    if canary_percent <= 0.0:
        return (BASELINE,)
    return (BASELINE, CANARY)


def _remember(ring: list[str], index: set[str], item: str, bound: int) -> None:
    """Append a new id to a bounded ring (oldest dropped first), keeping its index in step."""
    ring.append(item)
    index.add(item)
    if len(ring) > bound:
        for old in ring[: len(ring) - bound]:
            index.discard(old)
        del ring[: len(ring) - bound]


# ---------------------------------------------------------------------------------------------
# Plain values, derived from the fields: one codec per field type
# ---------------------------------------------------------------------------------------------


class NoCodecError(RolloutError, TypeError):
    """A value field of a stored dataclass has a type no codec knows how to write."""

    def __init__(self, owner: str, name: str, annotation: object) -> None:
        self.owner = owner
        self.field = name
        self.annotation = annotation
        super().__init__(
            f"{owner}.{name} has type {_type_name(annotation)}, which has no codec: use a type "
            "the codecs of controller.core.state know (see field_codecs), or add a codec for it "
            "to _LEAVES there"
        )


@dataclass(frozen=True)
class Codec:
    """How values of one type become plain JSON values and back."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


@dataclass(frozen=True)
class FieldCodec:
    """A value field of a stored dataclass: its name, its codec, whether it has no default."""

    name: str
    codec: Codec
    required: bool


def _same(value: Any) -> Any:
    return value


def _to_dict(value: Any) -> Any:
    return value.to_dict()


#: The types a codec names explicitly: JSON scalars, written as they are and read back through
#: their constructor, and the core's plain values, with their own `to_dict` and `from_dict`.
_LEAVES: dict[Any, Codec] = {
    **{t: Codec(_same, t) for t in (bool, int, float, str)},
    CohortStats: Codec(_to_dict, CohortStats.from_dict),
    Panes: Codec(_to_dict, Panes.from_dict),
    Checkpoint: Codec(_to_dict, Checkpoint.from_dict),
    CachedVerdict: Codec(_to_dict, CachedVerdict.from_dict),
    LabelledStats: Codec(_to_dict, LabelledStats.from_dict),
}
#: Key types of dicts: a JSON object's keys are strings.
_KEYS: dict[Any, Codec] = {str: Codec(str, str), int: Codec(str, int)}


def _codec(annotation: Any) -> Codec | None:
    """The codec of a type annotation, built from the leaves up; None when there is none.

    The types of `_LEAVES` by their codec; enums by value; pydantic models as
    `model_dump(mode="json")` (read back by `model_validate`); `X | None` writes None as null;
    lists item by item; dicts with str or int keys sorted by key, the keys as strings.
    """
    leaf = _LEAVES.get(annotation)
    if leaf is not None:
        return leaf
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        inner = _codec(present[0]) if len(present) == 1 and len(args) == 2 else None
        return None if inner is None else _optional(inner)
    if origin is list and len(args) == 1:
        item = _codec(args[0])
        return None if item is None else _list(item)
    if origin is dict and len(args) == 2:
        key, value = _KEYS.get(args[0]), _codec(args[1])
        return None if key is None or value is None else _dict(key, value)
    if origin is None and isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return Codec(_by_value, annotation)
        if issubclass(annotation, BaseModel):
            return Codec(_model_dump, annotation.model_validate)
    return None


def _by_value(member: enum.Enum) -> Any:
    return member.value


def _model_dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json")


def _optional(inner: Codec) -> Codec:
    return Codec(
        lambda v: None if v is None else inner.encode(v),
        lambda v: None if v is None else inner.decode(v),
    )


def _list(item: Codec) -> Codec:
    return Codec(
        lambda v: [item.encode(x) for x in v],
        lambda v: [item.decode(x) for x in v],
    )


def _dict(key: Codec, value: Codec) -> Codec:
    return Codec(
        lambda v: {key.encode(k): value.encode(x) for k, x in sorted(v.items())},
        lambda v: {key.decode(k): value.decode(x) for k, x in v.items()},
    )


def _type_name(annotation: object) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def field_codecs(cls: type) -> tuple[FieldCodec, ...]:
    """The value fields of the dataclass `cls` with their codecs, in declaration order.

    The fields whose names start with `_` are derived caches, not part of the value. A value
    field of a type without a codec raises NoCodecError: at import for RolloutState, so a new
    field is stored, loaded and compared without any other edit, or fails loudly.
    """
    hints = typing.get_type_hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        codec = _codec(hints[f.name])
        if codec is None:
            raise NoCodecError(cls.__name__, f.name, hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        result.append(FieldCodec(f.name, codec, required))
    return tuple(result)


#: RolloutState's value: what `to_dict`, `from_dict` and `==` go through.
_FIELDS = field_codecs(RolloutState)
