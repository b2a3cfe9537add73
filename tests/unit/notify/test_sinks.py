"""What each sink sends, as plain bodies: the Alertmanager webhook v4 fields, Slack blocks,
PagerDuty events for the alerts that changed."""

from __future__ import annotations

from controller.core.notify import NotifyState, due, plan_notifications
from controller.notify.sinks import pagerduty_events, slack_body, webhook_body
from tests.unit.core.notify.factories import EPOCH, make_alert, make_config


def test_the_webhook_body_is_alertmanagers_version_4() -> None:
    _, [n] = plan_notifications(NotifyState(), make_alert(), make_config(), EPOCH)

    body = webhook_body(n, "https://rollouts.example")

    assert {
        "version",
        "groupKey",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    } <= set(body)
    assert "critical" == body["commonLabels"]["severity"]
    assert "2026-11-25T12:00:00Z" == body["alerts"][0]["startsAt"]


def test_pagerduty_resolves_only_what_resolved() -> None:
    config = make_config(defaults={"group_by": ["model"]})
    latency = make_alert(alert_id="l", kind="guardrail.latency", dedup_key="fraud-v2/latency")
    state, _ = plan_notifications(NotifyState(), make_alert(), config, EPOCH)
    state, _ = plan_notifications(state, latency, config, EPOCH)
    state, _ = due(state, EPOCH + 300)
    state, _ = plan_notifications(state, make_alert(status="resolved"), config, EPOCH + 400)
    _, [n] = due(state, EPOCH + 700)

    events = pagerduty_events(n, {"routing_key": "rk"})

    assert [("resolve", "fraud-v2/errors")] == [(e["event_action"], e["dedup_key"]) for e in events]


def test_slack_has_a_text_fallback_and_blocks() -> None:
    _, [n] = plan_notifications(NotifyState(), make_alert(), make_config(), EPOCH)

    body = slack_body(n, {"channel": "#ml"})

    assert "[FIRING:1] model=fraud kind=guardrail.error_rate" == body["text"]
    assert ["header", "context", "section"] == [b["type"] for b in body["blocks"]]
