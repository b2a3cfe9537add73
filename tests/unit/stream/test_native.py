"""The compiled lane (controller.stream._native) is sound and folds exactly like the Python path.

Soundness: whatever the compiled accumulator vouches for, `schemas.decode` accepts, and the
statistics it folds are `==` to folding the decoded predictions in Python. Completeness where it
matters: every record our producers write (the SDK, `make_event`) is vouched for, so the hot
path really is compiled. Under CI=true the extension must be built: these tests fail instead of
skipping when it is not.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas as s
from controller.core.stats.distribution import StatsConfig
from controller.stream import native
from controller.stream.deltas import DeploymentFold, Folder
from schemas.fast import MAX_FUTURE_SKEW
from tests.conftest import require_compiled_lane
from tests.factories import T0, make_event, make_prediction, sample_payloads
from tests.unit.schemas.test_decode import BAD_INPUTS
from tests.unit.schemas.test_fast import (
    IDENT_PATHS,
    ODD_STRINGS,
    TRACEPARENT,
    VALID,
    _set,
    mutated,
    mutations,
)


@pytest.fixture(autouse=True)
def _built() -> None:
    require_compiled_lane()


def native_fold(
    raws: list[bytes | None], now: datetime | None = None, config: StatsConfig | None = None
) -> tuple[list[str | None], dict[str, DeploymentFold]]:
    """The compiled path: what each record was vouched for as, and the folds."""
    config = config or StatsConfig()
    accumulator = native.accumulator(config)
    latest = (now or datetime(2200, 1, 1, tzinfo=UTC)) + MAX_FUTURE_SKEW
    refused = set(accumulator.add(raws, native.epoch_us(latest)))
    folder = Folder(config, accumulator)
    folds = {fold.deployment_id: fold for fold in folder.drain()}
    ids = [None if i in refused else _deployment_of(raw) for i, raw in enumerate(raws)]
    for deployment_id, fold in folds.items():  # the first and last record vouched for, counted
        mine = [raw for raw, found in zip(raws, ids, strict=True) if found == deployment_id]
        assert (mine[0], mine[-1], len(mine)) == (
            fold.sources.first,
            fold.sources.last,
            fold.sources.count,
        )
    return ids, folds


def _deployment_of(raw: bytes | None) -> str | None:
    event = s.decode(raw)
    return event.data.deployment_id if isinstance(event, s.Envelope) else None


def python_fold(raws: list[bytes], config: StatsConfig | None = None) -> dict[str, DeploymentFold]:
    """The reference: the full decoder's events, folded in Python."""
    folder = Folder(config or StatsConfig())
    for raw in raws:
        event = s.decode(raw)
        assert isinstance(event, s.Envelope), event
        folder.add(event)
    return {fold.deployment_id: fold for fold in folder.drain()}


def assert_same_folds(expected: dict[str, DeploymentFold], got: dict[str, DeploymentFold]) -> None:
    assert expected.keys() == got.keys()
    for deployment_id, fold in expected.items():
        assert (fold.model, fold.count) == (got[deployment_id].model, got[deployment_id].count)
        assert fold.cohorts == got[deployment_id].cohorts


def agrees(raw: bytes, now: datetime | None = None) -> bool:
    """Soundness for one record; whether the compiled path vouched for it."""
    (found,), folds = native_fold([raw], now)
    if found is None:
        assert {} == folds  # nothing of a refused record is recorded
        return False
    full = s.decode(raw, now=now)
    assert isinstance(full, s.Envelope), f"the compiled lane vouched for a rejected record: {full}"
    assert full.data.deployment_id == found
    assert_same_folds(python_fold([raw]), folds)
    return True


# ---- what our producers write is vouched for, and folded exactly --------------------------


def test_valid_prediction_records_are_vouched_for_and_folded_as_in_python() -> None:
    assert [agrees(raw) for raw in VALID] == [True, True]


def test_a_group_of_records_folds_like_the_python_path_record_by_record() -> None:
    items = [
        make_prediction(
            request_id=f"r{i}",
            cohort="canary" if i % 3 else "baseline",
            version="v2" if i % 3 else "v1",
            latency_ms=0.5 + i * 7.25,
            ok=i % 5 != 0,
            error_type=None if i % 5 else "timeout",
            prediction=None if i % 5 == 0 else (i / 40 if i % 2 else f"class-{i % 3}"),
            event_time=T0 + timedelta(milliseconds=13 * i),
        )
        for i in range(40)
    ]
    raws = [make_event(p, id=f"e{i}").to_json() for i, p in enumerate(items)]

    ids, folds = native_fold(raws)

    assert ["dep-1"] * 40 == ids
    assert_same_folds(python_fold(raws), folds)


