"""Control events under verified identities: admit or refuse, alert, record who.

`apply` calls `admit` before a control event (approval, denial, pause, resume, abort,
rollback) reaches its handler, when the shell verified signatures (an `Identity` is given):

- a copy of a signed event already applied (the same signature, under another envelope id) is
  ignored, as a re-delivery is: nobody can replay an old pause after its resume;
- a refused one (not signed, a bad or revoked key, a signature that does not verify, an
  identity the deployment record or the policy does not authorize) is answered with the
  refusal (the shell dead-letters it with why) and fires the alert `{deployment}/control.
  refused` (critical for a signature that does not verify or a key of someone else, warning
  otherwise), which the next admitted control event resolves;
- an admitted one is recorded (its signature's digest, the key of an approval) and every
  decision it leads to carries the verified identity in its evidence (`identity`).
"""

from __future__ import annotations

from typing import Any

from controller.core.access import Control, Identity, refusal, verb_of
from controller.core.policy import Policy
from controller.core.rollout.alerts import dedup_key, raise_alert
from controller.core.rollout.result import Collector
from controller.core.state import RolloutState
from schemas import ApprovalGranted, Decision
from schemas.events import Severity

#: Signature digests kept per rollout: a rollout sees a handful of control events.
MAX_CONTROL_SIGNATURES = 512
CONTROL_KEY = "control.refused"


def admit(
    state: RolloutState,
    event: Control,
    identity: Identity,
    policy: Policy,
    now: float,
    out: Collector,
) -> bool:
    """Whether the control event may go on to its handler (see the module's docstring)."""
    verb = verb_of(event)
    if identity.signature is not None and identity.signature in state.control_signatures:
        out.note(f"{verb} by {event.by}: this signed event was applied before (a copy): ignored")
        return False
    why = refusal(event, identity, state.deployment, policy.access)
    if why:
        out.refuse(why)
        _alert(state, policy, now, out, "firing", why, event, identity, forged=identity.forged)
        return False
    if identity.signature is not None:
        state.control_signatures.append(identity.signature)
        del state.control_signatures[:-MAX_CONTROL_SIGNATURES]
    if isinstance(event, ApprovalGranted) and identity.verified and identity.key_id:
        state.approval_keys[event.step] = identity.key_id
    if identity.verified and dedup_key(state, CONTROL_KEY) in state.firing:
        summary = f"{verb} by {identity.name} (verified) admitted after a refused control event"
        _alert(state, policy, now, out, "resolved", summary, event, identity, forged=False)
    return True


def stamp(out: Collector, start: int, identity: Identity) -> None:
    """Put the identity in the evidence of the decisions added since output `start`."""
    for i in range(start, len(out.outputs)):
        output = out.outputs[i]
        if isinstance(output, Decision):
            evidence = {**output.evidence, "identity": identity.evidence()}
            out.outputs[i] = output.model_copy(update={"evidence": evidence})


def _alert(
    state: RolloutState,
    policy: Policy,
    now: float,
    out: Collector,
    status: str,
    summary: str,
    event: Control,
    identity: Identity,
    *,
    forged: bool,
) -> None:
    evidence: dict[str, Any] = {
        "event": event.EVENT_TYPE,
        "by": event.by,
        "identity": identity.evidence(),
        "problem": identity.problem,
    }
    if isinstance(event, ApprovalGranted):
        evidence["step"] = event.step
    raise_alert(
        state, out, now, policy, status=status,
        severity=Severity.CRITICAL if forged else Severity.WARNING,
        kind="control", key=dedup_key(state, CONTROL_KEY), rule="control",
        summary=summary, evidence=evidence,
    )  # fmt: skip
