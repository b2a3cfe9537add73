"""Where notifications go: a generic webhook (Alertmanager's webhook JSON, version 4), a Slack
incoming webhook, PagerDuty's Events API v2, and email over SMTP.

Each sink turns a Notification into what its receiver expects (the `*_body` functions are
plain, for tests) and sends it once; `Delivery` (controller/notify/delivery.py) retries. A
failure raises `SendError` saying whether trying again can help and, when the receiver said so,
after how long (Retry-After). Secret option values (URLs, routing keys, passwords) never appear
in an error message or a log line.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

from controller.core.notify import Entry, Notification, Receiver, iso
from controller.errors import RolloutError

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
USER_AGENT = "rollout-notify/1"
SLACK_MAX_BLOCKS = 50


class SendError(RolloutError):
    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Sink(Protocol):
    def send(self, notification: Notification) -> None:
        """Deliver once; raise SendError."""


# ---- bodies -----------------------------------------------------------------------------------


def _common(alerts: tuple[Entry, ...], field: str) -> dict[str, str]:
    maps = [getattr(a, field) for a in alerts]
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def webhook_body(
    notification: Notification, external_url: str = "", max_alerts: int = 0
) -> dict[str, Any]:
    """Alertmanager's webhook payload, version 4, plus `notificationId` (the same for a
    redelivery of the same notification: a receiver can drop repeats by it)."""
    alerts = notification.alerts
    truncated = 0
    if max_alerts and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    return {
        "version": "4",
        "groupKey": notification.group_id,
        "truncatedAlerts": truncated,
        "status": notification.status,
        "receiver": notification.receiver,
        "groupLabels": dict(notification.group_labels),
        "commonLabels": _common(notification.alerts, "labels"),
        "commonAnnotations": _common(notification.alerts, "annotations"),
        "externalURL": external_url,
        "notificationId": notification.id,
        "reason": notification.reason,
        "alerts": [
            {
                "status": a.status,
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "startsAt": iso(a.starts_at),
                "endsAt": iso(a.ends_at),
                "generatorURL": a.annotations.get("runbook_url", external_url),
                "fingerprint": a.fingerprint,
            }
            for a in alerts
        ],
    }


def title(notification: Notification) -> str:
    firing, resolved = len(notification.firing()), len(notification.resolved())
    head = f"[FIRING:{firing}]" if firing else f"[RESOLVED:{resolved}]"
    groups = " ".join(f"{k}={v}" for k, v in notification.group_labels.items() if v)
    return f"{head} {groups}".strip()


def _line(a: Entry) -> str:
    mark = "FIRING" if a.status == "firing" else "RESOLVED"
    summary = a.annotations.get("summary", "")
    return f"[{mark}] {a.severity} {a.labels.get('kind', '')} {a.dedup_key}: {summary}"


def slack_body(notification: Notification, options: Mapping[str, Any]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title(notification)[:150]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": notification.reason[:3000]}]},
    ]
    for a in notification.alerts[: SLACK_MAX_BLOCKS - 3]:
        icon = ":red_circle:" if a.status == "firing" else ":large_green_circle:"
        text = (
            f"{icon} *{a.severity}* `{a.labels.get('kind', '')}` {a.labels.get('subject', '')}\n"
            f"{a.annotations.get('summary', '')}"
        )
        if runbook := a.annotations.get("runbook_url"):
            text += f"\n<{runbook}|runbook>"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}})
    if len(notification.alerts) > SLACK_MAX_BLOCKS - 3:
        more = len(notification.alerts) - (SLACK_MAX_BLOCKS - 3)
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"and {more} more"}]}
        )
    body: dict[str, Any] = {"text": title(notification), "blocks": blocks}
    for key in ("channel", "username", "icon_emoji"):
        if options.get(key):
            body[key] = options[key]
    return body


PD_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


def pagerduty_dedup_key(dedup_key: str) -> str:
    """PagerDuty takes at most 255 characters; a longer key keeps its start and a digest."""
    if len(dedup_key) <= 255:
        return dedup_key
    return dedup_key[:230] + "~" + hashlib.sha256(dedup_key.encode()).hexdigest()[:24]


def pagerduty_events(
    notification: Notification, options: Mapping[str, Any], external_url: str = ""
) -> list[dict[str, Any]]:
    """One Events API v2 event an alert that changed: trigger for one newly firing (or
    escalated), resolve for one resolved; a repeat triggers every firing alert again (PagerDuty
    folds a trigger into the open incident of its dedup_key)."""
    changed = [a for a in notification.alerts if a.is_news() or a.status == "resolved"]
    events = []
    for a in changed or notification.firing():
        event: dict[str, Any] = {
            "routing_key": options["routing_key"],
            "dedup_key": pagerduty_dedup_key(a.dedup_key),
            "event_action": "trigger" if a.status == "firing" else "resolve",
        }
        if a.status == "firing":
            event["payload"] = {
                "summary": a.annotations.get("summary", a.dedup_key)[:1024],
                "source": a.labels.get("deployment", "rollout-controller"),
                "severity": PD_SEVERITY.get(a.severity, "error"),
                "timestamp": iso(a.starts_at),
                "component": a.labels.get("model", a.labels.get("subject", "")),
                "group": a.labels.get("source", ""),
                "class": a.labels.get("kind", ""),
                "custom_details": {
                    "labels": dict(a.labels),
                    "annotations": dict(a.annotations),
                    "reason": notification.reason,
                },
            }
            event["client"] = options.get("client", "rollout-controller")
            if options.get("client_url") or external_url:
                event["client_url"] = options.get("client_url") or external_url
            if runbook := a.annotations.get("runbook_url"):
                event["links"] = [{"href": runbook, "text": "runbook"}]
        events.append(event)
    return events


def email_message(notification: Notification, options: Mapping[str, Any]) -> EmailMessage:
    message = EmailMessage()
    prefix = options.get("subject_prefix", "")
    message["Subject"] = f"{prefix}{title(notification)}"
    message["From"] = options["from"]
    to = options["to"]
    message["To"] = ", ".join(to) if isinstance(to, list) else str(to)
    message["Date"] = email.utils.formatdate(notification.at, localtime=False)
    message["Message-ID"] = email.utils.make_msgid(
        idstring=hashlib.sha256(notification.id.encode()).hexdigest()[:16]
    )
    lines = [title(notification), "", f"Why: {notification.reason}", ""]
    for a in notification.alerts:
        lines.append(_line(a))
        lines.append(
            f"  since {iso(a.starts_at)}" + (f", resolved {iso(a.ends_at)}" if a.ends_at else "")
        )
        if runbook := a.annotations.get("runbook_url"):
            lines.append(f"  runbook: {runbook}")
        if evidence := a.annotations.get("evidence"):
            lines.append(f"  evidence: {evidence}")
        lines.append("")
    lines.append(f"Notification {notification.id}")
    message.set_content("\n".join(lines))
    return message


# ---- sending ----------------------------------------------------------------------------------


def post_json(
    url: str, body: Any, timeout_s: float, headers: Mapping[str, str] | None = None
) -> None:
    """POST JSON; a 2xx is delivered, 429 and 5xx can be retried (with Retry-After when given),
    another 4xx cannot. The URL is never in the error (it may hold a secret)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        retryable = exc.code == 429 or exc.code >= 500
        raise SendError(
            f"HTTP {exc.code} {exc.reason}",
            retryable=retryable,
            retry_after_s=parse_retry_after(exc.headers.get("Retry-After")),
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SendError(
            f"connection failed: {type(reason).__name__}: {reason}", retryable=True
        ) from None


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    return max(0.0, when.timestamp() - time.time())


@dataclass
class WebhookSink:
    options: Mapping[str, Any]
    external_url: str = ""

    def send(self, notification: Notification) -> None:
        body = webhook_body(notification, self.external_url, int(self.options.get("max_alerts", 0)))
        post_json(
            self.options["url"],
            body,
            float(self.options.get("timeout", 10)),
            self.options.get("headers"),
        )


@dataclass
class SlackSink:
    options: Mapping[str, Any]

    def send(self, notification: Notification) -> None:
        post_json(
            self.options["url"],
            slack_body(notification, self.options),
            float(self.options.get("timeout", 10)),
        )


@dataclass
class PagerDutySink:
    options: Mapping[str, Any]
    external_url: str = ""

    def send(self, notification: Notification) -> None:
        url = self.options.get("url") or PAGERDUTY_URL
        for event in pagerduty_events(notification, self.options, self.external_url):
            # each event is idempotent by dedup_key: a retry of the whole list is harmless
            post_json(url, event, float(self.options.get("timeout", 10)))


@dataclass
class EmailSink:
    options: Mapping[str, Any]

    def send(self, notification: Notification) -> None:
        o = self.options
        tls = str(o.get("tls", "starttls")).lower()
        port = int(o.get("port", 465 if tls == "ssl" else 587 if tls == "starttls" else 25))
        timeout = float(o.get("timeout", 10))
        message = email_message(notification, o)
        try:
            if tls == "ssl":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    o["host"], port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                client = smtplib.SMTP(o["host"], port, timeout=timeout)
            with client:
                if tls == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if o.get("username"):
                    client.login(str(o["username"]), str(o.get("password", "")))
                client.send_message(message)
        except smtplib.SMTPResponseException as exc:
            raise SendError(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", retryable=400 <= exc.smtp_code < 500
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise SendError(
                f"SMTP refused the recipients {sorted(exc.recipients)}", retryable=False
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise SendError(f"SMTP failed: {type(exc).__name__}: {exc}", retryable=True) from None


def build_sink(receiver: Receiver, external_url: str = "") -> Sink:
    options = receiver.options
    if receiver.kind == "webhook":
        return WebhookSink(options, external_url)
    if receiver.kind == "slack":
        return SlackSink(options)
    if receiver.kind == "pagerduty":
        return PagerDutySink(options, external_url)
    if receiver.kind == "email":
        return EmailSink(options)
    raise RolloutError(f"unknown sink kind {receiver.kind!r}")  # the config refuses it first
