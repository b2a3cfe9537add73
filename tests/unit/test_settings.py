"""Settings from the environment: failover timings, and a person's mistake told in one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli import cli
from controller.engine import Engine
from controller.settings import SettingsError, load_settings
from controller.stream.app import RolloutWorker


def test_the_worker_fails_over_in_seconds_not_a_minute() -> None:
    """Faust's 60 s session would hold a dead worker's rollouts that long; the worker's
    consumers get the settings' timings instead."""
    settings = load_settings(bootstrap_servers="127.0.0.1:1")

    conf = RolloutWorker(settings, Engine.from_policy_file(None)).app.conf

    assert (6.0, 1.0, 10.0) == (
        settings.session_timeout_s,
        settings.heartbeat_interval_s,
        settings.rebalance_timeout_s,
    )
    assert conf.broker_session_timeout == settings.session_timeout_s
    assert conf.broker_heartbeat_interval == settings.heartbeat_interval_s
    assert conf.broker_rebalance_timeout == settings.rebalance_timeout_s


def test_timings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUT_SESSION_TIMEOUT_S", "12")
    monkeypatch.setenv("ROLLOUT_HEARTBEAT_INTERVAL_S", "3")

    settings = load_settings()

    assert (12.0, 3.0) == (settings.session_timeout_s, settings.heartbeat_interval_s)


def test_heartbeats_must_fit_three_times_in_the_session() -> None:
    with pytest.raises(SettingsError, match=r"ROLLOUT_HEARTBEAT_INTERVAL_S .* a third of"):
        load_settings(session_timeout_s=6, heartbeat_interval_s=2.5)


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("ROLLOUT_TICK_INTERVAL_S", "0", "ROLLOUT_TICK_INTERVAL_S: Input should be greater than 0"),
        ("ROLLOUT_TOPIC_PARTITIONS", "six", "ROLLOUT_TOPIC_PARTITIONS: Input should be a valid"),
        ("ROLLOUT_HEARTBEAT_INTERVAL_S", "5", "must be at most a third of"),
    ],
)
def test_a_bad_setting_is_one_sentence_at_the_cli_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
) -> None:
    monkeypatch.setenv(variable, value)

    result = CliRunner().invoke(cli, ["topics", "list"])

    assert 1 == result.exit_code
    assert result.output.startswith("Error: invalid settings: ")
    assert said in result.output
    assert "Traceback" not in result.output
    assert 1 == len(result.output.strip().splitlines())


def test_the_worker_keeps_its_folder_in_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A container's working directory is read-only: ROLLOUT_DATA_DIR points the worker's
    `<group>-data` folder at a writable volume; without it, the working directory."""
    monkeypatch.setenv("ROLLOUT_DATA_DIR", str(tmp_path))
    on_volume = RolloutWorker(load_settings(), Engine.from_policy_file(None)).app.conf
    monkeypatch.delenv("ROLLOUT_DATA_DIR")
    here = RolloutWorker(load_settings(), Engine.from_policy_file(None)).app.conf

    assert Path(on_volume.datadir) == tmp_path / "rollout-controller-data"
    assert Path(on_volume.tabledir).is_relative_to(tmp_path)
    assert Path(here.datadir) == Path("rollout-controller-data")


def test_the_label_join_is_opt_in_and_keeps_its_store_in_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROLLOUT_DATA_DIR", str(tmp_path))
    assert RolloutWorker(load_settings(), Engine.from_policy_file(None)).join is None

    monkeypatch.setenv("ROLLOUT_LABEL_JOIN", "true")
    monkeypatch.setenv("ROLLOUT_LABEL_HORIZON_S", "86400")
    join = RolloutWorker(load_settings(), Engine.from_policy_file(None)).join

    assert join is not None
    assert join.store_path == tmp_path / "rollout-controller-join"
    assert (86400.0, "rollout-controller.labels") == (join.horizon_s, join.group_id)
