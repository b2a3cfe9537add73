"""Chaos: workers killed at random moments, broker restarts, and a router that lags and drops
acknowledgements, while healthy and bad canaries roll out.

One world of the end-to-end harness (`tests/e2e/harness.py`: its own topics and consumer group,
workers started as in production with the worker's own settings, a simulated fleet per
deployment reporting through the SDK, an observer of everything published) on a local broker
this script can restart (`rollout dev-kafka` on the port of KAFKA_BOOTSTRAP_SERVERS). Rollouts
are launched `--concurrent` at a time, a share of them bad (latency 2.5x, 30 % errors, or a
silent canary), until at least `--rollouts` have been launched and every kill and broker
restart is done. Meanwhile:

- every `--kill-every` seconds on average (uniform between half and one and a half times that),
  a random live worker gets SIGKILL and is started again `--restart-after` seconds later; any
  worker that exits on its own is started again too (and counted);
- `--broker-restarts` times, evenly over the kills, the broker is stopped, left down
  `--broker-down-s` seconds and started again on the same port with its data;
- the router (the SDK's `CommandListener`) applies and acknowledges a share `--lag-share` of the
  commands `--lag-s` seconds late (0.5x to 1.5x; the others are not held up), and never sends a
  share `--drop-share` of the acknowledgements.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:39092 python bench/chaos.py --rollouts 50 --kills 100 \
        --broker-restarts 5

Targets: 0 lost terminal commands (every rollout reaches a terminal decision and its terminal
command reaches the router), 0 conflicting terminals (two terminal decisions or commands that
differ, for one rollout), 0 ids reused for different content (a command, decision or alert id,
or an envelope id, published twice with different data), 0 false rollbacks (a healthy canary
not promoted), 0 wrong promotions (a bad canary promoted). Resume time after a kill, for each
rollout the killed worker was deciding (the last decision it logged was the killed process's,
and the rollout had not ended): from the kill to the rollout's next decision, by any worker
(it includes up to one step's bake). Not a test (`tests/e2e/test_chaos_smoke.py` runs a small
one); it prints a table, the commit it measured, and the timeline of every rollout that missed
a target.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka import KafkaProducer  # noqa: E402
from kafka.errors import KafkaError  # noqa: E402

from bench.common import commit  # noqa: E402
from controller.dev.kafka import LocalKafka  # noqa: E402
from controller.sdk import CommandListener  # noqa: E402
from controller.settings import Settings, load_settings  # noqa: E402
from schemas import (  # noqa: E402
    Alert,
    Command,
    Decision,
    Envelope,
    Topic,
    TrafficApplied,
    decode,
    make_event,
)
from tests.e2e.harness import (  # noqa: E402
    FAUST_ENV,
    TERMINAL_PHASES,
    Fleet,
    Rollouts,
    WorkerProcess,
    deployment_request,
    plan,
    spread_over_partitions,
    step,
)

#: What a bad canary does wrong, in turn; "healthy" is the good one.
BAD_KINDS = ("latency", "errors", "silent")
FLEET_OPTIONS: dict[str, dict[str, Any]] = {
    "healthy": {},
    "latency": {"canary_latency_factor": 2.5},
    "errors": {"canary_error_rate": 0.3},
    "silent": {"canary_silent": True},
}


# ---------------------------------------------------------------------------------------------
# The unreliable router
# ---------------------------------------------------------------------------------------------


class _NoFuture:
    """What the listener gets back for an acknowledgement sent later or never."""

    def add_callback(self, *_: Any) -> _NoFuture:
        return self

    def add_errback(self, *_: Any) -> _NoFuture:
        return self


class ChaosRouter:
    """The harness's router (one `CommandListener` for every fleet), made unreliable.

    It is the listener's producer: each acknowledgement passes through `send`, which drops a
    share of them and sends the lagged ones later, with `applied_at` set to when the fleet
    really moved. Lagged commands are applied to the fleet on a timer, so the others are not
    held up behind them."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        lag_share: float,
        lag_s: float,
        drop_share: float,
        seed: int,
    ) -> None:
        self.fleets: dict[str, Fleet] = {}
        self.lag_share, self.lag_s, self.drop_share = lag_share, lag_s, drop_share
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        #: what happened to each deployment's commands here: (time, what), for diagnostics
        self.events: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self._delays: dict[str, float] = {}
        self._deployments: dict[str, str] = {}  # command id -> deployment
        self._producer = KafkaProducer(acks="all", **settings.kafka_client_options())
        self.listener = CommandListener(settings, apply=self._apply, applied_by=name, producer=self)

    def _apply(self, command: Command) -> None:
        fleet = self.fleets.get(command.deployment_id)
        delay = 0.0
        if self.rng.random() < self.lag_share:
            delay = self.lag_s * self.rng.uniform(0.5, 1.5)
            self.counts["commands lagged"] += 1
        self._delays[command.command_id] = delay
        self._deployments[command.command_id] = command.deployment_id
        what = f"{command.action.value} {command.canary_percent:g}%"
        self._note(
            command.deployment_id, f"router got {what}" + (f", lags {delay:.1f} s" if delay else "")
        )
        if fleet is None:
            return
        if delay:
            self._later(delay, self._move, fleet, command)
        else:
            self._move(fleet, command)

    def _move(self, fleet: Fleet, command: Command) -> None:
        fleet.apply(command)
        self._note(command.deployment_id, f"fleet at {command.canary_percent:g}%")

    def _note(self, deployment_id: str, what: str) -> None:
        self.events[deployment_id].append((time.time(), what))

    @staticmethod
    def _later(delay: float, fn: Callable[..., Any], *args: Any) -> None:
        timer = threading.Timer(delay, fn, args)
        timer.daemon = True
        timer.start()

    # ---- the listener's producer ------------------------------------------------------

    def send(
        self, topic: str, *, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> Any:
        event = decode(value)
        assert isinstance(event, Envelope) and isinstance(event.data, TrafficApplied)
        delay = self._delays.pop(event.data.command_id, 0.0)  # a re-acknowledgement: now
        dep = event.data.deployment_id
        if self.rng.random() < self.drop_share:
            self.counts["acknowledgements dropped"] += 1
            self._note(dep, f"ack of {event.data.canary_percent:g}% dropped")
            return _NoFuture()
        self.counts["acknowledgements sent"] += 1
        self._note(
            dep,
            f"ack of {event.data.canary_percent:g}% " + (f"in {delay:.1f} s" if delay else "sent"),
        )
        if not delay:
            return self._producer.send(topic, value=value, key=key, headers=headers)
        self._later(delay, self._send_late, topic, key, event)
        return _NoFuture()

    def _send_late(self, topic: str, key: bytes | None, event: Envelope[TrafficApplied]) -> None:
        now = datetime.now(UTC)
        ack = event.data.model_copy(update={"applied_at": now})
        late = make_event(ack, source=event.source, time=now)
        try:
            self._producer.send(topic, value=late.to_json(), key=key)
        except Exception:  # the broker is away: the acknowledgement is lost, like a dropped one
            self.counts["late acknowledgements lost"] += 1

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout=timeout)

    # ---- what the harness calls -------------------------------------------------------

    def start(self) -> ChaosRouter:
        self.listener.start()
        return self

    def close(self) -> None:
        self.listener.close()
        self._producer.close(timeout=10)


