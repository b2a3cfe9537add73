"""`rollout simulate` writes a log; `rollout replay` reads it back."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
from click.testing import CliRunner

import schemas as s
from controller.commands.replay_cmd import replay_cmd, simulate_cmd
from tests.factories import T0, make_deployment, make_event

SIMULATE = ["--plan", "quick", "--rate", "40", "--onset", "10", "--canary-batch", "0.5"]


def simulate(tmp_path: Path, scenario: str, seed: int = 1) -> Path:
    out = tmp_path / f"{scenario}.jsonl"
    result = CliRunner().invoke(
        simulate_cmd, ["--scenario", scenario, "--seed", str(seed), "--out", str(out), *SIMULATE]
    )
    assert 0 == result.exit_code, result.output
    return out


def test_simulate_writes_cloudevents_as_on_the_topics(tmp_path: Path) -> None:
    log = simulate(tmp_path, "latency_p99_x2")

    events = [s.decode(line) for line in log.read_bytes().splitlines()]

    assert all(not isinstance(e, s.Rejection) for e in events)
    types = {e.type for e in events if not isinstance(e, s.Rejection)}
    assert {
        s.DeploymentRequested.EVENT_TYPE,
        s.PredictionBatch.EVENT_TYPE,
        s.TrafficApplied.EVENT_TYPE,
    } <= types


def test_simulate_says_how_the_rollout_ended(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    result = CliRunner().invoke(
        simulate_cmd,
        ["--scenario", "total_outage", "--seed", "2", "--out", str(out), *SIMULATE],
    )

    assert "sim-total-outage-2:" in result.stderr
    assert "rollback at +" in result.stderr
    assert "after the fault's onset" in result.stderr


def test_simulate_open_loop_has_no_controller_in_it(tmp_path: Path) -> None:
    out = tmp_path / "open.jsonl"
    result = CliRunner().invoke(
        simulate_cmd,
        ["--scenario", "healthy", "--seed", "1", "--out", str(out), "--open-loop", "5"],
    )

    assert 0 == result.exit_code, result.output
    types = {orjson.loads(line)["type"] for line in out.read_bytes().splitlines()}
    assert s.TrafficApplied.EVENT_TYPE not in types


def test_replay_prints_the_same_bytes_every_time(tmp_path: Path) -> None:
    log = simulate(tmp_path, "error_burst_x5")

    first = CliRunner().invoke(replay_cmd, [str(log)])
    second = CliRunner().invoke(replay_cmd, [str(log)])

    assert 0 == first.exit_code, first.output
    assert first.stdout_bytes == second.stdout_bytes
    lines = [orjson.loads(line) for line in first.stdout_bytes.splitlines()]
    assert {s.Command.EVENT_TYPE, s.Decision.EVENT_TYPE} <= {d["type"] for d in lines}
    decisions = [d["data"] for d in lines if d["type"] == s.Decision.EVENT_TYPE]
    assert "rolled_back" == decisions[-1]["to_phase"]
    # the rollback hands production back to the baseline's monitor, after the decision
    configured = [d["data"] for d in lines if d["type"] == s.MonitorConfigured.EVENT_TYPE]
    assert [c["version"] for c in configured][-1] == "v41"
    assert configured[-1]["source"].startswith("rollout:")


def test_replay_reports_bad_lines_on_stderr_and_goes_on(tmp_path: Path) -> None:
    log = simulate(tmp_path, "error_burst_x5")
    good = CliRunner().invoke(replay_cmd, [str(log)]).stdout_bytes
    lines = log.read_bytes().splitlines(keepends=True)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"".join([lines[0], b'{"specversion": "1.0"\n', *lines[1:]]))

    result = CliRunner().invoke(replay_cmd, [str(broken)])

    assert 0 == result.exit_code
    assert good == result.stdout_bytes
    (rejection,) = [orjson.loads(line) for line in result.stderr_bytes.splitlines()]
    assert ("rejected", 2) == (rejection["kind"], rejection["line"])
    assert rejection["reason"].startswith("truncated JSON")


def test_replay_summary_is_a_table_per_deployment(tmp_path: Path) -> None:
    log = simulate(tmp_path, "healthy", seed=4)

    result = CliRunner().invoke(replay_cmd, [str(log), "--summary"])

    assert 0 == result.exit_code, result.output
    assert "| sim-healthy-4 | promoted | 2/2 |" in result.stdout
    assert "0 rejected" in result.stdout


def test_replay_reads_a_policy_file_and_names_its_problems(tmp_path: Path) -> None:
    log = simulate(tmp_path, "healthy", seed=4)
    bad = tmp_path / "policy.yaml"
    bad.write_text("version: 1\nrules:\n  - {name: x, detector: crystal_ball}\n")

    result = CliRunner().invoke(replay_cmd, [str(log), "--policy", str(bad)])

    assert 0 != result.exit_code
    assert "unknown detector 'crystal_ball'" in result.stderr


def test_until_ticks_past_the_last_event_as_the_workers_timer_did(tmp_path: Path) -> None:
    """A log that ends with the deployment request: only the clock acts after it (here, the
    router alert of a set_traffic nobody acknowledged). Replay stops at the last event unless
    told when the log was taken (`--until`)."""
    log = tmp_path / "request.jsonl"
    log.write_bytes(make_event(make_deployment(), time=T0).to_json() + b"\n")
    later = (T0 + timedelta(seconds=60)).isoformat()

    plain = CliRunner().invoke(replay_cmd, [str(log), "--outputs"])
    until = CliRunner().invoke(replay_cmd, [str(log), "--outputs", "--until", later])

    assert 0 == plain.exit_code == until.exit_code, until.output
    kinds = [orjson.loads(line)["type"].split(".")[-2] for line in until.output.splitlines()]
    # the rollout's start configures the model's monitor (its decision says so), then the
    # command is sent again
    assert ["command", "decision", "configured", "decision", "command", "alert"] == kinds
    assert until.output.startswith(plain.output)
    first, _, _, _, again, alert = until.output.splitlines()
    assert first == again
    assert "router" == orjson.loads(alert)["data"]["kind"]


def test_a_promoted_candidate_becomes_the_watched_version_with_its_training_profile(
    tmp_path: Path,
) -> None:
    log = simulate(tmp_path, "healthy")

    printed = CliRunner().invoke(replay_cmd, [str(log), "--outputs"])

    assert 0 == printed.exit_code, printed.output
    docs = [orjson.loads(line) for line in printed.stdout_bytes.splitlines()]
    configured = [d for d in docs if d["type"] == s.MonitorConfigured.EVENT_TYPE]
    # the start hands the baseline to the monitor; the promote, the candidate and its profile
    assert ["v41", "v42"] == [c["data"]["version"] for c in configured]
    assert configured[0]["data"].get("training_profile") is None
    assert configured[1]["data"]["training_profile"]["features"]
    promoted = next(
        d
        for d in docs
        if d["type"] == s.Decision.EVENT_TYPE and d["data"]["to_phase"] == "promoted"
    )
    assert configured[1]["time"] == promoted["time"]  # at the decision's own time
    watched = [
        d["data"]
        for d in docs
        if d["type"] == s.MonitorDecision.EVENT_TYPE and d["data"]["action"] == "configured"
    ]
    assert "version v41 -> v42" in watched[-1]["reason"]
    assert "rollout:" in watched[-1]["reason"]
