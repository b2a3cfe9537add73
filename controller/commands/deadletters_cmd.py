"""`rollout dead-letters`: the records the controller could not use, with why and from where."""

from __future__ import annotations

import base64
import time
from collections import Counter
from typing import Any

import click

from controller.commands.ops import _consume, _settings, bootstrap_option, json_option
from controller.observability.metrics import rejection_reason
from schemas import DeadLetter, Envelope, Rejection, Topic

#: bytes of the original record shown on a line
SHOWN = 120


@click.command("dead-letters")
@click.option("--follow", "-f", is_flag=True, help="Keep following new dead letters.")
@click.option(
    "--topic",
    "source_topic",
    metavar="NAME",
    help="Only those from this input topic (its short name, e.g. predictions, or full name).",
)
@click.option(
    "--summary", is_flag=True, help="Counts by source topic and reason instead of each letter."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="S",
    help="Stop after S seconds (with --follow too).",
)
@bootstrap_option
@json_option
def dead_letters_cmd(
    follow: bool,
    source_topic: str | None,
    summary: bool,
    timeout_s: float | None,
    bootstrap: str | None,
    as_json: bool,
) -> None:
    """Dead letters, oldest first: each record the worker or the lane could not use, with the
    reason, where it came from (topic, partition, offset, key) and its first bytes. The
    original bytes are on the letter in full (--json), to send again once the producer is
    fixed."""
    settings = _settings(bootstrap)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    counts: Counter[tuple[str, str]] = Counter()
    for event in _consume(
        settings,
        [Topic.DEAD_LETTER],
        follow=follow,
        from_beginning=not follow,
        deadline=deadline,
    ):
        letter = event.data
        if not isinstance(letter, DeadLetter) or not _from(letter, source_topic):
            continue
        if summary:
            counts[(letter.source_topic or "-", _kind(letter))] += 1
        elif as_json:
            click.echo(event.to_json().decode())
        else:
            click.echo(line(event))
    if summary:
        for (topic, kind), n in sorted(counts.items(), key=lambda item: -item[1]):
            click.echo(f"{n:>8}  {topic}  {kind}")
        if not counts:
            click.echo("no dead letters")


def line(event: Envelope[Any]) -> str:
    """One dead letter: when, from where, why, and the record's first bytes."""
    d: DeadLetter = event.data
    where = f"{d.source_topic or '?'}[{_or(d.partition)}]@{_or(d.offset)}"
    key = f" key {d.key!r}" if d.key else ""
    raw = base64.b64decode(d.original_b64)
    shown = raw[:SHOWN].decode("utf-8", errors="replace")
    more = f"... ({d.original_size} bytes)" if d.original_size > SHOWN else ""
    return (
        f"dead  {d.rejected_at:%Y-%m-%d %H:%M:%S}  {where}{key}  {d.reason}\n      {shown!r}{more}"
    )


def _kind(letter: DeadLetter) -> str:
    """The letter's reason kind, as the worker's `rollout_dead_letters_total` labels it."""
    return rejection_reason(Rejection(reason=letter.reason, errors=letter.errors))


def _from(letter: DeadLetter, topic: str | None) -> bool:
    if topic is None:
        return True
    source = letter.source_topic or ""
    return source == topic or source.endswith("." + topic) or source.endswith(topic)


def _or(value: int | None) -> str:
    return "?" if value is None else str(value)
