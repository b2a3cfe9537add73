"""The worker's view of the core: the policy, the state's stored form, and one call per input.

Everything the worker decides goes through here, so the Faust agent, the tick timer and the
tests of the worker drive the very functions `rollout replay` and the benchmarks drive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.core import rollout
from controller.core.policy import Policy
from controller.core.state import RolloutState
from controller.stream.deltas import StatsDelta
from schemas import Alert, Command, Decision, Envelope


@dataclass(frozen=True)
class Outputs:
    """What to publish, grouped so each decision's commands and alerts share its span."""

    groups: tuple[tuple[Decision | None, tuple[Command, ...], tuple[Alert, ...]], ...] = ()

    def empty(self) -> bool:
        return not self.groups

    @classmethod
    def of(cls, step: rollout.Step) -> Outputs:
        if step.is_noop():
            return cls()
        if not step.decisions:
            return cls(((None, step.commands, step.alerts),))
        # every command belongs to the decision that lists its id; alerts go with the last one
        groups = []
        placed: set[str] = set()
        for i, decision in enumerate(step.decisions):
            commands = tuple(c for c in step.commands if c.command_id in decision.command_ids)
            placed.update(c.command_id for c in commands)
            alerts = step.alerts if i == len(step.decisions) - 1 else ()
            groups.append((decision, commands, alerts))
        rest = tuple(c for c in step.commands if c.command_id not in placed)
        if rest:
            d, c, a = groups[-1]
            groups[-1] = (d, (*c, *rest), a)
        return cls(tuple(groups))


class Engine:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    @classmethod
    def from_policy_file(cls, path: Path | None) -> Engine:
        from controller.policy_io import default_policy, load_policy

        return cls(load_policy(path) if path else default_policy())

    # ---- the stored form --------------------------------------------------------------

    def load(self, data: dict[str, Any]) -> RolloutState:
        return RolloutState.from_dict(data)

    def dump(self, state: RolloutState) -> dict[str, Any]:
        return state.to_dict()

    def is_live(self, state: RolloutState) -> bool:
        return not state.phase.is_terminal()

    # ---- inputs -----------------------------------------------------------------------

    def on_event(
        self, state: RolloutState | None, event: Envelope[Any], now: float
    ) -> tuple[RolloutState | None, Outputs]:
        step = rollout.apply(state, event, self.policy, now)
        return step.state, Outputs.of(step)

    def on_delta(
        self, state: RolloutState, delta: StatsDelta, now: float
    ) -> tuple[RolloutState, Outputs]:
        rollout.merge(state, delta.cohorts, now, delta_id=delta.delta_id)
        step = rollout.evaluate(state, self.policy, now)
        return step.state or state, Outputs.of(step)

    def on_tick(self, state: RolloutState, now: float) -> tuple[RolloutState, Outputs]:
        step = rollout.tick(state, self.policy, now)
        return step.state or state, Outputs.of(step)
