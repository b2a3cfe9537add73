"""The Grafana dashboard and the Prometheus alerting rules under deploy/ are built on metrics
the worker serves: a metric renamed or removed in the worker breaks them here, not on a
team's screen."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from controller.observability.metrics import WorkerMetrics

DEPLOY = Path(__file__).parents[2] / "deploy"
METRIC = re.compile(r"\b((?:rollout|process)_[a-z_]+)\b")


def served() -> set[str]:
    """Every sample name the worker's registry serves (counters' _total, histograms' _bucket,
    _count and _sum included), once each metric has a sample."""
    metrics = WorkerMetrics(process=True)
    metrics.event_in("deployments", "x")
    metrics.dead_letters.labels("deployments", "x").inc()
    metrics.command("x")
    metrics.decision("rollout", "x")
    metrics.alert("x", "warning", "firing")
    metrics.rollouts.labels("x").set(0)
    metrics.monitors.labels("x").set(0)
    metrics.evaluation.labels("event").observe(0.001)
    metrics.lag.labels("g", "t", "0").set(0)
    metrics.lane_deltas.labels("lane").inc()
    text = generate_latest(metrics.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def rules() -> list[dict[str, object]]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "rules.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "rollout-controller.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_alerting_rule_says_how_bad_what_and_where_to_look() -> None:
    found = rules()

    assert len(found) >= 6
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names))
    for rule in found:
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]


def test_the_rules_cover_lag_dead_letters_and_a_controller_that_stops_deciding() -> None:
    exprs = " ".join(str(rule["expr"]) for rule in rules())

    for needed in (
        "rollout_consumer_lag",
        "rollout_dead_letters_total",
        "rollout_live_rollouts",
        "rollout_decisions_total",
        "rollout_last_tick_timestamp_seconds",
        "rollout_ready",
    ):
        assert needed in exprs


def test_the_rules_and_the_dashboard_use_only_metrics_the_worker_serves() -> None:
    names = served()
    used = {m for expr in dashboard_exprs() for m in METRIC.findall(expr)}
    used |= {m for rule in rules() for m in METRIC.findall(str(rule["expr"]))}

    assert used, "no metric found in the dashboard or the rules"
    assert set() == used - names


def test_the_dashboard_panels_are_distinct_and_placed() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "rollout-controller.json").read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]

    assert len(ids) == len(set(ids))
    assert all({"h", "w", "x", "y"} <= set(p["gridPos"]) for p in panels)
    assert len(dashboard_exprs()) >= 15
    assert "datasource" in {v["name"] for v in dashboard["templating"]["list"]}
