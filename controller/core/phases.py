"""The phases of a rollout and the one table of legal transitions between them.

Every phase change in the core goes through `transition(from_, to)`, so the table below is the
whole truth about which changes can happen: a change it does not list raises `IllegalTransition`,
naming both ends. Terminal phases have no way out.

```
                 ┌──────────────────────────────┐
pending ──> awaiting_approval <──> progressing ─┴─> paused ──> (back where it was)
   │               │                 │  ↺ next step
   │               │                 └──> promoted ──> rolled_back  (a person's rollback)
   └──> aborted    └──────┬──────────┴──> rolled_back | aborted  (from any live phase)
```

`promoted -> rolled_back` is the one way out of a terminal phase: a person rolls back a model
already in production, to the deployment record's rollback version. `rolled_back` and `aborted`
have no way out.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from controller.errors import RolloutError


class Phase(enum.StrEnum):
    """Where a rollout stands. The values are the wire names of `schemas.PhaseName`."""

    #: Before the deployment request is applied: only ever the origin of the first decision.
    PENDING = "pending"
    #: Waiting for a person to approve the start or the next traffic step.
    AWAITING_APPROVAL = "awaiting_approval"
    #: Traffic is on the canary and the rules are judging it.
    PROGRESSING = "progressing"
    #: Held by a person (or by the deadline): traffic stays where it is, nothing advances.
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    def is_terminal(self) -> bool:
        """The rollout has ended: later events are recorded as no-ops, except a person's
        rollback of a promoted model (`promoted -> rolled_back`, see `TRANSITIONS`)."""
        return self in _TERMINAL

    def is_active(self) -> bool:
        """The canary may be serving and rules are evaluated (though only PROGRESSING advances)."""
        return self in _ACTIVE

    def can_go_to(self, to: Phase) -> bool:
        return to in TRANSITIONS[self]


_TERMINAL = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED})
_ACTIVE = frozenset({Phase.AWAITING_APPROVAL, Phase.PROGRESSING, Phase.PAUSED})

#: The legal transitions. The only self-transition is `progressing -> progressing`: the next
#: traffic step, a decision without a phase change. `pending -> aborted` is a deployment request
#: the policy rejects (e.g. a guardrail naming an unknown detector). `promoted -> rolled_back`
#: is a person's rollback of the promoted model, the only change after an end.
TRANSITIONS: Mapping[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.AWAITING_APPROVAL, Phase.PROGRESSING, Phase.ABORTED}),
    Phase.AWAITING_APPROVAL: frozenset(
        {Phase.PROGRESSING, Phase.PAUSED, Phase.ABORTED, Phase.ROLLED_BACK}
    ),
    Phase.PROGRESSING: frozenset(
        {
            Phase.PROGRESSING,
            Phase.AWAITING_APPROVAL,
            Phase.PAUSED,
            Phase.PROMOTED,
            Phase.ROLLED_BACK,
            Phase.ABORTED,
        }
    ),
    Phase.PAUSED: frozenset(
        {Phase.PROGRESSING, Phase.AWAITING_APPROVAL, Phase.ROLLED_BACK, Phase.ABORTED}
    ),
    Phase.PROMOTED: frozenset({Phase.ROLLED_BACK}),
    Phase.ROLLED_BACK: frozenset(),
    Phase.ABORTED: frozenset(),
}


class IllegalTransition(RolloutError):
    """A phase change the transition table does not allow: a bug in the caller, never data."""

    def __init__(self, from_phase: Phase, to_phase: Phase) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[from_phase])) or "none (terminal phase)"
        super().__init__(
            f"illegal rollout transition {from_phase} -> {to_phase}; "
            f"from {from_phase} the table allows: {allowed}"
        )
        self.from_phase = from_phase
        self.to_phase = to_phase


def transition(from_phase: Phase, to_phase: Phase) -> Phase:
    """Check one phase change against `TRANSITIONS`; return the new phase or raise."""
    if not from_phase.can_go_to(to_phase):
        raise IllegalTransition(from_phase, to_phase)
    return to_phase
