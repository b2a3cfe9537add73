"""The monitors' states in the worker: a table of bytes by model, decoded once, written seldom.

A monitor changes at every check (each second while its model serves), so it is not written at
every change as a rollout is: a changed monitor is written at an offset commit once
`flush_every_s` (30 s) have passed since it was last written, at once when its check published
an output (an alert or a decision: a successor must not publish it again under a new id), and
at every hand-over of partitions and at shutdown (`flush(force=True)`). A worker killed without
warning loses at most the last `flush_every_s` seconds of its monitors' statistics: their
predictions' offsets are committed, so they are not read again. What the loss means (a little
less data behind the next alarm, never a false one) is in docs/monitoring.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from controller.core.monitor import MonitorState
from controller.engine import Engine

if TYPE_CHECKING:
    from controller.stream.agent import Table

#: A changed monitor is written at most this often (seconds), unless it published outputs.
FLUSH_EVERY_S = 30.0


class MonitorStore:
    """Load, keep and write the monitors of one worker's partitions (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        table: Table,
        *,
        clock: Callable[[], float] = time.time,
        flush_every_s: float = FLUSH_EVERY_S,
    ) -> None:
        self.engine = engine
        self.table = table
        self.clock = clock
        self.flush_every_s = flush_every_s
        #: the decoded state of each monitor, with the bytes it was loaded or stored as
        self._decoded: dict[str, tuple[bytes, MonitorState]] = {}
        #: monitors changed since they were last written, with when they were written
        self._dirty: dict[str, float] = {}
        #: monitors whose outputs are being published: not flushed until they are out (a
        #: state stored ahead of its outputs would lose them after a crash)
        self.publishing: set[str] = set()
        self.writes = 0

    def load(self, model: str) -> MonitorState | None:
        if model in self._dirty:
            return self._decoded[model][1]
        raw = self.table.get(model.encode())
        if raw is None:
            return None
        cached = self._decoded.get(model)
        if cached is not None and cached[0] is raw:
            return cached[1]
        state = self.engine.load_monitor(raw)
        self._decoded[model] = (raw, state)
        return state

    def keep(self, state: MonitorState, *, write: bool = False) -> None:
        """A changed monitor: written now (`write`, after it published outputs) or at a later
        flush."""
        model = state.model
        if write:
            self._write(model, state)
            self._dirty.pop(model, None)
            return
        stored = self._decoded.get(model)
        self._decoded[model] = (b"" if stored is None else stored[0], state)
        if model not in self._dirty:
            self._dirty[model] = self.clock()

    def flush(self, *, force: bool = False) -> int:
        """Write the monitors changed `flush_every_s` ago or more (every changed one with
        `force`); how many."""
        now = self.clock()
        written = 0
        for model, since in sorted(self._dirty.items()):
            if model in self.publishing:
                continue
            if force or now - since >= self.flush_every_s:
                self._write(model, self._decoded[model][1])
                del self._dirty[model]
                written += 1
        return written

    def _write(self, model: str, state: MonitorState) -> None:
        raw = self.engine.dump_monitor(state)
        self.table[model.encode()] = raw
        self._decoded[model] = (raw, state)
        self.writes += 1

    def models(self) -> Iterator[str]:
        """Every monitor this worker holds: stored, or changed and not written yet."""
        stored = [k.decode() for k in list(self.table)]
        yield from stored
        yield from sorted(set(self._dirty).difference(stored))

    def forget_stale(self) -> None:
        """Drop the decoded copies the table no longer holds as they were (taken over in a
        rebalance, or recovered): their next check is re-derived."""
        for model, (raw, _) in list(self._decoded.items()):
            if model in self._dirty:
                continue
            if self.table.get(model.encode()) is not raw:
                del self._decoded[model]
                self.engine.monitor_wakeups.pop(model, None)


__all__ = ["FLUSH_EVERY_S", "MonitorStore"]
