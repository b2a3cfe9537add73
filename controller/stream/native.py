"""The prediction lane's compiled decode-and-fold, when it is built.

The Rust extension `controller.stream._native` (source in native/, built by `pip install` when
a Rust toolchain is present) decodes and validates prediction records and folds their
predictions straight into column summaries (`controller.core.stats.cohort.CohortSummary`),
without a Python object per field. It is sound like `schemas.fast`: it vouches only for records
that `schemas.decode` accepts with the same values and refuses any other, which the lane then
takes through the Python decoders (and to the dead-letter topic when they reject it).
Without the extension, or with `ROLLOUT_NATIVE_LANE=false`, the lane runs on the Python path
alone, with the same results.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from controller.core.stats.distribution import StatsConfig
from controller.stream.deltas import MAX_TRACED
from schemas import MAX_RECORD_BYTES, PredictionBatch, PredictionServed
from schemas.events import MAX_BATCH

try:
    from controller.stream import _native
except ImportError:  # not built: no Rust toolchain at install time
    _native = None

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def available() -> bool:
    """Whether the compiled lane is built and importable."""
    return _native is not None


def accumulator(config: StatsConfig) -> Any:
    """A compiled accumulator for statistics under `config`. Raises RuntimeError when the
    extension is not built (see `available`)."""
    if _native is None:
        raise RuntimeError(
            "the compiled lane (controller.stream._native) is not built: reinstall the "
            "project with a Rust toolchain on the PATH"
        )
    return _native.Accumulator(
        latency_multiplier=config.latency_sketch().multiplier,
        value_multiplier=config.value_sketch().multiplier,
        min_positive=config.min_positive,
        max_class_scores=config.max_class_scores,
        max_exact_values=config.max_exact_values,
        served_type=PredictionServed.EVENT_TYPE,
        batch_type=PredictionBatch.EVENT_TYPE,
        max_batch=MAX_BATCH,
        max_record_bytes=MAX_RECORD_BYTES,
        max_traced=MAX_TRACED,
    )


def epoch_us(moment: datetime) -> int:
    """Whole microseconds since the epoch of an aware datetime, exactly."""
    return (moment - _EPOCH) // _MICROSECOND
