"""Signed control events and commands on the real broker, end to end.

A worker with an identities file (alice, in group sre) and the controller's command key holds a
rollout at its start gate: `rollout approve` without a key is refused (dead-lettered with why,
an alert of kind control, no gate opened); with alice's key it opens the gate, the decision
names alice's verified key, and the command that follows is signed with the controller's key.
A router that trusts that key applies it; one that trusts another key refuses it, and the
worker pages (a critical alert of kind router).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from kafka.consumer.fetcher import ConsumerRecord

import schemas as s
from controller.cli import cli
from controller.engine import Engine
from controller.policy_io import default_policy
from controller.sdk import CommandListener, emit
from controller.security.signing import KeyRing, SigningKey, signing_options
from controller.settings import Settings
from controller.stream.app import RolloutWorker
from controller.stream.embedded import EmbeddedWorker
from controller.topics import topic_name
from tests.kafka_read import read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DEPLOYMENT = "fraud-signed"
CONTROLLER = "rollout-controller"
#: generous: the worker's start (its consumer group) comes first
WAIT_S = 45.0


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """alice's key file, the controller's, and the identities file that registers alice."""
    alice, controller = tmp_path / "alice.key", tmp_path / "controller.key"
    SigningKey.generate("alice-1", "alice").save(alice)
    SigningKey.generate("controller-1", CONTROLLER).save(controller)
    identities = tmp_path / "identities.yaml"
    entry = {"id": "alice-1", "public_key": SigningKey.load(alice).public_text()}
    identities.write_text(
        yaml.safe_dump({"identities": [{"name": "alice", "groups": ["sre"], "keys": [entry]}]})
    )
    return {"alice": alice, "controller": controller, "identities": identities}


@pytest.fixture
def settings(worker_settings: Settings, keys: dict[str, Path]) -> Settings:
    return worker_settings.model_copy(
        update={"identities_file": keys["identities"], "command_key_file": keys["controller"]}
    )


@pytest.fixture
def worker(settings: Settings) -> Iterator[EmbeddedWorker]:
    engine = Engine(default_policy(), **signing_options(settings))  # as `rollout worker` does
    with EmbeddedWorker(RolloutWorker(settings, engine)) as running:
        yield running


def cli_run(settings: Settings, *args: str) -> Result:
    """A `rollout` command against the test's broker and topics, waiting for the answer."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "ROLLOUT_TOPIC_PREFIX": settings.topic_prefix,
        "ROLLOUT_SIGNING_KEY_FILE": None,
        "ROLLOUT_POLICY_FILE": None,
    }
    return CliRunner().invoke(cli, [*args, "--wait", str(WAIT_S)], env=env)


def approve(settings: Settings, *args: str) -> Result:
    """`rollout approve DEPLOYMENT --step 0 ...`, waiting for the worker's answer."""
    return cli_run(settings, "approve", DEPLOYMENT, "--step", "0", *args)


def payloads(
    settings: Settings, topic: s.Topic, enough: Callable[[list[Any]], bool] | None = None
) -> list[Any]:
    """This deployment's payloads on a topic, read until `enough` of them came (None: all
    that are there, read for a few seconds)."""

    def mine(records: list[ConsumerRecord]) -> list[Any]:
        found = []
        for record in records:
            event = s.decode(record.value)
            assert isinstance(event, s.Envelope), event
            data = event.data
            # a dead letter's key is the refused record's: the deployment id
            if DEPLOYMENT in (getattr(data, "deployment_id", None), getattr(data, "key", None)):
                found.append(data)
        return found

    records = read_topic(
        settings.bootstrap_servers,
        topic_name(settings, topic),
        (lambda _: False) if enough is None else (lambda records: enough(mine(records))),
        timeout_s=3.0 if enough is None else WAIT_S,
    )
    return mine(records)


def listener(settings: Settings, name: str, trusted: KeyRing, applied: list[s.Command]) -> Any:
    return CommandListener(
        settings,
        apply=applied.append,
        applied_by=name,
        deployment_ids=[DEPLOYMENT],
        trusted_keys=trusted,
        consumer_options={"metadata_max_age_ms": 2_000},
    ).start()


