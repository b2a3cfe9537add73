"""`rollout status ID` shows the rollout's deployment record: where, how, the approvals asked
for per gate and those the controller accepted, what to do on a failure, how to roll back from
production. All from the decisions topic (the first decision keeps the record), built from
what the core really publishes."""

from __future__ import annotations

import schemas as s
from controller.commands.ops import read_records, record_lines
from tests.factories import make_deployment, make_event
from tests.unit.core.rollout_helpers import Rollout, three_steps


def recorded() -> s.DeploymentRequested:
    return make_deployment(
        plan=three_steps(),
        training_profile=None,
        environment="prod",
        target="eu-west-1 checkout",
        method=s.DeployMethod(name="kserve", reference="registry/fraud:v2"),
        approvals=(
            s.RequiredApproval(step=0, by=("sre-oncall",)),
            s.RequiredApproval(step=1, by=("ml-leads", "carol")),
        ),
        on_failure=s.OnFailure(action="pause", note="page the fraud on-call"),
        rollback=s.RollbackProcedure(
            version="v0", procedure="redeploy v0", runbook_url="https://runbooks.example/rb"
        ),
    )


def published(rollout: Rollout) -> list[s.Envelope[s.Payload]]:
    """The decisions topic as `status` reads it."""
    return [make_event(d) for d in rollout.decisions]


def test_one_rollouts_status_shows_its_whole_record_with_the_approvals_granted() -> None:
    request = recorded()
    rollout = Rollout(request)
    rollout.send(s.ApprovalGranted(deployment_id="dep-1", step=0, by="dana", reason="go"))
    opened = rollout.decisions[-1].at.isoformat()

    record = read_records(iter(published(rollout)))["dep-1"]

    assert [
        "environment prod, target eu-west-1 checkout, requested by alice",
        "deployed with kserve (registry/fraud:v2)",
        f"approval start step 0 (10%): from sre-oncall; granted by dana (unverified) at "
        f"{opened}: go",
        "approval widen to step 1 (50%): from ml-leads or carol; not granted yet",
        "on failure: pause; page the fraud on-call",
        "rollback from production: to v0; redeploy v0; runbook https://runbooks.example/rb",
    ] == record_lines(record)
    assert {
        "environment": "prod",
        "target": "eu-west-1 checkout",
        "method": {"name": "kserve", "reference": "registry/fraud:v2"},
        "approvals_required": [
            {"step": 0, "canary_percent": 10.0, "by": ["sre-oncall"]},
            {"step": 1, "canary_percent": 50.0, "by": ["ml-leads", "carol"]},
        ],
        "approvals_granted": [
            {"step": 0, "by": "dana", "reason": "go", "at": opened, "key_id": None}
        ],
        "on_failure": {"action": "pause", "note": "page the fraud on-call", "runbook_url": None},
        "rollback": {
            "version": "v0",
            "default": False,
            "procedure": "redeploy v0",
            "runbook_url": "https://runbooks.example/rb",
        },
        "requested_by": "alice",
    } == record.to_dict()


def test_a_record_of_defaults_says_what_applies() -> None:
    request = make_deployment(plan=three_steps(), training_profile=None, environment="staging")
    rollout = Rollout(request)

    record = read_records(iter(published(rollout)))["dep-1"]

    assert [
        "environment staging, target -, requested by alice",
        "approvals: none required",
        "on failure: not recorded (the policy rolls back a failing canary)",
        "rollback from production: to v1 (the baseline)",
    ] == record_lines(record)


def test_a_request_without_a_record_leaves_its_decisions_as_they_were() -> None:
    rollout = Rollout(make_deployment(plan=three_steps(), training_profile=None))

    assert "record" not in rollout.decisions[0].evidence
    assert {} == read_records(iter(published(rollout)))


def test_an_approval_the_worker_verified_shows_its_key() -> None:
    from datetime import UTC, datetime

    from controller.engine import Engine
    from controller.security.signing import KeyRing, RegisteredKey, SigningKey
    from tests.unit.core.rollout_helpers import START, unit_policy

    dana = SigningKey.generate("dana-2026", "dana")
    engine = Engine(
        unit_policy(),
        identities=KeyRing.of([RegisteredKey("dana-2026", "dana", ("sre-oncall",), dana.public)]),
    )
    alice = SigningKey.generate("alice-2026", "alice")
    engine.identities.keys["alice-2026"] = RegisteredKey("alice-2026", "alice", (), alice.public)
    request = alice.sign(recorded(), signed_at=datetime.fromtimestamp(START, UTC))
    first = engine.on_event(None, make_event(request), START)
    approval = dana.sign(
        s.ApprovalGranted(deployment_id="dep-1", step=0, by="dana"),
        signed_at=datetime.fromtimestamp(START + 1, UTC),
    )
    second = engine.on_event(first.state, make_event(approval, id="evt-approval"), START + 1)
    decisions = [
        make_event(r.event.data)
        for r in (*first.records, *second.records)
        if isinstance(r.event.data, s.Decision)
    ]

    lines = record_lines(read_records(iter(decisions))["dep-1"])

    assert any(
        line.startswith(
            "approval start step 0 (10%): from sre-oncall; granted by dana "
            "(verified, key dana-2026) at "
        )
        for line in lines
    ), lines
