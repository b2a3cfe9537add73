"""Reading the notifier's config file: YAML text in, a validated NotifyConfig out, and every
problem as one sentence naming the file and the line (never a traceback).

Secrets stay out of the file: an option `url_env: NAME` (`routing_key_env`, `password_env`)
names an environment variable, read here when the config loads; a variable that is not set is
a config problem like any other. The values are never logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from controller.core.notify import NotifyConfig, NotifyConfigError, format_path
from controller.core.notify.config import Path as DocPath
from controller.errors import RolloutError

#: option -> the option that names its environment variable
SECRET_ENV = {"url": "url_env", "routing_key": "routing_key_env", "password": "password_env"}


class NotifyConfigFileError(RolloutError):
    """A config file that cannot be used; the message names the file, the line and the fix."""


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> NotifyConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NotifyConfigFileError(f"{path}: cannot read it ({exc.strerror})") from None
    return parse_config(text, str(path), os.environ if environ is None else environ)


def parse_config(text: str, source: str, environ: Mapping[str, str]) -> NotifyConfig:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise NotifyConfigFileError(
            f"{source}{where}: not valid YAML ({problem}); fix the syntax there"
        ) from None
    if not isinstance(data, dict):
        raise NotifyConfigFileError(
            f"{source}: the document must be a mapping with receivers and routes, "
            f"got {type(data).__name__}"
        )
    try:
        config = NotifyConfig.from_mapping(data)
    except NotifyConfigError as exc:
        raise NotifyConfigFileError(_describe(exc.problems, source, root)) from None
    return _with_secrets(config, source, root, environ)


def _with_secrets(
    config: NotifyConfig, source: str, root: yaml.Node | None, environ: Mapping[str, str]
) -> NotifyConfig:
    problems: list[tuple[DocPath, str]] = []
    receivers = {}
    names = list(config.receivers)
    for name, receiver in config.receivers.items():
        options = dict(receiver.options)
        for option, env_option in SECRET_ENV.items():
            variable = options.pop(env_option, None)
            if variable is None:
                continue
            value = environ.get(str(variable), "")
            if not value:
                problems.append(
                    (
                        ("receivers", names.index(name), receiver.kind, env_option),
                        f"the environment variable {variable} is not set: set it, or give "
                        f"{option} in the file",
                    )
                )
            options[option] = value
        receivers[name] = replace(receiver, options=options)
    if problems:
        raise NotifyConfigFileError(_describe(problems, source, root))
    return replace(config, receivers=receivers)


def _describe(problems: tuple[tuple[DocPath, str], ...] | list[Any], source: str, root: Any) -> str:
    parts = []
    for path, message in problems:
        line = _line_of(root, path)
        where = f"{source}, line {line}" if line else source
        parts.append(f"{where}: {format_path(path)}: {message}" if path else f"{where}: {message}")
    return "; ".join(parts)


def _line_of(root: yaml.Node | None, path: DocPath) -> int | None:
    """The line of the deepest node of `path` the document has (1-based)."""
    node = root
    found = node
    for part in path:
        child = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if getattr(key, "value", None) == part:
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break
        node = found = child
    if found is None:
        return None
    return int(found.start_mark.line) + 1
