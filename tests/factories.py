"""Factories that read like prose: `make_prediction(cohort="canary", latency_ms=120)`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import schemas as s
from controller.core.stats import CohortStats, StatsConfig

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def make_prediction(**overrides: Any) -> s.PredictionServed:
    fields: dict[str, Any] = {
        "deployment_id": "dep-1",
        "model": "fraud",
        "version": "v2",
        "cohort": "canary",
        "request_id": "req-1",
        "event_time": T0,
        "latency_ms": 120.0,
        "prediction": 0.42,
        "features": {"amount": 12.5, "country": "DE", "is_new": False, "age": None},
    }
    fields.update(overrides)
    return s.PredictionServed(**fields)


def observe_one_by_one(
    items: Iterable[s.PredictionServed], config: StatsConfig | None = None
) -> dict[tuple[str, str], CohortStats]:
    """Cohort statistics by (cohort, version), each prediction observed on its own: what the
    bulk and lane paths must equal."""
    expected: dict[tuple[str, str], CohortStats] = {}
    for p in items:
        expected.setdefault((str(p.cohort), p.version), CohortStats(config)).observe(
            ok=p.ok,
            latency_ms=p.latency_ms,
            event_time=p.event_time.timestamp(),
            error_type=p.error_type,
            prediction=p.prediction,
            features=p.features,
        )
    return expected


def make_plan(**overrides: Any) -> s.RolloutPlan:
    fields: dict[str, Any] = {
        "steps": (
            s.TrafficStep(canary_percent=10, min_bake_s=30, min_samples=200),
            s.TrafficStep(
                canary_percent=50, min_bake_s=30, min_samples=500, requires_approval=True
            ),
            s.TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
        ),
        "deadline_s": 3600.0,
        "guardrails": (
            s.GuardrailRule(name="errors", detector="error_rate", params={"alpha": 0.01}),
            s.GuardrailRule(name="p99", detector="latency", params={"max_ratio": 1.5}),
        ),
    }
    fields.update(overrides)
    return s.RolloutPlan(**fields)


def make_deployment(**overrides: Any) -> s.DeploymentRequested:
    fields: dict[str, Any] = {
        "deployment_id": "dep-1",
        "model": "fraud",
        "candidate_version": "v2",
        "baseline_version": "v1",
        "plan": make_plan(),
        "training_profile": s.TrainingProfile(
            dataset="fraud-train-2026-11",
            features=(
                s.FeatureProfile(
                    name="amount",
                    kind="numeric",
                    bin_edges=(10.0, 100.0),
                    proportions=(0.3, 0.5, 0.2),
                    domain_min=0.0,
                ),
                s.FeatureProfile(
                    name="country",
                    kind="categorical",
                    categories={"DE": 0.6, "FR": 0.4},
                ),
            ),
        ),
        "requested_by": "alice",
    }
    fields.update(overrides)
    return s.DeploymentRequested(**fields)


def sample_payloads() -> list[s.Payload]:
    """One valid payload of every event type, in the order of schemas.PAYLOADS."""
    item = make_prediction()
    single = {k: v for k, v in item.model_dump().items() if k not in ("deployment_id", "model")}
    by_type: dict[type[s.Payload], s.Payload] = {
        s.DeploymentRequested: make_deployment(),
        s.ApprovalGranted: s.ApprovalGranted(deployment_id="dep-1", step=1, by="bob", reason="ok"),
        s.ApprovalDenied: s.ApprovalDenied(deployment_id="dep-1", step=0, by="bob", reason="no"),
        s.PauseRequested: s.PauseRequested(
            deployment_id="dep-1",
            by="sre",
            reason="freeze",
            signature=s.Signature(key_id="sre-1", signed_at=T0, value="A" * 86 + "=="),
        ),
        s.ResumeRequested: s.ResumeRequested(deployment_id="dep-1", by="sre"),
        s.AbortRequested: s.AbortRequested(deployment_id="dep-1", by="sre", reason="bad idea"),
        s.RollbackRequested: s.RollbackRequested(deployment_id="dep-1", by="sre", reason="pager"),
        s.TrafficApplied: s.TrafficApplied(
            deployment_id="dep-1",
            command_id="cmd-1",
            canary_percent=10,
            applied_by="router-a",
            applied_at=T0,
        ),
        s.CommandRefused: s.CommandRefused(
            deployment_id="dep-1",
            command_id="cmd-1",
            refused_by="router-a",
            reason="signature: not signed",
            refused_at=T0,
        ),
        s.PredictionServed: item,
        s.PredictionBatch: s.PredictionBatch(
            deployment_id="dep-1",
            model="fraud",
            predictions=(
                s.Prediction(**single),
                s.Prediction(
                    **{
                        **single,
                        "request_id": "req-2",
                        "cohort": "baseline",
                        "version": "v1",
                        "ok": False,
                        "error_type": "timeout",
                        "prediction": None,
                    }
                ),
                s.Prediction(**{**single, "request_id": "req-3", "prediction": "fraud"}),
                s.Prediction(
                    **{**single, "request_id": "req-4", "prediction": {"fraud": 0.7, "ok": 0.3}}
                ),
            ),
        ),
        s.LabelReported: s.LabelReported(
            deployment_id="dep-1", request_id="req-1", label=1.0, event_time=T0
        ),
        s.MetricReported: s.MetricReported(
            deployment_id="dep-1",
            name="gpu_util",
            value=0.8,
            unit="1",
            cohort="canary",
            attributes={"host": "a"},
        ),
        s.ResourceUsage: s.ResourceUsage(
            deployment_id="dep-1",
            resource="gpu_hours",
            used=90,
            limit=100,
            unit="h",
            pipeline="serving",
            pool="gpu-pool",
            requested=95,
        ),
        s.TrainingRun: s.TrainingRun(
            deployment_id="dep-1",
            pipeline="nightly",
            run_id="run-7",
            status="failed",
            duration_s=360.0,
            error="OOM",
        ),
        s.DataProfile: s.DataProfile(
            deployment_id="dep-1",
            dataset="fraud-val",
            split="validation",
            row_count=1000,
            features=make_deployment().training_profile.features,  # type: ignore[union-attr]
            pipeline="fraud-data",
        ),
        s.Command: s.Command(
            command_id="cmd-1",
            deployment_id="dep-1",
            action="rollback",
            canary_percent=0,
            step=1,
            model="fraud",
            candidate_version="v2",
            baseline_version="v1",
            reason="canary p99 412 ms vs baseline 201 ms, ratio 2.05 > 1.5",
            evidence={"ratio": 2.05},
            issued_at=T0,
        ),
        s.Alert: s.Alert(
            alert_id="alert-1",
            status="firing",
            severity="critical",
            kind="latency",
            deployment_id="dep-1",
            subject="fraud v2",
            summary="p99 regression",
            evidence={"ratio": 2.05},
            runbook_url="https://runbooks.example/latency",
            dedup_key="dep-1/latency",
            at=T0,
        ),
        s.Decision: s.Decision(
            decision_id="dec-1",
            deployment_id="dep-1",
            from_phase="progressing",
            to_phase="rolled_back",
            step=1,
            canary_percent=0,
            reason="p99 regression",
            evidence={"ratio": 2.05},
            verdicts=({"detector": "latency", "outcome": "fail"},),
            command_ids=("cmd-1",),
            at=T0,
        ),
        s.MonitorConfigured: s.MonitorConfigured(
            model="fraud",
            version="v2",
            policy={"rules": [{"name": "errors", "detector": "error_rate"}]},
            training_profile=make_deployment().training_profile,
            reference="pin",
            by="alice",
            reason="v2 serves production",
        ),
        s.MonitorDeleted: s.MonitorDeleted(model="fraud", by="alice", reason="retired"),
        s.QuotaPoolConfigured: s.QuotaPoolConfigured(
            pool="gpu-pool",
            resource="gpu",
            unit="gpus",
            limit=64,
            pipelines=(
                s.PoolMember(pipeline="serving", guaranteed=16, weight=2),
                s.PoolMember(pipeline="nightly"),
            ),
            warning=0.8,
            critical=0.95,
            throttle=True,
            by="alice",
            reason="one pool for serving and training",
        ),
        s.QuotaPoolDeleted: s.QuotaPoolDeleted(pool="gpu-pool", by="alice", reason="retired"),
        s.PipelineThrottle: s.PipelineThrottle(
            command_id="thr-1",
            pipeline="nightly",
            pool="gpu-pool",
            resource="gpu",
            action="throttle",
            limit=24,
            unit="gpus",
            reason="nightly uses 40 gpus, its fair share is 24, while serving waits",
            evidence={"fair_share": 24},
            issued_at=T0,
        ),
        s.PipelineDecision: s.PipelineDecision(
            decision_id="pip-1",
            pool="gpu-pool",
            pipeline="nightly",
            action="alert_fired",
            rule="fair_share",
            reason="nightly above its fair share while serving waits",
            evidence={"used": 40, "fair_share": 24},
            at=T0,
        ),
        s.MonitorDecision: s.MonitorDecision(
            decision_id="mon-1",
            model="fraud",
            version="v2",
            action="alert_fired",
            rule="errors",
            reason="fraud@v2 errors: error rate 3.1 % since 05:20:10 vs 1.0 % in the reference",
            evidence={"observed": 0.031, "reference": 0.01},
            at=T0,
        ),
        s.DeadLetter: s.DeadLetter(
            original_b64="bm90IGpzb24=",
            original_size=8,
            source_topic="rollout.predictions",
            partition=0,
            offset=42,
            key="dep-1",
            reason="not JSON",
            errors=(s.FieldError(loc="$", message="expected value", kind="json_invalid"),),
            rejected_at=T0,
        ),
    }
    return [by_type[p] for p in s.PAYLOADS]


def make_event(data: s.Payload, **kw: Any) -> s.Envelope[Any]:
    kw.setdefault("time", T0)
    kw.setdefault("id", f"evt-{type(data).__name__}")
    return s.make_event(data, source="tests", **kw)
