"""Replay joins labels to their predictions as the worker does: a log with a quality rule
gives the same decision, byte for byte, every time."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import schemas as s
from controller.core.policy import Policy
from controller.policy_io import default_policy
from controller.replay.replay import replay
from tests.factories import T0


@pytest.fixture(scope="module")
def cancer() -> tuple[list[float], list[int]]:
    x, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    found = cross_val_predict(model, x, y, cv=5, method="predict_proba")[:, 1]
    return [round(float(p), 4) for p in found], [int(v) for v in y]


def quality_policy() -> Policy:
    document = default_policy().to_dict()
    document["router"] = {**document.get("router", {}), "acknowledges": False}  # no router here
    document["rules"] = [
        *document["rules"],
        {"name": "quality", "detector": "quality", "params": {"min_pairs": 300}},
    ]
    return Policy.from_mapping(document)


def log(base: list[float], candidate: list[float], labels: list[int], seed: int) -> list[bytes]:
    """A deployment (20 % then 100 %), 100 requests a second for 75 s, each labelled 2-5 s
    later: the predictions and labels in time order."""
    rng = random.Random(seed)
    plan = s.RolloutPlan(
        steps=(
            s.TrafficStep(canary_percent=20, min_bake_s=45, min_samples=100),
            s.TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
        )
    )
    request = s.DeploymentRequested(
        deployment_id="fraud-q",
        model="fraud",
        candidate_version="v2",
        baseline_version="v1",
        plan=plan,
        requested_by="test",
    )
    events: list[tuple[float, int, s.Envelope[Any]]] = [
        (0.0, 0, s.make_event(request, source="deployer", time=T0, id="deploy"))
    ]
    n = 0
    for second in range(1, 75):
        for _ in range(100):
            n += 1
            i = rng.randrange(len(labels))
            canary = rng.random() < 0.2
            at = T0 + timedelta(seconds=second + rng.random())
            served = s.PredictionServed(
                deployment_id="fraud-q",
                model="fraud",
                version="v2" if canary else "v1",
                cohort=s.Cohort.CANARY if canary else s.Cohort.BASELINE,
                request_id=f"r{n}",
                event_time=at,
                latency_ms=20.0,
                prediction=(candidate if canary else base)[i],
            )
            events.append(
                (at.timestamp(), n, s.make_event(served, source="fleet", time=at, id=f"p{n}"))
            )
            later = at + timedelta(seconds=2 + 3 * rng.random())
            label = s.LabelReported(
                deployment_id="fraud-q",
                request_id=f"r{n}",
                label=float(labels[i]),
                event_time=later,
            )
            events.append(
                (
                    later.timestamp(),
                    n,
                    s.make_event(label, source="labeller", time=later, id=f"l{n}"),
                )
            )
    events.sort(key=lambda e: (e[0], e[1]))
    return [e.to_json() for _, _, e in events]


def test_a_worse_candidate_is_rolled_back_on_its_labels_the_same_every_replay(
    cancer: tuple[list[float], list[int]],
) -> None:
    base, labels = cancer
    rng = random.Random(2)
    worse = [p if rng.random() < 0.8 else rng.choice(base) for p in base]
    lines = log(base, worse, labels, 1)

    first: list[bytes] = []
    result = replay(lines, quality_policy(), emit=lambda e: first.append(e.to_json()))
    again: list[bytes] = []
    replay(lines, quality_policy(), emit=lambda e: again.append(e.to_json()))

    (report,) = result.deployments
    assert "rolled_back" == report.phase
    assert "quality" in report.reason
    assert first == again


def test_an_equal_candidate_is_promoted_with_its_labels(
    cancer: tuple[list[float], list[int]],
) -> None:
    base, labels = cancer

    result = replay(log(base, base, labels, 3), quality_policy())

    (report,) = result.deployments
    assert "promoted" == report.phase


def test_the_joined_pairs_reach_the_models_monitor_too(
    cancer: tuple[list[float], list[int]],
) -> None:
    """The rollout configures its model's monitor; the pairs the join makes are handed to it as
    well (counted by version: the canary's, then the promoted version's, are watched)."""
    base, labels = cancer
    lines = log(base, base, labels, 3)

    result = replay(lines, quality_policy())

    (watched,) = [m for m in result.monitors if m.model == "fraud"]
    (report,) = result.deployments
    assert "promoted" == report.phase
    # every label of the log joined its prediction; the monitor took the pairs of both
    # versions (those that arrived before the end of the log)
    joined = sum(1 for line in lines if b'"dev.rollout.label.reported.v1"' in line)
    assert 0.9 * joined <= watched.labels <= joined
