"""What every detector shares: the evaluation context, the Protocol, and parameter parsing.

A detector is built once from a policy rule's parameters (plain JSON values, as on the wire) and
then judges `evaluate(baseline, canary, context) -> Verdict` as often as the caller likes. A
parameter the detector does not know, or of the wrong type, fails when the policy loads, with
the list of known parameters.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from controller.core.stats.checkpoint import Checkpoint
from controller.core.stats.cohort import CohortStats
from controller.core.stats.profile import FeatureProfile
from controller.core.stats.sequential import SequentialTest
from controller.core.verdict import Evidence, EvidenceValue, Outcome, Verdict
from controller.errors import InvariantError, RolloutError

#: A parameter value as a policy rule carries it (the wire's GuardrailRule.params).
ParamValue = float | int | str | bool | list[float] | None
Params = Mapping[str, ParamValue]


class UnknownDetectorError(RolloutError, LookupError):
    """A policy names a detector that is not registered."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(
            f"unknown detector {name!r}; known detectors: {', '.join(self.known)}. "
            "Fix the policy's detector name."
        )


class InvalidParameterError(RolloutError, ValueError):
    """A detector parameter is unknown, of the wrong type or out of range."""

    def __init__(self, detector: str, message: str) -> None:
        self.detector = detector
        super().__init__(f"detector {detector!r}: {message}")


@dataclass(frozen=True)
class EvaluationContext:
    """What a detector may need besides the two cohorts. Time is an argument: `now` is event
    time in replay and the worker's clock live.

    `traffic_share` is the canary's configured share of traffic (0..1) in the current step;
    `training_profile` maps feature names to reference distributions, `prediction_profile` is
    the training distribution of the prediction. `checkpoints` are the rollout's counts at its
    newest checkpoints (where the change-point tests restart), oldest first.
    """

    now: float
    step_started_at: float | None = None
    traffic_share: float | None = None
    training_profile: Mapping[str, FeatureProfile] = field(default_factory=dict, hash=False)
    prediction_profile: FeatureProfile | None = None
    checkpoints: Sequence[Checkpoint] = field(default=(), hash=False)

    def __post_init__(self) -> None:
        share = self.traffic_share
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError(f"traffic_share is a fraction in [0, 1], got {share} (a percent?)")


class Detector(Protocol):
    """A configured detector: judges a canary against its baseline."""

    @property
    def name(self) -> str: ...

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict: ...


@runtime_checkable
class RestartsOnSlowRequests(Protocol):
    """A detector whose slow-request tests restart at checkpoints: each checkpoint records the
    slow requests above the baseline's bucket of these quantiles."""

    @property
    def checkpoint_quantiles(self) -> tuple[float, ...]: ...


#: Builds a detector from a policy rule's parameters; raises InvalidParameterError.
DetectorFactory = Callable[[Params], Detector]


# --------------------------------------------------------------------------------------------
# Parameters: frozen dataclasses filled from plain mappings
# --------------------------------------------------------------------------------------------

P = TypeVar("P")


