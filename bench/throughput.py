"""Throughput of the worker's prediction path against a bare aiokafka consumer, in one run.

    python bench/throughput.py [--events 200000] [--batch 500] [--bootstrap HOST:PORT]

The same prediction events are pushed through a real broker (the local `rollout dev-kafka`
broker unless --bootstrap or KAFKA_BOOTSTRAP_SERVERS names one) in two forms: single-prediction
records and batched records (`prediction.batch`, --batch predictions each). Each topic is then
consumed twice from the beginning:

- **bare**: an aiokafka `getmany` loop that only counts records (the Kafka client's own speed),
  with the garbage collector set up as the worker sets it up (`gc.freeze()` once started);
- **worker**: the whole `rollout worker` (controller.stream.app.RolloutWorker, the Faust app
  with its prediction lane, rollout agent, table and timer) in this process, with the default
  policy and a rollout per deployment: every record decoded and validated, every prediction
  folded into per-cohort statistics, the deltas merged into the rollouts' states by the agent
  and judged. The clock runs from the first record the lane takes to the moment the agent has
  merged the last prediction. The lane decodes and folds with its compiled path
  (controller/stream/native.py) when it is built;
- **worker, Python path**: the same worker in a consumer group of its own with the compiled
  path turned off (`ROLLOUT_NATIVE_LANE=false`), as it runs where the extension is not built.

It prints predictions per second for each and the ratios. Not a test: nothing is asserted, and
the figures vary with the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from controller.engine import Engine
from controller.kafka_options import aiokafka_options
from controller.policy_io import default_policy
from controller.sdk import emit
from controller.settings import Settings, load_settings
from controller.stream import native
from controller.stream.app import RolloutWorker
from controller.stream.embedded import EmbeddedWorker
from controller.topics import create_topics, topic_name
from schemas import (
    DeploymentRequested,
    Prediction,
    PredictionBatch,
    PredictionServed,
    RolloutPlan,
    Topic,
    TrafficStep,
    make_event,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEPLOYMENTS = 20


def predictions(n: int, seed: int = 7) -> list[tuple[str, Prediction]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        canary = rng.random() < 0.2
        ok = rng.random() > 0.01
        out.append(
            (
                f"dep-{i % DEPLOYMENTS}",
                Prediction(
                    version="v2" if canary else "v1",
                    cohort="canary" if canary else "baseline",
                    request_id=f"r{i}",
                    event_time=T0 + timedelta(milliseconds=i),
                    latency_ms=round(rng.lognormvariate(3.6, 0.4), 3),
                    ok=ok,
                    error_type=None if ok else "timeout",
                    prediction=round(rng.random(), 4) if ok else None,
                    features={
                        "amount": round(rng.expovariate(0.02), 2),
                        "country": rng.choice(("DE", "FR", "US")),
                    },
                ),
            )
        )
    return out


def single_records(items: list[tuple[str, Prediction]]) -> list[tuple[bytes, bytes]]:
    return [
        (
            dep.encode(),
            make_event(
                PredictionServed(deployment_id=dep, model="m", **p.model_dump()),
                source="bench",
                time=p.event_time,
                id=p.request_id,
            ).to_json(),
        )
        for dep, p in items
    ]


def batch_records(items: list[tuple[str, Prediction]], size: int) -> list[tuple[bytes, bytes]]:
    by_dep: dict[str, list[Prediction]] = {}
    for dep, p in items:
        by_dep.setdefault(dep, []).append(p)
    out = []
    for dep, ps in by_dep.items():
        for i in range(0, len(ps), size):
            chunk = tuple(ps[i : i + size])
            out.append(
                (
                    dep.encode(),
                    make_event(
                        PredictionBatch(deployment_id=dep, model="m", predictions=chunk),
                        source="bench",
                        time=chunk[0].event_time,
                        id=f"{dep}-{i}",
                    ).to_json(),
                )
            )
    return out


def deployment(deployment_id: str) -> DeploymentRequested:
    return DeploymentRequested(
        deployment_id=deployment_id,
        model="m",
        candidate_version="v2",
        baseline_version="v1",
        plan=RolloutPlan(
            steps=(TrafficStep(canary_percent=20, min_bake_s=3600, min_samples=10**9),)
        ),
    )


async def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        **aiokafka_options(settings),
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def bare(settings: Settings, topic: str, n_records: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        **aiokafka_options(settings),
        group_id=f"bench-bare-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    gc.freeze()  # as the worker does once started (RolloutWorker._run_lane): the same footing
    try:
        await assigned(consumer)
        seen, started = 0, time.perf_counter()
        while seen < n_records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                seen += len(records)
        return time.perf_counter() - started
    finally:
        gc.unfreeze()
        await consumer.stop()


def run_worker(settings: Settings, n_predictions: int) -> tuple[float, int]:
    """Run the worker until it merged n predictions; return (seconds, deltas published)."""
    worker = RolloutWorker(settings, Engine(default_policy()))
    assert worker.lane is not None
    with EmbeddedWorker(worker, stop_timeout_s=120):
        deadline = time.monotonic() + 600
        while worker.merged_predictions < n_predictions and time.monotonic() < deadline:
            time.sleep(0.005)
        done = time.perf_counter()
        first = worker.lane.counters.first_record_at
        if worker.merged_predictions < n_predictions or first is None:
            raise SystemExit(f"the worker merged {worker.merged_predictions} of {n_predictions}")
        return done - first, worker.lane.counters.deltas


async def assigned(consumer: AIOKafkaConsumer) -> None:
    """Wait for the group to assign partitions, so the clock measures consumption only."""
    while not consumer.assignment():
        await asyncio.sleep(0.05)


def drop_topics(settings: Settings, run: str) -> int:
    """Delete this run's topics (its own and the workers' internal ones): a broker kept for
    benchmarks would otherwise gather thousands of partitions, and slow down with them."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(client_id="bench-cleanup", **settings.kafka_client_options())
    try:
        mine = [t for t in admin.list_topics() if t.startswith((f"bench.{run}.", f"bench-{run}-"))]
        if mine:
            admin.delete_topics(mine)
        return len(mine)
    finally:
        admin.close()


