"""`rollout export` against a real broker: a deployment's records of the four input topics, in
event-time order, byte for byte as on the topics, and a log `rollout replay` takes whole."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from kafka import KafkaProducer

import schemas as s
from controller.commands.export_cmd import export_cmd, read_inputs, select
from controller.policy_io import default_policy
from controller.replay.replay import replay
from controller.sdk import emit
from controller.settings import Settings
from controller.topics import topic_name
from tests.factories import T0, make_deployment, make_event, make_prediction
from tests.kafka_read import read_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
def settings(own_topics: Settings) -> Settings:
    return own_topics


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def prediction(deployment_id: str, seconds: float, n: int) -> s.Envelope[Any]:
    return make_event(
        make_prediction(
            deployment_id=deployment_id,
            request_id=f"{deployment_id}-r{n}",
            cohort="canary" if n % 2 else "baseline",
            version="v2" if n % 2 else "v1",
            event_time=at(seconds),
        ),
        time=at(seconds),
        id=f"{deployment_id}-p{n}",
    )


def label(deployment_id: str, seconds: float, n: int) -> s.Envelope[Any]:
    payload = s.LabelReported(
        deployment_id=deployment_id, request_id=f"{deployment_id}-r{n}", label=1.0, event_time=at(1)
    )
    return make_event(payload, time=at(seconds), id=f"{deployment_id}-l{n}")


def metric(deployment_id: str, seconds: float) -> s.Envelope[Any]:
    payload = s.MetricReported(deployment_id=deployment_id, name="gpu_util", value=0.5)
    return make_event(payload, time=at(seconds), id=f"{deployment_id}-m")


def deployment(deployment_id: str, seconds: float) -> s.Envelope[Any]:
    return make_event(
        make_deployment(deployment_id=deployment_id), time=at(seconds), id=f"{deployment_id}-d"
    )


def a_live_run(deployment_id: str) -> list[s.Envelope[Any]]:
    """A deployment's inputs in the order they were produced, which is not their time order:
    the metric and the label are sent first, the request that started it all last."""
    return [
        metric(deployment_id, 30),
        label(deployment_id, 25, 1),
        prediction(deployment_id, 20, 3),
        prediction(deployment_id, 10, 1),
        prediction(deployment_id, 10, 2),  # same time as p1, sent after it: after it
        prediction(deployment_id, 15, 4),
        deployment(deployment_id, 0),
    ]


#: the ids of a_live_run in event-time order
IN_TIME_ORDER = ["d", "p1", "p2", "p4", "p3", "l1", "m"]


def produce_raw(settings: Settings, topic: s.Topic, key: str, value: bytes) -> None:
    producer = KafkaProducer(acks="all", **settings.kafka_client_options())
    try:
        producer.send(topic_name(settings, topic), key=key.encode(), value=value).get(timeout=30)
    finally:
        producer.close()


def ids(lines: list[bytes]) -> list[str]:
    decoded = [s.decode(line) for line in lines]
    return [e.id for e in decoded if isinstance(e, s.Envelope)]


#: records of a_live_run per topic
PER_TOPIC = {s.Topic.DEPLOYMENTS: 1, s.Topic.PREDICTIONS: 4, s.Topic.LABELS: 1, s.Topic.METRICS: 1}


def on_the_topics(settings: Settings, deployment_id: str, runs: int) -> set[bytes]:
    """The values keyed by a deployment on the four input topics (holding `runs` live runs),
    read back as they are."""
    values: set[bytes] = set()
    for topic, count in PER_TOPIC.items():
        records = read_topic(
            settings.bootstrap_servers,
            topic_name(settings, topic),
            lambda rs, n=runs * count: len(rs) >= n,  # type: ignore[misc]
        )
        values |= {r.value for r in records if r.key == deployment_id.encode()}
    return values


def test_an_export_is_one_deployments_inputs_in_event_time_order(settings: Settings) -> None:
    emit(
        settings,
        [e for pair in zip(a_live_run("dep-a"), a_live_run("dep-b"), strict=True) for e in pair],
    )

    export = select(read_inputs(settings, timeout_s=60), {"dep-a"})

    assert [f"dep-a-{n}" for n in IN_TIME_ORDER] == ids(export.lines)
    assert on_the_topics(settings, "dep-a", runs=2) == set(export.lines)
    assert len(IN_TIME_ORDER) == len(set(export.lines))
    assert "exported 7 records (deployments 1, predictions 4, labels 1, metrics 1); skipped 0" == (
        export.summary()
    )


def test_replay_takes_every_line_of_an_export(settings: Settings) -> None:
    emit(settings, a_live_run("dep-a") + a_live_run("dep-b"))

    export = select(read_inputs(settings, timeout_s=60), {"dep-a"})
    result = replay(export.lines, default_policy())

    assert (7, 7, 0) == (result.lines, result.events, result.rejected)
    assert ["dep-a"] == [report.deployment_id for report in result.deployments]


def test_several_deployments_or_all_of_them(settings: Settings) -> None:
    emit(settings, a_live_run("dep-a") + a_live_run("dep-b") + a_live_run("dep-c"))

    two = select(read_inputs(settings, timeout_s=60), {"dep-a", "dep-c"})
    every = select(read_inputs(settings, timeout_s=60), None)

    assert {"dep-a", "dep-c"} == {i.rsplit("-", 1)[0] for i in ids(two.lines)}
    assert 14 == len(two.lines)
    assert 21 == len(every.lines)


def test_records_that_are_not_events_are_skipped_and_counted(settings: Settings) -> None:
    emit(settings, a_live_run("dep-a"))
    produce_raw(settings, s.Topic.PREDICTIONS, "dep-a", b'{"type": "dev.rollout.nonsense.v1"}')

    export = select(read_inputs(settings, timeout_s=60), {"dep-a"})

    assert 7 == len(export.lines)
    assert 1 == len(export.skipped)
    assert export.skipped[0].reason.startswith("not an event: unknown event type")


def test_records_sent_after_the_export_started_are_left_out(settings: Settings) -> None:
    emit(settings, a_live_run("dep-a"))
    reading = read_inputs(settings, timeout_s=60)
    first = next(reading)  # the high watermarks are taken

    emit(settings, [prediction("dep-a", 40, 5)])
    export = select([first, *reading], {"dep-a"})

    assert [f"dep-a-{n}" for n in IN_TIME_ORDER] == ids(export.lines)


# ---- the command -----------------------------------------------------------------------------


def invoke(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(
        export_cmd,
        [*args, "--bootstrap-servers", settings.bootstrap_servers, "--timeout", "60"],
        env={"ROLLOUT_TOPIC_PREFIX": settings.topic_prefix},
    )


def test_the_command_writes_the_log_and_a_summary(settings: Settings, tmp_path: Any) -> None:
    emit(settings, a_live_run("dep-a") + a_live_run("dep-b"))
    out = tmp_path / "dep-a.jsonl"

    result = invoke(settings, "dep-a", "--out", str(out))

    assert 0 == result.exit_code, result.output
    lines = out.read_bytes().splitlines()
    assert [f"dep-a-{n}" for n in IN_TIME_ORDER] == ids(lines)
    assert 0 == replay(lines, default_policy()).rejected
    assert "exported 7 records" in result.stderr
    assert "" == result.stdout


def test_the_command_writes_to_stdout_by_default(settings: Settings) -> None:
    emit(settings, a_live_run("dep-a") + a_live_run("dep-b"))

    result = invoke(settings, "dep-b")

    assert 0 == result.exit_code, result.output
    assert [f"dep-b-{n}" for n in IN_TIME_ORDER] == ids(result.stdout_bytes.splitlines())


def test_the_command_says_in_one_sentence_that_the_topics_are_missing(
    settings: Settings,
) -> None:
    missing = settings.model_copy(update={"topic_prefix": f"nowhere.{uuid.uuid4().hex[:8]}."})

    result = invoke(missing, "dep-a")

    assert 1 == result.exit_code
    assert isinstance(result.exception, SystemExit)  # no traceback
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: topic {missing.topic_prefix}deployments does not exist")
