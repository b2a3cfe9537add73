"""The notifier's config: routing in order with continue, globbed names, severity floors and
lists, and a refusal that names every problem with its place in the document."""

from __future__ import annotations

import pytest

from controller.core.notify import NotifyConfig, NotifyConfigError, labels_of, parse_duration
from tests.unit.core.notify.factories import make_alert, make_config, make_monitor_alert


def receivers_of(config: NotifyConfig, alert: object) -> list[str]:
    return [route.receiver for _, route in config.route(labels_of(alert))]  # type: ignore[arg-type]


def test_an_alert_no_route_takes_goes_to_the_default_receiver() -> None:
    config = make_config(routes=[{"match": {"models": ["ranker"]}, "receiver": "chat"}])

    assert ["hook"] == receivers_of(config, make_alert())


def test_the_first_matching_route_takes_the_alert_unless_it_says_continue() -> None:
    routes = [
        {"match": {"severity_at_least": "critical"}, "receiver": "pager", "continue": True},
        {"match": {"models": ["fraud*"]}, "receiver": "chat"},
        {"match": {}, "receiver": "hook"},
    ]
    config = make_config(routes=routes)

    assert ["pager", "chat"] == receivers_of(config, make_alert())
    assert ["chat"] == receivers_of(config, make_alert(severity="warning"))


def test_a_monitor_alert_is_matched_by_its_model() -> None:
    config = make_config(routes=[{"match": {"models": ["rank*"]}, "receiver": "chat"}])

    assert ["chat"] == receivers_of(config, make_monitor_alert("ranker"))
    assert "ranker" == labels_of(make_monitor_alert("ranker"))["model"]
    assert "fraud" == labels_of(make_alert())["model"]


def test_an_exact_severity_list_and_deployment_globs_must_all_hold() -> None:
    match = {"severity": ["warning"], "deployments": ["fraud-*"]}
    config = make_config(routes=[{"match": match, "receiver": "chat"}])

    assert ["chat"] == receivers_of(config, make_alert(severity="warning"))
    assert ["hook"] == receivers_of(config, make_alert(severity="critical"))
    assert ["hook"] == receivers_of(config, make_alert(severity="warning", deployment_id="x"))


def test_a_route_inherits_the_default_timing_and_overrides_what_it_names() -> None:
    config = make_config(routes=[{"receiver": "chat", "group_wait": "10s"}])

    timing = config.routes[0].timing
    assert (10.0, 300.0, 3600.0) == (
        timing.group_wait_s,
        timing.group_interval_s,
        timing.repeat_interval_s,
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(30, 30.0), ("30s", 30.0), ("5m", 300.0), ("4h", 14400.0), ("1d", 86400.0)],
)
def test_durations_read_with_their_units(text: object, seconds: float) -> None:
    assert seconds == parse_duration(text)


def test_every_problem_is_named_with_its_place() -> None:
    with pytest.raises(NotifyConfigError) as raised:
        NotifyConfig.from_mapping(
            {
                "receivers": [
                    {"name": "hook", "webhook": {}},
                    {"name": "x", "sms": {"to": "1"}},
                ],
                "default_receiver": "nobody",
                "routes": [
                    {"receiver": "pager", "match": {"severity_at_least": "loud"}},
                    {"receiver": "hook", "group_wait": "soon", "group_by": ["team"]},
                ],
            }
        )

    where = [path for path, _ in raised.value.problems]
    assert ("receivers", 0, "webhook") in where
    assert ("receivers", 1, "sms") in where
    assert ("default_receiver",) in where
    assert ("routes", 0, "receiver") in where
    assert ("routes", 0, "match", "severity_at_least") in where
    assert ("routes", 1, "group_wait") in where
    assert ("routes", 1, "group_by", 0) in where
    assert "give url or url_env" in str(raised.value)
    assert "known: info, warning, critical" in str(raised.value)
