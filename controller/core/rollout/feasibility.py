"""Plans that cannot succeed under a policy, told before they are sent.

The worker accepts any plan the policy can bind (unknown detectors and locked rules abort it at
once). Some plans bind and still cannot promote: `plan_problems` names them, one sentence each,
for `rollout deploy` to refuse (`--force` sends anyway). Pure: the plan and the policy in,
sentences out.
"""

from __future__ import annotations

from controller.core.policy import DeadlineAction, Policy
from schemas import RolloutPlan


def plan_problems(
    plan: RolloutPlan, policy: Policy, gated: frozenset[int] = frozenset()
) -> list[str]:
    """Why `plan` cannot promote under `policy`; empty when nothing rules it out.

    - Its steps bake longer in all than its deadline (the plan's, else the policy's) allows,
      and the deadline rolls back: the last step cannot pass in time. (A deadline that
      promotes is a time box, one that pauses waits for a person: not problems.)
    - A step after one at 100 % changes nothing: a second full step is allowed only to wait
      for an approval (its own `requires_approval`, or approvers named for it in the
      deployment record: `gated`) or to bake again, so it must say which.
    """
    problems: list[str] = []
    deadline = plan.deadline_s if plan.deadline_s is not None else policy.deadline.after_s
    baking = sum(step.min_bake_s for step in plan.steps)
    action = policy.deadline.action
    if deadline is not None and baking > deadline and action is DeadlineAction.ROLLBACK:
        source = "its deadline_s" if plan.deadline_s is not None else "the policy's deadline"
        problems.append(
            f"the steps bake {baking:g} s in all but {source} is {deadline:g} s, when the "
            "rollout is rolled back: lengthen deadline_s or shorten min_bake_s"
        )
    for index, (before, step) in enumerate(zip(plan.steps, plan.steps[1:], strict=False), 1):
        waits = step.requires_approval or index in gated or step.min_bake_s > 0
        if before.canary_percent == 100 and not waits:
            problems.append(
                f"step {index} follows a step at 100% with no approval and no bake: it "
                "changes nothing; remove it, or give it requires_approval or min_bake_s"
            )
    return problems
