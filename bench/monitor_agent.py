"""How many models one worker can watch: the agent's whole path per monitor and second.

The monitor benchmark (bench/monitoring.py) times the core. This one times what the worker does
for each model every second, without a broker: the monitor delta's record decoded from its JSON
(`StatsDelta.from_json`, the statistics of 20 requests with a score and three features), merged
into the model's monitor (`Engine.on_monitor_delta`), and the check on the grid
(`RolloutAgent.tick`, every rule of the packaged monitoring policy); the monitors live in a dict
table as in the agent's tests. The reference is shortened (`--learn-s`, `--calibrate-s`) so the
monitors are watching when the clock starts; then `--seconds` simulated seconds are timed.

Prints the CPU time per monitor and second (decode and merge; check), the monitors one core
holds at one check a second, and the stored state's size per monitor.

    python bench/monitor_agent.py --models 1000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import commit
from controller.core.monitor import MonitoringPolicy
from controller.core.stats.cohort import CohortStats
from controller.engine import Engine
from controller.policy_io import default_monitoring_policy, default_policy
from controller.stream.agent import ListPublisher, RolloutAgent
from controller.stream.deltas import StatsDelta
from schemas import MonitorConfigured, make_event

STATS = "rollout.internal.stats"
DEPLOYMENTS = "rollout.deployments"


@dataclass
class Row:
    ok: bool
    latency_ms: float
    event_time: float
    error_type: str | None
    prediction: Any
    features: dict[str, Any]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def second_of(model: str, t: float, rng: random.Random, rate: int) -> bytes:
    """One second of a model's traffic as the lane's monitor delta record."""
    rows = []
    for i in range(rate):
        ok = rng.random() >= 0.01
        rows.append(
            Row(
                ok,
                rng.lognormvariate(math.log(40), 0.4),
                t + i / rate,
                None if ok else "internal",
                rng.betavariate(2, 5),
                {
                    "amount": rng.lognormvariate(3, 1),
                    "age": float(rng.randint(18, 80)),
                    "country": rng.choice(("us", "de", "fr", "br")),
                },
            )
        )
    stats = CohortStats()
    stats.observe_many(rows)
    delta = StatsDelta(
        f"p:0:{t}:{model}", f"{model}-prod", model, rate, (("baseline", "v1", stats),)
    )
    return delta.encode_both()[1]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = default_monitoring_policy().to_dict()
    base["reference"] = {
        "learn_s": args.learn_s,
        "calibrate_s": args.calibrate_s,
        "min_requests": 10,
        "calibration_bin_s": 1,
    }
    engine = Engine(default_policy(), monitoring=MonitoringPolicy.from_mapping(base))
    start = 1_767_225_600.0
    clock = Clock(start)
    table: dict[bytes, bytes] = {}  # the monitors table
    agent = RolloutAgent(
        engine, {}, ListPublisher(), stats_topic=STATS, clock=clock, deferred=True, monitors=table
    )
    rng = random.Random(args.seed)
    models = [f"model-{i:04d}" for i in range(args.models)]
    for n, model in enumerate(models):
        payload = MonitorConfigured(model=model, version="v1", by="bench")
        event = make_event(payload, source="bench", time=datetime.fromtimestamp(start, UTC))
        await agent.handle(DEPLOYMENTS, 0, n, model.encode(), event.to_json())
    # a pool of seconds of traffic per model, encoded once (the benchmark times the worker)
    pool = {m: [second_of(m, start, rng, args.rate) for _ in range(4)] for m in models}
    warm = int(args.learn_s + args.calibrate_s + 3)
    decode_s: list[float] = []
    check_s: list[float] = []
    offset = 0
    for second in range(warm + args.seconds):
        clock.now = start + second + 0.5
        began = time.process_time()
        for model in models:
            offset += 1
            await agent.handle(STATS, 0, offset, model.encode(), pool[model][second % 4])
        decoded = time.process_time()
        clock.now = start + second + 1
        await agent.tick()
        checked = time.process_time()
        if second >= warm:
            decode_s.append(decoded - began)
            check_s.append(checked - decoded)
    stages = {agent.monitors.load(m).stage() for m in models}  # type: ignore[union-attr]
    agent.monitors.flush(force=True)
    sizes = [len(table[m.encode()]) for m in models]
    return {
        "stages": stages,
        "decode_us": 1e6 * statistics.fmean(decode_s) / args.models,
        "check_us": 1e6 * statistics.fmean(check_s) / args.models,
        "state_bytes": statistics.median(sizes),
        "state_max": max(sizes),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--rate", type=int, default=20, help="requests a second per model")
    p.add_argument("--seconds", type=int, default=20, help="timed seconds, once watching")
    p.add_argument("--learn-s", type=float, default=5.0)
    p.add_argument("--calibrate-s", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    out = asyncio.run(run(args))
    per_monitor = out["decode_us"] + out["check_us"]
    print(
        f"Command: `python bench/monitor_agent.py --models {args.models} --seconds "
        f"{args.seconds}`  \nCode: commit {commit()}. {args.models} models at {args.rate} "
        f"requests a second, monitors {', '.join(sorted(out['stages']))} while timed; CPU time "
        "(process), mean over the timed seconds (rules judged every 10 s included).\n"
    )
    print("| per monitor and second | µs |")
    print("|---|---|")
    print(f"| decode the monitor delta and merge it | {out['decode_us']:.0f} |")
    print(f"| check (every rule of the packaged policy) | {out['check_us']:.0f} |")
    print(f"| total | {per_monitor:.0f} |")
    print(
        f"\nOne core at one check a second holds about {1e6 / per_monitor:,.0f} monitors "
        f"(the ceiling: {per_monitor:.0f} µs a monitor a second). Stored state: median "
        f"{out['state_bytes']:,.0f} bytes a monitor (largest {out['state_max']:,})."
    )


if __name__ == "__main__":
    main()
