"""Grouping, dedup and timing: one notification per dedup key while it fires, a resolved
notice when it resolves, nothing for an alert that resolved before anyone was told, groups sent
after their wait and interval, repeats, and the marks the shell must not commit past."""

from __future__ import annotations

from controller.core.notify import (
    NotifyState,
    due,
    flush_pending,
    from_plain,
    merge,
    next_due,
    plan_notifications,
    to_plain,
    unsettled,
)
from tests.unit.core.notify.factories import EPOCH, make_alert, make_config, make_monitor_alert


def keys(notification: object) -> list[tuple[str, str]]:
    return [(a.dedup_key, a.status) for a in notification.alerts]  # type: ignore[attr-defined]


def test_a_firing_alert_is_notified_once_however_often_it_is_heard() -> None:
    config = make_config()
    state, first = plan_notifications(NotifyState(), make_alert(), config, EPOCH)
    state, again = plan_notifications(state, make_alert(alert_id="a-2"), config, EPOCH + 1)
    state, later = due(state, EPOCH + 400)

    assert [[("fraud-v2/errors", "firing")]] == [keys(n) for n in first]
    assert "new: fraud-v2/errors (critical)" == first[0].reason
    assert [] == again
    assert [] == later


def test_a_resolved_alert_that_was_notified_is_sent_resolved_after_the_group_interval() -> None:
    config = make_config()
    state, _ = plan_notifications(NotifyState(), make_alert(), config, EPOCH)
    resolved = make_alert(status="resolved", alert_id="a-r", seconds=60)
    state, at_once = plan_notifications(state, resolved, config, EPOCH + 60)
    state, after_interval = due(state, EPOCH + 300)

    assert [] == at_once
    assert [[("fraud-v2/errors", "resolved")]] == [keys(n) for n in after_interval]
    assert "resolved" == after_interval[0].status
    assert "resolved: fraud-v2/errors" == after_interval[0].reason
    assert {} == dict(state.groups)


def test_an_alert_resolved_within_the_group_wait_is_never_sent() -> None:
    config = make_config(defaults={"group_wait": "30s"})
    state, _ = plan_notifications(NotifyState(), make_alert(), config, EPOCH)
    resolved = make_alert(status="resolved", alert_id="a-r", seconds=10)
    state, _ = plan_notifications(state, resolved, config, EPOCH + 10)
    state, sent = due(state, EPOCH + 60)

    assert [] == sent
    assert {} == dict(state.groups)


def test_a_resolved_alert_nobody_heard_of_is_ignored() -> None:
    state, sent = plan_notifications(
        NotifyState(), make_alert(status="resolved"), make_config(), EPOCH
    )

    assert ([], {}) == (sent, dict(state.groups))


def test_a_group_waits_for_more_alerts_and_sends_them_together() -> None:
    config = make_config(defaults={"group_wait": "30s", "group_by": ["model"]})
    state, a = plan_notifications(NotifyState(), make_alert(), config, EPOCH)
    latency = make_alert(alert_id="a-lat", kind="guardrail.latency", dedup_key="fraud-v2/latency")
    state, b = plan_notifications(state, latency, config, EPOCH + 5)

    assert ([], []) == (a, b)
    assert EPOCH + 30 == next_due(state)
    state, sent = due(state, EPOCH + 30)
    assert [[("fraud-v2/errors", "firing"), ("fraud-v2/latency", "firing")]] == [
        keys(n) for n in sent
    ]
    assert {"model": "fraud"} == dict(sent[0].group_labels)


def test_a_new_alert_in_a_sent_group_waits_for_the_group_interval_and_lists_all_firing() -> None:
    config = make_config(defaults={"group_by": ["model"], "group_interval": "5m"})
    state, _ = plan_notifications(NotifyState(), make_alert(), config, EPOCH)
    latency = make_alert(alert_id="a-lat", kind="guardrail.latency", dedup_key="fraud-v2/latency")
    state, early = plan_notifications(state, latency, config, EPOCH + 10)
    state, sent = due(state, EPOCH + 300)

    assert [] == early
    assert [[("fraud-v2/errors", "firing"), ("fraud-v2/latency", "firing")]] == [
        keys(n) for n in sent
    ]
    assert "new: fraud-v2/latency (critical)" == sent[0].reason


