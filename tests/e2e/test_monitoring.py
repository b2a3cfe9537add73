"""A model in production is watched by the live worker, rollout or none: its monitor learns a
reference, then fires an alert when the model starts failing; a model nobody watches is said
to be unmonitored, not dropped in silence."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner
from kafka import KafkaProducer

from controller.commands.monitor_cmd import monitor_group
from schemas import (
    Cohort,
    MonitorConfigured,
    Prediction,
    PredictionBatch,
    Topic,
    make_event,
)
from tests.e2e.harness import Rollouts

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: The default rules with a reference of seconds instead of hours, so a test can reach them.
FAST_MONITORING = {
    "name": "fast",
    "reference": {"learn_s": 4, "calibrate_s": 4, "min_requests": 200, "calibration_bin_s": 1},
    "rules": [
        {"name": "errors", "detector": "error_rate", "severity": "critical"},
        {"name": "latency", "detector": "latency_shift"},
        {"name": "outage", "detector": "outage"},
    ],
}


class Service:
    """A serving fleet of one model that reports batches of predictions ten times a second."""

    def __init__(self, world: Rollouts, model: str, deployment: str, rate: float) -> None:
        self.world, self.model, self.deployment, self.rate = world, model, deployment, rate
        self.error_share = 0.0
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._producer = KafkaProducer(acks=1, **world.settings.kafka_client_options())

    def start(self) -> Service:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._producer.close()

    def _run(self) -> None:
        per_batch = max(1, int(self.rate / 10))
        while not self._stop.is_set():
            now = datetime.now(UTC)
            predictions = []
            for _ in range(per_batch):
                self.sent += 1
                failed = (self.sent % 100) < 100 * self.error_share
                predictions.append(
                    Prediction(
                        version="v1",
                        cohort=Cohort.BASELINE,
                        request_id=f"{self.model}-{self.sent}",
                        event_time=now,
                        latency_ms=20.0 + (self.sent * 7919 % 100) / 10,
                        ok=not failed,
                        error_type="internal" if failed else None,
                        prediction=(self.sent * 104729 % 1000) / 1000,
                    )
                )
            batch = PredictionBatch(
                deployment_id=self.deployment, model=self.model, predictions=tuple(predictions)
            )
            self._producer.send(
                self.world.topic(Topic.PREDICTIONS),
                key=self.deployment.encode(),
                value=make_event(batch, source="e2e-fleet").to_json(),
            )
            time.sleep(0.1)


def test_a_model_without_a_rollout_is_watched_and_its_failure_alerted(
    world: Rollouts, tmp_path: Path
) -> None:
    policy_file = tmp_path / "monitoring.yaml"
    policy_file.write_text(yaml.safe_dump(FAST_MONITORING))
    world.env["ROLLOUT_MONITORING_POLICY_FILE"] = str(policy_file)
    world.start_worker()
    world.send(MonitorConfigured(model="scorer", version="v1", by="sre", reason="e2e"))
    scorer = Service(world, "scorer", "scorer-prod", rate=200).start()
    orphan = Service(world, "orphan", "orphan-prod", rate=20).start()
    try:
        obs = world.observer

        def actions(model: str) -> list[str]:
            return [d.action for d in obs.monitor_decisions(model)]

        world.wait_for(
            lambda: actions("scorer").count("reference_learned") == 2,
            timeout=90,
            what="the scorer's monitor to learn its reference and start watching",
        )
        assert "alert_fired" not in actions("scorer")  # healthy: nothing to say
        scorer.error_share = 0.5
        changed = time.time()
        world.wait_for(
            lambda: "alert_fired" in actions("scorer"),
            timeout=60,
            what="the monitor to alert on the failing model",
        )
        fired = next(d for d in obs.monitor_decisions("scorer") if d.action == "alert_fired")
        alerts = [s.event.data for s in obs.records(Topic.ALERTS, "scorer")]
        assert "errors" == fired.rule
        assert [("firing", "scorer/monitor.errors")] == [(a.status, a.dedup_key) for a in alerts]
        assert fired.at.timestamp() - changed < 30  # 200 requests a second: seconds
        assert fired.evidence["observed"] > 0.3
        world.wait_for(
            lambda: "unmonitored" in actions("orphan"),
            timeout=30,
            what="the unwatched model to be reported",
        )
        listed = CliRunner().invoke(
            monitor_group,
            ["list", "--json", "--bootstrap-servers", world.settings.bootstrap_servers],
            env={"ROLLOUT_TOPIC_PREFIX": world.settings.topic_prefix},
        )
        assert 0 == listed.exit_code, listed.output
        models = {d["model"]: d for d in map(orjson.loads, listed.output.splitlines())}
        assert ["errors"] == list(models["scorer"]["open_alerts"])
        assert (True, "watching") == (models["scorer"]["watched"], models["scorer"]["stage"])
        assert models["orphan"]["watched"] is False and models["orphan"]["predictions"] > 0
    finally:
        scorer.close()
        orphan.close()
