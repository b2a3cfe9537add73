"""Live fuzz: mutated records through a live worker's input topics, between real rollouts.

`bench/fuzz.py` proves the decode paths offline; this sends its records to a worker on a real
broker, through the end-to-end harness (`tests/e2e/harness.py`: its own topics and consumer
group, the worker started as in production, a simulated fleet per rollout reporting through the
SDK, the SDK's router, an observer of everything published). The records are `fuzz.py`'s:
valid events of every type mutated (bytes flipped, inserted, deleted, truncated, repeated; JSON
nodes deleted, retyped or given odd values; the event type swapped; nesting 10 to 100,000
levels deep) or left valid, with its hostile keys, and hostile headers on top (a broken
traceparent, bytes that are not UTF-8, 50 KB values, 200 headers). Each goes to one of the
worker's input topics at random (deployments, predictions, metrics, labels; three in four
unmutated events go to their own), `--rate` a second.

The run: `--baseline` healthy rollouts one after another without the fuzz, then the fuzz with
healthy rollouts one after another beside it until it ends, then `--baseline` more without it.
Measured:

- exceptions: error lines and tracebacks in the worker's log, and exits of the worker;
- invalid records dead-lettered: each record `schemas.decode` rejects, or a valid event sent to
  a topic that is not its own, must come back on the dead-letter topic (matched by topic,
  partition and offset);
- valid events processed: each valid event on its own topic must be consumed (the worker's
  committed offsets pass it) and not dead-lettered, except as a refusal (`refused: ...`, an
  answer: an approval for a rollout that does not exist, say);
- a healthy rollout's time to promotion (its request to its promotion decision) with the fuzz
  against without it (median of each), target 1.2x at most.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:39092 python bench/fuzz_live.py --records 100000

Not a test (`tests/e2e/test_fuzz_live_smoke.py` runs a small one); it prints a table and the
commit it measured.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka import KafkaProducer, TopicPartition  # noqa: E402

import schemas as s  # noqa: E402
from bench.common import commit  # noqa: E402
from bench.fuzz import KEYS, mutate, seeds  # noqa: E402
from controller.settings import load_settings  # noqa: E402
from schemas import Topic  # noqa: E402
from tests.e2e.harness import Rollouts, deployment_request, plan, step  # noqa: E402

INPUTS = (Topic.DEPLOYMENTS, Topic.PREDICTIONS, Topic.METRICS, Topic.LABELS)
HEADERS: list[list[tuple[str, bytes]]] = [
    [],
    [],
    [("traceparent", b"not a traceparent")],
    [("traceparent", b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01")],  # all-zero ids
    [("traceparent", b"\xff\xfe\xfd"), ("tracestate", b"\x00" * 10)],
    [("x-note", b"\xc3\x28")],  # not UTF-8
    [("\u00e9t\u00e9", b"summer")],
    [("", b"")],
    [("big", b"v" * 50_000)],
    [(f"h{i}", b"v") for i in range(200)],
]  # fmt: skip
#: The healthy rollouts' plan: three steps of 2 s and 50 canary requests.
HEALTHY_RATE = 400.0


@dataclass
class Sent:
    topic: Topic
    kind: str
    valid: bool  # a valid event on its own topic
    partition: int = -1
    offset: int = -1
    failed: bool = False  # the producer gave up on it (its error is in Live.send_errors)


@dataclass
class Live:
    args: argparse.Namespace
    sent: list[Sent] = field(default_factory=list)
    send_errors: Counter[str] = field(default_factory=Counter)
    sender_error: str = ""  # why the sender stopped before every record was resolved
    fuzz_s: float = 0.0
    promote_without: list[float] = field(default_factory=list)
    promote_with: list[float] = field(default_factory=list)
    not_promoted: list[str] = field(default_factory=list)
    error_lines: list[str] = field(default_factory=list)
    worker_exits: int = 0
    invalid: int = 0
    invalid_lettered: int = 0
    valid: int = 0
    valid_processed: int = 0
    refused: int = 0
    unconsumed: int = 0
    wrongly_lettered: Counter[str] = field(default_factory=Counter)
    missing_kinds: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0


def fuzz_records(
    n: int, seed: int
) -> Iterator[tuple[Topic, bytes, bytes, list[tuple[str, bytes]], str]]:
    """(topic, key, value, headers, mutation kind) of n records."""
    rng = random.Random(seed)
    base = [(raw, s.decode(raw).topic) for raw in seeds()]  # type: ignore[union-attr]
    types = [p.EVENT_TYPE for p in s.PAYLOADS] + ["dev.rollout.guessed.v1", ""]
    for _ in range(n):
        seed, own = rng.choice(base)
        kind, raw = mutate(seed, rng, types)
        topic = rng.choice(INPUTS)
        if kind == "none" and own in INPUTS and rng.random() < 0.75:
            topic = own  # most valid events on their own topic: they must be processed
        yield topic, rng.choice(KEYS), raw, rng.choice(HEADERS), kind


def is_valid_here(raw: bytes, topic: Topic) -> bool:
    """What the worker must process rather than dead-letter: a valid event on its own topic."""
    event = s.decode(raw, now=datetime.now(UTC))
    return isinstance(event, s.Envelope) and event.topic is topic


def send_fuzz(world: Rollouts, live: Live, rate: float, log: Callable[[str], None]) -> None:
    """Every fuzz record, `rate` a second; where each landed is filled in by the callbacks."""
    records = fuzz_records(live.args.records, live.args.seed)
    producer = KafkaProducer(
        acks=1,
        linger_ms=20,
        max_request_size=2_000_000,
        # the machine is busy: a slow answer is not a lost record (the defaults, 30 s and 120 s,
        # failed 23 % of 100,000 records at 1,000 a second on two cores)
        request_timeout_ms=120_000,
        delivery_timeout_ms=900_000,
        **world.settings.kafka_client_options(),
    )
    started = time.monotonic()
    lock = threading.Lock()

    def landed(entry: Sent) -> Callable[[Any], None]:
        def done(meta: Any) -> None:
            entry.partition, entry.offset = meta.partition, meta.offset

        return done

    def failed(entry: Sent) -> Callable[[BaseException], None]:
        def record(exc: BaseException) -> None:
            entry.failed = True
            with lock:
                live.send_errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1

        return record

    for i, (topic, key, value, headers, kind) in enumerate(records):
        due = started + i / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        entry = Sent(topic, kind, is_valid_here(value, topic))
        live.sent.append(entry)
        future = producer.send(world.topic(topic), key=key, value=value, headers=headers)
        future.add_callback(landed(entry))
        future.add_errback(failed(entry))
        if (i + 1) % 10_000 == 0:
            log(f"{i + 1:,} fuzz records sent")
    try:
        # no timeout of its own: every record resolves, landed or failed, within the
        # producer's delivery timeout; a flush cut short would leave records untraced
        producer.flush()
    except Exception as exc:  # recorded: the run is void
        live.sender_error = f"flush: {type(exc).__name__}: {exc}"
    finally:
        producer.close(timeout=10)
    live.fuzz_s = time.monotonic() - started


def unresolved(live: Live) -> int:
    """Records the producer neither landed nor failed: what happened to them is unknown."""
    return sum(1 for e in live.sent if e.offset < 0 and not e.failed)


def healthy_rollout(world: Rollouts, name: str, seed: int, live: Live) -> float | None:
    """One healthy rollout from request to promotion: its seconds, or None if it was not
    promoted in time."""
    quick = plan(step(10, bake_s=2), step(50, bake_s=2), step(100, bake_s=0, samples=0))
    requested = time.time()
    world.deploy(deployment_request(name, quick, model=name), rate=HEALTHY_RATE, seed=seed)
    try:
        ended = world.wait_terminal(name, timeout=live.args.rollout_timeout)
    except AssertionError:
        live.not_promoted.append(f"{name} (no end in {live.args.rollout_timeout:g} s)")
        return None
    finally:
        world.fleets[name].close()
    if ended.to_phase != "promoted":
        live.not_promoted.append(f"{name} ({ended.to_phase}: {ended.reason[:200]})")
        return None
    return ended.at.timestamp() - requested


def committed(world: Rollouts) -> dict[tuple[str, int], int]:
    """The highest committed offset of each input partition over the worker's groups."""
    admin = world.admin()
    try:
        groups = [g["group_id"] for g in admin.list_groups() if world.run in g["group_id"]]
        out: dict[tuple[str, int], int] = {}
        for group in groups:
            for tp, meta in admin.list_group_offsets(group).get(group, {}).items():
                key = (tp.topic, tp.partition)
                out[key] = max(out.get(key, -1), meta.offset)
        return out
    finally:
        admin.close()


