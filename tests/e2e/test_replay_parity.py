"""Replay proves what the worker did: live rollouts on the real broker, their inputs exported
from the topics, replayed through `rollout replay`, and compared with what the worker published.

The same commands (ids, actions, percents, steps, in order), the same decisions (phase
transitions and the rules named, in order, with the same ids), the same alerts (ids, dedup keys,
firing and resolved). Times may differ by up to one tick interval; nothing else may.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from controller.cli import cli
from controller.commands.export_cmd import read_inputs, select
from controller.policy_io import default_policy
from controller.replay.replay import replay
from schemas import (
    Alert,
    ApprovalGranted,
    Command,
    Decision,
    Envelope,
    RollbackRequested,
    Topic,
    decode,
)
from tests.e2e.harness import Rollouts, deployment_request, plan, step

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: The worker's tick interval in this test, and replay's: the largest time difference allowed.
#: A second, not the harness's half second: the worker stamps an output with its clock when it
#: processes the input, replay with the input's event time, so the worker's lag behind its
#: inputs counts in the difference too (0.13-0.15 s on an idle machine, over 0.5 s on a loaded
#: one).
TICK_S = 1.0

#: The rollouts of the parity run: (deployment id, what happens to it).
HEALTHY, SLOW, SILENT, GATED, MANUAL = "fraud-p1", "ranker-p2", "search-p3", "churn-p4", "eta-p5"


def _rules(decision: Decision) -> tuple[str, ...]:
    failed = decision.evidence.get("failed_rules")
    return tuple(failed) if isinstance(failed, list) else ()


def _shape(outputs: list[Any]) -> list[tuple[Any, ...]]:
    """Everything of an output that must be equal, in order (not its time)."""
    shaped: list[tuple[Any, ...]] = []
    for o in outputs:
        if isinstance(o, Command):
            shaped.append(("command", o.command_id, o.action.value, o.canary_percent, o.step))
        elif isinstance(o, Decision):
            shaped.append(("decision", o.decision_id, o.from_phase, o.to_phase, o.step, _rules(o)))
        elif isinstance(o, Alert):
            shaped.append(("alert", o.alert_id, o.dedup_key, o.status, o.severity.value))
    return shaped


def _story(outputs: list[Any]) -> str:
    """The decisions, one line each: when, the phase change and why (a failure's explanation)."""
    return "\n".join(
        f"  {d.at.isoformat()} {d.from_phase}->{d.to_phase} step {d.step}: {d.reason}"
        for d in _by_kind(outputs, Decision)
    )


def _time(o: Any) -> datetime:
    return o.issued_at if isinstance(o, Command) else o.at


def _by_kind(outputs: list[Any], kind: type) -> list[Any]:
    return [o for o in outputs if isinstance(o, kind)]


def test_replaying_the_exported_inputs_gives_what_the_worker_published(
    world: Rollouts,
) -> None:
    world.env["ROLLOUT_TICK_INTERVAL_S"] = str(TICK_S)
    world.start_worker()
    # the worker's clock is its own: wait until it keeps up (a first request answered) so that
    # the compared times are the decisions', not the worker's start-up
    world.send(deployment_request("warm-up", plan(step(10, bake_s=600))))
    world.wait_for(lambda: world.observer.phase("warm-up"), what="the worker to answer")
    # the fleets serve on after the terminal command, as services do: replay then sees reports
    # past the worker's decision (a fleet that stopped with it left its last batches waiting
    # for a cohort that never reported again, and replay's rollback never came)
    world.deploy(deployment_request(HEALTHY), rate=400, stop_on_terminal=False)
    world.deploy(
        deployment_request(SLOW, model="ranker", baseline="v6", candidate="v7"),
        rate=400,
        stop_on_terminal=False,
        canary_latency_factor=2.5,
    )
    world.deploy(
        deployment_request(SILENT, model="search", baseline="v2", candidate="v3"),
        rate=400,
        stop_on_terminal=False,
        canary_silent=True,
    )
    gated = plan(step(10), step(50, approval=True), step(100))
    world.deploy(deployment_request(GATED, gated, model="churn"), rate=400, stop_on_terminal=False)
    manual = world.deploy(
        deployment_request(MANUAL, plan(step(10, bake_s=600), step(100)), model="eta"),
        rate=200,
        stop_on_terminal=False,
    )
    observer = world.observer
    world.wait_for(
        lambda: observer.phase(GATED) == "awaiting_approval", what=f"{GATED} at its gate"
    )
    world.send(ApprovalGranted(deployment_id=GATED, step=1, by="alice", reason="LGTM"))
    world.wait_for(lambda: manual.canary_percent == 10.0, what=f"the router to apply {MANUAL}")
    world.send(RollbackRequested(deployment_id=MANUAL, by="sre-on-call", reason="pager"))
    ids = (HEALTHY, SLOW, SILENT, GATED, MANUAL)
    ends = {d: world.wait_terminal(d, timeout=90) for d in ids}
    assert {
        HEALTHY: "promoted",
        SLOW: "rolled_back",
        SILENT: "rolled_back",
        GATED: "promoted",
        MANUAL: "rolled_back",
    } == {d: e.to_phase for d, e in ends.items()}
    # every output of the terminal decisions (alerts travel on their own topic) has arrived
    world.wait_for(
        lambda: all(observer.alerts(d) for d in (SLOW, SILENT)), what="the rollback alerts"
    )

    # the worker's timer ran until the export: replay ticks as far (a bake that ended after a
    # fleet stopped serving on its terminal command is decided by the clock alone)
    taken = datetime.now(UTC).replace(microsecond=0)
    exported = select(read_inputs(world.settings, timeout_s=30), set(ids))
    assert [] == exported.skipped
    replayed: list[Envelope[Any]] = []
    result = replay(
        exported.lines,
        default_policy(),
        tick_s=TICK_S,
        emit=replayed.append,
        until=taken.timestamp(),
    )
    assert 0 == result.rejected

    drifts: list[float] = []
    for deployment_id in ids:
        live = (
            observer.decisions(deployment_id)
            + observer.commands(deployment_id)
            + observer.alerts(deployment_id)
        )
        mine = [e.data for e in replayed if e.key() == deployment_id]
        # the worker's outputs travel on three topics: compare each topic's order
        for kind in (Decision, Command, Alert):
            assert _shape(_by_kind(live, kind)) == _shape(_by_kind(mine, kind)), (
                f"{deployment_id}: {kind.__name__}s differ; the worker decided\n"
                + _story(live)
                + "\nreplay decided\n"
                + _story(mine)
            )
        by_id = {_shape([o])[0][1]: o for o in live}
        for o in mine:
            twin = by_id[_shape([o])[0][1]]
            drift = abs((_time(o) - _time(twin)).total_seconds())
            drifts.append(drift)
            assert drift <= TICK_S, f"{deployment_id}: {o} is {drift:.3f} s off"

    print(f"parity: {len(drifts)} outputs, largest time difference {max(drifts):.3f} s")

    # the CLI gives the same envelopes, one per line, as the worker would publish them
    log = world.tmp_path / "inputs.jsonl"
    log.write_bytes(b"".join(line + b"\n" for line in exported.lines))
    printed = CliRunner().invoke(
        cli,
        ["replay", str(log), "--outputs", "--tick", str(TICK_S), "--until", taken.isoformat()],
    )
    assert 0 == printed.exit_code, printed.output
    lines = [decode(line.encode()) for line in printed.output.splitlines()]
    assert [e.to_json() for e in replayed] == [e.to_json() for e in lines]  # type: ignore[union-attr]
    topics = {e.data.TOPIC for e in lines}  # type: ignore[union-attr]
    # and every rollout configures its model's monitor, on the deployments topic
    assert {Topic.COMMANDS, Topic.DECISIONS, Topic.ALERTS, Topic.DEPLOYMENTS} == topics
