"""Commands for people: deploy, approve, pause, resume, abort, rollback, status, watch, alerts,
and `emit` for shell producers. Readable by default, `--json` for scripts."""

from __future__ import annotations

import getpass
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from controller.errors import RolloutError
from controller.settings import Settings, load_settings
from schemas import (
    PAYLOAD_BY_TYPE,
    AbortRequested,
    Alert,
    ApprovalDenied,
    ApprovalGranted,
    Decision,
    DeploymentRequested,
    Envelope,
    MonitorDecision,
    PauseRequested,
    PipelineDecision,
    Rejection,
    ResumeRequested,
    RollbackRequested,
    Topic,
    decode,
    make_event,
)

SOURCE = "rollout-cli"


class PlanError(RolloutError):
    """A plan the policy refuses; the message is the core's reason."""


def _settings(bootstrap: str | None) -> Settings:
    return load_settings(**({"bootstrap_servers": bootstrap} if bootstrap else {}))


bootstrap_option = click.option(
    "--bootstrap-servers", "bootstrap", envvar="KAFKA_BOOTSTRAP_SERVERS", help="host:port,..."
)
json_option = click.option("--json", "as_json", is_flag=True, help="JSON lines instead of text.")


def _send(settings: Settings, events: list[Envelope[Any]]) -> int:
    from controller import kafka_clients
    from controller.sdk.emit import emit

    producer = kafka_clients.producer(settings, acks="all")
    try:
        return emit(settings, events, producer=producer, timeout=settings.connect_timeout_s)
    finally:
        producer.close(timeout=settings.connect_timeout_s)


def _echo_sent(event: Envelope[Any], as_json: bool) -> None:
    if as_json:
        click.echo(event.to_json().decode())
    else:
        click.echo(f"sent {event.type} for {event.key()} (id {event.id})")


wait_option = click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    envvar="ROLLOUT_CLI_WAIT_S",
    help="Seconds to wait for the worker's answer (a decision, or a refusal that says why).",
)
no_wait_option = click.option(
    "--no-wait", is_flag=True, help="Send and exit at once, without waiting for an answer."
)


def request_options(command: Any) -> Any:
    """The options of a person's request to the worker: why and who (the audit trail), where
    the brokers are, JSON output, and whether and how long to wait for the worker's answer."""
    for option in reversed(
        (
            click.option("--reason", default="", help="Why; it goes into the audit trail."),
            click.option("--by", default=None, help="Who (default: the current user)."),
            bootstrap_option,
            json_option,
            wait_option,
            no_wait_option,
        )
    ):
        command = option(command)
    return command


class _Answers:
    """The worker's answers to one request: its decisions for the deployment and the dead
    letter that refuses the request (its original event's id). Positioned at the end of both
    topics before the request is sent, so only answers to it are read."""

    def __init__(self, settings: Settings) -> None:
        from kafka import TopicPartition

        from controller import kafka_clients
        from controller.topics import topic_name

        self.decisions = topic_name(settings, Topic.DECISIONS)
        self.letters = topic_name(settings, Topic.DEAD_LETTER)
        self.consumer = kafka_clients.consumer(settings, group_id=None, enable_auto_commit=False)
        partitions = []
        for topic in (self.decisions, self.letters):
            for p in sorted(self.consumer.partitions_for_topic(topic) or ()):
                partitions.append(TopicPartition(topic, p))
        self.consumer.assign(partitions)
        self.consumer.seek_to_end()
        for tp in partitions:
            self.consumer.position(tp)  # resolve the end now, before the request is sent

    def wait(self, event: Envelope[Any], wait_s: float) -> tuple[str, Any] | None:
        """("decision", Decision) or ("refused", reason), or None when nothing came in time."""
        deadline = time.monotonic() + wait_s
        try:
            while (left := deadline - time.monotonic()) > 0:
                polled = self.consumer.poll(timeout_ms=max(1, int(min(left, 0.5) * 1000)))
                for records in polled.values():
                    for record in records:
                        answer = self._answer(record.topic, record.value, event)
                        if answer is not None:
                            return answer
            return None
        finally:
            self.consumer.close()

    def _answer(self, topic: str, value: bytes, event: Envelope[Any]) -> tuple[str, Any] | None:
        got = decode(value)
        if not isinstance(got, Envelope):
            return None
        data = got.data
        answering = (
            getattr(data, "deployment_id", None),
            getattr(data, "model", None) if isinstance(data, MonitorDecision) else None,
            # a pool's answer is its configuration or deletion (not the alerts it resolves)
            data.pool
            if isinstance(data, PipelineDecision) and data.action in ("configured", "deleted")
            else None,
        )
        if topic == self.decisions and event.key() in answering and _follows_from(data, event.data):
            return ("decision", data)
        if topic == self.letters and data.reason.startswith("refused: "):
            import base64

            try:
                original = orjson.loads(base64.b64decode(data.original_b64))
            except (ValueError, orjson.JSONDecodeError):
                return None
            if isinstance(original, dict) and original.get("id") == event.id:
                return ("refused", data.reason.removeprefix("refused: "))
        return None


