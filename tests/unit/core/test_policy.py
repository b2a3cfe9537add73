"""A policy is validated when it loads, says what to fix, and binds the rules of each rollout."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

import schemas as s
from controller.core.detectors import (
    DETECTORS,
    EvaluationContext,
    JudgedFromData,
    ParamValue,
)
from controller.core.policy import (
    DeadlineAction,
    NoData,
    Policy,
    PolicyError,
    Requirement,
    Window,
    parse_policy_json,
)
from controller.core.stats import CohortStats
from controller.core.verdict import Verdict
from controller.policy_io import default_policy, load_policy, parse_policy


def _policy(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "test",
        "significance": {"alpha": 0.01},
        "rules": [
            {"name": "errors", "detector": "error_rate"},
            {"name": "slow", "detector": "latency", "params": {"max_ratio": 1.5}},
            {"name": "silence", "detector": "outage"},
        ],
    }
    doc.update(overrides)
    return doc


# ---- the default policy ---------------------------------------------------------------------


def test_the_default_policy_ships_with_the_package_and_loads() -> None:
    policy = default_policy()

    assert "default" == policy.name
    assert [
        "error_rate",
        "latency",
        "outage",
        "prediction_skew",
        "training_serving_skew",
        "data_quality",
    ] == [r.name for r in policy.default_rules.rules]


def test_the_default_policy_splits_its_alpha_over_the_acting_sequential_rules() -> None:
    rules = default_policy().default_rules

    assert ("error_rate", "latency", "data_quality") == rules.alpha_shared_by
    assert rules.alpha_each == pytest.approx(0.01 / 3)
    for name in rules.alpha_shared_by:
        rule = rules.by_name(name)
        assert rule is not None
        assert rule.params["alpha"] == pytest.approx(0.01 / 3)


def test_a_latency_rule_without_slow_request_tests_takes_no_share_of_alpha() -> None:
    p99 = {"name": "p99", "detector": "latency", "params": {"quantiles": [], "max_ratio": 1.5}}
    policy = Policy.from_mapping({"name": "guard", "rules": [p99]})
    rule = policy.default_rules.by_name("p99")

    assert rule is not None
    assert "alpha" not in rule.params
    assert None is rule.describe()["alpha"]


def test_training_serving_skew_acts_only_when_a_training_profile_exists() -> None:
    rule = default_policy().default_rules.by_name("training_serving_skew")

    assert rule is not None
    assert Requirement.TRAINING_PROFILE is rule.requires
    assert rule.is_acting(has_training_profile=True)
    assert not rule.is_acting(has_training_profile=False)


def test_the_default_policy_rolls_back_at_the_deadline_and_waits_without_data() -> None:
    policy = default_policy()

    assert DeadlineAction.ROLLBACK is policy.deadline.action
    assert NoData.WAIT is policy.document.no_data


# ---- validation -----------------------------------------------------------------------------


def test_an_unknown_detector_is_rejected_with_the_list_of_known_ones() -> None:
    doc = _policy(rules=[{"name": "p99", "detector": "latencyy"}])

    with pytest.raises(PolicyError) as caught:
        Policy.from_mapping(doc)

    message = str(caught.value)
    assert "rule 'p99'" in message
    assert "unknown detector 'latencyy'" in message
    for known in DETECTORS:
        assert known in message


def test_an_unknown_detector_parameter_is_rejected_with_the_known_parameters() -> None:
    doc = _policy(rules=[{"name": "p99", "detector": "latency", "params": {"max_ratoi": 1.5}}])

    with pytest.raises(PolicyError, match=r"unknown parameter 'max_ratoi'.*max_ratio"):
        Policy.from_mapping(doc)


def test_a_parameter_of_the_wrong_type_is_rejected() -> None:
    doc = _policy(rules=[{"name": "p99", "detector": "latency", "params": {"max_ratio": "x"}}])

    with pytest.raises(PolicyError, match="max_ratio"):
        Policy.from_mapping(doc)


def test_rule_names_must_be_unique() -> None:
    doc = _policy(
        rules=[{"name": "a", "detector": "error_rate"}, {"name": "a", "detector": "latency"}]
    )

    with pytest.raises(PolicyError, match=r"unique.*\['a'\]"):
        Policy.from_mapping(doc)


def test_unknown_fields_are_rejected_so_typos_do_not_pass_silently() -> None:
    with pytest.raises(PolicyError, match="deadlien"):
        Policy.from_mapping(_policy(deadlien={"after_s": 10}))


def test_a_runbook_template_may_only_use_known_fields() -> None:
    doc = _policy(alerts={"runbook_url": "https://runbooks.example/{team}/{rule}"})

    with pytest.raises(PolicyError, match="unknown fields \\['team'\\]"):
        Policy.from_mapping(doc)


def test_a_clock_driven_detector_cannot_be_judged_every_n_samples() -> None:
    doc = _policy(rules=[{"name": "silence", "detector": "outage", "every_n": 10}])

    with pytest.raises(PolicyError, match="every_n must be 1"):
        Policy.from_mapping(doc)


def test_a_policy_reads_from_json_and_yaml_alike() -> None:
    doc = _policy(deadline={"after_s": 600, "action": "promote"})

    from_json = parse_policy_json(json.dumps(doc))
    from_yaml = parse_policy(json.dumps(doc), "yaml")

    assert from_json == from_yaml
    assert DeadlineAction.PROMOTE is from_json.deadline.action


def test_a_policy_file_that_is_not_a_mapping_is_rejected() -> None:
    with pytest.raises(PolicyError, match="mapping"):
        parse_policy("- just\n- a list\n")


def test_a_missing_policy_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read it"):
        load_policy(tmp_path / "nope.yaml")


def test_a_policy_file_loads_by_its_suffix(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(_policy()))

    assert "test" == load_policy(path).name


# ---- binding the rules of a rollout ---------------------------------------------------------


def test_without_guardrails_the_rollout_gets_the_policy_rules() -> None:
    policy = Policy.from_mapping(_policy())

    rules = policy.bind(())

    assert ["errors", "slow", "silence"] == [r.name for r in rules.rules]
    assert {"policy"} == {r.origin for r in rules.rules}


def test_a_guardrail_with_a_new_name_adds_a_rule() -> None:
    policy = Policy.from_mapping(_policy())
    guard = s.GuardrailRule(name="skew", detector="prediction_skew", params={"js_threshold": 0.2})

    rules = policy.bind((guard,))

    added = rules.by_name("skew")
    assert added is not None
    assert "plan" == added.origin
    assert 0.2 == added.params["js_threshold"]


def test_a_guardrail_with_a_policy_rule_name_lays_its_params_over_the_rule() -> None:
    doc = _policy(
        rules=[
            {
                "name": "slow",
                "detector": "latency",
                "params": {"max_ratio": 1.5, "min_samples": 300},
                "window": "recent",
            }
        ]
    )
    policy = Policy.from_mapping(doc)
    guard = s.GuardrailRule(name="slow", detector="latency", params={"max_ratio": 2.0})

    rule = policy.bind((guard,)).by_name("slow")

    assert rule is not None
    assert "policy+plan" == rule.origin
    assert 2.0 == rule.params["max_ratio"]
    assert 300 == rule.params["min_samples"]
    assert Window.RECENT is rule.window  # policy-only settings stay


def test_a_guardrail_with_another_detector_replaces_the_rule() -> None:
    policy = Policy.from_mapping(_policy())
    guard = s.GuardrailRule(name="slow", detector="error_rate", params={"tolerance": 0.5})

    rule = policy.bind((guard,)).by_name("slow")

    assert rule is not None
    assert "error_rate" == rule.detector_name
    assert 0.5 == rule.params["tolerance"]
    assert "max_ratio" not in rule.params


def test_a_guardrail_may_turn_a_rule_into_a_dry_run() -> None:
    policy = Policy.from_mapping(_policy())
    guard = s.GuardrailRule(name="errors", detector="error_rate", dry_run=True)

    rules = policy.bind((guard,))

    errors = rules.by_name("errors")
    assert errors is not None
    assert errors.dry_run
    assert ("slow",) == rules.alpha_shared_by  # a dry run takes no share of alpha
    assert rules.alpha_each == pytest.approx(0.01)


def test_a_locked_rule_cannot_be_overridden_by_a_plan() -> None:
    doc = _policy(rules=[{"name": "errors", "detector": "error_rate", "locked": True}])
    policy = Policy.from_mapping(doc)
    guard = s.GuardrailRule(name="errors", detector="error_rate", dry_run=True)

    with pytest.raises(PolicyError, match="locked"):
        policy.bind((guard,))


def test_a_guardrail_naming_an_unknown_detector_is_rejected_with_the_known_ones() -> None:
    policy = Policy.from_mapping(_policy())
    guard = s.GuardrailRule(name="x", detector="vibes")

    with pytest.raises(PolicyError, match=r"unknown detector 'vibes'.*error_rate"):
        policy.bind((guard,))


def test_a_rule_that_sets_its_own_alpha_opts_out_of_the_split() -> None:
    doc = _policy(
        rules=[
            {"name": "errors", "detector": "error_rate", "params": {"alpha": 0.001}},
            {"name": "slow", "detector": "latency"},
            {"name": "quality", "detector": "data_quality"},
        ]
    )

    rules = Policy.from_mapping(doc).default_rules

    assert ("slow", "quality") == rules.alpha_shared_by
    errors = rules.by_name("errors")
    assert errors is not None
    assert 0.001 == errors.params["alpha"]
    assert rules.alpha_each == pytest.approx(0.005)


def test_binding_is_cached_per_plan_content() -> None:
    policy = Policy.from_mapping(_policy())
    guard = s.GuardrailRule(name="skew", detector="prediction_skew")

    assert policy.bind((guard,)) is policy.bind((guard.model_copy(),))
    assert policy.bind(()) is policy.default_rules


def test_a_runbook_url_is_filled_from_its_template() -> None:
    doc = _policy(alerts={"runbook_url": "https://runbooks.example/{kind}?d={deployment_id}"})
    policy = Policy.from_mapping(doc)

    url = policy.runbook_url(
        deployment_id="dep-1", rule="slow", detector="latency", kind="latency", model="fraud"
    )

    assert "https://runbooks.example/latency?d=dep-1" == url


def test_a_sequential_rule_on_the_recent_window_spreads_its_alpha_over_the_panes() -> None:
    doc = _policy(
        evaluation={"recent_s": 10},
        rules=[
            {"name": "errors", "detector": "error_rate"},
            {"name": "errors_now", "detector": "error_rate", "window": "recent"},
        ],
    )
    policy = Policy.from_mapping(doc)

    rules = policy.bind((), horizon_s=600.0)  # 60 panes of 10 s, plus the one in progress

    assert 61 == rules.recent_windows
    recent, whole = rules.by_name("errors_now"), rules.by_name("errors")
    assert recent is not None and whole is not None
    assert whole.params["alpha"] == pytest.approx(0.005)
    assert recent.params["alpha"] == pytest.approx(0.005 / 61)


def test_a_rollout_without_a_deadline_is_split_over_a_days_panes() -> None:
    doc = _policy(
        evaluation={"recent_s": 60},
        rules=[{"name": "errors_now", "detector": "error_rate", "window": "recent"}],
    )

    rules = Policy.from_mapping(doc).bind(())

    assert 24 * 60 + 1 == rules.recent_windows


# ---- capabilities: the policy asks the detector, not a list of names -----------------------


@dataclass(frozen=True)
class Watchdog(JudgedFromData):
    """A detector the policy has never heard of: an anytime-valid test when `alpha` is set to
    anything but its switch-off value 0.5, judged from the clock when `clock` is on."""

    params: Mapping[str, ParamValue]
    name: ClassVar[str] = "watchdog"

    @property
    def judged_from_clock(self) -> bool:  # type: ignore[override]  # a per-instance answer
        return bool(self.params.get("clock", False))

    @classmethod
    def from_params(cls, params: Mapping[str, ParamValue] | None = None) -> Watchdog:
        return cls(dict(params or {}))

    def spends_alpha(self) -> bool:
        return self.params.get("alpha", 0.01) != 0.5 and not self.params.get("off", False)

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict:
        return Verdict.passed(self.name, "fine")


WITH_WATCHDOG = {**DETECTORS, Watchdog.name: Watchdog.from_params}


def test_a_new_detector_that_spends_alpha_shares_the_budget_without_a_policy_edit() -> None:
    doc = _policy(
        rules=[
            {"name": "errors", "detector": "error_rate"},
            {"name": "watch", "detector": "watchdog"},
            {"name": "idle", "detector": "watchdog", "params": {"off": True}},
            {"name": "silence", "detector": "outage"},
        ]
    )

    rules = Policy.from_mapping(doc, registry=WITH_WATCHDOG).default_rules

    assert ("errors", "watch") == rules.alpha_shared_by
    watch, idle = rules.by_name("watch"), rules.by_name("idle")
    assert watch is not None and idle is not None
    assert watch.params["alpha"] == pytest.approx(0.005)
    assert watch.describe()["alpha"] == pytest.approx(0.005)
    assert "alpha" not in idle.params and None is idle.describe()["alpha"]


def test_a_new_detector_judged_from_the_clock_cannot_be_judged_every_n_samples() -> None:
    ok = _policy(rules=[{"name": "watch", "detector": "watchdog", "every_n": 10}])
    clocked = _policy(
        rules=[{"name": "watch", "detector": "watchdog", "every_n": 10, "params": {"clock": True}}]
    )

    Policy.from_mapping(ok, registry=WITH_WATCHDOG)
    with pytest.raises(PolicyError, match="watchdog is judged from the clock, every_n must be 1"):
        Policy.from_mapping(clocked, registry=WITH_WATCHDOG)


def test_the_policy_keeps_no_list_of_detector_names() -> None:
    import controller.core.policy as policy_module

    source = Path(policy_module.__file__).read_text()

    assert [] == [name for name in DETECTORS if f'"{name}"' in source]
