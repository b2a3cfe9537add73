"""Invariants of RolloutState as plain data: any state, with any value in any of its fields,
survives JSON (`from_dict(to_dict())` is `==` and dumps to the same text), and a change in any
one field makes it unequal.

The states are drawn from the dataclass fields' own types (`field_codecs`), so a new field of a
type the codecs know is drawn, stored and compared here without an edit of this file.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from controller.core.state import CachedVerdict, Panes, RolloutState, field_codecs
from controller.core.stats import CohortStats
from controller.core.stats.checkpoint import Checkpoint, SlowCount
from controller.core.stats.labelled import LabelledStats
from controller.core.stats.sequential import Counts
from controller.core.verdict import Outcome, Verdict
from schemas import Command, DeploymentRequested, TrainingProfile
from tests.factories import make_deployment, sample_payloads

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
times = st.floats(min_value=0.0, max_value=4e9, allow_nan=False)
names = st.text(max_size=12)


@st.composite
def cohorts(draw: st.DrawFn) -> CohortStats:
    stats = CohortStats()
    for _ in range(draw(st.integers(0, 6))):
        ok = draw(st.booleans())
        stats.observe(
            ok=ok,
            latency_ms=draw(st.floats(min_value=0.0, max_value=1e5)),
            event_time=draw(times),
            error_type=None if ok else draw(st.sampled_from(["timeout", "oom"])),
            prediction=draw(st.none() | finite | st.sampled_from(["fraud", "ok"])),
            features=draw(
                st.none()
                | st.dictionaries(
                    st.sampled_from(["amount", "country"]),
                    st.none() | finite | st.sampled_from(["DE", "FR"]),
                    max_size=2,
                )
            ),
        )
    return stats


def counts() -> st.SearchStrategy[Counts]:
    return st.tuples(st.integers(0, 50), st.integers(0, 50)).map(
        lambda pair: Counts(pair[0], pair[0] + pair[1], pair[1], 2 * pair[1])
    )


checkpoints = st.builds(
    Checkpoint,
    index=st.integers(1, 10_000),
    at=times,
    errors=counts(),
    slow=st.lists(
        st.builds(
            SlowCount,
            quantile=st.sampled_from([0.5, 0.95, 0.99]),
            slot=st.tuples(st.integers(-1, 1), st.integers(-500, 500)),
            counts=counts(),
        ),
        max_size=2,
    ).map(tuple),
)
verdicts = st.builds(
    Verdict,
    detector=names,
    outcome=st.sampled_from(list(Outcome)),
    reason=names,
    evidence=st.dictionaries(
        names, st.none() | st.booleans() | st.integers() | names | st.floats(allow_nan=False)
    ),
)


#: The types of the state's leaves that hypothesis cannot draw meaningfully by itself.
def labelled(pairs: list[tuple[float, int, float]]) -> LabelledStats:
    """A cohort's labelled pairs: scores, 0/1 labels, delays."""
    stats = LabelledStats()
    for k, (score, label, delay) in enumerate(pairs):
        stats.add(f"r{k}", score, label, delay)
    return stats


LEAVES: dict[Any, st.SearchStrategy[Any]] = {
    bool: st.booleans(),
    int: st.integers(-(2**62), 2**62),
    float: finite,
    str: names,
    CohortStats: cohorts(),
    Panes: st.builds(
        Panes, width_s=st.floats(1.0, 600.0), start=times, previous=cohorts(), current=cohorts()
    ),
    Checkpoint: checkpoints,
    CachedVerdict: st.builds(
        CachedVerdict,
        at_requests=st.integers(0, 10**6),
        profile_version=st.integers(0, 99),
        verdict=verdicts,
    ),
    DeploymentRequested: st.sampled_from(
        [make_deployment(), make_deployment(deployment_id="dep-2", training_profile=None)]
    ),
    Command: st.sampled_from([p for p in sample_payloads() if isinstance(p, Command)]),
    TrainingProfile: st.sampled_from(
        [TrainingProfile(), make_deployment().training_profile or TrainingProfile()]
    ),
    LabelledStats: st.builds(
        labelled,
        st.lists(
            st.tuples(st.floats(0.0, 1.0), st.integers(0, 1), st.floats(0.0, 86400.0)),
            max_size=5,
        ),
    ),
}


def values_of(annotation: Any) -> st.SearchStrategy[Any]:
    """Any value of a field's type, built as its codec is (see controller.core.state)."""
    if annotation in LEAVES:
        return LEAVES[annotation]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return st.sampled_from(list(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        raise AssertionError(f"give {annotation.__name__} some samples in LEAVES")
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return st.none() | values_of(next(a for a in args if a is not type(None)))
    if origin is list:
        return st.lists(values_of(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(values_of(args[0]), values_of(args[1]), max_size=3)
    raise AssertionError(f"no strategy for {annotation}: add one to LEAVES")


HINTS = typing.get_type_hints(RolloutState)
states = st.builds(
    RolloutState, **{f.name: values_of(HINTS[f.name]) for f in field_codecs(RolloutState)}
)


def json_round_trip(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(data, allow_nan=False))
    return result


@settings(max_examples=200, deadline=None)
@given(states)
def test_any_state_survives_json_with_every_field(state: RolloutState) -> None:
    stored = json.dumps(state.to_dict(), allow_nan=False)

    restored = RolloutState.from_dict(json.loads(stored))

    assert state == restored
    assert stored == json.dumps(restored.to_dict(), allow_nan=False)
    assert state == state.copy()


@settings(max_examples=200, deadline=None)
@given(states, states, st.sampled_from([f.name for f in field_codecs(RolloutState)]))
def test_a_state_differs_from_one_with_any_field_changed(
    state: RolloutState, other: RolloutState, name: str
) -> None:
    changed = state.copy()
    setattr(changed, name, getattr(other, name))

    same = getattr(state, name) == getattr(other, name)

    assert same == (state == changed)
    assert same == (json_round_trip(state.to_dict()) == json_round_trip(changed.to_dict()))
