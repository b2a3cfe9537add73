"""The notifier's loop: the alerts topic in, notifications out, offsets committed behind them.

One pass of the loop:

1. poll the alerts topic (a kafka-python consumer of its own group, every partition assigned
   to this process: one notifier runs per group, see docs/notifications.md);
2. run each alert through the core (`plan_notifications`, with its partition and offset as the
   mark), skipping one the stored state already includes; then the groups that are due;
3. deliver every notification (retries in controller/notify/delivery.py);
4. store the state's changes in the compacted state topic (controller/notify/store.py);
5. commit, for each partition, the offset of the first alert whose notification is still owed
   (a group waiting out its group_wait), or the position when nothing is owed.

So a crash before 3 loses nothing (the alert is read again, or the stored group is sent when
due); a crash between 3 and 4 sends that pass's notifications again on restart (at-least-once:
`notificationId`, PagerDuty's dedup_key and the email's Message-ID let a receiver drop them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from controller.core.notify import (
    Entry,
    Notification,
    NotifyConfig,
    due,
    flush_pending,
    next_due,
    plan_notifications,
    unsettled,
)
from controller.errors import RolloutError
from controller.notify import metrics
from controller.notify.delivery import Outcome, deliver
from controller.notify.sinks import SendError, Sink, build_sink
from controller.notify.store import StateStore, StateStoreError, Stored
from controller.settings import Settings
from controller.topics import topic_name
from schemas import Alert, Envelope, Topic, decode

DEFAULT_GROUP = "rollout-notify"
log = structlog.get_logger("controller.notify")


class NotifierError(RolloutError):
    """The notifier cannot run; the message says what to do."""


@dataclass
class Summary:
    alerts: int = 0
    sent: int = 0
    gave_up: int = 0
    skipped: int = 0
    outcomes: list[tuple[str, str, Outcome]] = field(default_factory=list)


class Notifier:
    def __init__(
        self,
        settings: Settings,
        config: NotifyConfig,
        *,
        group_id: str = DEFAULT_GROUP,
        from_beginning: bool = False,
        clock: Callable[[], float] = time.time,
        sinks: Mapping[str, Sink] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.group_id = group_id
        self.from_beginning = from_beginning
        self.clock = clock
        self.sinks = (
            dict(sinks)
            if sinks is not None
            else {name: build_sink(r, config.external_url) for name, r in config.receivers.items()}
        )
        self.store = StateStore(settings, group_id)
        self.stop_event = threading.Event()
        #: when the loop last turned, or a delivery last made progress (the liveness probe)
        self.beat = time.monotonic()
        #: the consumer is placed and the state loaded (the readiness probe)
        self.started = False

    def stop(self) -> None:
        self.stop_event.set()

    # ---- the loop -----------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> Summary:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.structs import OffsetAndMetadata

        summary = Summary()
        topic = topic_name(self.settings, Topic.ALERTS)
        self.store.ensure_topic()
        stored = self.store.load()
        consumer = KafkaConsumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            **self.settings.kafka_client_options(),
        )
        try:
            deadline = time.monotonic() + 30
            while not (parts := consumer.partitions_for_topic(topic)):
                if time.monotonic() > deadline:
                    raise NotifierError(
                        f"the alerts topic {topic} does not exist: create it with "
                        "`rollout topics create` (or start the worker), or check "
                        "ROLLOUT_TOPIC_PREFIX"
                    )
                time.sleep(0.2)
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            committed: dict[int, int] = {}
            for tp in tps:
                offset = consumer.committed(tp)
                if offset is not None:
                    consumer.seek(tp, offset)
                elif tp.partition in stored.applied:
                    consumer.seek(tp, stored.applied[tp.partition] + 1)
                elif self.from_beginning:
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek_to_end(tp)
                committed[tp.partition] = consumer.position(tp)
            log.info(
                "notify.started",
                topic=topic,
                group=self.group_id,
                state_topic=self.store.topic,
                groups=len(stored.state.groups),
                positions=committed,
                receivers=sorted(self.sinks),
            )
            self.started = True
            while not self.stop_event.is_set():
                self.beat = time.monotonic()
                wait_ms = 500
                if (at := next_due(stored.state)) is not None:
                    wait_ms = int(max(0.0, min(0.5, at - self.clock())) * 1000)
                polled = consumer.poll(timeout_ms=wait_ms)
                now = self.clock()
                out: list[Notification] = []
                for _tp, records in sorted(polled.items(), key=lambda kv: kv[0].partition):
                    for record in records:
                        out += self._take(stored, record, now, summary)
                stored.state, ready = due(stored.state, now)
                out += ready
                finishing = once and not polled and self._caught_up(consumer, tps)
                if finishing:
                    stored.state, hurried = flush_pending(stored.state, now)
                    out += hurried
                if not self._deliver_all(out, summary):
                    log.warning("notify.interrupted", owed=len(out))
                    break  # nothing stored or committed: the owed notifications are sent on restart
                try:
                    written = self.store.save(stored)
                except StateStoreError as exc:
                    log.error("notify.state_not_saved", error=str(exc))
                    continue  # not committed either; tried again next pass
                if written:
                    log.debug("notify.state_saved", records=written)
                owed = unsettled(stored.state)
                offsets = {}
                for tp in tps:
                    position = consumer.position(tp)
                    offset = min(owed.get(tp.partition, position), position)
                    if offset != committed.get(tp.partition):
                        offsets[tp] = OffsetAndMetadata(offset, "", -1)
                if offsets:
                    consumer.commit(offsets)
                    committed.update({tp.partition: o.offset for tp, o in offsets.items()})
                    log.info("notify.committed", offsets=committed, owed=owed)
                if finishing:
                    break
        finally:
            self.started = False
            consumer.close()
            self.store.close()
        log.info(
            "notify.stopped",
            alerts=summary.alerts,
            sent=summary.sent,
            gave_up=summary.gave_up,
            skipped=summary.skipped,
        )
        return summary

    def _caught_up(self, consumer: Any, tps: list[Any]) -> bool:
        ends = consumer.end_offsets(tps)
        return all(consumer.position(tp) >= ends[tp] for tp in tps)

    def _take(
        self, stored: Stored, record: Any, now: float, summary: Summary
    ) -> list[Notification]:
        partition, offset = record.partition, record.offset
        if offset <= stored.applied.get(partition, -1):
            return []  # the stored state already includes it
        stored.applied[partition] = offset
        event = decode(record.value)
        if not isinstance(event, Envelope) or not isinstance(event.data, Alert):
            summary.skipped += 1
            reason = (
                getattr(event, "reason", None) or f"not an alert ({getattr(event, 'type', '?')})"
            )
            log.warning("notify.skipped", partition=partition, offset=offset, reason=reason)
            return []
        alert = event.data
        summary.alerts += 1
        log.info(
            "notify.alert",
            alert_id=alert.alert_id,
            dedup_key=alert.dedup_key,
            status=alert.status,
            severity=alert.severity.value,
            partition=partition,
            offset=offset,
        )
        stored.state, out = plan_notifications(
            stored.state, alert, self.config, now, mark=(partition, offset)
        )
        return out

    def _deliver_all(self, notifications: list[Notification], summary: Summary) -> bool:
        for n in notifications:
            receiver = self.config.receivers.get(n.receiver)
            sink = self.sinks.get(n.receiver)
            if receiver is None or sink is None:
                # a stored group whose receiver left the config: said, counted, dropped
                outcome = Outcome("gave_up", 0, f"receiver {n.receiver!r} is not in the config")
            else:

                def on_retry(
                    attempt: int, exc: SendError, pause: float, n: Notification = n
                ) -> None:
                    metrics.RETRIES.labels(n.receiver).inc()
                    self.beat = time.monotonic()  # a retrying delivery is alive
                    log.warning(
                        "notify.retry",
                        receiver=n.receiver,
                        notification=n.id,
                        attempt=attempt,
                        error=str(exc),
                        pause_s=round(pause, 2),
                    )

                outcome = deliver(
                    sink,
                    n,
                    receiver.retry,
                    on_retry=on_retry,
                    stopping=self.stop_event.is_set,
                )
            summary.outcomes.append((n.receiver, n.id, outcome))
            if outcome.result == "interrupted":
                return False
            if outcome.result == "delivered":
                summary.sent += 1
                metrics.SENT.labels(n.receiver).inc()
                log.info(
                    "notify.sent",
                    receiver=n.receiver,
                    notification=n.id,
                    status=n.status,
                    alerts=[a.dedup_key for a in n.alerts],
                    reason=n.reason,
                    attempts=outcome.attempts,
                )
            else:
                summary.gave_up += 1
                metrics.FAILED.labels(n.receiver).inc()
                log.error(
                    "notify.gave_up",
                    receiver=n.receiver,
                    notification=n.id,
                    status=n.status,
                    alerts=[
                        (a.dedup_key, a.status, a.annotations.get("summary", "")) for a in n.alerts
                    ],
                    reason=n.reason,
                    attempts=outcome.attempts,
                    error=outcome.error,
                )
        return True


def test_notification(receiver: str, now: float) -> Notification:
    """What `rollout notify test` sends: one firing info alert that says it is a test."""
    entry = Entry(
        dedup_key="rollout-notify/test",
        alert_id=f"test-{int(now)}",
        status="firing",
        severity="info",
        labels={
            "alertname": "notify.test",
            "kind": "notify.test",
            "severity": "info",
            "deployment": "rollout-notify",
            "subject": "rollout-notify test",
            "source": "test",
            "dedup_key": "rollout-notify/test",
        },
        annotations={"summary": f"a test notification to receiver {receiver}: nothing is wrong"},
        starts_at=now,
    )
    return Notification(
        receiver=receiver,
        group_id=f"{receiver}/test/{{}}",
        group_labels={"alertname": "notify.test"},
        status="firing",
        alerts=(entry,),
        reason="test: sent by `rollout notify test`",
        seq=int(now),
        at=now,
    )
