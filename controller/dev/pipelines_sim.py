"""Pipelines and a shared quota pool, simulated: the log of what they report, for replay.

`generate(name, seed, hours)` yields, in time order, the events a platform's pipelines send:

- a pool `gpu-pool` of 64 GPUs shared by `serving` (guaranteed 16, weight 2), `training` and
  `batch`, configured at the start (`quota.pool.configured`), throttling on;
- each pipeline's gauge every minute (`resource.usage` naming the pool): serving about 14,
  training about 24 while a run is live and 2 between runs, batch about 8, each with noise;
- a training run every 20 minutes (`training.run` started, then succeeded), its duration
  lognormal around 15 minutes (10 % spread);
- every 2 hours a training, validation and test profile of the wine data (`data.profile`):
  each a fresh random split of scikit-learn's bundled wine dataset, its continuous features
  and its label profiled exactly.

Scenarios change one thing `ONSET_H` (4 hours: a dozen runs of history) in:

- `healthy`: nothing;
- `runaway`: batch's usage climbs by 2 GPUs a minute until the pool is full (a job that
  leaks workers);
- `slow_leak`: batch's usage climbs by 0.1 GPU a minute (a slow leak: six an hour);
- `slow_training`: one training run takes three times as long;
- `foreign_test_set`: the test set is drawn from one cultivar only (another distribution).

Everything is a function of the seed. Times start at `T0` (2026-01-01) plus the seed's hours,
so two seeds' logs do not collide. Needs scikit-learn (the `dev` extra).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np

import schemas as s

T0 = 1_767_225_600.0
ONSET_H = 4.0
#: A training run starts this often (seconds).
RUN_EVERY_S = 1200.0
POOL = "gpu-pool"
DEPLOYMENT = "platform"
SCENARIOS = ("healthy", "runaway", "slow_leak", "slow_training", "foreign_test_set")


class UnknownPipelineScenario(ValueError):
    """An unknown scenario; the message lists the known ones."""


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _profile(
    x: np.ndarray, y: np.ndarray, names: list[str], classes: list[str]
) -> tuple[tuple[s.FeatureProfile, ...], s.FeatureProfile]:
    from controller.dev.realdata import numeric_profile

    features = tuple(
        numeric_profile(name, x[:, j])
        for j, name in enumerate(names)
        if not (x[:, j] == np.round(x[:, j])).all()  # the continuous ones (not magnesium, proline)
    )
    counts = {c: 0 for c in classes}
    for label in y.tolist():
        counts[classes[int(label)]] += 1
    label = s.FeatureProfile(
        name="label",
        kind="categorical",
        categories={c: n / len(y) for c, n in counts.items()},
        allowed=tuple(classes),
        count=len(y),
    )
    return features, label


def _profiles(rng: random.Random, foreign: bool, t: float, k: int) -> list[s.Envelope[Any]]:
    from sklearn.datasets import load_wine

    data = load_wine()
    x, y = np.asarray(data.data, dtype=float), np.asarray(data.target)
    names = [str(n) for n in data.feature_names]
    classes = [str(c) for c in data.target_names]
    order = list(range(len(y)))
    rng.shuffle(order)
    train, valid, test = order[:100], order[100:139], order[139:]
    if foreign:  # the test set of one cultivar only (40 of its 59 rows)
        test = [i for i in order if y[i] == 0][:40]
    events = []
    for split, rows in (("training", train), ("validation", valid), ("test", test)):
        features, label = _profile(x[rows], y[rows], names, classes)
        profile = s.DataProfile(
            deployment_id=DEPLOYMENT,
            dataset=f"wine-{split}-{k}",
            split=split,
            row_count=len(rows),
            features=features,
            label=label,
            pipeline="data",
        )
        events.append(s.make_event(profile, source="sim-data", time=_at(t), id=f"p{k}-{split}"))
    return events


def generate(name: str, seed: int = 1, hours: float = 8.0) -> Iterator[s.Envelope[Any]]:
    """The scenario's log (see the module docstring)."""
    if name not in SCENARIOS:
        raise UnknownPipelineScenario(
            f"unknown pipelines scenario {name!r}; known: {', '.join(SCENARIOS)}"
        )
    rng = random.Random(f"{name}:{seed}")
    start = T0 + 3600.0 * (seed % 1000)
    onset = start + ONSET_H * 3600.0
    events: list[tuple[float, int, s.Envelope[Any]]] = []
    n = 0

    def add(t: float, event: s.Envelope[Any]) -> None:
        nonlocal n
        n += 1
        events.append((t, n, event))

    pool = s.QuotaPoolConfigured(
        pool=POOL,
        resource="gpu",
        unit="gpus",
        limit=64.0,
        pipelines=(
            s.PoolMember(pipeline="serving", guaranteed=16.0, weight=2.0),
            s.PoolMember(pipeline="training"),
            s.PoolMember(pipeline="batch"),
        ),
        throttle=True,
        by="sim",
    )
    add(start, s.make_event(pool, source="sim-ops", time=_at(start), id="pool"))
    # training runs: (start, end)
    runs: list[tuple[float, float]] = []
    slow_done = False
    t = start + 60.0
    k = 0
    while t < start + hours * 3600.0:
        duration = 900.0 * math.exp(rng.gauss(0.0, 0.1))
        if name == "slow_training" and t >= onset and not slow_done:
            duration *= 3.0
            slow_done = True
        runs.append((t, t + duration))
        k += 1
        run_id = f"run-{k}"
        for status, at in (("started", t), ("succeeded", t + duration)):
            run = s.TrainingRun(
                deployment_id=DEPLOYMENT,
                pipeline="training",
                run_id=run_id,
                status=status,
                duration_s=duration if status == "succeeded" else None,
            )
            add(at, s.make_event(run, source="sim-trainer", time=_at(at), id=f"{run_id}-{status}"))
        t += RUN_EVERY_S
    minutes = int(hours * 60)
    batch_extra = 0.0
    for minute in range(minutes):
        now = start + 60.0 * minute + 30.0
        live = any(a <= now < b for a, b in runs)
        if now >= onset and name == "runaway":
            batch_extra += 2.0
        elif now >= onset and name == "slow_leak":
            batch_extra += 0.1
        levels = {
            "serving": 14.0 + rng.gauss(0.0, 0.5),
            "training": (24.0 if live else 2.0) + rng.gauss(0.0, 0.5),
            "batch": 8.0 + batch_extra + rng.gauss(0.0, 0.5),
        }
        used_total = 0.0
        for pipeline, level in levels.items():
            used = max(0.0, min(level, 64.0 - used_total))
            used_total += used
            usage = s.ResourceUsage(
                deployment_id=pipeline,
                resource="gpu",
                used=round(used, 3),
                unit="gpus",
                pipeline=pipeline,
                pool=POOL,
                requested=round(max(level, used), 3),
            )
            add(
                now,
                s.make_event(usage, source="sim-agent", time=_at(now), id=f"u{minute}-{pipeline}"),
            )
    for j, hour in enumerate(range(0, int(hours), 2)):
        at = start + 3600.0 * hour + 600.0
        foreign = name == "foreign_test_set" and at >= onset
        for event in _profiles(rng, foreign, at, j):
            add(at, event)
    for _, _, event in sorted(events, key=lambda e: (e[0], e[1])):
        yield event


__all__ = ["ONSET_H", "POOL", "SCENARIOS", "T0", "UnknownPipelineScenario", "generate"]
