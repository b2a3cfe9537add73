"""What one tick of a live rollout costs, and how fast `rollout replay` runs, in one run.

    python bench/tick.py [--rollouts 10,100,1000] [--ticks 20] [--seed 1] [--quick]

**Ticks.** The worker's timer ticks every rollout of its partitions every second, so the cost
of one tick bounds how many live rollouts one core can judge. The benchmark builds the largest
number of live rollouts asked for, each created with its own `DeploymentRequested` (the
simulator's `make_deployment`, plan `standard`, default policy), its `set_traffic` command
acknowledged, then fed healthy statistics deltas (what the worker's prediction lane sends) and
ticked: `--warmup` simulated seconds in 10 s deltas, the last 8 s second by second, so that
every rollout is at step 0 with a few thousand requests per cohort, a checkpoint every 10 s,
warm rule caches and nothing firing. The deltas come from a few simulated serving fleets
(controller.dev.simulate, about 20 canary and 80 baseline predictions a second), folded per
second as the lane folds them and shared between rollouts (a merge copies what it takes);
rollouts start up to 50 s apart, so their ages and counts differ.

From copies of those rollouts (the first 10, 100, 1000), two conditions are timed, one
`tick_all` call over every rollout per simulated second (`now` += 1 s), after untimed ticks:

- **fresh data**: each rollout merged a one-second delta since the last tick (untimed), so the
  tick judges statistics it has not judged before: with about 20 new canary requests, the
  rules cached for every n requests are judged again too;
- **idle**: no data since the last tick: the rules judged every n requests answer from their
  cache. Deltas arrive every 4 s (4 s of data each, merged and ticked untimed) and the three
  ticks in between are timed: a canary silent for 5 s would rightly be rolled back for an
  outage, so an idle stretch cannot be longer.

In today's worker a delta is judged when it is merged (`Engine.on_delta`), so the timer's ticks
in between are of the idle kind; an engine that judges only at ticks pays the fresh kind once
per rollout that got data.

It prints microseconds per rollout per tick (the tick_all call's time divided by the number of
rollouts; median, p90, mean and max over the timed ticks), how many rollouts one core could
judge every second at that cost, the full garbage collections that fell in the timed ticks, and
the process's CPU time over the wall time (below 1: other work took the core). Every 10 s of
the clock each rollout takes a checkpoint in its tick (epoch-aligned, the same second for all),
which shows in the p90 and the max.

**Replay.** `rollout simulate --scenario healthy` logs (one rollout from request to promotion,
canary predictions as single records, baseline batched every second; and the same with canary
batches) replayed in this process with `controller.replay.replay.replay` on the lines read
beforehand (records and predictions per second), and once through the `rollout replay` command
(wall time, interpreter start included).

To compare another engine, adapt the three functions under "The engine under test" (`tick_all`
is the timed loop); the builders and the timing code only call those. As written they drive the
engine of commit c7bcb1b (`controller.stream.engine.Engine`, whose `on_event` and `on_tick`
return the state and its outputs) and merge deltas with `controller.core.rollout.merge`.

Not a test: nothing is asserted, and the figures vary with the machine and its load.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from controller.core.state import RolloutState  # noqa: E402
from controller.core.stats.cohort import CohortStats  # noqa: E402
from controller.dev.simulate import (  # noqa: E402
    MODEL,
    PLANS,
    SCENARIOS,
    ServingFleet,
    Timeline,
    epoch_s,
    make_deployment,
    start_ms,
)
from controller.engine import Engine  # noqa: E402
from controller.policy_io import default_policy  # noqa: E402
from controller.replay.replay import replay  # noqa: E402
from controller.stream.deltas import Folder, StatsDelta  # noqa: E402
from schemas import (  # noqa: E402
    DeploymentRequested,
    PredictionBatch,
    PredictionServed,
    TrafficApplied,
    make_event,
)

#: Live rollouts by deployment id.
Rollouts = dict[str, RolloutState]
#: A delta's statistics: (cohort, version, stats) triples, as StatsDelta.cohorts holds them.
Cohorts = tuple[tuple[str, str, CohortStats], ...]

SOURCE = "bench/tick"


# ---------------------------------------------------------------------------------------------
# The engine under test: adapt these three to another engine's API
# ---------------------------------------------------------------------------------------------


def start_rollout(engine: Engine, deployment: DeploymentRequested, now: float) -> RolloutState:
    """A new rollout, its first traffic step acknowledged by the router at `now`."""
    effects = engine.on_event(None, make_event(deployment, source=SOURCE, id="0"), now)
    state = effects.state
    assert state is not None
    (command,) = effects.result.commands
    applied = TrafficApplied(
        deployment_id=deployment.deployment_id,
        command_id=command.command_id,
        canary_percent=command.canary_percent,
        applied_by=SOURCE,
        applied_at=datetime.fromtimestamp(now, UTC),
    )
    state = engine.on_event(state, make_event(applied, source=SOURCE, id="1"), now).state
    assert state is not None
    return state


def feed_all(
    engine: Engine, rollouts: Rollouts, deltas: Mapping[str, StatsDelta], now: float
) -> None:
    """Each rollout's statistics delta, merged and judged as the worker's agent does
    (`Engine.on_delta`); never timed."""
    for key, delta in deltas.items():
        engine.on_delta(rollouts[key], delta.cohorts, delta.delta_id, now)


def tick_all(engine: Engine, rollouts: Rollouts, now: float) -> int:
    """One tick of the timer at `now` (the timed loop): every rollout the engine says is due,
    as the worker's agent does it. Returns how many rollouts decided something (0 in this
    benchmark: nothing may fire)."""
    decided = 0
    for key in engine.due(list(rollouts), now):
        state = rollouts[key]
        if not state.is_live():
            continue
        if not engine.on_tick(state, now).empty():
            decided += 1
    return decided


TIMERS = {
    "every rollout (the timer before)": True,
    "due only": False,
}


def timer_engine(every_rollout: bool) -> Engine:
    return Engine(default_policy(), tick_every_rollout=every_rollout)


# ---------------------------------------------------------------------------------------------
# Building live rollouts (nothing here is timed)
# ---------------------------------------------------------------------------------------------

#: Warm-up deltas span this many seconds, except the last FINE_S seconds (one delta a second).
COARSE_S = 10
#: More than a pane of the policy's recent window (6 s) fed second by second at the end of the
#: warm-up (the timed runs add a few more seconds before their first timed tick).
FINE_S = 8
#: Rollouts start at one of these offsets (seconds after the first): ages differ by up to 50 s.
START_OFFSETS_S = (0, 10, 20, 30, 40, 50)
#: Distinct simulated fleets the rollouts' deltas come from.
MAX_STREAMS = 8


def merged(parts: Iterable[Cohorts]) -> Cohorts:
    """The statistics of several deltas in one: (cohort, version) by (cohort, version)."""
    out: dict[tuple[str, str], CohortStats] = {}
    for cohorts in parts:
        for cohort, version, stats in cohorts:
            mine = out.get((cohort, version))
            if mine is None:
                out[(cohort, version)] = stats.copy()
            else:
                mine.merge_from(stats)
    return tuple((c, v, s) for (c, v), s in sorted(out.items()))


def delta(delta_id: str, deployment_id: str, cohorts: Cohorts) -> StatsDelta:
    count = sum(stats.requests for _, _, stats in cohorts)
    return StatsDelta(delta_id, deployment_id, MODEL, count, cohorts)


@dataclass(frozen=True)
class Stream:
    """A healthy serving fleet at the standard plan's first share (20 % canary), its
    predictions folded per second of event time as the prediction lane folds them."""

    seconds: tuple[Cohorts, ...]

    @classmethod
    def simulate(cls, seed: int, begin_ms: int, seconds: int) -> Stream:
        deployment = make_deployment("healthy", seed, PLANS["standard"])
        fleet = ServingFleet(deployment, SCENARIOS["healthy"], seed=seed, begin_ms=begin_ms)
        timeline = Timeline(fleet)
        timeline.set_percent(deployment.plan.steps[0].canary_percent, begin_ms)
        folder = Folder()
        out: list[Cohorts] = []
        for second in range(seconds):
            until = begin_ms + (second + 1) * 1000
            while (record := timeline.next_record(until_ms=until)) is not None:
                folder.add(record)
            folds = folder.drain()
            out.append(tuple((c, v, s) for f in folds for (c, v), s in sorted(f.cohorts.items())))
        return cls(tuple(out))

    def span(self, start: int, stop: int) -> Cohorts:
        """One delta of seconds [start, stop)."""
        return merged(self.seconds[start:stop])


@dataclass
class Fleet:
    """Live rollouts on one clock (second s ends at `now(s)`), and where their data comes from."""

    engine: Engine
    begin_ms: int
    rollouts: Rollouts
    stream_of: dict[str, Stream]
    #: the next second of data not fed yet
    second: int
    streams: int

    def now(self, second: int) -> float:
        """The end of a second of the clock, in epoch seconds."""
        return epoch_s(self.begin_ms + (second + 1) * 1000)

    def deltas(self, second: int, keys: Iterable[str]) -> dict[str, StatsDelta]:
        out = {}
        for key in keys:
            out[key] = delta(f"{key}/{second}", key, self.stream_of[key].seconds[second])
        return out

    def copy(self, n: int) -> Rollouts:
        """Independent copies of the first n rollouts (as the worker loads them from its table)."""
        return {k: s.copy() for k, s in list(self.rollouts.items())[:n]}


def build(n: int, seed: int, warmup_s: int, seconds: int) -> Fleet:
    """n live rollouts driven for `warmup_s` simulated seconds; data for `seconds` in all."""
    engine = Engine(default_policy())
    begin_ms = start_ms(seed)
    streams = [
        Stream.simulate(seed * 1000 + k, begin_ms, seconds) for k in range(min(n, MAX_STREAMS))
    ]
    coarse_end = warmup_s - FINE_S
    assert coarse_end > START_OFFSETS_S[-1], "the warm-up is too short for the start offsets"
    starts: dict[int, list[tuple[str, DeploymentRequested, Stream]]] = {}
    order = []
    for i in range(n):
        deployment = make_deployment("healthy", seed * 100_000 + i, PLANS["standard"])
        order.append(deployment.deployment_id)
        offset = START_OFFSETS_S[(i // len(streams)) % len(START_OFFSETS_S)]
        starts.setdefault(offset, []).append(
            (deployment.deployment_id, deployment, streams[i % len(streams)])
        )
    fleet = Fleet(engine, begin_ms, {}, {}, 0, len(streams))
    chunks = {
        id(stream): [
            stream.span(t, min(t + COARSE_S, coarse_end)) for t in range(0, coarse_end, COARSE_S)
        ]
        for stream in streams
    }
    for index, t in enumerate(range(0, coarse_end, COARSE_S)):
        for key, deployment, stream in starts.get(t, ()):
            fleet.rollouts[key] = start_rollout(engine, deployment, epoch_s(begin_ms + t * 1000))
            fleet.stream_of[key] = stream
        stop = min(t + COARSE_S, coarse_end)
        now = fleet.now(stop - 1)
        deltas = {
            key: delta(f"{key}/{t}", key, chunks[id(stream)][index])
            for key, stream in fleet.stream_of.items()
        }
        feed_all(engine, fleet.rollouts, deltas, now)
        tick_all(engine, fleet.rollouts, now)
    for second in range(coarse_end, warmup_s):
        feed_all(engine, fleet.rollouts, fleet.deltas(second, fleet.rollouts), fleet.now(second))
        tick_all(engine, fleet.rollouts, fleet.now(second))
    fleet.second = warmup_s
    # in the order of i, so that the first rollouts (the smaller runs) mix streams and ages
    fleet.rollouts = {key: fleet.rollouts[key] for key in order}
    return fleet


@dataclass(frozen=True)
class Shape:
    """What the rollouts look like when the timed ticks end."""

    age_s: tuple[float, float]
    canary: tuple[int, int]
    baseline: tuple[int, int]
    phases: str
    firing: int
    checkpoints: tuple[int, int]

    @classmethod
    def of(cls, rollouts: Rollouts, now: float) -> Shape:
        states = list(rollouts.values())
        phases: dict[str, int] = {}
        for s in states:
            label = f"{s.phase.value} step {s.step}"
            phases[label] = phases.get(label, 0) + 1

        def span(values: list[int]) -> tuple[int, int]:
            return min(values), max(values)

        ages = [now - s.created_at for s in states]
        return cls(
            age_s=(min(ages), max(ages)),
            canary=span([s.canary.requests for s in states]),
            baseline=span([s.baseline.requests for s in states]),
            phases=", ".join(f"{v} {k}" for k, v in sorted(phases.items())),
            firing=sum(len(s.firing) for s in states),
            checkpoints=span([len(s.checkpoints) for s in states]),
        )


# ---------------------------------------------------------------------------------------------
# Timing the ticks
# ---------------------------------------------------------------------------------------------

#: Untimed ticks (fresh) or idle rounds before the timed ones.
WARM_TICKS = 2
IDLE_EVERY_S = 4  # a delta every 4 s, the 3 ticks in between idle


@dataclass(frozen=True)
class Timing:
    rollouts: int
    condition: str
    timer: str
    samples: tuple[float, ...]  # microseconds per rollout, one per timed tick
    decided: int
    full_collections: int
    #: the thread's CPU time over the wall time of the timed ticks: below 1, it waited for a core
    cpu_share: float
    shape: Shape


class FullCollections:
    """Counts the garbage collector's full (generation 2) collections while `active`: with
    thousands of rollouts in memory one of them can take longer than a whole tick."""

    def __init__(self) -> None:
        self.active = False
        self.count = 0

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if self.active and phase == "stop" and info["generation"] == 2:
            self.count += 1


def time_fresh(fleet: Fleet, n: int, ticks: int, timer: str) -> Timing:
    rollouts = fleet.copy(n)
    engine, decided = timer_engine(TIMERS[timer]), 0
    samples: list[float] = []
    cpu_ns = 0
    gc.collect()
    with FullCollections() as collections:
        for k in range(WARM_TICKS + ticks):
            second = fleet.second + k
            now = fleet.now(second)
            feed_all(engine, rollouts, fleet.deltas(second, rollouts), now)
            collections.active = k >= WARM_TICKS
            cpu = time.thread_time_ns()
            started = time.perf_counter_ns()
            decided += tick_all(engine, rollouts, now)
            elapsed = time.perf_counter_ns() - started
            cpu = time.thread_time_ns() - cpu
            collections.active = False
            if k >= WARM_TICKS:
                samples.append(elapsed / 1000 / n)
                cpu_ns += cpu
    shape = Shape.of(rollouts, now)
    share = cpu_ns / 1000 / n / sum(samples)
    return Timing(n, "fresh data", timer, tuple(samples), decided, collections.count, share, shape)


def time_idle(fleet: Fleet, n: int, ticks: int, timer: str) -> Timing:
    rollouts = fleet.copy(n)
    engine, decided = timer_engine(TIMERS[timer]), 0
    samples: list[float] = []
    per_round = IDLE_EVERY_S - 1
    rounds = 1 + math.ceil(ticks / per_round)
    cpu_ns = 0
    gc.collect()
    with FullCollections() as collections:
        for r in range(rounds):
            first = fleet.second + r * IDLE_EVERY_S
            last = first + IDLE_EVERY_S - 1
            now = fleet.now(last)
            for second in range(first, last + 1):
                feed_all(engine, rollouts, fleet.deltas(second, rollouts), now)
            decided += tick_all(engine, rollouts, now)  # takes the data in: not timed
            for j in range(1, IDLE_EVERY_S):
                timed = r > 0 and len(samples) < ticks
                collections.active = timed
                cpu = time.thread_time_ns()
                started = time.perf_counter_ns()
                decided += tick_all(engine, rollouts, now + j)
                elapsed = time.perf_counter_ns() - started
                cpu = time.thread_time_ns() - cpu
                collections.active = False
                if timed:
                    samples.append(elapsed / 1000 / n)
                    cpu_ns += cpu
    shape = Shape.of(rollouts, now + IDLE_EVERY_S - 1)
    share = cpu_ns / 1000 / n / sum(samples)
    return Timing(n, "idle", timer, tuple(samples), decided, collections.count, share, shape)


def seconds_needed(warmup_s: int, ticks: int) -> int:
    fresh = WARM_TICKS + ticks
    idle = (1 + math.ceil(ticks / (IDLE_EVERY_S - 1))) * IDLE_EVERY_S
    return warmup_s + max(fresh, idle)


# ---------------------------------------------------------------------------------------------
# Replay
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Log:
    name: str
    simulate_args: tuple[str, ...]


class Simulation:
    """`rollout simulate` writing a log in a subprocess. Started before the rollouts are built,
    it runs on another core while nothing is timed; `wait()` before timing anything."""

    def __init__(self, log: Log, path: Path) -> None:
        self.log = log
        self.path = path
        self.process = subprocess.Popen(
            rollout_command("simulate", *log.simulate_args, "--out", str(path)),
            env=checkout_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.summary: str | None = None

    def wait(self) -> str:
        """The simulator's summary of the run (its first line on stderr)."""
        if self.summary is None:
            _, err = self.process.communicate()
            if self.process.returncode != 0:
                raise SystemExit(f"rollout simulate {' '.join(self.log.simulate_args)}: {err}")
            self.summary = err.strip().splitlines()[0] if err.strip() else ""
        return self.summary


