"""The notifier's Prometheus counters, by receiver, in the process' default registry (the
notifier's `--metrics-port` serves it with the probes: controller.observability.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

SENT = Counter("rollout_notifications_sent", "Notifications delivered, by receiver", ["receiver"])
FAILED = Counter(
    "rollout_notifications_failed",
    "Notifications given up on (retries exhausted or refused), by receiver",
    ["receiver"],
)
RETRIES = Counter(
    "rollout_notification_retries", "Delivery attempts retried, by receiver", ["receiver"]
)
