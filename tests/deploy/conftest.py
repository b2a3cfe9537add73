"""helm for the chart's tests: HELM (a path), else the one `make helm` builds into the cache
folder, else one on the PATH. Without one the chart's tests skip locally, and fail under
CI=true (.ci/run builds it first: a chart test that does not run must not pass)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import in_ci

#: the version `make helm` builds (Makefile: HELM_VERSION)
HELM_VERSION = "v4.3.2"


def cached_helm() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rollout-controller" / f"helm-{HELM_VERSION}" / "helm"


def find_helm() -> tuple[str | None, str]:
    """(path, '') or (None, why not)."""
    configured = os.environ.get("HELM", "").strip()
    if configured:
        if os.access(configured, os.X_OK):
            return configured, ""
        return None, f"HELM={configured} is not an executable"
    cached = cached_helm()
    if os.access(cached, os.X_OK):
        return str(cached), ""
    on_path = shutil.which("helm")
    if on_path:
        return on_path, ""
    return None, f"no helm: set HELM, or run `make helm` (it builds {cached})"


def wait_for_build(timeout_s: float = 1200.0) -> str | None:
    """When .ci/run builds helm in the background (ROLLOUT_HELM_BUILD_STATUS names the file
    its exit status goes to), wait for it: None once built, else why not."""
    status_file = os.environ.get("ROLLOUT_HELM_BUILD_STATUS", "").strip()
    if not status_file:
        return None
    status, deadline = Path(status_file), time.monotonic() + timeout_s
    while not status.exists():
        if time.monotonic() > deadline:
            return f"the background helm build did not finish in {timeout_s:g} s"
        time.sleep(2.0)
    code = status.read_text().strip()
    if code != "0":
        log = status.with_name("log")
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        return f"the background helm build failed (exit {code}): {tail}"
    return None


@pytest.fixture(scope="session")
def helm() -> str:
    failed = wait_for_build()
    if failed is not None:
        pytest.fail(failed, pytrace=False)
    path, reason = find_helm()
    if path is None:
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the chart's tests must run)", pytrace=False)
        pytest.skip(reason)
    return path
