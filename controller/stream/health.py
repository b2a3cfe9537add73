"""The worker's health: liveness, readiness, and the metrics read rather than counted.

`WorkerHealth` is a service of the Faust app (it starts and stops with it, before the tables'
recovery, so the probes answer while a long recovery runs). It serves `/metrics`, `/healthz`
and `/readyz` (controller.observability.metrics.HealthServer) and keeps, in the app's event
loop:

- a **heartbeat** every `beat_s`: `/healthz` fails when it is older than `stall_s` (a loop
  blocked by a bug or starved), which a liveness probe turns into a restart;
- the **recovery clock**: each recovery of the tables from their changelogs, as Faust's
  recovery service measured it;
- a **refresh** every `refresh_s`: the rollouts by phase and the monitors by stage this worker
  holds, each consumer's lag per partition (the agent's group, the prediction lane's, the label
  join's), and the lane's records.

Ready (`/readyz`) means: the app has started its agent and timer (its tables are recovered),
it is neither rebalancing nor recovering, and its lanes have started.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import structlog
from mode import Service

from controller.errors import RolloutError
from controller.observability.metrics import HealthServer, WorkerMetrics

if TYPE_CHECKING:
    from controller.stream.app import RolloutWorker

log = structlog.get_logger(__name__)

PHASES = (
    "pending",
    "awaiting_approval",
    "progressing",
    "paused",
    "promoted",
    "rolled_back",
    "aborted",
)
STAGES = ("unmonitored", "waiting", "learning", "calibrating", "watching")


class MetricsPortError(RolloutError):
    """The metrics and health port cannot be served (in use, or not allowed)."""


class WorkerHealth(Service):
    """Probes and read metrics of one worker (module docstring)."""

    def __init__(
        self,
        worker: RolloutWorker,
        metrics: WorkerMetrics,
        *,
        host: str,
        port: int,
        stall_s: float = 30.0,
        beat_s: float = 1.0,
        refresh_s: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.worker = worker
        self.metrics = metrics
        self.host, self.requested_port = host, port
        self.stall_s, self.beat_s, self.refresh_s = stall_s, beat_s, refresh_s
        self.beat = time.monotonic()
        self.server: HealthServer | None = None
        self._recovery_seen: float | None = None
        self._lane_seen = (0, 0)

    # ---- the service ------------------------------------------------------------------

    async def on_start(self) -> None:
        try:
            self.server = HealthServer(
                self.metrics.registry,
                alive=self.alive,
                ready=self.ready,
                host=self.host,
                port=self.requested_port,
            ).start()
        except OSError as exc:
            raise MetricsPortError(
                f"cannot serve metrics and health on {self.host}:{self.requested_port} "
                f"({exc.strerror or exc}): set ROLLOUT_METRICS_PORT to a free port"
            ) from exc
        log.info("metrics.serving", host=self.host, port=self.server.port)

    async def on_stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    @property
    def port(self) -> int | None:
        return None if self.server is None else self.server.port

    @Service.task
    async def _heartbeat(self) -> None:
        while not self.should_stop:
            self.beat = time.monotonic()
            self._watch_recovery()
            self.metrics.ready.set(1 if self.ready()[0] else 0)
            await self.sleep(self.beat_s)

    @Service.task
    async def _refresh(self) -> None:
        while not self.should_stop:
            try:
                await self.refresh()
            except Exception:  # a figure not read this time is read the next
                log.warning("metrics.refresh_failed", exc_info=True)
            await self.sleep(self.refresh_s)

    # ---- the probes (called from the server's thread: reads only) --------------------

    def alive(self) -> tuple[bool, str]:
        age = time.monotonic() - self.beat
        if age > self.stall_s:
            return False, f"the event loop has not turned for {age:.0f} s (limit {self.stall_s:g})"
        return True, "the event loop turns"

    def ready(self) -> tuple[bool, str]:
        worker, app = self.worker, self.worker.app
        if not worker.running:
            return False, "starting: joining the group and recovering the tables"
        if getattr(app, "in_recovery", False):
            return False, "recovering the tables from their changelogs"
        if app.rebalancing:
            return False, "rebalancing"
        lane, join = worker.lane, worker.join
        if lane is not None and lane._consumer is None:
            return False, "the prediction lane is starting"
        if join is not None and join._consumer is None:
            return False, "the label join is starting"
        return True, "serving its partitions"

    # ---- what is read -----------------------------------------------------------------

    def _watch_recovery(self) -> None:
        recovery = getattr(self.worker.app.tables, "recovery", None)
        started = getattr(recovery, "_recovery_started_at", None)
        ended = getattr(recovery, "_recovery_ended_at", None)
        if started is None or ended is None or ended < started or ended == self._recovery_seen:
            return
        self._recovery_seen = ended
        self.metrics.recovery.set(ended - started)
        self.metrics.recoveries.inc()
        log.info("tables.recovered", seconds=round(ended - started, 3))

    async def refresh(self) -> None:
        """Read the figures that are not counted as they happen (module docstring)."""
        worker, metrics = self.worker, self.metrics
        agent = worker.agent
        phases: Counter[str] = Counter()
        for key in list(agent.table):
            state = agent.load(key.decode())
            if state is not None:
                phases[state.phase.value] += 1
        metrics.set_counts(metrics.rollouts, phases, PHASES)
        metrics.live_rollouts.set(sum(n for phase, n in phases.items() if phase not in _FINISHED))
        stages: Counter[str] = Counter()
        firing = 0
        for model in list(agent.monitors.models()):
            monitor = agent.monitors.load(model)
            if monitor is not None:
                stages[monitor.stage()] += 1
                firing += len(monitor.firing())
        metrics.set_counts(metrics.monitors, stages, STAGES)
        metrics.firing.set(firing)
        metrics.set_lag(worker.settings.consumer_group, worker.agent_lags())
        if worker.lane is not None:
            metrics.set_lag(worker.lane.group_id, await worker.lane.lags())
            # predictions, not records: a batch record carries many
            counters = worker.lane.counters
            predictions, rejected = counters.predictions, counters.rejected
            seen_predictions, seen_rejected = self._lane_seen
            topic = worker.lane.topic
            metrics.event_in(topic, "prediction", max(0, predictions - seen_predictions))
            metrics.event_in(topic, "invalid", max(0, rejected - seen_rejected))
            self._lane_seen = (predictions, rejected)
        if worker.join is not None:
            metrics.set_lag(worker.join.group_id, await worker.join.lags())


_FINISHED = frozenset({"promoted", "rolled_back", "aborted"})
