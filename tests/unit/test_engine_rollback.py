"""The engine's side of a rollback after a promotion: the model's monitor is told that the
record's rollback version serves production again."""

from __future__ import annotations

import schemas as s
from controller.engine import Engine
from tests.factories import make_deployment, make_event
from tests.unit.core.rollout_helpers import Rollout, three_steps, unit_policy


def test_a_rollback_after_promotion_points_the_monitor_at_the_rollback_version() -> None:
    request = make_deployment(
        plan=three_steps(),
        training_profile=None,
        rollback=s.RollbackProcedure(version="v0"),
    )
    rollout = Rollout(request)
    rollout.serve_until("promoted")
    engine = Engine(unit_policy())

    effects = engine.on_event(
        rollout.state,
        make_event(s.RollbackRequested(deployment_id="dep-1", by="sre")),
        rollout.now + 1,
    )

    configured = [r.event.data for r in effects.records if r.topic is s.Topic.DEPLOYMENTS]
    assert [("fraud", "v0")] == [(c.model, c.version) for c in configured]
    assert "rolled back after promotion: v0 serves" in configured[0].reason
    commands = [r.event.data for r in effects.records if r.topic is s.Topic.COMMANDS]
    assert [("rollback", "v0")] == [(c.action.value, c.rollback_version) for c in commands]
