"""Failover: how long a killed worker's rollouts wait before the other worker carries them on.

Each trial starts two workers in one consumer group (the worker's own defaults:
`ROLLOUT_SESSION_TIMEOUT_S`, `ROLLOUT_HEARTBEAT_INTERVAL_S`, `ROLLOUT_REBALANCE_TIMEOUT_S`) on a
real broker (KAFKA_BOOTSTRAP_SERVERS, else the local `rollout dev-kafka` broker on its default
port), rolls out deployments spread over every partition with plans of short steps, and kills
one worker with SIGKILL (no shutdown, no commit, no leave-group) while every rollout is mid-way.
A rollout's resume time is from the kill to its next decision, published by the survivor: the
session timeout, the rebalance, the table's recovery from the changelog, and up to one step's
bake (`--bake-s`, which the rollout needed anyway; reported beside it).

    python bench/failover.py --trials 5

Not a test: it prints a table (trials, rollouts taken over, median and p95 resume time, and the
worst), and the commit it measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import commit  # noqa: E402
from controller.settings import load_settings  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    FAUST_ENV,
    PARTITIONS,
    Rollouts,
    WorkerProcess,
    deployment_request,
    plan,
    spread_over_partitions,
    step,
)


def owned(worker: WorkerProcess) -> set[str]:
    """The deployments whose decisions this worker logged."""
    found = set()
    for line in worker.log_lines():
        if '"rollout.decision"' in line:
            found.add(json.loads(line)["deployment"])
    return found


def trial(bootstrap: str, k: int, rollouts: int, bake_s: float, tmp: Path) -> list[float]:
    """One kill: the resume time of each rollout the killed worker owned."""
    (tmp / f"trial-{k}").mkdir(parents=True, exist_ok=True)
    world = Rollouts(bootstrap, tmp / f"trial-{k}")
    for name in FAUST_ENV:  # the worker's own settings, not the e2e harness's
        world.env.pop(name, None)
    try:
        a, b = world.start_worker("worker-a"), world.start_worker("worker-b")
        world.wait_for(lambda: world.group_members() == 2, timeout=90, what="both workers")
        steps = [step(p, bake_s=bake_s) for p in (10, 20, 30, 40, 50, 60, 70, 80)]
        deployments = spread_over_partitions(rollouts, f"fo{k}-")
        for i, dep in enumerate(deployments):
            request = deployment_request(dep, plan(*steps, step(100, bake_s=0, samples=0)))
            world.deploy(request, rate=100, seed=i)
        world.wait_for(
            lambda: all(
                any(d.step >= 2 for d in world.observer.decisions(dep)) for dep in deployments
            ),
            timeout=120,
            what="every rollout past its second step",
        )
        victims = owned(a)
        killed_at = time.time()
        a.kill()

        def next_decisions() -> dict[str, float] | None:
            after: dict[str, float] = {}
            for dep in victims:
                times = [
                    d.at.timestamp()
                    for d in world.observer.decisions(dep)
                    if d.at.timestamp() > killed_at
                ]
                if not times:
                    return None
                after[dep] = min(times)
            return after

        resumed = world.wait_for(next_decisions, timeout=180, what="the victims to resume")
        assert b.alive(), "the survivor died"
        return [t - killed_at for t in resumed.values()]
    finally:
        world.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--rollouts", type=int, default=6, help="rollouts per trial")
    p.add_argument("--bake-s", type=float, default=2.0, help="each step's bake")
    args = p.parse_args(argv)
    sha = commit()
    settings = load_settings()
    bootstrap = settings.bootstrap_servers
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.trials):
            got = trial(bootstrap, k, args.rollouts, args.bake_s, Path(tmp))
            times += got
            print(
                f"  trial {k + 1}: {len(got)} rollouts resumed, {max(got):.1f} s worst",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"Command: `python bench/failover.py --trials {args.trials} --rollouts "
        f"{args.rollouts} --bake-s {args.bake_s:g}`\n"
    )
    print(
        f"- Code: commit {sha}. Session {settings.session_timeout_s:g} s, heartbeat "
        f"{settings.heartbeat_interval_s:g} s, rebalance {settings.rebalance_timeout_s:g} s; "
        f"{PARTITIONS} partitions, two workers, one killed (SIGKILL) per trial.\n"
    )
    print("| trials | rollouts taken over | median resume | p95 | worst | step bake |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.trials} | {len(times)} | {statistics.median(times):.1f} s | "
        f"{percentile(times, 95):.1f} s | {max(times):.1f} s | {args.bake_s:g} s |"
    )


if __name__ == "__main__":
    main()
