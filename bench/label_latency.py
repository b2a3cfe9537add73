"""Label latency: from the label that tips the quality test to the rollback command, live.

    python bench/label_latency.py [--trials 5] [--keep 0.5] [--label-rate 500] [--batch 10]

A worker with the label join on (`ROLLOUT_LABEL_JOIN=true`, the worker's own consumer and
timing settings) on a real broker (KAFKA_BOOTSTRAP_SERVERS, else the local `rollout dev-kafka`
broker on its default port) runs one rollout per trial, held at its first step (50 %, a long
bake) by a policy with a `quality` rule (tolerance 0.1, min_pairs 100). A fleet serves 200
requests a second: breast-cancer scores (out-of-fold probabilities of a logistic regression),
the candidate a worse model whose scores look the same (`--keep` of the rows its own score,
the rest another row's). Its labels are held back; 8 s into the first whole minute at 50 % (the
rule leaves out the minute a share changed in) the labels of the requests served since that
minute began are sent, oldest first, `--batch` at a time at `--label-rate` labels a second,
each batch acknowledged by the broker before the next, its send time noted.

The rollback decision's quality verdict counts the pairs it judged (canary and baseline); the
tipping batch is the first whose labels bring the counts sent to those. Measured per trial:

- decided: the rollback command's `issued_at` (the worker's clock) minus the tipping batch's
  send time: the join lane's poll, the delta on the stats topic, the rollout's evaluation;
- applied: when the router's command listener applied the command, minus the same: plus the
  command's trip to the router;
- the labels the test needed (the counts above), beside the information limit
  `ln(1/alpha) / (events per pair x KL)` (bench/quality.py) and the time those labels take at
  the label rate: the delay the evidence itself imposes, which no system can beat.

Not a test: it prints a table (median, p95 and worst of each), and the commit it measured.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import commit, cpu_model  # noqa: E402
from bench.quality import degraded, scores  # noqa: E402
from controller.core.stats.labelled import BUCKET_S  # noqa: E402
from controller.sdk import PredictionReporter, assign_cohort, emit  # noqa: E402
from controller.settings import Settings, load_settings  # noqa: E402
from schemas import Cohort, Command, LabelReported, Prediction, make_event  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    FAUST_ENV,
    Rollouts,
    deployment_request,
    plan,
    step,
)

ALPHA = 0.01
TOLERANCE = 0.1
SHARE = 0.5
RATE = 200.0
SERVE_S = 8.0


@dataclass
class HeldFleet:
    """A deployment's servers behind a sticky router; each request's label is held back."""

    settings: Settings
    deployment_id: str
    baseline: list[float]
    candidate: list[float]
    labels: list[int]
    canary_percent: float = 0.0
    share_since: float | None = None
    applied: dict[str, float] = field(default_factory=dict)
    held: list[tuple[float, str, bool, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.deployment_id)
        self.reporter = PredictionReporter(
            self.settings,
            deployment_id=self.deployment_id,
            model="fraud",
            source="bench-fleet",
            linger_ms=20,
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def apply(self, command: Command) -> None:
        now = time.time()
        with self._lock:
            self.applied.setdefault(command.action.value, now)
            if command.canary_percent != self.canary_percent:
                self.share_since = now
            self.canary_percent = command.canary_percent

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.reporter.close(timeout=10)

    def take(self, after: float) -> list[tuple[str, bool, int]]:
        """The held labels of requests served after `after` (epoch seconds), oldest first."""
        with self._lock:
            return [(r, c, y) for t, r, c, y in self.held if t >= after]

    def _run(self) -> None:
        n, tick = 0, 0.05
        while not self._stop.is_set():
            now = datetime.now(UTC)
            with self._lock:
                percent = self.canary_percent
            for _ in range(int(RATE * tick)):
                n += 1
                i = self.rng.randrange(len(self.labels))
                user = f"user-{self.rng.randrange(1_000_000)}"
                cohort = assign_cohort(user, percent, salt=self.deployment_id)
                canary = cohort is Cohort.CANARY
                request_id = f"{self.deployment_id}-{n}"
                self.reporter.report(
                    Prediction(
                        version="v2" if canary else "v1",
                        cohort=cohort,
                        request_id=request_id,
                        event_time=now,
                        latency_ms=20.0,
                        prediction=(self.candidate if canary else self.baseline)[i],
                        user_key=user,
                    )
                )
                with self._lock:
                    self.held.append((now.timestamp(), request_id, canary, self.labels[i]))
            self._stop.wait(tick)


@dataclass
class Trial:
    decided_s: float
    applied_s: float
    canary_pairs: int
    baseline_pairs: int


def trial(
    world: Rollouts,
    k: int,
    base: list[float],
    worse: list[float],
    labels: list[int],
    label_rate: float,
    batch: int,
) -> Trial:
    name = f"fraud-lat-{k}"
    fleet = HeldFleet(world.settings, name, base, worse, labels)
    world.router.fleets[name] = fleet  # type: ignore[assignment]
    world.send(deployment_request(name, plan(step(50, bake_s=3600), step(100))))
    from kafka import KafkaProducer

    producer = KafkaProducer(acks="all", linger_ms=0, **world.settings.kafka_client_options())
    try:
        world.wait_for(lambda: fleet.canary_percent == 50.0, timeout=60, what=f"{name} at 50 %")
        assert fleet.share_since is not None
        # the rule counts pairs by minute of prediction time and leaves out the minute the share
        # changed in: the labels are those of the requests served from the next minute on
        start = (math.floor(fleet.share_since / BUCKET_S) + 1) * BUCKET_S
        time.sleep(max(0.0, start + SERVE_S - time.time()))
        held = fleet.take(start)
        sent: list[tuple[float, int, int]] = []  # (send time, canary sent, baseline sent)
        canary = baseline = 0
        pause = batch / label_rate
        for first in range(0, len(held), batch):
            if world.observer.terminal(name) is not None:
                break
            chunk = held[first : first + batch]
            at = time.time()
            emit(
                world.settings,
                [
                    make_event(
                        LabelReported(
                            deployment_id=name,
                            request_id=request_id,
                            label=float(label),
                            event_time=datetime.now(UTC),
                        ),
                        source="bench-labeller",
                    )
                    for request_id, _, label in chunk
                ],
                producer=producer,
            )
            canary += sum(1 for _, c, _ in chunk if c)
            baseline += sum(1 for _, c, _ in chunk if not c)
            sent.append((at, canary, baseline))
            time.sleep(max(0.0, at + pause - time.time()))
        ended = world.wait_terminal(name, timeout=60)
        world.wait_for(lambda: "rollback" in fleet.applied, timeout=30, what="the rollback")
    finally:
        producer.close(timeout=10)
        fleet.close()
    if ended.to_phase != "rolled_back":
        raise SystemExit(f"{name} ended {ended.to_phase}: {ended.reason}")
    verdict = next(v for v in ended.verdicts if v.get("detector") == "quality")
    evidence = verdict["evidence"]
    n_c, n_b = int(evidence["canary_pairs"]), int(evidence["baseline_pairs"])
    tip = next(at for at, c, b in sent if c >= n_c and b >= n_b)
    (command,) = [c for c in world.observer.commands(name) if c.action.is_terminal()]
    return Trial(
        decided_s=command.issued_at.timestamp() - tip,
        applied_s=fleet.applied["rollback"] - tip,
        canary_pairs=n_c,
        baseline_pairs=n_b,
    )


def information_limit(base: list[float], candidate: list[float], labels: list[int]) -> float:
    """Labelled requests the test needs on average at the 50 % step (bench/quality.py)."""

    def brier(served: list[float]) -> float:
        return statistics.fmean((p - y) ** 2 for p, y in zip(served, labels, strict=True))

    loss_b, loss_c = brier(base), brier(candidate)
    events_per_pair = SHARE * loss_c + (1 - SHARE) * loss_b
    theta1 = SHARE * loss_c / events_per_pair
    odds0 = (1 + TOLERANCE) * SHARE / (1 - SHARE)
    theta0 = odds0 / (1 + odds0)
    if theta1 <= theta0:
        return math.inf
    kl = theta1 * math.log(theta1 / theta0) + (1 - theta1) * math.log((1 - theta1) / (1 - theta0))
    return math.log(1 / ALPHA) / (events_per_pair * kl)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--keep", type=float, default=0.5, help="the worse model's own-score share")
    p.add_argument("--label-rate", type=float, default=500.0, help="labels sent per second")
    p.add_argument("--batch", type=int, default=10, help="labels per send")
    args = p.parse_args(argv)
    bootstrap = load_settings().bootstrap_servers
    base, labels = scores()
    worse = degraded(base, args.keep, 7)
    policy = yaml.safe_load((ROOT / "controller" / "policies" / "default.yaml").read_text())
    policy["rules"].append(
        {
            "name": "quality",
            "detector": "quality",
            "params": {"min_pairs": 100, "tolerance": TOLERANCE, "alpha": ALPHA},
        }
    )
    results: list[Trial] = []
    with tempfile.TemporaryDirectory() as tmp:
        policy_file = Path(tmp) / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(policy))
        world = Rollouts(bootstrap, Path(tmp))
        for name in FAUST_ENV:  # the worker's own settings, not the e2e harness's
            world.env.pop(name, None)
        world.env.update({"ROLLOUT_LABEL_JOIN": "true", "ROLLOUT_POLICY_FILE": str(policy_file)})
        try:
            world.start_worker()
            world.wait_for(lambda: world.group_members() == 1, timeout=90, what="the worker")
            for k in range(args.trials):
                results.append(trial(world, k, base, worse, labels, args.label_rate, args.batch))
                r = results[-1]
                print(
                    f"trial {k}: decided {1000 * r.decided_s:.0f} ms, applied "
                    f"{1000 * r.applied_s:.0f} ms after the tipping label; "
                    f"{r.canary_pairs} + {r.baseline_pairs} labels",
                    flush=True,
                )
        finally:
            world.close()
    limit = information_limit(base, worse, labels)
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    print()
    print(f"Command: `python bench/label_latency.py {shown}`")
    print(f"Code: commit {commit()}. Machine: {cpu_model()}, {os.cpu_count()} cores.")
    print()
    print("| from the tipping label to | median | p95 | worst |")
    print("|---|---|---|---|")
    for what, values in (
        ("the rollback command (issued)", [r.decided_s for r in results]),
        ("the router applying it", [r.applied_s for r in results]),
    ):
        ms = [1000 * v for v in values]
        print(
            f"| {what} | {statistics.median(ms):.0f} ms | {percentile(ms, 0.95):.0f} ms | "
            f"{max(ms):.0f} ms |"
        )
    needed = [r.canary_pairs + r.baseline_pairs for r in results]
    print()
    print(
        f"Labels the test needed: median {statistics.median(needed):.0f} (canary and baseline), "
        f"information limit {limit:,.0f} (alpha {ALPHA}, tolerance {TOLERANCE}, at 50 %): at "
        f"{args.label_rate:g} labels a second the evidence itself takes "
        f"{statistics.median(needed) / args.label_rate:.2f} s (limit "
        f"{limit / args.label_rate:.2f} s), the system the rest."
    )


if __name__ == "__main__":
    main()