class ChaosWorld(Rollouts):
    """The harness's world with the worker's own group settings and the unreliable router."""

    def __init__(self, bootstrap: str, tmp_path: Path, router: dict[str, Any]) -> None:
        super().__init__(bootstrap, tmp_path)
        for name in FAUST_ENV:  # the worker's own settings, not the e2e harness's
            self.env.pop(name, None)
        self._router_options = router

    @property
    def router(self) -> Any:
        if self._router is None:
            self._router = ChaosRouter(  # type: ignore[assignment]
                self.settings, f"chaos-router-{self.run}", **self._router_options
            ).start()
        return self._router


# ---------------------------------------------------------------------------------------------
# Who decides what: the workers' logs
# ---------------------------------------------------------------------------------------------


class Deciders:
    """Reads the workers' logs as they grow: which process logged each rollout's last decision
    (worker name and start number)."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self._offsets: dict[str, int] = defaultdict(int)
        self._start: dict[str, int] = defaultdict(int)
        self.last: dict[str, tuple[str, str, int]] = {}  # deployment -> (timestamp, name, start)

    def update(self) -> None:
        for w in self.workers:
            if not w.log_path.exists():
                continue
            with w.log_path.open("rb") as f:
                f.seek(self._offsets[w.name])
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self._offsets[w.name] += end
            for raw in chunk[:end].splitlines():
                line = raw.decode("utf-8", "replace")
                if line.startswith("==== "):
                    self._start[w.name] = int(line.rsplit("#", 1)[1].split()[0])
                elif '"rollout.decision"' in line:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    stamp = (record.get("timestamp", ""), w.name, self._start[w.name])
                    dep = record["deployment"]
                    if dep not in self.last or stamp[0] >= self.last[dep][0]:
                        self.last[dep] = stamp

    def decided_by(self, worker: WorkerProcess) -> set[str]:
        self.update()
        return {
            dep
            for dep, (_, name, start) in self.last.items()
            if (name, start) == (worker.name, worker.starts)
        }


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class Launched:
    deployment_id: str
    kind: str
    fleet: Fleet
    at: float
    done_at: float | None = None
    timed_out: bool = False


@dataclass
class Kill:
    at: float
    worker: str
    victims: set[str]


@dataclass
class Run:
    args: argparse.Namespace
    launched: list[Launched] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    broker_restarts: list[tuple[float, float]] = field(default_factory=list)  # (down, up again)
    broker_errors: list[str] = field(default_factory=list)
    #: kills, restarts and the broker's downtime: (time, what), for diagnostics
    events: list[tuple[float, str]] = field(default_factory=list)
    unexpected_exits: int = 0
    router_counts: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    misses: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    resume_s: list[float] = field(default_factory=list)
    never_resumed: int = 0
    timelines: dict[str, str] = field(default_factory=dict)
    router_events: dict[str, list[tuple[float, str]]] = field(default_factory=dict)


def chaos_plan() -> Any:
    return plan(
        step(10, bake_s=3, samples=100),
        step(50, bake_s=3, samples=150),
        step(100, bake_s=0, samples=0),
    )


def members(world: Rollouts) -> int:
    """The workers' group members (0 while the broker has no coordinator for it yet)."""
    try:
        return world.group_members()
    except KafkaError:
        return 0


