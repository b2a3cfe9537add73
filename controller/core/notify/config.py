"""The notifier's routing configuration: receivers, routes, grouping and timing.

A parsed mapping (the shell reads the YAML) is validated by `NotifyConfig.from_mapping`, which
raises `NotifyConfigError` naming every problem with its place in the document (a path such as
`routes[2].match.severity`), so the shell can point at the line.

Routing is a flat list in order, like Alertmanager's child routes: an alert goes to the first
route that matches it, and on past a matching route only when that route says `continue: true`;
an alert no route took goes to `default_receiver`. Each route may set its own `group_by` and
timings; what it leaves out comes from `defaults`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.errors import RolloutError
from schemas.events import Severity

#: Labels an alert carries (see `labels.labels_of`), the names `group_by` may use.
GROUP_LABELS = ("alertname", "kind", "severity", "deployment", "model", "subject", "source")

SEVERITY_ORDER = (Severity.INFO, Severity.WARNING, Severity.CRITICAL)

Path = tuple[str | int, ...]


class NotifyConfigError(RolloutError, ValueError):
    """The notifier's configuration is invalid: each problem with where it is in the document."""

    def __init__(self, problems: Sequence[tuple[Path, str]]) -> None:
        self.problems = tuple(problems)
        listed = "; ".join(f"{format_path(p)}: {m}" if p else m for p, m in self.problems)
        super().__init__(f"invalid notify config: {listed}")


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from `30`, `2.5`, `"30s"`, `"5m"`, `"4h"`, `"1d"`; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"a duration such as 30s, 5m or 4h, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNIT_S[m.group(2)]
    raise ValueError(f"a duration such as 30s, 5m or 4h, got {value!r}")


# ---- sinks: the options each kind of receiver takes -------------------------------------------


@dataclass(frozen=True)
class SinkSpec:
    """The options of one kind of sink: which are required (one of each tuple), which allowed."""

    required: tuple[tuple[str, ...], ...]
    allowed: frozenset[str]


#: The known sink kinds; an unknown one fails when the config loads, listing these.
SINKS: dict[str, SinkSpec] = {
    "webhook": SinkSpec(
        required=(("url", "url_env"),),
        allowed=frozenset({"url", "url_env", "headers", "timeout", "max_alerts"}),
    ),
    "slack": SinkSpec(
        required=(("url", "url_env"),),
        allowed=frozenset({"url", "url_env", "channel", "username", "icon_emoji", "timeout"}),
    ),
    "pagerduty": SinkSpec(
        required=(("routing_key", "routing_key_env"),),
        allowed=frozenset(
            {"routing_key", "routing_key_env", "url", "client", "client_url", "timeout"}
        ),
    ),
    "email": SinkSpec(
        required=(("to",), ("from",), ("host",)),
        allowed=frozenset(
            {
                "to",
                "from",
                "host",
                "port",
                "tls",
                "username",
                "password",
                "password_env",
                "subject_prefix",
                "timeout",
            }
        ),
    ),
}


@dataclass(frozen=True)
class Retry:
    """How long a receiver's delivery is retried: exponential backoff with jitter."""

    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    give_up_after_s: float = 300.0


@dataclass(frozen=True)
class Receiver:
    name: str
    kind: str
    options: Mapping[str, Any]
    send_resolved: bool = True
    retry: Retry = field(default_factory=Retry)


