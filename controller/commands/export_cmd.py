"""`rollout export DEPLOYMENT_ID...`: what a live run put on the input topics, as a log that
`rollout replay` reads.

The input topics (deployments, predictions, labels, metrics) are read from their beginning to
the high watermark each partition had when the export started, with assigned partitions and no
consumer group (nothing is committed, no group rebalances). The records keyed by the given
deployment ids (every record with --all) are written as they are on the topics, one record value
per line, in event-time order: the envelope's `time`, ties broken by topic (deployments,
predictions, labels, metrics), partition and offset, so the same topics give the same bytes.

The choice and order of the lines (`select`) is a plain function of the records read; Kafka is
only in `read_inputs`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

import click

from controller.errors import RolloutError
from controller.settings import Settings, load_settings
from schemas import Rejection, Topic, decode

#: The topics a rollout's inputs travel on, in the order that breaks ties of event time.
INPUTS: tuple[Topic, ...] = (Topic.DEPLOYMENTS, Topic.PREDICTIONS, Topic.LABELS, Topic.METRICS)

#: How long connecting to the brokers may take of the export's --timeout, at most.
CONNECT_TIMEOUT_S = 10.0


class ExportError(RolloutError):
    """The export could not read the topics; the message says why and what to do."""


@dataclass(frozen=True)
class InputRecord:
    """One record of an input topic, as read."""

    topic: Topic
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Skipped:
    """A record of a chosen deployment that is not written, with why."""

    where: str
    reason: str


@dataclass
class Export:
    """The lines to write, in order, and what was counted on the way."""

    lines: list[bytes] = field(default_factory=list)
    per_topic: Counter[Topic] = field(default_factory=Counter)
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        topics = ", ".join(f"{t} {self.per_topic[t]}" for t in INPUTS)
        return f"exported {len(self.lines)} records ({topics}); skipped {len(self.skipped)}"


def select(records: Iterable[InputRecord], deployments: Collection[str] | None) -> Export:
    """The records keyed by one of `deployments` (every record when None), in event-time order.

    A value that is not an event (`schemas.decode` rejects it) or that holds a line break (it
    would not be one line of the log) is skipped with its reason. Records of other deployments
    are passed over without being decoded.
    """
    kept: list[tuple[tuple[datetime, int, int, int], bytes]] = []
    export = Export()
    rank = {topic: n for n, topic in enumerate(INPUTS)}
    for record in records:
        if deployments is not None and _key(record) not in deployments:
            continue
        value = record.value or b""
        if b"\n" in value or b"\r" in value:
            export.skipped.append(Skipped(record.where, "the value holds a line break"))
            continue
        event = decode(record.value)
        if isinstance(event, Rejection):
            export.skipped.append(Skipped(record.where, f"not an event: {event.reason}"))
            continue
        order = (event.time, rank[record.topic], record.partition, record.offset)
        kept.append((order, value))
        export.per_topic[record.topic] += 1
    kept.sort(key=lambda item: item[0])
    export.lines = [value for _, value in kept]
    return export


def _key(record: InputRecord) -> str | None:
    return None if record.key is None else record.key.decode("utf-8", errors="replace")


def read_inputs(
    settings: Settings,
    *,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[InputRecord]:
    """Every record of the input topics, from the beginning of each partition to its high
    watermark when reading started. Raises ExportError when the brokers do not answer, a topic
    does not exist, or the records are not all read within `timeout_s`."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from controller.kafka_clients import KafkaUnreachableError, probe
    from controller.topics import topic_name

    try:
        probe(settings)
    except KafkaUnreachableError as exc:
        raise ExportError(str(exc)) from exc
    deadline = clock() + timeout_s
    by_name = {topic_name(settings, topic): topic for topic in INPUTS}
    options = settings.kafka_client_options()
    connect_s = min(timeout_s, CONNECT_TIMEOUT_S)
    try:
        consumer = KafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            bootstrap_timeout_ms=int(connect_s * 1000),
            client_id="rollout-export",
            **options,
        )
    except KafkaError as exc:
        brokers = ",".join(options["bootstrap_servers"])
        raise ExportError(
            f"no Kafka broker answered at {brokers} within {connect_s:g} s ({exc}); check "
            "KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers"
        ) from exc
    try:
        partitions = []
        for name in by_name:
            numbers = consumer.partitions_for_topic(name)
            if not numbers:
                raise ExportError(
                    f"topic {name} does not exist (or is not visible to this client): check "
                    f"ROLLOUT_TOPIC_PREFIX (now {settings.topic_prefix!r}) or create the "
                    "topics with `rollout topics create`"
                )
            partitions += [TopicPartition(name, n) for n in sorted(numbers)]
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions, timeout_ms=_ms_left(deadline, clock))
        starts = consumer.beginning_offsets(partitions, timeout_ms=_ms_left(deadline, clock))
        consumer.seek_to_beginning(*partitions)
        behind = {tp for tp in partitions if starts[tp] < ends[tp]}
        consumer.pause(*(tp for tp in partitions if tp not in behind))
        while behind:
            if clock() > deadline:
                raise ExportError(
                    f"the input topics were not read to their end within {timeout_s:g} s "
                    f"({len(behind)} of {len(partitions)} partitions left); try a longer "
                    "--timeout"
                )
            for tp, batch in consumer.poll(timeout_ms=200, max_records=5000).items():
                for r in batch:
                    if r.offset < ends[tp]:
                        yield InputRecord(by_name[tp.topic], tp.partition, r.offset, r.key, r.value)
            done = {
                tp
                for tp in behind
                if (consumer.position(tp, timeout_ms=_ms_left(deadline, clock)) or 0) >= ends[tp]
            }
            if done:
                consumer.pause(*done)  # nothing written after the start is read
                behind -= done
    except KafkaError as exc:
        raise ExportError(f"reading the input topics failed: {exc}") from exc
    finally:
        consumer.close()


