"""Replay and simulation: the core over a recorded log, and realistic logs to record.

- `controller.replay.simulate`: scenarios, a simulated serving fleet (open loop), and the
  closed loop with a controller, a router and an approver (`ClosedLoop`).
- `controller.replay.replay`: `Runner` (the core over events, ticking on event time) and
  `replay(lines, policy)` over the lines of a log.
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
from controller.replay.simulate import (
    PLANS,
    SCENARIOS,
    Behaviour,
    ClosedLoop,
    Controller,
    FleetConfig,
    LoopConfig,
    Outcome,
    Scenario,
    ServingFleet,
    Timeline,
    UnknownScenarioError,
    generate,
    make_deployment,
    training_profile,
)

__all__ = [
    "DEFAULT_TICK_S",
    "PLANS",
    "SCENARIOS",
    "Behaviour",
    "ClosedLoop",
    "Controller",
    "DeploymentReport",
    "FleetConfig",
    "LoopConfig",
    "Outcome",
    "Rejected",
    "ReplayResult",
    "Runner",
    "Scenario",
    "ServingFleet",
    "Timeline",
    "UnknownScenarioError",
    "generate",
    "make_deployment",
    "replay",
    "summary_table",
    "training_profile",
]