def restart_broker(broker: LocalKafka, down_s: float, run: Run) -> None:
    started = time.time()
    run.events.append((started, "broker stopping"))
    try:
        broker.stop()
        run.events.append((time.time(), "broker down"))
        time.sleep(down_s)
        broker.start()
    except Exception as exc:
        run.broker_errors.append(f"{type(exc).__name__}: {exc}")
    run.events.append((time.time(), "broker up"))
    run.broker_restarts.append((started, time.time()))


def chaos(bootstrap: str, tmp: Path, args: argparse.Namespace, log: Callable[[str], None]) -> Run:
    """Run the chaos and check the targets; the world is closed (topics deleted) at the end."""
    rng = random.Random(args.seed)
    run = Run(args)
    port = int(bootstrap.rsplit(":", 1)[1])
    broker = LocalKafka.from_settings(load_settings(), port)
    if args.broker_restarts and not broker.is_running():
        raise SystemExit(f"no broker of `rollout dev-kafka` runs on port {port} to restart")
    world = ChaosWorld(
        bootstrap,
        tmp,
        {
            "lag_share": args.lag_share,
            "lag_s": args.lag_s,
            "drop_share": args.drop_share,
            "seed": args.seed,
        },
    )
    started = time.time()
    try:
        workers = [world.start_worker(f"worker-{i + 1}") for i in range(args.workers)]
        deciders = Deciders(workers)
        world.wait_for(lambda: members(world) == args.workers, timeout=120, what="every worker")
        log(f"{args.workers} workers up")
        ids = iter(spread_over_partitions(5_000, f"ch{world.run[:4]}-"))
        restarts_left = args.broker_restarts
        # broker restarts evenly over the kills: after kill number k * kills / (restarts + 1)
        restart_after_kill = [
            round((k + 1) * args.kills / (args.broker_restarts + 1))
            for k in range(args.broker_restarts)
        ]
        next_kill = time.time() + args.kill_every * rng.uniform(0.5, 1.5)
        pending_starts: list[tuple[float, WorkerProcess]] = []
        broker_thread: threading.Thread | None = None
        active: list[Launched] = []
        closer_queue: list[Fleet] = []

        def broker_down() -> bool:
            return broker_thread is not None and broker_thread.is_alive()

        def chaos_left() -> bool:
            return len(run.kills) < args.kills or restarts_left > 0 or broker_down()

        while True:
            now = time.time()
            # rollouts: launch, and see which have ended at the router
            for r in list(active):
                if r.fleet.finished:
                    r.done_at = now
                elif now - r.at > args.rollout_timeout:
                    r.timed_out = True
                if r.done_at is not None or r.timed_out:
                    active.remove(r)
                    closer_queue.append(r.fleet)
            want_more = len(run.launched) < args.rollouts or chaos_left()
            while want_more and len(active) < args.concurrent and not broker_down():
                i = len(run.launched)
                bad = int((i + 1) * args.bad_share) - int(i * args.bad_share)  # spread evenly
                kind = BAD_KINDS[int(i * args.bad_share) % len(BAD_KINDS)] if bad else "healthy"
                dep = next(ids)
                request = deployment_request(dep, chaos_plan(), model=f"m{i}")
                try:
                    fleet = world.deploy(request, rate=args.rate, seed=i, **FLEET_OPTIONS[kind])
                except Exception as exc:  # the broker went away between the check and the send
                    log(f"deploy {dep} failed ({type(exc).__name__}); trying another")
                    world.router.fleets.pop(dep, None)
                    closer_queue.append(world.fleets.pop(dep))
                    time.sleep(1)
                    break
                launched = Launched(dep, kind, fleet, time.time())
                run.launched.append(launched)
                active.append(launched)
            if not active and not want_more:
                break
            # workers: start again the killed ones when due, and any that died on its own
            for due, w in list(pending_starts):
                if now >= due:
                    pending_starts.remove((due, w))
                    w.start()
                    run.events.append((time.time(), f"{w.name} started"))
            for w in workers:
                if not w.alive() and all(w is not p for _, p in pending_starts):
                    run.unexpected_exits += 1
                    log(f"{w.name} exited on its own ({w.proc and w.proc.returncode}); restarting")
                    pending_starts.append((now + 2.0, w))
            # kills
            if len(run.kills) < args.kills and now >= next_kill:
                alive = [
                    w for w in workers if w.alive() and all(w is not p for _, p in pending_starts)
                ]
                if alive:
                    victim = rng.choice(alive)
                    deciding = deciders.decided_by(victim)
                    ended = {dep for dep in deciding if world.observer.terminal(dep) is not None}
                    killed_at = time.time()
                    victim.kill()
                    run.events.append((killed_at, f"{victim.name} killed"))
                    run.kills.append(Kill(killed_at, victim.name, deciding - ended))
                    pending_starts.append((killed_at + args.restart_after, victim))
                    if len(run.kills) % 10 == 0:
                        done = sum(r.done_at is not None for r in run.launched)
                        log(
                            f"{len(run.kills)} kills, {len(run.launched)} rollouts launched, "
                            f"{done} ended, {len(run.broker_restarts)} broker restarts"
                        )
                next_kill = time.time() + args.kill_every * rng.uniform(0.5, 1.5)
            # broker restarts
            if (
                restarts_left
                and not broker_down()
                and len(run.kills) >= restart_after_kill[args.broker_restarts - restarts_left]
            ):
                restarts_left -= 1
                log(f"broker restart {args.broker_restarts - restarts_left}")
                broker_thread = threading.Thread(
                    target=restart_broker, args=(broker, args.broker_down_s, run), daemon=True
                )
                broker_thread.start()
            # fleets of ended rollouts: stop their reporters (one a loop, it takes a moment)
            if closer_queue:
                closer_queue.pop().close()
            time.sleep(0.1)
        for fleet in closer_queue:
            fleet.close()
        log("every rollout ended; waiting for late records")
        time.sleep(args.settle_s)
        run.wall_s = time.time() - started
        run.router_counts = Counter(world.router.counts)
        run.router_events = dict(world.router.events)
        check(world, run, deciders)
    finally:
        world.close()
    return run


