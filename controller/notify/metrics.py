"""The notifier's Prometheus counters, by receiver. Without prometheus-client installed they
are null counters (the notifier runs the same, it only counts nothing)."""

from __future__ import annotations

from typing import Any


class _NullCounter:
    def labels(self, *_: Any, **__: Any) -> _NullCounter:
        return self

    def inc(self, amount: float = 1.0) -> None:
        pass


try:
    from prometheus_client import Counter

    SENT: Any = Counter(
        "rollout_notifications_sent", "Notifications delivered, by receiver", ["receiver"]
    )
    FAILED: Any = Counter(
        "rollout_notifications_failed",
        "Notifications given up on (retries exhausted or refused), by receiver",
        ["receiver"],
    )
    RETRIES: Any = Counter(
        "rollout_notification_retries", "Delivery attempts retried, by receiver", ["receiver"]
    )
except ImportError:  # prometheus-client is optional for the notifier
    SENT = FAILED = RETRIES = _NullCounter()


def start_metrics_server(port: int) -> None:
    from prometheus_client import start_http_server

    start_http_server(port)