def _follows_from(decision: Any, request: Any) -> bool:
    """Whether a rollout's decision is the one a person's request leads to (another decision
    of the rollout, such as the deployment's own arriving late, is not its answer)."""
    if not isinstance(decision, Decision):
        return True  # a monitor's or a pool's: its configuration's answer
    evidence = decision.evidence
    if isinstance(request, DeploymentRequested):
        return decision.from_phase == "pending"
    if isinstance(request, ApprovalGranted):
        return evidence.get("approved_by") == request.by and decision.step == request.step
    if isinstance(request, ApprovalDenied):
        return evidence.get("denied_by") == request.by
    if isinstance(request, PauseRequested):
        return decision.to_phase == "paused"
    if isinstance(request, ResumeRequested):
        return decision.from_phase == "paused"
    if isinstance(request, AbortRequested):
        return decision.to_phase == "aborted"
    if isinstance(request, RollbackRequested):
        return decision.to_phase == "rolled_back"
    return True


def _send_and_answer(
    settings: Settings, event: Envelope[Any], as_json: bool, wait_s: float, no_wait: bool
) -> None:
    """Send a person's request; unless `no_wait`, wait up to `wait_s` for the worker's answer:
    a refusal exits 1 with its reason, a decision is printed."""
    answers = None if no_wait or wait_s <= 0 else _Answers(settings)
    _send(settings, [event])
    _echo_sent(event, as_json)
    if answers is None:
        return
    answer = answers.wait(event, wait_s)
    if answer is None:
        message = (
            f"no answer within {wait_s:g} s: the worker may be down or behind, or the request "
            "needed no decision (an approval for a later gate is recorded until then)"
        )
        click.echo(json.dumps({"answer": None, "note": message}) if as_json else message)
        return
    kind, detail = answer
    if kind == "refused":
        if as_json:
            click.echo(json.dumps({"answer": "refused", "reason": detail}))
        raise click.ClickException(f"refused: {detail}")
    if as_json:
        click.echo(json.dumps({"answer": "decision", "decision": detail.model_dump(mode="json")}))
    elif isinstance(detail, MonitorDecision | PipelineDecision):
        click.echo(f"decision: {detail.action}: {detail.reason}")
    else:
        click.echo(f"decision: {detail.from_phase} -> {detail.to_phase}: {detail.reason}")


def _load_document(path: Path) -> Any:
    """A YAML or JSON file (`-`: stdin); a syntax error says `file:line:column: what`."""
    from controller.policy_io import read_document

    return read_document(path)