# ---------------------------------------------------------------------------------------------
# The targets
# ---------------------------------------------------------------------------------------------


def _content(event: Envelope[Any]) -> str:
    return json.dumps(event.data.model_dump(mode="json"), sort_keys=True)


def _id_of(data: Any) -> str | None:
    if isinstance(data, Command):
        return "command " + data.command_id
    if isinstance(data, Decision):
        return "decision " + data.decision_id
    if isinstance(data, Alert):
        return "alert " + data.alert_id
    return None


def reused_ids(world: Rollouts) -> dict[str, list[str]]:
    """Ids published more than once with different content: {id: [deployment, fields that
    differ]}."""
    contents: dict[str, dict[str, Envelope[Any]]] = defaultdict(dict)
    for topic in (Topic.COMMANDS, Topic.DECISIONS, Topic.ALERTS):
        for seen in world.observer.records(topic):
            content = _content(seen.event)
            for ident in (_id_of(seen.event.data), "envelope " + seen.event.id):
                if ident is not None:
                    contents[ident].setdefault(content, seen.event)
    out = {}
    for ident, versions in contents.items():
        if len(versions) > 1:
            dumps = [e.data.model_dump(mode="json") for e in versions.values()]
            differ = sorted(k for k in dumps[0] if any(d.get(k) != dumps[0][k] for d in dumps))
            dep = next(iter(versions.values())).key()
            out[ident] = [dep, ",".join(differ)]
    return out


