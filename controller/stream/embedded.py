"""The worker inside another program: its Faust app on an event loop in a background thread.

For tests that need the worker's spans in their own exporter, and for benchmarks that read the
worker's counters. `rollout worker` runs the app in the foreground instead.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from controller.stream.app import RolloutWorker


class EmbeddedWorker:
    """`with EmbeddedWorker(worker): ...` runs the worker's app until the block ends."""

    def __init__(self, worker: RolloutWorker, *, stop_timeout_s: float = 60.0) -> None:
        self.worker = worker
        self.stop_timeout_s = stop_timeout_s
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="rollout-worker", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.worker.app.start())
        self.loop.run_forever()

    def __enter__(self) -> EmbeddedWorker:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stopping = asyncio.run_coroutine_threadsafe(self.worker.app.stop(), self.loop)
        stopping.result(self.stop_timeout_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(self.stop_timeout_s)
