"""The monitors' label rules on real models: false alarms with nothing wrong, and detection delays.

    python bench/label_monitors.py [--hours 12] [--seeds 5] [--rate 10] [--processes 1]

Each monitor watches one model trained on a dataset bundled with scikit-learn (breast cancer,
wine, digits, diabetes: `controller.dev.realdata`), fed `--rate` labelled predictions a second
(a serving row drawn at random, the model's output on it and the row's target, labelled about
ten minutes later: lognormal, median 600 s) under the packaged monitoring policy (a labelled
reference of an hour, an hour of calibration, the label rules judged every minute).

- **A/A.** `--seeds` monitors per dataset watch `--hours` after their calibration with
  nothing changed: every alarm of a label rule is a false one. The count per rule, and the rate
  per 30 days with its exact 95 % upper bound, beside the policy's one per rule per 30 days.
- **Changes**, one monitor each, after an hour of watching: the model swapped for a worse one
  (trained on a tenth of the data with a fifth of its labels wrong; its outputs look alike), a
  class lost from the traffic (label drift), labels an hour late instead of ten minutes, labels
  that stop. The delay from the change to the alarm.

Not a test: it prints figures; no time is asserted. `--quick` is a small run (2 hours, one
seed, one dataset per family).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import commit, cpu_model, upper_bound  # noqa: E402
from controller.dev import realdata  # noqa: E402
from controller.policy_io import default_monitoring_policy  # noqa: E402
from tests.unit.core.monitor.test_monitor_labels import Labelled, Watch, fired  # noqa: E402

DATASETS = ("breast_cancer", "wine", "digits", "diabetes")
RULES = ("quality", "label_drift", "label_delay")
CALIBRATED_S = 2 * 3600 + 120  # the labelled reference and its calibration, and a margin


def aa(dataset: str, seed: int, hours: float, rate: float) -> list[tuple[str, float]]:
    """One monitor with nothing wrong: its alarms (rule key, seconds into the watch)."""
    watch = Watch(policy=default_monitoring_policy())
    traffic = Labelled(dataset, seed=seed, rate=rate)
    watch.run(traffic, CALIBRATED_S)
    began = watch.now
    out = watch.run(traffic, int(3600 * hours))
    return [(d.rule or "", d.at.timestamp() - began) for d in fired(out)]


def change(name: str, rate: float) -> tuple[str, str | None, float | None]:
    """One monitor, one change after an hour of watching: (change, the rule that fired first,
    seconds from the change)."""
    dataset = {"worse regression": "diabetes", "a class lost": "wine"}.get(name, "breast_cancer")
    watch = Watch(policy=default_monitoring_policy())
    traffic = Labelled(dataset, seed=11, rate=rate)
    watch.run(traffic, CALIBRATED_S + 3600)
    if name in ("worse model", "worse regression"):
        traffic.use(realdata.degraded_model(dataset))
    elif name == "a class lost":
        traffic.rows = [i for i, y in enumerate(traffic.data.y_serve.tolist()) if y != 2]
    elif name == "late labels":
        traffic.delay = lambda rng: rng.lognormvariate(math.log(3600), 0.5)
    began = watch.now
    out = watch.run(None if name == "labels stop" else traffic, 2 * 3600)
    alarms = fired(out)
    if not alarms:
        return name, None, None
    first = alarms[0]
    return name, first.rule, first.at.timestamp() - began


CHANGES = ("worse model", "worse regression", "a class lost", "late labels", "labels stop")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--hours", type=float, default=12.0, help="hours watched per A/A monitor")
    p.add_argument("--seeds", type=int, default=5, help="A/A monitors per dataset")
    p.add_argument("--rate", type=float, default=10.0, help="labelled predictions a second")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="2 hours, one seed")
    args = p.parse_args(argv)
    if args.quick:
        args.hours, args.seeds = 2.0, 1
    started = time.monotonic()
    jobs = [(d, seed) for d in DATASETS for seed in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=max(1, args.processes)) as pool:
        aa_runs = list(
            pool.map(
                aa,
                [d for d, _ in jobs],
                [s for _, s in jobs],
                [args.hours] * len(jobs),
                [args.rate] * len(jobs),
            )
        )
        changes = list(pool.map(change, CHANGES, [args.rate] * len(CHANGES)))
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"Command: `python bench/label_monitors.py {shown}`")
    print(f"Code: commit {commit()}. Machine: {cpu_model()}, {os.cpu_count()} cores.")
    days = len(jobs) * args.hours / 24.0
    print()
    print(
        f"A/A: {len(jobs)} monitors ({args.seeds} per dataset: {', '.join(DATASETS)}), "
        f"{args.hours:g} h watched each after calibration: {days:.1f} monitor-days."
    )
    print()
    print("| rule | false alarms | per 30 days | 95 % upper bound | by dataset |")
    print("|---|---|---|---|---|")
    for rule in RULES:
        by_dataset = dict.fromkeys(DATASETS, 0)
        for (dataset, _), run in zip(jobs, aa_runs, strict=True):
            by_dataset[dataset] += sum(1 for key, _ in run if key.split("/")[0] == rule)
        k = sum(by_dataset.values())
        # alarms over monitor-days: a Poisson count; the bound over checks of one minute each
        minutes = int(days * 1440)
        upper = upper_bound(k, minutes) * minutes / days * 30
        shown_by = ", ".join(f"{d} {n}" for d, n in by_dataset.items())
        print(f"| {rule} | {k} | {30 * k / days:.2f} | {upper:.2f} | {shown_by} |")
    print()
    print("| change (after an hour of watching) | first alarm | after |")
    print("|---|---|---|")
    for name, rule, after in changes:
        when = "none in 2 h" if after is None else f"{after:.0f} s"
        print(f"| {name} | {rule or '-'} | {when} |")
    print()
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
