"""The pipelines core's state as plain data: a quota pool's, and a pipeline's.

`to_dict()` gives plain JSON values and `from_dict(to_dict())` is equal (`==`) to the state:
both are derived from the dataclass fields (`plain`, `build`), not written out field by field.
Sizes are bounded: per pipeline of a pool, at most `window` samples, `history` increments and
`lag` held ones (the policy's, each capped); per pipeline, at most `history` durations,
`max_live_runs` live runs, `MAX_RECENT_RUNS` finished run ids and `MAX_FIRING` open alerts;
a pool holds at most `MAX_POOL_PIPELINES` pipelines.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

MAX_POOL_PIPELINES = 256
MAX_RECENT_RUNS = 64
MAX_FIRING = 256
MAX_WINDOW = 1024

T = TypeVar("T")


def plain(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON values (nested dataclasses, dicts and lists included)."""
    return dataclasses.asdict(obj)


def build(cls: type[T], data: Mapping[str, Any]) -> T:
    """A dataclass from `plain`'s output, each field converted by its annotated type."""
    hints = typing.get_type_hints(cls)
    kwargs = {
        f.name: _convert(hints[f.name], data[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]  # cls is a dataclass
        if f.name in data
    }
    return cls(**kwargs)


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value)
    if origin is dict:
        _, inner_tp = typing.get_args(tp)
        return {str(k): _convert(inner_tp, v) for k, v in value.items()}
    if origin is list:
        (inner_tp,) = typing.get_args(tp)
        return [_convert(inner_tp, v) for v in value]
    if tp is float:
        return float(value)
    if tp is int:
        return int(value)
    if tp is str:
        return str(value)
    if tp is bool:
        return bool(value)
    return value


class Plain:
    """`to_dict` / `from_dict` derived from the fields."""

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        return build(cls, data)


@dataclass
class Bank(Plain):
    """A bank of CUSUMs (Page), one per alternative: `s[i] = max(0, s[i] + llr[i])`, an alarm
    when any reaches `h`. With K alternatives each at `h = h0 + ln K`, the bank together alarms
    falsely at most as often as one CUSUM at `h0` (a union bound on Lorden's e^-h). Firing, the
    evidence for the history against the alternative that fired (`back`) resolves it."""

    s: list[float] = field(default_factory=list)
    #: per alternative, when the data behind its s begin (the change-point estimate)
    since: list[float] = field(default_factory=list)
    firing: bool = False
    fired_at: float | None = None
    #: the alternative that fired (its index) and the change point it estimated
    fired: int = -1
    fired_since: float | None = None
    back: float = 0.0

    def step(
        self, llrs: list[float], start: float, now: float, h: float, h_back: float
    ) -> str | None:
        """Add one observation's LLRs (of the data in [start, now]); "fired", "resolved" or
        None."""
        if self.firing:
            self.back = max(0.0, self.back - llrs[self.fired])
            if self.back >= h_back:
                self.s = [0.0] * len(llrs)
                self.since = [now] * len(llrs)
                self.firing, self.fired_at, self.fired, self.fired_since = False, None, -1, None
                self.back = 0.0
                return "resolved"
            return None
        if len(self.s) != len(llrs):
            self.s, self.since = [0.0] * len(llrs), [start] * len(llrs)
        for i, llr in enumerate(llrs):
            value = self.s[i] + llr
            if value <= 0.0:
                self.s[i], self.since[i] = 0.0, now
            else:
                self.s[i] = value
        top = max(range(len(llrs)), key=lambda i: self.s[i])
        if self.s[top] >= h:
            self.firing, self.fired_at, self.fired = True, now, top
            self.fired_since, self.back = self.since[top], 0.0
            return "fired"
        return None


@dataclass
class Firing(Plain):
    """An open alert: the pipeline it names, since when, how severe, and its last words."""

    pipeline: str
    since: float
    severity: str
    summary: str = ""
    #: the growth rule: the use it resolves at or below (its level before the change)
    level: float | None = None


# ---- a quota pool ---------------------------------------------------------------------------


