"""Who may act on a rollout: the identity behind a request and whether it may.

A control event is a person's or a CI system's request to a live rollout: an approval or a
denial of a gate, a pause, a resume, an abort, a rollback; a deployment request starts one.
When the worker verifies signatures (it has an identities file), the shell checks each such
request's Ed25519 signature against the signer's registered keys (`controller.security.
signing`) and hands the core an `Identity`: verified, with the identity's groups, or with the
problem that made the signature unacceptable.
The core then decides, here, whether that identity may do what it asks:

- an approval or a denial of the gate before step k: anyone the deployment record names for
  that gate (`approvals[].by`), else anyone the policy's `access.approve` names;
- a pause or a resume: `access.pause`; an abort: `access.abort`; a rollback: `access.rollback`;
- a deployment request (the rollout's start): `access.deploy`.

An entry names an identity or a group; `*` is any verified identity. Without an identities file
nothing is verified and everything is allowed, as before signatures existed (the worker says so
when it starts); the decision trail then records identities as unverified.

No I/O and no cryptography: the signature is the shell's, the authority is the core's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas import (
    AbortRequested,
    ApprovalDenied,
    ApprovalGranted,
    DeploymentRequested,
    PauseRequested,
    ResumeRequested,
    RollbackRequested,
)

#: The payloads that are control events: signed by the person or system that sends them.
CONTROL_EVENTS = (
    ApprovalGranted,
    ApprovalDenied,
    PauseRequested,
    ResumeRequested,
    AbortRequested,
    RollbackRequested,
)
Control = (
    ApprovalGranted
    | ApprovalDenied
    | PauseRequested
    | ResumeRequested
    | AbortRequested
    | RollbackRequested
)

#: What a worker with an identities file wants signed: the control events and the deployment
#: request (`signer` names the identity each names).
SIGNED_REQUESTS = (DeploymentRequested, *CONTROL_EVENTS)

#: An access entry that any verified identity matches.
ANYONE = "*"


@dataclass(frozen=True)
class Identity:
    """Who sent a control event, as the shell established it.

    `verified`: its signature verified with a key registered to `name`. `problem`: why the
    signature was not accepted (not signed, unknown or revoked key, a key of someone else, a
    signature that does not verify); empty when verified. `signature` identifies the signing
    act (a digest of the signature), so a replayed copy of an accepted event is recognised."""

    name: str
    groups: tuple[str, ...] = ()
    key_id: str | None = None
    verified: bool = False
    problem: str = ""
    signature: str | None = None
    #: the problem looks like a forgery: a registered key of someone else, or a signature
    #: that does not verify (a missing, unknown or stale key does not)
    forged: bool = False

    def evidence(self) -> dict[str, Any]:
        """The identity as the decision trail records it."""
        return {
            "name": self.name,
            "verified": self.verified,
            "key_id": self.key_id,
            "groups": list(self.groups),
        }

    def matches(self, allowed: Sequence[str]) -> bool:
        """Whether an access list names this identity (by name or group; `*`: anyone)."""
        if not self.verified:
            return False
        return any(a == ANYONE or a == self.name or a in self.groups for a in allowed)


def action_of(event: Control) -> str:
    """The access list that governs a control event: approve, pause, abort or rollback."""
    if isinstance(event, ApprovalGranted | ApprovalDenied):
        return "approve"
    if isinstance(event, PauseRequested | ResumeRequested):
        return "pause"
    if isinstance(event, AbortRequested):
        return "abort"
    return "rollback"


def verb_of(event: Control) -> str:
    return {
        ApprovalGranted: "approval",
        ApprovalDenied: "denial",
        PauseRequested: "pause",
        ResumeRequested: "resume",
        AbortRequested: "abort",
        RollbackRequested: "rollback",
    }[type(event)]


def allowed_for(
    event: Control, deployment: DeploymentRequested, access: Any
) -> tuple[tuple[str, ...], str]:
    """Who may send `event` to the rollout of `deployment`, and where that is written."""
    action = action_of(event)
    if isinstance(event, ApprovalGranted | ApprovalDenied):
        named = deployment.approvers(event.step)
        if named:
            return named, f"the deployment record's approvers of step {event.step}"
    return tuple(getattr(access, action)), f"the policy's access.{action}"


def deploy_refusal(request: DeploymentRequested, identity: Identity, access: Any) -> str:
    """Why `identity` may not start the rollout `request` asks for (empty: it may): the
    policy's `access.deploy`."""
    who = request.requested_by or identity.name
    if identity.problem:
        return f"deployment request by {who} refused: {identity.problem}"
    if not identity.verified or identity.matches(access.deploy):
        return ""
    return (
        f"deployment request by {identity.name} refused: not authorized (the policy's "
        f"access.deploy allows {', '.join(access.deploy) or 'nobody'}; {identity.name} is in "
        f"groups {', '.join(identity.groups) or 'none'})"
    )


def refusal(
    event: Control, identity: Identity, deployment: DeploymentRequested, access: Any
) -> str:
    """Why `identity` may not send `event` to the rollout of `deployment` (empty: it may).

    `access` is the policy's access settings (`controller.core.policy.AccessSettings`)."""
    verb = verb_of(event)
    if identity.problem:
        return f"{verb} by {event.by} refused: {identity.problem}"
    if not identity.verified:
        return ""  # nothing verified: the worker has no identities file
    allowed, where = allowed_for(event, deployment, access)
    if identity.matches(allowed):
        return ""
    return (
        f"{verb} by {identity.name} refused: not authorized ({where} allows "
        f"{', '.join(allowed) or 'nobody'}; {identity.name} is in groups "
        f"{', '.join(identity.groups) or 'none'})"
    )


def signer(request: Any) -> str | None:
    """The identity a signed request names: a control event's `by`, a deployment request's
    `requested_by`."""
    if isinstance(request, DeploymentRequested):
        return request.requested_by
    return str(request.by)
