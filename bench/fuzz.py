"""Fuzz: mutated records through every decode path, offline, and what each made of them.

Seeds are valid events of every type (and prediction records of several shapes). Each record is
one seed mutated one way, chosen at random (seeded), or left valid (a tenth): bytes flipped,
inserted, deleted, truncated or repeated; a JSON node deleted, nulled, retyped, given a huge,
NaN, unicode or out-of-range value, or an unknown field; the event type swapped for another; a
node wrapped in arrays or objects 10 to 100,000 levels deep; and every record gets a key drawn
from hostile kinds (blanks at its ends, not UTF-8, empty, 20 KB, control characters). Every
record goes through:

- `schemas.decode` (the worker's full decoder): an event or a rejection, never an exception;
- the fast path (`schemas.fast.decode_predictions`): when it vouches for a record, `decode`
  must accept it too, with the same id and number of predictions (soundness);
- `controller.engine.dead_letter` for every rejection, with the record's key: the letter must
  build, fit the topic and decode back as a dead letter that keeps the original bytes and key;
- the prediction lane's group step (`PredictionLane.collect`, Python path and, when built, the
  compiled one) in groups of 200: every record that is not a valid prediction record must
  become a dead letter, and every valid one must be counted.

    python bench/fuzz.py --records 1000000

Targets: 0 exceptions, 0 unsound fast-path answers, 100 % of invalid records dead-lettered,
100 % of valid prediction records counted. Not a test (`tests/unit/test_fuzz_smoke.py` runs a
small one); it prints a table and the commit it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import ConsumerRecord  # noqa: E402

import schemas as s  # noqa: E402
from bench.common import commit  # noqa: E402
from controller.engine import MAX_DEAD_LETTER_BYTES, dead_letter  # noqa: E402
from controller.stream import native  # noqa: E402
from controller.stream.lane import PredictionLane  # noqa: E402
from schemas.fast import decode_predictions  # noqa: E402
from tests.factories import T0, make_event, make_prediction, sample_payloads  # noqa: E402

NOW = T0 + timedelta(minutes=1)
TOPIC = "rollout.predictions"
GROUP = 200
PREDICTION_TYPES = (s.PredictionServed.EVENT_TYPE, s.PredictionBatch.EVENT_TYPE)


def seeds() -> list[bytes]:
    """Valid records: one event of every type, and predictions of several shapes."""
    out = [make_event(p, id=f"seed-{i}").to_json() for i, p in enumerate(sample_payloads())]
    shapes: list[dict[str, Any]] = [
        {"prediction": 0.7},
        {"prediction": "fraud"},
        {"prediction": {"fraud": 0.8, "ok": 0.2}},
        {"ok": False, "error_type": "timeout", "prediction": None},
        {"features": {"amount": 12.5, "country": "FR", "is_new": True, "age": None}},
    ]
    for i, extra in enumerate(shapes):
        out.append(make_event(make_prediction(request_id=f"r-{i}", **extra), id=f"p-{i}").to_json())
    batch = s.PredictionBatch(
        deployment_id="dep-1",
        model="fraud",
        predictions=tuple(
            s.Prediction(
                **make_prediction(request_id=f"b-{i}").model_dump(
                    exclude={"deployment_id", "model"}
                )
            )
            for i in range(5)
        ),
    )
    out.append(make_event(batch, id="batch-0").to_json())
    return out


# ---- mutations ------------------------------------------------------------------------------

ODD_VALUES: list[Any] = [
    None, True, 0, -1, 1.5, 10**30, -(2**70), 1e308, "", "x", " dep-1 ", "\u0000", "\ud800",
    "é" * 300, "9" * 5000, [], {}, [1, [2, [3]]], {"a": {"b": {}}}, "NaN", "2026-13-45T99:00:00Z",
]  # fmt: skip
KEYS: list[bytes] = [
    b"dep-1", b"dep-1 ", b" dep-1", b"\xff\xfe", b"", b"k" * 20_000, b"dep\x00\x01", b"a\nb",
    "\u2028".encode(), b"\xed\xa0\x80",
]  # fmt: skip


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            out += _nodes(v, (*path, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> Any:
    if not path:
        return value
    node = doc
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def _deep(levels: int, kind: str, inner: Any) -> bytes:
    core = orjson.dumps(inner)
    if kind == "array":
        return b"[" * levels + core + b"]" * levels
    return b'{"a":' * levels + core + b"}" * levels


def mutate(raw: bytes, rng: random.Random, types: list[str]) -> tuple[str, bytes]:
    """One mutation of a valid record: (its kind, the bytes)."""
    kind = rng.choice(
        ["none", "flip", "insert", "delete", "truncate", "repeat", "json", "json", "type", "deep"]
    )
    if kind == "none":  # valid records between the others: they must all be processed
        return kind, raw
    b = bytearray(raw)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return kind, bytes(b)
    if kind == "insert":
        at = rng.randrange(len(b) + 1)
        return kind, bytes(
            b[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + b[at:]
        )
    if kind == "delete":
        at = rng.randrange(len(b))
        return kind, bytes(b[:at] + b[at + rng.randint(1, 32) :])
    if kind == "truncate":
        return kind, bytes(b[: rng.randrange(len(b))])
    if kind == "repeat":
        at, n = rng.randrange(len(b)), rng.randint(1, 64)
        return kind, bytes(b[:at] + b[at : at + n] * rng.randint(2, 50) + b[at:])
    doc = json.loads(raw)
    if kind == "type":
        doc["type"] = rng.choice(types)
        return kind, orjson.dumps(doc)
    path = rng.choice(_nodes(doc))
    if kind == "deep":
        levels = rng.choice([10, 63, 64, 65, 100, 1_000, 10_000, 100_000])
        wrapped = _deep(levels, rng.choice(["array", "object"]), 0)
        marker = "__DEEP__"
        doc = _set(doc, path, marker) if path else {"type": doc.get("type"), "x": marker}
        return kind, orjson.dumps(doc).replace(b'"__DEEP__"', wrapped)
    op = rng.random()
    if op < 0.3 and path:
        return "json", orjson.dumps(_set(doc, path, None, delete=True))
    if op < 0.4:
        node = doc
        for p in path:
            node = node[p]
        if isinstance(node, dict):
            node["colour"] = "red"
            return "json", orjson.dumps(doc)
    value = rng.choice(ODD_VALUES)
    text = json.dumps(_set(doc, path, "__ODD__") if path else "__ODD__")
    if value == "NaN":
        return "json", text.replace('"__ODD__"', "NaN").encode()
    return "json", text.replace('"__ODD__"', json.dumps(value)).encode()


# ---- the paths ------------------------------------------------------------------------------


@dataclass
class Tally:
    records: int = 0
    valid: int = 0
    valid_predictions: int = 0  # valid prediction records
    predictions: int = 0  # predictions in them
    rejected: int = 0
    exceptions: Counter[str] = field(default_factory=Counter)
    unsound: int = 0
    letters_bad: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    lanes: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: Counter[str] = field(default_factory=Counter)


def _record(offset: int, key: bytes, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TOPIC, 0, offset, 0, 0, key, value, None, len(key), len(value), [])


class _Producer:
    def __init__(self) -> None:
        self.letters = 0
        self.predictions = 0

    async def send(
        self, topic: str, *, key: bytes | None = None, value: bytes, headers: Any = None
    ) -> asyncio.Future[None]:
        if topic == "rollout.dead-letter":
            self.letters += 1
        elif orjson.loads(value).get("target", "rollout") == "rollout":  # not the monitor's copy
            self.predictions += orjson.loads(value)["count"]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _lane(compiled: bool) -> tuple[PredictionLane, _Producer]:
    lane = PredictionLane(
        None,
        topic=TOPIC,
        stats_topic="rollout.stats",
        dead_letter_topic="rollout.dead-letter",
        group_id="fuzz",
        clock=NOW.timestamp,
        native=compiled,
    )
    producer = _Producer()
    lane._producer = producer  # type: ignore[assignment]  # offline: no broker
    return lane, producer


def check_one(raw: bytes, key: bytes, tally: Tally) -> None:
    """decode, the fast path's soundness, and the dead letter of one record."""
    started = time.perf_counter()
    try:
        result = s.decode(raw, now=NOW)
    except Exception as exc:  # the finding this harness looks for
        tally.exceptions[f"decode: {type(exc).__name__}"] += 1
        return
    tally.seconds["decode"] += time.perf_counter() - started
    started = time.perf_counter()
    try:
        fast = decode_predictions(raw, now=NOW)
    except Exception as exc:
        tally.exceptions[f"fast: {type(exc).__name__}"] += 1
        fast = None
    tally.seconds["fast"] += time.perf_counter() - started
    if isinstance(result, s.Rejection):
        tally.rejected += 1
        tally.reasons[result.reason.split(":")[0][:40]] += 1
        if fast is not None:
            tally.unsound += 1
        started = time.perf_counter()
        try:
            letter = dead_letter(
                result, raw, topic=TOPIC, partition=0, offset=1, key=key, now=NOW.timestamp()
            )
            encoded = letter.encode()
            back = s.decode(encoded)
            ok = (
                isinstance(back, s.Envelope)
                and isinstance(back.data, s.DeadLetter)
                and len(encoded) + len(letter.key_bytes() or b"") <= MAX_DEAD_LETTER_BYTES
                and (
                    any(e.kind == "truncated" for e in back.data.errors)
                    or base64.b64decode(back.data.original_b64) == raw
                )
            )
            if not ok:
                tally.letters_bad += 1
        except Exception as exc:
            tally.exceptions[f"dead_letter: {type(exc).__name__}"] += 1
        tally.seconds["dead_letter"] += time.perf_counter() - started
        return
    tally.valid += 1
    if result.type in PREDICTION_TYPES:
        tally.valid_predictions += 1
        data = result.data
        count = len(data.predictions) if isinstance(data, s.PredictionBatch) else 1
        tally.predictions += count
        if fast is not None and (fast.event_id != result.id or len(fast.items) != count):
            tally.unsound += 1


