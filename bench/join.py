"""Label join benchmark: the pending store (`controller.stream.pending`) at a worker's size.

    python bench/join.py [--pending 10000000] [--labels 1000000] [--batch 5000]
        [--miss-share 0.1] [--deployments 20] [--block-cache-mb 64] [--write-buffer-mb 32]
        [--no-mmap-reads] [--dir DIR] [--quick]

Fills a fresh store with `--pending` predictions (`add_predictions` in batches of `--batch`:
32-hex-character request ids that look random, `--deployments` deployments, a baseline and a
canary cohort, a score; event times spread over a day, in order), waits for the compactions
the fill left (a worker writes ten million predictions in hours or days, not in a minute, and
its compactions keep up), then joins `--labels` labels
(`add_labels` in batches of `--batch`): a share `--miss-share` for requests never predicted
(they wait as early labels), the rest for predictions drawn at random (some drawn twice: a
duplicate label). Then the worker's path: as many labels again (`--worker-labels`), drawn the
same way, as `label.reported` records (wire JSON, made outside the timed calls) through the
worker's joiner (`controller.stream.join.Joiner.add`: decode, join, fold the pairs into one
delta per deployment). Last, one sweep (`expire`) at the time when the first tenth of the day
has passed the horizon.

Prints predictions written per second, labels joined per second (the time inside `add_labels`;
request ids are generated outside the timed calls) and per CPU-second of the calling thread
(what the joins cost the worker's thread, without RocksDB's background flushes and compactions,
which run on threads of their own, nor the wait for a core when another process or those
threads hold them), the same two through the worker's joiner (the time inside `Joiner.add`),
the sweep's rate, disk bytes per pending prediction (the store's directory after a flush), the
bloom filter and index bytes per pending prediction (from RocksDB's table properties: what the
block cache must hold for lookups without disk reads of metadata), memtable bytes per
prediction, the block cache in use and the table files the joins read by key (a block the cache
misses is read from them: from the operating system's page cache when they fit there, else from
the disk), the process's peak RSS, the store's settings, the commit and the command line.
Request ids are derived from their number (splitmix64), so nothing of the data set is held in
memory beside the store.

Not a test: it prints figures, no time is asserted. `--quick` is a small run (200,000
predictions, 50,000 labels; a few seconds).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import random
import re
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from bench.common import commit, cpu_model  # noqa: E402
from controller.stream.join import Joiner, JoinPipeline  # noqa: E402
from controller.stream.pending import (  # noqa: E402
    EARLY_CF,
    EXPIRY_CF,
    JOINED_CF,
    PENDING_CF,
    Label,
    PendingPrediction,
    PendingStore,
)
from schemas import LabelReported  # noqa: E402

QUICK = {"pending": 200_000, "labels": 50_000}
#: The first prediction's event time (2026-01-01 00:00 UTC); the predictions span a day.
T0 = 1_767_225_600.0
SPAN_S = 86_400.0
HORIZON_S = 7 * 86_400.0
LABEL_PARTITIONS = 4
_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def request_id(i: int) -> str:
    """Request `i`'s id: 32 hex characters, as random as a UUID's, distinct for distinct i."""
    return f"{_splitmix64(i):016x}{_splitmix64(i ^ 0x5DEECE66D):016x}"


@dataclass(frozen=True, slots=True)
class Workload:
    pending: int
    deployments: int

    def prediction(self, i: int) -> PendingPrediction:
        canary = i % 10 == 0
        return PendingPrediction(
            deployment_id=f"deployment-{i % self.deployments:02d}",
            request_id=request_id(i),
            model=f"fraud-scorer-{i % self.deployments:02d}",
            version="v2" if canary else "v1",
            cohort="canary" if canary else "baseline",
            event_time=self.time(i),
            prediction=(_splitmix64(i) % 10_000) / 10_000,
        )

    def time(self, i: int) -> float:
        return T0 + i * SPAN_S / self.pending

    def label(self, i: int, number: int) -> Label:
        """Label number `number` (its position on the labels topic) for request `i`."""
        predicted = i < self.pending
        event_time = self.time(i) + 60 + (_splitmix64(i) % 3600) if predicted else T0 + SPAN_S
        return Label(
            deployment_id=f"deployment-{i % self.deployments:02d}",
            request_id=request_id(i),
            label=float(_splitmix64(i ^ 1) % 2),
            event_time=event_time,
            topic_partition=f"labels:{number % LABEL_PARTITIONS}",
            offset=number // LABEL_PARTITIONS,
        )


LABEL_TYPE = LabelReported.EVENT_TYPE
#: batches of the worker's path timed one way before switching to the other
WORKER_CHUNK = 10


@dataclass(frozen=True, slots=True)
class Record:
    """A labels-topic record, as the joiner reads one."""

    topic: str
    partition: int
    offset: int
    value: bytes


def _rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def label_record(label: Label) -> Record:
    """`label` as the labels topic holds it: a `label.reported` event in its envelope."""
    topic, partition = label.topic_partition.split(":")
    value = (
        f'{{"specversion":"1.0","id":"label-{partition}-{label.offset}","source":"labeller",'
        f'"type":"{LABEL_TYPE}","time":"{_rfc3339(label.event_time)}",'
        f'"subject":"{label.deployment_id}","data":{{"deployment_id":"{label.deployment_id}",'
        f'"request_id":"{label.request_id}","label":{label.label!r},'
        f'"event_time":"{_rfc3339(label.event_time)}"}}}}'
    )
    return Record(topic, int(partition), label.offset, value.encode())


@dataclass(slots=True)
class Figures:
    write_s: float = 0.0
    join_s: float = 0.0
    #: CPU time of the calling thread inside `add_labels` (RocksDB's background flushes and
    #: compactions run on threads of their own)
    join_cpu_s: float = 0.0
    sweep_s: float = 0.0
    joined: int = 0
    duplicate: int = 0
    waiting: int = 0
    swept: int = 0
    expired: int = 0
    unmatched: int = 0
    memtable_bytes: float | None = None
    disk_after_fill: int = 0
    disk_at_end: int = 0
    filter_bytes: int = 0
    index_bytes: int = 0
    approximate_pending: int = 0
    cache_usage: int = 0
    #: table file bytes of the families read by key, after the joins
    lookup_tables: int = 0
    #: seconds the fill's flushes and compactions ran on after the fill
    settle_s: float = 0.0
    #: the worker's path: (labels, seconds, CPU seconds of the process) through `Joiner.add`,
    #: then through `JoinPipeline`; the pairs folded of both
    worker: list[tuple[int, float, float]] = field(default_factory=list)
    worker_pairs: int = 0
    worker_invalid: int = 0


def _table_property(text: str | None, name: str) -> int:
    """A number from RocksDB's aggregated table properties ("name=123; ...")."""
    match = re.search(re.escape(name) + r"[^=;]*=(\d+)", text or "")
    return int(match.group(1)) if match else 0


