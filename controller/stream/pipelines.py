"""Quota pools and pipelines in the worker: two tables of bytes, written at every change.

- **pools**, keyed by the pool: a `PoolState` (controller/core/pipelines/quota.py). Its inputs
  are keyed by the pool too (`quota.pool.configured`, `quota.pool.deleted`, and
  `resource.usage` events that name a pool), so one worker holds a pool and all of its usage;
  the timer checks it every `quota.sample_s` (a minute).
- **pipelines**, keyed by the record key of their inputs (the deployment id of a
  `training.run`, a `data.profile`, or a `resource.usage` that names a pipeline and no pool):
  that deployment's pipelines by name, each a `PipelineState` (pipeline.py). Runs and profiles
  are judged when they arrive; the timer checks what waits on the clock (quota held idle).

Both change seldom (a pool once a minute per pipeline's gauge, a pipeline per run or dataset),
so a change is written at once, like a rollout with outputs: there is no deferred flush to lose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.core.pipelines import PipelineState, PoolState
from controller.engine import Engine

if TYPE_CHECKING:
    from controller.stream.agent import Table


class PipelineStores:
    """Load and write the pools and the pipelines of one worker's partitions."""

    def __init__(self, engine: Engine, pools: Table, pipelines: Table) -> None:
        self.engine = engine
        self.pools = pools
        self.pipelines = pipelines
        self.writes = 0

    def load_pool(self, pool: str) -> PoolState | None:
        raw = self.pools.get(pool.encode())
        return None if raw is None else self.engine.load_pool(raw)

    def keep_pool(self, state: PoolState) -> None:
        self.pools[state.pool.encode()] = self.engine.dump_pool(state)
        self.writes += 1

    def load_pipelines(self, key: str) -> dict[str, PipelineState]:
        raw = self.pipelines.get(key.encode())
        return {} if raw is None else self.engine.load_pipelines(raw)

    def keep_pipelines(self, key: str, states: dict[str, PipelineState]) -> None:
        self.pipelines[key.encode()] = self.engine.dump_pipelines(states)
        self.writes += 1

    def pool_keys(self) -> list[str]:
        return [k.decode() for k in list(self.pools)]

    def pipeline_keys(self) -> list[str]:
        return [k.decode() for k in list(self.pipelines)]


__all__ = ["PipelineStores"]