def describe_validation(exc: Exception) -> str:
    """A pydantic ValidationError in one line: `field.path: message; ...` (else its text)."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "the document"
        problems.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
    return "; ".join(problems)


def check_plan(payload: DeploymentRequested, policy_file: Path | None, force: bool = False) -> None:
    """Refuse before sending a plan the worker would abort at once: the core judges it against
    the policy exactly as the worker does (unknown detectors, guardrails the policy cannot
    bind), so the person learns why now, not from an aborted rollout. Unless `force`, refuse
    too a plan that binds but cannot promote (controller.core.rollout.feasibility)."""
    from controller.core.rollout.feasibility import plan_problems
    from controller.engine import Engine

    engine = Engine.from_policy_file(policy_file)
    effects = engine.on_event(None, make_event(payload, source=SOURCE), time.time())
    state = effects.state
    if state is not None and str(state.phase) == "aborted":
        records = effects.records
        reasons = [r.event.data.reason for r in records if isinstance(r.event.data, Decision)]
        raise PlanError(reasons[-1] if reasons else "the policy refuses this plan")
    gated = frozenset(a.step for a in payload.approvals or ())
    problems = [] if force else plan_problems(payload.plan, engine.policy, gated)
    if problems:
        raise PlanError(f"{'; '.join(problems)} (--force sends it anyway)")


@click.command("emit")
@click.argument("file", type=click.Path(path_type=Path, allow_dash=True), default="-")
@click.option(
    "--type",
    "event_type",
    help="Wrap each line as the data of this event type "
    "(e.g. prediction.served.v1); without it each line is a whole CloudEvent.",
)
@bootstrap_option
@json_option
def emit_cmd(file: Path, event_type: str | None, bootstrap: str | None, as_json: bool) -> None:
    """Send events from FILE (JSON lines; default stdin) to their topics.

    Every line is validated first; nothing is sent if any line is invalid."""
    settings = _settings(bootstrap)
    stream = sys.stdin if str(file) == "-" else file.open(encoding="utf-8")
    events: list[Envelope[Any]] = []
    payload_cls = None
    if event_type:
        full = event_type if event_type.startswith("dev.rollout.") else "dev.rollout." + event_type
        payload_cls = PAYLOAD_BY_TYPE.get(full)
        if payload_cls is None:
            known = ", ".join(sorted(t.removeprefix("dev.rollout.") for t in PAYLOAD_BY_TYPE))
            raise click.UsageError(f"unknown event type {event_type!r}; known: {known}")
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        if payload_cls is not None:
            try:
                payload = payload_cls.model_validate_json(line)
            except ValueError as exc:
                raise click.ClickException(f"line {n}: invalid {event_type}: {exc}") from exc
            events.append(make_event(payload, source=SOURCE))
            continue
        result = decode(line.encode(), now=datetime.now(UTC))
        if isinstance(result, Rejection):
            raise click.ClickException(f"line {n}: {result.reason}")
        events.append(result)
    sent = _send(settings, events)
    for event in events:
        _echo_sent(event, as_json)
    if not as_json:
        click.echo(f"{sent} event(s) sent")


key_option = click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="ROLLOUT_SIGNING_KEY_FILE",
    default=None,
    help="Sign the request with this key file (`rollout keys generate`); a worker with an "
    "identities file accepts only signed requests. --by defaults to the key's identity.",
)


def _signer(key_file: Path | None, by: Any, what: str = "--by") -> tuple[Any, str]:
    """The signing key (None: unsigned) and who the request names: `by` (--by, or a plan's
    requested_by), else the key's identity, else the current user."""
    if key_file is None:
        return None, by or getpass.getuser()
    from controller.security.signing import SigningKey

    key = SigningKey.load(key_file)
    if by is not None and by != key.identity:
        raise click.ClickException(
            f"{what} {by} does not match the key's identity {key.identity}: leave {what} out, or "
            f"sign with {by}'s own key"
        )
    return key, key.identity


