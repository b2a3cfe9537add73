"""The deployment record on `deployment.requested`: where, how, who approves, what to do on a
failure, how to roll back from production. Every field is optional: a request of before
decodes as it did, and the schema and decode agree on a request with the whole record."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

import schemas as s
from tests.factories import make_deployment, make_event
from tests.unit.schemas.test_contract_agreement import CANNOT_STATE, mutations, schema_accepts

RECORD: dict[str, Any] = {
    "environment": "prod",
    "target": "eu-west-1 checkout service",
    "method": {"name": "kserve", "reference": "registry/fraud:v2 (build 1432)"},
    "approvals": [
        {"step": 0, "by": ["sre-oncall"]},
        {"step": 1, "by": ["ml-leads", "carol"]},
    ],
    "on_failure": {
        "action": "rollback",
        "note": "page the fraud on-call",
        "runbook_url": "https://runbooks.example/fraud",
    },
    "rollback": {
        "version": "v0",
        "procedure": "kubectl rollout undo deploy/fraud",
        "runbook_url": "https://runbooks.example/fraud-rollback",
    },
}


def with_record(**changes: Any) -> s.DeploymentRequested:
    doc = make_deployment().model_dump(mode="json")
    doc.update(RECORD)
    doc.update(changes)
    return s.DeploymentRequested.model_validate_json(json.dumps(doc))


def test_a_request_with_the_whole_record_round_trips_through_bytes() -> None:
    request = with_record()

    decoded = s.decode(make_event(request).to_json())

    assert isinstance(decoded, s.Envelope)
    assert request == decoded.data
    assert "prod" == decoded.data.environment
    assert ("ml-leads", "carol") == decoded.data.approvers(1)
    assert "v0" == decoded.data.rollback_version()


def test_a_request_of_before_decodes_without_a_record() -> None:
    doc = json.loads(make_event(make_deployment()).to_json())
    for name in RECORD:
        doc["data"].pop(name, None)

    decoded = s.decode(json.dumps(doc).encode())

    assert isinstance(decoded, s.Envelope)
    request = decoded.data
    assert (None, None, None, None, None, None) == (
        request.environment,
        request.target,
        request.method,
        request.approvals,
        request.on_failure,
        request.rollback,
    )
    assert "v1" == request.rollback_version()  # the baseline
    assert () == request.approvers(0)


def test_the_rollback_version_defaults_to_the_baseline() -> None:
    assert "v1" == with_record(rollback={"procedure": "redeploy v1"}).rollback_version()


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"rollback": {"version": "v2"}}, "rollback.version must differ from candidate_version"),
        ({"approvals": [{"step": 3, "by": ["bob"]}]}, "approvals name steps [3]"),
        (
            {"approvals": [{"step": 1, "by": ["bob"]}, {"step": 1, "by": ["eve"]}]},
            "approvals must name each step once",
        ),
        ({"approvals": [{"step": 1, "by": []}]}, "at least 1 item"),
        ({"on_failure": {"action": "retry"}}, "'rollback', 'pause', 'abort' or 'notify'"),
        ({"method": {"name": "kserve", "colour": "red"}}, "Extra inputs are not permitted"),
        ({"environment": ""}, "at least 1 character"),
    ],
)
def test_a_record_that_cannot_hold_is_rejected_saying_why(
    changes: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        with_record(**changes)


def test_naming_approvers_makes_a_gate_ask_for_approval() -> None:
    request = with_record(approvals=[{"step": 2, "by": ["carol"]}])

    assert [False, True, True] == [request.gated(k) for k in range(3)]  # 1: requires_approval


def test_a_rollback_command_of_before_decodes_without_a_rollback_version() -> None:
    command = s.Command(
        command_id="cmd-1",
        deployment_id="dep-1",
        action=s.CommandAction.ROLLBACK,
        canary_percent=0.0,
        step=0,
        model="fraud",
        candidate_version="v2",
        baseline_version="v1",
        reason="rolled back",
        issued_at=make_event(make_deployment()).time,
    )
    doc = json.loads(make_event(command).to_json())
    doc["data"].pop("rollback_version", None)

    decoded = s.decode(json.dumps(doc).encode())

    assert isinstance(decoded, s.Envelope)
    assert decoded.data.rollback_version is None


def agreement_cases() -> list[Any]:
    doc = json.loads(make_event(with_record()).to_json())
    cases = [pytest.param("valid", doc, id="valid")]
    for name in RECORD:
        nested = doc["data"][name]
        inner = nested[0] if isinstance(nested, list) else nested
        if not isinstance(inner, dict):
            continue
        for case, mutated in mutations({"data": inner}):
            if not case.startswith("data."):
                continue  # the envelope's attributes: covered by test_contract_agreement
            changed = json.loads(json.dumps(doc))
            target = changed["data"][name]
            if isinstance(target, list):
                target[0] = mutated["data"]
            else:
                changed["data"][name] = mutated["data"]
            cases.append(pytest.param(case, changed, id=f"{name}: {case}"))
    for case, mutated in mutations(doc):
        if case.startswith("data.") or case.startswith("no data."):
            cases.append(pytest.param(case, mutated, id=case))
    return cases


@pytest.mark.parametrize(("case", "doc"), agreement_cases())
def test_the_schema_and_decode_agree_on_the_record(case: str, doc: dict[str, Any]) -> None:
    decoded = s.decode(json.dumps(doc).encode())
    rejected = isinstance(decoded, s.Rejection)

    if schema_accepts(doc, s.DeploymentRequested.EVENT_TYPE):
        if rejected:
            kinds = {e.kind for e in decoded.errors}  # type: ignore[union-attr]
            assert kinds <= CANNOT_STATE, f"schema accepts, decode rejects: {decoded.reason}"
    else:
        assert rejected, f"schema rejects {case}, decode accepts it"