def test_only_signed_controls_move_a_rollout_and_only_signed_commands_apply(
    settings: Settings, keys: dict[str, Path], worker: EmbeddedWorker
) -> None:
    controller_key = SigningKey.load(keys["controller"])
    trusted = KeyRing.trusted(
        {"keys": [{"id": "controller-1", "public_key": controller_key.public_text()}]}, CONTROLLER
    )
    old = SigningKey.generate("controller-0", CONTROLLER)
    stale = KeyRing.trusted(
        {"keys": [{"id": "controller-0", "public_key": old.public_text()}]}, CONTROLLER
    )
    applied: list[s.Command] = []
    refused_by_stale: list[s.Command] = []
    deployment = s.DeploymentRequested(
        deployment_id=DEPLOYMENT,
        model="fraud",
        candidate_version="v2",
        baseline_version="v1",
        requested_by="alice",
        plan=s.RolloutPlan(
            approval_to_start=True,
            steps=(
                s.TrafficStep(canary_percent=20, min_bake_s=600, min_samples=500),
                s.TrafficStep(canary_percent=100),
            ),
        ),
    )
    routers = [
        listener(settings, "router-trusting", trusted, applied),
        listener(settings, "router-stale", stale, refused_by_stale),
    ]
    try:
        # an unsigned deployment request starts nothing: refused, with why
        emit(settings, [s.make_event(deployment, source="tests")])
        (refused,) = payloads(settings, s.Topic.DEAD_LETTER, bool)
        assert "refused: deployment request by alice refused: not signed" == refused.reason
        assert [] == payloads(settings, s.Topic.DECISIONS)
        # `rollout deploy --key alice.key`: signed with alice's key, the rollout starts
        plan = keys["identities"].parent / "plan.yaml"
        plan.write_text(yaml.safe_dump(deployment.model_dump(mode="json", exclude_none=True)))
        deployed = cli_run(settings, "deploy", str(plan), "--key", str(keys["alice"]))
        assert 0 == deployed.exit_code, deployed.output
        assert "decision: pending -> awaiting_approval" in deployed.output
        # the rollout holds at its gate first (`rollout approve` takes the next decision of
        # the deployment as its answer: the gate's own must not come after the request)
        waiting = payloads(settings, s.Topic.DECISIONS, bool)
        assert ["awaiting_approval"] == [d.to_phase for d in waiting]
        assert "alice-1" == waiting[0].evidence["identity"]["key_id"]  # who started it

        # unsigned: refused, with why, before anything moves
        unsigned = approve(settings, "--by", "alice")
        assert 1 == unsigned.exit_code, unsigned.output
        assert "Error: refused: approval by alice refused: not signed" in unsigned.output

        letters = payloads(settings, s.Topic.DEAD_LETTER, lambda found: len(found) >= 2)
        (letter,) = [x for x in letters if "approval" in x.reason]
        assert "refused: approval by alice refused: not signed" == letter.reason
        original = s.decode(base64.b64decode(letter.original_b64))
        assert isinstance(original, s.Envelope) and isinstance(original.data, s.ApprovalGranted)
        assert topic_name(settings, s.Topic.DEPLOYMENTS) == letter.source_topic
        alerts = payloads(settings, s.Topic.ALERTS, bool)
        assert [("firing", "control", "warning")] == [
            (a.status, a.kind, a.severity.value) for a in alerts
        ]
        assert [] == [
            d for d in payloads(settings, s.Topic.DECISIONS) if d.to_phase != "awaiting_approval"
        ]

        # signed with alice's key: the gate opens, the trail names her verified key
        signed = approve(settings, "--key", str(keys["alice"]))
        assert 0 == signed.exit_code, signed.output
        assert "decision: awaiting_approval -> progressing: step 0 (20%) approved by alice" in (
            signed.output
        )
        opened = [
            d
            for d in payloads(settings, s.Topic.DECISIONS, lambda ds: len(ds) >= 2)
            if d.to_phase == "progressing"
        ]
        assert 1 == len(opened), opened
        identity = opened[0].evidence["identity"]
        assert (True, "alice-1", "alice", ["sre"]) == (
            identity["verified"],
            identity["key_id"],
            identity["name"],
            identity["groups"],
        )
        assert "alice-1" == opened[0].evidence["approval_key"]

        # the command is the controller's, signed: it verifies with the controller's key
        commands = payloads(settings, s.Topic.COMMANDS, bool)
        assert [20.0] == [c.canary_percent for c in commands]
        for command in commands:
            key, problem = trusted.check(command, command.issued_at)
            assert ("", "controller-1") == (problem, key.key_id if key else None)

        # the trusting router applies it; the stale one refuses it and the worker pages
        wait_until(lambda: applied, "the trusting router to apply the command")
        assert [c.command_id for c in commands] == [c.command_id for c in applied]
        wait_until(lambda: routers[1].stats().refused, "the stale router to refuse it")
        assert [] == refused_by_stale
        alerts = payloads(settings, s.Topic.ALERTS, lambda found: any(map(paging, found)))
        page = next(a for a in alerts if paging(a))
        assert ("router", "critical") == (page.kind, page.severity.value)
        assert (
            f"router router-stale refused command {commands[0].command_id}: signature: signed "
            "with key 'controller-1', which is not registered"
        ) in page.summary
    finally:
        for router in routers:
            router.close()


def paging(alert: s.Alert) -> bool:
    """The alert a router's refusal fires (not, say, a late acknowledgement's)."""
    return alert.status == "firing" and alert.dedup_key == f"{DEPLOYMENT}/router.refused"


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