@click.command("deploy")
@click.argument(
    "plan", type=click.Path(exists=True, dir_okay=False, path_type=Path, allow_dash=True)
)
@click.option(
    "--deployment-id",
    help="Override the plan's deployment_id (default: the plan's, or model-candidate-<random>).",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="ROLLOUT_POLICY_FILE",
    help="The worker's rollout policy, to check the plan against before it is sent; "
    "default: built in.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Send a plan that binds to the policy but cannot promote (a deadline shorter than "
    "its bakes, a step that changes nothing).",
)
@bootstrap_option
@json_option
@wait_option
@no_wait_option
@key_option
def deploy_cmd(
    plan: Path,
    deployment_id: str | None,
    policy_file: Path | None,
    force: bool,
    bootstrap: str | None,
    as_json: bool,
    wait_s: float,
    no_wait: bool,
    key_file: Path | None,
) -> None:
    """Request a rollout described by PLAN (YAML or JSON: the fields of deployment.requested).

    The plan is checked against the policy first (as the worker will), and not sent if the
    policy refuses it."""
    doc = _load_document(plan)
    if not isinstance(doc, dict):
        raise click.ClickException(f"{plan}: a plan is a mapping of deployment.requested fields")
    if deployment_id:
        doc["deployment_id"] = deployment_id
    doc.setdefault(
        "deployment_id",
        f"{doc.get('model', 'model')}-{doc.get('candidate_version', 'v')}-{uuid.uuid4().hex[:6]}",
    )
    key, who = _signer(key_file, doc.get("requested_by"), what="the plan's requested_by")
    doc["requested_by"] = who
    try:
        payload = DeploymentRequested.model_validate_json(orjson.dumps(doc))
    except ValueError as exc:
        raise click.ClickException(
            f"{plan}: invalid plan: {describe_validation(exc)}; fix these fields"
        ) from exc
    try:
        check_plan(payload, policy_file, force)
    except PlanError as exc:
        raise click.ClickException(f"{plan}: not sent: {exc}") from exc
    if key is not None:
        payload = key.sign(payload)
    event = make_event(payload, source=SOURCE)
    _send_and_answer(_settings(bootstrap), event, as_json, wait_s, no_wait)


def _person_command(name: str, cls: Any, help_text: str, with_step: bool = False) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("deployment_id")
    @request_options
    @key_option
    def command(
        deployment_id: str,
        reason: str,
        by: str | None,
        bootstrap: str | None,
        as_json: bool,
        wait_s: float,
        no_wait: bool,
        key_file: Path | None,
        step: int | None = None,
    ) -> None:
        key, who = _signer(key_file, by)
        fields: dict[str, Any] = {"deployment_id": deployment_id, "by": who, "reason": reason}
        if with_step:
            fields["step"] = step
        payload = cls(**fields)
        if key is not None:
            payload = key.sign(payload)
        event = make_event(payload, source=SOURCE)
        _send_and_answer(_settings(bootstrap), event, as_json, wait_s, no_wait)

    if with_step:
        command = click.option(
            "--step",
            type=int,
            required=True,
            help="The traffic step the approval is for (0 = the start).",
        )(command)
    return command


approve_cmd = _person_command("approve", ApprovalGranted, "Approve a gate of a rollout.", True)
deny_cmd = _person_command(
    "deny", ApprovalDenied, "Deny a gate of a rollout (it is aborted).", True
)
pause_cmd = _person_command("pause", PauseRequested, "Hold a rollout where it is.")
resume_cmd = _person_command("resume", ResumeRequested, "Resume a paused rollout.")
abort_cmd = _person_command(
    "abort", AbortRequested, "Abort a rollout: all traffic back to the baseline."
)
rollback_cmd = _person_command(
    "rollback",
    RollbackRequested,
    "Roll a rollout back now; a promoted model goes back to its recorded rollback version "
    "(default: the baseline).",
)


# ---- reading the audit trail ----------------------------------------------------------------