@dataclass
class Member(Plain):
    guaranteed: float | None = None
    weight: float = 1.0


@dataclass
class Gauge(Plain):
    """A pipeline's latest reported use of the pool (and its demand)."""

    used: float
    at: float
    requested: float | None = None


@dataclass
class Series(Plain):
    """A pipeline's samples on the pool's grid and its growth test's history."""

    #: [time, used] of the last `window` samples
    samples: list[list[float]] = field(default_factory=list)
    #: increments that make the history (median, MAD) of the growth test
    history: list[float] = field(default_factory=list)
    #: increments waiting `lag` samples before they join the history
    held: list[float] = field(default_factory=list)


@dataclass
class PoolState(Plain):
    pool: str
    created_at: float
    configured: bool = False
    resource: str = ""
    unit: str = "1"
    limit: float | None = None
    warning: float = 0.8
    critical: float = 0.95
    throttle: bool = False
    members: dict[str, Member] = field(default_factory=dict)
    gauges: dict[str, Gauge] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    #: [time, total used] of the pool on its grid (the exhaustion forecast's window)
    totals: list[list[float]] = field(default_factory=list)
    banks: dict[str, Bank] = field(default_factory=dict)
    firing: dict[str, Firing] = field(default_factory=dict)
    #: usage events of another resource than the pool's (not counted in it)
    mismatched: int = 0
    #: fair share: since when each pipeline has been over its share while another waits
    over_since: dict[str, float] = field(default_factory=dict)
    #: throttles published and not released: pipeline -> the use it must come down to
    throttled: dict[str, float] = field(default_factory=dict)
    last_check: float | None = None
    #: usage events of pipelines the pool does not list (counted, judged with weight 1)
    unlisted: list[str] = field(default_factory=list)

    def total(self) -> float:
        return sum(g.used for g in self.gauges.values())


# ---- a pipeline: training runs, datasets, its own usage -------------------------------------


@dataclass
class LiveRun(Plain):
    started_at: float
    #: resource -> resource-seconds used while the run was live (the integral of the gauges)
    used_s: dict[str, float] = field(default_factory=dict)


@dataclass
class ProfileRef(Plain):
    """A dataset profile kept as a reference (the wire FeatureProfile's fields, as dicts)."""

    dataset: str
    split: str
    row_count: int
    at: float
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    label: dict[str, Any] | None = None


@dataclass
class PipelineState(Plain):
    pipeline: str
    created_at: float
    #: log-durations of the last successful runs (the duration test's history)
    durations: list[float] = field(default_factory=list)
    #: the failure rate's history, exponentially weighted: failures and runs
    failures_w: float = 0.0
    runs_w: float = 0.0
    #: outcomes (1 failed, 0 not) waiting `lag` runs before they join the failure history
    held: list[float] = field(default_factory=list)
    runs: int = 0
    failures: int = 0
    streak: int = 0
    live: dict[str, LiveRun] = field(default_factory=dict)
    recent_runs: list[str] = field(default_factory=list)
    banks: dict[str, Bank] = field(default_factory=dict)
    firing: dict[str, Firing] = field(default_factory=dict)
    #: the pipeline's latest usage per resource
    usage: dict[str, Gauge] = field(default_factory=dict)
    #: since when it has held quota with no run live
    idle_since: float | None = None
    has_runs: bool = False
    #: the last accepted training profile (drift), the latest training profile (skew)
    accepted: ProfileRef | None = None
    latest_training: ProfileRef | None = None
    last_check: float | None = None

    def remember_run(self, run_id: str) -> None:
        self.recent_runs.append(run_id)
        del self.recent_runs[:-MAX_RECENT_RUNS]


__all__ = [
    "MAX_FIRING",
    "MAX_POOL_PIPELINES",
    "MAX_RECENT_RUNS",
    "MAX_WINDOW",
    "Bank",
    "Firing",
    "Gauge",
    "LiveRun",
    "Member",
    "PipelineState",
    "PoolState",
    "ProfileRef",
    "Series",
    "build",
    "plain",
]