def test_a_firing_group_is_sent_again_after_the_repeat_interval() -> None:
    config = make_config(defaults={"repeat_interval": "1h"})
    state, _ = plan_notifications(NotifyState(), make_alert(), config, EPOCH)

    assert EPOCH + 3600 == next_due(state)
    state, repeated = due(state, EPOCH + 3600)
    assert [2] == [n.seq for n in repeated]
    assert repeated[0].reason.startswith("repeat: still firing 3600 s")


def test_without_a_repeat_interval_a_firing_group_is_never_sent_again() -> None:
    config = make_config(defaults={"repeat_interval": "never"})
    state, _ = plan_notifications(NotifyState(), make_alert(), config, EPOCH)

    assert None is next_due(state)


def test_an_escalation_under_the_same_dedup_key_is_news() -> None:
    config = make_config()
    state, _ = plan_notifications(NotifyState(), make_alert(severity="warning"), config, EPOCH)
    state, _ = plan_notifications(state, make_alert(alert_id="a-crit"), config, EPOCH + 1)
    state, sent = due(state, EPOCH + 300)

    assert ["escalated: fraud-v2/errors (warning -> critical)"] == [n.reason for n in sent]


def test_an_alert_routed_with_continue_is_sent_to_each_receiver() -> None:
    routes = [
        {"match": {"severity_at_least": "critical"}, "receiver": "pager", "continue": True},
        {"match": {}, "receiver": "chat"},
    ]
    _, sent = plan_notifications(NotifyState(), make_alert(), make_config(routes=routes), EPOCH)

    assert ["chat", "pager"] == sorted(n.receiver for n in sent)


def test_a_receiver_that_takes_no_resolved_notices_gets_none() -> None:
    receivers = [{"name": "hook", "webhook": {"url": "http://x/"}, "send_resolved": False}]
    config = make_config(receivers=receivers)
    state, _ = plan_notifications(NotifyState(), make_alert(), config, EPOCH)
    state, _ = plan_notifications(state, make_alert(status="resolved", alert_id="r"), config, EPOCH)
    state, sent = due(state, EPOCH + 600)

    assert [] == sent


def test_monitor_alerts_group_by_model() -> None:
    config = make_config(defaults={"group_wait": "10s", "group_by": ["model"]})
    state, _ = plan_notifications(NotifyState(), make_monitor_alert("ranker"), config, EPOCH)
    drift = make_monitor_alert("ranker", "drift", alert_id="d")
    state, _ = plan_notifications(state, drift, config, EPOCH)
    state, _ = plan_notifications(state, make_monitor_alert("fraud", alert_id="f"), config, EPOCH)
    state, sent = due(state, EPOCH + 10)

    assert [["fraud/monitor.latency"], ["ranker/monitor.drift", "ranker/monitor.latency"]] == [
        [a.dedup_key for a in n.alerts] for n in sent
    ]


def test_an_unsent_change_holds_its_mark_until_the_group_is_sent() -> None:
    config = make_config(defaults={"group_wait": "30s"})
    state, _ = plan_notifications(NotifyState(), make_alert(), config, EPOCH, mark=(0, 41))
    monitor = make_monitor_alert(alert_id="m")
    state, _ = plan_notifications(state, monitor, config, EPOCH, mark=(0, 42))

    assert {0: 41} == unsettled(state)
    state, sent = due(state, EPOCH + 30)
    assert 2 == len(sent)
    assert {} == unsettled(state)


def test_a_redelivered_alert_leaves_nothing_unsettled() -> None:
    config = make_config()
    state, _ = plan_notifications(NotifyState(), make_alert(), config, EPOCH, mark=(0, 1))
    state, sent = plan_notifications(state, make_alert(), config, EPOCH + 1, mark=(0, 1))

    assert ([], {}) == (sent, unsettled(state))


def test_flush_pending_sends_waiting_groups_at_once() -> None:
    config = make_config(defaults={"group_wait": "30s"})
    state, _ = plan_notifications(NotifyState(), make_alert(), config, EPOCH)
    state, sent = flush_pending(state, EPOCH + 1)

    assert 1 == len(sent)


def test_the_state_survives_its_plain_form_and_merges_by_progress() -> None:
    config = make_config(defaults={"group_wait": "30s"})
    waiting, _ = plan_notifications(NotifyState(), make_alert(), config, EPOCH, mark=(2, 7))
    sent, _ = due(waiting, EPOCH + 30)

    assert waiting == from_plain(to_plain(waiting))
    assert sent == from_plain(to_plain(sent))
    assert sent == merge(waiting, sent) == merge(sent, waiting)
