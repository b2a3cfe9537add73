"""`rollout capacity plan`: the estimate of controller/core/pipelines/capacity.py for the flags
given, printed whole (replicas, breakdown, resources, every assumption) or as JSON; the flags'
mistakes in one sentence; and, on a real broker (marked kafka), the per-replica throughput
measured from a deployment's metric events."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

import schemas as s
from controller.cli import cli
from controller.commands.capacity_cmd import (
    CapacityFlagError,
    capacity_inputs,
    estimate_dict,
    plan_canary_percent,
)
from controller.core.pipelines import capacity
from controller.sdk import emit
from controller.settings import Settings, load_settings
from controller.topics import create_topics
from tests.conftest import unique_topic_name
from tests.factories import make_deployment

GIVEN = ["capacity", "plan", "--qps", "2000", "--replica-qps", "80"]
SIZE = ["--cpu", "4", "--gpu", "1", "--memory-gb", "16"]


def test_the_printed_plan_is_the_cores_estimate_with_every_assumption() -> None:
    result = CliRunner().invoke(
        cli, [*GIVEN, *SIZE, "--max-canary-percent", "25", "--experiments", "2"]
    )

    expected = capacity.estimate(
        capacity.CapacityInputs(
            predicted_qps=2000.0,
            replica=capacity.ReplicaSize(cpu=4.0, gpu=1.0, memory_gb=16.0),
            per_replica_qps=80.0,
            canary_share=0.25,
            experiment_shares=(0.05, 0.05),
        )
    )
    assert 0 == result.exit_code, result.output
    assert "ok" == expected.outcome
    lines = result.output.splitlines()
    assert f"estimate: {expected.reason}" == lines[0]
    assert f"replicas: {expected.replicas}" == lines[1]
    assert {"baseline": 36, "canary": 9, "experiment 1": 2, "experiment 2": 2} == dict(
        expected.breakdown
    )
    assert ["baseline 36", "canary 9", "experiment 1 2", "experiment 2 2"] == [
        " ".join(line.split()) for line in lines[2:6]
    ]
    assert "resources: 196 cpu, 49 gpu, 784 memory_gb" == lines[6]
    assert [f"  - {a}" for a in expected.assumptions] == lines[8:]
    assert "note:" not in result.output


def test_json_is_the_estimate_whole() -> None:
    result = CliRunner().invoke(cli, [*GIVEN, *SIZE, "--utilisation", "0.5", "--json"])

    expected = capacity.estimate(
        capacity.CapacityInputs(
            predicted_qps=2000.0,
            replica=capacity.ReplicaSize(cpu=4.0, gpu=1.0, memory_gb=16.0),
            per_replica_qps=80.0,
            target_utilisation=0.5,
        )
    )
    assert 0 == result.exit_code, result.output
    assert estimate_dict(expected) == json.loads(result.output)
    assert 50 == json.loads(result.output)["replicas"]


def test_without_a_canary_share_the_plan_says_it_has_no_room_for_one() -> None:
    result = CliRunner().invoke(cli, GIVEN)

    assert 0 == result.exit_code
    assert "note: no room for a canary: give --max-canary-percent or --plan" in result.output


def test_littles_law_gives_the_throughput_from_a_concurrency_and_a_latency() -> None:
    result = CliRunner().invoke(
        cli,
        ["capacity", "plan", "--qps", "700", "--concurrency", "8", "--replica-latency-ms", "40"],
    )

    assert 0 == result.exit_code, result.output
    assert "replicas: 5" in result.output  # 200 req/s per replica at 70 %: 140, 700 / 140
    assert "by Little's law: 8 requests in flight at 40 ms each" in result.output


# ---- the plan's largest step ----------------------------------------------------------------


def test_the_canary_share_is_the_plans_largest_step(tmp_path: Path) -> None:
    request = make_deployment()
    largest = max(step.canary_percent for step in request.plan.steps)
    whole = tmp_path / "request.json"
    whole.write_text(request.model_dump_json())
    alone = tmp_path / "plan.yaml"
    alone.write_text(yaml.safe_dump({"steps": [{"canary_percent": 5}, {"canary_percent": 30}]}))

    from_request = CliRunner().invoke(cli, [*GIVEN, "--plan", str(whole), "--json"])
    from_plan = CliRunner().invoke(cli, [*GIVEN, "--plan", str(alone), "--json"])
    overridden = CliRunner().invoke(
        cli, [*GIVEN, "--plan", str(alone), "--max-canary-percent", "10", "--json"]
    )

    shares = [
        json.loads(r.output)["evidence"]["canary_share"]
        for r in (from_request, from_plan, overridden)
    ]
    assert [largest / 100, 0.3, 0.1] == shares
    assert largest == plan_canary_percent(request.model_dump(mode="json"))


def test_a_file_that_is_not_a_plan_is_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "plan.yaml"
    bad.write_text(yaml.safe_dump({"steps": [{"canary_percent": 50}, {"canary_percent": 5}]}))

    result = CliRunner().invoke(cli, [*GIVEN, "--plan", str(bad)])

    assert 2 == result.exit_code
    error = result.output.splitlines()[-1]
    assert error == (
        f"Error: {bad} is not a rollout plan (the steps of deployment.requested): traffic "
        "steps must not decrease: [50.0, 5.0]"
    )
    with pytest.raises(CapacityFlagError, match="steps: Field required"):
        plan_canary_percent({"plan": {}})


# ---- a person's mistakes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ([], "give the per-replica throughput: --replica-qps, --from-metrics DEPLOYMENT, or"),
        (
            ["--replica-qps", "5", "--concurrency", "2", "--replica-latency-ms", "9"],
            "give one source of per-replica throughput, not --replica-qps and --concurrency",
        ),
        (
            ["--replica-qps", "5", "--from-metrics", "dep"],
            "not --replica-qps and --from-metrics",
        ),
        (["--concurrency", "4"], "--concurrency and --replica-latency-ms go together"),
        (
            ["--replica-qps", "5", "--latency-slo-ms", "100"],
            "--latency-slo-ms keeps the measured rates that met it: use it with --from-metrics",
        ),
        (["--replica-qps", "5", "--experiment-share", "3"], "--experiment-share needs"),
        (["--replica-qps", "0"], "Invalid value for '--replica-qps': 0.0 is not in the range"),
        (["--replica-qps", "5", "--utilisation", "1.5"], "Invalid value for '--utilisation'"),
    ],
)
def test_flags_that_make_no_estimate_are_one_sentence_and_exit_2(
    flags: list[str], says: str
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}  # nothing listens: nothing may be read

    result = CliRunner().invoke(cli, ["capacity", "plan", "--qps", "100", *flags], env=env)

    assert 2 == result.exit_code, result.output
    assert result.output.splitlines()[-1].startswith("Error: ")
    assert says in result.output.splitlines()[-1]
    assert "Traceback" not in result.output


def test_the_builder_takes_one_source_of_throughput() -> None:
    inputs = capacity_inputs(
        qps=100.0, replica_qps=20.0, canary_percent=10.0, experiments=3, experiment_percent=2.0
    )

    assert (20.0, 0.1, (0.02, 0.02, 0.02), ()) == (
        inputs.per_replica_qps,
        inputs.canary_share,
        tuple(inputs.experiment_shares),
        tuple(inputs.observations),
    )


# ---- measured on a real broker --------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, kafka_admin: KafkaAdminClient) -> Iterator[Settings]:
    prefix = unique_topic_name("capacity-cmd") + "."
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, topic_partitions=2
    )
    create_topics(settings)
    yield settings
    with contextlib.suppress(KafkaError):  # the next session starts clean anyway
        kafka_admin.delete_topics([t for t in kafka_admin.list_topics() if t.startswith(prefix)])


def replica_metrics(deployment: str) -> list[s.MetricReported]:
    """Two replicas, ten minutes each: a rate and its p99 latency per minute; the busiest
    five minutes of each break a 100 ms SLO."""
    metrics = []
    for replica in ("r1", "r2"):
        for minute in range(10):
            qps = 40.0 + 6 * minute + (3 if replica == "r2" else 0)
            latency = 60.0 + (qps - 40.0) ** 2 / 20
            for name, value in (("replica_qps", qps), ("latency_p99_ms", latency)):
                metrics.append(
                    s.MetricReported(
                        deployment_id=deployment,
                        name=name,
                        value=value,
                        attributes={"replica": replica},
                    )
                )
    return metrics


@pytest.mark.kafka
def test_from_metrics_measures_the_throughput_from_the_deployments_metric_events(
    settings: Settings,
) -> None:
    mine = replica_metrics("ranker-v3")
    other = [m.model_copy(update={"deployment_id": "other-v1", "value": 1.0}) for m in mine]
    emit(settings, [s.make_event(m, source="tests") for m in [*other, *mine]])
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "ROLLOUT_TOPIC_PREFIX": settings.topic_prefix,
    }
    args = ["capacity", "plan", "--qps", "1200", "--from-metrics", "ranker-v3"]
    args += ["--latency-slo-ms", "100", "--gpu", "1", "--max-canary-percent", "20"]

    result = CliRunner().invoke(cli, args, env=env)

    expected = capacity.estimate(
        capacity.CapacityInputs(
            predicted_qps=1200.0,
            replica=capacity.ReplicaSize(gpu=1.0),
            observations=capacity.observations_from_metrics(mine),
            latency_slo_ms=100.0,
            canary_share=0.2,
        )
    )
    assert 0 == result.exit_code, result.output
    lines = result.output.splitlines()
    assert (
        "read 40 metric event(s) of ranker-v3: 20 'replica_qps' paired with 'latency_p99_ms'"
        == lines[0]
    )
    assert f"estimate: {expected.reason}" == lines[1]
    assert 64.0 == expected.per_replica_qps  # the p90 of the 10 rates within 100 ms
    assert "measured: the 90th percentile of 10 of 20 observed rates within the 100 ms SLO" in (
        result.output
    )
    assert [f"  - {a}" for a in expected.assumptions] == lines[-len(expected.assumptions) :]


@pytest.mark.kafka
def test_from_metrics_without_metrics_exits_1_with_the_reason(settings: Settings) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "ROLLOUT_TOPIC_PREFIX": settings.topic_prefix,
    }

    result = CliRunner().invoke(
        cli, ["capacity", "plan", "--qps", "100", "--from-metrics", "silent-v1"], env=env
    )

    assert 1 == result.exit_code, result.output
    assert [
        "read 0 metric event(s) of silent-v1: 0 'replica_qps' paired with 'latency_p99_ms'",
        "Error: no_data: no 'replica_qps' of silent-v1 paired with a 'latency_p99_ms' on the "
        "metrics topic: report them, or give --replica-qps",
    ] == result.output.splitlines()
