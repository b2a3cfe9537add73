"""The pipelines policy: the packaged default validates; an invalid one is refused with every
problem named in one message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import controller
from controller.core.pipelines import PipelinesPolicy, PipelineState, PoolState
from controller.core.policy import PolicyError

PACKAGED = Path(controller.__file__).parent / "policies" / "pipelines.yaml"


def test_the_packaged_policy_states_the_defaults() -> None:
    packaged = PipelinesPolicy.from_mapping(yaml.safe_load(PACKAGED.read_text(encoding="utf-8")))

    assert PipelinesPolicy.default().to_dict() == packaged.to_dict()


def test_the_stated_alarm_levels_follow_from_the_false_alarm_rates() -> None:
    policy = PipelinesPolicy.default()

    # one false alarm per pool per 30 days at one check a minute, for 3 pipelines
    assert policy.growth_threshold(3) == pytest.approx(11.772, abs=1e-3)
    # one per 200 runs
    assert policy.run_threshold() == pytest.approx(5.298, abs=1e-3)


def test_an_invalid_policy_is_refused_with_every_problem_in_one_message() -> None:
    with pytest.raises(PolicyError) as refused:
        PipelinesPolicy.from_mapping(
            {
                "quota": {"sample_s": -1, "growth": {"shifts": []}, "colour": "red"},
                "training": {"duration": {"ratios": [0.5]}},
            }
        )

    message = str(refused.value)
    assert message.startswith("invalid pipelines policy: ")
    assert "quota.sample_s: Input should be greater than 0" in message
    assert "quota.colour: Extra inputs are not permitted" in message


def test_coherence_problems_are_named_together() -> None:
    with pytest.raises(PolicyError) as refused:
        PipelinesPolicy.from_mapping(
            {"quota": {"growth": {"shifts": []}}, "training": {"duration": {"ratios": [0.5]}}}
        )

    assert refused.value.problems == (
        "quota.growth.shifts: at least one shift, each above 0; "
        "training.duration.ratios: at least one ratio, each above 1",
    )


def test_empty_states_round_trip_through_json() -> None:
    pool = PoolState(pool="p", created_at=1.0)
    pipeline = PipelineState(pipeline="q", created_at=1.0)

    assert pool == PoolState.from_dict(json.loads(json.dumps(pool.to_dict())))
    assert pipeline == PipelineState.from_dict(json.loads(json.dumps(pipeline.to_dict())))
