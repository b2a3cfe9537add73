"""Poison records go to the dead-letter topic with why and their original bytes, and the
records around them are processed as if they were not there."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaProducer

from schemas import Cohort, Prediction, PredictionBatch, Topic, make_event
from tests.e2e.harness import Rollouts, deployment_request, plan, step, transitions

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PER_BATCH = 100  # canary and baseline predictions in each valid batch


def batch(deployment_id: str, first: int, start: datetime) -> PredictionBatch:
    """PER_BATCH canary and PER_BATCH baseline predictions, healthy and alike."""
    predictions = []
    for i in range(first, first + 2 * PER_BATCH):
        canary = i % 2 == 0
        predictions.append(
            Prediction(
                version="v5" if canary else "v4",
                cohort=Cohort.CANARY if canary else Cohort.BASELINE,
                request_id=f"{deployment_id}-{i}",
                event_time=start + timedelta(milliseconds=10 * i),
                latency_ms=30.0 + (i * 7919 % 100) / 10,
                prediction=(i * 104729 % 1000) / 1000,
            )
        )
    return PredictionBatch(
        deployment_id=deployment_id, model="pricing", predictions=tuple(predictions)
    )


def envelope_bytes(payload: PredictionBatch) -> bytes:
    return make_event(payload, source="e2e").to_json()


def test_poison_records_are_dead_lettered_and_the_rest_processed(world: Rollouts) -> None:
    world.start_worker()
    world.router  # noqa: B018  # it acknowledges the commands, which starts the bake
    dep = "pricing-v5"
    # step 0 passes only with all 400 valid canary predictions, after 2 s: the batches arrive
    # within a second, so nothing but the tick timer can pass it
    two_steps = plan(step(50, bake_s=2, samples=4 * PER_BATCH), step(100, bake_s=0, samples=0))
    request = deployment_request(dep, two_steps, model="pricing", baseline="v4", candidate="v5")
    producer = KafkaProducer(acks="all", **world.settings.kafka_client_options())

    def produce(topic: Topic, value: bytes) -> tuple[str, int, int]:
        """Send one record keyed by the deployment; where it landed."""
        meta = producer.send(world.topic(topic), key=dep.encode(), value=value).get(timeout=30)
        return world.topic(topic), meta.partition, meta.offset

    # a deployment request that fails validation, then the valid one right behind it
    bad_request = json.loads(make_event(request, source="e2e").to_json())
    bad_request["data"]["baseline_version"] = bad_request["data"]["candidate_version"]
    bad_request_bytes = json.dumps(bad_request).encode()
    bad_request_at = produce(Topic.DEPLOYMENTS, bad_request_bytes)
    produce(Topic.DEPLOYMENTS, make_event(request, source="e2e").to_json())
    world.wait_for(lambda: world.observer.phase(dep) == "progressing", what=f"{dep} to start")
    # valid batches with a record that is not JSON and a batch with a negative latency between
    start = datetime.now(UTC) - timedelta(seconds=10)
    garbage = b"\x00\x17 this is not JSON {"
    negative = json.loads(envelope_bytes(batch(dep, 10_000, start)))
    negative["data"]["predictions"][0]["latency_ms"] = -5.0
    negative_bytes = json.dumps(negative).encode()
    produce(Topic.PREDICTIONS, envelope_bytes(batch(dep, 0, start)))
    garbage_at = produce(Topic.PREDICTIONS, garbage)
    produce(Topic.PREDICTIONS, envelope_bytes(batch(dep, 200, start)))
    negative_at = produce(Topic.PREDICTIONS, negative_bytes)
    produce(Topic.PREDICTIONS, envelope_bytes(batch(dep, 400, start)))
    produce(Topic.PREDICTIONS, envelope_bytes(batch(dep, 600, start)))
    producer.close()

    world.wait_for(lambda: len(world.observer.dead_letters()) >= 3, what="three dead letters")
    letters = {(d.source_topic, d.partition, d.offset): d for d in world.observer.dead_letters()}
    originals = {
        bad_request_at: bad_request_bytes,
        garbage_at: garbage,
        negative_at: negative_bytes,
    }
    assert set(originals) == set(letters)
    for where, original in originals.items():
        letter = letters[where]
        assert (original, len(original), dep) == (
            base64.b64decode(letter.original_b64),
            letter.original_size,
            letter.key,
        )
    assert "candidate_version and baseline_version must differ" in letters[bad_request_at].reason
    assert letters[garbage_at].reason.startswith("not JSON")
    assert "data.predictions.0.latency_ms" in letters[negative_at].reason
    assert "data.predictions.0.latency_ms" in [e.loc for e in letters[negative_at].errors]

    # the valid batches around the poison are counted, exactly, and the rollout goes on
    ended = world.wait_terminal(dep)
    assert "promoted" == ended.to_phase
    assert [
        ("pending", "progressing", 0, 50.0),
        ("progressing", "progressing", 1, 100.0),
        ("progressing", "promoted", 1, 100.0),
    ] == transitions(world.observer.decisions(dep))
    passed = world.observer.decisions(dep)[1]
    # counted, or held back until the other cohort reports as far (alignment): all of them
    held = passed.evidence["held_requests"]
    assert isinstance(held, dict)
    assert (4 * PER_BATCH, 4 * PER_BATCH, 4 * PER_BATCH) == (
        passed.evidence["step_samples"] + held.get("canary", 0),
        passed.evidence["canary_requests"] + held.get("canary", 0),
        passed.evidence["baseline_requests"] + held.get("baseline", 0),
    )
