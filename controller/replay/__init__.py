"""Replay: the core over a recorded log, through the same engine as the live worker.

- `controller.replay.replay`: `Runner` (the engine over events, ticking on event time) and
  `replay(lines, policy)` over the lines of a log.

Realistic logs to replay come from the simulator, a developer tool (`controller.dev.simulate`).
"""

from controller.replay.replay import (
    DEFAULT_TICK_S,
    DeploymentReport,
    Rejected,
    ReplayResult,
    Runner,
    replay,
    summary_table,
)

__all__ = [
    "DEFAULT_TICK_S",
    "DeploymentReport",
    "Rejected",
    "ReplayResult",
    "Runner",
    "replay",
    "summary_table",
]
