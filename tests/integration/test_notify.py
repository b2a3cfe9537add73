"""`rollout notify` against a real broker and real local receivers: an HTTP server taking the
webhook, Slack and PagerDuty posts (one path answers 503 once, then 200), and an SMTP server.
Each notification arrives once, resolved notices arrive, and a notifier killed mid-stream and
started again neither loses nor repeats one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

import schemas as s
from controller.notify.config_io import load_config
from controller.notify.runner import Notifier
from controller.sdk.emit import emit
from controller.settings import Settings
from tests.factories import T0, make_event

pytestmark = pytest.mark.kafka


# ---- receivers --------------------------------------------------------------------------------


class Receivers:
    """Every POST by path, as JSON; `/flaky` answers 503 (Retry-After: 0) to its first post."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        self.flaky_failures = 1
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    if self.path == "/flaky" and outer.flaky_failures > 0:
                        outer.flaky_failures -= 1
                        outer.posts.append(("/flaky:503", body))
                        self.send_response(503)
                        self.send_header("Retry-After", "0")
                        self.end_headers()
                        return
                    outer.posts.append((self.path, body))
                self.send_response(202 if self.path == "/pd" else 200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return [b for p, b in self.posts if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    r = Receivers()
    yield r
    r.close()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def settings(own_topics: Settings) -> Settings:
    return own_topics


# ---- alerts -----------------------------------------------------------------------------------


def rollout_alert(rule: str, status: str = "firing", severity: str = "critical") -> s.Alert:
    return s.Alert(
        alert_id=f"fraud-v2-{rule}-{status}",
        status=status,  # type: ignore[arg-type]
        severity=s.Severity(severity),
        kind=f"guardrail.{rule}",
        deployment_id="fraud-v2",
        subject="fraud v2",
        summary=f"canary {rule} worse than baseline",
        evidence={"ratio": 2.05},
        runbook_url="https://runbooks.example/" + rule,
        dedup_key=f"fraud-v2/{rule}",
        at=T0 + timedelta(seconds=1 if status == "firing" else 60),
    )


def monitor_alert(status: str = "firing") -> s.Alert:
    return s.Alert(
        alert_id=f"ranker-latency-{status}",
        status=status,  # type: ignore[arg-type]
        severity=s.Severity.WARNING,
        kind="monitor.latency",
        deployment_id="ranker",
        subject="ranker@v6",
        summary="ranker: p99 above its reference since 12:00",
        dedup_key="ranker/monitor.latency",
        at=T0,
    )


def publish(settings: Settings, *alerts: s.Alert) -> None:
    emit(settings, [make_event(a, id=a.alert_id) for a in alerts])


def write_config(path: Path, url: str, smtp_port: int, **defaults: Any) -> Path:
    config = {
        "external_url": "https://rollouts.example",
        "defaults": {
            "group_by": ["model"],
            "group_wait": 0,
            "group_interval": "1s",
            "repeat_interval": "never",
            **defaults,
        },
        "default_receiver": "hook",
        "receivers": [
            {"name": "hook", "webhook": {"url": url + "/hook"}},
            {"name": "chat", "slack": {"url_env": "TEST_SLACK_URL", "channel": "#ml"}},
            {"name": "pager", "pagerduty": {"routing_key_env": "TEST_PD_KEY", "url": url + "/pd"}},
            {
                "name": "mail",
                "email": {
                    "to": ["ml@example.com"],
                    "from": "notify@example.com",
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "tls": "none",
                },
            },
            {
                "name": "flaky",
                "webhook": {"url": url + "/flaky"},
                "retry": {"initial_backoff": "0.1s", "give_up_after": "30s"},
            },
        ],
        "routes": [
            {"match": {"severity_at_least": "critical"}, "receiver": "pager", "continue": True},
            {"match": {"models": ["fraud*"]}, "receiver": "chat", "continue": True},
            {"match": {"models": ["fraud*"]}, "receiver": "mail", "continue": True},
            {"match": {"models": ["fraud*"]}, "receiver": "flaky", "continue": True},
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def secrets(receivers: Receivers, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"TEST_SLACK_URL": receivers.url + "/slack", "TEST_PD_KEY": "rk-secret"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def wait_for(what: Callable[[], bool], timeout_s: float = 30.0, why: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {why}")
        time.sleep(0.05)


# ---- every sink, in process -------------------------------------------------------------------


def test_every_sink_gets_the_firing_then_the_resolved_notice_once(
    settings: Settings,
    receivers: Receivers,
    mailbox: tuple[Mailbox, int],
    secrets: dict[str, str],
    tmp_path: Path,
) -> None:
    box, smtp_port = mailbox
    config = load_config(
        write_config(tmp_path / "notify.yaml", receivers.url, smtp_port, group_wait="1s")
    )
    publish(settings, rollout_alert("errors"), rollout_alert("latency"), monitor_alert())

    first = Notifier(settings, config, from_beginning=True).run(once=True)

    assert (3, 0) == (first.alerts, first.gave_up)
    [hook] = receivers.bodies("/hook")  # the monitor's alert: no route took it
    assert "4" == hook["version"]
    assert "firing" == hook["status"]
    assert "hook" == hook["receiver"]
    assert {"model": "ranker"} == hook["groupLabels"]
    assert "https://rollouts.example" == hook["externalURL"]
    [alert] = hook["alerts"]
    assert {"status", "labels", "annotations", "startsAt", "endsAt", "fingerprint"} <= set(alert)
    assert "monitor.latency" == alert["labels"]["alertname"]
    assert "ranker" == alert["labels"]["model"]
    assert "0001-01-01T00:00:00Z" == alert["endsAt"]

    [slack] = receivers.bodies("/slack")
    assert "#ml" == slack["channel"]
    assert slack["text"].startswith("[FIRING:2] model=fraud")
    assert "header" == slack["blocks"][0]["type"]

    pd = receivers.bodies("/pd")
    assert [("trigger", "fraud-v2/errors"), ("trigger", "fraud-v2/latency")] == [
        (e["event_action"], e["dedup_key"]) for e in pd
    ]
    assert {"rk-secret"} == {e["routing_key"] for e in pd}
    assert "critical" == pd[0]["payload"]["severity"]

    [mail] = box.messages
    assert mail["Subject"].startswith("[FIRING:2] model=fraud")
    assert "canary errors worse than baseline" in mail.get_payload(decode=True).decode()

    assert 1 == len([p for p, _ in receivers.posts if p == "/flaky:503"])
    assert 1 == len(receivers.bodies("/flaky"))

    publish(settings, rollout_alert("errors", "resolved"), monitor_alert("resolved"))
    second = Notifier(settings, config).run(once=True)

    assert (2, 0) == (second.alerts, second.gave_up)
    assert ["firing", "resolved"] == [b["status"] for b in receivers.bodies("/hook")]
    pd = receivers.bodies("/pd")
    assert [("resolve", "fraud-v2/errors")] == [(e["event_action"], e["dedup_key"]) for e in pd[2:]]
    last_slack = receivers.bodies("/slack")[-1]
    assert 2 == len(receivers.bodies("/slack"))
    assert "resolved: fraud-v2/errors" in json.dumps(last_slack)
    assert 2 == len(box.messages)
    # nothing was sent twice: every notification id once per receiver
    ids = [(p, b["notificationId"]) for p, b in receivers.posts if p in ("/hook", "/flaky")]
    assert len(set(ids)) == len(ids)


# ---- a notifier killed and started again ------------------------------------------------------


class Process:
    """`rollout notify` in a subprocess, its log lines collected."""

    def __init__(self, settings: Settings, config: Path, env: dict[str, str], *extra: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from controller.cli import main; main()",
                "notify",
                "--config",
                str(config),
                "--from-beginning",
                *extra,
            ],
            env={
                **os.environ,
                **env,
                "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                "ROLLOUT_TOPIC_PREFIX": settings.topic_prefix,
            },
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def count(self, event: str) -> int:
        return sum(1 for line in list(self.lines) if f'"event":"{event}"' in line)

    def port(self) -> int | None:
        """The port of its probes, as it logged it."""
        for line in list(self.lines):
            if '"event":"metrics.serving"' in line:
                return int(json.loads(line)["port"])
        return None

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port()}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        assert 0 == self.proc.returncode, "".join(self.lines[-20:])


def test_a_notifier_killed_mid_stream_neither_loses_nor_repeats_a_notification(
    settings: Settings,
    receivers: Receivers,
    mailbox: tuple[Mailbox, int],
    secrets: dict[str, str],
    tmp_path: Path,
) -> None:
    _, smtp_port = mailbox
    config = write_config(tmp_path / "notify.yaml", receivers.url, smtp_port, group_wait="4s")
    hooks = lambda: receivers.bodies("/hook")  # noqa: E731

    # killed while the group waits: the alerts were read, nothing was sent yet
    first = Process(settings, config, secrets)
    wait_for(lambda: first.count("notify.started") == 1, why="the notifier to start")
    publish(settings, monitor_alert())
    wait_for(lambda: first.count("notify.alert") == 1, why="the alert to be read")
    first.kill()
    assert [] == hooks()

    # started again: the owed notification goes out once
    second = Process(settings, config, secrets)
    wait_for(lambda: len(hooks()) == 1, why="the owed notification")
    wait_for(lambda: second.count("notify.committed") >= 1, why="the commit after sending")
    # killed after it sent and committed: nothing is sent again
    second.kill()

    third = Process(settings, config, secrets, "--metrics-port", "0")
    wait_for(lambda: third.count("notify.started") == 1, why="the notifier to start again")
    publish(settings, monitor_alert("resolved"))
    wait_for(lambda: len(hooks()) == 2, why="the resolved notice")
    # its probes and counters, as the chart's notifier serves them
    assert third.port() is not None
    assert 200 == third.get("/healthz")[0]
    assert (200, '{"ok": true, "reason": "relaying the alerts topic"}') == third.get("/readyz")
    status, scraped = third.get("/metrics")
    assert 200 == status
    assert "rollout_notifications_sent_total{" in scraped
    third.stop()

    assert [
        ("firing", "new: ranker/monitor.latency (warning)"),
        ("resolved", "resolved: ranker/monitor.latency"),
    ] == [(b["status"], b["reason"]) for b in hooks()]
    # nothing else arrived after the stop either
    assert 2 == len(hooks())
    assert all("rk-secret" not in line for line in first.lines + second.lines + third.lines)
