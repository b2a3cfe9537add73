"""Alerts: what a rollout raises beside its decisions, under stable dedup keys.

- A rule that FAILs fires once (critical when acting, warning in dry run) under the dedup key
  `{deployment_id}/{rule}` and resolves when it stops failing.
- ResourceUsage at or above the policy's warning (critical) share of its limit fires under
  `{deployment_id}/resource.{resource}`, re-fires only on escalation to critical, and resolves
  below the warning share.
- A verdict that does not fail but carries a `warning` in its evidence (training-serving
  skew that both cohorts share) fires a warning under `{deployment_id}/{rule}.warning`,
  resolved when its verdict no longer carries one.
- A failed TrainingRun fires a warning under `{deployment_id}/training.{pipeline}`, resolved by
  that pipeline's next success.
- A step's set_traffic that the router has not acknowledged `router.ack_timeout_s` after it
  was issued fires a warning under `{deployment_id}/router.unacknowledged` (the step holds
  meanwhile, and the command is sent again then, and after twice as long each time), resolved
  by the acknowledgement.

Alerts still firing when the rollout ends stay firing (the rollout is no longer evaluated;
alert managers expire them). Every alert's id derives from the rollout's alert sequence number
(controller.core.ids.alert_id), so the worker and a replay give the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from controller.core.ids import alert_id
from controller.core.phases import Phase
from controller.core.policy import Policy
from controller.core.rollout.assessment import Judged
from controller.core.rollout.result import Collector, at, clip
from controller.core.state import MAX_KEY, RolloutState
from controller.core.verdict import Outcome
from schemas import Alert, CommandRefused, ResourceUsage, TrainingRun
from schemas.events import Severity


def dedup_key(state: RolloutState, name: str) -> str:
    key = "_".join(f"{state.deployment_id}/{name}".split())  # an Ident: no blanks
    if len(key) > MAX_KEY:  # keep it an Ident: a long key keeps its start and a digest
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        key = f"{key[: MAX_KEY - 18]}~{digest}"
    return key


def raise_alert(
    state: RolloutState,
    out: Collector,
    now: float,
    policy: Policy,
    *,
    status: str,
    severity: Severity,
    kind: str,
    key: str,
    rule: str,
    summary: str,
    evidence: Mapping[str, Any],
) -> None:
    """Fire or resolve the alert `key`, keeping the rollout's set of firing alerts in step."""
    dep = state.deployment
    if status == "firing":
        state.firing[key] = severity.value
    else:
        state.firing.pop(key, None)
    state.alert_seq += 1
    wire_status = "firing" if status == "firing" else "resolved"
    out.add(
        Alert(
            alert_id=alert_id(dep.deployment_id, state.alert_seq, wire_status, key),
            status=wire_status,
            severity=severity,
            kind=kind,
            deployment_id=dep.deployment_id,
            subject=f"{dep.model} {dep.candidate_version}",
            summary=clip(summary),
            evidence=dict(evidence),
            runbook_url=policy.runbook_url(
                deployment_id=dep.deployment_id,
                rule=rule,
                detector=kind,
                kind=kind,
                model=dep.model,
            ),
            dedup_key=key,
            at=at(now),
        )
    )


def rule_alerts(
    state: RolloutState, policy: Policy, now: float, out: Collector, judged: Sequence[Judged]
) -> None:
    """Fire the alert of each rule that newly fails; resolve those that no longer fail."""
    for j in judged:
        failed = j.verdict.outcome is Outcome.FAIL
        warning = "" if failed else _warning(j)
        if not failed and not state.firing and not warning:
            continue  # the common case: nothing fails, nothing to resolve
        _warning_alert(state, policy, now, out, j, warning)
        key = dedup_key(state, j.rule.name)
        firing = state.firing.get(key)
        severity = Severity.CRITICAL if j.acting else Severity.WARNING
        mode = "" if j.acting else " (dry run)"
        evidence = {**dict(j.verdict.evidence), "rule": j.rule.name, "acting": j.acting}
        if failed and firing is None:
            raise_alert(
                state,
                out,
                now,
                policy,
                status="firing",
                severity=severity,
                kind=j.rule.detector_name,
                key=key,
                rule=j.rule.name,
                summary=f"{j.rule.name}{mode}: {j.verdict.reason}",
                evidence=evidence,
            )
        elif not failed and firing is not None:
            raise_alert(
                state,
                out,
                now,
                policy,
                status="resolved",
                severity=Severity(firing),
                kind=j.rule.detector_name,
                key=key,
                rule=j.rule.name,
                summary=f"{j.rule.name} no longer failing: {j.verdict.reason}",
                evidence=evidence,
            )