def _consume(
    settings: Settings,
    topics: list[Topic],
    *,
    follow: bool,
    from_beginning: bool,
    idle_ms: int = 2000,
    deadline: float | None = None,
) -> Iterator[Envelope[Any]]:
    """The events of the topics: until idle for `idle_ms` (not following), or for ever
    (following), and never past `deadline` (time.monotonic())."""
    from controller import kafka_clients
    from controller.topics import topic_name

    consumer = kafka_clients.consumer(
        settings,
        *[topic_name(settings, t) for t in topics],
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    idle_since = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if not follow and (now - idle_since) * 1000 >= idle_ms:
                return
            polled = consumer.poll(timeout_ms=200)
            if not polled:
                continue
            idle_since = time.monotonic()
            for records in polled.values():
                for record in records:
                    event = decode(record.value)
                    if isinstance(event, Envelope):
                        yield event
    finally:
        consumer.close()


def _decision_line(event: Envelope[Any]) -> str:
    d = event.data
    at = d.at.strftime("%H:%M:%S")
    return (
        f"{at}  {d.deployment_id}  {d.from_phase} -> {d.to_phase}  step {d.step} "
        f"({d.canary_percent:g}%)  {d.reason}"
    )


@dataclass
class ModelHealth:
    """A model's monitor as its decisions tell it: version, stage, open alerts."""

    model: str
    version: str | None = None
    stage: str = "unmonitored"
    watched: bool = False
    predictions: int | None = None
    open: dict[str, str] = field(default_factory=dict)
    last: str = ""
    #: the label rules' stage, and the last quality report (from labelled predictions)
    label_stage: str | None = None
    quality: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "stage": self.stage,
            "watched": self.watched,
            "predictions": self.predictions,
            "open_alerts": dict(sorted(self.open.items())),
            "last": self.last,
            "label_stage": self.label_stage,
            "quality": self.quality,
        }


def read_health(
    events: Iterator[Envelope[Any]],
) -> tuple[dict[str, Any], dict[str, ModelHealth], dict[str, dict[str, Alert]]]:
    """The rollouts' latest decisions, the models' monitors and every open alert (by subject
    and dedup key) from the decisions and alerts topics."""
    rollouts: dict[str, Any] = {}
    models: dict[str, ModelHealth] = {}
    alerts: dict[str, dict[str, Alert]] = {}
    for event in events:
        data = event.data
        if isinstance(data, Decision):
            rollouts[data.deployment_id] = data
        elif isinstance(data, MonitorDecision):
            health = models.setdefault(data.model, ModelHealth(data.model))
            health.version = data.version or health.version
            health.last = data.reason
            if data.action == "configured":
                health.watched = True
                health.stage = str(data.evidence.get("stage", "waiting"))
            elif data.action == "deleted":
                health.watched = False
                health.stage = "unmonitored"
                health.open.clear()
            elif data.action == "reference_learned" and "label_stage" in data.evidence:
                health.label_stage = str(data.evidence["label_stage"])
            elif data.action == "reference_learned":
                health.stage = str(data.evidence.get("stage", "calibrating"))
            elif data.action == "quality":
                health.quality = dict(data.evidence)
                health.label_stage = str(data.evidence.get("label_stage", health.label_stage))
            elif data.action == "unmonitored":
                health.predictions = int(data.evidence.get("predictions", 0))
            elif data.action == "alert_fired" and data.rule:
                health.open[data.rule] = data.reason
            elif data.action == "alert_resolved" and data.rule:
                health.open.pop(data.rule, None)
        elif isinstance(data, Alert):
            bucket = alerts.setdefault(data.deployment_id, {})
            if data.status == "firing":
                bucket[data.dedup_key] = data
            else:
                bucket.pop(data.dedup_key, None)
    return rollouts, models, alerts


@dataclass
class RolloutRecord:
    """A rollout's deployment record, as its first decision keeps it (`record` in the
    evidence: `DeploymentRequested.record()`), and the approvals that opened its gates, from
    the later decisions (who, why, when): what `status` shows of one rollout."""

    record: dict[str, Any]
    granted: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.record, "approvals_granted": list(self.granted)}


