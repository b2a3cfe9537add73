"""The quality rule: a rollout judged on its labels, joined late, stratified by traffic share."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from controller.core.detectors.base import EvaluationContext, InvalidParameterError
from controller.core.detectors.registry import build_detector
from controller.core.rollout import merge_labels
from controller.core.state import RolloutState
from controller.core.stats.labelled import LabelFold
from tests.unit.core.rollout_helpers import UNIT_POLICY, Rollout, unit_policy


@pytest.fixture(scope="module")
def cancer() -> tuple[list[float], list[int]]:
    x, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    scores = cross_val_predict(model, x, y, cv=5, method="predict_proba")[:, 1]
    return [float(p) for p in scores], [int(v) for v in y]


def quality_policy(**params: Any) -> Any:
    rule = {"name": "quality", "detector": "quality", "params": {"min_pairs": 150, **params}}
    return unit_policy(rules=[*UNIT_POLICY["rules"], rule])


def labels(
    rollout: Rollout,
    scores: list[float],
    labels_: list[int],
    canary_scores: list[float],
    n: int,
    seed: int,
    *,
    predicted_ago: float = 5.0,
    share: float = 0.1,
) -> None:
    """`n` labelled requests whose predictions were made `predicted_ago` s before now, routed
    to the canary at `share`, joined now (one fold per cohort, as the label join sends)."""
    rng = random.Random(seed)
    folds = {"baseline": LabelFold(), "canary": LabelFold()}
    for k in range(n):
        i = rng.randrange(len(labels_))
        cohort = "canary" if rng.random() < share else "baseline"
        served = canary_scores if cohort == "canary" else scores
        folds[cohort].add(
            f"{seed}-{k}", served[i], labels_[i], rollout.now - predicted_ago, rollout.now
        )
    merge_labels(
        rollout.state,
        [("baseline", "v1", folds["baseline"]), ("canary", "v2", folds["canary"])],
        rollout.now,
        delta_id=f"labels-{seed}",
    )


def worse_than(scores: list[float]) -> list[float]:
    """The same output distribution, three times the Brier score (test_labelled)."""
    rng = random.Random(1)
    return [p if rng.random() < 0.9 else rng.choice(scores) for p in scores]


def test_a_worse_model_whose_outputs_look_the_same_is_rolled_back_on_its_labels(
    cancer: tuple[list[float], list[int]],
) -> None:
    scores, y = cancer
    rollout = Rollout(policy=quality_policy(min_pairs=1000))
    rollout.serve(70)  # past the first step's bake: it waits for labels
    assert [("set_traffic", 10.0)] == rollout.actions()

    for batch in range(40):
        rollout.serve(1)
        labels(rollout, scores, y, worse_than(scores), 500, batch)
        rollout.tick()
        if rollout.state.phase.is_terminal():
            break

    assert "rolled_back" == rollout.state.phase.value
    (last,) = [d for d in rollout.decisions if d.to_phase == "rolled_back"]
    assert "quality" in last.reason and "loss" in last.reason


def test_an_equal_model_passes_once_both_cohorts_have_their_labels(
    cancer: tuple[list[float], list[int]],
) -> None:
    scores, y = cancer
    rollout = Rollout(policy=quality_policy())
    rollout.serve(30)
    assert [("set_traffic", 10.0)] == rollout.actions()  # held: no labels yet

    for batch in range(6):
        labels(rollout, scores, y, scores, 500, 100 + batch)
        rollout.serve(1)

    assert ("set_traffic", 50.0) in rollout.actions()
    assert "rolled_back" != rollout.state.phase.value


def test_late_labels_hold_pass_or_roll_back_at_the_deadline_as_the_policy_says() -> None:
    outcomes = {}
    for late in ("hold", "pass", "rollback"):
        rollout = Rollout(policy=quality_policy(labels_late=late, label_deadline_s=60))
        rollout.serve(90)
        outcomes[late] = (rollout.state.phase.value, rollout.actions()[-1])
    assert outcomes["hold"] == ("progressing", ("set_traffic", 10.0))
    assert outcomes["pass"][1] == ("set_traffic", 50.0)
    assert outcomes["rollback"] == ("rolled_back", ("rollback", 0.0))


def test_a_canary_whose_labels_stop_is_not_promoted_on_the_old_ones(
    cancer: tuple[list[float], list[int]],
) -> None:
    scores, y = cancer
    rollout = Rollout(policy=quality_policy(label_gap_s=30))
    rollout.serve(12)
    labels(rollout, scores, y, scores, 3000, 7)  # enough pairs for both
    detector = build_detector("quality", {"min_pairs": 150, "label_gap_s": 30})
    state = rollout.state

    fresh = detector.evaluate(
        state.stats["baseline"], state.stats["canary"], _context(state, rollout.now)
    )
    state.label_seen["canary"] = rollout.now - 60  # the canary's labels stopped a minute ago
    stale = detector.evaluate(
        state.stats["baseline"], state.stats["canary"], _context(state, rollout.now)
    )

    assert "pass" == fresh.outcome.value
    assert "no_data" == stale.outcome.value
    assert "stopped" in stale.reason


def _context(state: RolloutState, now: float) -> EvaluationContext:
    from controller.core.rollout.assessment import context

    return context(state, now)


def test_labels_are_judged_at_the_share_their_predictions_were_routed_at(
    cancer: tuple[list[float], list[int]],
) -> None:
    """Pairs whose prediction bucket a share change falls in are left out of the test (and
    still count in the cohort's quality); the others go to their span."""
    scores, y = cancer
    rollout = Rollout(policy=quality_policy())
    rollout.serve(5)
    ((start, percent),) = rollout.state.share_spans
    assert 10.0 == percent

    labels(rollout, scores, y, scores, 200, 1, predicted_ago=rollout.now - start + 120)
    labels(rollout, scores, y, scores, 200, 2, predicted_ago=1.0)

    placed = sum(c[1] + c[3] for c in rollout.state.label_strata)
    assert rollout.state.labels_unplaced + placed == 400
    assert rollout.state.labels_unplaced >= 200  # before the first span
    assert sum(s.pairs for s in rollout.state.labelled.values()) == 400
    again = RolloutState.from_dict(rollout.state.to_dict())
    assert again == rollout.state


def test_quality_parameters_are_checked() -> None:
    with pytest.raises(InvalidParameterError, match="labels_late must be one of"):
        build_detector("quality", {"labels_late": "later"})