# ---- matching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """What a route takes: every condition given must hold (an empty match takes everything).
    Name lists are globs (`fraud-*`); severities an exact list or a floor."""

    severity_at_least: Severity | None = None
    severity: frozenset[Severity] | None = None
    models: tuple[str, ...] = ()
    deployments: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        severity = Severity(labels["severity"])
        if self.severity is not None and severity not in self.severity:
            return False
        if self.severity_at_least is not None and SEVERITY_ORDER.index(
            severity
        ) < SEVERITY_ORDER.index(self.severity_at_least):
            return False
        return all(
            _any_glob(labels.get(label, ""), globs)
            for label, globs in (
                ("model", self.models),
                ("deployment", self.deployments),
                ("kind", self.kinds),
                ("source", self.sources),
            )
            if globs
        )


def _any_glob(value: str, globs: tuple[str, ...]) -> bool:
    return bool(value) and any(fnmatch.fnmatchcase(value, g) for g in globs)


@dataclass(frozen=True)
class Timing:
    """How a route's alerts are grouped and how often a group is sent.

    - group_wait: how long a new group waits for more alerts before its first notification;
    - group_interval: how long after a group's notification a change to it is sent;
    - repeat_interval: how long after a group's notification it is sent again unchanged while
      something in it fires (None: never).
    """

    group_by: tuple[str, ...] = ("model", "kind")
    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float | None = 4 * 3600.0


@dataclass(frozen=True)
class Route:
    receiver: str
    match: Match = field(default_factory=Match)
    continue_: bool = False
    timing: Timing = field(default_factory=Timing)


@dataclass(frozen=True)
class NotifyConfig:
    receivers: Mapping[str, Receiver]
    routes: tuple[Route, ...]
    default_receiver: str
    defaults: Timing = field(default_factory=Timing)
    external_url: str = ""

    def route(self, labels: Mapping[str, str]) -> list[tuple[str, Route]]:
        """The routes an alert with these labels goes to, as (route id, route): the first that
        matches and those after it while each matching one says continue; the default receiver
        when none matched."""
        taken: list[tuple[str, Route]] = []
        for i, route in enumerate(self.routes):
            if route.match.matches(labels):
                taken.append((str(i), route))
                if not route.continue_:
                    break
        if not taken:
            taken.append(("default", Route(self.default_receiver, timing=self.defaults)))
        return taken

    @staticmethod
    def from_mapping(data: Mapping[str, Any]) -> NotifyConfig:
        return _Parser().config(data)


# ---- validation -------------------------------------------------------------------------------

_TOP = frozenset({"receivers", "routes", "default_receiver", "defaults", "external_url"})
_ROUTE = frozenset(
    {"receiver", "match", "continue", "group_by", "group_wait", "group_interval", "repeat_interval"}
)
_MATCH = frozenset({"severity_at_least", "severity", "models", "deployments", "kinds", "sources"})
_TIMING = frozenset({"group_by", "group_wait", "group_interval", "repeat_interval"})
_RECEIVER_KEYS = frozenset({"name", "send_resolved", "retry"})
_RETRY = frozenset({"initial_backoff", "max_backoff", "give_up_after"})
_SEVERITIES = ", ".join(s.value for s in SEVERITY_ORDER)


class _Parser:
    def __init__(self) -> None:
        self.problems: list[tuple[Path, str]] = []

    def fail(self, path: Path, message: str) -> None:
        self.problems.append((path, message))

    def unknown(self, data: Mapping[str, Any], known: frozenset[str], path: Path) -> None:
        for key in data:
            if key not in known:
                self.fail(
                    (*path, str(key)),
                    f"unknown key {key!r}; known: {', '.join(sorted(known))}",
                )

    def mapping(self, value: object, path: Path, what: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, f"{what} must be a mapping, got {type(value).__name__}")
            return {}
        return value

    def names(self, value: object, path: Path) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            return tuple(value)
        self.fail(path, f"a name or a list of names, got {value!r}")
        return ()

    def duration(self, value: object, path: Path, default: float) -> float:
        if value is None:
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(path, str(exc))
            return default

    def severity(self, value: object, path: Path) -> Severity | None:
        try:
            return Severity(str(value))
        except ValueError:
            self.fail(path, f"unknown severity {value!r}; known: {_SEVERITIES}")
            return None

    def timing(self, data: Mapping[str, Any], path: Path, base: Timing) -> Timing:
        group_by = base.group_by
        if "group_by" in data:
            group_by = self.names(data["group_by"], (*path, "group_by"))
            for i, label in enumerate(group_by):
                if label not in GROUP_LABELS and label != "...":
                    self.fail(
                        (*path, "group_by", i),
                        f"unknown label {label!r}; known: {', '.join(GROUP_LABELS)}, or ... "
                        "(every label: one group an alert)",
                    )
        repeat: float | None = base.repeat_interval_s
        if "repeat_interval" in data:
            raw = data["repeat_interval"]
            repeat = (
                None
                if raw is None or raw in ("never", "0", 0)
                else self.duration(raw, (*path, "repeat_interval"), 0.0)
            )
        timing = Timing(
            group_by=group_by,
            group_wait_s=self.duration(
                data.get("group_wait"), (*path, "group_wait"), base.group_wait_s
            ),
            group_interval_s=self.duration(
                data.get("group_interval"), (*path, "group_interval"), base.group_interval_s
            ),
            repeat_interval_s=repeat,
        )
        if timing.group_interval_s <= 0:
            self.fail((*path, "group_interval"), "must be more than 0 (say 5m)")
        return timing

    def receiver(self, data: object, path: Path) -> Receiver | None:
        body = self.mapping(data, path, "a receiver")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            self.fail(path, "a receiver needs a name")
            return None
        kinds = [k for k in body if k in SINKS]
        self.unknown(body, _RECEIVER_KEYS | frozenset(SINKS), path)
        if len(kinds) != 1:
            self.fail(
                path,
                f"receiver {name!r} needs exactly one sink, one of: {', '.join(SINKS)} "
                f"(got {len(kinds)}; for several, route to several receivers with continue)",
            )
            return None
        kind = kinds[0]
        options = self.mapping(body[kind], (*path, kind), f"the {kind} options")
        spec = SINKS[kind]
        self.unknown(options, spec.allowed, (*path, kind))
        for one_of in spec.required:
            if not any(options.get(k) not in (None, "") for k in one_of):
                self.fail((*path, kind), f"give {' or '.join(one_of)}")
        retry_data = self.mapping(body.get("retry"), (*path, "retry"), "retry")
        self.unknown(retry_data, _RETRY, (*path, "retry"))
        base = Retry()
        retry = Retry(
            initial_backoff_s=self.duration(
                retry_data.get("initial_backoff"),
                (*path, "retry", "initial_backoff"),
                base.initial_backoff_s,
            ),
            max_backoff_s=self.duration(
                retry_data.get("max_backoff"), (*path, "retry", "max_backoff"), base.max_backoff_s
            ),
            give_up_after_s=self.duration(
                retry_data.get("give_up_after"),
                (*path, "retry", "give_up_after"),
                base.give_up_after_s,
            ),
        )
        send_resolved = body.get("send_resolved", True)
        if not isinstance(send_resolved, bool):
            self.fail((*path, "send_resolved"), f"true or false, got {send_resolved!r}")
            send_resolved = True
        return Receiver(name, kind, dict(options), send_resolved, retry)

    def match(self, data: Mapping[str, Any], path: Path) -> Match:
        self.unknown(data, _MATCH, path)
        floor = None
        if data.get("severity_at_least") is not None:
            floor = self.severity(data["severity_at_least"], (*path, "severity_at_least"))
        exact: frozenset[Severity] | None = None
        if data.get("severity") is not None:
            listed = self.names(data["severity"], (*path, "severity"))
            found = [self.severity(v, (*path, "severity", i)) for i, v in enumerate(listed)]
            exact = frozenset(s for s in found if s is not None)
        return Match(
            severity_at_least=floor,
            severity=exact,
            models=self.names(data.get("models"), (*path, "models")),
            deployments=self.names(data.get("deployments"), (*path, "deployments")),
            kinds=self.names(data.get("kinds"), (*path, "kinds")),
            sources=self.names(data.get("sources"), (*path, "sources")),
        )

    def config(self, data: Mapping[str, Any]) -> NotifyConfig:
        self.unknown(data, _TOP, ())
        defaults_data = self.mapping(data.get("defaults"), ("defaults",), "defaults")
        self.unknown(defaults_data, _TIMING, ("defaults",))
        defaults = self.timing(defaults_data, ("defaults",), Timing())

        receivers: dict[str, Receiver] = {}
        listed = data.get("receivers")
        if not isinstance(listed, list) or not listed:
            self.fail(("receivers",), "list at least one receiver")
            listed = []
        for i, item in enumerate(listed):
            receiver = self.receiver(item, ("receivers", i))
            if receiver is None:
                continue
            if receiver.name in receivers:
                self.fail(("receivers", i, "name"), f"receiver {receiver.name!r} is listed twice")
            receivers[receiver.name] = receiver
        known = ", ".join(receivers) or "none"

        default_receiver = data.get("default_receiver")
        if not isinstance(default_receiver, str) or default_receiver not in receivers:
            self.fail(
                ("default_receiver",),
                f"name the receiver of alerts no route takes, one of: {known} "
                f"(got {default_receiver!r})",
            )
            default_receiver = ""

        routes: list[Route] = []
        routes_data = data.get("routes") or []
        if not isinstance(routes_data, list):
            self.fail(("routes",), "a list of routes")
            routes_data = []
        for i, item in enumerate(routes_data):
            path: Path = ("routes", i)
            body = self.mapping(item, path, "a route")
            self.unknown(body, _ROUTE, path)
            receiver_name = body.get("receiver")
            if receiver_name not in receivers:
                self.fail(
                    (*path, "receiver"), f"unknown receiver {receiver_name!r}; known: {known}"
                )
            cont = body.get("continue", False)
            if not isinstance(cont, bool):
                self.fail((*path, "continue"), f"true or false, got {cont!r}")
                cont = False
            routes.append(
                Route(
                    receiver=str(receiver_name),
                    match=self.match(
                        self.mapping(body.get("match"), (*path, "match"), "match"), (*path, "match")
                    ),
                    continue_=cont,
                    timing=self.timing(body, path, defaults),
                )
            )
        external_url = data.get("external_url", "")
        if not isinstance(external_url, str):
            self.fail(("external_url",), f"a URL, got {external_url!r}")
            external_url = ""
        if self.problems:
            raise NotifyConfigError(self.problems)
        return NotifyConfig(receivers, tuple(routes), default_receiver, defaults, external_url)