def _ms_left(deadline: float, clock: Callable[[], float]) -> int:
    return max(1, int((deadline - clock()) * 1000))


@click.command("export")
@click.argument("deployment_ids", metavar="DEPLOYMENT_ID...", nargs=-1)
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="Every record of the input topics, whatever its deployment.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(allow_dash=True, dir_okay=False),
    default="-",
    show_default=True,
    help="Where to write the log (JSON lines); a file is replaced only when the export is done.",
)
@click.option(
    "--timeout",
    "timeout_s",
    metavar="S",
    type=click.FloatRange(min=0.0, min_open=True),
    default=60.0,
    show_default=True,
    help="Give up (writing nothing) if the topics are not read to their end in S seconds.",
)
@click.option(
    "--bootstrap-servers", "bootstrap", envvar="KAFKA_BOOTSTRAP_SERVERS", help="host:port,..."
)
def export_cmd(
    deployment_ids: tuple[str, ...],
    every: bool,
    out_path: str,
    timeout_s: float,
    bootstrap: str | None,
) -> None:
    """Write what a live run put on the input topics for DEPLOYMENT_ID... as a log for
    `rollout replay`: the CloudEvents of the deployments, predictions, labels and metrics
    topics keyed by those ids, byte for byte, one per line, in event-time order.

    Reads every partition from its beginning to where it ended when the export started,
    without joining a consumer group. Records that are not events are skipped; a summary
    goes to stderr.
    """
    if every == bool(deployment_ids):
        raise click.UsageError("give one or more DEPLOYMENT_IDs, or --all (not both)")
    settings = load_settings(**({"bootstrap_servers": bootstrap} if bootstrap else {}))
    taken = datetime.now(UTC).replace(microsecond=0)
    try:
        export = select(
            read_inputs(settings, timeout_s=timeout_s), None if every else set(deployment_ids)
        )
    except RolloutError as exc:
        raise click.ClickException(str(exc)) from exc
    for skipped in export.skipped:
        click.echo(f"skipped {skipped.where}: {skipped.reason}", err=True)
    stream: IO[bytes]
    with click.open_file(out_path, "wb", atomic=out_path != "-") as stream:
        for line in export.lines:
            stream.write(line + b"\n")
    click.echo(export.summary(), err=True)
    # the worker's timer ran until now: replay ticks as far (decisions after the last input)
    click.echo(
        f"taken at {taken.isoformat()}: replay it with --until {taken.isoformat()}", err=True
    )
