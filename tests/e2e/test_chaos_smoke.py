"""A small run of bench/chaos.py: workers killed mid-rollout, one broker restart, a router that
lags and drops acknowledgements; every rollout still ends once, and as it should.

The broker is restarted, so the test runs its own local broker (`rollout dev-kafka`, port
ROLLOUT_TEST_CHAOS_KAFKA_PORT, default 19292), not the session's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chaos import chaos, parser, report
from controller.dev.kafka import DevKafkaError, LocalKafka
from controller.settings import load_settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def own_broker() -> Iterator[str]:
    port = int(os.environ.get("ROLLOUT_TEST_CHAOS_KAFKA_PORT", "19292"))
    broker = LocalKafka.from_settings(load_settings(), port)
    if broker.is_running():
        pytest.fail(f"a broker already runs on port {port}: the test restarts its own broker")
    try:
        bootstrap = broker.start()
    except DevKafkaError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no local broker to restart (rollout dev-kafka): {exc}")
    try:
        yield bootstrap
    finally:
        broker.stop()


def test_kills_a_broker_restart_and_a_lossy_router_lose_or_confuse_no_rollout(
    own_broker: str, tmp_path: Path
) -> None:
    args = parser().parse_args(
        [
            "--rollouts", "4", "--kills", "3", "--broker-restarts", "1", "--concurrent", "4",
            "--kill-every", "4", "--seed", "3", "--rollout-timeout", "150", "--settle-s", "2",
        ]
    )  # fmt: skip

    run = chaos(own_broker, tmp_path, args, log=lambda _: None)

    print(report(run, "(smoke)"))
    assert {
        "lost terminal commands": 0,
        "conflicting terminals": 0,
        "ids reused for different content": 0,
        "false rollbacks": 0,
        "wrong promotions": 0,
    } == run.counts
    assert (3, 1, []) == (len(run.kills), len(run.broker_restarts), run.broker_errors)
    kinds = {r.kind for r in run.launched}
    assert "healthy" in kinds and kinds - {"healthy"}  # both kinds were rolled out
    assert run.router_counts["commands lagged"] > 0
