"""What every detector shares: the evaluation context, the Protocol, and parameter parsing.

A detector is built once from a policy rule's parameters (plain JSON values, as on the wire) and
then judges `evaluate(baseline, canary, context) -> Verdict` as often as the caller likes. A
parameter the detector does not know, or of the wrong type, fails when the policy loads, with
the list of known parameters.

A detector also says what it is, so that the policy and the rollout never keep lists of
detector names: whether it spends a share of the policy's significance budget
(`spends_alpha()`), and whether it is judged from the clock (`judged_from_clock`), with the
earliest time its outcome could change without new data (`wake_at`). Detectors judged from
their statistics alone take the last two from `JudgedFromData`.
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
from controller.core.stats.labelled import LabelledStats
from controller.core.stats.profile import FeatureProfile
from controller.core.stats.sequential import Counts, SequentialTest
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
    newest checkpoints (where the change-point tests restart), oldest first. `last_seen` is each
    cohort's newest event time received, counted or not (data may wait for the other cohort
    before it is counted: controller.core.rollout.alignment); silence is measured from it.
    """

    now: float
    step_started_at: float | None = None
    traffic_share: float | None = None
    training_profile: Mapping[str, FeatureProfile] = field(default_factory=dict, hash=False)
    prediction_profile: FeatureProfile | None = None
    checkpoints: Sequence[Checkpoint] = field(default=(), hash=False)
    last_seen: Mapping[str, float] = field(default_factory=dict, hash=False)
    #: joined labels: each cohort's pairs, the loss counts of each span of one traffic share
    #: (controller.core.stats.labelled), and when each cohort's labels last came
    labelled: Mapping[str, LabelledStats] = field(default_factory=dict, hash=False)
    label_strata: Sequence[Counts] = field(default=(), hash=False)
    label_seen: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        share = self.traffic_share
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError(f"traffic_share is a fraction in [0, 1], got {share} (a percent?)")


@runtime_checkable
class Detector(Protocol):
    """A configured detector: judges a canary against its baseline, and says what it is."""

    @property
    def name(self) -> str: ...

    @property
    def judged_from_clock(self) -> bool:
        """Is the verdict a function of `context.now` too, not only of the data (outage's
        silence)? Such a rule is judged at every evaluation (its `every_n` must be 1), and the
        rollout's timer wakes it at `wake_at`."""
        ...

    def spends_alpha(self) -> bool:
        """Is this configured detector an anytime-valid test whose `alpha` bounds its false
        failure probability over the whole rollout? Such a rule takes its share of the
        policy's `significance.alpha` (see controller.core.policy); a threshold far beyond
        sampling noise, or a rule whose tests are all switched off, does not."""
        ...

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict: ...

    def wake_at(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> float | None:
        """The earliest time after `context.now` at which, with no new data (the same cohorts,
        the same context but for `now`), `evaluate` could give another outcome; None when
        only new data can change it. The reason and evidence may say how long it has been
        (a silence of 12.3 s) at any time: only the outcome is meant. Judging at exactly the
        returned time gives the new outcome."""
        ...


class JudgedFromData:
    """For detectors whose outcome is a function of the statistics (and, for the change-point
    tests, of the context's checkpoints, which the rollout takes on its own clock): never
    judged from the clock, so no time to wake them at."""

    judged_from_clock: ClassVar[bool] = False

    def wake_at(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> float | None:
        """None: with no new data, the outcome never changes."""
        return None


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


# --------------------------------------------------------------------------------------------
# Detectors judged from the clock: when their outcome turns
# --------------------------------------------------------------------------------------------


def earliest(holds: Callable[[float], bool], guess: float) -> float | None:
    """The smallest float `t` for which `holds(t)`, given a condition that is monotone in `t`
    (false, then true for good) and a guess near where it turns; None when it holds at no
    finite time. Exact in floating point: `holds(t)` and not `holds` of the float before,
    so judging at the returned time sees the change, and a moment before does not."""
    if not math.isfinite(guess):
        return None
    step = math.ulp(guess)
    if holds(guess):
        high, low = guess, guess - step
        while holds(low):
            if not math.isfinite(low):
                raise InvariantError("earliest: the condition holds at every time")
            high = low
            step *= 2
            low = high - step
    else:
        low, high = guess, guess + step
        while not holds(high):
            if not math.isfinite(high):
                return None
            low = high
            step *= 2
            high = low + step
    while True:  # holds(high) and not holds(low): halve until they are neighbours
        middle = low + (high - low) / 2
        if not low < middle < high:
            return high if math.isfinite(high) else None
        if holds(middle):
            high = middle
        else:
            low = middle
