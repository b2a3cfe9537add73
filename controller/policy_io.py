"""Reading rollout policies from files and from the package: the I/O around core.policy.

The core validates a parsed mapping (`Policy.from_mapping`); this module reads the text and
parses YAML or JSON (YAML is a superset of JSON, so a `.json` file is read with the JSON parser
only for its clearer error messages).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from controller.core.monitor.policy import MonitoringPolicy
from controller.core.pipelines.policy import PipelinesPolicy
from controller.core.policy import Policy, PolicyError, Registry

Format = Literal["yaml", "json"]
DEFAULT_POLICY = "default.yaml"


def parse_policy(text: str, fmt: Format = "yaml", registry: Registry | None = None) -> Policy:
    """A validated policy from YAML or JSON text; raises PolicyError."""
    try:
        data: Any = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PolicyError("policy", [f"not {fmt.upper()}: {exc}"]) from None
    if not isinstance(data, dict):
        raise PolicyError("policy", [f"the document must be a mapping, got {type(data).__name__}"])
    return Policy.from_mapping(data, registry)


def load_policy(path: str | Path, registry: Registry | None = None) -> Policy:
    """Read and validate a policy file (`.json` as JSON, anything else as YAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"policy file {path}", [f"cannot read it: {exc.strerror}"]) from None
    fmt: Format = "json" if path.suffix.lower() == ".json" else "yaml"
    return parse_policy(text, fmt, registry)


def default_policy_text() -> str:
    return (resources.files("controller") / "policies" / DEFAULT_POLICY).read_text("utf-8")


def default_policy(registry: Registry | None = None) -> Policy:
    """The policy shipped with the package (controller/policies/default.yaml)."""
    return parse_policy(default_policy_text(), "yaml", registry)


DEFAULT_MONITORING_POLICY = "monitoring.yaml"


def parse_monitoring_policy(text: str, fmt: Format = "yaml") -> MonitoringPolicy:
    """A validated monitoring policy from YAML or JSON text; raises PolicyError."""
    try:
        data: Any = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PolicyError("monitoring policy", [f"not {fmt.upper()}: {exc}"]) from None
    if not isinstance(data, dict):
        raise PolicyError(
            "monitoring policy", [f"the document must be a mapping, got {type(data).__name__}"]
        )
    return MonitoringPolicy.from_mapping(data)


def load_monitoring_policy(path: str | Path) -> MonitoringPolicy:
    """Read and validate a monitoring policy file (`.json` as JSON, anything else as YAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"policy file {path}", [f"cannot read it: {exc.strerror}"]) from None
    fmt: Format = "json" if path.suffix.lower() == ".json" else "yaml"
    return parse_monitoring_policy(text, fmt)


def default_monitoring_policy() -> MonitoringPolicy:
    """The monitoring policy shipped with the package (controller/policies/monitoring.yaml)."""
    text = (resources.files("controller") / "policies" / DEFAULT_MONITORING_POLICY).read_text(
        "utf-8"
    )
    return parse_monitoring_policy(text)


DEFAULT_PIPELINES_POLICY = "pipelines.yaml"


def default_pipelines_policy() -> PipelinesPolicy:
    """The pipelines policy shipped with the package (controller/policies/pipelines.yaml)."""
    text = (resources.files("controller") / "policies" / DEFAULT_PIPELINES_POLICY).read_text(
        "utf-8"
    )
    data: Any = yaml.safe_load(text)
    return PipelinesPolicy.from_mapping(data)