def read_records(events: Iterator[Envelope[Any]]) -> dict[str, RolloutRecord]:
    """The rollouts' deployment records and the approvals the controller accepted (each
    opened a gate), in order, from the decisions topic (the audit trail): a rollout whose
    request carried no record has none."""
    records: dict[str, RolloutRecord] = {}
    granted: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        data = event.data
        if not isinstance(data, Decision):
            continue
        evidence = data.evidence
        if data.from_phase == "pending" and isinstance(evidence.get("record"), dict):
            records[data.deployment_id] = RolloutRecord(dict(evidence["record"]))
        elif "approved_by" in evidence:
            granted.setdefault(data.deployment_id, []).append(
                {
                    "step": data.step,
                    "by": evidence["approved_by"],
                    "reason": evidence.get("approval_reason", ""),
                    "at": data.at.isoformat(),
                    # the key that signed it, when the worker verified it (None: unverified)
                    "key_id": evidence.get("approval_key"),
                }
            )
    for deployment_id, approvals in granted.items():
        if deployment_id in records:
            records[deployment_id].granted = approvals
    return records


def record_lines(record: RolloutRecord) -> list[str]:
    """The deployment record as `status` shows it: where, how, the approvals asked for and
    given per gate, what to do on a failure, how to roll back from production."""
    doc = record.record
    lines = [
        f"environment {doc.get('environment') or '-'}, target {doc.get('target') or '-'}, "
        f"requested by {doc.get('requested_by') or '-'}"
    ]
    method = doc.get("method")
    if method:
        ref = f" ({method['reference']})" if method.get("reference") else ""
        lines.append(f"deployed with {method['name']}{ref}")
    given = {g["step"]: g for g in record.granted}
    required = doc.get("approvals_required") or []
    for gate in required:
        k = gate["step"]
        label = f"{'start' if k == 0 else 'widen to'} step {k} ({gate['canary_percent']:g}%)"
        asked = " or ".join(gate["by"]) or "anyone"
        g = given.get(k)
        if g is None:
            lines.append(f"approval {label}: from {asked}; not granted yet")
        else:
            why = f": {g['reason']}" if g["reason"] else ""
            key = g.get("key_id")
            signed = f" (verified, key {key})" if key else " (unverified)"
            lines.append(
                f"approval {label}: from {asked}; granted by {g['by']}{signed} at {g['at']}{why}"
            )
    if not required:
        lines.append("approvals: none required")
    on_failure = doc.get("on_failure")
    if not on_failure:
        lines.append("on failure: not recorded (the policy rolls back a failing canary)")
    else:
        lines.append(
            _joined(
                f"on failure: {on_failure['action']}",
                on_failure.get("note", ""),
                on_failure.get("runbook_url"),
            )
        )
    rollback = doc.get("rollback") or {}
    default = " (the baseline)" if rollback.get("default") else ""
    lines.append(
        _joined(
            f"rollback from production: to {rollback.get('version', '-')}{default}",
            rollback.get("procedure", ""),
            rollback.get("runbook_url"),
        )
    )
    return lines


def _joined(head: str, note: str, runbook_url: str | None) -> str:
    """`head; note; runbook URL`, leaving out what is empty."""
    runbook = f"runbook {runbook_url}" if runbook_url else ""
    return "; ".join(part for part in (head, note, runbook) if part)


