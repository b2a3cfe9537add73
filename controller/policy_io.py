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


class DocumentError(PolicyError):
    """A file is not valid YAML or JSON: `file:line:column: what is wrong`, and what to change."""

    def __init__(self, source: str, line: int | None, column: int | None, problem: str) -> None:
        where = source + (f":{line}" if line else "") + (f":{column}" if line and column else "")
        self.where = where
        super().__init__(source, [problem])
        self.args = (f"{where}: {problem}",)

    def __str__(self) -> str:
        return str(self.args[0])


def parse_document(text: str, fmt: Format = "yaml", source: str = "<text>") -> Any:
    """The parsed YAML or JSON text; a syntax error is a DocumentError naming the line."""
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DocumentError(
                source, exc.lineno, exc.colno, f"not valid JSON: {exc.msg}; fix it at that point"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise DocumentError(
            source,
            line,
            column,
            f"not valid YAML: {what}; check the indentation, a missing ':' or space after it, "
            "and unclosed quotes or brackets at or just before that line",
        ) from None
    except yaml.YAMLError as exc:
        raise DocumentError(source, None, None, f"not valid YAML: {exc}") from None


def read_document(path: str | Path) -> Any:
    """A YAML or JSON file (`.json` as JSON, anything else as YAML; `-`: standard input),
    parsed; a file that cannot be read or parsed is a DocumentError that names it."""
    import sys

    path = Path(path)
    if str(path) == "-":
        return parse_document(sys.stdin.read(), "yaml", "<stdin>")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DocumentError(str(path), None, None, f"cannot read it: {reason}") from None
    return parse_document(text, _format_of(path), str(path))


def _format_of(path: Path) -> Format:
    return "json" if path.suffix.lower() == ".json" else "yaml"


def _mapping(data: Any, source: str, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise PolicyError(
            source, [f"a {what} is a mapping of its fields, got {type(data).__name__}"]
        )
    return data


def parse_policy(
    text: str, fmt: Format = "yaml", registry: Registry | None = None, source: str = "policy"
) -> Policy:
    """A validated policy from YAML or JSON text; raises PolicyError."""
    data = _mapping(parse_document(text, fmt, source), source, "policy")
    return Policy.from_mapping(data, registry)


def load_policy(path: str | Path, registry: Registry | None = None) -> Policy:
    """Read and validate a policy file (`.json` as JSON, anything else as YAML)."""
    data = _mapping(read_document(path), f"policy file {path}", "policy")
    return Policy.from_mapping(data, registry)


def default_policy_text() -> str:
    return (resources.files("controller") / "policies" / DEFAULT_POLICY).read_text("utf-8")


def default_policy(registry: Registry | None = None) -> Policy:
    """The policy shipped with the package (controller/policies/default.yaml)."""
    return parse_policy(default_policy_text(), "yaml", registry)


DEFAULT_MONITORING_POLICY = "monitoring.yaml"


def parse_monitoring_policy(text: str, fmt: Format = "yaml") -> MonitoringPolicy:
    """A validated monitoring policy from YAML or JSON text; raises PolicyError."""
    data = _mapping(parse_document(text, fmt, "monitoring policy"), "monitoring policy", "policy")
    return MonitoringPolicy.from_mapping(data)


def load_monitoring_policy(path: str | Path) -> MonitoringPolicy:
    """Read and validate a monitoring policy file (`.json` as JSON, anything else as YAML)."""
    source = f"monitoring policy file {path}"
    return MonitoringPolicy.from_mapping(_mapping(read_document(path), source, "policy"))


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