class ParamsBase:
    """Base of detector parameter dataclasses.

    `PREFIXED` maps a Mapping-typed field to a key prefix: {"thresholds": "threshold."} lets a
    flat rule carry "threshold.age": 0.2, since rule parameters hold no nested objects.
    """

    PREFIXED: ClassVar[Mapping[str, str]] = {}

    def check(self) -> list[str]:
        """Range problems, one sentence each; empty when the parameters are valid."""
        return []


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any) -> Any:
    """Convert a plain value to the annotated type, or raise TypeError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value)
            except TypeError:
                continue
        raise TypeError
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError
        if not math.isfinite(value):
            raise TypeError
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise TypeError
        (item, _ellipsis) = typing.get_args(tp)
        return tuple(_coerce(item, v) for v in value)
    raise TypeError  # pragma: no cover  (a parameter type this parser does not know)


def parse_params(cls: type[P], detector: str, params: Params | None) -> P:
    """Fill the parameter dataclass `cls` from a plain mapping, checking names, types, ranges."""
    if not dataclasses.is_dataclass(cls):
        raise InvariantError(
            f"detector {detector!r}: parameters are parsed into a dataclass, got {cls!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    prefixed: Mapping[str, str] = getattr(cls, "PREFIXED", {})
    values: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {name: {} for name in prefixed}
    for key, value in (params or {}).items():
        owner = next((n for n, prefix in prefixed.items() if key.startswith(prefix)), None)
        if owner is not None:
            item_type = typing.get_args(hints[owner])[1]
            target, name = nested[owner], key[len(prefixed[owner]) :]
        elif key in fields and key not in prefixed:
            item_type, target, name = hints[key], values, key
        else:
            known = sorted(
                [f for f in fields if f not in prefixed]
                + [prefix + "<name>" for prefix in prefixed.values()]
            )
            raise InvalidParameterError(
                detector, f"unknown parameter {key!r}; known parameters: {', '.join(known)}"
            )
        try:
            target[name] = _coerce(item_type, value)
        except TypeError:
            raise InvalidParameterError(
                detector, f"parameter {key!r} must be {_type_name(item_type)}, got {value!r}"
            ) from None
    for owner, items in nested.items():
        if items:
            values[owner] = items
    result = cls(**values)
    problems: list[str] = result.check() if isinstance(result, ParamsBase) else []
    if problems:
        raise InvalidParameterError(detector, "; ".join(problems))
    return result


def check_alpha(alpha: float) -> list[str]:
    return [] if 0.0 < alpha < 1.0 else [f"alpha must be in (0, 1), got {alpha}"]


def check_positive(**values: float | None) -> list[str]:
    return [f"{k} must be positive, got {v}" for k, v in values.items() if v is not None and v <= 0]


def check_share(**values: float | None) -> list[str]:
    return [
        f"{k} must be in [0, 1], got {v}"
        for k, v in values.items()
        if v is not None and not 0.0 <= v <= 1.0
    ]


# --------------------------------------------------------------------------------------------
# Combining the parts of one detector's judgement
# --------------------------------------------------------------------------------------------


def combine(detector: str, parts: Sequence[Verdict], evidence: Evidence) -> Verdict:
    """One verdict from a detector's parts: the worst outcome, the reasons that led to it.

    With a PASS, every part's reason is kept; otherwise only the reasons of the worst parts.
    """
    if not parts:
        return Verdict.no_data(detector, "nothing to judge", evidence)
    worst_outcome = max((p.outcome for p in parts), key=lambda o: o.severity)
    chosen = (
        parts if worst_outcome is Outcome.PASS else [p for p in parts if p.outcome is worst_outcome]
    )
    reason = "; ".join(p.reason for p in chosen)
    merged: dict[str, EvidenceValue] = dict(evidence)
    for part in parts:
        merged.update(part.evidence)
    return Verdict(detector, worst_outcome, reason, merged)


def percent(rate: float) -> str:
    """A rate as a short percentage: 0.0312 -> "3.1%", 0.00042 -> "0.042%"."""
    value = rate * 100.0
    if value == 0.0 or value >= 1.0:
        return f"{value:.1f}%"
    return f"{value:.2g}%"


def number(value: float) -> str:
    """A number for a reason string: 3 significant digits, no exponent below a million."""
    if value != 0.0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def restart_note(
    test: SequentialTest, now: float, what: str, facts: dict[str, EvidenceValue], prefix: str = ""
) -> str:
    """When a change-point test's evidence is strongest since a checkpoint: record it in
    `facts` (`<prefix>since`, the checkpoint's time) and say it for a reason, e.g.
    " (strongest over the last 40 s: 21 of the 30 errors of both cohorts were the canary's)".
    Empty when the test from the start weighs most."""
    if test.since is None:
        return ""
    facts[f"{prefix}since"] = test.since.at
    return (
        f" (strongest over the last {now - test.since.at:.0f} s: {test.events} of the "
        f"{test.trials} {what} of both cohorts were the canary's)"
    )
