"""Alerts and configs for the notifier's core tests: `make_alert(status="resolved", ...)`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import schemas as s
from controller.core.notify import NotifyConfig
from tests.factories import T0

EPOCH = T0.timestamp()


def make_alert(**overrides: Any) -> s.Alert:
    """A rollout's critical alert on fraud-v2's error rate, firing at T0 (+ `seconds`)."""
    seconds = overrides.pop("seconds", 0.0)
    fields: dict[str, Any] = {
        "alert_id": f"a-{overrides.get('status', 'firing')}-{seconds:g}",
        "status": "firing",
        "severity": s.Severity.CRITICAL,
        "kind": "guardrail.error_rate",
        "deployment_id": "fraud-v2",
        "subject": "fraud v2",
        "summary": "canary error rate 4.1% vs baseline 0.9%",
        "evidence": {"canary": 0.041, "baseline": 0.009},
        "runbook_url": "https://runbooks.example/errors",
        "dedup_key": "fraud-v2/errors",
        "at": T0 + timedelta(seconds=seconds),
    }
    fields.update(overrides)
    return s.Alert(**fields)


def make_monitor_alert(model: str = "ranker", rule: str = "latency", **overrides: Any) -> s.Alert:
    """A model monitor's alert: keyed by the model, as controller.core.monitor raises it."""
    fields: dict[str, Any] = {
        "kind": f"monitor.{rule}",
        "deployment_id": model,
        "subject": f"{model}@v6",
        "severity": s.Severity.WARNING,
        "dedup_key": f"{model}/monitor.{rule}",
        "summary": f"{model}: {rule} above its reference since 12:00",
        "runbook_url": None,
    }
    fields.update(overrides)
    return make_alert(**fields)


def make_config(**overrides: Any) -> NotifyConfig:
    """Three receivers, `hook` the default; no group wait, a 5 min group interval, a 1 h repeat
    (`defaults` overrides only what it names); `routes` and `receivers` replace."""
    data: dict[str, Any] = {
        "receivers": [
            {"name": "hook", "webhook": {"url": "http://hook.invalid/"}},
            {"name": "pager", "pagerduty": {"routing_key": "rk"}},
            {"name": "chat", "slack": {"url": "http://chat.invalid/"}},
        ],
        "default_receiver": "hook",
        "defaults": {
            "group_by": ["model", "kind"],
            "group_wait": 0,
            "group_interval": "5m",
            "repeat_interval": "1h",
        },
    }
    data["defaults"].update(overrides.pop("defaults", {}))
    data.update(overrides)
    return NotifyConfig.from_mapping(data)