def test_refused_records_in_a_group_leave_the_others_folded() -> None:
    good = [make_event(make_prediction(request_id=f"r{i}"), id=f"e{i}").to_json() for i in range(3)]

    ids, folds = native_fold([good[0], b"{not json", None, good[1], b"", good[2]])

    assert ["dep-1", None, None, "dep-1", None, "dep-1"] == ids
    assert_same_folds(python_fold(good), folds)


TIMES = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2150, 1, 1), timezones=st.just(UTC)
).map(lambda t: t.astimezone(timezone(timedelta(minutes=330))) if t.microsecond % 3 == 0 else t)
NUMBERS = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e280, max_value=1e280)
FEATURES = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | NUMBERS
    | st.sampled_from([0, 1, 0.0, -0.0, 1.0, 0.5])  # few distinct numbers: counted exactly
    | st.text(min_size=1, max_size=12),
    max_size=4,
)
PREDICTIONS = (
    st.none()
    | NUMBERS
    | st.sampled_from([0.0, -0.0, 1.0])
    | st.text(min_size=1, max_size=20)
    | st.dictionaries(st.text(max_size=6), st.floats(min_value=0, max_value=1), max_size=18)
)
IDENTS = st.text(
    st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12
) | st.sampled_from(["v1", "v 2", "módèle-ü", "x" * 256])


@st.composite
def served(draw: st.DrawFn, deployment_id: str) -> s.PredictionServed:
    ok = draw(st.booleans())
    return make_prediction(
        deployment_id=deployment_id,
        model=draw(st.sampled_from(["fraud", "ranker"])),
        version=draw(IDENTS),
        cohort=draw(st.sampled_from(["baseline", "canary", "shadow"])),
        request_id=draw(IDENTS),
        event_time=draw(TIMES),
        latency_ms=draw(
            st.floats(min_value=0, max_value=3_600_000) | st.sampled_from([0.0, 1e-9, 2e-9])
        ),
        ok=ok,
        error_type=None if ok else draw(st.sampled_from(["timeout", "oom", "é"])),
        prediction=draw(PREDICTIONS),
        features=draw(st.none() | FEATURES),
        user_key=draw(st.none() | IDENTS),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(st.sampled_from(["dep-a", "dep-b"]), st.data()), max_size=12),
    as_batch=st.booleans(),
    max_exact_values=st.sampled_from([2, 256]),
)
def test_generated_records_fold_exactly_like_the_python_path(
    rows: list[tuple[str, st.DataObject]], as_batch: bool, max_exact_values: int
) -> None:
    config = StatsConfig(max_exact_values=max_exact_values)
    items = [data.draw(served(deployment_id)) for deployment_id, data in rows]
    if as_batch and items:
        by_deployment: dict[str, list[s.PredictionServed]] = {}
        for p in items:
            by_deployment.setdefault(p.deployment_id, []).append(p)
        raws = [
            make_event(
                s.PredictionBatch(
                    deployment_id=d,
                    model=ps[0].model,
                    predictions=tuple(
                        s.Prediction(**p.model_dump(exclude={"deployment_id", "model"})) for p in ps
                    ),
                ),
                id=f"batch-{d}",
            ).to_json()
            for d, ps in by_deployment.items()
        ]
    else:
        raws = [make_event(p, id=f"e{i}").to_json() for i, p in enumerate(items)]

    ids, folds = native_fold(raws, config=config)

    vouched = [raw for raw, found in zip(raws, ids, strict=True) if found is not None]
    assert_same_folds(python_fold(vouched, config), folds)
    # the compiled path refuses only identifiers with a non-ASCII end here (left to Python)
    for raw, found in zip(raws, ids, strict=True):
        if found is None:
            assert "módèle-ü" in raw.decode()


