"""Pending predictions of the label join, on disk: one embedded RocksDB store per worker.

Labels (a click, a chargeback, a human review) arrive hours to days after their predictions and
are joined to them by (deployment_id, request_id). A worker holds about ten million predictions
waiting for their labels, too many for a dict, so they live in RocksDB (through `rocksdict`),
in five column families (layout version 2):

    pending   pending key -> the prediction (msgpack), written once
    expiry    kind + 8-byte big-endian event second + pending key -> b""
    joined    the prediction's expiry key -> its join mark: the joining label's offset (8 bytes,
              big-endian) and "topic:partition"
    early     pending key -> a label that arrived before its prediction (msgpack)
    offsets   "topic:partition" -> the next offset to read there (8 bytes, big-endian); and
              the layout's version

The pending key is the deployment id's length (2 bytes, big-endian), the deployment id and the
request id (UTF-8), so no id can run into another. The expiry index sorts by time: its kind
byte (b"p" a pending prediction, by the prediction's event time; b"l" an early label, by the
label's event time), then the whole event second, then the pending key. A join mark is keyed
like its prediction's index entry, so marks sort as the index does. A sweep (`expire(now)`) is
a bounded range scan of the index, from second 0 to the cutoff, and of the marks over the same
keys; it reads nothing else: not the pending values, not the entries younger than the cutoff
(the iterators' upper bounds stop them there). The index holds event seconds, not expiry
seconds, so a store reopened with another `horizon_s` applies it to every prediction already
held. A store of another layout (version 1 rewrote a joined prediction, and had no `joined`
family) is refused when opened, with what to do: remove it, and the join lane rebuilds it.

Joins, in `add_labels(labels)` (one batched multi-get of the pending keys, one of the join
marks of the hits, one of the early labels for the misses, one WriteBatch):

- a label whose prediction is pending and not joined joins it: the label's (topic-partition,
  offset) is written as the prediction's join mark (one small key; the prediction and its
  index entry are not rewritten) and a `JoinedPair` comes out;
- the same label again (the same topic-partition and offset: a redelivery after a restart)
  comes out as the same pair again, and the caller drops it downstream by its offsets;
- another label for a joined prediction is a `duplicate`: counted, no pair;
- a label whose prediction is not there waits in `early` (counted `waiting`), for `label_wait_s`
  of event time; the first such label wins, a different one after it is a `duplicate`.

`add_predictions(predictions)` writes them in one WriteBatch and joins any whose label waits in
`early` (the pair comes out there, the mark is written, the early label is removed). Writing a
prediction is idempotent: one already pending is left as it is (with its join mark), whatever
the new copy says. Joined predictions stay until their horizon, so that a late duplicate label
is known as one. `LabelOutcome.counts[deployment].joined` counts the pairs that came out,
redeliveries included.

`expire(now)` (time is an argument: the worker passes its clock, a replay the event time)
removes the predictions whose whole event second lies more than `horizon_s` before `now` (so a
prediction goes at most one second after it turns `horizon_s` old), counting per deployment
those never labelled (`unlabelled`) and those `joined` (the marks among the keys removed); and
the early labels more than `label_wait_s` old (`unmatched`). A label arriving after its
prediction expired waits, and is counted unmatched in turn. A sweep deletes in chunks of
`SWEEP_CHUNK` index entries, each a WriteBatch (point deletes in `pending` and `early`, one
range delete in the index and one in the marks).

Offsets: `add_predictions` and `add_labels` take the caller's `offsets` ("topic:partition" ->
next offset) and write them in the same WriteBatch as the data they account for, so a restart
reads `offset(topic_partition)` and resumes exactly after the last batch written.
`set_offset` writes one alone.

Durability: every write goes to RocksDB's write-ahead log before `add_*` returns, so a killed
process (SIGKILL, OOM) loses nothing it was told to write, and a batch is all or nothing. The
log is written to the operating system, not synced to the disk: a crash of the OS or the
machine can lose the last un-synced writes unless the store is opened with `sync=True` (each
write then waits for fsync: much slower).

Memory. The process's own memory is bounded by the settings and by the predictions held: one
LRU block cache of `block_cache_mb` shared by the column families (data blocks); memtables of
`write_buffer_mb`, at most two per column family and at most 2 x `write_buffer_mb` in all
(`db_write_buffer_size`); and each table file's index and bloom filter (10 bits a key, whole
keys), held by its reader outside the cache: about 3.1 bytes per prediction held (31 MB at ten
million). The WAL is bounded (4 x `write_buffer_mb`; beyond, the column families that hold old
logs are flushed). The table files are read through a memory map (`mmap_reads`, on by
default): the pages of them that lookups touch count in the process's RSS, but they are the
kernel's page cache, clean, dropped under memory pressure and read again from the disk; at
most the table files' size (about 130 bytes per prediction held). With `mmap_reads=False` they
are read by system calls into the page cache, which the RSS does not count. (Mapped, a disk
that fails a read kills the process, SIGBUS, where a system call would raise an error: the
worker restarts on its store, or on an empty one that it rebuilds.)

Reading by key at ten million predictions, where every label reads a random prediction: the
settings, and what each did in `bench/join.py` (docs/labels.md has the figures):

- each table file's index and filter held by its reader: in a 64 MB cache with the data blocks
  they were evicted and read again whole (megabytes a file) at the next lookup: 15,000 labels
  a second; partitioned index and filters in the cache did better, but with more cache
  lookups and read-ahead of index partitions than held ones;
- `pending` not compressed and read through the memory map: a block the cache lacks is read
  in place, with no system call, no decompression, no copy into the cache (with LZ4 and
  system calls about three quarters of the lookup time was reading, decompressing, allocating
  and caching blocks); 2 KB data blocks with a hash index; LZ4 for the other families at every
  level (zstd at the bottom level, where most data is, made a block read slower);
- a join writes one small key (the mark), in key order within the batch, where it rewrote the
  prediction and its index entry;
- a bigger block cache did not help: cold, it costs new memory to fill, and a lookup hits it
  about as often as its share of the data (64 MB of about 900 MB).

Figures at commit 6253edc, from a clean clone, `python bench/join.py` (10,000,000 pending
predictions, 1,000,000 labels in batches of 5,000, the default settings; 2 shared cores):
156,180 predictions written a second; 92,155 labels joined a second (92,202 per CPU-second of
the calling thread; the target, 100,000, is not met); a sweep removes 356,047 index entries a
second; on disk 131.0 bytes per pending prediction after the fill, 149.1 at the end; in memory
1.25 bytes of bloom filter and 1.85 of index per prediction, 32.5 MB of the 64 MB block cache
in use; peak RSS 1,176 MB, of which up to 915 MB are the mapped table files read by key.
At commit 56e88bd (no container kept per label in `add_labels`, so the cyclic GC does not
promote and re-traverse them: about 1.3 microseconds a label before, 0.3 after), the same
command: 91,817 labels a second, 94,782 per CPU-second, on a busier machine (156,180
predictions written a second above, 132,043 in that run); the target is still not shown met.
docs/labels.md has what each setting did.

Not thread-safe: one caller at a time (the worker's agent for its partitions).
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import msgspec
import rocksdict

#: The column families, by role.
PENDING_CF = "pending"
EXPIRY_CF = "expiry"
JOINED_CF = "joined"
EARLY_CF = "early"
OFFSETS_CF = "offsets"
COLUMN_FAMILIES = (PENDING_CF, EXPIRY_CF, JOINED_CF, EARLY_CF, OFFSETS_CF)
#: The on-disk layout's version, kept in `offsets` (under a key no "topic:partition" can be).
LAYOUT_VERSION = 2
_LAYOUT_KEY = b"\x00layout"

DEFAULT_HORIZON_S = 7 * 86400.0
DEFAULT_LABEL_WAIT_S = 3600.0
DEFAULT_BLOCK_CACHE_MB = 64
DEFAULT_WRITE_BUFFER_MB = 32
#: Memtables per column family (one filling, one being flushed).
MAX_WRITE_BUFFERS = 2
BLOOM_BITS_PER_KEY = 10
#: Data block bytes of the families read by key (RocksDB's default, 4 KB, for the index).
POINT_BLOCK_SIZE = 2048
#: Entries deleted per WriteBatch in a sweep.
SWEEP_CHUNK = 10_000

#: The expiry index's kinds: a pending prediction, an early label.
_KIND_PENDING = b"p"
_KIND_EARLY = b"l"
_MAX_ID_BYTES = 0xFFFF
_MAX_OFFSET = (1 << 63) - 1
_INF = math.inf
_MB = 1 << 20

PredictionValue = float | str | dict[str, float]
LabelValue = float | str


# ---------------------------------------------------------------------------------------------
# inputs and outputs
# ---------------------------------------------------------------------------------------------


def _to_dict(value: Any) -> dict[str, Any]:
    return asdict(value)


@dataclass(frozen=True, slots=True)
class PendingPrediction:
    """A served prediction waiting for its label."""

    deployment_id: str
    request_id: str
    model: str
    version: str
    cohort: str
    #: epoch seconds
    event_time: float
    prediction: PredictionValue

    to_dict = _to_dict

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingPrediction:
        return cls(**data)


class Label(msgspec.Struct, frozen=True, gc=False):
    """Ground truth for a request, and where it was read (topic-partition and offset). (A
    msgspec struct, not a dataclass: made for every label record, at a fifth of the cost.)"""

    deployment_id: str
    request_id: str
    label: LabelValue
    #: epoch seconds
    event_time: float
    #: "topic:partition"
    topic_partition: str
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Label:
        return cls(**data)


class JoinedPair(msgspec.Struct, frozen=True):
    """A prediction with its label: what model quality is folded from. (A msgspec struct, not
    a dataclass: made ten times faster, once per label joined.)"""

    deployment_id: str
    request_id: str
    model: str
    version: str
    cohort: str
    prediction: PredictionValue
    label: LabelValue
    prediction_time: float
    label_time: float
    #: label_time - prediction_time
    delay_s: float
    #: where the label was read: the caller drops a pair it has already seen by these
    label_partition: str
    label_offset: int

    def to_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JoinedPair:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """A prediction held by the store, and the label that joined it (topic-partition and
    offset), if one did."""

    prediction: PendingPrediction
    joined_by: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class JoinCounts:
    """What one `add_labels` call did with one deployment's labels."""

    #: pairs that came out (a redelivered joining label counts again)
    joined: int = 0
    #: another label for a request already joined or already waiting
    duplicate: int = 0
    #: labels whose prediction is not there (yet): parked as early labels
    waiting: int = 0

    to_dict = _to_dict

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JoinCounts:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class LabelOutcome:
    """The pairs joined by one `add_labels` call, in input order, and its counts by
    deployment."""

    pairs: tuple[JoinedPair, ...] = ()
    counts: dict[str, JoinCounts] = field(default_factory=dict)

    def total(self) -> JoinCounts:
        return JoinCounts(
            joined=sum(c.joined for c in self.counts.values()),
            duplicate=sum(c.duplicate for c in self.counts.values()),
            waiting=sum(c.waiting for c in self.counts.values()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": [p.to_dict() for p in self.pairs],
            "counts": {d: c.to_dict() for d, c in sorted(self.counts.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelOutcome:
        return cls(
            pairs=tuple(JoinedPair.from_dict(p) for p in data.get("pairs", [])),
            counts={d: JoinCounts.from_dict(c) for d, c in data.get("counts", {}).items()},
        )


@dataclass(frozen=True, slots=True)
class ExpiryCounts:
    """What one sweep removed for one deployment."""

    #: predictions that reached the horizon without a label
    unlabelled: int = 0
    #: predictions that reached the horizon joined
    joined: int = 0
    #: early labels that waited `label_wait_s` for a prediction that never came
    unmatched: int = 0

    to_dict = _to_dict

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpiryCounts:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ExpiryReport:
    """One sweep: its counts by deployment, and the index entries it read (`scanned`: the
    entries it removed, and no other)."""

    now: float
    counts: dict[str, ExpiryCounts] = field(default_factory=dict)
    scanned: int = 0

    def total(self) -> ExpiryCounts:
        return ExpiryCounts(
            unlabelled=sum(c.unlabelled for c in self.counts.values()),
            joined=sum(c.joined for c in self.counts.values()),
            unmatched=sum(c.unmatched for c in self.counts.values()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "counts": {d: c.to_dict() for d, c in sorted(self.counts.items())},
            "scanned": self.scanned,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpiryReport:
        return cls(
            now=float(data["now"]),
            counts={d: ExpiryCounts.from_dict(c) for d, c in data.get("counts", {}).items()},
            scanned=int(data.get("scanned", 0)),
        )


# ---------------------------------------------------------------------------------------------
# what is stored
# ---------------------------------------------------------------------------------------------


class _Stored(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A pending prediction's value (a msgpack array), written once: a join does not rewrite
    it, it writes a mark in `joined`."""

    model: str
    version: str
    cohort: str
    event_time: float
    prediction: float | str | dict[str, float]


class _Early(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """An early label's value."""

    label: float | str
    event_time: float
    topic_partition: str
    offset: int


_encode = msgspec.msgpack.Encoder().encode
_decode_stored = msgspec.msgpack.Decoder(_Stored).decode
_decode_early = msgspec.msgpack.Decoder(_Early).decode


def _pending_key(deployment_id: str, request_id: str) -> bytes:
    deployment = deployment_id.encode()
    if len(deployment) > _MAX_ID_BYTES:
        raise ValueError(f"a deployment id is at most {_MAX_ID_BYTES} bytes in UTF-8")
    return len(deployment).to_bytes(2, "big") + deployment + request_id.encode()


def _deployment_of(pending_key: bytes) -> str:
    size = int.from_bytes(pending_key[:2], "big")
    return pending_key[2 : 2 + size].decode()


def _split_key(pending_key: bytes) -> tuple[str, str]:
    size = int.from_bytes(pending_key[:2], "big")
    return pending_key[2 : 2 + size].decode(), pending_key[2 + size :].decode()


def _index_key(kind: bytes, event_time: float, pending_key: bytes) -> bytes:
    """The expiry index's key (and, of kind `_KIND_PENDING`, the join mark's key). Event times
    are >= 0, so `int` is the floor."""
    return kind + int(event_time).to_bytes(8, "big") + pending_key


def _mark(topic_partition: str, offset: int) -> bytes:
    """A join mark's value: the joining label's offset (8 bytes, big-endian) and its
    "topic:partition"."""
    return offset.to_bytes(8, "big") + topic_partition.encode()


def _read_mark(raw: bytes) -> tuple[str, int]:
    return raw[8:].decode(), int.from_bytes(raw[:8], "big")


def _check_id(what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")


def _check_time(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be epoch seconds (a number), got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be finite epoch seconds >= 0, got {value!r}")
    return float(value)


def _check_number(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _check_prediction(value: object) -> PredictionValue:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for name, share in value.items():
            if not isinstance(name, str):
                raise ValueError(f"a prediction's class names are strings, got {name!r}")
            _check_number(f"the probability of class {name!r}", share)
        return {name: float(share) for name, share in value.items()}
    return _check_number("a prediction", value)


def _check_prediction_item(item: PendingPrediction) -> _Stored:
    _check_id("deployment_id", item.deployment_id)
    _check_id("request_id", item.request_id)
    for what in ("model", "version", "cohort"):
        _check_id(what, getattr(item, what))
    return _Stored(
        model=item.model,
        version=item.version,
        cohort=item.cohort,
        event_time=_check_time("a prediction's event_time", item.event_time),
        prediction=_check_prediction(item.prediction),
    )


def _check_label_item(item: Label) -> tuple[LabelValue, float]:
    """The label's value and event time, as stored (a number as a float)."""
    _check_id("deployment_id", item.deployment_id)
    _check_id("request_id", item.request_id)
    _check_id("topic_partition", item.topic_partition)
    offset = item.offset
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= _MAX_OFFSET:
        raise ValueError(f"a label's offset must be an int in [0, 2**63), got {offset!r}")
    time = _check_time("a label's event_time", item.event_time)
    if isinstance(item.label, str):
        return item.label, time
    return _check_number("a label", item.label), time


#: A label's fields, in one call.
_label_fields = operator.attrgetter(
    "deployment_id", "request_id", "label", "event_time", "topic_partition", "offset"
)


def _label_keys(items: list[Label]) -> tuple[list[bytes], list[Label]]:
    """The labels' pending keys, and the labels checked: the common case (a `Label` with str
    ids, a float time and label, an int offset) by exact types inline and kept as it is,
    anything else by `_check_label_item` (which normalizes it into a new `Label`, or says what
    is wrong). No container per label is kept (see `add_labels`)."""
    keys: list[bytes] = []
    append = keys.append
    prefixes: dict[str, bytes] = {}  # deployment id -> its key prefix, for this call
    copied = False
    for number, (item, (deployment, request, value, time, partition, offset)) in enumerate(
        zip(items, map(_label_fields, items), strict=True)
    ):
        if not (
            type(item) is Label
            and type(deployment) is str
            and deployment
            and type(request) is str
            and request
            and type(partition) is str
            and partition
            and type(offset) is int
            and 0 <= offset <= _MAX_OFFSET
            and type(time) is float
            and 0.0 <= time < _INF
            and (type(value) is str or (type(value) is float and value - value == 0.0))
        ):
            value, time = _check_label_item(item)
            if not copied:
                items, copied = list(items), True
            items[number] = Label(deployment, request, value, time, partition, offset)
        prefix = prefixes.get(deployment)
        if prefix is None:
            prefix = prefixes[deployment] = _pending_key(deployment, "")
        append(prefix + request.encode())
    return keys, items


def _check_offsets(offsets: Mapping[str, int]) -> None:
    for topic_partition, offset in offsets.items():
        _check_id("topic_partition", topic_partition)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"the offset of {topic_partition} must be an int >= 0")


def _pair(
    key: bytes, stored: _Stored, label: LabelValue, time: float, tp: str, offset: int
) -> JoinedPair:
    deployment_id, request_id = _split_key(key)
    return JoinedPair(
        deployment_id=deployment_id,
        request_id=request_id,
        model=stored.model,
        version=stored.version,
        cohort=stored.cohort,
        prediction=stored.prediction,
        label=label,
        prediction_time=stored.event_time,
        label_time=time,
        delay_s=time - stored.event_time,
        label_partition=tp,
        label_offset=offset,
    )


# ---------------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------------


class _Handles:
    """The open database's column families: as `Rdict`s (reads) and as handles (WriteBatch).
    Each holds the database open; the store drops them all at `close()`."""

    __slots__ = (
        "db",
        "early",
        "early_cf",
        "expiry",
        "expiry_cf",
        "joined",
        "joined_cf",
        "offsets",
        "offsets_cf",
        "pending",
        "pending_cf",
    )

    def __init__(self, db: rocksdict.Rdict) -> None:
        self.db = db
        self.pending = db.get_column_family(PENDING_CF)
        self.expiry = db.get_column_family(EXPIRY_CF)
        self.joined = db.get_column_family(JOINED_CF)
        self.early = db.get_column_family(EARLY_CF)
        self.offsets = db.get_column_family(OFFSETS_CF)
        self.pending_cf = db.get_column_family_handle(PENDING_CF)
        self.expiry_cf = db.get_column_family_handle(EXPIRY_CF)
        self.joined_cf = db.get_column_family_handle(JOINED_CF)
        self.early_cf = db.get_column_family_handle(EARLY_CF)
        self.offsets_cf = db.get_column_family_handle(OFFSETS_CF)

    def families(self) -> dict[str, rocksdict.Rdict]:
        return dict(
            zip(
                COLUMN_FAMILIES,
                (self.pending, self.expiry, self.joined, self.early, self.offsets),
                strict=True,
            )
        )


def _keys_between(family: rocksdict.Rdict, lower: bytes, upper: bytes) -> Iterator[bytes]:
    """The keys in [lower, upper), read under the iterator's bounds (nothing past them)."""
    read = rocksdict.ReadOptions()  # held here while the iterator runs: it holds the bounds
    read.set_iterate_lower_bound(lower)
    read.set_iterate_upper_bound(upper)
    # from_key: rocksdict starts a bounded iteration at the first key, not the lower bound
    yield from cast(Iterator[bytes], family.keys(from_key=lower, read_opt=read))


def _multi_get(family: rocksdict.Rdict, keys: list[bytes]) -> list[bytes | None]:
    """RocksDB's batched MultiGet (rocksdict's `get` of a list): a value or None per key."""
    if not keys:
        return []
    return cast(list[bytes | None], family.get(cast(list[Any], keys)))


def _layout_error(path: Path, found: int | None) -> ValueError:
    return ValueError(
        f"the pending store at {path} has another layout (version {found or 1}; this code "
        f"reads version {LAYOUT_VERSION}): remove its directory, and the join lane rebuilds it "
        "from the predictions topic"
    )


class PendingStore:
    """Pending predictions and early labels in RocksDB (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        horizon_s: float = DEFAULT_HORIZON_S,
        label_wait_s: float = DEFAULT_LABEL_WAIT_S,
        block_cache_mb: int = DEFAULT_BLOCK_CACHE_MB,
        write_buffer_mb: int = DEFAULT_WRITE_BUFFER_MB,
        sync: bool = False,
        mmap_reads: bool = True,
    ) -> None:
        for what, value in (("horizon_s", horizon_s), ("label_wait_s", label_wait_s)):
            if _check_number(what, value) <= 0:
                raise ValueError(f"{what} must be > 0 seconds, got {value!r}")
        for what, size in (
            ("block_cache_mb", block_cache_mb),
            ("write_buffer_mb", write_buffer_mb),
        ):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"{what} must be an int >= 1 (megabytes), got {size!r}")
        self.path = Path(path)
        self.horizon_s = float(horizon_s)
        self.label_wait_s = float(label_wait_s)
        self.block_cache_mb = block_cache_mb
        self.write_buffer_mb = write_buffer_mb
        self.sync = sync
        self.mmap_reads = mmap_reads

        self._cache = rocksdict.Cache(block_cache_mb * _MB)
        options = self._options(bloom=False)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        options.set_db_write_buffer_size(MAX_WRITE_BUFFERS * write_buffer_mb * _MB)
        options.set_max_total_wal_size(4 * write_buffer_mb * _MB)
        options.set_keep_log_file_num(3)  # RocksDB's own info LOG files, not the WAL
        options.set_max_log_file_size(8 * _MB)
        # table files read through a memory map: a lookup that misses the block cache reads
        # the uncompressed `pending` block in place (no system call, no copy, no cache insert)
        options.set_allow_mmap_reads(mmap_reads)
        self.path.mkdir(parents=True, exist_ok=True)
        existed = (self.path / "CURRENT").exists()
        if existed and JOINED_CF not in rocksdict.Rdict.list_cf(str(self.path)):
            raise _layout_error(self.path, None)  # version 1 had no join marks of their own
        db = rocksdict.Rdict(
            str(self.path),
            options,
            column_families={
                PENDING_CF: self._options(bloom=True, deletes=True, uncompressed=True),
                EXPIRY_CF: self._options(bloom=False),
                JOINED_CF: self._options(bloom=True),
                EARLY_CF: self._options(bloom=True),
                OFFSETS_CF: self._options(bloom=False),
            },
        )
        self._h: _Handles | None = _Handles(db)
        self._write_options = rocksdict.WriteOptions()
        self._write_options.sync = sync
        if existed:
            raw = self._h.offsets.get(_LAYOUT_KEY)
            found = None if raw is None else int.from_bytes(raw, "big")
            if found != LAYOUT_VERSION:
                self.close()
                raise _layout_error(self.path, found)
        else:
            self._h.offsets.put(_LAYOUT_KEY, LAYOUT_VERSION.to_bytes(8, "big"))

    def _options(
        self, *, bloom: bool, deletes: bool = False, uncompressed: bool = False
    ) -> rocksdict.Options:
        """A column family's options: the shared block cache (data blocks only: each table
        file's index and filter are held by its reader), bounded memtables, LZ4; and (`bloom`:
        a family read by key) a whole-key bloom filter, a memtable bloom, small data blocks
        with a hash index."""
        options = rocksdict.Options(raw_mode=True)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(self._cache)
        table.set_cache_index_and_filter_blocks(False)
        if bloom:
            table.set_bloom_filter(BLOOM_BITS_PER_KEY, False)
            table.set_block_size(POINT_BLOCK_SIZE)
            table.set_data_block_index_type(rocksdict.DataBlockIndexType.binary_and_hash())
            table.set_data_block_hash_ratio(0.75)
            options.set_memtable_whole_key_filtering(True)
            options.set_memtable_prefix_bloom_ratio(0.05)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_size(self.write_buffer_mb * _MB)
        options.set_max_write_buffer_number(MAX_WRITE_BUFFERS)
        # LZ4 at every level (zstd at the bottom, where most predictions are, made a read of a
        # data block slower); `pending`, read at random by every label, not compressed
        compression = (
            rocksdict.DBCompressionType.none()
            if uncompressed
            else rocksdict.DBCompressionType.lz4()
        )
        options.set_compression_type(compression)
        options.set_bottommost_compression_type(compression)
        options.set_level_compaction_dynamic_level_bytes(True)
        if deletes:  # swept predictions leave tombstones: compact the files full of them
            options.add_compact_on_deletion_collector_factory(10_000, 5_000, 0.5)
        return options

    # -- writes ---------------------------------------------------------------------------

    def add_predictions(
        self,
        predictions: Iterable[PendingPrediction],
        *,
        offsets: Mapping[str, int] | None = None,
    ) -> list[JoinedPair]:
        """Write the predictions (one WriteBatch, with `offsets`); the pairs of those whose
        label was waiting, in input order. A prediction already held is left as it is."""
        h = self._open()
        items: dict[bytes, _Stored] = {}
        for item in predictions:
            stored = _check_prediction_item(item)
            items.setdefault(_pending_key(item.deployment_id, item.request_id), stored)
        if offsets:
            _check_offsets(offsets)
        keys = list(items)
        held = _multi_get(h.pending, keys)
        new = [key for key, raw in zip(keys, held, strict=True) if raw is None]
        batch = rocksdict.WriteBatch(raw_mode=True)
        pairs: list[JoinedPair] = []
        for key, early_raw in zip(new, _multi_get(h.early, new), strict=True):
            stored = items[key]
            index_key = _index_key(_KIND_PENDING, stored.event_time, key)
            if early_raw is None:
                batch.put(key, _encode(stored), h.pending_cf)
                batch.put(index_key, b"", h.expiry_cf)
                continue
            early = _decode_early(early_raw)
            batch.put(key, _encode(stored), h.pending_cf)
            batch.put(index_key, b"", h.expiry_cf)
            batch.put(index_key, _mark(early.topic_partition, early.offset), h.joined_cf)
            batch.delete(key, h.early_cf)
            batch.delete(_index_key(_KIND_EARLY, early.event_time, key), h.expiry_cf)
            pairs.append(
                _pair(
                    key, stored, early.label, early.event_time, early.topic_partition, early.offset
                )
            )
        self._put_offsets(h, batch, offsets)
        self._write(h, batch)
        return pairs

    def add_labels(
        self, labels: Iterable[Label], *, offsets: Mapping[str, int] | None = None
    ) -> LabelOutcome:
        """Join the labels to their predictions (see the module docstring): one multi-get of
        the pending keys, one of the join marks of the hits, one of the early labels for the
        misses, one WriteBatch (with `offsets`)."""
        h = self._open()
        keys, items = _label_keys(labels if type(labels) is list else list(labels))
        if offsets:
            _check_offsets(offsets)
        unique = list(dict.fromkeys(keys))
        # Held in flat dicts of untracked values (bytes, scalar msgspec structs), not in a
        # container per label: containers that outlive the call's young collections are
        # promoted and make the cyclic GC traverse the whole heap (a third of the Python time)
        found: dict[bytes, _Stored] = {}  # key -> the prediction
        mark_keys: dict[bytes, bytes] = {}  # key -> its join mark's key
        misses: list[bytes] = []
        for key, raw in zip(unique, _multi_get(h.pending, unique), strict=True):
            if raw is None:
                misses.append(key)
            else:
                held = found[key] = _decode_stored(raw)  # _index_key, inline (as _mark below)
                mark_keys[key] = b"p" + int(held.event_time).to_bytes(8, "big") + key
        # key -> its join mark as stored (offset, 8 bytes big-endian, and topic-partition):
        # a label's own mark is equal to it exactly when it is the joining label
        marked: dict[bytes, bytes] = {}
        hits = list(mark_keys)
        for key, mark in zip(hits, _multi_get(h.joined, list(mark_keys.values())), strict=True):
            if mark is not None:
                marked[key] = mark
        early: dict[bytes, _Early | None] = {
            key: None if raw is None else _decode_early(raw)
            for key, raw in zip(misses, _multi_get(h.early, misses), strict=True)
        }
        batch = rocksdict.WriteBatch(raw_mode=True)
        put, joined_cf, early_cf, expiry_cf = batch.put, h.joined_cf, h.early_cf, h.expiry_cf
        counts: dict[str, list[int]] = {}  # deployment -> [joined, duplicate, waiting]
        pairs: list[JoinedPair] = []
        append = pairs.append
        new_marks: dict[bytes, bytes] = {}  # mark key -> mark, written in key order below
        get_found, get_marked = found.get, marked.get
        for key, (deployment, request, label, time, partition, offset) in zip(
            keys, map(_label_fields, items), strict=True
        ):
            count = counts.get(deployment)
            if count is None:
                count = counts[deployment] = [0, 0, 0]
            stored = get_found(key)
            if stored is not None:
                own = offset.to_bytes(8, "big") + partition.encode()
                mark = get_marked(key)
                if mark is None:
                    marked[key] = new_marks[mark_keys[key]] = own
                elif mark != own:
                    count[1] += 1
                    continue
                count[0] += 1
                append(
                    JoinedPair(
                        deployment,
                        request,
                        stored.model,
                        stored.version,
                        stored.cohort,
                        stored.prediction,
                        label,
                        stored.event_time,
                        time,
                        time - stored.event_time,
                        partition,
                        offset,
                    )
                )
                continue
            waiting = early[key]
            if waiting is None:
                parked = early[key] = _Early(label, time, partition, offset)
                put(key, _encode(parked), early_cf)
                put(_index_key(_KIND_EARLY, time, key), b"", expiry_cf)
                count[2] += 1
            elif waiting.offset == offset and waiting.topic_partition == partition:
                count[2] += 1
            else:
                count[1] += 1
        # in key order: each insert into the memtable's skiplist starts where the last ended
        for mark_key in sorted(new_marks):
            put(mark_key, new_marks[mark_key], joined_cf)
        self._put_offsets(h, batch, offsets)
        self._write(h, batch)
        return LabelOutcome(
            pairs=tuple(pairs),
            counts={d: JoinCounts(*c) for d, c in counts.items()},
        )

    def expire(self, now: float) -> ExpiryReport:
        """Remove the predictions older than `horizon_s` and the early labels older than
        `label_wait_s` at `now` (epoch seconds), by range scans of the expiry index."""
        h = self._open()
        now = _check_number("now", now)
        counts: dict[str, list[int]] = {}  # deployment -> [unlabelled, joined, unmatched]
        scanned = 0
        for kind, cutoff in (
            (_KIND_PENDING, now - self.horizon_s),
            (_KIND_EARLY, now - self.label_wait_s),
        ):
            for chunk in self._expired(h, kind, cutoff):
                scanned += len(chunk)
                batch = rocksdict.WriteBatch(raw_mode=True)
                family = h.early_cf if kind == _KIND_EARLY else h.pending_cf
                column = 2 if kind == _KIND_EARLY else 0
                for index_key in chunk:
                    key = index_key[9:]
                    counts.setdefault(_deployment_of(key), [0, 0, 0])[column] += 1
                    batch.delete(key, family)
                # the chunk's index entries, [first, just after last): one range tombstone
                first, end = chunk[0], chunk[-1] + b"\x00"
                batch.delete_range(first, end, h.expiry_cf)
                if kind == _KIND_PENDING:  # the join marks of the same keys: counted, removed
                    for index_key in _keys_between(h.joined, first, end):
                        count = counts[_deployment_of(index_key[9:])]
                        count[0] -= 1
                        count[1] += 1
                    batch.delete_range(first, end, h.joined_cf)
                self._write(h, batch)
        return ExpiryReport(
            now=now,
            counts={d: ExpiryCounts(*c) for d, c in sorted(counts.items())},
            scanned=scanned,
        )

    @staticmethod
    def _expired(h: _Handles, kind: bytes, cutoff: float) -> Iterator[list[bytes]]:
        """The index keys of `kind` whose whole event second is before `cutoff`, in chunks,
        read under the iterator's bounds (nothing at or past the cutoff is read)."""
        if cutoff < 1:
            return
        chunk: list[bytes] = []
        for index_key in _keys_between(
            h.expiry, kind + bytes(8), kind + math.floor(cutoff).to_bytes(8, "big")
        ):
            chunk.append(index_key)
            if len(chunk) >= SWEEP_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def set_offset(self, topic_partition: str, offset: int) -> None:
        """Record the next offset to read on "topic:partition"."""
        h = self._open()
        _check_offsets({topic_partition: offset})
        batch = rocksdict.WriteBatch(raw_mode=True)
        self._put_offsets(h, batch, {topic_partition: offset})
        self._write(h, batch)

    @staticmethod
    def _put_offsets(
        h: _Handles, batch: rocksdict.WriteBatch, offsets: Mapping[str, int] | None
    ) -> None:
        for topic_partition, offset in (offsets or {}).items():
            batch.put(topic_partition.encode(), offset.to_bytes(8, "big"), h.offsets_cf)

    def _write(self, h: _Handles, batch: rocksdict.WriteBatch) -> None:
        if not batch.is_empty():
            h.db.write(batch, self._write_options)

    # -- reads ----------------------------------------------------------------------------

    def offset(self, topic_partition: str) -> int | None:
        """The offset last recorded for "topic:partition", or None."""
        raw = self._open().offsets.get(topic_partition.encode())
        return None if raw is None else int.from_bytes(raw, "big")

    def get(self, deployment_id: str, request_id: str) -> PendingEntry | None:
        """The prediction held for this request, with its join mark; None when none is."""
        h = self._open()
        _check_id("deployment_id", deployment_id)
        _check_id("request_id", request_id)
        key = _pending_key(deployment_id, request_id)
        raw = h.pending.get(key)
        if raw is None:
            return None
        stored = _decode_stored(raw)
        mark = h.joined.get(_index_key(_KIND_PENDING, stored.event_time, key))
        prediction = PendingPrediction(
            deployment_id=deployment_id,
            request_id=request_id,
            model=stored.model,
            version=stored.version,
            cohort=stored.cohort,
            event_time=stored.event_time,
            prediction=stored.prediction,
        )
        return PendingEntry(prediction, None if mark is None else _read_mark(mark))

    def approximate_pending(self) -> int:
        """RocksDB's estimate of the predictions held (`rocksdb.estimate-num-keys`): exact for
        memtables, approximate after flushes and deletes."""
        return self.property_int("rocksdb.estimate-num-keys") or 0

    def disk_bytes(self) -> int:
        """Bytes of the store's files on disk (tables, write-ahead logs, manifests, info logs)."""
        return sum(entry.stat().st_size for entry in os.scandir(self.path) if entry.is_file())

    def property_int(self, name: str, column_family: str = PENDING_CF) -> int | None:
        """A RocksDB integer property of a column family (e.g. "rocksdb.block-cache-usage")."""
        return self._family(column_family).property_int_value(name)

    def property(self, name: str, column_family: str = PENDING_CF) -> str | None:
        """A RocksDB string property of a column family (e.g. "rocksdb.stats")."""
        return self._family(column_family).property_value(name)

    def settings(self) -> dict[str, Any]:
        """The store's settings, for a log line or a benchmark's header."""
        return {
            "horizon_s": self.horizon_s,
            "label_wait_s": self.label_wait_s,
            "block_cache_mb": self.block_cache_mb,
            "write_buffer_mb": self.write_buffer_mb,
            "max_write_buffers": MAX_WRITE_BUFFERS,
            "db_write_buffer_mb": MAX_WRITE_BUFFERS * self.write_buffer_mb,
            "bloom_bits_per_key": BLOOM_BITS_PER_KEY,
            "point_block_size": POINT_BLOCK_SIZE,
            "compression": "none for pending, lz4 for the others",
            "sync": self.sync,
            "mmap_reads": self.mmap_reads,
        }

    def _family(self, name: str) -> rocksdict.Rdict:
        families = self._open().families()
        if name not in families:
            raise ValueError(f"unknown column family {name!r}; known: {', '.join(families)}")
        return families[name]

    # -- life -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the memtables to table files (the WAL already holds their writes)."""
        for family in self._open().families().values():
            family.flush()

    def close(self) -> None:
        """Flush and close. RocksDB's lock is released when the last handle goes, so every
        one is dropped here. Closing twice is allowed."""
        h, self._h = self._h, None
        if h is None:
            return
        for family in h.families().values():
            family.close()
        h.db.close()

    def _open(self) -> _Handles:
        if self._h is None:
            raise ValueError(f"the pending store at {self.path} is closed")
        return self._h

    def __enter__(self) -> PendingStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "COLUMN_FAMILIES",
    "ExpiryCounts",
    "ExpiryReport",
    "JoinCounts",
    "JoinedPair",
    "Label",
    "LabelOutcome",
    "PendingEntry",
    "PendingPrediction",
    "PendingStore",
]
