"""Write amplification: how many changelog records the rollouts table costs per rollout.

One worker (its own defaults: `broker_commit_interval` 0.5 s) on a real broker
(KAFKA_BOOTSTRAP_SERVERS, else the local `rollout dev-kafka` broker on its default port) runs
`--rollouts` healthy rollouts to promotion, each served at `--rate` requests a second through the
serving SDK and acknowledged by a router. Then it counts, per rollout, the records on the
rollouts table's changelog (what the table wrote) and the input records the agent processed
for it (the lane's statistics deltas and the deployments-topic records: a request, router
acknowledgements), which is what a table written at every change would have written, at most.
The rollout's duration over the commit interval bounds the changelog records of a table
written once per rollout per commit.

    python bench/writes.py --rollouts 20

Not a test: it prints a table and the commit it measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka import KafkaConsumer  # noqa: E402

from bench.common import commit  # noqa: E402
from controller.settings import Settings, load_settings  # noqa: E402
from controller.topics import stats_topic_name  # noqa: E402
from schemas import Topic  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    FAUST_ENV,
    Rollouts,
    deployment_request,
    plan,
    spread_over_partitions,
    step,
)

#: Faust's offset commit interval in the worker (controller/stream/app.py).
COMMIT_INTERVAL_S = 0.5


def count_by_key(settings: Settings, topic: str) -> Counter[str]:
    """Records per key on `topic`, read from the beginning to the end."""
    consumer = KafkaConsumer(
        topic,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        **settings.kafka_client_options(),
    )
    counts: Counter[str] = Counter()
    try:
        for record in consumer:
            counts[(record.key or b"").decode(errors="replace")] += 1
    finally:
        consumer.close()
    return counts


def run(bootstrap: str, rollouts: int, rate: float, tmp: Path) -> list[tuple[int, int, float]]:
    """(changelog records, input records, duration s) of each rollout."""
    world = Rollouts(bootstrap, tmp)
    for name in FAUST_ENV:  # the worker's own settings, not the e2e harness's
        world.env.pop(name, None)
    try:
        world.start_worker()
        steps = [step(p, bake_s=4) for p in (10, 25, 50)] + [step(100, bake_s=0, samples=0)]
        deployments = spread_over_partitions(rollouts, "wr-")
        for i, dep in enumerate(deployments):
            world.deploy(deployment_request(dep, plan(*steps)), rate=rate, seed=i)
        ends = {dep: world.wait_terminal(dep, timeout=240) for dep in deployments}
        bad = {d: e.to_phase for d, e in ends.items() if e.to_phase != "promoted"}
        if bad:
            print(f"  not promoted: {bad}", file=sys.stderr)
        for fleet in world.fleets.values():
            fleet.close()
        changelog = count_by_key(
            world.settings, f"{world.settings.consumer_group}-rollouts-changelog"
        )
        deltas = count_by_key(world.settings, stats_topic_name(world.settings))
        requests = count_by_key(world.settings, world.topic(Topic.DEPLOYMENTS))
        out = []
        for dep in deployments:
            decisions = world.observer.decisions(dep)
            duration = (decisions[-1].at - decisions[0].at).total_seconds()
            out.append((changelog[dep], deltas[dep] + requests[dep], duration))
        return out
    finally:
        world.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rollouts", type=int, default=20)
    p.add_argument("--rate", type=float, default=200.0, help="requests a second per rollout")
    args = p.parse_args(argv)
    sha = commit()
    bootstrap = load_settings().bootstrap_servers
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(bootstrap, args.rollouts, args.rate, Path(tmp))
    writes = [w for w, _, _ in rows]
    inputs = [i for _, i, _ in rows]
    bound = [d / COMMIT_INTERVAL_S + 1 for _, _, d in rows]
    over = sum(1 for w, b in zip(writes, bound, strict=True) if w > b)
    print(f"Command: `python bench/writes.py --rollouts {args.rollouts} --rate {args.rate:g}`\n")
    print(f"- Code: commit {sha}. One worker, commit interval {COMMIT_INTERVAL_S:g} s.\n")
    print(
        "| rollouts | changelog records | per rollout (median, max) | input records | "
        "records / inputs | rollouts over duration / commit interval + 1 |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {len(rows)} | {sum(writes)} | {statistics.median(writes):.0f}, {max(writes)} | "
        f"{sum(inputs)} | {sum(writes) / max(1, sum(inputs)):.2f} | {over} |"
    )


if __name__ == "__main__":
    main()