def run(store: PendingStore, args: argparse.Namespace) -> Figures:
    work = Workload(args.pending, args.deployments)
    figures = Figures()
    # (predictions written, memtable bytes) while the first memtables fill, well before a flush
    memtables: list[tuple[int, int]] = []
    before_flush = args.write_buffer_mb * 2**20 // 600
    for start in range(0, args.pending, args.batch):
        predictions = [
            work.prediction(i) for i in range(start, min(start + args.batch, args.pending))
        ]
        started = time.perf_counter()
        store.add_predictions(predictions, offsets={"predictions:0": start + len(predictions)})
        figures.write_s += time.perf_counter() - started
        written = start + len(predictions)
        if written <= before_flush:
            in_memtables = sum(
                store.property_int("rocksdb.cur-size-all-mem-tables", cf) or 0
                for cf in (PENDING_CF, EXPIRY_CF)
            )
            memtables.append((written, in_memtables))
    if len(memtables) >= 2:  # the growth, not the first allocations (the memtable bloom filter)
        (first, first_bytes), (last, last_bytes) = memtables[0], memtables[-1]
        figures.memtable_bytes = (last_bytes - first_bytes) / (last - first)
    store.flush()
    figures.settle_s = settle(store)
    figures.disk_after_fill = store.disk_bytes()
    for family in (PENDING_CF, EXPIRY_CF):
        properties = store.property("rocksdb.aggregated-table-properties", family)
        figures.filter_bytes += _table_property(properties, "filter block size")
        figures.index_bytes += _table_property(properties, "index block size")

    rng = random.Random(args.seed)
    for start in range(0, args.labels, args.batch):
        numbers = range(start, min(start + args.batch, args.labels))
        labels = [
            work.label(
                args.pending + number if _is_miss(number, args.miss_share)
                else rng.randrange(args.pending),
                number,
            )
            for number in numbers
        ]  # fmt: skip
        offsets = {label.topic_partition: label.offset + 1 for label in labels}
        started, cpu = time.perf_counter(), time.thread_time()
        outcome = store.add_labels(labels, offsets=offsets)
        figures.join_s += time.perf_counter() - started
        figures.join_cpu_s += time.thread_time() - cpu
        total = outcome.total()
        figures.joined += total.joined
        figures.duplicate += total.duplicate
        figures.waiting += total.waiting
    worker(store, args, work, rng, figures)
    figures.cache_usage = store.property_int("rocksdb.block-cache-usage") or 0
    figures.lookup_tables = sum(
        store.property_int("rocksdb.total-sst-files-size", family) or 0
        for family in (PENDING_CF, JOINED_CF, EARLY_CF)
    )

    started = time.perf_counter()
    report = store.expire(T0 + SPAN_S / 10 + store.horizon_s)
    figures.sweep_s = time.perf_counter() - started
    figures.swept = report.scanned
    figures.expired = report.total().unlabelled + report.total().joined
    figures.unmatched = report.total().unmatched
    figures.approximate_pending = store.approximate_pending()
    store.flush()
    figures.disk_at_end = store.disk_bytes()
    return figures