def _warning(j: Judged) -> str:
    """The warning a verdict that does not fail carries in its evidence (`warning`), if any:
    something a person should know that is not the canary's fault (drift both cohorts share)."""
    text = j.verdict.evidence.get("warning")
    return text if isinstance(text, str) else ""


def _warning_alert(
    state: RolloutState, policy: Policy, now: float, out: Collector, j: Judged, warning: str
) -> None:
    """Fire a rule's warning alert (`{rule}.warning`, severity warning) while its verdict
    carries one; resolve it when the verdict no longer does."""
    key = dedup_key(state, f"{j.rule.name}.warning")
    firing = key in state.firing
    if warning and not firing:
        status, summary = "firing", f"{j.rule.name} warning: {warning}"
    elif not warning and firing:
        status, summary = "resolved", f"{j.rule.name} no longer warns: {j.verdict.reason}"
    else:
        return
    raise_alert(
        state,
        out,
        now,
        policy,
        status=status,
        severity=Severity.WARNING,
        kind=j.rule.detector_name,
        key=key,
        rule=j.rule.name,
        summary=summary,
        evidence={**dict(j.verdict.evidence), "rule": j.rule.name, "acting": j.acting},
    )


#: The resources a plan's capacity guard reads from usage events (their free share).
CAPACITY_RESOURCES = ("cpu", "gpu", "memory_gb")


def on_resource(
    state: RolloutState, event: ResourceUsage, policy: Policy, now: float, out: Collector
) -> None:
    if event.limit is None:
        out.note(f"resource {event.resource!r} has no limit: nothing to judge")
        return
    if event.resource in CAPACITY_RESOURCES and event.pipeline in (None, "serving"):
        state.free_capacity[event.resource] = max(event.limit - event.used, 0.0)
    settings = policy.alerts
    share = event.used / event.limit
    key = dedup_key(state, f"resource.{event.resource}")
    severity = (
        Severity.CRITICAL
        if share >= settings.resource_critical
        else Severity.WARNING
        if share >= settings.resource_warning
        else None
    )
    evidence = {
        "resource": event.resource,
        "used": event.used,
        "limit": event.limit,
        "unit": event.unit,
        "share": share,
        "pipeline": event.pipeline,
    }
    usage = (
        f"{event.resource} at {share:.0%} of its limit "
        f"({event.used:g}/{event.limit:g} {event.unit})"
    )
    current = state.firing.get(key)
    if severity is None:
        if current is not None:
            raise_alert(
                state,
                out,
                now,
                policy,
                status="resolved",
                severity=Severity(current),
                kind="resource",
                key=key,
                rule=event.resource,
                summary=f"{usage}: back below {settings.resource_warning:.0%}",
                evidence=evidence,
            )
        return
    if current is None or (current == Severity.WARNING and severity is Severity.CRITICAL):
        limit = (
            settings.resource_critical
            if severity is Severity.CRITICAL
            else settings.resource_warning
        )
        raise_alert(
            state,
            out,
            now,
            policy,
            status="firing",
            severity=severity,
            kind="resource",
            key=key,
            rule=event.resource,
            summary=f"{usage} >= {limit:.0%}",
            evidence=evidence,
        )


def on_training_run(
    state: RolloutState, event: TrainingRun, policy: Policy, now: float, out: Collector
) -> None:
    if not policy.alerts.training_run_failed:
        return
    key = dedup_key(state, f"training.{event.pipeline}")
    evidence = {
        "pipeline": event.pipeline,
        "run_id": event.run_id,
        "status": event.status,
        "duration_s": event.duration_s,
        "error": event.error,
    }
    if event.status == "failed" and key not in state.firing:
        raise_alert(
            state,
            out,
            now,
            policy,
            status="firing",
            severity=Severity.WARNING,
            kind="training_run",
            key=key,
            rule=event.pipeline,
            summary=f"training run {event.run_id} of {event.pipeline} failed: {event.error}",
            evidence=evidence,
        )
    elif event.status == "succeeded" and key in state.firing:
        raise_alert(
            state,
            out,
            now,
            policy,
            status="resolved",
            severity=Severity.WARNING,
            kind="training_run",
            key=key,
            rule=event.pipeline,
            summary=f"training run {event.run_id} of {event.pipeline} succeeded",
            evidence=evidence,
        )