@dataclass(frozen=True)
class ReplayTiming:
    log: Log
    records: int
    predictions: int
    runs_s: tuple[float, ...]
    every_rollout_s: tuple[float, ...]
    cli_s: float
    outcome: str
    simulated: str


def rollout_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "controller.cli", *args]


def checkout_env() -> dict[str, str]:
    """The environment for `rollout` subprocesses: this checkout's code first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def count_predictions(lines: Sequence[bytes]) -> int:
    count = 0
    for line in lines:
        doc = orjson.loads(line)
        if doc["type"] == PredictionServed.EVENT_TYPE:
            count += 1
        elif doc["type"] == PredictionBatch.EVENT_TYPE:
            count += len(doc["data"]["predictions"])
    return count


def time_replay(simulation: Simulation, repeats: int) -> ReplayTiming:
    simulated = simulation.wait()
    log, path = simulation.log, simulation.path
    lines = path.read_bytes().splitlines(keepends=True)
    policy = default_policy()
    runs: list[float] = []
    every: list[float] = []
    outcome = ""
    for _ in range(repeats):
        gc.collect()
        started_ns = time.perf_counter_ns()
        replay(lines, policy, tick_every_rollout=True)  # the timer before: every rollout
        every.append((time.perf_counter_ns() - started_ns) / 1e9)
        gc.collect()
        started_ns = time.perf_counter_ns()
        result = replay(lines, policy)
        runs.append((time.perf_counter_ns() - started_ns) / 1e9)
        d = result.deployments[0]
        decided = "-" if d.time_to_decision_s is None else f"{d.time_to_decision_s:.1f} s"
        outcome = f"{d.phase} at +{decided}, {result.outputs} outputs"
    started = time.perf_counter()
    subprocess.run(
        rollout_command("replay", str(path)),
        env=checkout_env(),
        stdout=subprocess.DEVNULL,
        check=True,
    )
    cli_s = time.perf_counter() - started
    return ReplayTiming(
        log,
        len(lines),
        count_predictions(lines),
        tuple(runs),
        tuple(every),
        cli_s,
        outcome,
        simulated,
    )


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def load() -> str:
    """The system's load averages (1, 5, 15 min): other work competes for the cores."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def commit() -> str:
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)

    head = git("rev-parse", "--short", "HEAD")
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = git("diff", "--quiet", "HEAD").returncode != 0
    return head.stdout.strip() + (" with local changes" if dirty else "")