def run_lane(records: list[tuple[bytes, bytes]], compiled: bool, tally: Tally) -> None:
    """Every record through the lane's group step, in groups of GROUP; what came out."""
    lane, producer = _lane(compiled)
    name = "compiled" if compiled else "python"
    started = time.perf_counter()

    async def go() -> None:
        for start in range(0, len(records), GROUP):
            group = [
                _record(start + i, key, value)
                for i, (key, value) in enumerate(records[start : start + GROUP])
            ]
            try:
                await lane.collect(group)
                await lane.flush()
            except Exception as exc:
                tally.exceptions[f"lane {name}: {type(exc).__name__}"] += 1

    asyncio.run(go())
    tally.seconds[f"lane {name}"] += time.perf_counter() - started
    tally.lanes[name] = Counter(letters=producer.letters, predictions=producer.predictions)


def fuzz(n: int, seed: int = 1, lanes: tuple[bool, ...] | None = None) -> Tally:
    rng = random.Random(seed)
    base = seeds()
    types = [p.EVENT_TYPE for p in s.PAYLOADS] + ["dev.rollout.guessed.v1", ""]
    tally = Tally()
    records: list[tuple[bytes, bytes]] = []
    for _ in range(n):
        kind, raw = mutate(rng.choice(base), rng, types)
        key = rng.choice(KEYS)
        tally.kinds[kind] += 1
        tally.records += 1
        check_one(raw, key, tally)
        records.append((key, raw))
    for compiled in (
        lanes if lanes is not None else (False, *((True,) if native.available() else ()))
    ):
        run_lane(records, compiled, tally)
    return tally


