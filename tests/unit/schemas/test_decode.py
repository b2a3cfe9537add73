"""decode(): bytes in, a typed event or a structured rejection out, never an exception."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

import schemas as s
from tests.factories import T0, make_event, make_prediction, sample_payloads


def _doc(payload: s.Payload | None = None) -> dict[str, Any]:
    event = make_event(payload or make_prediction())
    return json.loads(event.to_json())


def _bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("payload", sample_payloads(), ids=lambda p: type(p).__name__)
def test_every_event_type_round_trips_through_bytes(payload: s.Payload) -> None:
    event = make_event(payload)

    decoded = s.decode(event.to_json())

    assert event == decoded
    assert type(payload) is type(decoded.data)  # type: ignore[union-attr]


def test_record_key_is_the_deployment_id() -> None:
    event = make_event(make_prediction(deployment_id="dep-42"))

    assert event.key() == "dep-42"
    assert event.subject == "dep-42"


def _mutate(path: str, value: Any) -> bytes:
    doc = _doc()
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return _bytes(doc)


_DELETE = object()
_VALID = make_event(make_prediction()).to_json()

BAD_INPUTS: list[tuple[str, bytes, str, str]] = [
    # (case, raw bytes, expected substring of the reason, expected loc of the first error)
    ("not json", b"latency=12ms", "not JSON", "$"),
    ("truncated", _VALID[: len(_VALID) // 2], "truncated JSON", "$"),
    ("empty", b"", "empty record", ""),
    ("json array", b"[1, 2, 3]", "not a JSON object", "$"),
    ("wrong type of latency", _mutate("data.latency_ms", "12"), "latency_ms", "data.latency_ms"),
    ("boolean as string", _mutate("data.ok", "true"), "data.ok", "data.ok"),
    (
        "missing request id",
        _mutate("data.request_id", _DELETE),
        "Field required",
        "data.request_id",
    ),
    ("missing id", _mutate("id", _DELETE), "Field required", "id"),
    (
        "unknown event type",
        _mutate("type", "dev.rollout.prediction.guessed.v1"),
        "unknown event type 'dev.rollout.prediction.guessed.v1'",
        "$",
    ),
    ("no event type", _mutate("type", _DELETE), "missing event type", "$"),
    ("wrong specversion", _mutate("specversion", "0.3"), "specversion", "specversion"),
    (
        "negative latency",
        _mutate("data.latency_ms", -5),
        "greater than or equal to 0",
        "data.latency_ms",
    ),
    (
        "NaN latency",
        _VALID.replace(b'"latency_ms":120.0', b'"latency_ms":NaN'),
        "finite",
        "data.latency_ms",
    ),
    (
        "infinite latency",
        _VALID.replace(b'"latency_ms":120.0', b'"latency_ms":Infinity'),
        "finite",
        "data.latency_ms",
    ),
    (
        "wrong cohort",
        _mutate("data.cohort", "canari"),
        "'baseline', 'canary' or 'shadow'",
        "data.cohort",
    ),
    (
        "unknown field in data",
        _mutate("data.colour", "red"),
        "Extra inputs are not permitted",
        "data.colour",
    ),
    ("unknown envelope attribute", _mutate("partitionkey", "x"), "Extra inputs", "partitionkey"),
    ("naive timestamp", _mutate("time", "2026-11-25T12:00:00"), "timezone", "time"),
    ("not a timestamp", _mutate("data.event_time", "yesterday"), "datetime", "data.event_time"),
    ("error without type", _mutate("data.ok", False), "needs an error_type", "data"),
    ("subject differs from key", _mutate("subject", "dep-other"), "must equal the record key", "$"),
    ("bad traceparent", _mutate("traceparent", "00-xyz"), "traceparent", "traceparent"),
]


@pytest.mark.parametrize(
    ("raw", "reason", "loc"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_yields_a_structured_rejection_naming_the_problem(
    raw: bytes, reason: str, loc: str
) -> None:
    result = s.decode(raw)

    assert isinstance(result, s.Rejection), f"accepted: {raw[:80]!r}"
    messages = result.reason + " | " + " | ".join(e.message for e in result.errors)
    assert reason in messages
    if loc:
        assert loc == result.errors[0].loc


def test_oversized_payload_is_rejected_before_parsing() -> None:
    raw = b'{"pad": "' + b"x" * 2_000_000 + b'"}'

    result = s.decode(raw)

    assert isinstance(result, s.Rejection)
    assert result.reason.startswith("oversized payload: 2000")


def test_timestamp_far_in_the_future_is_rejected_when_the_clock_is_given() -> None:
    raw = make_event(make_prediction(event_time=T0 + timedelta(hours=2)), time=T0).to_json()

    lenient = s.decode(raw)
    strict = s.decode(raw, now=T0)

    assert isinstance(lenient, s.Envelope)
    assert isinstance(strict, s.Rejection)
    assert "in the future" in strict.reason
    assert strict.errors[0].loc == "data.event_time"


def test_future_timestamp_inside_a_batch_is_found() -> None:
    batch = sample_payloads()[s.PAYLOADS.index(s.PredictionBatch)]
    assert isinstance(batch, s.PredictionBatch)
    late = batch.predictions[1].model_copy(update={"event_time": T0 + timedelta(days=1)})
    raw = make_event(
        batch.model_copy(update={"predictions": (batch.predictions[0], late)}), time=T0
    ).to_json()

    result = s.decode(raw, now=T0)

    assert isinstance(result, s.Rejection)
    assert result.errors[0].loc == "data.predictions.1.event_time"


def test_rejection_carries_the_type_and_id_when_it_can_read_them() -> None:
    result = s.decode(_mutate("data.latency_ms", -1))

    assert isinstance(result, s.Rejection)
    assert result.event_type == s.PredictionServed.EVENT_TYPE
    assert result.event_id == "evt-PredictionServed"


def test_rejection_becomes_a_dead_letter_with_the_original_bytes() -> None:
    raw = b"\x00\xffnot json"
    rejection = s.decode(raw)
    assert isinstance(rejection, s.Rejection)

    letter = rejection.to_dead_letter(
        raw,
        rejected_at=T0,
        source_topic="rollout.predictions",
        partition=3,
        offset=17,
        key=b"dep-1",
    )

    import base64

    assert raw == base64.b64decode(letter.original_b64)
    assert (
        letter.source_topic,
        letter.partition,
        letter.offset,
        letter.key,
    ) == ("rollout.predictions", 3, 17, "dep-1")
    assert rejection.reason == letter.reason


@pytest.mark.parametrize("raw", [None, b"\xff\xfe", b"{" * 10_000, b'{"type": 3}', b"null"])
def test_decode_never_raises(raw: bytes | None) -> None:
    assert isinstance(s.decode(raw), s.Rejection)


def test_batch_respects_its_size_limit() -> None:
    item = sample_payloads()[s.PAYLOADS.index(s.PredictionBatch)].predictions[0]  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="at most 10000"):
        s.PredictionBatch(deployment_id="d", model="m", predictions=(item,) * (s.MAX_BATCH + 1))


def test_plan_steps_must_not_decrease() -> None:
    with pytest.raises(ValueError, match="must not decrease"):
        s.RolloutPlan(steps=(s.TrafficStep(canary_percent=50), s.TrafficStep(canary_percent=10)))


def test_numeric_profile_needs_one_proportion_per_bin() -> None:
    with pytest.raises(ValueError, match="needs 3 proportions"):
        s.FeatureProfile(name="x", kind="numeric", bin_edges=(1.0, 2.0), proportions=(0.5, 0.5))


def _deployment_with_feature(feature: dict[str, Any]) -> bytes:
    doc = _doc(sample_payloads()[s.PAYLOADS.index(s.DeploymentRequested)])
    doc["data"]["training_profile"]["features"] = [feature]
    return _bytes(doc)


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (
            {"kind": "continuous", "bin_edges": [1000.0, 1010.0], "proportions": [0.3, 0.4, 0.3]},
            "bin_edges 1000 and 1010 are closer than the serving sketch resolves",
        ),
        (
            {"kind": "integer", "bin_edges": [1.0, 2.5], "proportions": [0.3, 0.4, 0.3]},
            "bin_edges of an integer feature must be whole numbers",
        ),
        (
            {"kind": "binary", "bin_edges": [0.5], "proportions": [0.6, 0.4]},
            "bin_edges of a binary feature (values 0 and 1) must be [1] or [0, 1]",
        ),
    ],
)
def test_a_training_profile_the_skew_detector_cannot_honour_is_rejected_naming_the_field(
    feature: dict[str, Any], message: str
) -> None:
    rejection = s.decode(_deployment_with_feature({"name": "f", **feature}))

    assert isinstance(rejection, s.Rejection)
    assert "data.training_profile.features.0.bin_edges" == rejection.errors[0].loc
    assert message in rejection.reason


def test_a_binary_profile_must_leave_the_bin_below_zero_empty() -> None:
    feature = {
        "name": "f",
        "kind": "binary",
        "bin_edges": [0.0, 1.0],
        "proportions": [0.1, 0.5, 0.4],
    }

    rejection = s.decode(_deployment_with_feature(feature))

    assert isinstance(rejection, s.Rejection)
    assert "the bin below 0 must be empty" in rejection.reason


@pytest.mark.parametrize(
    ("kind", "edges", "proportions"),
    [
        ("continuous", [10.0, 100.0], [0.3, 0.5, 0.2]),
        ("integer", [1000.0, 1001.0, 1002.0], [0.3, 0.3, 0.2, 0.2]),
        ("binary", [1.0], [0.9, 0.1]),
        # the first version's kind, read as continuous and accepted with any ascending edges
        ("numeric", [1000.0, 1001.0], [0.3, 0.5, 0.2]),
    ],
)
def test_profiles_of_every_numeric_kind_decode(
    kind: str, edges: list[float], proportions: list[float]
) -> None:
    feature = {"name": "f", "kind": kind, "bin_edges": edges, "proportions": proportions}

    event = s.decode(_deployment_with_feature(feature))

    assert not isinstance(event, s.Rejection), event
    assert kind == event.data.training_profile.features[0].kind
