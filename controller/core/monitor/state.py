"""A model's monitor as plain data: what it watches, its reference, its CUSUMs, its counts.

`to_dict()` gives plain JSON values and `from_dict(to_dict())` is equal (`==`) to the state, so a
monitor is stored in a table like a rollout and survives restarts and rebalances. Its size is
bounded: the reference and the open intervals are `CohortStats` (bounded sketches and category
counters), the CUSUMs one per rule key, the rate model 24 hourly rates, the recent delta ids at
most `MAX_RECENT_IDS`, the versions counted at most `MAX_VERSIONS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.core.monitor.cusum import Cusum
from controller.core.stats.cohort import CohortStats
from controller.core.stats.labelled import LabelledStats

MAX_RECENT_IDS = 64
MAX_VERSIONS = 16
HOURS = 24

Stage = Literal["unmonitored", "waiting", "learning", "calibrating", "watching"]


@dataclass
class RateModel:
    """The rate of requests served well, per second: recent (exponentially weighted) and by hour
    of the day (a daily cycle), learned while nothing is wrong."""

    recent: float | None = None
    #: seconds of traffic the recent rate has learned (its weights start as a plain mean)
    recent_s: float = 0.0
    hours: list[float] = field(default_factory=lambda: [0.0] * HOURS)
    #: seconds of traffic learned in each hour of the day (an hour counts once it has 1,800)
    hour_s: list[float] = field(default_factory=lambda: [0.0] * HOURS)
    #: the end of the last interval judged (outage time runs from here)
    judged_to: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "recent": self.recent,
            "recent_s": self.recent_s,
            "hours": self.hours,
            "hour_s": self.hour_s,
            "judged_to": self.judged_to,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RateModel:
        return cls(
            recent=data.get("recent"),
            recent_s=float(data.get("recent_s", 0.0)),
            hours=[float(x) for x in data["hours"]],
            hour_s=[float(x) for x in data["hour_s"]],
            judged_to=data.get("judged_to"),
        )


@dataclass
class Reference:
    """The monitored version's reference traffic: learned over `learn_s`, then frozen; the
    derived parameters (`frozen`: rates, bins and their proportions) are computed once."""

    started_at: float
    stats: CohortStats
    learned_at: float | None = None
    calibrated_at: float | None = None
    #: the version it was learned on
    version: str | None = None
    frozen: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "stats": self.stats.to_dict(),
            "learned_at": self.learned_at,
            "calibrated_at": self.calibrated_at,
            "version": self.version,
            "frozen": self.frozen,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        return cls(
            started_at=float(data["started_at"]),
            stats=CohortStats.from_dict(data["stats"]),
            learned_at=data.get("learned_at"),
            calibrated_at=data.get("calibrated_at"),
            version=data.get("version"),
            frozen=dict(data.get("frozen") or {}),
        )


@dataclass
class LabelReference:
    """The monitored version's labelled reference: its first pairs (by arrival) over
    `labels.learn_s`, then frozen; the label rules' calibration runs on its own clock, since
    labels come hours after the predictions the prediction reference is learned from."""

    version: str | None
    stats: LabelledStats = field(default_factory=LabelledStats)
    #: when its first pair arrived (None: none yet)
    started_at: float | None = None
    learned_at: float | None = None
    calibrated_at: float | None = None
    frozen: dict[str, Any] = field(default_factory=dict)
    #: the label keys' open calibration interval (as MonitorState.calib_open) and its start
    calib_open: dict[str, list[float]] = field(default_factory=dict)
    calib_started: float | None = None
    released_at: float | None = None
    #: the rate of labelled pairs (label_delay's stalled key)
    rate: RateModel = field(default_factory=RateModel)

    def stage(self) -> str:
        if self.learned_at is None:
            return "learning"
        return "calibrating" if self.calibrated_at is None else "watching"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "stats": self.stats.to_dict(),
            "started_at": self.started_at,
            "learned_at": self.learned_at,
            "calibrated_at": self.calibrated_at,
            "frozen": self.frozen,
            "calib_open": self.calib_open,
            "calib_started": self.calib_started,
            "released_at": self.released_at,
            "rate": self.rate.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelReference:
        return cls(
            version=data.get("version"),
            stats=LabelledStats.from_dict(data["stats"]),
            started_at=data.get("started_at"),
            learned_at=data.get("learned_at"),
            calibrated_at=data.get("calibrated_at"),
            frozen=dict(data.get("frozen") or {}),
            calib_open={k: [float(x) for x in v] for k, v in data.get("calib_open", {}).items()},
            calib_started=data.get("calib_started"),
            released_at=data.get("released_at"),
            rate=RateModel.from_dict(data["rate"]),
        )


@dataclass
class LabelReport:
    """The labelled pairs of the monitored version over the current report span (what the
    periodic `quality` decision sums up), and the last span's summary."""

    started_at: float
    stats: LabelledStats = field(default_factory=LabelledStats)
    #: pairs of other versions in the span
    other_pairs: int = 0
    last: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "stats": self.stats.to_dict(),
            "other_pairs": self.other_pairs,
            "last": self.last,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelReport:
        return cls(
            started_at=float(data["started_at"]),
            stats=LabelledStats.from_dict(data["stats"]),
            other_pairs=int(data.get("other_pairs", 0)),
            last=data.get("last"),
        )


