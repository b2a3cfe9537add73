"""The state of one rollout: plain data that lives in a table and round-trips through a dict.

`RolloutState` is what the core knows about a rollout between two events: where it stands
(phase, step, traffic, approvals), the statistics of each cohort, the alerts firing, the ids of
recently applied events, and the transition sequence number that command and decision ids derive
from. `to_dict()` gives plain JSON values; `from_dict(to_dict())` is equal (`==`) to the
original. The fields after `rule_cache` are derived caches, rebuilt on demand and not part of
the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from controller.core.phases import Phase
from controller.core.policy import Policy, RuleSet
from controller.core.stats.checkpoint import Checkpoint
from controller.core.stats.cohort import CohortStats, FeatureValue, PredictionValue
from controller.core.stats.profile import FeatureProfile as StatsProfile
from controller.core.verdict import Verdict
from schemas import DeploymentRequested, TrafficStep, TrainingProfile

STATE_VERSION = 1
MAX_RECENT_IDS = 1024
MAX_RECENT_DATA_IDS = 256
MAX_KEY = 256
#: Checkpoints kept for the change-point tests (the newest; 10 minutes at the default 10 s).
MAX_CHECKPOINTS = 60

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
    traffic_started: bool = False
    step_started_at: float | None = None
    step_command_id: str | None = None
    step_samples: int = 0
    #: The step whose approval gate the rollout waits at (or waited at before a pause).
    gate: int | None = None
    #: Approvals received, by step index: who approved.
    approvals: dict[int, str] = field(default_factory=dict)
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
        if self._seen is None:
            self._seen = set(self.recent_ids)
        return event_id in self._seen

    def seen_data(self, data_id: str) -> bool:
        if self._seen_data is None:
            self._seen_data = set(self.recent_data_ids)
        return data_id in self._seen_data

    def remember(self, event_id: str) -> None:
        if not self.seen(event_id):
            assert self._seen is not None
            _remember(self.recent_ids, self._seen, event_id, MAX_RECENT_IDS)

    def remember_data(self, data_id: str) -> None:
        if not self.seen_data(data_id):
            assert self._seen_data is not None
            _remember(self.recent_data_ids, self._seen_data, data_id, MAX_RECENT_DATA_IDS)

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

    def take_checkpoint(
        self, now: float, every_s: float, rules: RuleSet | None = None
    ) -> Checkpoint | None:
        """Record the counts when `now` has entered a new slot of `every_s` seconds since the
        last checkpoint (the first slot starts once the canary has requests), with the slow
        requests of every quantile a rule on the whole rollout restarts on. The k-th
        checkpoint gets index k, however many the state still keeps."""
        if every_s <= 0 or self.canary.requests == 0:
            return None
        slot = math.floor(now / every_s)
        if self.checkpoint_slot is None:
            self.checkpoint_slot = slot
            return None
        if slot <= self.checkpoint_slot:
            return None
        self.checkpoint_slot = slot
        index = self.checkpoints[-1].index + 1 if self.checkpoints else 1
        quantiles = () if rules is None else rules.checkpoint_quantiles()
        checkpoint = Checkpoint.take(index, now, self.baseline, self.canary, quantiles)
        self.checkpoints.append(checkpoint)
        del self.checkpoints[:-MAX_CHECKPOINTS]
        return checkpoint

    # ---- plain values -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "deployment": self.deployment.model_dump(mode="json"),
            "phase": self.phase.value,
            "created_at": self.created_at,
            "step": self.step,
            "canary_percent": self.canary_percent,
            "seq": self.seq,
            "traffic_started": self.traffic_started,
            "step_started_at": self.step_started_at,
            "step_command_id": self.step_command_id,
            "step_samples": self.step_samples,
            "gate": self.gate,
            "approvals": {str(k): v for k, v in sorted(self.approvals.items())},
            "resume_phase": None if self.resume_phase is None else self.resume_phase.value,
            "stats": {k: v.to_dict() for k, v in self.stats.items()},
            "panes": None
            if self.panes is None
            else {k: v.to_dict() for k, v in self.panes.items()},
            "ignored": dict(sorted(self.ignored.items())),
            "training_profile": None
            if self.training_profile is None
            else self.training_profile.model_dump(mode="json"),
            "profile_version": self.profile_version,
            "labels": self.labels,
            "firing": dict(sorted(self.firing.items())),
            "recent_ids": list(self.recent_ids),
            "recent_data_ids": list(self.recent_data_ids),
            "deadline_fired": self.deadline_fired,
            "terminal_command_id": self.terminal_command_id,
            "rule_cache": {k: v.to_dict() for k, v in sorted(self.rule_cache.items())},
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "checkpoint_slot": self.checkpoint_slot,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        if data.get("v") != STATE_VERSION:
            raise ValueError(f"not a rollout state of version {STATE_VERSION}: {data.get('v')!r}")
        profile = data.get("training_profile")
        resume = data.get("resume_phase")
        panes = data.get("panes")
        step_started_at = data.get("step_started_at")
        gate = data.get("gate")
        slot = data.get("checkpoint_slot")
        return cls(
            deployment=DeploymentRequested.model_validate(data["deployment"]),
            phase=Phase(data["phase"]),
            created_at=float(data["created_at"]),
            step=int(data["step"]),
            canary_percent=float(data["canary_percent"]),
            seq=int(data["seq"]),
            traffic_started=bool(data["traffic_started"]),
            step_started_at=None if step_started_at is None else float(step_started_at),
            step_command_id=data.get("step_command_id"),
            step_samples=int(data["step_samples"]),
            gate=None if gate is None else int(gate),
            approvals={int(k): str(v) for k, v in data.get("approvals", {}).items()},
            resume_phase=None if resume is None else Phase(resume),
            stats={k: CohortStats.from_dict(v) for k, v in data["stats"].items()},
            panes=None if panes is None else {k: Panes.from_dict(v) for k, v in panes.items()},
            ignored={str(k): int(v) for k, v in data.get("ignored", {}).items()},
            training_profile=None if profile is None else TrainingProfile.model_validate(profile),
            profile_version=int(data.get("profile_version", 0)),
            labels=int(data.get("labels", 0)),
            firing={str(k): str(v) for k, v in data.get("firing", {}).items()},
            recent_ids=[str(i) for i in data.get("recent_ids", ())],
            recent_data_ids=[str(i) for i in data.get("recent_data_ids", ())],
            deadline_fired=bool(data.get("deadline_fired", False)),
            terminal_command_id=data.get("terminal_command_id"),
            rule_cache={
                str(k): CachedVerdict.from_dict(v) for k, v in data.get("rule_cache", {}).items()
            },
            checkpoints=[Checkpoint.from_dict(c) for c in data.get("checkpoints", ())],
            checkpoint_slot=None if slot is None else int(slot),
        )

    def copy(self) -> RolloutState:
        """An independent copy (the functions of this module update their state in place)."""
        return RolloutState.from_dict(self.to_dict())

    _VALUE_FIELDS = (
        "deployment",
        "phase",
        "created_at",
        "step",
        "canary_percent",
        "seq",
        "traffic_started",
        "step_started_at",
        "step_command_id",
        "step_samples",
        "gate",
        "approvals",
        "resume_phase",
        "stats",
        "panes",
        "ignored",
        "training_profile",
        "profile_version",
        "labels",
        "firing",
        "recent_ids",
        "recent_data_ids",
        "deadline_fired",
        "terminal_command_id",
        "rule_cache",
        "checkpoints",
        "checkpoint_slot",
    )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RolloutState):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._VALUE_FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable


def _remember(ring: list[str], index: set[str], item: str, bound: int) -> None:
    """Append a new id to a bounded ring (oldest dropped first), keeping its index in step."""
    ring.append(item)
    index.add(item)
    if len(ring) > bound:
        for old in ring[: len(ring) - bound]:
            index.discard(old)
        del ring[: len(ring) - bound]


# ---------------------------------------------------------------------------------------------
# The result of one call