def end_offsets(world: Rollouts) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**world.settings.kafka_client_options())
    try:
        tps = [
            TopicPartition(world.topic(t), p)
            for t in INPUTS
            for p in consumer.partitions_for_topic(world.topic(t)) or ()
        ]
        return {(tp.topic, tp.partition): o for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def fuzz_live(
    bootstrap: str, tmp: Path, args: argparse.Namespace, log: Callable[[str], None]
) -> Live:
    live = Live(args)
    world = Rollouts(bootstrap, tmp)
    started = time.time()
    try:
        worker = world.start_worker()
        world.wait_for(lambda: world.group_members() == 1, timeout=90, what="the worker")
        n = 0

        def rollouts_without(count: int) -> None:
            nonlocal n
            for _ in range(count):
                n += 1
                took = healthy_rollout(world, f"calm{n}-v2", n, live)
                if took is not None:
                    live.promote_without.append(took)

        rollouts_without(args.baseline)
        log(f"without the fuzz: {live.promote_without}")

        def sending() -> None:
            try:
                send_fuzz(world, live, args.rate, log)
            except Exception as exc:  # recorded: the run is void
                live.sender_error = f"{type(exc).__name__}: {exc}"

        sender = threading.Thread(target=sending, name="fuzz", daemon=True)
        sender.start()
        while sender.is_alive():
            n += 1
            took = healthy_rollout(world, f"busy{n}-v2", n, live)
            if took is not None:
                live.promote_with.append(took)
        log(f"with the fuzz: {live.promote_with}")
        if live.sender_error or len(live.sent) < args.records:
            raise RuntimeError(
                f"the fuzz sender stopped after {len(live.sent)} records: {live.sender_error}"
            )
        rollouts_without(args.baseline)
        # every record consumed, its dead letter (if any) read back
        ends = end_offsets(world)

        def consumed() -> bool:
            done = committed(world)
            return all(done.get(tp, 0) >= end for tp, end in ends.items())

        try:
            world.wait_for(consumed, timeout=args.drain_timeout, what="the worker to consume all")
        except AssertionError:
            log("the worker did not consume every record in time")
        time.sleep(3)
        done = committed(world)
        letters = {
            (d.source_topic, d.partition, d.offset): d for d in world.observer.dead_letters()
        }
        for entry in live.sent:
            if entry.offset < 0:  # the broker did not take it: the worker never saw it
                continue
            where = (world.topic(entry.topic), entry.partition, entry.offset)
            letter = letters.get(where)
            if entry.valid:
                live.valid += 1
                if letter is not None and letter.reason.startswith("refused"):
                    live.refused += 1
                if done.get(where[:2], -1) <= entry.offset:
                    live.unconsumed += 1
                elif letter is not None and not letter.reason.startswith("refused"):
                    live.wrongly_lettered[letter.reason.split(":")[0][:60]] += 1
                else:
                    live.valid_processed += 1
            else:
                live.invalid += 1
                if letter is not None:
                    live.invalid_lettered += 1
                else:
                    live.missing_kinds[f"{entry.topic.value}/{entry.kind}"] += 1
        live.worker_exits = worker.starts - 1 + (0 if worker.alive() else 1)
        live.error_lines = [
            line
            for line in worker.log_lines()
            if '"level": "error"' in line
            or '"level": "critical"' in line
            or "Traceback" in line
            or "Crashed" in line
        ]
        live.wall_s = time.time() - started
    finally:
        world.close()
    return live


def ratio(live: Live) -> float:
    return statistics.median(live.promote_with) / statistics.median(live.promote_without)


def void_reason(live: Live) -> str:
    """Why the run's counts cannot be trusted, or "" when they can."""
    reasons = []
    if live.sender_error:
        reasons.append(f"the sender failed ({live.sender_error[:200]})")
    if unresolved(live):
        reasons.append(f"{unresolved(live):,} records neither landed nor failed")
    if len(live.sent) < live.args.records:
        reasons.append(f"only {len(live.sent):,} of {live.args.records:,} records were sent")
    return "; ".join(reasons)


def report(live: Live, sha: str) -> str:
    args = live.args
    kinds = Counter(e.kind for e in live.sent)
    topics = Counter(e.topic.value for e in live.sent)

    def pct(k: int, n: int) -> str:
        return f"{100 * k / n:.3f} %" if n else "n/a"

    void = void_reason(live)
    lines = [f"**VOID RUN: {void}. Its counts below are not a result.**", ""] if void else []
    lines += [
        f"Command: `python bench/fuzz_live.py --records {args.records} --rate {args.rate:g} "
        f"--seed {args.seed} --baseline {args.baseline}`",
        "",
        f"- Code: commit {sha}. One worker; {len(live.sent):,} records in {live.fuzz_s:.0f} s "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(kinds.items()))}; "
        f"{', '.join(f'{k} {v:,}' for k, v in sorted(topics.items()))}); "
        f"{sum(live.send_errors.values()):,} not accepted by the broker, left out below"
        f"{' ' + str(dict(live.send_errors.most_common(3))) if live.send_errors else ''}; "
        f"{live.wall_s:.0f} s wall.",
        f"- Healthy rollouts (10 % / 50 % / 100 %, 2 s bake, 50 canary requests, "
        f"{HEALTHY_RATE:g} requests/s): {len(live.promote_without)} without the fuzz, "
        f"{len(live.promote_with)} beside it.",
        "",
        "| check | result | target |",
        "|---|---|---|",
        f"| exceptions (error lines, tracebacks) in the worker's log; worker exits | "
        f"{len(live.error_lines)}; {live.worker_exits} | 0; 0 |",
        f"| invalid records dead-lettered | {live.invalid_lettered:,} / {live.invalid:,} "
        f"({pct(live.invalid_lettered, live.invalid)}) | 100 % |",
        f"| valid events processed (consumed, not dead-lettered but as a refusal) | "
        f"{live.valid_processed:,} / {live.valid:,} ({pct(live.valid_processed, live.valid)}); "
        f"{live.refused:,} refused, {live.unconsumed} not consumed | 100 % |",
    ]
    if live.promote_with and live.promote_without:
        lines.append(
            f"| time to promotion, median with / without the fuzz | "
            f"{statistics.median(live.promote_with):.1f} s / "
            f"{statistics.median(live.promote_without):.1f} s = {ratio(live):.2f}x | <= 1.2x |"
        )
    lines.append(f"| healthy rollouts not promoted | {len(live.not_promoted)} | 0 |")
    if live.not_promoted:
        lines += ["", "Not promoted: " + "; ".join(live.not_promoted)]
    if live.missing_kinds:
        lines += [
            "",
            "Invalid records without a dead letter, by topic and mutation: "
            + ", ".join(f"{k} {v}" for k, v in live.missing_kinds.most_common(10)),
        ]
    if live.wrongly_lettered:
        lines += [
            "",
            "Valid events dead-lettered: "
            + ", ".join(f"{k} ({v})" for k, v in live.wrongly_lettered.most_common(10)),
        ]
    if live.error_lines:
        lines += ["", "Error lines in the worker's log (first 5):", "```"]
        lines += [line[:600] for line in live.error_lines[:5]]
        lines.append("```")
    lines += [
        "",
        f"Times to promotion without: {', '.join(f'{t:.1f}' for t in live.promote_without)} s; "
        f"with: {', '.join(f'{t:.1f}' for t in live.promote_with)} s.",
    ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=1000.0, help="fuzz records a second")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--baseline", type=int, default=3, help="rollouts before and after the fuzz")
    p.add_argument("--rollout-timeout", type=float, default=120.0)
    p.add_argument("--drain-timeout", type=float, default=300.0)
    return p


def main(argv: list[str] | None = None) -> None:
    from bench.chaos import quiet

    args = parser().parse_args(argv)
    sha = commit()
    quiet()

    def log(message: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        live = fuzz_live(load_settings().bootstrap_servers, Path(tmp), args, log)
    print(report(live, sha))
    if void_reason(live):
        sys.exit(2)


if __name__ == "__main__":
    main()
