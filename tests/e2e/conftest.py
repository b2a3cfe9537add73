"""The e2e fixture: one `Rollouts` world per test, its diagnosis printed when the test fails."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Rollouts


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    setattr(item, f"e2e_{report.when}", report)
    return report


@pytest.fixture
def world(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Rollouts]:
    """Fresh topics and consumer group; workers, fleets and router stopped afterwards."""
    rollouts = Rollouts(kafka_bootstrap, tmp_path)
    try:
        yield rollouts
    finally:
        report = getattr(request.node, "e2e_call", None)
        if report is not None and report.failed:
            print(rollouts.diagnose())
        rollouts.close()