def bootstrap_server(arg: str | None) -> str:
    if arg or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return arg or os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    from controller.dev.kafka import LocalKafka

    return LocalKafka.from_settings(load_settings()).start(timeout=180)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="predictions per form")
    parser.add_argument("--batch", type=int, default=500, help="predictions per batched record")
    parser.add_argument("--bootstrap")
    args = parser.parse_args()
    bootstrap = bootstrap_server(args.bootstrap)
    run = uuid.uuid4().hex[:6]
    # Produce both forms first, then let go of every generated object before anything is
    # timed: half a million live pydantic models would make each garbage collection during the
    # measurements walk them, a cost no worker in production pays.
    items = predictions(args.events)
    # per form, the same records on two sets of topics: the Python-path worker must not see
    # the compiled one's deltas on its stats topic
    forms: list[tuple[str, dict[bool, Settings], str, int]] = []
    for form in ("single", "batched"):
        records = single_records(items) if form == "single" else batch_records(items, args.batch)
        variants: dict[bool, Settings] = {}
        for compiled in (True, False):
            variant = "compiled" if compiled else "python"
            settings = load_settings(
                bootstrap_servers=bootstrap,
                topic_prefix=f"bench.{run}.{form}.{variant}.",
                consumer_group=f"bench-{run}-{form}-{variant}",
                topic_partitions=6,
                native_lane=compiled,
                metrics_port=0,  # served, as in production, on any free port
            )
            create_topics(settings)
            emit(
                settings,
                [make_event(deployment(f"dep-{i}"), source="bench") for i in range(DEPLOYMENTS)],
            )
            await produce(settings, topic_name(settings, Topic.PREDICTIONS), records)
            variants[compiled] = settings
        forms.append((form, variants, topic_name(variants[True], Topic.PREDICTIONS), len(records)))
        del records
    del items
    gc.collect()
    rows = []
    try:
        for form, variants, topic, n_records in forms:
            bare_s = await bare(variants[True], topic, n_records)
            gc.collect()  # each run starts with no garbage of the one before
            worker_s, deltas = await asyncio.to_thread(run_worker, variants[True], args.events)
            gc.collect()
            python_s, _ = await asyncio.to_thread(run_worker, variants[False], args.events)
            rows.append((form, n_records, bare_s, worker_s, python_s, deltas))
    finally:
        drop_topics(load_settings(bootstrap_servers=bootstrap), run)
    print(
        f"{args.events} predictions, {DEPLOYMENTS} deployments, batch size {args.batch}, "
        f"broker {bootstrap}, {os.cpu_count()} cores, compiled lane "
        f"{'built' if native.available() else 'NOT built (both workers on the Python path)'}\n"
    )
    print(
        "| records | count | bare aiokafka getmany (predictions/s) | worker (predictions/s) "
        "| worker / bare | worker, Python path (predictions/s) | Python path / bare "
        "| deltas published |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for form, n, bare_s, worker_s, python_s, deltas in rows:
        rate = args.events
        print(
            f"| {form} | {n} | {rate / bare_s:,.0f} | {rate / worker_s:,.0f} "
            f"| {bare_s / worker_s:.2f} | {rate / python_s:,.0f} | {bare_s / python_s:.2f} "
            f"| {deltas} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
