"""The label join in the worker: prediction and label records in, labels deltas out."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import schemas as s
from controller.stream.join import Joiner, JoinPipeline
from controller.stream.pending import PendingStore
from tests.factories import T0, make_prediction

PREDICTIONS = "rollout.predictions"
LABELS = "rollout.labels"
NOW = (T0 + timedelta(hours=1)).timestamp()


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None


def prediction(offset: int, request_id: str, cohort: str = "canary", **kw: object) -> Record:
    version = "v2" if cohort == "canary" else "v1"
    payload = make_prediction(request_id=request_id, cohort=cohort, version=version, **kw)
    return Record(PREDICTIONS, 0, offset, s.make_event(payload, source="fleet", time=T0).to_json())


def label(offset: int, request_id: str, value: float | str = 1.0) -> Record:
    payload = s.LabelReported(
        deployment_id="dep-1", request_id=request_id, label=value, event_time=T0
    )
    return Record(LABELS, 0, offset, s.make_event(payload, source="labeller", time=T0).to_json())


def joiner(path: Path) -> Joiner:
    return Joiner(PendingStore(path), predictions_topic=PREDICTIONS, labels_topic=LABELS)


def test_labels_join_their_predictions_into_one_delta_per_deployment(tmp_path: Path) -> None:
    join = joiner(tmp_path / "store")
    assert [] == join.add(
        [prediction(0, "a"), prediction(1, "b", cohort="baseline"), prediction(2, "c")], NOW
    )

    (delta,) = join.add([label(0, "a"), label(1, "b", 0.0), label(2, "zzz")], NOW)

    assert ("labels:rollout.labels:0:0:1:dep-1", "dep-1", "fraud", 2) == (
        delta.delta_id,
        delta.deployment_id,
        delta.model,
        delta.pairs,
    )
    folds = {(c, v): f for c, v, f in delta.folds}
    assert {("baseline", "v1"), ("canary", "v2")} == set(folds)
    assert 1 == folds[("canary", "v2")].stats.pairs
    # 0.42 against a label of 1: the Brier term (0.58)^2
    assert abs((folds[("canary", "v2")].stats.mean_loss or 0) - 0.58**2) < 1e-12
    assert {f"{PREDICTIONS}:0": 3, f"{LABELS}:0": 3} == {
        tp: join.store.offset(tp) for tp in (f"{PREDICTIONS}:0", f"{LABELS}:0")
    }


def test_a_label_that_comes_first_joins_when_its_prediction_arrives(tmp_path: Path) -> None:
    join = joiner(tmp_path / "store")
    assert [] == join.add([label(5, "early")], NOW)

    (delta,) = join.add([prediction(9, "early")], NOW)

    assert 1 == delta.pairs
    assert delta.delta_id == "labels:rollout.labels:0:5:5:dep-1"


def test_after_a_restart_a_label_read_again_gives_the_same_delta(tmp_path: Path) -> None:
    join = joiner(tmp_path / "store")
    join.add([prediction(0, "a"), prediction(1, "b")], NOW)
    first = join.add([label(0, "a"), label(1, "b")], NOW)
    join.store.close()

    again = joiner(tmp_path / "store").add([label(0, "a"), label(1, "b")], NOW)

    assert [d.delta_id for d in first] == [d.delta_id for d in again]
    assert [d.to_json() for d in first] == [d.to_json() for d in again]


def test_bad_records_and_failed_requests_are_counted_and_join_nothing(tmp_path: Path) -> None:
    join = joiner(tmp_path / "store")
    failed = prediction(1, "f", ok=False, error_type="timeout", prediction=None)

    deltas = join.add(
        [
            Record(PREDICTIONS, 0, 0, b"{not json"),
            failed,
            Record(LABELS, 0, 0, b"nope"),
            label(1, "f"),
        ],
        NOW,
    )

    assert [] == deltas
    assert (2, 1, 0) == (join.counters.skipped, join.counters.invalid_labels, join.counters.pairs)


def test_a_pair_no_quality_metric_takes_is_counted_not_folded(tmp_path: Path) -> None:
    join = joiner(tmp_path / "store")
    join.add([prediction(0, "a"), prediction(1, "b")], NOW)

    (delta,) = join.add([label(0, "a"), label(1, "b", "fraud")], NOW)

    assert 1 == delta.pairs  # a score against a class name: another kind than the first
    assert 1 == join.counters.unusable


def test_a_batch_record_pends_each_of_its_predictions(tmp_path: Path) -> None:
    join = joiner(tmp_path / "store")
    items = [
        s.Prediction(
            version="v2",
            cohort=s.Cohort.CANARY,
            request_id=f"b{i}",
            event_time=T0,
            latency_ms=10.0,
            prediction={"fraud": 0.25, "legit": 0.75},
        )
        for i in range(3)
    ]
    batch = s.PredictionBatch(deployment_id="dep-1", model="fraud", predictions=items)
    record = Record(PREDICTIONS, 0, 0, s.make_event(batch, source="fleet", time=T0).to_json())
    join.add([record], NOW)

    (delta,) = join.add([label(i, f"b{i}", "legit") for i in range(3)], NOW)

    ((_, _, fold),) = delta.folds
    assert (3, "multiclass") == (fold.stats.pairs, fold.stats.kind)


# ---- the pipeline: the store's work of a poll overlapped with the next poll's decode ---------


def _polls() -> list[list[Record]]:
    """Polls of predictions and labels, some labels before their predictions, some twice,
    some for requests never predicted, and a poll of labels alone."""
    rng = random.Random(7)
    polls: list[list[Record]] = []
    prediction_offset = label_offset = 0
    for poll in range(12):
        records = []
        for i in range(40):
            n = poll * 40 + i
            cohort = "canary" if n % 3 == 0 else "baseline"
            if poll != 5:
                records.append(prediction(prediction_offset, f"r{n}", cohort=cohort))
                prediction_offset += 1
            target = n + rng.randrange(-60, 30)  # earlier, later, or never predicted
            records.append(label(label_offset, f"r{max(target, 0)}", float(rng.random() < 0.5)))
            label_offset += 1
        rng.shuffle(records)
        polls.append(records)
    return polls


def test_the_pipeline_gives_the_deltas_and_store_of_the_joiner_alone(tmp_path: Path) -> None:
    alone, piped = joiner(tmp_path / "alone"), joiner(tmp_path / "piped")
    pipeline = JoinPipeline(piped)
    expected, found = [], []

    for records in _polls():
        expected.append(alone.add(records, NOW))
        found.append(pipeline.add(records, NOW))
    found.append(pipeline.flush())
    pipeline.close()

    assert found[0] == []  # a poll's deltas come out when the next poll starts
    assert expected == found[1:]
    assert sum(d.pairs for ds in expected for d in ds) > 200
    assert alone.counters == piped.counters
    for where in (f"{PREDICTIONS}:0", f"{LABELS}:0"):
        assert alone.store.offset(where) == piped.store.offset(where)
    for n in range(0, 480, 7):
        assert alone.store.get("dep-1", f"r{n}") == piped.store.get("dep-1", f"r{n}")


def test_the_store_work_runs_on_its_own_thread_and_calls_wait_for_it(tmp_path: Path) -> None:
    join = joiner(tmp_path / "store")
    pipeline = JoinPipeline(join)
    threads: list[str] = []
    add_labels = join.store.add_labels

    def recording(*args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread().name)
        return add_labels(*args, **kwargs)  # type: ignore[arg-type]

    join.store.add_labels = recording  # type: ignore[method-assign]
    pipeline.start([prediction(0, "a"), label(0, "a")], NOW)

    # a read through the pipeline sees the poll's writes: it runs after them
    assert 1 == pipeline.call(join.store.offset, f"{LABELS}:0").result()
    assert [threading.current_thread().name] != threads
    assert threads[0].startswith("join-store")
    (delta,) = pipeline.flush()
    assert 1 == delta.pairs
    assert [] == pipeline.flush()
    pipeline.close()
