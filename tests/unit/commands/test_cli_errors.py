"""A person's mistake in a file is one sentence with its place, never a traceback."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from controller.cli import cli


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})


def error_line(result: Result) -> str:
    assert 1 == result.exit_code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_a_plan_that_is_not_yaml_names_its_line(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("model: fraud\ncandidate_version: v2\n  baseline_version: v1\n")
    assert f"Error: {plan}:3:19: not valid YAML" in error_line(run("deploy", str(plan)))


def test_an_invalid_plan_names_its_fields(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "model: fraud\ncandidate_version: v2\nbaseline_version: v1\n"
        "plan:\n  steps:\n    - canary_percent: 150\n"
    )
    line = error_line(run("deploy", str(plan)))
    assert (
        "invalid plan: plan.steps.0.canary_percent: Input should be less than or equal to 100"
        in line
    )


def test_the_worker_refuses_a_policy_with_an_unknown_detector(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("name: p\nrules:\n  - name: x\n    detector: nope\n")
    line = error_line(run("worker", "--policy", str(policy)))
    assert "unknown detector 'nope'; known detectors: " in line


def test_the_worker_names_the_line_of_a_broken_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text('{"name": "p",\n "rules": [}\n')
    assert f"{policy}:2:" in error_line(run("worker", "--policy", str(policy)))


PLAN = (
    "model: fraud\ncandidate_version: v2\nbaseline_version: v1\n"
    "plan:\n  steps:\n    - {canary_percent: 20, min_bake_s: 600}\n"
    "    - {canary_percent: 100, min_bake_s: 600}\n"
)


def test_deploy_refuses_a_guardrail_the_policy_cannot_bind(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN + "  guardrails:\n    - {name: g, detector: nope}\n")
    line = error_line(run("deploy", str(plan)))
    assert f"Error: {plan}: not sent: deployment rejected by policy" in line
    assert "unknown detector 'nope'" in line


def test_deploy_refuses_a_plan_whose_deadline_comes_before_its_bakes(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN + "  deadline_s: 900\n")
    line = error_line(run("deploy", str(plan)))
    assert (
        f"Error: {plan}: not sent: the steps bake 1200 s in all but its deadline_s is 900 s, "
        "when the rollout is rolled back: lengthen deadline_s or shorten min_bake_s "
        "(--force sends it anyway)"
    ) == line


def test_deploy_force_sends_what_the_checks_would_refuse(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN + "  deadline_s: 900\n")
    # past the checks, it meets the closed port this test gives as the broker
    assert "cannot reach Kafka at 127.0.0.1:1" in error_line(run("deploy", "--force", str(plan)))
