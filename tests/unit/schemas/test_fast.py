"""The fast path accepts only what `schemas.decode` accepts, with the same values."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas as s
from schemas.fast import decode_label, decode_predictions
from tests.factories import T0, make_event, make_prediction, sample_payloads
from tests.unit.schemas.test_decode import BAD_INPUTS

BATCH = sample_payloads()[s.PAYLOADS.index(s.PredictionBatch)]
VALID = [make_event(make_prediction()).to_json(), make_event(BATCH).to_json()]


def _as_plain(item: Any) -> dict[str, Any]:
    names = (
        "version",
        "cohort",
        "request_id",
        "event_time",
        "latency_ms",
        "ok",
        "error_type",
        "prediction",
        "features",
        "user_key",
    )
    return {n: str(getattr(item, n)) if n == "cohort" else getattr(item, n) for n in names}


def _agrees(raw: bytes) -> None:
    """Soundness: whatever the fast path accepts, decode accepts with the same values."""
    fast = decode_predictions(raw)
    if fast is None:
        return
    full = s.decode(raw)
    assert isinstance(full, s.Envelope), f"fast path accepted what decode rejects: {full}"
    data = full.data
    items = data.predictions if isinstance(data, s.PredictionBatch) else (data,)
    assert (full.id, full.type, data.deployment_id, data.model, full.traceparent) == (
        fast.event_id,
        fast.event_type,
        fast.deployment_id,
        fast.model,
        fast.traceparent,
    )
    assert [_as_plain(i) for i in items] == [_as_plain(i) for i in fast.items]


@pytest.mark.parametrize("raw", VALID, ids=["single", "batch"])
def test_valid_prediction_records_take_the_fast_path_with_the_same_values(raw: bytes) -> None:
    assert decode_predictions(raw) is not None
    _agrees(raw)


@pytest.mark.parametrize("fast", [decode_predictions, decode_label], ids=lambda f: f.__name__)
@pytest.mark.parametrize("raw", [c[1] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_every_rejection_of_decode_is_refused_by_the_fast_paths(
    raw: bytes, fast: Callable[[bytes], object]
) -> None:
    assert fast(raw) is None


@pytest.mark.parametrize(
    "payload",
    [p for p in sample_payloads() if not isinstance(p, s.PredictionServed | s.PredictionBatch)],
    ids=lambda p: type(p).__name__,
)
def test_other_event_types_are_left_to_decode(payload: s.Payload) -> None:
    assert decode_predictions(make_event(payload).to_json()) is None


def test_a_future_timestamp_is_refused_when_the_clock_is_given() -> None:
    raw = make_event(make_prediction(event_time=T0 + timedelta(hours=1)), time=T0).to_json()

    assert decode_predictions(raw) is not None
    assert decode_predictions(raw, now=T0) is None


def test_a_batch_item_with_an_error_type_but_ok_is_refused() -> None:
    doc = json.loads(VALID[1])
    doc["data"]["predictions"][0]["error_type"] = "timeout"

    assert decode_predictions(json.dumps(doc).encode()) is None


TRACEPARENT = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
ODD_STRINGS = ["x\n", "a\nb", "\nx", " x", "x\t", "\u00a0x", "x\u2003", "x\x1f", "\u3000"]
IDENT_PATHS = [
    (0, ("id",)),
    (0, ("subject",)),
    (0, ("data", "deployment_id")),
    (0, ("data", "model")),
    (0, ("data", "version")),
    (0, ("data", "request_id")),
    (1, ("data", "predictions", 1, "version")),
    (1, ("data", "predictions", 0, "request_id")),
]


def _set(which: int, path: tuple[Any, ...], value: Any) -> bytes:
    doc = json.loads(VALID[which])
    *parents, last = path
    node = doc
    for p in parents:
        node = node[p]
    node[last] = value
    if path == ("data", "deployment_id"):
        doc.pop("subject", None)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("value", ODD_STRINGS, ids=repr)
@pytest.mark.parametrize("which,path", IDENT_PATHS, ids=lambda x: str(x))
def test_identifiers_with_blanks_or_line_breaks_never_pass_the_fast_path_alone(
    which: int, path: tuple[Any, ...], value: str
) -> None:
    raw = _set(which, path, value)

    _agrees(raw)
    if isinstance(s.decode(raw), s.Rejection):
        assert decode_predictions(raw) is None


@pytest.mark.parametrize("value", [TRACEPARENT + "\n", TRACEPARENT.upper(), TRACEPARENT[:-1]])
def test_a_malformed_traceparent_is_refused(value: str) -> None:
    raw = _set(0, ("traceparent",), value)

    assert isinstance(s.decode(raw), s.Rejection)
    assert decode_predictions(raw) is None


def test_a_well_formed_traceparent_is_kept() -> None:
    raw = _set(0, ("traceparent",), TRACEPARENT)

    _agrees(raw)
    assert TRACEPARENT == getattr(decode_predictions(raw), "traceparent", None)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300)
    | st.sampled_from(
        [
            "",
            " x",
            "x ",
            "canary",
            "2026-11-25T12:00:00Z",
            "2026-11-25T12:00:00",
            "1.0",
            "application/json",
            TRACEPARENT,
            TRACEPARENT + "\n",
            *ODD_STRINGS,
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:2]):
            out += _paths(v, (*prefix, i))
    return out


def mutations(test: Any) -> Any:
    """Runs `test(which, data, value, mode)` on 400 generated mutations (see `mutated`)."""
    return settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])(
        given(
            which=st.sampled_from([0, 1]),
            data=st.data(),
            value=_json_values,
            mode=st.sampled_from(["set", "delete", "add"]),
        )(test)
    )


@mutations
def test_mutated_records_never_pass_the_fast_path_alone(
    which: int, data: st.DataObject, value: Any, mode: str
) -> None:
    _agrees(mutated(which, data, value, mode))


def mutated(
    which: int, data: st.DataObject, value: Any, mode: str, valid: list[bytes] = VALID
) -> bytes:
    """A valid record (`valid[which]`) with one field set to `value`, deleted, or a field
    added next to it."""
    doc = json.loads(valid[which])
    path = data.draw(st.sampled_from(_paths(doc)))
    *parents, last = path
    node = doc
    for p in parents:
        node = node[p]
    if mode == "delete" and isinstance(node, dict):
        del node[last]
    elif mode == "add" and isinstance(node, dict):
        node[str(last) + "_extra"] = value
    else:
        node[last] = value
    return json.dumps(doc).encode()


def test_an_oversized_record_is_left_to_decode_which_rejects_it() -> None:
    doc = json.loads(VALID[0])
    raw = json.dumps(doc).encode()
    padded = raw[:-1] + b" " * (s.MAX_RECORD_BYTES - len(raw) + 1) + b"}"

    assert decode_predictions(raw) is not None
    assert isinstance(s.decode(padded), s.Rejection)
    assert decode_predictions(padded) is None


# ---- label records ----------------------------------------------------------------------------

LABELS = [
    make_event(
        s.LabelReported(deployment_id="dep-1", request_id="r-1", label=1.0, event_time=T0),
        time=T0,
    ).to_json(),
    make_event(
        s.LabelReported(deployment_id="dep-1", request_id="r-2", label="fraud", event_time=T0),
        time=T0,
    ).to_json(),
]


def _label_agrees(raw: bytes) -> None:
    """Soundness: whatever the label fast path accepts, decode accepts with the same values
    (and the same types: a number label is a float)."""
    fast = decode_label(raw)
    if fast is None:
        return
    full = s.decode(raw)
    assert isinstance(full, s.Envelope), f"fast path accepted what decode rejects: {full}"
    assert isinstance(full.data, s.LabelReported)
    data = full.data
    assert (data.deployment_id, data.request_id, data.label, data.event_time) == (
        fast.deployment_id,
        fast.request_id,
        fast.label,
        fast.event_time,
    )
    assert type(data.label) is type(fast.label)


@pytest.mark.parametrize("raw", LABELS, ids=["number", "class"])
def test_valid_label_records_take_the_fast_path_with_the_same_values(raw: bytes) -> None:
    assert decode_label(raw) is not None
    _label_agrees(raw)


@pytest.mark.parametrize(
    "payload",
    [p for p in sample_payloads() if not isinstance(p, s.LabelReported)],
    ids=lambda p: type(p).__name__,
)
def test_other_event_types_are_left_to_decode_by_the_label_fast_path(payload: s.Payload) -> None:
    assert decode_label(make_event(payload).to_json()) is None


@pytest.mark.parametrize(
    "label,fast_label",
    [(b"1", 1.0), (b"0", 0.0), (b"2.5", 2.5), (b"true", None), (b"1e999", None), (b"null", None)],
)
def test_a_label_number_is_a_float_and_what_decode_refuses_is_refused(
    label: bytes, fast_label: float | None
) -> None:
    raw = LABELS[0].replace(b'"label":1.0', b'"label":' + label)
    assert raw != LABELS[0]

    found = decode_label(raw)

    assert fast_label == (None if found is None else found.label)
    assert isinstance(s.decode(raw), s.Rejection) == (fast_label is None)
    _label_agrees(raw)


def test_a_label_record_from_the_future_is_refused_when_the_clock_is_given() -> None:
    raw = make_event(
        s.LabelReported(deployment_id="d", request_id="r", label=1.0, event_time=T0),
        time=T0 + timedelta(hours=1),
    ).to_json()

    assert decode_label(raw) is not None
    assert decode_label(raw, now=T0) is None
    assert isinstance(s.decode(raw, now=T0), s.Rejection)


@pytest.mark.parametrize("value", ODD_STRINGS, ids=repr)
@pytest.mark.parametrize(
    "path", [("id",), ("subject",), ("data", "deployment_id"), ("data", "request_id")]
)
def test_label_identifiers_with_blanks_or_line_breaks_never_pass_the_fast_path_alone(
    path: tuple[Any, ...], value: str
) -> None:
    doc = json.loads(LABELS[0])
    *parents, last = path
    node = doc
    for p in parents:
        node = node[p]
    node[last] = value
    raw = json.dumps(doc).encode()

    _label_agrees(raw)
    if isinstance(s.decode(raw), s.Rejection):
        assert decode_label(raw) is None


@mutations
def test_mutated_label_records_never_pass_the_fast_path_alone(
    which: int, data: st.DataObject, value: Any, mode: str
) -> None:
    _label_agrees(mutated(which, data, value, mode, LABELS))
