"""The result of one core call, and the collector that builds it.

A `Result` carries the new state and the outputs to publish, in the one order every shell
publishes them: as they occurred, a transition's command right before its decision. An alert
raised while judging comes before the decision it led to (a failing rule's alert, then the
rollback command, then the rollback decision). `groups()` cuts the outputs after each decision,
so a shell can wrap a decision and what led to it in one span.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from controller.core.state import RolloutState
from controller.core.verdict import Verdict
from schemas import Alert, Command, Decision

#: Reasons and summaries are bounded on the wire.
MAX_TEXT = 4096

Output = Command | Alert | Decision
T = TypeVar("T")


def cut_after(items: Iterable[T], ends: Callable[[T], bool]) -> tuple[tuple[T, ...], ...]:
    """`items` in runs, each closed by an item that `ends` a run (the last run may not be)."""
    groups: list[tuple[T, ...]] = []
    current: list[T] = []
    for item in items:
        current.append(item)
        if ends(item):
            groups.append(tuple(current))
            current = []
    if current:
        groups.append(tuple(current))
    return tuple(groups)


@dataclass(frozen=True)
class Result:
    """What one call decided: the new state, the outputs in publishing order, the verdicts
    judged, and a `note` saying why nothing happened when nothing did."""

    state: RolloutState | None
    outputs: tuple[Output, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    #: Why the call changed nothing, or what it left out (empty when it simply acted).
    note: str = ""
    #: Why a person's or a deployer's request could not apply (an unknown rollout, a finished
    #: one, a gate already passed, a duplicate deployment id): the shell answers it (a dead
    #: letter with this reason). Empty when the request applied, or was a re-delivery.
    refusal: str = ""

    @property
    def commands(self) -> tuple[Command, ...]:
        return tuple(o for o in self.outputs if isinstance(o, Command))

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return tuple(o for o in self.outputs if isinstance(o, Decision))

    @property
    def alerts(self) -> tuple[Alert, ...]:
        return tuple(o for o in self.outputs if isinstance(o, Alert))

    def is_noop(self) -> bool:
        return not self.outputs

    def groups(self) -> tuple[tuple[Output, ...], ...]:
        """The outputs cut after each decision: each group ends with the decision it leads to,
        except a last group of alerts raised after the last decision (or with none)."""
        return cut_after(self.outputs, lambda o: isinstance(o, Decision))


@dataclass
class Collector:
    """Outputs being collected during one call, in the order they occur."""

    outputs: list[Output] = field(default_factory=list)
    verdicts: tuple[Verdict, ...] = ()
    notes: list[str] = field(default_factory=list)

    def add(self, output: Output) -> None:
        self.outputs.append(output)

    refusals: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def refuse(self, reason: str) -> None:
        """The request cannot apply, for `reason` (also a note)."""
        self.refusals.append(reason)
        self.notes.append(reason)

    def result(self, state: RolloutState | None) -> Result:
        return Result(
            state,
            tuple(self.outputs),
            self.verdicts,
            "; ".join(self.notes),
            "; ".join(self.refusals),
        )


def at(now: float) -> datetime:
    """The aware datetime of a core time (epoch seconds)."""
    return datetime.fromtimestamp(now, UTC)


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
