"""Throughput of the worker's prediction path against a bare aiokafka consumer, in one run.

    python bench/throughput.py [--events 200000] [--batch 500] [--bootstrap HOST:PORT]

The same prediction events are pushed through a real broker (the local `rollout dev-kafka`
broker unless --bootstrap or KAFKA_BOOTSTRAP_SERVERS names one) in two forms: single-prediction
records and batched records (`prediction.batch`, --batch predictions each). Each topic is then
consumed twice from the beginning:

- **bare**: an aiokafka `getmany` loop that only counts records (the Kafka client's own speed);
- **worker**: the worker's prediction lane (controller.stream.lane.PredictionLane), exactly as
  `rollout worker` runs it: decode and validate every record, fold predictions into per-cohort
  statistics, publish one statistics delta per deployment and group, commit.

It prints events (predictions) per second for both and their ratio. Not a test: nothing is
asserted, figures vary with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from controller.settings import load_settings
from controller.stream.lane import PredictionLane
from schemas import Prediction, PredictionBatch, PredictionServed, make_event

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


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 6, 1)])
    admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
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


async def bare(bootstrap: str, topic: str, n_records: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-bare-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await assigned(consumer)
        seen, started = 0, time.perf_counter()
        while seen < n_records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                seen += len(records)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def worker(bootstrap: str, topic: str, n_predictions: int) -> tuple[float, int]:
    settings = load_settings(bootstrap_servers=bootstrap)
    from kafka.admin import KafkaAdminClient, NewTopic

    stats, dlq = f"{topic}.stats", f"{topic}.dlq"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(stats, 6, 1), NewTopic(dlq, 1, 1)])
    admin.close()
    lane = PredictionLane(
        settings,
        topic=topic,
        stats_topic=stats,
        dead_letter_topic=dlq,
        group_id=f"bench-lane-{uuid.uuid4().hex}",
    )
    await lane.start()
    try:
        await assigned(lane.consumer)
        started = time.perf_counter()
        while lane.counters.predictions < n_predictions:
            await lane.step()
        await lane.commit()  # every delta acknowledged and the position committed
        return time.perf_counter() - started, lane.counters.deltas
    finally:
        await lane.stop()


async def assigned(consumer: AIOKafkaConsumer) -> None:
    """Wait for the group to assign partitions, so the clock measures consumption only."""
    while not consumer.assignment():
        await asyncio.sleep(0.05)


def bootstrap_server(arg: str | None) -> str:
    if arg or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return arg or os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    from controller.devkafka import LocalKafka

    return LocalKafka.from_settings(load_settings()).start(timeout=180)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="predictions per form")
    parser.add_argument("--batch", type=int, default=500, help="predictions per batched record")
    parser.add_argument("--bootstrap")
    args = parser.parse_args()
    bootstrap = bootstrap_server(args.bootstrap)
    items = predictions(args.events)
    run = uuid.uuid4().hex[:6]
    rows = []
    for form, records in (
        ("single", single_records(items)),
        ("batched", batch_records(items, args.batch)),
    ):
        topic = f"bench.{run}.{form}"
        await produce(bootstrap, topic, records)
        bare_s = await bare(bootstrap, topic, len(records))
        worker_s, deltas = await worker(bootstrap, topic, args.events)
        rows.append(
            (
                form,
                len(records),
                args.events / bare_s,
                args.events / worker_s,
                bare_s / worker_s,
                deltas,
            )
        )
    print(
        f"{args.events} predictions, {DEPLOYMENTS} deployments, batch size {args.batch}, "
        f"broker {bootstrap}, {os.cpu_count()} cores\n"
    )
    print(
        "| records | count | bare aiokafka getmany (predictions/s) | worker lane "
        "(predictions/s) | worker / bare | deltas published |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for form, n, b, w, ratio, deltas in rows:
        print(f"| {form} | {n} | {b:,.0f} | {w:,.0f} | {ratio:.2f} | {deltas} |")


if __name__ == "__main__":
    asyncio.run(main())
