"""Workers come and go: a killed worker's successor resumes from the changelog table, and the
workers of one consumer group share the rollouts by partition."""

from __future__ import annotations

import json

import pytest

from tests.e2e.harness import (
    Rollouts,
    WorkerProcess,
    deployment_request,
    plan,
    spread_over_partitions,
    step,
    terminal_command_ids,
    transitions,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def decided_by(worker: WorkerProcess) -> dict[str, list[str]]:
    """The decisions this worker logged, by start of its process:
    {"start #1": ["<deployment>:<to_phase>", ...], "start #2": [...]}."""
    found: dict[str, list[str]] = {}
    start = "start #0"
    for line in worker.log_lines():
        if line.startswith("==== "):
            start = line.split(": ", 1)[1].removesuffix(" ====")
            continue
        if '"rollout.decision"' not in line:
            continue
        record = json.loads(line)
        found.setdefault(start, []).append(f"{record['deployment']}:{record['to_phase']}")
    return found


def test_a_worker_killed_mid_rollout_resumes_and_ends_it_once(world: Rollouts) -> None:
    worker = world.start_worker()
    three = plan(step(10, bake_s=3), step(50, bake_s=3), step(100, bake_s=2))
    world.deploy(deployment_request("fraud-v3", three), rate=400)
    world.wait_for(
        lambda: any(d.step == 1 for d in world.observer.decisions("fraud-v3")),
        what="fraud-v3 to reach step 1 (50%)",
    )

    worker.kill()  # no shutdown: offsets, changelog writes and producer buffers are cut off
    worker.start()

    ended = world.wait_terminal("fraud-v3", timeout=90)
    assert "promoted" == ended.to_phase
    # the successor carried on from the table: one start, no step repeated or skipped
    assert [
        ("pending", "progressing", 0, 10.0),
        ("progressing", "progressing", 1, 50.0),
        ("progressing", "progressing", 2, 100.0),
        ("progressing", "promoted", 2, 100.0),
    ] == transitions(world.observer.decisions("fraud-v3"))
    commands = world.observer.commands("fraud-v3")
    assert 1 == len(terminal_command_ids(commands))
    assert {"promote"} == {c.action.value for c in commands if c.action.is_terminal()}
    # a command republished after the crash keeps its id: one id per transition
    by_step = {(c.action.value, c.step): c.command_id for c in commands}
    assert len(by_step) == len({c.command_id for c in commands})
    assert "fraud-v3:promoted" in decided_by(worker)["start #2"]


def test_workers_in_one_group_share_the_rollouts_by_partition(world: Rollouts) -> None:
    workers = [world.start_worker("worker-a"), world.start_worker("worker-b")]
    world.wait_for(lambda: world.group_members() == 2, timeout=60, what="both workers to join")
    deployments = spread_over_partitions(4)
    quick = plan(step(50, bake_s=2), step(100, bake_s=0, samples=0))
    for i, dep in enumerate(deployments):
        world.deploy(deployment_request(dep, quick, model=f"svc{i}"), rate=150, seed=i)

    for dep in deployments:
        assert "promoted" == world.wait_terminal(dep, timeout=60).to_phase

    # each transition published once, by the one worker that owns the deployment's partition
    for dep in deployments:
        ids = [d.decision_id for d in world.observer.decisions(dep)]
        assert len(set(ids)) == len(ids) == 3, (dep, ids)
        assert 1 == len(terminal_command_ids(world.observer.commands(dep)))
    owners: dict[str, set[str]] = {}
    for worker in workers:
        for entries in decided_by(worker).values():
            for entry in entries:
                owners.setdefault(entry.split(":")[0], set()).add(worker.name)
    assert set(deployments) == set(owners)
    assert all(1 == len(names) for names in owners.values()), owners
    assert {"worker-a", "worker-b"} == set().union(*owners.values())