def check(world: Rollouts, run: Run, deciders: Deciders) -> None:
    obs = world.observer
    misses: dict[str, list[str]] = {
        "lost terminal commands": [],
        "conflicting terminals": [],
        "ids reused for different content": [],
        "false rollbacks": [],
        "wrong promotions": [],
    }
    for r in run.launched:
        dep = r.deployment_id
        decisions = [d for d in obs.decisions(dep) if d.to_phase in TERMINAL_PHASES]
        commands = [c for c in obs.commands(dep) if c.action.is_terminal()]
        applied = [c for c in r.fleet.applied if c.action.is_terminal()]
        if not decisions or not commands or not applied:
            misses["lost terminal commands"].append(dep)
        if (
            len({d.decision_id for d in decisions}) > 1
            or len({d.to_phase for d in decisions}) > 1
            or len({c.command_id for c in commands}) > 1
            or len({c.action for c in commands}) > 1
        ):
            misses["conflicting terminals"].append(dep)
        phase = decisions[0].to_phase if decisions else None
        if r.kind == "healthy" and phase is not None and phase != "promoted":
            misses["false rollbacks"].append(dep)
        if r.kind != "healthy" and phase == "promoted":
            misses["wrong promotions"].append(dep)
    reused = reused_ids(world)
    misses["ids reused for different content"] = sorted(
        f"{dep} ({ident}: {fields})" for ident, (dep, fields) in reused.items()
    )
    run.misses = misses
    run.counts = {k: len(v) for k, v in misses.items()}
    for kill in run.kills:
        for dep in kill.victims:
            after = [d.at.timestamp() for d in obs.decisions(dep) if d.at.timestamp() > kill.at]
            if after:
                run.resume_s.append(min(after) - kill.at)
            else:
                run.never_resumed += 1
    shown: set[str] = set()
    for name, deps in misses.items():
        for entry in deps[:3]:
            dep = entry.split(" ", 1)[0]
            if dep not in shown:
                shown.add(dep)
                launched = next((r for r in run.launched if r.deployment_id == dep), None)
                head = f"{dep} ({launched.kind if launched else '?'}; {name})"
                if launched is not None:
                    head += (
                        f", launched at +{launched.at - run.launched[0].at:.1f} s, fleet at "
                        f"{launched.fleet.canary_percent:g}%, applied "
                        f"{[(c.action.value, c.canary_percent) for c in launched.fleet.applied]}"
                    )
                run.timelines[head] = obs.timeline([dep]) + "\n\nin time:\n" + story(obs, run, dep)


def story(obs: Any, run: Run, dep: str) -> str:
    """A rollout's decisions, commands and alerts, what the router did with them, and the
    kills and broker restarts meanwhile, by time (seconds from the run's first rollout)."""
    zero = run.launched[0].at
    launched = next((r for r in run.launched if r.deployment_id == dep), None)
    start = launched.at if launched is not None else zero  # a model's monitor: no request
    lines: list[tuple[float, str]] = [(start, "requested" if launched else "first seen")]
    for d in obs.decisions(dep):
        if isinstance(d, Decision):
            lines.append((d.at.timestamp(), f"decision {d.from_phase}->{d.to_phase} step {d.step}"))
        else:
            lines.append((d.at.timestamp(), f"monitor {d.action} {d.rule or ''}: {d.reason}"))
    for c in obs.commands(dep):
        lines.append((c.issued_at.timestamp(), f"command {c.action.value} {c.canary_percent:g}%"))
    for a in obs.alerts(dep):
        lines.append((a.at.timestamp(), f"alert {a.status} {a.kind}"))
    lines += run.router_events.get(dep, [])
    last = max(t for t, _ in lines)
    lines += [(t, e) for t, e in run.events if start - 10 <= t <= last + 5]
    return "\n".join(f"{t - zero:8.1f} s  {what}" for t, what in sorted(lines))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def command_line(args: argparse.Namespace) -> str:
    return (
        f"python bench/chaos.py --rollouts {args.rollouts} --kills {args.kills} "
        f"--broker-restarts {args.broker_restarts} --seed {args.seed} --workers {args.workers} "
        f"--concurrent {args.concurrent} --kill-every {args.kill_every:g} "
        f"--lag-share {args.lag_share:g} --lag-s {args.lag_s:g} --drop-share {args.drop_share:g}"
    )


