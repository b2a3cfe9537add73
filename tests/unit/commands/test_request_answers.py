"""`rollout approve/pause/...` print the decision their request leads to, not another decision
of the same rollout that happens to arrive while they wait (the deployment's own, say)."""

from __future__ import annotations

import schemas as s
from controller.commands.ops import _follows_from
from tests.factories import make_deployment
from tests.unit.core.rollout_helpers import Rollout, three_steps


def test_an_approval_is_answered_by_the_gate_it_opens_not_by_the_deployments_decision() -> None:
    rollout = Rollout(make_deployment(plan=three_steps(approval_to_start=True)))
    [deployed] = rollout.decisions
    approval = s.ApprovalGranted(deployment_id="dep-1", step=0, by="dana")
    rollout.send(approval)
    opened = rollout.decisions[-1]

    assert deployed.to_phase == "awaiting_approval" and opened.to_phase == "progressing"
    assert not _follows_from(deployed, approval)
    assert _follows_from(opened, approval)
    assert not _follows_from(opened, approval.model_copy(update={"by": "someone-else"}))
    assert _follows_from(deployed, make_deployment())


def test_manual_actions_are_answered_by_their_own_transitions() -> None:
    rollout = Rollout(make_deployment(plan=three_steps()))
    pause = s.PauseRequested(deployment_id="dep-1", by="sre")
    resume = s.ResumeRequested(deployment_id="dep-1", by="sre")
    abort = s.AbortRequested(deployment_id="dep-1", by="sre")
    rollout.send(pause)
    paused = rollout.decisions[-1]
    rollout.send(resume)
    resumed = rollout.decisions[-1]
    rollout.send(abort)
    aborted = rollout.decisions[-1]

    assert [_follows_from(d, pause) for d in (paused, resumed, aborted)] == [True, False, False]
    assert [_follows_from(d, resume) for d in (paused, resumed, aborted)] == [False, True, False]
    assert [_follows_from(d, abort) for d in (paused, resumed, aborted)] == [False, False, True]
