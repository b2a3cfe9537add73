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
