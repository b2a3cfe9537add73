"""`rollout watch --timeout` ends the watch, on a real broker, whether or not anything comes
(a watch that ignored it would run into the test's timeout and fail)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from controller.cli import cli
from controller.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]


@pytest.mark.parametrize("timeout", ["0", "2"])
def test_watching_a_quiet_model_ends_at_the_timeout(own_topics: Settings, timeout: str) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": own_topics.bootstrap_servers,
        "ROLLOUT_TOPIC_PREFIX": own_topics.topic_prefix,
    }
    result = CliRunner().invoke(cli, ["watch", "quiet-model", "--timeout", timeout], env=env)

    assert 0 == result.exit_code, result.output
    assert "Traceback" not in result.output
