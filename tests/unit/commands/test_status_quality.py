"""`rollout status` shows quality from labelled predictions: a model's last quality report
beside its labelled reference, and a rollout's canary-vs-baseline figures at its last
decision. Built from what the monitor and the quality rule really publish."""

from __future__ import annotations

from datetime import UTC, datetime

import schemas as s
from controller.commands.ops import model_quality, read_health, rollout_quality
from tests.factories import make_event
from tests.unit.core.monitor.test_monitor_labels import Labelled, Watch, decisions


def test_a_models_quality_reports_and_label_stage_reach_its_status() -> None:
    watch = Watch()
    traffic = Labelled("breast_cancer")
    watch.watch(traffic)
    watch.run(traffic, 600)
    published = [o for o in watch.outputs if isinstance(o, s.MonitorDecision)]

    _, models, _ = read_health(iter(make_event(d) for d in published))

    health = models["clf"]
    assert ("waiting", "watching") == (health.stage, health.label_stage)  # no predictions fed
    assert health.quality is not None
    last = decisions(watch.outputs, "quality")[-1]
    assert last.evidence == health.quality
    line = model_quality(health.quality)
    accuracy = last.evidence["metrics"]["accuracy"]
    assert f"accuracy {accuracy:.4g}" in line
    assert "labelled predictions" in line and "label delay p50" in line
    assert "(labelled reference: accuracy" in line
    assert health.to_dict()["quality"] == last.evidence


def test_a_rollouts_quality_figures_come_from_its_last_decisions_verdict() -> None:
    verdict = {
        "detector": "quality",
        "outcome": "failed",
        "reason": "canary mean loss 0.21 over 900 labelled requests vs ...",
        "evidence": {
            "canary_pairs": 900,
            "baseline_pairs": 8100,
            "canary_accuracy": 0.65,
            "baseline_accuracy": 0.96,
            "canary_log_loss": 2.87,
            "baseline_log_loss": 0.12,
        },
    }
    decision = s.Decision(
        decision_id="dec-1",
        deployment_id="fraud-v2",
        from_phase="progressing",
        to_phase="rolled_back",
        step=0,
        canary_percent=0.0,
        reason="canary failed quality",
        verdicts=({"detector": "latency", "outcome": "passed", "reason": "ok"}, verdict),
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    line = rollout_quality(decision)
    assert line == (
        "quality at this decision: canary 900 labelled, accuracy 0.65, log loss 2.87; "
        "baseline 8,100 labelled, accuracy 0.96, log loss 0.12"
    )
    no_labels = decision.model_copy(
        update={"verdicts": ({**verdict, "evidence": {"canary_pairs": 0}, "reason": "waiting"},)}
    )
    assert "quality: waiting" == rollout_quality(no_labels)
    assert "" == rollout_quality(decision.model_copy(update={"verdicts": ()}))