ROUTER_KEY = "router.unacknowledged"


def resend_at(state: RolloutState, policy: Policy) -> float | None:
    """When the step's unacknowledged set_traffic is sent again next: `ack_timeout_s` after
    it was issued, then after twice as long each time (30, 90, 210 s, ... with the default)."""
    issued = state.step_started_at
    if not state.awaiting_ack() or issued is None or state.phase is not Phase.PROGRESSING:
        return None
    return issued + policy.router.ack_timeout_s * float(2 ** (state.resends + 1) - 1)


def router_alert(state: RolloutState, policy: Policy, now: float, out: Collector) -> None:
    """When the step's set_traffic has waited long for its acknowledgement (`resend_at`),
    send it again, the very same command (a lost command or acknowledgement is recovered: a
    router acknowledges a command id it has applied again); the first time, fire the router
    alert (the rollout holds: the router is at fault, not the canary)."""
    due = resend_at(state, policy)
    issued = state.step_started_at
    if due is None or issued is None or now < due:
        return
    waited = now - issued
    while (later := resend_at(state, policy)) is not None and later <= now:
        state.resends += 1  # one resend for the periods a long silence of the clock skipped
    if state.step_command is not None:
        out.add(state.step_command)
    if dedup_key(state, ROUTER_KEY) in state.firing:
        return
    percent = state.steps[state.step].canary_percent
    summary = (
        f"the router has not acknowledged set_traffic {state.step_command_id} ({percent:g}% at "
        f"step {state.step}) in {waited:.0f} s: sent again; the step holds, its bake and the "
        "outage rule's silence wait for traffic.applied"
    )
    evidence = {
        "command_id": state.step_command_id,
        "canary_percent": percent,
        "step": state.step,
        "issued_at": issued,
        "waited_s": waited,
        "ack_timeout_s": policy.router.ack_timeout_s,
    }
    _router(state, policy, now, out, "firing", summary, evidence)


def router_acknowledged(
    state: RolloutState, policy: Policy, now: float, out: Collector, command_id: str
) -> None:
    """Resolve the router alert when the acknowledgement it waited for arrives."""
    if dedup_key(state, ROUTER_KEY) not in state.firing:
        return
    summary = f"the router acknowledged set_traffic {command_id} at step {state.step}"
    evidence = {"command_id": command_id, "step": state.step, "applied_at": state.acked_at}
    _router(state, policy, now, out, "resolved", summary, evidence)


def _router(
    state: RolloutState,
    policy: Policy,
    now: float,
    out: Collector,
    status: str,
    summary: str,
    evidence: Mapping[str, Any],
) -> None:
    key = dedup_key(state, ROUTER_KEY)
    severity, kind = Severity.WARNING, "router"
    raise_alert(
        state, out, now, policy, status=status, severity=severity, kind=kind, key=key,
        rule=kind, summary=summary, evidence=evidence,
    )  # fmt: skip


REFUSED_KEY = "router.refused"


def command_refused(
    state: RolloutState, policy: Policy, now: float, out: Collector, event: CommandRefused
) -> None:
    """A router refused a command (its signature, its key): critical, since the router does
    not do what the rollout decided. Resolved by the router's next acknowledgement."""
    summary = (
        f"router {event.refused_by} refused command {event.command_id}: {event.reason} (check "
        "the controller's command key and the routers' trusted keys, docs/security.md)"
    )
    evidence = {
        "command_id": event.command_id,
        "refused_by": event.refused_by,
        "reason": event.reason,
        "refused_at": event.refused_at.isoformat(),
    }
    raise_alert(
        state, out, now, policy, status="firing", severity=Severity.CRITICAL, kind="router",
        key=dedup_key(state, REFUSED_KEY), rule="router", summary=summary, evidence=evidence,
    )  # fmt: skip


def refusal_resolved(
    state: RolloutState, policy: Policy, now: float, out: Collector, command_id: str
) -> None:
    """Resolve the refused-command alert when a router acknowledges a command."""
    key = dedup_key(state, REFUSED_KEY)
    if key not in state.firing:
        return
    raise_alert(
        state, out, now, policy, status="resolved", severity=Severity.CRITICAL, kind="router",
        key=key, rule="router", summary=f"a router acknowledged command {command_id}",
        evidence={"command_id": command_id},
    )  # fmt: skip
