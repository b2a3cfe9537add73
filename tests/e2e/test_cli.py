"""What people see: `rollout status` and `rollout watch` read a finished rollout's audit trail
(and `status` of one rollout its deployment record)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from controller.cli import cli
from schemas import ApprovalDenied, RollbackProcedure
from tests.e2e.harness import Rollouts, deployment_request, plan, step

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_status_and_watch_show_a_finished_rollout(world: Rollouts) -> None:
    world.start_worker()
    gated = plan(step(10), step(100), approval_to_start=True)
    request = deployment_request("promo-v8", gated, model="promo").model_copy(
        update={"environment": "staging", "rollback": RollbackProcedure(procedure="redeploy")}
    )
    world.send(request)
    world.wait_for(
        lambda: world.observer.phase("promo-v8") == "awaiting_approval",
        what="promo-v8 to wait for approval to start",
    )
    world.send(ApprovalDenied(deployment_id="promo-v8", step=0, by="bob", reason="freeze"))
    world.wait_terminal("promo-v8")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": world.settings.bootstrap_servers,
        "ROLLOUT_TOPIC_PREFIX": world.settings.topic_prefix,
    }
    runner = CliRunner()

    status = runner.invoke(cli, ["status", "promo-v8"], env=env)
    as_json = runner.invoke(cli, ["status", "promo-v8", "--json"], env=env)
    watch = runner.invoke(cli, ["watch", "promo-v8", "--timeout", "30"], env=env)

    assert (0, 0, 0) == (status.exit_code, as_json.exit_code, watch.exit_code), (
        status.output + as_json.output + watch.output
    )
    assert ["rollouts:"] == status.output.splitlines()[:1]
    assert status.output.split()[1:6] == ["promo-v8", "aborted", "step", "0", "(0%)"]
    assert "step 0 (10%) denied by bob: freeze" in status.output
    # one rollout named: its deployment record follows (the model promo is not named)
    assert [
        "environment staging, target -, requested by e2e",
        "approval start step 0 (10%): from anyone; not granted yet",
        "on failure: not recorded (the policy rolls back a failing canary)",
        "rollback from production: to v1 (the baseline); redeploy",
    ] == [line.strip() for line in status.output.splitlines()[2:]]
    latest = json.loads(as_json.output)["rollout"]
    assert ("awaiting_approval", "aborted") == (latest["from_phase"], latest["to_phase"])
    assert "staging" == latest["record"]["environment"]
    assert [{"step": 0, "canary_percent": 10.0, "by": []}] == latest["record"]["approvals_required"]
    lines = watch.output.splitlines()
    assert 2 == len(lines), watch.output
    assert "pending -> awaiting_approval" in lines[0]
    assert "awaiting_approval -> aborted" in lines[1] and "denied by bob" in lines[1]
    assert all(line.startswith("decision ") for line in lines)  # no traffic, so no command


def test_a_persons_request_is_answered_and_a_refusal_exits_non_zero(
    world: Rollouts, tmp_path: Path
) -> None:
    world.start_worker()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": world.settings.bootstrap_servers,
        "ROLLOUT_TOPIC_PREFIX": world.settings.topic_prefix,
        "ROLLOUT_TOPIC_PARTITIONS": str(world.settings.topic_partitions),
    }
    runner = CliRunner()
    gated = deployment_request("gate-v2", plan(step(10), step(100), approval_to_start=True))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(gated.model_dump_json())
    world.wait_for(lambda: world.group_members() == 1, timeout=60, what="the worker to join")

    def run(*args: str) -> Any:
        return runner.invoke(cli, [*args, "--by", "bob", "--wait", "30"], env=env)

    ghost = run("approve", "ghost-v1", "--step", "0")
    deploy = runner.invoke(cli, ["deploy", str(plan_file), "--wait", "30"], env=env)
    again = runner.invoke(cli, ["deploy", str(plan_file), "--wait", "30"], env=env)
    resume = run("resume", "gate-v2")
    approve = run("approve", "gate-v2", "--step", "0")
    late = run("approve", "gate-v2", "--step", "0")
    quick = run("pause", "gate-v2", "--no-wait")

    assert 1 == ghost.exit_code, ghost.output
    assert "Error: refused: no rollout 'ghost-v1': ApprovalGranted refused" in ghost.output
    assert 0 == deploy.exit_code, deploy.output
    assert "decision: pending -> awaiting_approval" in deploy.output
    assert 1 == again.exit_code and "'gate-v2' is already a rollout" in again.output
    assert 1 == resume.exit_code and "awaiting_approval, not paused" in resume.output
    assert 0 == approve.exit_code, approve.output
    assert "decision: awaiting_approval -> progressing" in approve.output
    assert 1 == late.exit_code and "past that gate" in late.output
    assert 0 == quick.exit_code and 1 == len(quick.output.splitlines())  # sent, no wait
