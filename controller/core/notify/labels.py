"""What an alert is called for routing and grouping: its labels and annotations.

The worker's alerts come from three places, each keyed its own way (schemas.Alert):

- a rollout's: `deployment_id` is the deployment, `subject` is "MODEL VERSION", the dedup key
  `DEPLOYMENT/RULE`;
- a model monitor's: `kind` starts with `monitor.`, `deployment_id` is the model, `subject`
  "MODEL@VERSION", the dedup key `MODEL/monitor.RULE`;
- a pipeline's or a quota pool's: `kind` starts with `pipeline.` or `quota.`, `deployment_id`
  is the pipeline or the pool, `subject` the pipeline (or "POOL/PIPELINE").

`labels_of` gives every alert the same label names, so a route can say `models: [fraud*]`
whatever raised the alert.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from schemas import Alert

_SOURCES = ("monitor", "pipeline", "quota")
MAX_EVIDENCE_CHARS = 2000


def source_of(alert: Alert) -> str:
    """rollout, monitor, pipeline or quota: what raised the alert."""
    prefix = alert.kind.split(".", 1)[0]
    return prefix if prefix in _SOURCES and "." in alert.kind else "rollout"


def model_of(alert: Alert) -> str:
    """The model an alert is about, or "" (a pipeline's or a pool's alert names none)."""
    source = source_of(alert)
    if source == "monitor":
        return alert.deployment_id
    if source == "rollout":
        return alert.subject.split(" ", 1)[0]
    return ""


def labels_of(alert: Alert) -> dict[str, str]:
    labels = {
        "alertname": alert.kind,
        "kind": alert.kind,
        "severity": alert.severity.value,
        "deployment": alert.deployment_id,
        "subject": alert.subject,
        "source": source_of(alert),
        "dedup_key": alert.dedup_key,
    }
    if model := model_of(alert):
        labels["model"] = model
    return labels


def annotations_of(alert: Alert) -> dict[str, str]:
    out = {"summary": alert.summary}
    if alert.runbook_url:
        out["runbook_url"] = alert.runbook_url
    if alert.evidence:
        text = json.dumps(_plain(alert.evidence), sort_keys=True, default=str)
        out["evidence"] = text[:MAX_EVIDENCE_CHARS]
    return out


def fingerprint(dedup_key: str) -> str:
    """A stable hex id of an alert's dedup key (Alertmanager's `fingerprint`)."""
    return hashlib.sha256(dedup_key.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