@click.command("status")
@click.argument("name", required=False)
@bootstrap_option
@json_option
def status_cmd(name: str | None, bootstrap: str | None, as_json: bool) -> None:
    """Where each rollout stands and how each monitored model is, with their open alerts,
    from the decisions and alerts topics (the audit trail). NAME: one deployment or model;
    for one rollout, its deployment record too (kept by its first decision): where, how, the
    approvals asked for and granted, what to do on a failure, how to roll back."""
    events = list(
        _consume(
            _settings(bootstrap), [Topic.DECISIONS, Topic.ALERTS], follow=False, from_beginning=True
        )
    )
    rollouts, models, alerts = read_health(iter(events))
    records = read_records(iter(events))
    if name:
        rollouts = {k: v for k, v in rollouts.items() if k == name}
        models = {k: v for k, v in models.items() if k == name}
        if not rollouts and not models:
            raise click.ClickException(f"no decisions for {name} yet")
    if as_json:
        for d in rollouts.values():
            doc = d.model_dump(mode="json")
            doc["open_alerts"] = sorted(alerts.get(d.deployment_id, {}))
            record = records.get(d.deployment_id)
            doc["record"] = None if record is None else record.to_dict()
            click.echo(json.dumps({"rollout": doc}))
        for health in models.values():
            click.echo(json.dumps({"model": health.to_dict()}))
        return
    if not rollouts and not models:
        click.echo("no rollouts and no monitored models yet")
    if rollouts:
        click.echo("rollouts:")
    for d in sorted(rollouts.values(), key=lambda d: d.at):
        click.echo(
            f"  {d.deployment_id:32} {d.to_phase:18} step {d.step} ({d.canary_percent:g}%)  "
            f"{d.reason}"
        )
        quality = rollout_quality(d)
        if quality:
            click.echo(f"      {quality}")
        if name:  # one rollout: its whole deployment record
            record = records.get(d.deployment_id)
            lines = ["no deployment record"] if record is None else record_lines(record)
            for line in lines:
                click.echo(f"      {line}")
        for key, alert in sorted(alerts.get(d.deployment_id, {}).items()):
            click.echo(f"      open alert {key} ({alert.severity.value}): {alert.summary}")
    if models:
        click.echo("models:")
    for health in sorted(models.values(), key=lambda h: h.model):
        click.echo("  " + _health_line(health))
        if health.quality:
            click.echo(f"      {model_quality(health.quality)}")
        for rule, reason in sorted(health.open.items()):
            click.echo(f"      open alert {rule}: {reason}")


#: The quality metrics `status` shows, in this order, with their names.
_QUALITY = (
    ("accuracy", "accuracy"),
    ("auc", "AUC"),
    ("log_loss", "log loss"),
    ("brier", "Brier"),
    ("ece", "ECE"),
    ("mae", "MAE"),
    ("rmse", "RMSE"),
    ("bias", "bias"),
)


def _metrics(values: Any, prefix: str = "") -> str:
    if not isinstance(values, dict):
        return ""
    parts = []
    for key, shown in _QUALITY:
        value = values.get(prefix + key)
        if isinstance(value, int | float):
            parts.append(f"{shown} {value:.4g}")
    return ", ".join(parts)


def model_quality(report: dict[str, Any]) -> str:
    """A model's last quality report (labelled predictions), one line."""
    metrics = report.get("metrics") or {}
    line = (
        f"quality over {float(report.get('span_s', 0)):.0f} s from {report.get('from', '?')}: "
        f"{int(metrics.get('pairs', 0)):,} labelled predictions, {_metrics(metrics) or '-'}"
    )
    delay = metrics.get("delay_p50_s")
    if isinstance(delay, int | float):
        line += f"; label delay p50 {delay:.0f} s"
    reference = report.get("reference")
    if reference:
        line += f" (labelled reference: {_metrics(reference)})"
    return line


def rollout_quality(decision: Decision) -> str:
    """The quality rule's figures at the rollout's last decision (canary vs baseline), one
    line; empty when its policy has no quality rule or no labels came."""
    for verdict in decision.verdicts:
        if verdict.get("detector") != "quality":
            continue
        evidence = verdict.get("evidence") or {}
        pairs = (evidence.get("canary_pairs"), evidence.get("baseline_pairs"))
        if not any(pairs):
            return f"quality: {verdict.get('reason', 'no labels yet')}"
        return (
            f"quality at this decision: canary {int(pairs[0] or 0):,} labelled, "
            f"{_metrics(evidence, 'canary_') or '-'}; baseline {int(pairs[1] or 0):,} labelled, "
            f"{_metrics(evidence, 'baseline_') or '-'}"
        )
    return ""