def worker(
    store: PendingStore,
    args: argparse.Namespace,
    work: Workload,
    rng: random.Random,
    figures: Figures,
) -> None:
    """The worker's path: label records through the joiner alone and through the pipeline
    the join lane runs, `--worker-labels` each, alternating every `WORKER_CHUNK` batches (both
    meet a store in the same states; see the module docstring)."""
    joiner = Joiner(store, predictions_topic="predictions", labels_topic="labels")
    now = T0 + 2 * SPAN_S  # after every label's time
    totals = [[0, 0.0, 0.0], [0, 0.0, 0.0]]  # alone, piped: labels, seconds, CPU seconds
    first, end = args.labels, args.labels + 2 * args.worker_labels
    chunk = WORKER_CHUNK * args.batch
    for number, start in enumerate(range(first, end, chunk)):
        piped = number % 2
        pipeline = JoinPipeline(joiner) if piped else None
        labels_before = joiner.counters.labels
        started, cpu = time.perf_counter(), time.process_time()
        for batch in range(start, min(start + chunk, end), args.batch):
            records = [
                label_record(
                    work.label(
                        args.pending + n if _is_miss(n, args.miss_share)
                        else rng.randrange(args.pending),
                        n,
                    )
                )
                for n in range(batch, min(batch + args.batch, end))
            ]  # fmt: skip
            started_batch, cpu_batch = time.perf_counter(), time.process_time()
            if pipeline is None:
                joiner.add(records, now)
            else:
                pipeline.add(records, now)
            totals[piped][1] += time.perf_counter() - started_batch
            totals[piped][2] += time.process_time() - cpu_batch
        if pipeline is not None:
            started, cpu = time.perf_counter(), time.process_time()
            pipeline.flush()
            pipeline.close()
            totals[piped][1] += time.perf_counter() - started
            totals[piped][2] += time.process_time() - cpu
        totals[piped][0] += joiner.counters.labels - labels_before
    figures.worker = [(int(n), float(s), float(c)) for n, s, c in totals]
    figures.worker_pairs = joiner.counters.pairs
    figures.worker_invalid = joiner.counters.invalid_labels + joiner.counters.unusable