def invalid_for_the_lane(t: Tally) -> int:
    """Records the lane must dead-letter: rejected ones and valid events of other types."""
    return t.rejected + (t.valid - t.valid_predictions)


def report(t: Tally, args: argparse.Namespace, sha: str, wall: float) -> str:
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(t.kinds.items()))
    lines = [
        f"Command: `python bench/fuzz.py --records {args.records} --seed {args.seed}`",
        "",
        f"- Code: commit {sha}. {t.records:,} records ({kinds}); {wall:.0f} s wall.",
        f"- decode: {t.valid:,} valid ({t.valid_predictions:,} prediction records, "
        f"{t.predictions:,} predictions), {t.rejected:,} rejected.",
        "",
        "| check | result | target |",
        "|---|---|---|",
        f"| exceptions, any path | {sum(t.exceptions.values())} {dict(t.exceptions) or ''} | 0 |",
        f"| fast path vouched for a record decode rejects or reads otherwise | {t.unsound} | 0 |",
        f"| dead letters that failed to build, fit or decode back | {t.letters_bad} | 0 |",
    ]
    must = invalid_for_the_lane(t)
    for name, got in t.lanes.items():
        lines.append(
            f"| lane ({name}): dead letters / records to dead-letter | {got['letters']:,} / "
            f"{must:,} | equal |"
        )
        lines.append(
            f"| lane ({name}): predictions counted / valid predictions | "
            f"{got['predictions']:,} / {t.predictions:,} | equal |"
        )
    per = {k: 1e6 * v / max(1, t.records) for k, v in t.seconds.items()}
    lines += [
        "",
        "Time per record: " + ", ".join(f"{k} {v:.1f} µs" for k, v in sorted(per.items())),
    ]
    lines += [
        "",
        "Most frequent rejection reasons: "
        + "; ".join(f"{r} ({c:,})" for r, c in t.reasons.most_common(8)),
    ]
    return "\n".join(lines)


def quiet() -> None:
    """The lane logs every record it rejects: here that is most of them."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    sha = commit()
    quiet()
    started = time.monotonic()
    tally = fuzz(args.records, args.seed)
    print(report(tally, args, sha, time.monotonic() - started))


if __name__ == "__main__":
    main()