def print_ticks(
    timings: Sequence[Timing], ticks: int, warmup_s: int, streams: int, build_s: float
) -> None:
    print(
        f"## One tick per rollout (default policy, plan `standard`, {ticks} timed ticks per "
        f"row; {warmup_s} s of warm-up on the data of {streams} simulated fleets, "
        f"built in {build_s:.0f} s)\n"
    )
    print(
        "| rollouts | since the last tick | timer | median µs / rollout / tick | p90 | mean "
        "| max | rollouts per core-second (mean) | mean / the timer before "
        "| full GCs in the timed ticks | CPU / wall | ticks that decided |"
    )
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    baseline = {
        (t.rollouts, t.condition): statistics.fmean(t.samples) for t in timings if TIMERS[t.timer]
    }
    for t in timings:
        median = statistics.median(t.samples)
        mean = statistics.fmean(t.samples)
        before = baseline.get((t.rollouts, t.condition))
        ratio = "-" if not before else f"{mean / before:.3f}"
        per_second = f"{1e6 / mean:,.0f}" if mean > 0 else "-"
        print(
            f"| {t.rollouts:,} | {t.condition} | {t.timer} | {median:,.1f} "
            f"| {percentile(t.samples, 0.9):,.1f} | {mean:,.1f} | {max(t.samples):,.1f} "
            f"| {per_second} | {ratio} | {t.full_collections} | {t.cpu_share:.2f} "
            f"| {t.decided} |"
        )
    print("\nThe rollouts when the timed ticks ended:\n")
    print(
        "| rollouts | condition | age (s) | canary requests | baseline requests "
        "| checkpoints | phase | firing alerts |"
    )
    print("| ---: | --- | --- | --- | --- | --- | --- | ---: |")
    for t in timings:
        if TIMERS[t.timer]:
            continue  # the same rollouts as the due-only row
        s = t.shape
        print(
            f"| {t.rollouts:,} | {t.condition} | {s.age_s[0]:.0f}-{s.age_s[1]:.0f} "
            f"| {s.canary[0]:,}-{s.canary[1]:,} | {s.baseline[0]:,}-{s.baseline[1]:,} "
            f"| {s.checkpoints[0]}-{s.checkpoints[1]} | {s.phases} | {s.firing} |"
        )