def settle(store: PendingStore, limit_s: float = 1800.0) -> float:
    """Wait until RocksDB runs and plans no compaction (the fill wrote in a minute or two what
    a worker writes in days: its backlog of compactions is the fill's, not the joins'); the
    seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        busy = any(
            (store.property_int("rocksdb.num-running-compactions", family) or 0)
            + (store.property_int("rocksdb.compaction-pending", family) or 0)
            + (store.property_int("rocksdb.num-running-flushes", family) or 0)
            for family in (PENDING_CF, EXPIRY_CF, JOINED_CF, EARLY_CF)
        )
        if not busy:
            break
        time.sleep(0.5)
    return time.perf_counter() - started


def _is_miss(number: int, share: float) -> bool:
    """Label `number` is for a request never predicted: `share` of the labels, evenly spread."""
    return int((number + 1) * share) > int(number * share)


def command_line(argv: Sequence[str]) -> str:
    return " ".join(["python bench/join.py", *argv])


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "n/a"


def report(
    args: argparse.Namespace, argv: Sequence[str], code: str, store: PendingStore, f: Figures
) -> str:
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    settings = ", ".join(f"{k} {v}" for k, v in store.settings().items())
    labels = f.joined + f.duplicate + f.waiting
    per = max(args.pending, 1)
    lines = [
        f"Command: `{command_line(argv)}`",
        "",
        f"- Code: commit {code}; rocksdict {importlib.metadata.version('rocksdict')}.",
        f"- Machine: {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}.",
        f"- Store: {settings}.",
        f"- Data: {args.pending:,} predictions ({args.deployments} deployments, 32-character "
        f"request ids) written in batches of {args.batch:,}; {args.labels:,} labels in batches of "
        f"{args.batch:,}, {args.miss_share:.0%} for requests never predicted.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| predictions written per second | {_rate(args.pending, f.write_s)} |",
        f"| compactions after the fill, waited for before the joins | {f.settle_s:.0f} s |",
        f"| labels joined per second | {_rate(labels, f.join_s)} |",
        f"| labels joined per CPU-second of the calling thread | {_rate(labels, f.join_cpu_s)} |",
        f"| labels: joined / duplicate / waiting | {f.joined:,} / {f.duplicate:,} / "
        f"{f.waiting:,} |",
        *worker_lines(f),
        f"| index entries swept per second (one sweep) | {_rate(f.swept, f.sweep_s)} "
        f"({f.expired:,} predictions, {f.unmatched:,} early labels) |",
        f"| disk bytes per pending prediction (after the fill, flushed) | "
        f"{f.disk_after_fill / per:.1f} |",
        f"| disk bytes per prediction at the end (joined, swept, flushed) | "
        f"{f.disk_at_end / per:.1f} |",
        f"| bloom filter bytes per pending prediction | {f.filter_bytes / per:.2f} |",
        f"| index bytes per pending prediction | {f.index_bytes / per:.2f} |",
        "| memtable bytes per prediction (before its flush) | "
        + ("n/a" if f.memtable_bytes is None else f"{f.memtable_bytes:.0f}")
        + " |",
        f"| block cache in use after the joins | {f.cache_usage / 2**20:.1f} MB |",
        f"| table files read by key (pending, joined, early) after the joins | "
        f"{f.lookup_tables / 2**20:.0f} MB |",
        f"| pending predictions at the end: held / RocksDB's estimate | "
        f"{args.pending - f.expired:,} / {f.approximate_pending:,} |",
        f"| peak RSS of the process | {peak_rss / 2**20:.0f} MB |",
    ]
    return "\n".join(lines)


def worker_lines(f: Figures) -> list[str]:
    if len(f.worker) != 2:
        return []
    (alone, alone_s, alone_cpu), (piped, piped_s, piped_cpu) = f.worker
    return [
        "| the worker's path (decode, join, fold), labels per second: the joiner alone / "
        f"the join lane's pipeline | {_rate(alone, alone_s)} / {_rate(piped, piped_s)} "
        f"(x{(piped / piped_s) / (alone / alone_s):.2f}) |"
        if alone_s > 0 and piped_s > 0 and alone
        else "| the worker's path | n/a |",
        "| the same, CPU microseconds of the process per label (RocksDB's own threads "
        f"included) | {1e6 * alone_cpu / max(alone, 1):.1f} / "
        f"{1e6 * piped_cpu / max(piped, 1):.1f} |",
        f"| the worker's path: labels / pairs folded / refused | {alone + piped:,} / "
        f"{f.worker_pairs:,} / {f.worker_invalid:,} |",
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--pending", type=int, default=10_000_000, help="predictions written")
    p.add_argument("--labels", type=int, default=1_000_000, help="labels joined")
    p.add_argument(
        "--worker-labels",
        type=int,
        default=None,
        help="labels through the worker's joiner, and as many through its pipeline "
        "(default: as many as --labels)",
    )
    p.add_argument("--batch", type=int, default=5_000, help="predictions or labels a call")
    p.add_argument("--miss-share", type=float, default=0.1, help="labels never predicted")
    p.add_argument("--deployments", type=int, default=20)
    p.add_argument("--block-cache-mb", type=int, default=64)
    p.add_argument("--write-buffer-mb", type=int, default=32)
    p.add_argument(
        "--no-mmap-reads",
        dest="mmap_reads",
        action="store_false",
        help="read table files by system calls, not through a memory map",
    )
    p.add_argument("--dir", default=None, help="where the store's temporary directory goes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="200,000 predictions, 50,000 labels")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cli = parser()
    args = cli.parse_args(argv)
    if args.quick:
        defaults = vars(cli.parse_args([]))
        for key, value in QUICK.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    if args.worker_labels is None:
        args.worker_labels = args.labels
    if args.worker_labels < 0:
        cli.error("--worker-labels must be >= 0")
    if args.pending < 1 or args.labels < 1 or args.batch < 1 or args.deployments < 1:
        cli.error("--pending, --labels, --batch and --deployments must be >= 1")
    if not 0.0 <= args.miss_share <= 1.0:
        cli.error("--miss-share must be in [0, 1]")
    code = commit()  # the code measured is the code at the start: read it before the run
    with tempfile.TemporaryDirectory(prefix="join-bench-", dir=args.dir) as directory:
        store = PendingStore(
            Path(directory) / "pending",
            horizon_s=HORIZON_S,
            block_cache_mb=args.block_cache_mb,
            write_buffer_mb=args.write_buffer_mb,
            mmap_reads=args.mmap_reads,
        )
        with store:
            figures = run(store, args)
            text = report(args, argv, code, store, figures)
    print(text)


if __name__ == "__main__":
    main()
