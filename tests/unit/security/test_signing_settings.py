"""What the worker reads from its settings for signatures, and what it says at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controller.engine import Engine
from controller.policy_io import default_policy
from controller.security.signing import (
    SigningKey,
    SigningKeyError,
    log_signing,
    signing_options,
)
from controller.settings import load_settings


def test_the_settings_files_become_the_engines_identities_and_command_key(tmp_path: Path) -> None:
    alice = SigningKey.generate("alice-1", "alice")
    (tmp_path / "identities.yaml").write_text(
        "identities:\n  - name: alice\n    groups: [sre]\n    keys:\n"
        f"      - id: alice-1\n        public_key: {alice.public_text()}\n"
    )
    SigningKey.generate("controller-1", "rollout-controller").save(tmp_path / "command.key")
    settings = load_settings(
        identities_file=tmp_path / "identities.yaml", command_key_file=tmp_path / "command.key"
    )

    engine = Engine(default_policy(), **signing_options(settings))
    with capture_logs() as logs:
        log_signing(engine)

    assert engine.identities is not None and ["alice-1"] == list(engine.identities.keys)
    assert engine.command_key is not None and engine.command_key.key_id == "controller-1"
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("signing.control_verified", "info"),
        ("signing.commands_signed", "info"),
    ]
    assert logs[0]["identities"] == ["alice"]


def test_a_worker_without_files_says_it_verifies_and_signs_nothing() -> None:
    engine = Engine(default_policy(), **signing_options(load_settings()))
    with capture_logs() as logs:
        log_signing(engine)

    assert engine.identities is None and engine.command_key is None
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("signing.control_unverified", "warning"),
        ("signing.commands_unsigned", "warning"),
    ]


def test_a_missing_identities_file_is_one_sentence(tmp_path: Path) -> None:
    settings = load_settings(identities_file=tmp_path / "absent.yaml")

    with pytest.raises(SigningKeyError, match=r"absent\.yaml"):
        signing_options(settings)
