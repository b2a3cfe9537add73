"""requirements.lock, the image's dependencies: every runtime dependency of pyproject.toml is
pinned there, at a version its specifier allows, with hashes (the Dockerfile installs it with
`pip install --require-hashes`). A dependency added to pyproject.toml without `make lock` fails
here, not in an image build."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
#: the image's interpreter and platform (Dockerfile: python:3.11-slim-bookworm)
IMAGE_MARKERS = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux"}


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def locked_entries() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes), from the lock's `name==version \\ --hash=...` entries."""
    text = LOCK.read_text()
    # a requirement with its continuation lines, up to the next requirement or comment line
    entries = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        first = block.split("\\", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        name, sep, version = first.partition("==")
        assert sep, f"requirements.lock: {first!r} is not pinned with =="
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        entries[str(canonicalize_name(name.split(";")[0].strip()))] = (
            version.split(";")[0].strip(),
            hashes,
        )
    return entries


def test_every_runtime_dependency_is_pinned_at_an_allowed_version() -> None:
    locked = locked_entries()
    problems = []
    for requirement in runtime_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate(IMAGE_MARKERS):
            continue
        name = str(canonicalize_name(requirement.name))
        if name not in locked:
            problems.append(f"{requirement.name} is not in requirements.lock")
        elif not requirement.specifier.contains(locked[name][0], prereleases=True):
            problems.append(
                f"{requirement.name}=={locked[name][0]} does not satisfy {requirement.specifier}"
            )
    assert [] == problems, "run `make lock`: " + "; ".join(problems)


def test_every_pin_carries_hashes() -> None:
    unhashed = [name for name, (_, hashes) in locked_entries().items() if not hashes]
    assert [] == unhashed


def test_the_lock_pins_runtime_dependencies_only() -> None:
    """The dev tools stay out of the image (pytest, ruff, mypy are nobody's runtime need)."""
    locked = locked_entries()
    assert [] == [tool for tool in ("pytest", "ruff", "mypy", "hypothesis") if tool in locked]
