"""`rollout pool set | delete | list`: the contract a person's flags make, their mistakes told
in one sentence, and the pools read back from what the quota core really publishes; on a real
broker (marked kafka): the request on the deployments topic keyed by the pool, the worker's
answer awaited, and `pool list` over published decisions and alerts."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

import schemas as s
from controller.cli import cli
from controller.commands.ops import _line
from controller.commands.pool_cmd import (
    PoolFlagError,
    parse_member,
    pool_configured,
    pool_deleted,
    pool_lines,
    read_pools,
)
from controller.core.pipelines import PipelinesPolicy, PoolState, quota
from controller.core.pipelines.common import PipelinesOutput
from controller.sdk import emit
from controller.settings import Settings, load_settings
from controller.topics import create_topics, topic_name
from tests.conftest import unique_topic_name
from tests.kafka_read import read_topic

T = 1_790_000_040.0  # on the one-minute grid


def envelopes(outputs: list[PipelinesOutput]) -> list[s.Envelope[Any]]:
    return [
        s.make_event(o, source="tests", id=f"out-{n}-{o.at.timestamp()}", time=o.at)
        for n, o in enumerate(outputs)
        if not isinstance(o, s.PipelineThrottle)
    ]


# ---- the flags make the contract ------------------------------------------------------------


def test_the_flags_make_a_quota_pool_configured_keyed_by_the_pool() -> None:
    payload = pool_configured(
        "gpu-a",
        resource="gpu",
        limit=64,
        unit="gpus",
        pipelines=["train:weight=2,guaranteed=8", "serve:guaranteed=16", "etl"],
        warning=0.7,
        critical=0.9,
        throttle=True,
        by="bob",
        reason="Q4 training",
    )

    expected = s.QuotaPoolConfigured(
        pool="gpu-a",
        resource="gpu",
        unit="gpus",
        limit=64.0,
        pipelines=(
            s.PoolMember(pipeline="train", weight=2.0, guaranteed=8.0),
            s.PoolMember(pipeline="serve", guaranteed=16.0),
            s.PoolMember(pipeline="etl"),
        ),
        warning=0.7,
        critical=0.9,
        throttle=True,
        by="bob",
        reason="Q4 training",
    )
    assert expected == payload
    event = s.make_event(payload, source="tests")
    assert ("gpu-a", s.Topic.DEPLOYMENTS) == (event.key(), event.topic)
    assert "dev.rollout.quota.pool.configured.v1" == event.type


def test_the_contracts_defaults_hold_when_flags_are_left_out() -> None:
    payload = pool_configured("cpu-b", resource="cpu", limit=512.0, by="ann")

    assert ((), 0.8, 0.95, False, "1") == (
        payload.pipelines,
        payload.warning,
        payload.critical,
        payload.throttle,
        payload.unit,
    )


def test_a_deletion_is_keyed_by_the_pool() -> None:
    payload = pool_deleted("gpu-a", by="bob", reason="moved to gpu-b")

    assert s.QuotaPoolDeleted(pool="gpu-a", by="bob", reason="moved to gpu-b") == payload
    assert "gpu-a" == payload.record_key()


@pytest.mark.parametrize(
    ("text", "member"),
    [
        ("train", {"pipeline": "train"}),
        ("train:weight=2", {"pipeline": "train", "weight": 2.0}),
        ("train:guaranteed=8", {"pipeline": "train", "guaranteed": 8.0}),
        ("train: weight = 2 , guaranteed=0", {"pipeline": "train", "weight": 2.0, "guaranteed": 0}),
    ],
)
def test_a_pipeline_flag_names_the_pipeline_and_its_weight_and_guarantee(
    text: str, member: dict[str, Any]
) -> None:
    assert member == parse_member(text)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (":weight=2", "names no pipeline"),
        ("train:", "has nothing after ':'"),
        ("train:weight", "is not weight=W or guaranteed=G"),
        ("train:share=3", "'share=3' is not weight=W or guaranteed=G"),
        ("train:weight=two", "weight must be a number, got 'two'"),
        ("train:weight=1,weight=2", "sets weight twice"),
    ],
)
def test_a_malformed_pipeline_flag_is_refused_with_what_to_change(text: str, says: str) -> None:
    with pytest.raises(PoolFlagError, match=says):
        parse_member(text)


# ---- a person's mistakes: one sentence, no traceback ----------------------------------------


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--limit", "-3"], "--limit must be greater than 0, got -3.0"),
        (["--limit", "nan"], "--limit must be a finite number"),
        (["--warning", "0.96"], "warning (0.96) must be below critical (0.95) (lower --warning"),
        (["--critical", "1.5"], "--critical must be less than or equal to 1, got 1.5"),
        (
            ["--pipeline", "a:guaranteed=40", "--pipeline", "b:guaranteed=30"],
            "the guaranteed shares add up to 70, over the limit 64 (lower a --pipeline's",
        ),
        (["--pipeline", "a:weight=0"], "--pipeline 'a:weight=0': weight must be greater than 0"),
        (["--pipeline", "a", "--pipeline", "a"], "(give each --pipeline once)"),
        (["--pipeline", "a:weight=x"], "--pipeline 'a:weight=x': weight must be a number"),
    ],
)
def test_a_bad_pool_is_one_sentence_and_exit_1_before_any_broker(
    flags: list[str], says: str
) -> None:
    base = ["pool", "set", "gpu-a", "--resource", "gpu", "--by", "bob", "--limit", "64"]
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}  # nothing listens: nothing may be sent

    result = CliRunner().invoke(cli, [*base, *flags], env=env)

    assert 1 == result.exit_code, result.output
    assert [result.output.strip()] == result.output.strip().splitlines()
    assert result.output.startswith("Error: ")
    assert says in result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit)


def test_a_pool_name_with_blanks_is_one_sentence() -> None:
    result = CliRunner().invoke(cli, ["pool", "delete", " gpu", "--by", "bob"])

    assert 1 == result.exit_code
    assert (
        "Error: cannot delete pool ' gpu': POOL must not be empty nor start or end with a "
        "blank, got ' gpu'\n"
    ) == result.output


def test_a_limit_that_is_not_a_number_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        cli, ["pool", "set", "gpu-a", "--resource", "gpu", "--limit", "lots"]
    )

    assert 2 == result.exit_code
    assert "Error: Invalid value for '--limit': 'lots' is not a valid float." in result.output


# ---- reading the pools back from what the core publishes ------------------------------------


def busy_pool() -> tuple[PoolState, list[PipelinesOutput]]:
    """gpu-a, 10 GPUs with throttles: train takes 8 while serve waits for 5 of them (fair share
    5 each): near the limit at once, above its fair share after five minutes (throttled)."""
    policy = PipelinesPolicy.default()
    configured = pool_configured(
        "gpu-a",
        resource="gpu",
        limit=10,
        unit="gpus",
        pipelines=["train", "serve"],
        throttle=True,
        by="bob",
    )
    result = quota.configure(None, configured, T)
    state, outputs = result.state, list(result.outputs)
    assert state is not None
    for minute in range(1, 7):
        now = T + 60 * minute
        for pipeline, used, asked in (("train", 8.0, 8.0), ("serve", 1.0, 5.0)):
            usage = s.ResourceUsage(
                deployment_id=pipeline,
                resource="gpu",
                used=used,
                unit="gpus",
                pipeline=pipeline,
                pool="gpu-a",
                requested=asked,
            )
            state = quota.observe(state, usage, now - 1)
        checked = quota.check(state, policy, now)
        assert checked.state is not None
        state, outputs = checked.state, outputs + checked.outputs
    return state, outputs


def test_a_pool_is_listed_with_its_last_decision_throttles_and_open_alerts() -> None:
    _, outputs = busy_pool()

    pools = read_pools(iter(envelopes(outputs)))

    health = pools["gpu-a"]
    assert (True, "gpu", "gpus", 10.0, ["serve", "train"], True) == (
        health.configured,
        health.resource,
        health.unit,
        health.limit,
        health.pipelines,
        health.throttle,
    )
    assert ["gpu-a/train/quota.fair_share", "gpu-a/train/quota.near_limit.warning"] == sorted(
        health.open
    )
    assert {"train": 5.0} == health.throttled
    last = [o for o in outputs if isinstance(o, s.PipelineDecision)][-1]
    assert (last.action, last.reason) == (health.last_action, health.last)
    lines = list(pool_lines(health))
    assert lines[0].split()[:4] == ["gpu-a", "configured", "10", "gpus"]
    assert lines[0].endswith("throttles on  2 open alert(s)")
    assert "    throttled train to 5 gpus" in lines
    assert any(
        line.startswith("    open alert gpu-a/train/quota.fair_share (warning)") for line in lines
    )
    assert health.to_dict()["open_alerts"][0]["dedup_key"] == "gpu-a/train/quota.fair_share"


def test_a_deleted_pool_has_no_open_alert_and_no_throttle_left() -> None:
    state, outputs = busy_pool()
    deleted = quota.delete(state, pool_deleted("gpu-a", by="bob"), T + 600)

    pools = read_pools(iter(envelopes(outputs + deleted.outputs)))

    health = pools["gpu-a"]
    assert (False, {}, {}) == (health.configured, health.open, health.throttled)
    assert "deleted" == health.last_action
    assert ["gpu-a", "deleted", "no", "longer", "watched"] == next(pool_lines(health)).split()


def test_pipeline_decisions_and_alerts_of_pipelines_are_not_pools() -> None:
    training = s.PipelineDecision(
        decision_id="d1",
        pipeline="nightly-train",
        action="run_judged",
        reason="pipeline nightly-train: run r1 succeeded",
        at=datetime.fromtimestamp(T, UTC),
    )

    assert {} == read_pools(iter([s.make_event(training, source="tests")]))


def test_watch_tells_a_pools_decisions_and_throttles_in_one_line_each() -> None:
    _, outputs = busy_pool()
    throttled = next(o for o in outputs if isinstance(o, s.PipelineThrottle))
    decision = next(o for o in outputs if isinstance(o, s.PipelineDecision))

    lines = [_line(s.make_event(o, source="tests")) for o in (decision, throttled)]

    assert lines[0].startswith("pipeline 14:14:00  gpu-a  configured  pool gpu-a: now watched")
    assert lines[1] == (
        f"throttle 14:20:00  train  throttle to 5 gpus of gpu in gpu-a  [{throttled.command_id}]"
    )


# ---- on a real broker -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, kafka_admin: KafkaAdminClient) -> Iterator[Settings]:
    """Topics of their own (a unique prefix), deleted after the module."""
    prefix = unique_topic_name("pool-cmd") + "."
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, topic_partitions=2
    )
    create_topics(settings)
    yield settings
    with contextlib.suppress(KafkaError):  # the next session starts clean anyway
        kafka_admin.delete_topics([t for t in kafka_admin.list_topics() if t.startswith(prefix)])


def env_of(settings: Settings) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "ROLLOUT_TOPIC_PREFIX": settings.topic_prefix,
    }


@pytest.mark.kafka
def test_pool_set_sends_the_contract_keyed_by_the_pool(settings: Settings) -> None:
    args = ["pool", "set", "sent-pool", "--resource", "gpu", "--limit", "64", "--unit", "gpus"]
    args += ["--pipeline", "train:weight=2", "--by", "bob", "--no-wait"]

    result = CliRunner().invoke(cli, args, env=env_of(settings))

    assert 0 == result.exit_code, result.output
    assert result.output.startswith("sent dev.rollout.quota.pool.configured.v1 for sent-pool")
    topic = topic_name(settings, s.Topic.DEPLOYMENTS)
    records = read_topic(settings.bootstrap_servers, topic, lambda r: len(r) >= 1)
    mine = [r for r in records if r.key == b"sent-pool"]
    assert 1 == len(mine)
    event = s.decode(mine[0].value)
    assert isinstance(event, s.Envelope)
    expected = pool_configured(
        "sent-pool",
        resource="gpu",
        limit=64,
        unit="gpus",
        pipelines=["train:weight=2"],
        by="bob",
    )
    assert expected == event.data


def answer_like_the_worker(settings: Settings, pool: str, stop: threading.Event) -> None:
    """Stand in for the worker: the pool's configuration, or its deletion (of the busy pool,
    whose alerts resolve first), judged by the quota core and answered with its outputs on
    the decisions and alerts topics."""
    consumer = KafkaConsumer(group_id=None, **settings.kafka_client_options())
    topic = topic_name(settings, s.Topic.DEPLOYMENTS)
    try:
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
        consumer.seek_to_beginning()
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    event = s.decode(record.value)
                    if not isinstance(event, s.Envelope):
                        continue
                    data = event.data
                    if isinstance(data, s.QuotaPoolConfigured) and data.pool == pool:
                        result = quota.configure(None, data, time.time())
                        emit(settings, envelopes(result.outputs))
                        return
                    if isinstance(data, s.QuotaPoolDeleted) and data.pool == pool:
                        state, _ = busy_pool()
                        state.pool = pool
                        result = quota.delete(state, data, time.time())
                        emit(settings, envelopes(result.outputs))
                        return
    finally:
        consumer.close()


@pytest.mark.kafka
def test_pool_set_waits_for_the_pools_decision(settings: Settings) -> None:
    stop = threading.Event()
    worker = threading.Thread(
        target=answer_like_the_worker, args=(settings, "answered-pool", stop), daemon=True
    )
    worker.start()
    args = ["pool", "set", "answered-pool", "--resource", "cpu", "--limit", "512"]
    args += ["--by", "ann", "--reason", "batch jobs", "--wait", "30"]
    try:
        result = CliRunner().invoke(cli, args, env=env_of(settings))
    finally:
        stop.set()
        worker.join(timeout=10)

    assert 0 == result.exit_code, result.output
    lines = result.output.splitlines()
    assert 2 == len(lines), result.output
    assert lines[1] == (
        "decision: configured: pool answered-pool: now watched by ann: 512 1 of cpu shared by "
        "the pipelines that report to it: batch jobs"
    )


@pytest.mark.kafka
def test_pool_delete_is_answered_by_the_deletion_not_the_alerts_it_resolves(
    settings: Settings,
) -> None:
    stop = threading.Event()
    worker = threading.Thread(
        target=answer_like_the_worker, args=(settings, "deleted-pool", stop), daemon=True
    )
    worker.start()
    args = ["pool", "delete", "deleted-pool", "--by", "ann", "--wait", "30"]
    try:
        result = CliRunner().invoke(cli, args, env=env_of(settings))
    finally:
        stop.set()
        worker.join(timeout=10)

    assert 0 == result.exit_code, result.output
    assert (
        "decision: deleted: pool deleted-pool: no longer watched, by ann"
        == (result.output.splitlines()[-1])
    )


@pytest.mark.kafka
def test_pool_list_reads_the_pools_from_the_decisions_and_alerts_topics(
    settings: Settings,
) -> None:
    _, outputs = busy_pool()
    emit(settings, envelopes(outputs))

    text = CliRunner().invoke(cli, ["pool", "list"], env=env_of(settings))
    one = CliRunner().invoke(cli, ["pool", "list", "gpu-a", "--json"], env=env_of(settings))
    none = CliRunner().invoke(cli, ["pool", "list", "no-such-pool"], env=env_of(settings))

    assert (0, 0, 1) == (text.exit_code, one.exit_code, none.exit_code), text.output + one.output
    expected = read_pools(iter(envelopes(outputs)))["gpu-a"]
    assert "\n".join(line.rstrip() for line in pool_lines(expected)) in text.output
    assert [expected.to_dict()] == [json.loads(x) for x in one.output.splitlines()]
    assert "Error: no decisions about pool 'no-such-pool' yet\n" == none.output