def report(run: Run, sha: str) -> str:
    args = run.args
    kinds = Counter(r.kind for r in run.launched)
    settings = load_settings()
    lines = [
        f"Command: `{command_line(args)}`",
        "",
        f"- Code: commit {sha}. {len(run.launched)} rollouts ({kinds['healthy']} healthy; bad: "
        + ", ".join(f"{k} {kinds[k]}" for k in BAD_KINDS)
        + f"), at most {args.concurrent} at once, {args.rate:g} requests/s each; plan 10 % / "
        f"50 % / 100 %, 3 s bake. {args.workers} workers (session "
        f"{settings.session_timeout_s:g} s, heartbeat {settings.heartbeat_interval_s:g} s, "
        f"rebalance {settings.rebalance_timeout_s:g} s), {len(run.kills)} kills (SIGKILL, "
        f"started again {args.restart_after:g} s later), {run.unexpected_exits} exits of a "
        f"worker on its own, {len(run.broker_restarts)} broker restarts ({args.broker_down_s:g} s "
        f"down, then the broker's own start"
        + (
            f"; median {statistics.median(b - a for a, b in run.broker_restarts):.1f} s in all"
            if run.broker_restarts
            else ""
        )
        + f"). Router: {dict(run.router_counts) or 'reliable'}. {run.wall_s:.0f} s wall.",
        "",
        "| target | count | goal |",
        "|---|---|---|",
    ]
    for name, count in run.counts.items():
        lines.append(f"| {name} | {count} | 0 |")
    if run.resume_s:
        lines.append(
            f"| resume after a kill (median / p95 / worst, {len(run.resume_s)} rollouts) | "
            f"{statistics.median(run.resume_s):.1f} s / {percentile(run.resume_s, 95):.1f} s / "
            f"{max(run.resume_s):.1f} s | reported |"
        )
    lines.append(
        f"| rollouts the killed worker was deciding, never resumed | {run.never_resumed} | 0 |"
    )
    if run.broker_errors:
        lines += ["", "Broker restart errors: " + "; ".join(run.broker_errors)]
    for name, deps in run.misses.items():
        if deps:
            lines += ["", f"{name}: " + ", ".join(deps[:20]) + (" ..." if len(deps) > 20 else "")]
    for head, timeline in run.timelines.items():
        lines += ["", f"Timeline of {head}:", "```", timeline, "```"]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rollouts", type=int, default=50, help="at least this many rollouts")
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--broker-restarts", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrent", type=int, default=6, help="rollouts running at once")
    p.add_argument("--bad-share", type=float, default=0.4, help="share of bad canaries")
    p.add_argument("--rate", type=float, default=200.0, help="requests/s of each fleet")
    p.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between kills")
    p.add_argument("--restart-after", type=float, default=1.0, help="a killed worker's restart")
    p.add_argument("--broker-down-s", type=float, default=5.0)
    p.add_argument("--lag-share", type=float, default=0.3, help="commands applied late")
    p.add_argument("--lag-s", type=float, default=3.0, help="their mean delay")
    p.add_argument("--drop-share", type=float, default=0.1, help="acknowledgements never sent")
    p.add_argument("--rollout-timeout", type=float, default=300.0)
    p.add_argument("--settle-s", type=float, default=5.0, help="wait for late records at the end")
    return p


def quiet() -> None:
    """The router's and the fleets' SDK clients log every command and batch: warnings and up
    only, on stderr, so that the table stands alone on stdout."""
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sha = commit()
    quiet()
    bootstrap = load_settings().bootstrap_servers

    def log(message: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        run = chaos(bootstrap, Path(tmp), args, log)
    print(report(run, sha))


if __name__ == "__main__":
    main()
