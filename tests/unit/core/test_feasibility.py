"""Plans that bind to a policy and still cannot promote are named before they are sent."""

from __future__ import annotations

from typing import Any

from controller.core.policy import Policy
from controller.core.rollout.feasibility import plan_problems
from schemas import RolloutPlan, TrafficStep


def policy(**deadline: Any) -> Policy:
    return Policy.from_mapping({"name": "p", "rules": [], "deadline": deadline})


def plan(*bakes: float, deadline_s: float | None = None, last: float = 100.0) -> RolloutPlan:
    shares = [10.0 * (i + 1) for i in range(len(bakes) - 1)] + [last]
    return RolloutPlan(
        steps=tuple(
            TrafficStep(canary_percent=s, min_bake_s=b) for s, b in zip(shares, bakes, strict=True)
        ),
        deadline_s=deadline_s,
    )


def test_a_deadline_that_rolls_back_before_the_bakes_end_is_named() -> None:
    problems = plan_problems(plan(600, 600, deadline_s=900), policy(action="rollback"))

    assert [
        "the steps bake 1200 s in all but its deadline_s is 900 s, when the rollout is rolled "
        "back: lengthen deadline_s or shorten min_bake_s"
    ] == problems


def test_the_policys_deadline_counts_when_the_plan_has_none() -> None:
    problems = plan_problems(plan(600, 600), policy(after_s=900, action="rollback"))

    assert 1 == len(problems)
    assert "the policy's deadline is 900 s" in problems[0]


def test_a_deadline_that_promotes_or_pauses_is_a_time_box_not_a_problem() -> None:
    assert [] == plan_problems(plan(600, 600, deadline_s=900), policy(action="promote"))
    assert [] == plan_problems(plan(600, 600, deadline_s=900), policy(action="pause"))
    assert [] == plan_problems(plan(600, 600, deadline_s=1200), policy(action="rollback"))
    assert [] == plan_problems(plan(600, 600), policy())


def test_a_step_after_a_full_one_must_wait_for_something() -> None:
    idle = RolloutPlan(
        steps=(
            TrafficStep(canary_percent=100, min_bake_s=60),
            TrafficStep(canary_percent=100, min_bake_s=0),
        )
    )
    gated = RolloutPlan(
        steps=(
            TrafficStep(canary_percent=100, min_bake_s=60),
            TrafficStep(canary_percent=100, min_bake_s=0, requires_approval=True),
        )
    )

    assert ["step 1 follows a step at 100% with no approval and no bake"] == [
        p.split(":")[0] for p in plan_problems(idle, policy())
    ]
    assert [] == plan_problems(gated, policy())
    # approvers named for the step in the deployment record make it a gate too
    assert [] == plan_problems(idle, policy(), gated=frozenset({1}))