def _health_line(health: ModelHealth) -> str:
    if not health.watched:
        seen = f"{health.predictions:,} predictions" if health.predictions else "traffic"
        return f"{health.model:32} unmonitored        {seen} without a monitor"
    alerts = f"{len(health.open)} open alert(s)" if health.open else "healthy"
    labels = f"  labels {health.label_stage}" if health.label_stage else ""
    return f"{health.model:32} {health.stage:18} version {health.version or '-'}  {alerts}{labels}"


@click.command("watch")
@click.argument("deployment_id", metavar="DEPLOYMENT_ID|MODEL")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds (0: read what is there now and stop).",
)
@bootstrap_option
@json_option
def watch_cmd(
    deployment_id: str, timeout: float | None, bootstrap: str | None, as_json: bool
) -> None:
    """Follow one rollout (its decisions, commands and alerts) or one model (its monitor's
    decisions and alerts), from the start. A rollout's watch ends when it reaches a terminal
    phase; a model's runs until --timeout (or Ctrl-C)."""
    # `is not None`: a --timeout of 0 is a timeout too (it was read as "no timeout")
    deadline = time.monotonic() + timeout if timeout is not None else None
    for event in _consume(
        _settings(bootstrap),
        [Topic.DECISIONS, Topic.COMMANDS, Topic.ALERTS],
        follow=True,
        from_beginning=True,
        deadline=deadline,
    ):
        if event.key() != deployment_id:
            continue
        if as_json:
            click.echo(event.to_json().decode())
        else:
            click.echo(_line(event))
        data = event.data
        if getattr(data, "to_phase", None) in ("promoted", "rolled_back", "aborted"):
            return
        if deadline is not None and time.monotonic() > deadline:
            return


def _line(event: Envelope[Any]) -> str:
    d = event.data
    kind = event.type.removeprefix("dev.rollout.").removesuffix(".v1")
    if kind == "monitor.decision":
        return f"monitor  {d.at:%H:%M:%S}  {d.model}  {d.action}  {d.reason}"
    if kind == "pipeline.decision":
        return f"pipeline {d.at:%H:%M:%S}  {event.key()}  {d.action}  {d.reason}"
    if kind == "pipeline.throttle":
        limit = f" to {d.limit:g} {d.unit}" if d.limit is not None else ""
        return (
            f"throttle {d.issued_at:%H:%M:%S}  {d.pipeline}  {d.action}{limit} of {d.resource} "
            f"in {d.pool}  [{d.command_id}]"
        )
    if kind == "decision":
        return "decision " + _decision_line(event)
    if kind == "command":
        return (
            f"command  {d.issued_at:%H:%M:%S}  {d.deployment_id}  {d.action.value} "
            f"{d.canary_percent:g}%  [{d.command_id}]  {d.reason}"
        )
    if kind == "alert":
        return (
            f"alert    {d.at:%H:%M:%S}  {d.deployment_id}  {d.status.upper()} "
            f"{d.severity.value} {d.kind}: {d.summary}"
        )
    return f"{kind} {event.key()}"


@click.command("alerts")
@click.option("--follow", "-f", is_flag=True, help="Keep following new alerts.")
@click.option("--from-beginning", is_flag=True, help="Start with the alerts already recorded.")
@bootstrap_option
@json_option
def alerts_cmd(follow: bool, from_beginning: bool, bootstrap: str | None, as_json: bool) -> None:
    """Alerts, firing and resolved."""
    for event in _consume(
        _settings(bootstrap),
        [Topic.ALERTS],
        follow=follow,
        from_beginning=from_beginning or not follow,
    ):
        click.echo(event.to_json().decode() if as_json else _line(event))
