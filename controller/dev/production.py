"""Production traffic for the always-on monitor: one model, one version serving it, for days.

Where `controller.dev.simulate` serves a rollout (a baseline and a canary for minutes), this is
what a model's monitor sees the rest of the time: one deployment of one model, every request
served by the version in production, hour after hour.

- **The daily cycle.** Requests arrive as a Poisson process whose rate follows the day: `night`
  req/s at the minimum, `peak` req/s at `peak_hour` UTC (a raised cosine, so the minimum is
  twelve hours from the peak: 03:00 UTC by default), times the rollout simulator's slow random
  walk of the log-rate (an Ornstein-Uhlenbeck walk, sd 0.1, time constant 5 minutes).
- **How a request is served.** The rollout simulator's healthy cohort (`simulate.Behaviour`:
  a lognormal latency body with a slow lognormal tail, a fraud score from Beta(2, 8), the
  features amount, country, is_new and age) with 1 % of the requests failing.
- **Traffic families** (`--family`, by name in `PRODUCTION_FAMILIES`): the rollout
  simulator's habits that independent requests lack, with its parameters: errors in runs of a
  shared dependency (`ErrorRuns`), Markov-modulated arrival bursts (`Bursts`), a heavier slow
  tail with client timeouts (`HeavyTails`). "independent" is the default. The simulator's
  compressed 20-minute day and its shared outages are not production's habits here (the day
  is the real one; an outage is a scenario).
- **Scenarios** (`PRODUCTION_SCENARIOS`): what changes and when, in hours after
  2026-01-01T00:00Z: nothing for a week, a release of an identical model, gradual drift, a
  broken feature pipeline, creeping latency, a night outage, and the step changes of the
  monitoring benchmark (`bench/monitoring.py`).

Two outputs of the same traffic: `ProductionTraffic.seconds()` yields each second's requests
folded into a `CohortStats` (the benchmark's fast path: what the worker gives the monitor every
second), and `ProductionTraffic.envelopes()` the records of a log (a `MonitorConfigured`, then
a `PredictionBatch` per second), which `rollout simulate --production NAME` writes.

Everything is a function of the seed: one `random.Random` per purpose (arrivals, serving, the
rate's walk, bursts, the dependency), seeded from it; no global random, no wall clock. Before a
scenario's change the traffic of a seed is the same in every scenario.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import schemas as s
from controller.core.stats.cohort import CohortStats, FeatureValue, Observation
from controller.core.stats.distribution import StatsConfig
from controller.dev.simulate import (
    AGE_MAX,
    AGE_MEAN,
    AGE_MIN,
    AGE_SD,
    AMOUNT_MEDIAN,
    AMOUNT_SIGMA,
    BASELINE_VERSION,
    CANARY_VERSION,
    CLASS_THRESHOLD,
    ERROR_MIX,
    FAMILIES,
    HEALTHY,
    INDEPENDENT,
    MODEL,
    NEW_CUSTOMER_SHARE,
    OUTAGE_MIX,
    SKEWED_A,
    SKEWED_B,
    SKEWED_COUNTRIES,
    Behaviour,
    PredictionKind,
    SharedDependency,
    TrafficFamily,
    UnknownScenarioError,
    at,
    training_profile,
)
from schemas import Envelope

EPOCH_S = 1_767_225_600  # 2026-01-01T00:00:00Z, the rollout simulator's EPOCH
HOUR_S = 3600
DAY_S = 86_400

DEPLOYMENT_ID = "fraud-prod"
#: The version in production, and the one a release brings.
VERSION = BASELINE_VERSION
RELEASE_VERSION = CANARY_VERSION

SOURCE_FLEET = "simulator/production-fleet"
SOURCE_OPERATOR = "simulator/operator"

#: How production serves before any change: the rollout simulator's healthy cohort, 1 % errors.
SERVING = dataclasses.replace(HEALTHY, error_rate=0.01)

#: The score distribution of the `drift_js_0.1` step: Jensen-Shannon divergence 0.104 bits from
#: Beta(2, 8), 0.0998 bits on ten bins of equal mass under Beta(2, 8) (what the monitor's
#: quantile bins see); `drift_js()` computes both.
DRIFT_A, DRIFT_B = 2.85, 6.6


# ---------------------------------------------------------------------------------------------
# The day, the families, the configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DailyCycle:
    """The mean request rate over the day: a raised cosine from `night` req/s (at
    `peak_hour + 12`) to `peak` req/s (at `peak_hour`, UTC)."""

    peak: float = 20.0
    night: float = 3.0
    peak_hour: float = 15.0

    def __post_init__(self) -> None:
        if not 0.0 < self.night <= self.peak:
            raise ValueError(f"rates must satisfy 0 < night <= peak, got {self.night}, {self.peak}")

    def rate(self, t: float) -> float:
        """The mean rate (req/s) at epoch time `t`."""
        hour = (t % DAY_S) / HOUR_S
        up = (1.0 + math.cos(2.0 * math.pi * (hour - self.peak_hour) / 24.0)) / 2.0
        return self.night + (self.peak - self.night) * up

    @property
    def minimum_hour(self) -> float:
        """The hour of the day (UTC) of the lowest rate."""
        return (self.peak_hour + 12.0) % 24.0


#: The simulator's families that production traffic takes on (by name).
PRODUCTION_FAMILIES: tuple[str, ...] = ("independent", "errors_in_runs", "bursts", "heavy_tails")


def production_family(name: str) -> TrafficFamily:
    """The traffic family called `name`; any other name fails with the list of known ones."""
    if name not in PRODUCTION_FAMILIES:
        known = ", ".join(PRODUCTION_FAMILIES)
        raise UnknownScenarioError(
            f"traffic family {name!r} is not one production traffic takes; known: {known}"
        )
    return FAMILIES[name]


@dataclass(frozen=True)
class ProductionConfig:
    cycle: DailyCycle = DailyCycle()
    #: Stationary standard deviation and time constant of the random walk of the log-rate.
    wander_sd: float = 0.1
    wander_tau_s: float = 300.0
    family: TrafficFamily = INDEPENDENT
    prediction_kind: PredictionKind = "score"
    #: The clients' timeout: a timed-out request takes this long.
    timeout_ms: float = 1000.0
    deployment_id: str = DEPLOYMENT_ID
    model: str = MODEL
    #: Whether the monitor is configured with the model's training profile.
    with_training_profile: bool = True

    def __post_init__(self) -> None:
        if self.family.name not in PRODUCTION_FAMILIES:
            production_family(self.family.name)  # raises with the known names
        if self.family.diurnal is not None or self.family.shared_outage is not None:
            raise ValueError(f"family {self.family.name!r} has habits production does not take")


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductionScenario:
    """What production does, from when: times in hours after 2026-01-01T00:00Z.

    From `change_h` the model serves as `after` (with `ramp_h`, it gets there linearly over that
    many hours); for `outage_h` from the change nothing is served at all (no request reported);
    the `stuck` features carry one value; from the change `release` is the version serving.
    `expected` names the monitor rule (and key) that should alarm; `truth` says what changed,
    in numbers.
    """

    name: str
    summary: str
    start_h: float
    end_h: float
    change_h: float | None = None
    after: Behaviour = SERVING
    ramp_h: float = 0.0
    outage_h: float = 0.0
    stuck: tuple[tuple[str, FeatureValue], ...] = ()
    release: str | None = None
    expected: str | None = None

    def __post_init__(self) -> None:
        if not self.start_h < self.end_h:
            raise ValueError(f"{self.name}: it must end after it starts")
        if self.change_h is None and (self.release or self.outage_h or self.stuck):
            raise ValueError(f"{self.name}: a release, an outage or a stuck feature needs a time")

    @property
    def days(self) -> float:
        return (self.end_h - self.start_h) / 24.0

    def level(self, since_change_s: float) -> float:
        """How far the change has progressed, in [0, 1]."""
        if self.change_h is None or since_change_s < 0.0:
            return 0.0
        if self.ramp_h <= 0.0:
            return 1.0
        return min(since_change_s / (self.ramp_h * HOUR_S), 1.0)

    def around_change(self, before_s: float, after_s: float) -> ProductionScenario:
        """The same change with traffic from `before_s` before it to `after_s` after it."""
        if self.change_h is None:
            raise ValueError(f"{self.name} has no change")
        return dataclasses.replace(
            self,
            start_h=self.change_h - before_s / HOUR_S,
            end_h=self.change_h + after_s / HOUR_S,
        )


#: Step changes start at 08:00, change at 11:00 (about 16 req/s) and end at 14:00.
STEP_START_H, STEP_CHANGE_H, STEP_END_H = 8.0, 11.0, 14.0

PRODUCTION_SCENARIOS: Mapping[str, ProductionScenario] = {
    sc.name: sc
    for sc in (
        ProductionScenario(
            "diurnal_week",
            "a week of traffic with nothing changing",
            start_h=0.0,
            end_h=7 * 24.0,
        ),
        ProductionScenario(
            "aa",
            "a release that changes nothing: at 10:00 the identical model v42 replaces v41",
            start_h=6.0,
            change_h=10.0,
            end_h=16.0,
            release=RELEASE_VERSION,
        ),
        ProductionScenario(
            "gradual_drift",
            "from 09:00 the scores drift linearly over 6 h to Beta(3.5, 5.5) (JS 0.28 bits), "
            "amounts to x2 and the country mix to another",
            start_h=6.0,
            change_h=9.0,
            end_h=18.0,
            after=dataclasses.replace(
                SERVING,
                score_a=SKEWED_A,
                score_b=SKEWED_B,
                amount_scale=2.0,
                countries=SKEWED_COUNTRIES,
            ),
            ramp_h=6.0,
            expected="prediction_drift/prediction",
        ),
        ProductionScenario(
            "pipeline_break",
            "at 11:00 the amount feature gets stuck at 0.0 (a broken join fills a default)",
            start_h=STEP_START_H,
            change_h=STEP_CHANGE_H,
            end_h=STEP_END_H,
            stuck=(("amount", 0.0),),
            expected="skew/amount",
        ),
        ProductionScenario(
            "latency_creep",
            "from 09:00 every latency grows linearly to x1.5 over 6 h",
            start_h=6.0,
            change_h=9.0,
            end_h=18.0,
            after=dataclasses.replace(SERVING, latency_scale=1.5),
            ramp_h=6.0,
            expected="latency",
        ),
        ProductionScenario(
            "night_outage",
            "at 03:00 of the second day (the daily minimum) nothing is served for 10 minutes",
            start_h=0.0,
            change_h=27.0,
            end_h=30.0,
            outage_h=10.0 / 60.0,
            expected="outage",
        ),
        ProductionScenario(
            "drift_js_0.1",
            f"at 11:00 the scores step from Beta(2, 8) to Beta({DRIFT_A:g}, {DRIFT_B:g}) "
            "(JS 0.10 bits)",
            start_h=STEP_START_H,
            change_h=STEP_CHANGE_H,
            end_h=STEP_END_H,
            after=dataclasses.replace(SERVING, score_a=DRIFT_A, score_b=DRIFT_B),
            expected="prediction_drift/prediction",
        ),
        ProductionScenario(
            "latency_x1.5",
            "at 11:00 every latency steps to x1.5",
            start_h=STEP_START_H,
            change_h=STEP_CHANGE_H,
            end_h=STEP_END_H,
            after=dataclasses.replace(SERVING, latency_scale=1.5),
            expected="latency",
        ),
        ProductionScenario(
            "errors_x3",
            "at 11:00 the error rate steps from 1 % to 3 %",
            start_h=STEP_START_H,
            change_h=STEP_CHANGE_H,
            end_h=STEP_END_H,
            after=dataclasses.replace(SERVING, error_rate=3 * SERVING.error_rate),
            expected="errors",
        ),
        ProductionScenario(
            "missing_10pct",
            "at 11:00 10 % of the amounts go missing (none were)",
            start_h=STEP_START_H,
            change_h=STEP_CHANGE_H,
            end_h=STEP_END_H,
            after=dataclasses.replace(SERVING, amount_missing=0.1),
            expected="data_quality/amount:missing",
        ),
    )
}


def production_scenario(name: str) -> ProductionScenario:
    """The scenario called `name`; an unknown name fails with the list of known ones."""
    try:
        return PRODUCTION_SCENARIOS[name]
    except KeyError:
        known = ", ".join(PRODUCTION_SCENARIOS)
        raise UnknownScenarioError(
            f"unknown production scenario {name!r}; known: {known}"
        ) from None


# ---------------------------------------------------------------------------------------------
# The traffic
# ---------------------------------------------------------------------------------------------


def _cumulative(mix: Sequence[tuple[str, float]]) -> tuple[list[str], list[float]]:
    total = math.fsum(share for _, share in mix)
    names = [name for name, _ in mix]
    bounds = list(itertools.accumulate(share / total for _, share in mix))
    bounds[-1] = 1.0
    return names, bounds


def _pick(x: float, names: list[str], bounds: list[float]) -> str:
    for name, bound in zip(names, bounds, strict=True):
        if x < bound:
            return name
    return names[-1]


class ProductionTraffic:
    """One model's production traffic under a scenario, second by second (see the module).

    `days` overrides the scenario's length (from its start). Times are epoch seconds; the
    traffic of the second [t - 1, t) comes out at t, the time its batch is published and the
    time to judge it. The traffic runs once: through `rows`, `seconds` or `envelopes`.
    """

    def __init__(
        self,
        scenario: ProductionScenario,
        *,
        seed: int,
        config: ProductionConfig = ProductionConfig(),
        days: float | None = None,
    ) -> None:
        self.scenario = scenario
        self.config = config
        self.seed = seed
        self.start = EPOCH_S + round(scenario.start_h * HOUR_S)
        length = (scenario.end_h - scenario.start_h) * HOUR_S if days is None else days * DAY_S
        if length < 1.0:
            raise ValueError(f"a production log lasts at least a second, not {length:g} s")
        self.end = self.start + round(length)
        self.change_at: int | None = (
            None if scenario.change_h is None else EPOCH_S + round(scenario.change_h * HOUR_S)
        )
        self._arrivals = random.Random(f"{seed}/production/arrivals")
        self._serving = random.Random(f"{seed}/production/serving")
        self._wander = random.Random(f"{seed}/production/rate")
        family = config.family
        self._dependency = (
            None
            if family.error_runs is None
            else SharedDependency(family.error_runs, random.Random(f"{seed}/production/dependency"))
        )
        self._bursts = family.bursts
        self._burst_rng = random.Random(f"{seed}/production/bursts")
        self._bursting = self._bursts is not None and (
            self._burst_rng.random() < self._bursts.burst_share
        )
        decay = math.exp(-1.0 / config.wander_tau_s) if config.wander_tau_s > 0 else 0.0
        self._decay = decay
        self._step_sd = config.wander_sd * math.sqrt(1.0 - decay * decay)
        self._log_rate = 0.0
        self._shapes: dict[tuple[int, bool], tuple[Behaviour, _Shape]] = {}
        self._requests = 0
        self._t = self.start
        #: the rate (req/s) the last second's arrivals were drawn at
        self.last_rate = 0.0

    # ---- what holds when ------------------------------------------------------------

    def since_change(self, t: float) -> float | None:
        return None if self.change_at is None else t - self.change_at

    def behaviour_at(self, t: float) -> Behaviour:
        """How requests arriving at `t` are served (before the family's heavier tail)."""
        since = self.since_change(t)
        if since is None or since < 0:
            return SERVING
        return SERVING.blend(self.scenario.after, self.scenario.level(since))

    def in_outage(self, t: float) -> bool:
        since = self.since_change(t)
        return since is not None and 0.0 <= since < self.scenario.outage_h * HOUR_S

    def version_at(self, t: float) -> str:
        """The version serving at `t` (a release serves from the change)."""
        since = self.since_change(t)
        release = self.scenario.release
        return release if release and since is not None and since >= 0 else VERSION

    def configurations(self) -> list[tuple[int, s.MonitorConfigured]]:
        """The monitor's configuration events and their times: at the start (the model, its
        version and training profile), and at a release (the new version)."""
        cfg = self.config
        profile = training_profile(cfg.prediction_kind) if cfg.with_training_profile else None
        events = [
            (
                self.start,
                s.MonitorConfigured(
                    model=cfg.model,
                    version=VERSION,
                    training_profile=profile,
                    by="simulator",
                    reason=f"production scenario {self.scenario.name}, seed {self.seed}",
                ),
            )
        ]
        release = self.scenario.release
        if release and self.change_at is not None and self.change_at < self.end:
            events.append(
                (
                    self.change_at,
                    s.MonitorConfigured(
                        model=cfg.model,
                        version=release,
                        by="simulator",
                        reason=f"release {release}",
                    ),
                )
            )
        return events

    # ---- the rate -------------------------------------------------------------------

    def _rate(self, t: int) -> float:
        """This second's rate; then the walk and the burst state step (every second, served
        or not, so the streams stay aligned)."""
        rate = self.config.cycle.rate(t) * math.exp(self._log_rate)
        bursts = self._bursts
        if bursts is not None:
            rate *= bursts.quiet_factor * (bursts.multiplier if self._bursting else 1.0)
            leave = 1.0 / (bursts.burst_s if self._bursting else bursts.quiet_s)
            if self._burst_rng.random() < leave:
                self._bursting = not self._bursting
        if self._step_sd > 0.0:
            self._log_rate = self._log_rate * self._decay + self._wander.gauss(0.0, self._step_sd)
        return rate

    # ---- serving --------------------------------------------------------------------

    def _shape(self, b: Behaviour, stuck: bool) -> _Shape:
        """`b` prepared for serving: with the family's heavier tail (its parameters keep their
        ratio to a healthy cohort's) and, with `stuck`, the scenario's stuck features."""
        key = (id(b), stuck)
        found = self._shapes.get(key)
        if found is not None and found[0] is b:
            return found[1]
        shaped = b
        tails = self.config.family.heavy_tails
        if tails is not None:
            shaped = dataclasses.replace(
                b,
                tail_share=b.tail_share * tails.tail_share / HEALTHY.tail_share,
                tail_median_ms=b.tail_median_ms * tails.tail_median_ms / HEALTHY.tail_median_ms,
                tail_sigma=b.tail_sigma * tails.tail_sigma / HEALTHY.tail_sigma,
            )
        timeouts = tails is not None and tails.timeouts
        shape = _Shape(shaped, self.scenario.stuck if stuck else (), timeouts)
        if len(self._shapes) > 4:  # a ramp makes a new behaviour every second
            self._shapes.clear()
        self._shapes[key] = (b, shape)
        return shape

    def serve(self, rng: random.Random, shape: _Shape, event_time: float) -> Observation:
        """One request arriving at `event_time`, served as `shape` says."""
        b = shape.b
        gauss, uniform = rng.gauss, rng.random
        amount: float | None = round(
            AMOUNT_MEDIAN * math.exp(AMOUNT_SIGMA * gauss(0.0, 1.0)) * b.amount_scale, 2
        )
        if b.amount_missing and uniform() < b.amount_missing:
            amount = None
        age: int | None = min(max(int(gauss(AGE_MEAN, AGE_SD)), AGE_MIN), AGE_MAX)
        if uniform() < b.age_missing:
            age = None
        features: dict[str, FeatureValue] = {
            "amount": amount,
            "country": _pick(uniform(), *shape.countries),
            "is_new": uniform() < NEW_CUSTOMER_SHARE,
            "age": age,
        }
        if shape.stuck:
            features.update(shape.stuck)
        if uniform() < b.tail_share:
            body = b.tail_median_ms * math.exp(b.tail_sigma * gauss(0.0, 1.0))
        else:
            body = b.latency_median_ms * math.exp(b.latency_sigma * gauss(0.0, 1.0))
        body *= b.latency_scale
        error: str | None = None
        if b.failure_share and uniform() < b.failure_share:
            error = _pick(uniform(), *shape.outage_mix)
        elif (
            self._dependency.fails(b.error_rate)
            if self._dependency is not None
            else uniform() < b.error_rate
        ):
            error = _pick(uniform(), *shape.error_mix)
        timeouts, timeout_ms = shape.timeouts, self.config.timeout_ms
        if timeouts and error is None and body > timeout_ms:
            error = "timeout"  # the client gives up
        if error is None:
            latency = body
        elif error == "timeout":
            latency = timeout_ms if timeouts else timeout_ms * (1.0 + 0.02 * uniform())
        elif error == "internal":
            latency = body * 0.3
        else:
            latency = 1.0 + 4.0 * uniform()
        prediction: Any = None
        if error is None:
            score = rng.betavariate(b.score_a, b.score_b)
            kind = self.config.prediction_kind
            if kind == "class":
                prediction = "fraud" if score >= CLASS_THRESHOLD else "legit"
            elif kind == "probabilities":
                p = round(score, 4)
                prediction = {"fraud": p, "legit": round(1.0 - p, 4)}
            else:
                prediction = round(score, 4)
        return Observation(
            error is None, round(latency, 1), event_time, error, prediction, features
        )

    def sample(self, t: float, n: int, *, seed: int = 0) -> list[Observation]:
        """`n` requests served as at `t` (after the change from its start), from streams of
        their own: the truth a benchmark computes information limits from. The traffic itself
        is not advanced."""
        other = ProductionTraffic(self.scenario, seed=seed, config=self.config)
        other.change_at = self.change_at
        since = self.since_change(t)
        shape = other._shape(self.behaviour_at(t), since is not None and since >= 0)
        return [other.serve(other._serving, shape, float(t)) for _ in range(n)]

    # ---- seconds --------------------------------------------------------------------

    def _second(self) -> tuple[int, list[Observation]]:
        t = self._t
        self._t += 1
        rate = self.last_rate = self._rate(t)
        if self.in_outage(t) or rate <= 0.0:
            return t + 1, []
        since = self.since_change(t)
        shape = self._shape(self.behaviour_at(t), since is not None and since >= 0)
        rng, arrivals = self._serving, self._arrivals
        rows = []
        offset = arrivals.expovariate(rate)
        while offset < 1.0:
            # event times to the millisecond, as the rollout simulator's
            event_time = (1000 * t + int(offset * 1000.0)) / 1000.0
            rows.append(self.serve(rng, shape, event_time))
            offset += arrivals.expovariate(rate)
        return t + 1, rows

    def rows(self) -> Iterator[tuple[int, list[Observation]]]:
        """Each second's requests, in time order: (the second's end, its requests)."""
        while self._t < self.end:
            yield self._second()

    def seconds(self, config: StatsConfig | None = None) -> Iterator[tuple[int, CohortStats]]:
        """Each second's requests folded (the fast path): (the second's end, its stats); a
        second without requests gives empty stats (the monitor is judged all the same)."""
        config = config or StatsConfig()
        for t, rows in self.rows():
            stats = CohortStats(config)
            stats.observe_many(rows)
            yield t, stats

    def envelopes(self) -> Iterator[Envelope[Any]]:
        """The log: the monitor's configuration, then one `PredictionBatch` per second with
        requests (at the second's end), each configuration before the first batch after it."""
        cfg = self.config
        pending = self.configurations()
        count = 0

        def envelope(data: s.Payload, when: float, source: str) -> Envelope[Any]:
            nonlocal count
            count += 1
            return s.make_event(
                data,
                source=source,
                time=at(round((when - EPOCH_S) * 1000)),
                id=f"{cfg.deployment_id}/{count}",
            )

        for t, rows in self.rows():
            while pending and pending[0][0] < t:
                when, configured = pending.pop(0)
                yield envelope(configured, when, SOURCE_OPERATOR)
            if not rows:
                continue
            version = self.version_at(t - 1)
            predictions = []
            for row in rows:
                self._requests += 1
                predictions.append(
                    s.Prediction(
                        version=version,
                        cohort=s.Cohort.BASELINE,
                        request_id=f"r{self._requests:010d}",
                        event_time=at(round((row.event_time - EPOCH_S) * 1000)),
                        latency_ms=row.latency_ms,
                        ok=row.ok,
                        error_type=row.error_type,
                        prediction=row.prediction,
                        features=dict(row.features or {}),
                    )
                )
            for i in range(0, len(predictions), s.MAX_BATCH):
                batch = s.PredictionBatch(
                    deployment_id=cfg.deployment_id,
                    model=cfg.model,
                    predictions=tuple(predictions[i : i + s.MAX_BATCH]),
                )
                yield envelope(batch, t, SOURCE_FLEET)
        for when, configured in pending:
            yield envelope(configured, when, SOURCE_OPERATOR)


class _Shape:
    """A behaviour with its draws prepared (cumulative shares) and the stuck features."""

    __slots__ = ("b", "countries", "error_mix", "outage_mix", "stuck", "timeouts")

    def __init__(
        self, b: Behaviour, stuck: Sequence[tuple[str, FeatureValue]], timeouts: bool
    ) -> None:
        self.b = b
        #: a request slower than the client's timeout fails as a timeout (heavy tails)
        self.timeouts = timeouts
        self.countries = _cumulative(b.countries)
        self.error_mix = _cumulative(ERROR_MIX)
        self.outage_mix = _cumulative(OUTAGE_MIX)
        self.stuck = dict(stuck)


# ---------------------------------------------------------------------------------------------
# The truth, in numbers
# ---------------------------------------------------------------------------------------------


def _beta_pdf(x: float, a: float, b: float) -> float:
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return math.exp((a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x) - log_beta)


def drift_js(
    a0: float = HEALTHY.score_a,
    b0: float = HEALTHY.score_b,
    a1: float = DRIFT_A,
    b1: float = DRIFT_B,
    bins: int = 10,
    points: int = 20_000,
) -> tuple[float, float]:
    """Jensen-Shannon divergence in bits of Beta(a1, b1) from Beta(a0, b0): of the densities,
    and on `bins` bins of equal mass under Beta(a0, b0) (midpoint rule on `points` points)."""
    step = 1.0 / points
    total = 0.0
    mass0 = [0.0] * bins
    mass1 = [0.0] * bins
    cum0 = 0.0
    for i in range(points):
        x = (i + 0.5) * step
        p, q = _beta_pdf(x, a0, b0), _beta_pdf(x, a1, b1)
        m = (p + q) / 2.0
        if p > 0.0:
            total += p * math.log2(p / m)
        if q > 0.0:
            total += q * math.log2(q / m)
        k = min(int(cum0 * bins), bins - 1)  # the bin of x: the mass under Beta(a0, b0) below it
        mass0[k] += p * step
        mass1[k] += q * step
        cum0 += p * step
    continuous = total * step / 2.0
    binned = 0.0
    for p, q in zip(mass0, mass1, strict=True):
        m = (p + q) / 2.0
        if p > 0.0:
            binned += p * math.log2(p / m)
        if q > 0.0:
            binned += q * math.log2(q / m)
    return continuous, binned / 2.0


__all__ = [
    "DAY_S",
    "DEPLOYMENT_ID",
    "DRIFT_A",
    "DRIFT_B",
    "EPOCH_S",
    "HOUR_S",
    "PRODUCTION_FAMILIES",
    "PRODUCTION_SCENARIOS",
    "RELEASE_VERSION",
    "SERVING",
    "VERSION",
    "DailyCycle",
    "ProductionConfig",
    "ProductionScenario",
    "ProductionTraffic",
    "drift_js",
    "production_family",
    "production_scenario",
]