def test_bucket_boundaries_and_exact_sums_match_python() -> None:
    """Values at and next to bucket edges (gamma**k), zero and the smallest positive, and sums
    that cancel: one key or one partial off would break the exact merge."""
    gamma = (1 + 0.01) / (1 - 0.01)
    edges = [gamma**k for k in range(-30, 400, 7)]
    values = [
        *edges,
        *(math.nextafter(v, math.inf) for v in edges),
        *(math.nextafter(v, 0) for v in edges),
        0.0,
        1e-9,
        2e-9,
    ]
    features = [{"x": 1e280}, {"x": -1e280}, {"x": 1e-300}, {"x": 2**53 + 1}, {"x": -(2**63)}]
    items = [
        make_prediction(
            request_id=f"r{i}",
            latency_ms=min(v, 3_600_000.0),
            prediction=-v if i % 2 else v,
            features=features[i % len(features)],
        )
        for i, v in enumerate(values)
    ]
    raws = [make_event(p, id=f"e{i}").to_json() for i, p in enumerate(items)]

    ids, folds = native_fold(raws)

    assert None not in ids
    assert_same_folds(python_fold(raws), folds)


def test_class_scores_fold_like_the_python_path_ties_included() -> None:
    cases: list[Any] = [
        {"a": 0.5, "b": 0.5},
        {"b": 0.2, "a": 0.7, "c": 0.1},
        {},
        {f"c{i}": 1 / 20 for i in range(20)},  # more than max_class_scores: arg-max only
        {"z": 1, "y": 0},
    ]
    raws = [
        make_event(make_prediction(request_id=f"r{i}", prediction=p), id=f"e{i}").to_json()
        for i, p in enumerate(cases)
    ]

    ids, folds = native_fold(raws)

    assert None not in ids
    assert_same_folds(python_fold(raws), folds)


@pytest.mark.parametrize("max_exact_values", [1, 3, 4, 256])
def test_exact_counts_fold_like_the_python_path_overflow_and_signed_zero_included(
    max_exact_values: int,
) -> None:
    """A binary and a half-step feature, an integer one sent as JSON integers and floats, and
    a zero of either sign (one value): counted exactly under the cap, overflowed past it."""
    values: list[Any] = [0, 1, 0.0, -0.0, 1.0, 1, 0]
    items = [
        make_prediction(
            request_id=f"r{i}",
            prediction=float(i % 3),
            features={"flag": values[i % len(values)], "step": (i % 4) / 2, "n": 50 + i % 5},
        )
        for i in range(40)
    ]
    raws = [make_event(p, id=f"e{i}").to_json() for i, p in enumerate(items)]
    config = StatsConfig(max_exact_values=max_exact_values)

    ids, folds = native_fold(raws, config=config)

    assert None not in ids
    assert_same_folds(python_fold(raws, config), folds)
    exact = folds["dep-1"].cohorts[("canary", "v2")].features["flag"].exact
    assert (max_exact_values < 2, 40) == (exact.overflowed, exact.total)


def test_the_sketch_settings_come_from_the_stats_config() -> None:
    config = StatsConfig(latency_alpha=0.05, value_alpha=0.002, min_positive=1e-3)
    raws = [
        make_event(
            make_prediction(request_id=f"r{i}", latency_ms=i * 0.37, prediction=i * 0.0007),
            id=f"e{i}",
        ).to_json()
        for i in range(30)
    ]

    _, folds = native_fold(raws, config=config)

    folder = Folder(config)
    for raw in raws:
        event = s.decode(raw)
        assert isinstance(event, s.Envelope)
        folder.add(event)
    assert_same_folds({f.deployment_id: f for f in folder.drain()}, folds)


# ---- soundness: nothing decode rejects is vouched for -----------------------------------


