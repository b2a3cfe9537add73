"""Nothing stalls or fools the controller: any key, any nesting, any size.

Every record the worker cannot process becomes a dead letter with its reason and its original
bytes, and the records around it are processed: through `schemas.decode`, the fast path, the
dead letter itself, the prediction lane's group and the rollout agent.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson
import pytest

import schemas as s
from controller.engine import MAX_DEAD_LETTER_BYTES, dead_letter
from controller.stream.deltas import StatsDelta
from schemas.decode import MAX_DEPTH, nesting_exceeds
from schemas.fast import decode_predictions
from tests.factories import make_event, make_prediction
from tests.unit.stream.test_agent import DEPLOYMENTS, deployment_record, make_agent
from tests.unit.stream.test_lane import TOPIC, compiled, make_lane  # noqa: F401  # a fixture

HOSTILE_KEYS = [
    b"dep-1 ",
    b" dep-1",
    b"\xff\xfe",
    b"",
    b"k" * 10_240,
    b"dep\x00\x1f\x7f",
    b"\n",
    "d\u00e9p-\u2028".encode(),
    b"\xed\xa0\x80",  # an encoded surrogate: not UTF-8
]


def nested(depth: int, kind: str) -> bytes:
    opening, closing = (b"[", b"]") if kind == "array" else (b'{"a":', b"}")
    return opening * depth + b"1" + closing * depth


def prediction_batch_with_data(data: bytes) -> bytes:
    """An otherwise valid prediction batch whose `data` is `data`."""
    envelope = orjson.loads(make_event(make_prediction()).to_json())
    envelope["type"] = s.PredictionBatch.EVENT_TYPE
    envelope["data"] = "DATA"
    return orjson.dumps(envelope).replace(b'"DATA"', data)


def deep_records(depth: int) -> dict[str, bytes]:
    return {
        f"{kind}-{where}": raw
        for kind in ("array", "object")
        for where, raw in (
            ("alone", nested(depth, kind)),
            ("in-data", prediction_batch_with_data(nested(depth, kind))),
            ("before-type", b'{"data":' + nested(depth, kind) + b',"type":"x"}'),
        )
    }


DEEP = {f"{d}-{name}": raw for d in (1_000, 100_000) for name, raw in deep_records(d).items()}


# ---- the depth guard --------------------------------------------------------------------------


def test_nesting_is_measured_by_brackets_outside_strings() -> None:
    assert not nesting_exceeds(nested(MAX_DEPTH, "array"))
    assert nesting_exceeds(nested(MAX_DEPTH + 1, "array"))
    assert nesting_exceeds(nested(MAX_DEPTH + 1, "object"))
    # brackets inside strings are text, whatever escapes surround them
    assert not nesting_exceeds(b'{"a":"' + b"[" * 500 + b'"}')
    assert not nesting_exceeds(b'{"a\\"":"' + b"{" * 500 + b'\\\\"}')
    # ... and cannot hide real depth either
    hidden = b'{"a":"' + b"]" * 500 + b'","b":' + nested(MAX_DEPTH + 1, "array") + b"}"
    assert nesting_exceeds(hidden)
    # a truncated record counts what a parser would enter
    assert nesting_exceeds(b'{"a":' * (MAX_DEPTH + 1))


@pytest.mark.parametrize("raw", DEEP.values(), ids=DEEP.keys())
def test_deep_nesting_is_rejected_naming_the_limit(raw: bytes) -> None:
    result = s.decode(raw)

    assert isinstance(result, s.Rejection)
    assert f"nest more than {MAX_DEPTH} levels" in result.reason
    assert ["too_deep"] == [e.kind for e in result.errors]


@pytest.mark.parametrize("raw", DEEP.values(), ids=DEEP.keys())
def test_the_fast_path_leaves_deep_nesting_to_decode(raw: bytes) -> None:
    assert decode_predictions(raw) is None


def test_rejecting_a_record_nested_100000_deep_takes_milliseconds() -> None:
    raw = nested(100_000, "object")  # 600 kB
    started = time.perf_counter()
    assert isinstance(s.decode(raw), s.Rejection)
    assert decode_predictions(raw) is None
    assert time.perf_counter() - started < 0.5


def test_valid_records_are_not_too_deep() -> None:
    raw = make_event(make_prediction(prediction={"fraud": 0.2, "ok": 0.8})).to_json()
    assert not nesting_exceeds(raw, 5)
    assert isinstance(s.decode(raw), s.Envelope)
    assert decode_predictions(raw) is not None


# ---- the dead letter --------------------------------------------------------------------------


def letter_of(key: bytes | None, value: bytes | None = b"{not json") -> dict[str, Any]:
    rejection = s.decode(value)
    assert isinstance(rejection, s.Rejection)
    record = dead_letter(
        rejection, value, topic="rollout.deployments", partition=0, offset=7, key=key, now=0.0
    )
    assert key == record.key_bytes()  # keyed like the original record
    raw = record.encode()
    assert len(raw) + len(key or b"") <= MAX_DEAD_LETTER_BYTES
    decoded = s.decode(raw)  # a dead letter is itself a valid event
    assert isinstance(decoded, s.Envelope), decoded
    return orjson.loads(raw)  # type: ignore[no-any-return]


def original_key(letter: dict[str, Any]) -> bytes | None:
    """The key of the rejected record, from its dead letter."""
    data = letter["data"]
    if "key" in data:
        return data["key"].encode()  # type: ignore[no-any-return]
    coded = [e["message"] for e in data["errors"] if e["kind"] == "key_base64"]
    return base64.b64decode(coded[0]) if coded else None


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=lambda k: repr(k[:12]))
def test_a_dead_letter_is_built_for_any_key_and_keeps_it_exactly(key: bytes) -> None:
    letter = letter_of(key)

    assert key == original_key(letter)
    assert b"{not json" == base64.b64decode(letter["data"]["original_b64"])
    assert "not JSON" in letter["data"]["reason"]


def test_only_an_identifier_key_is_the_subject() -> None:
    assert "dep-1" == letter_of(b"dep-1").get("subject")
    assert "subject" not in letter_of(b"dep-1 ")
    assert "subject" not in letter_of(b"\xff\xfe")


def test_a_letter_too_large_for_the_topic_keeps_the_first_bytes_and_says_so() -> None:
    value = b"x" * (s.MAX_RECORD_BYTES - 10)
    letter = letter_of(b"dep-1", value)["data"]

    assert len(value) == letter["original_size"]
    kept = base64.b64decode(letter["original_b64"])
    assert value.startswith(kept) and len(kept) > 600_000
    assert ["truncated"] == [e["kind"] for e in letter["errors"] if e["loc"] == "$"][-1:]


# ---- the agent --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=lambda k: repr(k[:12]))
def test_the_agent_dead_letters_a_bad_record_with_any_key_and_goes_on(key: bytes) -> None:
    agent, table, publisher = make_agent()

    async def run() -> None:
        await agent.handle(DEPLOYMENTS, 0, 1, key, b'{"specversion": "1.0"')
        await agent.handle(DEPLOYMENTS, 0, 2, key, nested(1_000, "object"))
        await agent.handle(DEPLOYMENTS, 0, 3, b"dep-1", deployment_record())

    asyncio.run(run())

    letters = [(k, orjson.loads(v)) for t, k, v, _ in publisher.sent if t is s.Topic.DEAD_LETTER]
    assert [key, key] == [k for k, _ in letters]
    assert ["truncated JSON", "nested too deep"] == [
        letter["data"]["reason"].split(":")[0] for _, letter in letters
    ]
    assert b"dep-1" in table  # the next record was processed


# ---- the lane ---------------------------------------------------------------------------------


def lane_record(offset: int, value: bytes, key: bytes = b"dep-1") -> Any:
    from aiokafka import ConsumerRecord

    return ConsumerRecord(TOPIC, 0, offset, 0, 0, key, value, None, len(key), len(value), [])


def test_a_deep_or_oddly_keyed_record_in_a_group_is_dead_lettered_and_the_rest_counted(
    compiled: bool,  # noqa: F811  # the fixture
) -> None:
    lane, producer = make_lane(compiled)
    good = [make_event(make_prediction(request_id=f"req-{i}")).to_json() for i in range(3)]
    bad = {
        11: (b"dep-1", nested(1_000, "object")),
        13: (b"dep-1 ", prediction_batch_with_data(nested(100_000, "array"))),
        15: (b"\xff\xfe", b"{not json"),
    }
    records = [
        lane_record(10, good[0]),
        lane_record(11, bad[11][1], bad[11][0]),
        lane_record(12, good[1]),
        lane_record(13, bad[13][1], bad[13][0]),
        lane_record(14, good[2]),
        lane_record(15, bad[15][1], bad[15][0]),
    ]

    async def run() -> None:
        await lane.collect(records)
        await lane.flush()

    asyncio.run(run())

    deltas = [
        d
        for t, _, v in producer.sent
        if t == "rollout.stats" and (d := StatsDelta.from_json(v)).target == "rollout"
    ]
    letters = [(k, orjson.loads(v)) for t, k, v in producer.sent if t == "rollout.dead-letter"]
    assert [3] == [d.count for d in deltas]
    assert [(k, f"dlq:{TOPIC}:0:{o}") for o, (k, _) in bad.items()] == [
        (k, letter["id"]) for k, letter in letters
    ]
    assert [bad[o][1] for o in bad] == [
        base64.b64decode(letter["data"]["original_b64"]) for _, letter in letters
    ]
    assert all("nest more than" in letter["data"]["reason"] for _, letter in letters[:2])
    assert 3 == lane.counters.rejected


def test_an_unexpected_error_on_one_record_dead_letters_it_and_keeps_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lane, producer = make_lane(False)
    poison = make_event(make_prediction(request_id="req-poison")).to_json()
    real = lane._collect_one

    def collect_one(record: Any, *args: Any) -> Any:
        if record.value == poison:
            raise RecursionError("maximum recursion depth exceeded")
        return real(record, *args)

    monkeypatch.setattr(lane, "_collect_one", collect_one)
    records = [
        lane_record(1, make_event(make_prediction(request_id="req-1")).to_json()),
        lane_record(2, poison),
        lane_record(3, make_event(make_prediction(request_id="req-3")).to_json()),
    ]

    async def run() -> None:
        await lane.collect(records)
        await lane.flush()

    asyncio.run(run())

    deltas = [
        d
        for t, _, v in producer.sent
        if t == "rollout.stats" and (d := StatsDelta.from_json(v)).target == "rollout"
    ]
    letters = [orjson.loads(v) for t, _, v in producer.sent if t == "rollout.dead-letter"]
    assert [2] == [d.count for d in deltas]
    assert [True] == [
        letter["data"]["reason"].startswith("internal error while processing: RecursionError")
        for letter in letters
    ]
    assert [poison] == [base64.b64decode(letter["data"]["original_b64"]) for letter in letters]