def print_replay(timings: Sequence[ReplayTiming], repeats: int) -> None:
    print(f"\n## Replay (default policy, tick 1 s; in-process: median of {repeats} runs)\n")
    print(
        "| log | records | predictions | in-process replay (s) | records/s | predictions/s "
        "| µs / record | ticking every rollout (s) | ratio | `rollout replay` wall time (s) "
        "| outcome |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for t in timings:
        median = statistics.median(t.runs_s)
        every = statistics.median(t.every_rollout_s)
        runs = " / ".join(f"{r:.2f}" for r in t.runs_s)
        print(
            f"| {t.log.name} | {t.records:,} | {t.predictions:,} | {median:.2f} ({runs}) "
            f"| {t.records / median:,.0f} | {t.predictions / median:,.0f} "
            f"| {median / t.records * 1e6:,.0f} | {every:.2f} | {median / every:.3f} "
            f"| {t.cli_s:.2f} | {t.outcome} |"
        )
    print()
    for t in timings:
        args = " ".join(t.log.simulate_args)
        print(f"- {t.log.name}: `rollout simulate {args} --out LOG`: {t.simulated}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rollouts", default="10,100,1000", help="comma-separated counts")
    parser.add_argument("--ticks", type=int, default=20, help="timed ticks per condition")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--warmup", type=int, default=160, help="simulated seconds before the timing"
    )
    parser.add_argument("--replay-repeats", type=int, default=2, help="in-process replays per log")
    parser.add_argument("--only", choices=("ticks", "replay"), help="run one part only")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 10 and 100 rollouts, 5 ticks, 70 s of warm-up, the quick plan's log",
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.rollouts.split(",")]
    ticks, warmup_s, repeats = args.ticks, args.warmup, args.replay_repeats
    plan = "standard"
    if args.quick:
        counts = [c for c in counts if c <= 100] or [10]
        ticks, warmup_s, repeats, plan = min(ticks, 5), min(warmup_s, 70), 1, "quick"
    print(
        f"commit {commit()}, Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC, load average {load()}\n"
        f"`python bench/tick.py {' '.join(sys.argv[1:])}`".rstrip()
        + "\n"
    )
    sim = ("--scenario", "healthy", "--seed", str(args.seed), "--plan", plan)
    logs = [
        Log("canary single records", sim),
        Log("canary batched every 1 s", (*sim, "--canary-batch", "1")),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-tick-") as directory:
        simulations = (
            []
            if args.only == "ticks"
            else [Simulation(log, Path(directory) / f"log-{i}.jsonl") for i, log in enumerate(logs)]
        )
        if args.only != "replay":
            started = time.perf_counter()
            fleet = build(max(counts), args.seed, warmup_s, seconds_needed(warmup_s, ticks))
            build_s = time.perf_counter() - started
            for simulation in simulations:
                simulation.wait()  # nothing else runs while the ticks are timed
            timings = []
            for n in counts:
                for timer in TIMERS:
                    timings.append(time_fresh(fleet, n, ticks, timer))
                for timer in TIMERS:
                    timings.append(time_idle(fleet, n, ticks, timer))
            print_ticks(timings, ticks, warmup_s, fleet.streams, build_s)
            first_bake = PLANS["standard"].steps[0].min_bake_s
            if seconds_needed(warmup_s, ticks) >= first_bake:
                print(f"\n(the timing ran past the first step's bake time, {first_bake:g} s)")
            del fleet
        if simulations:
            print_replay([time_replay(s, repeats) for s in simulations], repeats)
    print(f"\nLoad average at the end: {load()}.")


if __name__ == "__main__":
    main()