@pytest.mark.parametrize("raw", [c[1] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_every_rejection_of_decode_is_refused(raw: bytes) -> None:
    assert not agrees(raw)


@pytest.mark.parametrize(
    "payload",
    [p for p in sample_payloads() if not isinstance(p, s.PredictionServed | s.PredictionBatch)],
    ids=lambda p: type(p).__name__,
)
def test_other_event_types_are_left_to_the_python_path(payload: s.Payload) -> None:
    assert not agrees(make_event(payload).to_json())


def test_future_timestamps_are_refused_when_past_the_clock() -> None:
    late = make_event(make_prediction(event_time=T0 + timedelta(hours=1)), time=T0).to_json()
    sent_late = make_event(make_prediction(), time=T0 + timedelta(hours=1)).to_json()

    assert agrees(late)
    assert not agrees(late, now=T0)
    assert not agrees(sent_late, now=T0)
    assert agrees(late, now=T0 + timedelta(minutes=56))


@pytest.mark.parametrize("value", ODD_STRINGS, ids=repr)
@pytest.mark.parametrize("which,path", IDENT_PATHS, ids=lambda x: str(x))
def test_identifiers_with_blanks_or_line_breaks_are_left_to_python(
    which: int, path: tuple[Any, ...], value: str
) -> None:
    assert not agrees(_set(which, path, value))


@pytest.mark.parametrize("value", [TRACEPARENT + "\n", TRACEPARENT.upper(), TRACEPARENT[:-1]])
def test_a_malformed_traceparent_is_refused(value: str) -> None:
    assert not agrees(_set(0, ("traceparent",), value))


def test_a_well_formed_traceparent_is_accepted() -> None:
    assert agrees(_set(0, ("traceparent",), TRACEPARENT))


def _with(which: int, change: Any) -> bytes:
    doc = json.loads(VALID[which])
    change(doc)
    return json.dumps(doc).encode()


ODD_FORMS = {
    "time without zone": lambda d: d.update(time="2026-11-25T12:00:00"),
    "time with -00:00": lambda d: d.update(time="2026-11-25T12:00:00-00:00"),
    "time with seven digits": lambda d: d.update(time="2026-11-25T12:00:00.1234567Z"),
    "lowercase z": lambda d: d.update(time="2026-11-25T12:00:00z"),
    "date only": lambda d: d.update(time="2026-11-25"),
    "February 30": lambda d: d["data"].update(event_time="2026-02-30T00:00:00Z"),
    "leap second": lambda d: d["data"].update(event_time="2026-06-30T23:59:60Z"),
    "year 2300": lambda d: d["data"].update(event_time="2300-01-01T00:00:00Z"),
    "duplicate feature": lambda d: d["data"].update(features={"a": 1}),  # made duplicate below
    "latency as string": lambda d: d["data"].update(latency_ms="12"),
    "latency above an hour": lambda d: d["data"].update(latency_ms=3_600_000.5),
    "negative latency": lambda d: d["data"].update(latency_ms=-1),
    "boolean prediction": lambda d: d["data"].update(prediction=True),
    "score above 1": lambda d: d["data"].update(prediction={"a": 1.5}),
    "huge feature": lambda d: d["data"].update(features={"a": 1e300}),
    "ok with error": lambda d: d["data"].update(error_type="timeout"),
    "unknown field": lambda d: d["data"].update(colour="red"),
    "null specversion": lambda d: d.update(specversion=None),
    "subject of another": lambda d: d.update(subject="dep-2"),
    "null data": lambda d: d.update(data=None),
    "served with a null model": lambda d: d["data"].update(model=None),
    "batch: empty": lambda d: d["data"].update(predictions=[]),
    "batch: an item naming its deployment": lambda d: d["data"]["predictions"][0].update(
        deployment_id=d["data"]["deployment_id"]
    ),
    "batch: an item with a null model": lambda d: d["data"]["predictions"][0].update(model=None),
}


@pytest.mark.parametrize("name", list(ODD_FORMS))
def test_unusual_forms_are_never_vouched_for_wrongly(name: str) -> None:
    which = 1 if name.startswith("batch") else 0
    raw = _with(which, ODD_FORMS[name])
    if name == "duplicate feature":
        raw = raw.replace(b'{"a": 1}', b'{"a": 1, "a": 2}')

    assert not agrees(raw)


def test_escaped_strings_are_decoded_and_folded() -> None:
    raw = _with(0, lambda d: d["data"].update(features={"city": "Z\u00fcrich \\ \u2603"}))
    assert b"\\u" in raw  # json.dumps escapes non-ASCII

    assert agrees(raw)


def test_an_oversized_record_is_refused() -> None:
    raw = _with(0, lambda d: d.update(dataschema="x" * 2048))
    padded = raw[:-1] + b" " * (s.MAX_RECORD_BYTES - len(raw)) + b"}"

    assert agrees(raw)
    assert not agrees(padded + b" ")


@mutations
def test_mutated_records_are_never_vouched_for_wrongly(
    which: int, data: st.DataObject, value: Any, mode: str
) -> None:
    agrees(mutated(which, data, value, mode))
