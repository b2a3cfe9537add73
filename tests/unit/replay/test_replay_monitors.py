"""A recorded production log replays through the monitors: the same bytes every time, and the
alarm the log holds."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson

import schemas as s
from controller.core.monitor import MonitoringPolicy
from controller.core.policy import Policy
from controller.policy_io import default_policy
from controller.replay.replay import replay, summary_table

START = datetime(2026, 3, 1, tzinfo=UTC)
FAST = MonitoringPolicy.from_mapping(
    {
        "reference": {
            "learn_s": 30,
            "calibrate_s": 30,
            "min_requests": 300,
            "calibration_bin_s": 5,
        },
        "rules": [
            {"name": "errors", "detector": "error_rate", "severity": "critical"},
            {"name": "outage", "detector": "outage"},
            {"name": "drift", "detector": "prediction_drift", "every_s": 5},
        ],
    }
)


def production_log(seconds: int, fail_from: int, seed: int = 1) -> list[bytes]:
    """A monitor configuration, then 40 predictions a second in batches; from `fail_from` on,
    a third of them fail."""
    rng = random.Random(seed)
    config = s.MonitorConfigured(model="ranker", version="v3", by="sre")
    lines = [s.make_event(config, source="ops", time=START, id="cfg-1").to_json()]
    for second in range(seconds):
        at = START + timedelta(seconds=second + 0.5)
        share = 0.33 if second >= fail_from else 0.01
        predictions = []
        for i in range(40):
            failed = rng.random() < share
            predictions.append(
                s.Prediction(
                    version="v3",
                    cohort=s.Cohort.BASELINE,
                    request_id=f"r{second}-{i}",
                    event_time=at,
                    latency_ms=rng.lognormvariate(3.0, 0.3),
                    ok=not failed,
                    error_type="timeout" if failed else None,
                    prediction=rng.choice(["a", "b", "c"]),
                )
            )
        batch = s.PredictionBatch(
            deployment_id="ranker-prod", model="ranker", predictions=tuple(predictions)
        )
        lines.append(s.make_event(batch, source="fleet", time=at, id=f"b{second}").to_json())
    return lines


def run(lines: list[bytes], policy: Policy) -> tuple[list[bytes], str]:
    out: list[bytes] = []
    result = replay(lines, policy, emit=lambda e: out.append(e.to_json()), monitoring=FAST)
    return out, summary_table(result)


def test_a_production_log_replays_to_the_same_bytes_with_its_alarm() -> None:
    lines = production_log(seconds=150, fail_from=100)
    policy = default_policy()

    first, table = run(lines, policy)
    second, _ = run(lines, policy)

    assert first == second
    docs = [orjson.loads(line) for line in first]
    decisions = [d["data"] for d in docs if d["type"] == s.MonitorDecision.EVENT_TYPE]
    assert ["configured", "reference_learned", "reference_learned", "alert_fired"] == [
        d["action"] for d in decisions
    ]
    fired = decisions[-1]
    assert "errors" == fired["rule"]
    change = (START + timedelta(seconds=100)).timestamp()
    assert 0 <= datetime.fromisoformat(fired["at"]).timestamp() - change <= 15
    alerts = [d["data"] for d in docs if d["type"] == s.Alert.EVENT_TYPE]
    assert [("firing", "ranker/monitor.errors")] == [(a["status"], a["dedup_key"]) for a in alerts]
    assert "| ranker | v3 | watching | 6000 | 1 / 0 | errors |" in table


def test_a_healthy_production_log_replays_without_alarms() -> None:
    first, table = run(production_log(seconds=150, fail_from=10_000, seed=2), default_policy())

    docs = [orjson.loads(line) for line in first]
    assert [] == [d for d in docs if d["type"] == s.Alert.EVENT_TYPE]
    assert "| ranker | v3 | watching | 6000 | 0 / 0 | - |" in table
