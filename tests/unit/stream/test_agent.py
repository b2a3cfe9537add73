"""The rollout agent without Faust or a broker: a dict for the table, a list for the topics."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

import orjson

import schemas as s
from controller.core.policy import Policy
from controller.core.stats import CohortStats
from controller.core.stats.labelled import LabelFold
from controller.engine import Engine
from controller.stream.agent import ListPublisher, RolloutAgent
from controller.stream.deltas import LabelsDelta, StatsDelta
from schemas import Topic
from tests.factories import T0, make_deployment, make_event, make_prediction, sample_payloads
from tests.unit.core.rollout_helpers import three_steps, unit_policy

STATS = "rollout.internal.stats"
DEPLOYMENTS = "rollout.deployments"
METRICS = "rollout.metrics"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_agent(policy: Policy | None = None) -> tuple[RolloutAgent, dict[bytes, bytes], Any]:
    table: dict[bytes, bytes] = {}
    publisher = ListPublisher()
    clock = Clock(T0.timestamp())
    agent = RolloutAgent(
        Engine(policy or unit_policy()), table, publisher, stats_topic=STATS, clock=clock
    )
    return agent, table, publisher


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def sent(publisher: ListPublisher, topic: Topic) -> list[dict[str, Any]]:
    return [orjson.loads(v) for v in publisher.values(topic)]


def deployment_record(deployment_id: str = "dep-1", plan: s.RolloutPlan | None = None) -> bytes:
    request = make_deployment(deployment_id=deployment_id, plan=plan or three_steps())
    return make_event(request, time=T0).to_json()


def acknowledge(agent: RolloutAgent, publisher: ListPublisher, offset: int) -> int:
    """What a router does: acknowledge every set_traffic published so far (applied now);
    the next offset."""
    for command in sent(publisher, Topic.COMMANDS):
        data = command["data"]
        if data["action"] != "set_traffic":
            continue
        ack = s.TrafficApplied(
            deployment_id=data["deployment_id"],
            command_id=data["command_id"],
            canary_percent=data["canary_percent"],
            applied_by="router",
            applied_at=datetime.fromtimestamp(agent.clock(), UTC),
        )
        key = data["deployment_id"].encode()
        run(agent.handle(DEPLOYMENTS, 0, offset, key, make_event(ack, time=T0).to_json()))
        offset += 1
    return offset


def delta(deployment_id: str, delta_id: str, *, canary: int, baseline: int, at: float) -> bytes:
    def stats(n: int) -> CohortStats:
        c = CohortStats()
        for _ in range(n):
            c.observe(ok=True, latency_ms=100.0, event_time=at)
        return c

    cohorts = (("canary", "v2", stats(canary)), ("baseline", "v1", stats(baseline)))
    return StatsDelta(
        delta_id=delta_id,
        deployment_id=deployment_id,
        model="fraud",
        count=canary + baseline,
        cohorts=cohorts,
    ).to_json()


def test_a_deployment_request_sets_the_first_step_traffic_and_stores_the_state() -> None:
    agent, table, publisher = make_agent()
    run(agent.handle(DEPLOYMENTS, 0, 0, b"dep-1", deployment_record()))
    commands = sent(publisher, Topic.COMMANDS)
    decisions = sent(publisher, Topic.DECISIONS)
    assert [("set_traffic", 10.0)] == [
        (c["data"]["action"], c["data"]["canary_percent"]) for c in commands
    ]
    assert [("pending", "progressing")] == [
        (d["data"]["from_phase"], d["data"]["to_phase"]) for d in decisions
    ]
    # the envelope ids are the payloads' deterministic ids
    assert commands[0]["id"] == commands[0]["data"]["command_id"]
    assert decisions[0]["id"] == decisions[0]["data"]["decision_id"]
    assert b"dep-1" in table


def test_outputs_go_out_in_the_core_order_command_before_its_decision() -> None:
    agent, _, publisher = make_agent()
    run(agent.handle(DEPLOYMENTS, 0, 0, b"dep-1", deployment_record()))
    # then the rollout's start configures its model's monitor (on the deployments topic)
    assert [Topic.COMMANDS, Topic.DECISIONS, Topic.DEPLOYMENTS] == [t for t, *_ in publisher.sent]


def test_a_bad_record_is_dead_lettered_and_the_next_one_is_processed() -> None:
    agent, table, publisher = make_agent()
    run(agent.handle(DEPLOYMENTS, 3, 7, b"dep-1", b"{not json"))
    run(agent.handle(DEPLOYMENTS, 3, 8, b"dep-1", deployment_record()))
    letters = sent(publisher, Topic.DEAD_LETTER)
    assert ["dlq:rollout.deployments:3:7"] == [d["id"] for d in letters]
    assert 7 == letters[0]["data"]["offset"]
    assert b"dep-1" in table


def test_an_unexpected_error_dead_letters_the_record_instead_of_stopping_the_agent() -> None:
    agent, _, publisher = make_agent()
    run(agent.handle(STATS, 0, 4, b"dep-1", b"not a delta"))
    letters = sent(publisher, Topic.DEAD_LETTER)
    assert 1 == len(letters)
    assert letters[0]["data"]["reason"].startswith("internal error while processing")


def test_deltas_are_merged_and_counted() -> None:
    agent, _, _ = make_agent()
    run(agent.handle(DEPLOYMENTS, 0, 0, b"dep-1", deployment_record()))
    run(agent.handle(STATS, 0, 0, b"dep-1", delta("dep-1", "d1", canary=5, baseline=20, at=1.0)))
    state = agent.load("dep-1")
    assert state is not None
    assert (5, 20) == (state.canary.requests, state.baseline.requests)
    assert 25 == agent.merged_predictions


def test_the_timer_judges_only_the_rollouts_that_are_due() -> None:
    agent, _, publisher = make_agent()
    for i in range(5):
        record = deployment_record(f"dep-{i}")
        run(agent.handle(DEPLOYMENTS, 0, i, f"dep-{i}".encode(), record))
    clock = agent.clock
    assert isinstance(clock, Clock)
    clock.now += 1.0
    # each request made a transition (the first step): the next tick judges each once more
    assert 5 == run(agent.tick())
    acknowledge(agent, publisher, 5)  # the router's acknowledgements start the bake clocks
    clock.now += 1.0
    # then nothing is due: no bake end, no deadline, no data
    assert 0 == run(agent.tick())
    # at the end of the first step's bake time every rollout is due (and holds: no samples)
    clock.now += 9.0
    assert 5 == run(agent.tick())
    assert 0 == run(agent.tick())


def test_a_recovered_table_is_judged_once_at_the_next_tick() -> None:
    agent, table, _ = make_agent()
    run(agent.handle(DEPLOYMENTS, 0, 0, b"dep-1", deployment_record()))
    # a new agent over the same table (a restart, a rebalance): it has never seen the rollout
    fresh = RolloutAgent(
        Engine(unit_policy()), table, ListPublisher(), stats_topic=STATS, clock=agent.clock
    )
    assert 1 == run(fresh.tick())
    assert 0 == run(fresh.tick())


def test_the_timer_skips_rollouts_of_partitions_it_does_not_own() -> None:
    agent, _, _ = make_agent()
    run(agent.handle(DEPLOYMENTS, 0, 0, b"dep-1", deployment_record("dep-1")))
    run(agent.handle(DEPLOYMENTS, 0, 1, b"dep-2", deployment_record("dep-2")))
    clock = agent.clock
    assert isinstance(clock, Clock)
    clock.now += 11.0
    assert 1 == run(agent.tick(lambda key: key == "dep-2"))


def test_a_silent_canary_is_rolled_back_by_the_timer_alone() -> None:
    params = {"min_gap_s": 5, "expected_rate": 2.0, "baseline_share": 0.0}
    policy = Policy.from_mapping(
        {
            "name": "outage-only",
            "significance": {"alpha": 0.01},
            "steps": {"min_samples": 50, "min_bake_s": 600},
            "rules": [{"name": "outage", "detector": "outage", "params": params}],
        }
    )
    agent, _, publisher = make_agent(policy)
    clock = agent.clock
    assert isinstance(clock, Clock)
    long_bake = s.RolloutPlan(steps=(s.TrafficStep(canary_percent=10, min_bake_s=600),))
    run(agent.handle(DEPLOYMENTS, 0, 0, b"dep-1", deployment_record(plan=long_bake)))
    acknowledge(agent, publisher, 1)
    start = clock.now
    for second in range(1, 31):  # the canary answers for 30 s
        clock.now = start + second
        record = delta("dep-1", f"d{second}", canary=2, baseline=18, at=clock.now)
        run(agent.handle(STATS, 0, second, b"dep-1", record))
    ticks_judged = 0
    for second in range(31, 121):  # then nothing arrives at all: only the timer runs
        clock.now = start + second
        ticks_judged += run(agent.tick())
    assert ["set_traffic", "rollback"] == [
        c["data"]["action"] for c in sent(publisher, Topic.COMMANDS)
    ]
    # the timer woke the rollout when the silence could first count, not every second
    assert ticks_judged < 10
    alerts = sent(publisher, Topic.ALERTS)
    assert ["outage"] == [a["data"]["kind"] for a in alerts]
    assert alerts[0]["id"] == alerts[0]["data"]["alert_id"]


def test_a_request_that_cannot_apply_is_answered_with_a_dead_letter_that_says_why() -> None:
    agent, _, publisher = make_agent()
    approval = make_event(s.ApprovalGranted(deployment_id="dep-7", step=0, by="bob"), time=T0)
    run(agent.handle(DEPLOYMENTS, 1, 5, b"dep-7", approval.to_json()))  # no such rollout
    run(agent.handle(DEPLOYMENTS, 1, 6, b"dep-1", deployment_record()))
    again = make_event(make_deployment(deployment_id="dep-1", plan=three_steps()), id="evt-2")
    run(agent.handle(DEPLOYMENTS, 1, 7, b"dep-1", again.to_json()))  # the same deployment id
    run(agent.handle(DEPLOYMENTS, 1, 8, b"dep-1", again.to_json()))  # redelivered: answered once

    letters = sent(publisher, Topic.DEAD_LETTER)
    assert ["dlq:rollout.deployments:1:5", "dlq:rollout.deployments:1:7"] == [
        d["id"] for d in letters
    ]
    first, duplicate = (d["data"] for d in letters)
    assert first["reason"].startswith("refused: no rollout 'dep-7': ApprovalGranted refused")
    assert ["refused"] == [e["kind"] for e in first["errors"]]
    assert approval.to_json() == base64.b64decode(first["original_b64"])
    assert "'dep-1' is already a rollout (progressing)" in duplicate["reason"]
    # the rollout itself went on: one start, one set_traffic
    assert 1 == len(sent(publisher, Topic.COMMANDS))


def test_a_valid_event_on_the_wrong_topic_is_dead_lettered_not_ignored() -> None:
    agent, _, publisher = make_agent()
    command = next(p for p in sample_payloads() if isinstance(p, s.Command))
    for offset, payload in enumerate(
        (
            command,
            s.LabelReported(deployment_id="dep-1", request_id="r-1", label=1.0, event_time=T0),
        )
    ):
        run(agent.handle(DEPLOYMENTS, 0, offset, b"dep-1", make_event(payload).to_json()))

    reasons = [d["data"]["reason"] for d in sent(publisher, Topic.DEAD_LETTER)]
    assert [
        "dev.rollout.command.v1 belongs on the commands topic, not on rollout.deployments",
        "dev.rollout.label.reported.v1 belongs on the labels topic, not on rollout.deployments",
    ] == reasons


# ---- deferred storing: one write per rollout per commit ---------------------------------------


def deferred_agent() -> tuple[RolloutAgent, dict[bytes, bytes], ListPublisher]:
    table: dict[bytes, bytes] = {}
    publisher = ListPublisher()
    agent = RolloutAgent(
        Engine(unit_policy()),
        table,
        publisher,
        stats_topic=STATS,
        clock=Clock(T0.timestamp()),
        deferred=True,
    )
    return agent, table, publisher


def test_deferred_states_are_written_once_per_rollout_at_the_flush() -> None:
    agent, table, publisher = deferred_agent()
    run(agent.handle(DEPLOYMENTS, 0, 0, b"dep-1", deployment_record()))
    assert 1 == agent.writes  # it published a command: written at once, behind it
    for i in range(50):
        record = delta("dep-1", f"d{i}", canary=2, baseline=18, at=T0.timestamp() + i / 10)
        run(agent.handle(STATS, 0, i, b"dep-1", record))

    assert 1 == agent.writes  # 50 changes that published nothing: written at the next flush
    assert 0 == agent.engine.load(table[b"dep-1"]).canary.requests
    state = agent.load("dep-1")
    assert state is not None
    assert (100, 900) == (state.canary.requests, state.baseline.requests)

    assert 1 == agent.flush()
    assert 2 == agent.writes
    assert agent.engine.load(table[b"dep-1"]) == state
    assert 0 == agent.flush()  # nothing changed since

    clock = agent.clock
    assert isinstance(clock, Clock)
    clock.now += 31.0  # no router acknowledged the first step: the command again, an alert
    assert 1 == run(agent.tick())
    assert ["router"] == [a["data"]["kind"] for a in sent(publisher, Topic.ALERTS)]
    assert 3 == agent.writes


def test_a_state_is_not_flushed_while_its_outputs_are_being_published() -> None:
    """A flush can run at any await; a state stored ahead of its outputs would lose them if
    the worker died before they were sent (the input would be seen as done)."""
    agent, table, publisher = deferred_agent()
    flushed_during: list[bool] = []

    class FlushingPublisher(ListPublisher):
        async def send(self, topic: Topic, key: bytes | None, value: bytes, headers: Any) -> None:
            agent.flush()  # a commit begins in the middle of the publishing
            flushed_during.append(b"dep-1" in table)
            await super().send(topic, key, value, headers)

    agent.publisher = FlushingPublisher()
    run(agent.handle(DEPLOYMENTS, 0, 0, b"dep-1", deployment_record()))

    # a command, a decision and the monitor's configuration: none flushed it
    assert [False, False, False] == flushed_during
    assert b"dep-1" in table  # written right behind its outputs
    assert 0 == agent.flush()
    assert [] == list(publisher.values(Topic.COMMANDS))  # the replaced publisher got them


def test_a_report_for_a_deployment_without_a_rollout_is_counted_not_dropped() -> None:
    agent, _, publisher = make_agent()
    metric = s.MetricReported(deployment_id="nobody", name="gpu_util", value=0.5)

    run(agent.handle(METRICS, 0, 0, b"nobody", make_event(metric).to_json()))
    run(agent.handle(METRICS, 0, 1, b"nobody", make_event(metric, id="evt-2").to_json()))

    assert {(s.MetricReported.EVENT_TYPE, "nobody"): 2} == agent.unrouted
    assert [] == publisher.sent  # a report is not answered: nobody waits for it


def test_a_monitor_is_not_flushed_while_its_outputs_are_being_published() -> None:
    agent, _, _ = make_agent()
    monitors: dict[bytes, bytes] = agent.monitors.table  # type: ignore[assignment]
    flushed_during: list[bool] = []

    class FlushingPublisher(ListPublisher):
        async def send(self, topic: Topic, key: bytes | None, value: bytes, headers: Any) -> None:
            agent.flush(force=True)  # a hand-over begins in the middle of the publishing
            flushed_during.append(b"fraud" in monitors)
            await super().send(topic, key, value, headers)

    # the model's traffic first: its monitor is changed, waiting for a flush
    stats = CohortStats()
    stats.observe_many([make_prediction()])
    delta = StatsDelta("d-1", "dep-1", "fraud", 1, (("baseline", "v1", stats),), "monitor")
    run(agent.handle(agent.stats_topic, 0, 0, b"fraud", delta.to_json()))
    agent.publisher = FlushingPublisher()
    config = s.MonitorConfigured(model="fraud", version="v1", by="alice")
    run(agent.handle(DEPLOYMENTS, 0, 0, b"fraud", make_event(config).to_json()))

    assert [False] == flushed_during  # its decision went out before its state was stored
    assert b"fraud" in monitors


def labels_delta(deployment_id: str, delta_id: str, *, at: float, pairs: int = 40) -> bytes:
    """A labels delta: `pairs` joined labels of each cohort, predicted and labelled at `at`."""
    folds = []
    for cohort, version in (("canary", "v2"), ("baseline", "v1")):
        fold = LabelFold()
        for k in range(pairs):
            fold.add(f"{cohort}-{k}", 0.9 if k % 2 else 0.1, k % 2, at, at)
        folds.append((cohort, version, fold))
    return LabelsDelta(delta_id, deployment_id, "fraud", 2 * pairs, tuple(folds)).to_json()


def test_labels_deltas_reach_the_rollout_once_and_are_counted_without_one() -> None:
    agent, _, publisher = make_agent()
    run(agent.handle(DEPLOYMENTS, 0, 0, b"dep-1", deployment_record()))
    acknowledge(agent, publisher, 1)
    agent.clock.now += 120  # predictions made and labelled well inside the first step's span
    record = labels_delta("dep-1", "labels:0:0:9:dep-1", at=agent.clock.now - 30)

    run(agent.handle(STATS, 0, 1, b"dep-1", record))
    run(agent.handle(STATS, 0, 2, b"dep-1", record))  # redelivered
    run(agent.handle(STATS, 0, 3, b"dep-9", labels_delta("dep-9", "l9", at=agent.clock.now)))

    state = agent.load("dep-1")
    assert state is not None
    assert (40, 40) == (state.labelled["canary"].pairs, state.labelled["baseline"].pairs)
    ((_, canary_pairs, _, baseline_pairs),) = state.label_strata  # the 10 % step's span
    assert (40, 40) == (canary_pairs, baseline_pairs)
    assert 80 == agent.joined_labels
    assert 80 == agent.unrouted[("labels", "dep-9")]
    assert [] == sent(publisher, Topic.DEAD_LETTER)


def test_a_labels_deltas_monitor_twin_reaches_the_models_monitor_once() -> None:
    agent, _, publisher = make_agent()
    config = s.MonitorConfigured(model="fraud", version="v2", by="alice")
    run(agent.handle(DEPLOYMENTS, 0, 0, b"fraud", make_event(config).to_json()))
    raw = labels_delta("dep-1", "labels:0:0:9:dep-1", at=agent.clock.now)
    twin = LabelsDelta.from_doc(orjson.loads(raw)).for_monitor()
    assert ("fraud", "labels:0:0:9:dep-1:monitor") == (twin.key(), twin.delta_id)

    run(agent.handle(STATS, 1, 0, b"fraud", twin.to_json()))
    run(agent.handle(STATS, 1, 1, b"fraud", twin.to_json()))  # redelivered

    watched = agent.monitors.load("fraud")
    assert watched is not None
    # the watched version's pairs wait for the next check; the other version's are counted
    assert (40, 40) == (watched.labels, watched.other_labels)
    assert watched.labels_pending is not None and 40 == watched.labels_pending.pairs
    assert agent.load("dep-1") is None  # no rollout was touched
    assert [] == sent(publisher, Topic.DEAD_LETTER)


# ---- quota pools and pipelines ---------------------------------------------------------------


def pool_record(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "pool": "gpu-pool",
        "resource": "gpu",
        "unit": "gpus",
        "limit": 64.0,
        "pipelines": (s.PoolMember(pipeline="serving"), s.PoolMember(pipeline="training")),
        "throttle": True,
        "by": "alice",
    }
    fields.update(overrides)
    return make_event(s.QuotaPoolConfigured(**fields), time=T0).to_json()


def usage_record(agent: RolloutAgent, pipeline: str, used: float, n: int) -> bytes:
    usage = s.ResourceUsage(
        deployment_id=pipeline,
        resource="gpu",
        used=used,
        unit="gpus",
        pipeline=pipeline,
        pool="gpu-pool",
    )
    at = datetime.fromtimestamp(agent.clock.now, UTC)
    return make_event(usage, time=at, id=f"use-{pipeline}-{n}").to_json()


def test_a_pools_usage_is_judged_by_the_timer_with_no_rollout_and_keyed_per_pipeline() -> None:
    """A pool configured by event, its pipelines' gauges on the metrics topic (keyed by the
    pool), checked every minute: the pipeline that takes the pool near its limit is named."""
    agent, _, publisher = make_agent()
    run(agent.handle(DEPLOYMENTS, 0, 0, b"gpu-pool", pool_record()))
    offset = 0
    for minute in range(5):
        training = 20.0 if minute < 3 else 60.0  # 60 + 2 of 64: above 95 %
        for pipeline, used in (("serving", 2.0), ("training", training)):
            offset += 1
            record = usage_record(agent, pipeline, used, offset)
            run(agent.handle(METRICS, 0, offset, b"gpu-pool", record))
        agent.clock.now += 60
        run(agent.tick())

    stored = agent.pipelines.load_pool("gpu-pool")
    assert stored is not None and stored.configured
    firing = [a for a in sent(publisher, Topic.ALERTS) if a["data"]["status"] == "firing"]
    keys = {a["data"]["dedup_key"] for a in firing}
    assert "gpu-pool/training/quota.near_limit.critical" in keys
    assert all(key.startswith("gpu-pool/training/") for key in keys)  # serving is not blamed
    decisions = [d["data"] for d in sent(publisher, Topic.DECISIONS)]
    assert {"gpu-pool"} == {d["pool"] for d in decisions}
    assert all(d["type"].endswith("pipeline.decision.v1") for d in sent(publisher, Topic.DECISIONS))
    assert [] == sent(publisher, Topic.DEAD_LETTER)
    assert agent.unrouted == {}  # a pool's usage needs no rollout


def test_training_runs_are_judged_per_pipeline_and_a_bad_pool_request_is_dead_lettered() -> None:
    agent, _, publisher = make_agent()
    for i in range(3):
        run_event = s.TrainingRun(
            deployment_id="fraud",
            pipeline="nightly",
            run_id=f"r{i}",
            status="failed",
            error="out of memory",
        )
        record = make_event(run_event, time=T0, id=f"run-{i}").to_json()
        run(agent.handle(METRICS, 0, i, b"fraud", record))

    states = agent.pipelines.load_pipelines("fraud")
    assert ["nightly"] == list(states)
    (streak,) = [a["data"] for a in sent(publisher, Topic.ALERTS)]
    assert ("critical", "nightly/pipeline.training.failure_streak") == (
        streak["severity"],
        streak["dedup_key"],
    )
    deleted = make_event(s.QuotaPoolDeleted(pool="nobody", by="bob"), time=T0).to_json()
    run(agent.handle(DEPLOYMENTS, 0, 9, b"nobody", deleted))
    (letter,) = [d["data"] for d in sent(publisher, Topic.DEAD_LETTER)]
    assert "pool nobody is not configured" in letter["reason"]
