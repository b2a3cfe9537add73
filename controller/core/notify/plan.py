"""Grouping, deduplication and timing of notifications: pure functions of plain state.

    plan_notifications(state, alert, config, now, mark) -> (state, [Notification])
    due(state, now) -> (state, [Notification])       # the groups whose time has come
    next_due(state) -> float | None                  # when `due` could next send anything
    unsettled(state) -> {partition: offset}          # the inputs whose notification is owed

Semantics (Alertmanager's, fed by our alerts topic):

- An alert goes to the routes `NotifyConfig.route` picks; in each it joins the group of its
  receiver, route and `group_by` label values. A new group is sent `group_wait` after its first
  alert; a change to a group already sent goes out `group_interval` after its last
  notification; a group with firing alerts and nothing new is sent again `repeat_interval`
  after its last notification (never, when that is None).
- One notification per dedup key while it fires: the worker's firing alert sent again under
  the same dedup key (a redelivery, a re-fire) changes nothing, unless its severity rose above
  the one last notified (an escalation is news).
- A resolved alert that was notified firing is sent resolved (when its receiver sends
  resolved notices) and then leaves the group; one that was never notified (it resolved
  within the group's wait) leaves silently; a resolved alert no group holds is ignored.
- A notification lists every alert of the group still firing, and those resolved since the
  last one, with its reason ("new: ...; resolved: ...", "repeat: ...").
- `mark` is where the shell read the alert (partition, offset). A group remembers the smallest
  mark of each partition among the changes it has not sent yet; `unsettled` is what the shell
  must not commit past, and a notification returned here settles its group's marks (the shell
  commits only after delivering every notification it was given).

The state is plain data (`to_plain` / `from_plain`, one entry a group, so it can be stored
entry by entry and compacted), and two states merge (`merge`) by keeping, for each group, the
one that has sent more notifications.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from controller.core.notify.config import SEVERITY_ORDER, NotifyConfig, Route, Timing
from controller.core.notify.labels import annotations_of, fingerprint, labels_of
from schemas import Alert
from schemas.events import Severity

Status = Literal["firing", "resolved"]
Mark = tuple[int, int]


@dataclass(frozen=True)
class Entry:
    """One alert in one group, as last heard of."""

    dedup_key: str
    alert_id: str
    status: Status
    severity: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    ends_at: float | None = None
    #: the severity it was last notified firing with; "" if never notified
    notified: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.dedup_key)

    def is_news(self) -> bool:
        """Firing and not notified yet, or notified at a lower severity."""
        if self.status != "firing":
            return False
        if not self.notified:
            return True
        return _rank(self.severity) > _rank(self.notified)


@dataclass(frozen=True)
class Group:
    id: str
    receiver: str
    route: str
    labels: Mapping[str, str]
    timing: Timing
    send_resolved: bool = True
    entries: Mapping[str, Entry] = field(default_factory=dict)
    next_at: float | None = None
    last_sent_at: float | None = None
    seq: int = 0
    marks: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class NotifyState:
    groups: Mapping[str, Group] = field(default_factory=dict)


@dataclass(frozen=True)
class Notification:
    """What one receiver is told about one group, and why."""

    receiver: str
    group_id: str
    group_labels: Mapping[str, str]
    status: Status
    alerts: tuple[Entry, ...]
    reason: str
    seq: int
    at: float

    @property
    def id(self) -> str:
        """Deterministic: the group and its notification count (for receivers that dedup)."""
        return f"{self.group_id}#{self.seq}"

    def firing(self) -> tuple[Entry, ...]:
        return tuple(a for a in self.alerts if a.status == "firing")

    def resolved(self) -> tuple[Entry, ...]:
        return tuple(a for a in self.alerts if a.status == "resolved")


# ---- planning ---------------------------------------------------------------------------------


def plan_notifications(
    state: NotifyState,
    alert: Alert,
    config: NotifyConfig,
    now: float,
    mark: Mark | None = None,
) -> tuple[NotifyState, list[Notification]]:
    """Take one alert in, then send what is due at `now` (a group with no wait at once)."""
    state = apply_alert(state, alert, config, now, mark)
    return due(state, now)


def apply_alert(
    state: NotifyState,
    alert: Alert,
    config: NotifyConfig,
    now: float,
    mark: Mark | None = None,
) -> NotifyState:
    groups = dict(state.groups)
    at = alert.at.timestamp()
    if alert.status == "firing":
        labels = labels_of(alert)
        for route_id, route in config.route(labels):
            receiver = config.receivers.get(route.receiver)
            send_resolved = receiver.send_resolved if receiver is not None else True
            group = groups.get(gid := group_id(route_id, route, labels)) or Group(
                id=gid,
                receiver=route.receiver,
                route=route_id,
                labels=_group_labels(route, labels),
                timing=route.timing,
                send_resolved=send_resolved,
                next_at=now + route.timing.group_wait_s,
            )
            old = group.entries.get(alert.dedup_key)
            entry = Entry(
                dedup_key=alert.dedup_key,
                alert_id=alert.alert_id,
                status="firing",
                severity=alert.severity.value,
                labels=labels,
                annotations=annotations_of(alert),
                starts_at=old.starts_at if old else at,
                notified=old.notified if old else "",
            )
            group = replace(group, entries={**group.entries, alert.dedup_key: entry})
            if entry.is_news() and (
                old is None or old.status != "firing" or _rank(entry.severity) > _rank(old.severity)
            ):
                group = _changed(group, now, mark)
            groups[gid] = group
    else:
        for gid, group in list(groups.items()):
            old = group.entries.get(alert.dedup_key)
            if old is None or old.status != "firing":
                continue
            entries = dict(group.entries)
            if not old.notified or not group.send_resolved:
                del entries[alert.dedup_key]  # never notified, or nobody wants resolved notices
                group = replace(group, entries=entries)
            else:
                entries[alert.dedup_key] = replace(
                    old,
                    status="resolved",
                    alert_id=alert.alert_id,
                    annotations=annotations_of(alert),
                    ends_at=at,
                )
                group = _changed(replace(group, entries=entries), now, mark)
            if not group.entries and group.last_sent_at is None:
                del groups[gid]
            else:
                groups[gid] = group
    return NotifyState(groups)


def due(state: NotifyState, now: float) -> tuple[NotifyState, list[Notification]]:
    """Send every group whose time has come, in the order of their ids."""
    groups = dict(state.groups)
    out: list[Notification] = []
    for gid in sorted(groups):
        group = groups[gid]
        if group.next_at is None or group.next_at > now:
            continue
        flushed, notification = _flush(group, now)
        if flushed is None:
            del groups[gid]
        else:
            groups[gid] = flushed
        if notification is not None:
            out.append(notification)
    return NotifyState(groups), out


def flush_pending(state: NotifyState, now: float) -> tuple[NotifyState, list[Notification]]:
    """Send every group with unsent changes now, whatever its wait (`rollout notify --once`)."""
    hurried = {
        gid: replace(g, next_at=now) if g.marks or _has_news(g) else g
        for gid, g in state.groups.items()
    }
    return due(NotifyState(hurried), now)


def next_due(state: NotifyState) -> float | None:
    times = [g.next_at for g in state.groups.values() if g.next_at is not None]
    return min(times) if times else None


def unsettled(state: NotifyState) -> dict[int, int]:
    """For each partition, the smallest offset whose notification has not been sent yet."""
    out: dict[int, int] = {}
    for group in state.groups.values():
        for partition, offset in group.marks.items():
            out[partition] = min(offset, out.get(partition, offset))
    return out


def group_id(route_id: str, route: Route, labels: Mapping[str, str]) -> str:
    values = ",".join(f"{k}={v}" for k, v in _group_labels(route, labels).items())
    return f"{route.receiver}/{route_id}/{{{values}}}"


# ---- internals --------------------------------------------------------------------------------


def _rank(severity: str) -> int:
    return SEVERITY_ORDER.index(Severity(severity))


def _group_labels(route: Route, labels: Mapping[str, str]) -> dict[str, str]:
    if "..." in route.timing.group_by:
        return {"dedup_key": labels["dedup_key"]}
    return {k: labels.get(k, "") for k in route.timing.group_by}


def _has_news(group: Group) -> bool:
    return any(
        e.is_news() or (e.status == "resolved" and e.notified) for e in group.entries.values()
    )


def _changed(group: Group, now: float, mark: Mark | None) -> Group:
    marks = dict(group.marks)
    if mark is not None:
        partition, offset = mark
        marks[partition] = min(offset, marks.get(partition, offset))
    if group.last_sent_at is None:
        next_at = group.next_at if group.next_at is not None else now
    else:
        soonest = max(now, group.last_sent_at + group.timing.group_interval_s)
        next_at = soonest if group.next_at is None else min(group.next_at, soonest)
    return replace(group, marks=marks, next_at=next_at)


def _flush(group: Group, now: float) -> tuple[Group | None, Notification | None]:
    entries = sorted(group.entries.values(), key=lambda e: e.dedup_key)
    news = [e for e in entries if e.is_news()]
    resolved = [e for e in entries if e.status == "resolved" and e.notified]
    firing = [e for e in entries if e.status == "firing"]
    repeat = group.timing.repeat_interval_s
    repeating = (
        not news
        and not resolved
        and bool(firing)
        and repeat is not None
        and group.last_sent_at is not None
        and now >= group.last_sent_at + repeat
    )
    notification = None
    seq = group.seq
    last_sent_at = group.last_sent_at
    if news or resolved or repeating:
        seq += 1
        last_sent_at = now
        notification = Notification(
            receiver=group.receiver,
            group_id=group.id,
            group_labels=group.labels,
            status="firing" if firing else "resolved",
            alerts=tuple(firing + resolved),
            reason=_reason(news, resolved, firing, repeating, group, now),
            seq=seq,
            at=now,
        )
        kept = {e.dedup_key: replace(e, notified=e.severity) for e in firing}
    else:
        kept = {e.dedup_key: e for e in firing}
    if not kept:
        return None, notification
    next_at = None
    if repeat is not None and last_sent_at is not None:
        next_at = last_sent_at + repeat
    return (
        replace(group, entries=kept, next_at=next_at, last_sent_at=last_sent_at, seq=seq, marks={}),
        notification,
    )


def _reason(
    news: list[Entry],
    resolved: list[Entry],
    firing: list[Entry],
    repeating: bool,
    group: Group,
    now: float,
) -> str:
    if repeating:
        since = now - (group.last_sent_at or now)
        keys = ", ".join(e.dedup_key for e in firing)
        return f"repeat: still firing {since:.0f} s after the last notification: {keys}"
    parts = []
    escalated = [e for e in news if e.notified]
    new = [e for e in news if not e.notified]
    if new:
        parts.append("new: " + ", ".join(f"{e.dedup_key} ({e.severity})" for e in new))
    if escalated:
        parts.append(
            "escalated: "
            + ", ".join(f"{e.dedup_key} ({e.notified} -> {e.severity})" for e in escalated)
        )
    if resolved:
        parts.append("resolved: " + ", ".join(e.dedup_key for e in resolved))
    return "; ".join(parts)


# ---- plain data -------------------------------------------------------------------------------


def group_to_plain(group: Group) -> dict[str, Any]:
    return {
        "id": group.id,
        "receiver": group.receiver,
        "route": group.route,
        "labels": dict(group.labels),
        "timing": {
            "group_by": list(group.timing.group_by),
            "group_wait_s": group.timing.group_wait_s,
            "group_interval_s": group.timing.group_interval_s,
            "repeat_interval_s": group.timing.repeat_interval_s,
        },
        "send_resolved": group.send_resolved,
        "entries": {
            k: {
                "dedup_key": e.dedup_key,
                "alert_id": e.alert_id,
                "status": e.status,
                "severity": e.severity,
                "labels": dict(e.labels),
                "annotations": dict(e.annotations),
                "starts_at": e.starts_at,
                "ends_at": e.ends_at,
                "notified": e.notified,
            }
            for k, e in group.entries.items()
        },
        "next_at": group.next_at,
        "last_sent_at": group.last_sent_at,
        "seq": group.seq,
        "marks": {str(p): o for p, o in group.marks.items()},
    }


def group_from_plain(data: Mapping[str, Any]) -> Group:
    t = data["timing"]
    return Group(
        id=data["id"],
        receiver=data["receiver"],
        route=data["route"],
        labels=dict(data["labels"]),
        timing=Timing(
            group_by=tuple(t["group_by"]),
            group_wait_s=t["group_wait_s"],
            group_interval_s=t["group_interval_s"],
            repeat_interval_s=t["repeat_interval_s"],
        ),
        send_resolved=data["send_resolved"],
        entries={
            k: Entry(
                dedup_key=e["dedup_key"],
                alert_id=e["alert_id"],
                status=e["status"],
                severity=e["severity"],
                labels=dict(e["labels"]),
                annotations=dict(e["annotations"]),
                starts_at=e["starts_at"],
                ends_at=e["ends_at"],
                notified=e["notified"],
            )
            for k, e in data["entries"].items()
        },
        next_at=data["next_at"],
        last_sent_at=data["last_sent_at"],
        seq=data["seq"],
        marks={int(p): o for p, o in data["marks"].items()},
    )


def to_plain(state: NotifyState) -> dict[str, dict[str, Any]]:
    """One plain entry per group, by group id: what the shell stores (a key a group)."""
    return {gid: group_to_plain(g) for gid, g in state.groups.items()}


def from_plain(data: Mapping[str, Mapping[str, Any]]) -> NotifyState:
    return NotifyState({gid: group_from_plain(g) for gid, g in data.items()})


def merge(a: NotifyState, b: NotifyState) -> NotifyState:
    """Both states' groups; for a group in both, the one that sent more notifications (on a tie,
    the one whose alerts were heard of more recently, then `b`)."""
    groups = dict(a.groups)
    for gid, group in b.groups.items():
        mine = groups.get(gid)
        if mine is None or _progress(group) >= _progress(mine):
            groups[gid] = group
    return NotifyState(groups)


def _progress(group: Group) -> tuple[int, float]:
    heard = max(
        (e.ends_at if e.ends_at is not None else e.starts_at for e in group.entries.values()),
        default=0.0,
    )
    return group.seq, heard


def iso(ts: float | None) -> str:
    """RFC 3339 in UTC; Alertmanager's zero time for None."""
    if ts is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
