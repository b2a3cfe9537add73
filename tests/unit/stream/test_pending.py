"""The pending store of the label join, on a real RocksDB in a temporary directory: labels join
their predictions in either order, once; redeliveries come out again and other labels are
duplicates; a sweep removes exactly what is older than the horizon or the label wait, reading
nothing else; and what was written survives a close, and a SIGKILL."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rocksdict

from controller.stream.pending import (
    COLUMN_FAMILIES,
    ExpiryCounts,
    ExpiryReport,
    JoinCounts,
    JoinedPair,
    Label,
    LabelOutcome,
    PendingPrediction,
    PendingStore,
)

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
HORIZON_S = 1000.0
LABEL_WAIT_S = 100.0


def make_prediction(
    request_id: str = "req-1",
    *,
    deployment_id: str = "dep-a",
    event_time: float = T0,
    prediction: Any = 0.8,
    cohort: str = "canary",
) -> PendingPrediction:
    return PendingPrediction(
        deployment_id=deployment_id,
        request_id=request_id,
        model="fraud",
        version="v2" if cohort == "canary" else "v1",
        cohort=cohort,
        event_time=event_time,
        prediction=prediction,
    )


def make_label(
    request_id: str = "req-1",
    *,
    offset: int = 0,
    deployment_id: str = "dep-a",
    event_time: float = T0 + 60,
    label: float | str = 1.0,
    topic_partition: str = "labels:0",
) -> Label:
    return Label(
        deployment_id=deployment_id,
        request_id=request_id,
        label=label,
        event_time=event_time,
        topic_partition=topic_partition,
        offset=offset,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PendingStore]:
    with PendingStore(tmp_path / "pending", horizon_s=HORIZON_S, label_wait_s=LABEL_WAIT_S) as s:
        yield s


# ---------------------------------------------------------------------------------------------
# joins
# ---------------------------------------------------------------------------------------------


def test_a_label_after_its_prediction_joins_it_into_one_pair(store: PendingStore) -> None:
    assert [] == store.add_predictions([make_prediction("req-1", event_time=T0)])

    outcome = store.add_labels([make_label("req-1", offset=7, event_time=T0 + 90, label=0.0)])

    expected = JoinedPair(
        deployment_id="dep-a",
        request_id="req-1",
        model="fraud",
        version="v2",
        cohort="canary",
        prediction=0.8,
        label=0.0,
        prediction_time=T0,
        label_time=T0 + 90,
        delay_s=90.0,
        label_partition="labels:0",
        label_offset=7,
    )
    assert (expected,) == outcome.pairs
    assert {"dep-a": JoinCounts(joined=1)} == outcome.counts
    entry = store.get("dep-a", "req-1")
    assert entry is not None
    assert ("labels:0", 7) == entry.joined_by


def test_a_label_before_its_prediction_waits_and_joins_when_the_prediction_comes(
    store: PendingStore,
) -> None:
    outcome = store.add_labels([make_label("req-1", offset=3, label="fraud")])
    assert () == outcome.pairs
    assert {"dep-a": JoinCounts(waiting=1)} == outcome.counts

    pairs = store.add_predictions([make_prediction("req-1"), make_prediction("req-2")])

    assert [("req-1", "fraud", 3)] == [(p.request_id, p.label, p.label_offset) for p in pairs]
    entry = store.get("dep-a", "req-1")
    assert entry is not None
    assert ("labels:0", 3) == entry.joined_by
    # the early label is gone: nothing is left to expire as unmatched
    report = store.expire(T0 + 60 + LABEL_WAIT_S + 10)
    assert ExpiryCounts() == report.total()


def test_another_label_for_a_joined_request_is_a_duplicate_without_a_pair(
    store: PendingStore,
) -> None:
    store.add_predictions([make_prediction("req-1")])
    store.add_labels([make_label("req-1", offset=1, label=1.0)])

    outcome = store.add_labels([make_label("req-1", offset=2, label=0.0)])

    assert () == outcome.pairs
    assert {"dep-a": JoinCounts(duplicate=1)} == outcome.counts
    entry = store.get("dep-a", "req-1")
    assert entry is not None
    assert ("labels:0", 1) == entry.joined_by  # the first label keeps the join


def test_a_second_early_label_for_the_same_request_is_a_duplicate(store: PendingStore) -> None:
    first = store.add_labels([make_label("req-1", offset=1, label=1.0)])
    second = store.add_labels([make_label("req-1", offset=2, label=0.0)])

    pairs = store.add_predictions([make_prediction("req-1")])

    assert {"dep-a": JoinCounts(waiting=1)} == first.counts
    assert {"dep-a": JoinCounts(duplicate=1)} == second.counts
    assert [(1.0, 1)] == [(p.label, p.label_offset) for p in pairs]


def test_a_redelivered_label_comes_out_as_the_same_pair_again(store: PendingStore) -> None:
    store.add_predictions([make_prediction("req-1")])
    label = make_label("req-1", offset=5)
    first = store.add_labels([label])

    again = store.add_labels([label])

    assert first.pairs == again.pairs
    assert {"dep-a": JoinCounts(joined=1)} == again.counts


def test_a_redelivered_early_label_waits_once(store: PendingStore) -> None:
    label = make_label("req-1", offset=5)
    store.add_labels([label])

    again = store.add_labels([label])
    pairs = store.add_predictions([make_prediction("req-1")])

    assert {"dep-a": JoinCounts(waiting=1)} == again.counts
    assert 1 == len(pairs)


def test_labels_for_the_same_request_in_one_batch_join_once(store: PendingStore) -> None:
    store.add_predictions([make_prediction("req-1")])

    outcome = store.add_labels(
        [
            make_label("req-1", offset=1),
            make_label("req-1", offset=1),  # redelivered within the batch
            make_label("req-1", offset=2),
            make_label("req-9", offset=3),
            make_label("req-9", offset=4),
        ]
    )

    assert [1, 1] == [p.label_offset for p in outcome.pairs]
    assert {"dep-a": JoinCounts(joined=2, duplicate=2, waiting=1)} == outcome.counts
    assert JoinCounts(joined=2, duplicate=2, waiting=1) == outcome.total()


def test_counts_are_kept_per_deployment(store: PendingStore) -> None:
    store.add_predictions([make_prediction("r", deployment_id="a")])

    outcome = store.add_labels(
        [make_label("r", deployment_id="a"), make_label("r", deployment_id="b")]
    )

    assert {"a": JoinCounts(joined=1), "b": JoinCounts(waiting=1)} == outcome.counts


def test_ids_cannot_run_into_each_other(store: PendingStore) -> None:
    """("ab", "c") and ("a", "bc") are different requests."""
    store.add_predictions([make_prediction("c", deployment_id="ab")])

    outcome = store.add_labels([make_label("bc", deployment_id="a")])

    assert {"a": JoinCounts(waiting=1)} == outcome.counts


def test_writing_a_prediction_twice_keeps_one_entry_and_its_join_mark(
    store: PendingStore,
) -> None:
    store.add_predictions([make_prediction("req-1"), make_prediction("req-1")])
    store.add_labels([make_label("req-1", offset=4)])

    store.add_predictions([make_prediction("req-1", prediction=0.1)])  # redelivered, or not

    entry = store.get("dep-a", "req-1")
    assert entry is not None
    assert (0.8, ("labels:0", 4)) == (entry.prediction.prediction, entry.joined_by)
    report = store.expire(T0 + HORIZON_S + 1)
    assert ExpiryCounts(joined=1) == report.total()
    assert 1 == report.scanned


@pytest.mark.parametrize(
    "prediction", [0.25, "fraud", {"fraud": 0.7, "ok": 0.3}], ids=["score", "class", "map"]
)
def test_every_kind_of_prediction_comes_back_as_it_was_written(
    store: PendingStore, prediction: Any
) -> None:
    written = make_prediction("req-1", prediction=prediction)
    store.add_predictions([written])

    entry = store.get("dep-a", "req-1")
    (pair,) = store.add_labels([make_label("req-1")]).pairs

    assert entry is not None
    assert (written, None) == (entry.prediction, entry.joined_by)
    assert prediction == pair.prediction


def test_numbers_come_out_as_floats_whichever_way_they_came_in(store: PendingStore) -> None:
    early = make_label("req-1", offset=1, label=1, event_time=int(T0) + 60)
    store.add_labels([early])
    (from_early,) = store.add_predictions([make_prediction("req-1", prediction=1)])
    (again,) = store.add_labels([early]).pairs

    for pair in (from_early, again):
        assert (1.0, T0 + 60, 1.0) == (pair.label, pair.label_time, pair.prediction)
        assert all(isinstance(x, float) for x in (pair.label, pair.label_time, pair.prediction))
    assert from_early == again


def test_a_synced_store_joins_as_any_other(tmp_path: Path) -> None:
    with PendingStore(tmp_path / "pending", sync=True) as store:
        store.add_predictions([make_prediction()])
        assert 1 == len(store.add_labels([make_label()]).pairs)
        assert store.settings()["sync"] is True


# ---------------------------------------------------------------------------------------------
# expiry
# ---------------------------------------------------------------------------------------------


def test_expiry_removes_predictions_past_the_horizon_counted_by_deployment(
    store: PendingStore,
) -> None:
    store.add_predictions(
        [
            make_prediction("old-1", deployment_id="a", event_time=T0),
            make_prediction("old-2", deployment_id="a", event_time=T0 + 0.5),
            make_prediction("old-3", deployment_id="b", event_time=T0 + 0.9),
            make_prediction("young", deployment_id="a", event_time=T0 + 1),
        ]
    )
    store.add_labels([make_label("old-2", deployment_id="a")])

    # the whole second T0 .. T0 + 1 must be older than the horizon
    assert ExpiryReport(now=T0 + HORIZON_S + 0.99) == store.expire(T0 + HORIZON_S + 0.99)
    report = store.expire(T0 + HORIZON_S + 1)

    assert {
        "a": ExpiryCounts(unlabelled=1, joined=1),
        "b": ExpiryCounts(unlabelled=1),
    } == report.counts
    assert 3 == report.scanned
    assert store.get("a", "old-1") is None
    assert store.get("a", "young") is not None
    assert ExpiryCounts(unlabelled=1) == store.expire(T0 + HORIZON_S + 2).total()


def test_expiry_removes_early_labels_after_the_label_wait_as_unmatched(
    store: PendingStore,
) -> None:
    store.add_labels(
        [
            make_label("lost", deployment_id="a", event_time=T0),
            make_label("late", deployment_id="a", event_time=T0 + 50),
        ]
    )

    report = store.expire(T0 + LABEL_WAIT_S + 1)
    pairs = store.add_predictions(
        [make_prediction("lost", deployment_id="a"), make_prediction("late", deployment_id="a")]
    )

    assert {"a": ExpiryCounts(unmatched=1)} == report.counts
    assert ["late"] == [p.request_id for p in pairs]


def test_expiry_reads_only_the_entries_it_removes(store: PendingStore) -> None:
    """The index is sorted by time and read under an upper bound: a sweep that removes ten
    entries reads ten, however many younger predictions and early labels are held."""
    store.add_predictions(
        [make_prediction(f"old-{i}", event_time=T0 + i * 0.01) for i in range(10)]
        + [make_prediction(f"young-{i}", event_time=T0 + 10 + i) for i in range(2000)]
    )
    store.add_labels(  # 41 to 46 s old at the sweep, within the label wait
        [make_label(f"early-{i}", event_time=T0 + HORIZON_S - 45 + i * 0.01) for i in range(500)]
    )

    report = store.expire(T0 + HORIZON_S + 1)

    assert 10 == report.scanned
    assert ExpiryCounts(unlabelled=10) == report.total()
    assert 0 == store.expire(T0 + HORIZON_S + 1).scanned  # and nothing is read twice


def test_an_early_label_whose_prediction_came_is_not_swept(store: PendingStore) -> None:
    store.add_labels([make_label("req-1", event_time=T0)])
    store.add_predictions([make_prediction("req-1", event_time=T0)])

    report = store.expire(T0 + LABEL_WAIT_S + 1)

    assert ExpiryReport(now=T0 + LABEL_WAIT_S + 1) == report


def test_a_sweep_larger_than_a_chunk_removes_everything_due(
    store: PendingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("controller.stream.pending.SWEEP_CHUNK", 7)
    store.add_predictions([make_prediction(f"r-{i}", event_time=T0 + i) for i in range(50)])

    report = store.expire(T0 + HORIZON_S + 30)

    assert (30, ExpiryCounts(unlabelled=30)) == (report.scanned, report.total())
    assert store.get("dep-a", "r-29") is None
    assert store.get("dep-a", "r-30") is not None


def test_a_sweep_counts_the_joined_predictions_of_every_chunk(
    store: PendingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Join marks are read by range beside the index, chunk by chunk: every third of 50
    predictions (two deployments) joined, swept in chunks of 7 that cut seconds in two."""
    monkeypatch.setattr("controller.stream.pending.SWEEP_CHUNK", 7)
    store.add_predictions(
        [
            make_prediction(f"r-{i}", deployment_id="ab"[i % 2], event_time=T0 + i // 2)
            for i in range(50)
        ]
    )
    store.add_labels(
        [make_label(f"r-{i}", deployment_id="ab"[i % 2], offset=i) for i in range(0, 50, 3)]
    )

    report = store.expire(T0 + HORIZON_S + 15)  # seconds 0 to 14: predictions 0 to 29

    joined = {d: sum(1 for i in range(0, 30, 3) if "ab"[i % 2] == d) for d in "ab"}
    assert {
        d: ExpiryCounts(unlabelled=15 - joined[d], joined=joined[d]) for d in "ab"
    } == report.counts
    assert 30 == report.scanned
    assert (None, None) == (store.get("a", "r-0"), store.get("b", "r-27"))
    # the marks of the predictions left are left: a redelivered label joins as before
    again = store.add_labels([make_label("r-30", deployment_id="a", offset=30)])
    assert {"a": JoinCounts(joined=1)} == again.counts
    assert 7 == len(list(store._open().joined.keys()))  # r-30 .. r-48: 7 marks left
    rest = store.expire(T0 + HORIZON_S + 100).total()
    assert ExpiryCounts(unlabelled=13, joined=7) == rest


def test_a_join_writes_a_mark_and_leaves_the_prediction_as_it_was_written(
    store: PendingStore,
) -> None:
    store.add_predictions([make_prediction("req-1"), make_prediction("req-2")])
    store.flush()

    store.add_labels([make_label("req-1", offset=3), make_label("req-1", offset=4)])

    written = {
        cf: store.property_int("rocksdb.num-entries-active-mem-table", cf)
        for cf in ("pending", "expiry", "joined")
    }
    assert {"pending": 0, "expiry": 0, "joined": 1} == written
    entry = store.get("dep-a", "req-1")
    assert entry is not None and ("labels:0", 3) == entry.joined_by


# ---------------------------------------------------------------------------------------------
# offsets, reopening, settings
# ---------------------------------------------------------------------------------------------


def test_offsets_are_written_alone_or_with_the_batch_they_account_for(
    store: PendingStore,
) -> None:
    assert store.offset("predictions:0") is None
    store.set_offset("predictions:0", 41)
    store.add_predictions([make_prediction()], offsets={"predictions:0": 42})
    store.add_labels([make_label()], offsets={"labels:3": 2**40})

    assert (42, 2**40) == (store.offset("predictions:0"), store.offset("labels:3"))


def test_a_reopened_store_holds_everything_written_before_close(tmp_path: Path) -> None:
    path = tmp_path / "pending"
    with PendingStore(path, horizon_s=HORIZON_S, label_wait_s=LABEL_WAIT_S) as store:
        store.add_predictions([make_prediction("joined"), make_prediction("alone")])
        store.add_labels([make_label("joined", offset=9), make_label("early", offset=10)])
        store.set_offset("labels:0", 11)

    with PendingStore(path, horizon_s=HORIZON_S, label_wait_s=LABEL_WAIT_S) as store:
        joined, alone = store.get("dep-a", "joined"), store.get("dep-a", "alone")
        assert joined is not None and alone is not None
        assert (("labels:0", 9), None) == (joined.joined_by, alone.joined_by)
        assert 11 == store.offset("labels:0")
        assert ["early"] == [
            p.request_id for p in store.add_predictions([make_prediction("early")])
        ]
        report = store.expire(T0 + HORIZON_S + 100)
        assert ExpiryCounts(unlabelled=1, joined=2) == report.total()


def test_a_store_of_the_first_layout_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """Layout 1 rewrote a joined prediction and had no join marks of their own."""
    path = tmp_path / "pending"
    old = ("pending", "expiry", "early", "offsets")
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    db = rocksdict.Rdict(str(path), options, column_families={cf: options for cf in old})
    db.close()

    with pytest.raises(ValueError, match=r"another layout \(version 1;.*remove its directory"):
        PendingStore(path)

    assert "joined" not in rocksdict.Rdict.list_cf(str(path))


def test_a_store_of_another_layout_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pending"
    with PendingStore(path) as store:
        store.add_predictions([make_prediction()])
    with PendingStore(path) as store:  # its own layout opens again
        assert store.get("dep-a", "req-1") is not None
        store._open().offsets.put(b"\x00layout", (99).to_bytes(8, "big"))

    with pytest.raises(ValueError, match=r"another layout \(version 99;"):
        PendingStore(path)
    with pytest.raises(ValueError, match="another layout"):  # the lock was released
        PendingStore(path)


def test_a_closed_store_refuses_calls_and_closes_twice(tmp_path: Path) -> None:
    store = PendingStore(tmp_path / "pending")
    store.close()
    store.close()

    with pytest.raises(ValueError, match="closed"):
        store.add_predictions([make_prediction()])


def read_rocksdb_options(path: Path) -> dict[str, dict[str, str]]:
    """RocksDB's own record of the options it opened with (the newest OPTIONS file)."""
    newest = max(path.glob("OPTIONS-*"), key=lambda p: int(p.name.split("-")[1]))
    sections: dict[str, dict[str, str]] = {}
    section: dict[str, str] = {}
    for line in newest.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = sections.setdefault(line, {})
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            section[key.strip()] = value.strip()
    return sections


def test_the_memory_settings_are_applied(tmp_path: Path) -> None:
    path = tmp_path / "pending"
    with PendingStore(path, block_cache_mb=8, write_buffer_mb=4) as store:
        capacity = {
            cf: store.property_int("rocksdb.block-cache-capacity", cf) for cf in COLUMN_FAMILIES
        }
        settings = store.settings()
    options = read_rocksdb_options(path)

    assert {cf: 8 << 20 for cf in COLUMN_FAMILIES} == capacity
    assert str(2 * 4 << 20) == options["[DBOptions]"]["db_write_buffer_size"]
    for cf in COLUMN_FAMILIES:
        family = options[f'[CFOptions "{cf}"]']
        assert (str(4 << 20), "2") == (
            family["write_buffer_size"],
            family["max_write_buffer_number"],
        )
        table = options[f'[TableOptions/BlockBasedTable "{cf}"]']
        # each table file's index and filter are held by its reader, not by the cache
        assert "false" == table["cache_index_and_filter_blocks"]
    for cf in ("pending", "early"):
        assert options[f'[TableOptions/BlockBasedTable "{cf}"]']["filter_policy"].startswith(
            "bloomfilter"
        )
    assert (8, 4, False) == (
        settings["block_cache_mb"],
        settings["write_buffer_mb"],
        settings["sync"],
    )


def test_the_families_read_by_key_have_small_blocks_with_a_hash_index(tmp_path: Path) -> None:
    """What the lookups at ten million pending predictions need (the module docstring): small
    data blocks with a hash index where the join reads by key, whole-key bloom filters, the
    predictions not compressed, LZ4 for the rest at every level."""
    path = tmp_path / "pending"
    with PendingStore(path):
        pass
    options = read_rocksdb_options(path)

    for cf in COLUMN_FAMILIES:
        family = options[f'[CFOptions "{cf}"]']
        expected = "kNoCompression" if cf == "pending" else "kLZ4Compression"
        assert (expected, expected) == (family["compression"], family["bottommost_compression"])
    for cf in ("pending", "joined", "early"):
        table = options[f'[TableOptions/BlockBasedTable "{cf}"]']
        assert ("2048", "kDataBlockBinaryAndHash", "true") == (
            table["block_size"],
            table["data_block_index_type"],
            table["whole_key_filtering"],
        )
        assert table["filter_policy"].startswith("bloomfilter")
    expiry = options['[TableOptions/BlockBasedTable "expiry"]']
    assert ("4096", "kDataBlockBinarySearch") == (
        expiry["block_size"],
        expiry["data_block_index_type"],
    )


@pytest.mark.parametrize("mmap_reads", [True, False])
def test_table_files_are_read_through_a_memory_map_unless_asked_not_to(
    tmp_path: Path, mmap_reads: bool
) -> None:
    path = tmp_path / "pending"
    with PendingStore(path, mmap_reads=mmap_reads) as store:
        store.add_predictions([make_prediction("req-1")])
        store.flush()  # a table file, read below
        assert 1 == len(store.add_labels([make_label("req-1")]).pairs)
        assert mmap_reads is store.settings()["mmap_reads"]

    assert str(mmap_reads).lower() == read_rocksdb_options(path)["[DBOptions]"]["allow_mmap_reads"]
    with PendingStore(path, mmap_reads=not mmap_reads) as store:  # the files are the same
        entry = store.get("dep-a", "req-1")
        assert entry is not None and ("labels:0", 0) == entry.joined_by


def test_approximate_pending_and_disk_bytes_grow_with_the_predictions(
    store: PendingStore,
) -> None:
    before = store.disk_bytes()
    store.add_predictions([make_prediction(f"r-{i}") for i in range(1000)])
    store.flush()

    assert 900 <= store.approximate_pending() <= 1100
    assert store.disk_bytes() > before


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "message"),
    [
        (make_prediction(""), "request_id"),
        (make_prediction(deployment_id=""), "deployment_id"),
        (make_prediction(event_time=math.nan), "event_time"),
        (make_prediction(event_time=math.inf), "event_time"),
        (make_prediction(event_time=-1.0), "event_time"),
        (make_prediction(prediction=math.nan), "prediction"),
        (make_prediction(prediction=True), "prediction"),
        (make_prediction(prediction={"a": math.inf}), "probability"),
    ],
)
def test_a_bad_prediction_is_refused_and_its_batch_not_written(
    store: PendingStore, prediction: PendingPrediction, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        store.add_predictions([make_prediction("good"), prediction])

    assert store.get("dep-a", "good") is None


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (make_label(""), "request_id"),
        (make_label(event_time=math.nan), "event_time"),
        (make_label(label=math.inf), "label"),
        (make_label(offset=-1), "offset"),
        (make_label(topic_partition=""), "topic_partition"),
    ],
)
def test_a_bad_label_is_refused(store: PendingStore, label: Label, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store.add_labels([label])


def test_a_non_finite_clock_is_refused(store: PendingStore) -> None:
    with pytest.raises(ValueError, match="now"):
        store.expire(math.nan)


def test_outcomes_round_trip_through_their_dicts(store: PendingStore) -> None:
    store.add_predictions([make_prediction("a", prediction={"x": 1.0})])
    outcome = store.add_labels([make_label("a"), make_label("b")])
    report = store.expire(T0 + HORIZON_S + 100)

    assert outcome == LabelOutcome.from_dict(outcome.to_dict())
    assert report == ExpiryReport.from_dict(report.to_dict())


# ---------------------------------------------------------------------------------------------
# a killed process
# ---------------------------------------------------------------------------------------------

BATCH = 40

#: Writes batch after batch (predictions, then labels for the even ones) and prints a batch's
#: number once both calls returned; never closes the store.
WRITER = f"""
import sys
from controller.stream.pending import Label, PendingPrediction, PendingStore

store = PendingStore(sys.argv[1])
for batch in range(1_000_000):
    store.add_predictions(
        [
            PendingPrediction("dep", f"b{{batch}}-{{i}}", "m", "v1", "canary", {T0} + batch, i / 10)
            for i in range({BATCH})
        ],
        offsets={{"predictions:0": (batch + 1) * {BATCH}}},
    )
    store.add_labels(
        [
            Label("dep", f"b{{batch}}-{{i}}", 1.0, {T0} + batch, "labels:0", batch * {BATCH} + i)
            for i in range(0, {BATCH}, 2)
        ]
    )
    print(batch, flush=True)
"""


def test_a_killed_writer_loses_nothing_it_was_told_to_write(tmp_path: Path) -> None:
    path = tmp_path / "pending"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if int(line) >= 25:
                break
        else:
            pytest.fail(f"the writer stopped: {child.stderr.read() if child.stderr else ''}")
        os.kill(child.pid, signal.SIGKILL)  # while it writes the next batches
        rest, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert -signal.SIGKILL == child.returncode
    written = max([25, *(int(x) for x in rest.split())])

    with PendingStore(path) as store:
        for batch in range(written + 1):
            for i in range(BATCH):
                entry = store.get("dep", f"b{batch}-{i}")
                assert entry is not None, (batch, i)
                expected = ("labels:0", batch * BATCH + i) if i % 2 == 0 else None
                assert expected == entry.joined_by, (batch, i)
        assert (store.offset("predictions:0") or 0) >= (written + 1) * BATCH
        # the batch in flight when the signal came: all of it, or none of it
        in_flight = [store.get("dep", f"b{written + 1}-{i}") for i in range(BATCH)]
        assert len({entry is None for entry in in_flight}) == 1
        marks = {entry.joined_by is None for entry in in_flight[::2] if entry is not None}
        assert len(marks) <= 1