@dataclass
class MonitorState:
    """Everything one model's monitor knows (see the module docstring)."""

    model: str
    created_at: float
    configured: bool = False
    version: str | None = None
    #: who configured it last: "operator" or "rollout:<deployment id>"
    source: str = ""
    #: the inline monitoring policy (None: the worker's default)
    policy: dict[str, Any] | None = None
    training_profile: dict[str, Any] | None = None
    pinned: bool = False
    reference: Reference | None = None
    #: the monitored version's traffic since the last check
    pending: CohortStats | None = None
    #: rules judged less often than every check: their traffic since their last judgement
    held: dict[str, CohortStats] = field(default_factory=dict)
    last_check: float | None = None
    cusums: dict[str, Cusum] = field(default_factory=dict)
    rate: RateModel = field(default_factory=RateModel)
    #: calibration: each key's counts in the open calibration interval, and its start
    calib_open: dict[str, list[float]] = field(default_factory=dict)
    calib_started: float | None = None
    #: when the dispersion intervals held while watching were last released (Cusum.release)
    released_at: float | None = None
    #: the training-serving skew window (features only) and its start
    skew_window: CohortStats | None = None
    skew_started: float | None = None
    #: skew keys over their tolerance (a level, not a CUSUM): since when, with the distance
    skew_firing: dict[str, list[float]] = field(default_factory=dict)
    #: predictions seen: of the monitored version, of others, by version (bounded)
    requests: int = 0
    other_requests: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    first_seen: float | None = None
    last_seen: float | None = None
    #: when the last notice about unmonitored traffic went out
    noticed_at: float | None = None
    recent_ids: list[str] = field(default_factory=list)
    #: labelled pairs (the label join) of the monitored version since the last check
    labels_pending: LabelledStats | None = None
    #: label rules judged less often than every check: the pairs since their last judgement,
    #: per judging period (its `every_s`, as text)
    labels_held: dict[str, LabelledStats] = field(default_factory=dict)
    label_reference: LabelReference | None = None
    label_report: LabelReport | None = None
    #: labelled pairs seen: of the monitored version, of others
    labels: int = 0
    other_labels: int = 0

    # ---- reading ----------------------------------------------------------------------

    def stage(self) -> Stage:
        if not self.configured:
            return "unmonitored"
        ref = self.reference
        if self.version is None or ref is None:
            return "waiting"
        if ref.learned_at is None:
            return "learning"
        if ref.calibrated_at is None:
            return "calibrating"
        return "watching"

    def firing(self) -> list[str]:
        """The keys whose alerts are firing, sorted."""
        keys = [k for k, c in self.cusums.items() if c.firing]
        return sorted(keys + list(self.skew_firing))

    def seen_data(self, delta_id: str) -> bool:
        return delta_id in self.recent_ids

    def remember_data(self, delta_id: str) -> None:
        self.recent_ids.append(delta_id)
        del self.recent_ids[:-MAX_RECENT_IDS]

    def count_version(self, version: str, n: int) -> None:
        self.versions[version] = self.versions.get(version, 0) + n
        if len(self.versions) > MAX_VERSIONS:
            smallest = min(self.versions, key=lambda v: (self.versions[v], v))
            del self.versions[smallest]

    # ---- plain data -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "created_at": self.created_at,
            "configured": self.configured,
            "version": self.version,
            "source": self.source,
            "policy": self.policy,
            "training_profile": self.training_profile,
            "pinned": self.pinned,
            "reference": None if self.reference is None else self.reference.to_dict(),
            "pending": None if self.pending is None else self.pending.to_dict(),
            "held": {k: v.to_dict() for k, v in sorted(self.held.items())},
            "last_check": self.last_check,
            "cusums": {k: v.to_dict() for k, v in sorted(self.cusums.items())},
            "rate": self.rate.to_dict(),
            "calib_open": self.calib_open,
            "calib_started": self.calib_started,
            "released_at": self.released_at,
            "skew_window": None if self.skew_window is None else self.skew_window.to_dict(),
            "skew_started": self.skew_started,
            "skew_firing": self.skew_firing,
            "requests": self.requests,
            "other_requests": self.other_requests,
            "versions": self.versions,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "noticed_at": self.noticed_at,
            "recent_ids": self.recent_ids,
            "labels_pending": None
            if self.labels_pending is None
            else self.labels_pending.to_dict(),
            "labels_held": {k: v.to_dict() for k, v in sorted(self.labels_held.items())},
            "label_reference": None
            if self.label_reference is None
            else self.label_reference.to_dict(),
            "label_report": None if self.label_report is None else self.label_report.to_dict(),
            "labels": self.labels,
            "other_labels": self.other_labels,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MonitorState:
        def stats(value: Any) -> CohortStats | None:
            return None if value is None else CohortStats.from_dict(value)

        reference = data.get("reference")
        return cls(
            model=str(data["model"]),
            created_at=float(data["created_at"]),
            configured=bool(data["configured"]),
            version=data.get("version"),
            source=str(data.get("source", "")),
            policy=data.get("policy"),
            training_profile=data.get("training_profile"),
            pinned=bool(data.get("pinned", False)),
            reference=None if reference is None else Reference.from_dict(reference),
            pending=stats(data.get("pending")),
            held={k: CohortStats.from_dict(v) for k, v in data.get("held", {}).items()},
            last_check=data.get("last_check"),
            cusums={k: Cusum.from_dict(v) for k, v in data.get("cusums", {}).items()},
            rate=RateModel.from_dict(data["rate"]),
            calib_open={k: [float(x) for x in v] for k, v in data.get("calib_open", {}).items()},
            calib_started=data.get("calib_started"),
            released_at=data.get("released_at"),
            skew_window=stats(data.get("skew_window")),
            skew_started=data.get("skew_started"),
            skew_firing={k: [float(x) for x in v] for k, v in data.get("skew_firing", {}).items()},
            requests=int(data.get("requests", 0)),
            other_requests=int(data.get("other_requests", 0)),
            versions={str(k): int(v) for k, v in data.get("versions", {}).items()},
            first_seen=data.get("first_seen"),
            last_seen=data.get("last_seen"),
            noticed_at=data.get("noticed_at"),
            recent_ids=[str(x) for x in data.get("recent_ids", [])],
            labels_pending=None
            if data.get("labels_pending") is None
            else LabelledStats.from_dict(data["labels_pending"]),
            labels_held={
                k: LabelledStats.from_dict(v) for k, v in data.get("labels_held", {}).items()
            },
            label_reference=None
            if data.get("label_reference") is None
            else LabelReference.from_dict(data["label_reference"]),
            label_report=None
            if data.get("label_report") is None
            else LabelReport.from_dict(data["label_report"]),
            labels=int(data.get("labels", 0)),
            other_labels=int(data.get("other_labels", 0)),
        )


__all__ = [
    "MAX_RECENT_IDS",
    "MAX_VERSIONS",
    "LabelReference",
    "LabelReport",
    "MonitorState",
    "RateModel",
    "Reference",
    "Stage",
]
