"""Realistic rollout logs: scenarios, a simulated serving fleet, and the closed loop.

The layers, each usable alone:

- `Scenario`: what the canary does wrong (nothing; slower; failing; silent; skewed), from when.
- `ServingFleet` (the open loop): requests arrive as a Poisson process whose rate wanders slowly
  (a diurnal trend and a random walk of the log-rate); a router splits them between the cohorts
  by the traffic share it was last told; each request gets a long-tailed latency (a lognormal
  body mixed with a slow lognormal tail), maybe an error (timeout, internal, bad_request), a
  fraud score (beta-distributed; or a class, or class probabilities) and its features. A
  `Timeline` turns the fleet into records in the order they reach the topics: canary
  predictions as single records, baseline predictions batched every second (as a high-volume
  service using the SDK reporter would). `generate(...)` is a log at a fixed traffic share.
- `TrafficFamily` (`FleetConfig.family`, by name in `FAMILIES`): production's habits that
  independent requests lack, apart from what either cohort does: errors in runs of a
  dependency both cohorts share, Markov-modulated arrival bursts, a heavier slow tail with
  client timeouts, a shared dependency's outages, a strong rate cycle. The default,
  "independent", is the fleet described above, and draws exactly what it always drew.
- `ClosedLoop` / `simulate(...)`: a controller runs in the loop. Its commands reach a simulated
  router that applies them after a short delay and acknowledges them (TrafficApplied); a
  simulated approver grants the approvals the plan asks for; the log ends shortly after a
  terminal command, at the deadline, or at a maximum duration.

Everything is a function of the seed: `random.Random` instances seeded from it (one stream per
purpose, so a change in one part does not reshuffle the others), no global random, no wall
clock. Times are integer milliseconds since `EPOCH` (2026-01-01T00:00:00Z); a run starts at a
seed-derived time of that day, so the diurnal phase differs between seeds.

`rate` is the canary's request rate in the plan's first traffic step at the start of the run:
the fleet's total rate is `rate * 100 / first_step_percent`. With a first step of 20 % and the
default 20 req/s, the canary serves about 20 req/s and the baseline about 80 req/s during the
first step, where faults start.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import schemas as s
from controller.errors import RolloutError
from schemas import Envelope

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
EPOCH_MS = 1_767_225_600_000  # EPOCH in milliseconds since 1970
DAY_MS = 86_400_000
SLOT_MS = 1000

MODEL = "fraud-scorer"
BASELINE_VERSION = "v41"
CANARY_VERSION = "v42"

SOURCE_FLEET = "simulator/serving-fleet"
SOURCE_ROUTER = "simulator/router"
SOURCE_DEPLOYER = "simulator/deployer"
SOURCE_APPROVER = "simulator/approver"

Cohort = Literal["baseline", "canary"]
COHORTS: tuple[Cohort, Cohort] = ("baseline", "canary")
PredictionKind = Literal["score", "class", "probabilities"]


def at(ms: int) -> datetime:
    """The datetime of a simulation time (integer milliseconds since EPOCH), exactly."""
    return EPOCH + timedelta(milliseconds=ms)


def epoch_s(ms: int) -> float:
    """The epoch time in seconds of a simulation time: equal to `at(ms).timestamp()`."""
    return (EPOCH_MS + ms) / 1000


def ms_of(time: datetime) -> int:
    """The simulation time of a datetime, rounded to the millisecond."""
    return round((time - EPOCH) / timedelta(milliseconds=1))


# ---------------------------------------------------------------------------------------------
# How a cohort serves
# ---------------------------------------------------------------------------------------------

#: Customer countries and their shares in training (and in healthy serving).
COUNTRIES: tuple[tuple[str, float], ...] = (
    ("DE", 0.35),
    ("FR", 0.25),
    ("ES", 0.15),
    ("IT", 0.15),
    ("NL", 0.10),
)
#: Error types of ordinary failures and their shares.
ERROR_MIX: tuple[tuple[str, float], ...] = (
    ("timeout", 0.3),
    ("internal", 0.5),
    ("bad_request", 0.2),
)
#: Error types of a partial outage (an instance down or overloaded).
OUTAGE_MIX: tuple[tuple[str, float], ...] = (("timeout", 0.6), ("internal", 0.4))

AMOUNT_MEDIAN = 40.0
AMOUNT_SIGMA = 1.0
AGE_MEAN = 40.0
AGE_SD = 12.0
AGE_MIN = 18
AGE_MAX = 95
NEW_CUSTOMER_SHARE = 0.1
CLASS_THRESHOLD = 0.5


@dataclass(frozen=True)
class Behaviour:
    """How one cohort serves: latency, errors, predictions and the features it sees.

    Latency is a mixture: with probability `1 - tail_share` a lognormal body (median
    `latency_median_ms`, shape `latency_sigma`), else a slow lognormal tail; all of it times
    `latency_scale`. `error_rate` of requests fail with the types of `ERROR_MIX`; a further
    `failure_share` fail as in a partial outage (`OUTAGE_MIX`), and a further `timeout_rate`
    time out (the client gives up at the fleet's `timeout_ms`; drawn from a stream of its own,
    and only when it is set, so that the other draws stay as they were). A cohort that is not
    `answering` serves nothing and reports nothing.
    """

    answering: bool = True
    latency_median_ms: float = 45.0
    latency_sigma: float = 0.3
    tail_share: float = 0.03
    tail_median_ms: float = 180.0
    tail_sigma: float = 0.45
    latency_scale: float = 1.0
    error_rate: float = 0.007
    failure_share: float = 0.0
    timeout_rate: float = 0.0
    score_a: float = 2.0
    score_b: float = 8.0
    amount_scale: float = 1.0
    countries: tuple[tuple[str, float], ...] = COUNTRIES
    amount_missing: float = 0.0
    age_missing: float = 0.02

    def blend(self, other: Behaviour, level: float) -> Behaviour:
        """`level` of the way from self to other (0: self, 1: other); numbers mix linearly."""
        if level <= 0.0:
            return self
        if level >= 1.0:
            return other
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine == theirs:
                continue
            if f.name == "answering":
                changes[f.name] = theirs
            elif f.name == "countries":
                shares = dict(theirs)
                changes[f.name] = tuple(
                    (name, share + (shares.get(name, 0.0) - share) * level) for name, share in mine
                )
            else:
                changes[f.name] = mine + (theirs - mine) * level
        return dataclasses.replace(self, **changes)


HEALTHY = Behaviour()


@dataclass(frozen=True)
class Scenario:
    """A canary's fault: the behaviour it reaches and how fast.

    Before the onset the canary serves like the baseline; from the onset it serves as `canary`
    (with `ramp_s`, it gets there linearly over that many seconds). `expected` is what a good
    controller should do; `hard` marks the faults with a detection target in the benchmark.
    """

    name: str
    summary: str
    canary: Behaviour
    expected: Literal["promote", "rollback"] = "rollback"
    hard: bool = False
    ramp_s: float = 0.0

    def level(self, since_onset_s: float) -> float:
        """How far the fault has progressed, in [0, 1]."""
        if since_onset_s < 0.0:
            return 0.0
        if self.ramp_s <= 0.0:
            return 1.0
        return min(since_onset_s / self.ramp_s, 1.0)


#: Beta parameters of the skewed canary score: Jensen-Shannon divergence 0.28 bits from the
#: baseline's Beta(2, 8) (0.25 on ten equal-mass bins).
SKEWED_A, SKEWED_B = 3.5, 5.5
SKEWED_COUNTRIES: tuple[tuple[str, float], ...] = (
    ("DE", 0.15),
    ("FR", 0.20),
    ("ES", 0.25),
    ("IT", 0.25),
    ("NL", 0.15),
)

#: The share of a healthy cohort's requests that time out: the timeouts of its error mix.
HEALTHY_TIMEOUT_RATE = HEALTHY.error_rate * dict(ERROR_MIX)["timeout"]

SCENARIOS: Mapping[str, Scenario] = {
    sc.name: sc
    for sc in (
        Scenario("healthy", "the canary serves exactly like the baseline", HEALTHY, "promote"),
        Scenario(
            "latency_p99_x1_5",
            "every canary latency x1.5 (p99 x1.5)",
            Behaviour(latency_scale=1.5),
        ),
        Scenario(
            "latency_p99_x2",
            "every canary latency x2 (p99 x2)",
            Behaviour(latency_scale=2.0),
            hard=True,
        ),
        Scenario(
            "tail_only_x3",
            "the canary's slow requests three times slower (the 3 % tail: 540 ms vs 180 ms), "
            "the median unchanged",
            Behaviour(tail_median_ms=HEALTHY.tail_median_ms * 3),
            hard=True,
        ),
        Scenario(
            "timeouts_x10",
            "ten times as many canary requests time out (2.1 % vs 0.21 %)",
            Behaviour(timeout_rate=HEALTHY_TIMEOUT_RATE * 9),
            hard=True,
        ),
        Scenario(
            "error_burst_x5",
            "canary error rate x5 (3.5 % vs 0.7 %)",
            Behaviour(error_rate=HEALTHY.error_rate * 5),
            hard=True,
        ),
        Scenario(
            "total_outage",
            "the canary stops answering: no canary events at all",
            Behaviour(answering=False),
            hard=True,
        ),
        Scenario(
            "partial_outage",
            "25 % of canary requests time out or fail (one instance of four down)",
            Behaviour(failure_share=0.25),
        ),
        Scenario(
            "prediction_skew",
            "canary scores shifted: Beta(3.5, 5.5) vs Beta(2, 8), JS 0.28 bits",
            Behaviour(score_a=SKEWED_A, score_b=SKEWED_B),
            hard=True,
        ),
        Scenario(
            "feature_skew",
            "canary serving features drift from the training profile: amount x2.5, country mix",
            Behaviour(amount_scale=2.5, countries=SKEWED_COUNTRIES),
        ),
        Scenario(
            "missing_values",
            "canary features missing: amount 30 %, age 40 % (vs 0 % and 2 %)",
            Behaviour(amount_missing=0.3, age_missing=0.4),
        ),
        Scenario(
            "slow_drift",
            "canary scores and amounts drift over 10 minutes to the skewed levels",
            Behaviour(amount_scale=2.0, score_a=SKEWED_A, score_b=SKEWED_B),
            ramp_s=600.0,
        ),
    )
}


def scenario(name: str) -> Scenario:
    """The scenario called `name`; an unknown name fails with the list of known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        known = ", ".join(SCENARIOS)
        raise UnknownScenarioError(f"unknown scenario {name!r}; known scenarios: {known}") from None


class UnknownScenarioError(RolloutError, LookupError):
    """A scenario or plan name that is not defined; the message lists the known ones."""


# ---------------------------------------------------------------------------------------------
# Plans and the deployment request
# ---------------------------------------------------------------------------------------------

PLANS: Mapping[str, s.RolloutPlan] = {
    # A common production shape: a fifth of traffic, then half, then all, with bake times and
    # sample floors at each step; an hour's deadline.
    "standard": s.RolloutPlan(
        steps=(
            s.TrafficStep(canary_percent=20, min_bake_s=300, min_samples=2000),
            s.TrafficStep(canary_percent=50, min_bake_s=300, min_samples=5000),
            s.TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
        ),
        deadline_s=3600.0,
    ),
    # The same shape with shorter bakes: what the detection benchmark runs many times.
    "short": s.RolloutPlan(
        steps=(
            s.TrafficStep(canary_percent=20, min_bake_s=90, min_samples=1000),
            s.TrafficStep(canary_percent=50, min_bake_s=60, min_samples=1000),
            s.TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
        ),
        deadline_s=1800.0,
    ),
    # A minute from start to finish when healthy: for demos and tests.
    "quick": s.RolloutPlan(
        steps=(
            s.TrafficStep(canary_percent=20, min_bake_s=30, min_samples=400),
            s.TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
        ),
        deadline_s=600.0,
    ),
    # People in the loop: an approval to start and another before half of the traffic.
    "gated": s.RolloutPlan(
        steps=(
            s.TrafficStep(canary_percent=20, min_bake_s=120, min_samples=1000),
            s.TrafficStep(
                canary_percent=50, min_bake_s=120, min_samples=2000, requires_approval=True
            ),
            s.TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
        ),
        approval_to_start=True,
        deadline_s=3600.0,
    ),
}


def plan(name: str) -> s.RolloutPlan:
    try:
        return PLANS[name]
    except KeyError:
        known = ", ".join(PLANS)
        raise UnknownScenarioError(f"unknown plan {name!r}; known plans: {known}") from None


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _beta_cdf(x: float, a: int, b: int) -> float:
    """The Beta(a, b) distribution function for integer a, b (a binomial tail)."""
    n = a + b - 1
    return sum(math.comb(n, j) * x**j * (1.0 - x) ** (n - j) for j in range(a, n + 1))


def _proportions(cdf: Callable[[float], float], edges: Sequence[float]) -> tuple[float, ...]:
    points = [0.0, *(cdf(e) for e in edges), 1.0]
    shares = [max(b - a, 0.0) for a, b in itertools.pairwise(points)]
    total = sum(shares)
    return tuple(round(x / total, 6) for x in shares)


def _renormalized(shares: tuple[float, ...]) -> tuple[float, ...]:
    # rounding may leave the sum a few millionths off 1; put the difference in the largest bin
    biggest = max(range(len(shares)), key=shares.__getitem__)
    fixed = list(shares)
    fixed[biggest] = round(fixed[biggest] + 1.0 - sum(shares), 6)
    return tuple(fixed)


def training_profile(kind: PredictionKind = "score") -> s.TrainingProfile:
    """The distributions the model was trained on: those of a healthy cohort, exactly."""
    amount_edges = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
    amount = _proportions(
        lambda x: _normal_cdf(math.log(x / AMOUNT_MEDIAN) / AMOUNT_SIGMA), amount_edges
    )
    age_edges = (25.0, 35.0, 45.0, 55.0, 65.0)
    age = _proportions(lambda x: _normal_cdf((x - AGE_MEAN) / AGE_SD), age_edges)
    score_edges = tuple(round(0.05 * i, 2) for i in range(1, 14))
    score = _proportions(lambda x: _beta_cdf(x, 2, 8), score_edges)
    if kind == "score":
        prediction = s.FeatureProfile(
            name="prediction",
            kind="numeric",
            bin_edges=score_edges,
            proportions=_renormalized(score),
            domain_min=0.0,
            domain_max=1.0,
        )
    else:
        fraud = round(1.0 - _beta_cdf(CLASS_THRESHOLD, 2, 8), 6)
        prediction = s.FeatureProfile(
            name="prediction",
            kind="categorical",
            categories={"fraud": fraud, "legit": round(1.0 - fraud, 6)},
        )
    return s.TrainingProfile(
        dataset="fraud-train-2025-12",
        features=(
            s.FeatureProfile(
                name="amount",
                kind="numeric",
                bin_edges=amount_edges,
                proportions=_renormalized(amount),
                domain_min=0.0,
            ),
            s.FeatureProfile(
                name="country",
                kind="categorical",
                categories=dict(COUNTRIES),
                allowed=tuple(name for name, _ in COUNTRIES),
            ),
            s.FeatureProfile(
                name="is_new",
                kind="categorical",
                categories={"false": 1.0 - NEW_CUSTOMER_SHARE, "true": NEW_CUSTOMER_SHARE},
            ),
            s.FeatureProfile(
                name="age",
                kind="numeric",
                bin_edges=age_edges,
                proportions=_renormalized(age),
                missing_rate=HEALTHY.age_missing,
                domain_min=float(AGE_MIN),
                domain_max=120.0,
            ),
        ),
        prediction=prediction,
    )


def deployment_id(scenario_name: str, seed: int) -> str:
    return f"sim-{scenario_name.replace('_', '-')}-{seed}"


def make_deployment(
    scenario_name: str,
    seed: int,
    rollout_plan: s.RolloutPlan | None = None,
    *,
    kind: PredictionKind = "score",
) -> s.DeploymentRequested:
    return s.DeploymentRequested(
        deployment_id=deployment_id(scenario_name, seed),
        model=MODEL,
        candidate_version=CANARY_VERSION,
        baseline_version=BASELINE_VERSION,
        plan=rollout_plan or PLANS["standard"],
        training_profile=training_profile(kind),
        requested_by="simulator",
    )


def start_ms(seed: int) -> int:
    """When a run starts: a seed-derived time of day on EPOCH's day, to the second."""
    return random.Random(f"{seed}/start").randrange(DAY_MS // 1000) * 1000


# ---------------------------------------------------------------------------------------------
# Traffic families: production's habits that independent requests do not have
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRuns:
    """Errors come in runs: a dependency shared by both cohorts is good or bad (a two-state
    Markov chain stepped once per request, in arrival order, whichever cohort the router sends
    it to). A bad spell lasts `run_length` requests on average (geometric); in it a request
    fails with `bad_error_rate`, in the good state it does not. The share of bad requests is
    calibrated so the long-run error rate is the healthy cohort's `error_rate`; a cohort with
    another rate (a canary's fault) fails `error_rate / healthy` times as often in the bad
    state (at most always) and the rest of its excess independently in the good state, so its
    long-run rate is its own `error_rate` too. With `bad_error_rate` 1 the runs of consecutive
    errors in the dependency's request stream are `run_length` long on average."""

    run_length: float = 20.0
    bad_error_rate: float = 1.0

    def __post_init__(self) -> None:
        if not self.run_length >= 1.0:
            raise ValueError(f"run_length must be at least 1 request, got {self.run_length}")
        if not 0.0 < self.bad_error_rate <= 1.0:
            raise ValueError(f"bad_error_rate must be in (0, 1], got {self.bad_error_rate}")


@dataclass(frozen=True)
class Bursts:
    """Markov-modulated arrivals: a quiet and a burst state (the whole fleet's, both cohorts),
    with mean dwell times `quiet_s` and `burst_s` (geometric over one-second slots); the burst
    rate is `multiplier` times the quiet one, and the quiet rate is set so the long-run mean
    rate is the fleet's."""

    multiplier: float = 4.0
    quiet_s: float = 12.0
    burst_s: float = 4.0

    def __post_init__(self) -> None:
        if not self.multiplier >= 1.0:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")
        if not (self.quiet_s >= 1.0 and self.burst_s >= 1.0):
            raise ValueError("dwell times must be at least one second (one slot)")

    @property
    def burst_share(self) -> float:
        """The long-run share of time in the burst state."""
        return self.burst_s / (self.burst_s + self.quiet_s)

    @property
    def quiet_factor(self) -> float:
        """The quiet rate as a share of the mean rate."""
        return 1.0 / (1.0 + self.burst_share * (self.multiplier - 1.0))


@dataclass(frozen=True)
class HeavyTails:
    """A heavier slow mode and client timeouts. The slow tail's share and median are these
    values for a healthy cohort (a behaviour that changes them keeps its ratio to healthy);
    with `timeouts`, a request slower than the fleet's `timeout_ms` fails as a timeout at the
    timeout (latency exactly `timeout_ms`), and so does every other timeout error."""

    tail_share: float = 0.08
    tail_median_ms: float = 400.0
    tail_sigma: float = 0.6
    timeouts: bool = True


@dataclass(frozen=True)
class SharedOutage:
    """An outage of a dependency both cohorts share: windows `duration_s` long (uniform) with
    exponential gaps of mean `every_s` between them, from the run's start. In a window a
    request of either cohort fails with `failure_share` (OUTAGE_MIX: timeouts and internal
    errors), and the others are `latency_scale` times slower."""

    every_s: float = 120.0
    duration_s: tuple[float, float] = (5.0, 20.0)
    failure_share: float = 0.8
    latency_scale: float = 4.0

    def __post_init__(self) -> None:
        low, high = self.duration_s
        if not (self.every_s > 0.0 and 0.0 < low <= high):
            raise ValueError(f"bad outage timing: every {self.every_s} s, {self.duration_s} s")


@dataclass(frozen=True)
class Diurnal:
    """A strong cycle of the request rate: `1 + amplitude * cos(...)` over `period_s`, from a
    seed-drawn phase. A day's cycle moves the rate by under 2 % in a three-minute rollout,
    so the family compresses the day (default: 20 minutes) to see the rate change a lot within
    one; the configured rate is then the cycle's mean, not the rate at the start."""

    amplitude: float = 0.8
    period_s: float = 1200.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.amplitude < 1.0 and self.period_s > 0.0):
            raise ValueError(f"bad cycle: amplitude {self.amplitude}, period {self.period_s} s")


@dataclass(frozen=True)
class TrafficFamily:
    """How traffic behaves apart from what either cohort does: a name and its habits (None:
    the independent default for that part). The independent family draws nothing beyond
    today's streams, so its logs stay the same for the same seed; each habit draws from its
    own seeded stream."""

    name: str
    summary: str
    error_runs: ErrorRuns | None = None
    bursts: Bursts | None = None
    heavy_tails: HeavyTails | None = None
    shared_outage: SharedOutage | None = None
    diurnal: Diurnal | None = None

    def with_run_length(self, run_length: float) -> TrafficFamily:
        """This family with error runs `run_length` requests long on average."""
        if self.error_runs is None:
            raise ValueError(f"family {self.name!r} has no error runs to set a length for")
        runs = dataclasses.replace(self.error_runs, run_length=run_length)
        return dataclasses.replace(self, error_runs=runs)


INDEPENDENT = TrafficFamily(
    "independent",
    "Poisson arrivals with a slowly wandering rate, independent errors, a light slow tail",
)

FAMILIES: Mapping[str, TrafficFamily] = {
    f.name: f
    for f in (
        INDEPENDENT,
        TrafficFamily(
            "errors_in_runs",
            "errors in runs of a dependency both cohorts share, at the same long-run rate",
            error_runs=ErrorRuns(),
        ),
        TrafficFamily(
            "bursts",
            "Markov-modulated arrival bursts: x4 for 4 s on average, quiet 12 s, same mean rate",
            bursts=Bursts(),
        ),
        TrafficFamily(
            "heavy_tails",
            "a heavier slow mode (8 % around 400 ms) and client timeouts at 1 s",
            heavy_tails=HeavyTails(),
        ),
        TrafficFamily(
            "shared_outage",
            "a shared dependency's outages, 5-20 s every 2 minutes on average: both cohorts "
            "fail 80 % of requests and the rest are x4 slower",
            shared_outage=SharedOutage(),
        ),
        TrafficFamily(
            "diurnal",
            "a strong cycle of the rate (amplitude 0.8, 20-minute compressed day, random phase)",
            diurnal=Diurnal(),
        ),
    )
}


def traffic_family(name: str) -> TrafficFamily:
    """The traffic family called `name`; an unknown name fails with the list of known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(FAMILIES)
        raise UnknownScenarioError(f"unknown traffic family {name!r}; known: {known}") from None


class SharedDependency:
    """The shared dependency of `ErrorRuns`: its state, stepped once per request."""

    def __init__(self, runs: ErrorRuns, rng: random.Random) -> None:
        self.runs = runs
        self.rng = rng
        self.bad_share = HEALTHY.error_rate / runs.bad_error_rate
        self.leave = 1.0 / runs.run_length
        self.enter = self.bad_share / (1.0 - self.bad_share) * self.leave
        self.bad = rng.random() < self.bad_share  # stationary from the start

    def fails(self, error_rate: float) -> bool:
        """Step the dependency for one request; does a request at `error_rate` fail?"""
        rng = self.rng
        if self.bad:
            self.bad = rng.random() >= self.leave
        else:
            self.bad = rng.random() < self.enter
        scale = error_rate / HEALTHY.error_rate
        p_bad = min(1.0, self.runs.bad_error_rate * scale)
        if self.bad:
            return rng.random() < p_bad
        p_good = max(0.0, (error_rate - self.bad_share * p_bad) / (1.0 - self.bad_share))
        return p_good > 0.0 and rng.random() < p_good


def with_first_step(rollout_plan: s.RolloutPlan, canary_percent: float) -> s.RolloutPlan:
    """`rollout_plan` with its first step at `canary_percent` (bake and samples kept); later
    steps at or below that share are dropped."""
    first, *rest = rollout_plan.steps
    steps = (
        s.TrafficStep.model_validate({**first.model_dump(), "canary_percent": canary_percent}),
        *(step for step in rest if step.canary_percent > canary_percent),
    )
    return s.RolloutPlan.model_validate({**rollout_plan.model_dump(), "steps": steps})


# ---------------------------------------------------------------------------------------------
# The open loop: the serving fleet
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetConfig:
    """The fleet's shape. `rate` is the canary's req/s in the plan's first step (see module)."""

    rate: float = 20.0
    #: Seconds after the canary first gets traffic when the fault starts.
    fault_onset_s: float = 60.0
    #: Amplitude of the diurnal trend of the request rate (peak at 15:00 UTC).
    diurnal_amplitude: float = 0.3
    #: Stationary standard deviation and time constant of the random walk of the log-rate.
    wander_sd: float = 0.1
    wander_tau_s: float = 300.0
    prediction_kind: PredictionKind = "score"
    #: Seconds between batched records of a cohort; None: one record per prediction.
    baseline_batch_s: float | None = 1.0
    canary_batch_s: float | None = None
    #: The clients' timeout: a timed-out request takes this long.
    timeout_ms: float = 1000.0
    #: How traffic behaves apart from the cohorts: errors in runs, bursts, heavy tails...
    family: TrafficFamily = INDEPENDENT

    def __post_init__(self) -> None:
        if not self.rate > 0.0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        if self.fault_onset_s < 0.0:
            raise ValueError(f"fault_onset_s must not be negative, got {self.fault_onset_s}")


def _pick(rng: random.Random, mix: Sequence[tuple[str, float]]) -> str:
    x = rng.random() * sum(share for _, share in mix)
    for name, share in mix:
        x -= share
        if x < 0.0:
            return name
    return mix[-1][0]


class ServingFleet:
    """Both cohorts of one deployment: when requests arrive and how each one is served.

    The request rate is piecewise constant over one-second slots:
    `total * diurnal(t) / diurnal(start) * exp(wander(t))`, with `wander` an Ornstein-Uhlenbeck
    walk of the log-rate (times the burst factor of a `Bursts` family; a `Diurnal` family's
    cycle is normalized to its mean instead of the start). Arrivals of a cohort at traffic share
    p are a Poisson process of rate `p * rate`, generated one at a time (`next_arrival`), so a
    router may change p at any time. The config's traffic family adds its habits to serving:
    errors from a shared dependency's runs, heavier tails and client timeouts, shared outages.
    """

    def __init__(
        self,
        deployment: s.DeploymentRequested,
        scenario: Scenario,
        *,
        seed: int,
        config: FleetConfig = FleetConfig(),
        begin_ms: int | None = None,
    ) -> None:
        self.deployment = deployment
        self.scenario = scenario
        self.config = config
        self.seed = seed
        self.begin_ms = start_ms(seed) if begin_ms is None else begin_ms
        first_percent = deployment.plan.steps[0].canary_percent
        self.total_rate = config.rate * 100.0 / first_percent
        self._arrivals = {c: random.Random(f"{seed}/{c}/arrivals") for c in COHORTS}
        self._serving = {c: random.Random(f"{seed}/{c}/serving") for c in COHORTS}
        self._wander_rng = random.Random(f"{seed}/rate")
        self._slot0 = self.begin_ms // SLOT_MS
        self._rates: list[float] = []
        self._log_rate = 0.0  # `rate` holds at the start; the walk wanders from there
        self._counter = {c: 0 for c in COHORTS}
        #: When the canary first got traffic, and so when the fault starts.
        self.canary_started_ms: int | None = None
        # the family's habits, each from its own stream (none drawn for the independent family)
        family = self.family = config.family
        self._dependency = (
            None
            if family.error_runs is None
            else SharedDependency(family.error_runs, random.Random(f"{seed}/dependency"))
        )
        self._burst_rng = random.Random(f"{seed}/bursts") if family.bursts else None
        self._bursting = (
            self._burst_rng is not None
            and family.bursts is not None
            and self._burst_rng.random() < family.bursts.burst_share
        )
        self._outage_rng = random.Random(f"{seed}/outages")
        self._outage_serving = {c: random.Random(f"{seed}/{c}/outage") for c in COHORTS}
        self._timeout_serving = {c: random.Random(f"{seed}/{c}/timeouts") for c in COHORTS}
        self._outages: list[tuple[int, int]] = []
        self._timeouts = family.heavy_tails is not None and family.heavy_tails.timeouts
        self._shapes: dict[int, tuple[Behaviour, Behaviour]] = {}
        if family.diurnal is not None:
            self._phase = random.Random(f"{seed}/phase").random()
            self._diurnal0 = 1.0  # the configured rate is the cycle's mean
        else:
            self._diurnal0 = self._diurnal(self.begin_ms)

    # ---- rates -----------------------------------------------------------------------

    def _diurnal(self, ms: float) -> float:
        cycle = self.config.family.diurnal
        if cycle is not None:
            turns = (ms - self.begin_ms) / (cycle.period_s * 1000.0) + self._phase
            return 1.0 + cycle.amplitude * math.cos(2.0 * math.pi * turns)
        hour = (ms % DAY_MS) / 3_600_000
        return 1.0 + self.config.diurnal_amplitude * math.cos(2.0 * math.pi * (hour - 15.0) / 24.0)

    def _burst_factor(self) -> float:
        """The burst state's rate factor for the next slot; then the state steps."""
        bursts, rng = self.family.bursts, self._burst_rng
        assert bursts is not None and rng is not None
        factor = bursts.quiet_factor * (bursts.multiplier if self._bursting else 1.0)
        leave = 1.0 / (bursts.burst_s if self._bursting else bursts.quiet_s)
        if rng.random() < leave:
            self._bursting = not self._bursting
        return factor

    def rate_at(self, ms: float) -> float:
        """The fleet's total request rate (req/s) at simulation time `ms`."""
        slot = int(ms // SLOT_MS) - self._slot0
        if slot < 0:
            slot = 0
        rates = self._rates
        if slot >= len(rates):
            cfg = self.config
            decay = math.exp(-1.0 / cfg.wander_tau_s) if cfg.wander_tau_s > 0 else 0.0
            step_sd = cfg.wander_sd * math.sqrt(1.0 - decay * decay)
            while slot >= len(rates):
                t = (self._slot0 + len(rates)) * SLOT_MS
                trend = self._diurnal(t) / self._diurnal0
                rate = self.total_rate * trend * math.exp(self._log_rate)
                if self._burst_rng is not None:
                    rate *= self._burst_factor()
                rates.append(rate)
                if step_sd > 0.0:
                    self._log_rate = self._log_rate * decay + self._wander_rng.gauss(0.0, step_sd)
        return rates[slot]

    def next_arrival(self, cohort: Cohort, after_ms: float, canary_percent: float) -> float | None:
        """The next request of `cohort` after `after_ms` at a fixed traffic share, or None."""
        share = canary_percent / 100.0 if cohort == "canary" else 1.0 - canary_percent / 100.0
        if share <= 0.0:
            return None
        rng = self._arrivals[cohort]
        t = after_ms
        while True:
            rate = self.rate_at(t) * share
            slot_end = (t // SLOT_MS + 1) * SLOT_MS
            gap = rng.expovariate(rate) * 1000.0
            if t + gap < slot_end:
                return t + gap
            t = slot_end  # memoryless: start again at the slot boundary with its rate

    # ---- requests --------------------------------------------------------------------

    @property
    def onset_ms(self) -> int | None:
        """When the fault starts (None until the canary gets traffic)."""
        if self.canary_started_ms is None:
            return None
        return self.canary_started_ms + round(self.config.fault_onset_s * 1000)

    def behaviour(self, cohort: Cohort, ms: float) -> Behaviour:
        onset = self.onset_ms
        if cohort == "baseline" or onset is None or ms < onset:
            return self._shaped(HEALTHY)
        level = self.scenario.level((ms - onset) / 1000.0)
        return self._shaped(HEALTHY.blend(self.scenario.canary, level))

    def _shaped(self, b: Behaviour) -> Behaviour:
        """`b` with the family's heavier tail: the tail's parameters keep their ratio to a
        healthy cohort's."""
        tails = self.family.heavy_tails
        if tails is None:
            return b
        cached = self._shapes.get(id(b))
        if cached is not None and cached[0] is b:
            return cached[1]
        shaped = dataclasses.replace(
            b,
            tail_share=b.tail_share * tails.tail_share / HEALTHY.tail_share,
            tail_median_ms=b.tail_median_ms * tails.tail_median_ms / HEALTHY.tail_median_ms,
            tail_sigma=b.tail_sigma * tails.tail_sigma / HEALTHY.tail_sigma,
        )
        if len(self._shapes) > 16:  # a ramp makes a new behaviour per request
            self._shapes.clear()
        self._shapes[id(b)] = (b, shaped)
        return shaped

    def outage_windows(self, until_ms: float) -> list[tuple[int, int]]:
        """The shared outages (start, end) that start before `until_ms`; [] without them."""
        outage = self.family.shared_outage
        if outage is None:
            return []
        windows, rng = self._outages, self._outage_rng
        while not windows or windows[-1][0] < until_ms:
            after = windows[-1][1] if windows else self.begin_ms
            start = after + round(rng.expovariate(1.0 / outage.every_s) * 1000.0)
            windows.append((start, start + round(rng.uniform(*outage.duration_s) * 1000.0)))
        return [w for w in windows if w[0] < until_ms]

    def in_outage(self, ms: float) -> bool:
        """Whether a shared outage is on at `ms`."""
        if self.family.shared_outage is None:
            return False
        self.outage_windows(ms + 1)
        at_or_before = bisect.bisect_right(self._outages, (ms, math.inf)) - 1
        return at_or_before >= 0 and ms < self._outages[at_or_before][1]

    def serve(self, cohort: Cohort, arrival_ms: float) -> s.Prediction | None:
        """Serve one request arriving at `arrival_ms`; None when the cohort is not answering."""
        behaviour = self.behaviour(cohort, arrival_ms)
        if not behaviour.answering:
            return None
        rng = self._serving[cohort]
        self._counter[cohort] += 1
        request_id = f"{cohort[0]}{self._counter[cohort]:08d}"
        event_ms = int(arrival_ms)
        features = self._features(rng, behaviour)
        body = self._latency(rng, behaviour)
        error: str | None
        if rng.random() < behaviour.failure_share:
            error = _pick(rng, OUTAGE_MIX)
        elif self._fails(rng, behaviour):
            error = _pick(rng, ERROR_MIX)
        else:
            error = None
        outage = self.family.shared_outage
        if outage is not None and self.in_outage(arrival_ms):
            outage_rng = self._outage_serving[cohort]
            failed = outage_rng.random() < outage.failure_share
            kind = _pick(outage_rng, OUTAGE_MIX)
            if failed and error is None:
                error = kind
            body *= outage.latency_scale
        if (
            error is None
            and behaviour.timeout_rate > 0.0
            and self._timeout_serving[cohort].random() < behaviour.timeout_rate
        ):
            error = "timeout"
        if self._timeouts and error is None and body > self.config.timeout_ms:
            error = "timeout"  # the client gives up
        ok = error is None
        if error == "timeout":
            latency = (
                self.config.timeout_ms
                if self._timeouts
                else self.config.timeout_ms * (1.0 + 0.02 * rng.random())
            )
        elif error == "internal":
            latency = body * 0.3
        elif error == "bad_request":
            latency = 1.0 + 4.0 * rng.random()
        else:
            latency = body
        prediction = self._prediction(rng, behaviour) if ok else None
        version = CANARY_VERSION if cohort == "canary" else BASELINE_VERSION
        return s.Prediction(
            version=version,
            cohort=s.Cohort(cohort),
            request_id=request_id,
            event_time=at(event_ms),
            latency_ms=round(latency, 1),
            ok=ok,
            error_type=error,
            prediction=prediction,
            features=features,
        )

    def _fails(self, rng: random.Random, b: Behaviour) -> bool:
        """Whether a request fails with an ordinary error: independently, or by the shared
        dependency's state."""
        if self._dependency is None:
            return rng.random() < b.error_rate
        return self._dependency.fails(b.error_rate)

    @staticmethod
    def _latency(rng: random.Random, b: Behaviour) -> float:
        if rng.random() < b.tail_share:
            value = b.tail_median_ms * math.exp(b.tail_sigma * rng.gauss(0.0, 1.0))
        else:
            value = b.latency_median_ms * math.exp(b.latency_sigma * rng.gauss(0.0, 1.0))
        return value * b.latency_scale

    def _prediction(self, rng: random.Random, b: Behaviour) -> s.PredictionValue:
        score = rng.betavariate(b.score_a, b.score_b)
        kind = self.config.prediction_kind
        if kind == "class":
            return "fraud" if score >= CLASS_THRESHOLD else "legit"
        if kind == "probabilities":
            p = round(score, 4)
            return {"fraud": p, "legit": round(1.0 - p, 4)}
        return round(score, 4)

    @staticmethod
    def _features(rng: random.Random, b: Behaviour) -> dict[str, s.FeatureValue]:
        amount: float | None = round(
            AMOUNT_MEDIAN * math.exp(AMOUNT_SIGMA * rng.gauss(0.0, 1.0)) * b.amount_scale, 2
        )
        if rng.random() < b.amount_missing:
            amount = None
        age: int | None = min(max(int(rng.gauss(AGE_MEAN, AGE_SD)), AGE_MIN), AGE_MAX)
        if rng.random() < b.age_missing:
            age = None
        return {
            "amount": amount,
            "country": _pick(rng, b.countries),
            "is_new": rng.random() < NEW_CUSTOMER_SHARE,
            "age": age,
        }


# ---------------------------------------------------------------------------------------------
# The timeline: the fleet behind a router, as records in topic order
# ---------------------------------------------------------------------------------------------

_ARRIVAL, _DONE, _FLUSH, _RECORD, _CALL = range(5)


class EventClock:
    """A discrete-event clock over a deployment's serving: records come out in time order.

    A prediction becomes a record when its request completes (arrival plus latency): alone, or
    in its cohort's next batch (flushed every `batch_ms`, stamped with the flush time). Other
    records (a deployment request, router acks, approvals) and callbacks are scheduled at a
    time. A subclass draws the arrivals: it pushes `_ARRIVAL` events and handles them in
    `_arrive`, completing each served request with `_complete`.
    """

    def __init__(
        self,
        deployment: s.DeploymentRequested,
        begin_ms: int,
        batch_ms: Mapping[str, int | None],
        fleet_source: str,
    ) -> None:
        self.deployment = deployment
        self.now_ms = begin_ms
        self._heap: list[tuple[int | float, int, int, Any]] = []
        self._seq = 0
        self._records = 0
        self._fleet_source = fleet_source
        self._batch_ms = dict(batch_ms)
        self._buffers: dict[str, list[s.Prediction]] = {c: [] for c in batch_ms}
        for cohort, every in self._batch_ms.items():
            if every:
                self._push((self.now_ms // every + 1) * every, _FLUSH, cohort)

    def _push(self, when: int | float, kind: int, item: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, item))

    def _arrival_at(self, when: float, item: Any = None) -> None:
        """An arrival drawn by the subclass, handed back to its `_arrive` at `when`."""
        self._push(when, _ARRIVAL, item)

    def _arrive(self, when: float, item: Any) -> None:
        raise NotImplementedError

    def _complete(self, served: s.Prediction, arrival_ms: float) -> None:
        """A served request completes after its latency: into its cohort's batch, or alone."""
        done = int(arrival_ms) + math.ceil(served.latency_ms)
        if self._batch_ms[served.cohort.value]:
            self._push(done, _DONE, served)
        else:
            self._push(done, _RECORD, (self._single(served), self._fleet_source))

    def schedule(self, when_ms: int, data: s.Payload, source: str) -> None:
        """Put a record (an ack, an approval...) on the timeline at `when_ms`."""
        self._push(when_ms, _RECORD, (data, source))

    def call_at(self, when_ms: int, callback: Callable[[int], None]) -> None:
        """Run `callback(when_ms)` when the clock reaches `when_ms` (a router applying a share)."""
        self._push(when_ms, _CALL, callback)

    def envelope(self, data: s.Payload, when_ms: int, source: str) -> Envelope[Any]:
        self._records += 1
        return s.make_event(
            data,
            source=source,
            time=at(when_ms),
            id=f"{self.deployment.deployment_id}/{self._records}",
        )

    def _single(self, item: s.Prediction) -> s.PredictionServed:
        d = self.deployment
        return s.PredictionServed(deployment_id=d.deployment_id, model=d.model, **dict(item))

    def next_record(self, until_ms: int | None = None) -> Envelope[Any] | None:
        """The next record on the topics, or None when nothing happens before `until_ms`."""
        heap = self._heap
        while heap:
            when = heap[0][0]
            if until_ms is not None and when > until_ms:
                return None
            _, _, kind, item = heapq.heappop(heap)
            self.now_ms = max(self.now_ms, int(when))
            if kind == _ARRIVAL:
                self._arrive(when, item)
            elif kind == _DONE:
                self._buffers[item.cohort.value].append(item)
            elif kind == _FLUSH:
                cohort = item
                every = self._batch_ms[cohort]
                if not every:
                    raise RolloutError(f"a flush of {cohort}, which is not batched")
                self._push(int(when) + every, _FLUSH, cohort)
                buffer = self._buffers[cohort]
                if buffer:
                    self._buffers[cohort] = []
                    batch = s.PredictionBatch(
                        deployment_id=self.deployment.deployment_id,
                        model=self.deployment.model,
                        predictions=tuple(buffer),
                    )
                    return self.envelope(batch, int(when), self._fleet_source)
            elif kind == _RECORD:
                data, source = item
                return self.envelope(data, int(when), source)
            else:
                item(int(when))
        return None


class Timeline(EventClock):
    """The simulated fleet behind a router, as records in topic order (see `EventClock`).
    `set_percent` is the router applying a traffic share: arrivals after it follow it."""

    def __init__(self, fleet: ServingFleet, *, canary_percent: float = 0.0) -> None:
        self.fleet = fleet
        self.canary_percent = 0.0
        self._generation = 0
        cfg = fleet.config
        super().__init__(
            fleet.deployment,
            fleet.begin_ms,
            {
                "baseline": None
                if cfg.baseline_batch_s is None
                else round(cfg.baseline_batch_s * 1000),
                "canary": None if cfg.canary_batch_s is None else round(cfg.canary_batch_s * 1000),
            },
            SOURCE_FLEET,
        )
        self.set_percent(canary_percent, self.now_ms)

    def set_percent(self, canary_percent: float, when_ms: int) -> None:
        """The router routes `canary_percent` of the requests after `when_ms` to the canary."""
        self.canary_percent = canary_percent
        if canary_percent > 0.0 and self.fleet.canary_started_ms is None:
            self.fleet.canary_started_ms = when_ms
        self._generation += 1
        for cohort in COHORTS:
            self._schedule_arrival(cohort, float(when_ms))

    def _schedule_arrival(self, cohort: Cohort, after_ms: float) -> None:
        nxt = self.fleet.next_arrival(cohort, after_ms, self.canary_percent)
        if nxt is not None:
            self._arrival_at(nxt, (cohort, self._generation))

    def _arrive(self, when: float, item: Any) -> None:
        cohort, generation = item
        if generation != self._generation:
            return  # the router changed the share since this arrival was drawn
        self._schedule_arrival(cohort, when)
        served = self.fleet.serve(cohort, when)
        if served is not None:
            self._complete(served, when)


def generate(
    scenario_name: str,
    *,
    seed: int,
    duration_s: float = 300.0,
    canary_percent: float | None = None,
    config: FleetConfig = FleetConfig(),
    rollout_plan: s.RolloutPlan | None = None,
) -> Iterator[Envelope[Any]]:
    """The open loop: a deployment request, then both cohorts' predictions at a fixed share.

    No controller and no router: the canary gets `canary_percent` (default: the plan's first
    step) from the start, and the fault starts `config.fault_onset_s` later.
    """
    sc = scenario(scenario_name)
    deployment = make_deployment(sc.name, seed, rollout_plan, kind=config.prediction_kind)
    fleet = ServingFleet(deployment, sc, seed=seed, config=config)
    percent = deployment.plan.steps[0].canary_percent if canary_percent is None else canary_percent
    timeline = Timeline(fleet)
    yield timeline.envelope(deployment, fleet.begin_ms, SOURCE_DEPLOYER)
    timeline.set_percent(percent, fleet.begin_ms)
    end = fleet.begin_ms + round(duration_s * 1000)
    while (record := timeline.next_record(until_ms=end)) is not None:
        yield record


# ---------------------------------------------------------------------------------------------
# The closed loop: a controller, a router and an approver around the fleet
# ---------------------------------------------------------------------------------------------


class Controller(Protocol):
    """What the loop needs of a controller (`controller.replay.replay.Runner` is one).

    `feed` takes one record and returns what the controller published because of it;
    `advance` moves its clock to `now` (epoch seconds) without a record (its timer ticks).
    """

    def feed(self, event: Envelope[Any]) -> Sequence[Envelope[Any]]: ...

    def advance(self, now: float) -> Sequence[Envelope[Any]]: ...


@dataclass(frozen=True)
class LoopConfig:
    #: The router applies a command this long after it was issued (uniform, milliseconds).
    router_delay_ms: tuple[int, int] = (200, 1500)
    #: A person approves this long after the rollout asks (uniform, seconds).
    approval_delay_s: tuple[float, float] = (20.0, 90.0)
    #: The log goes on this long after a terminal command is applied.
    tail_s: float = 5.0
    #: The log ends this long after the start at the latest (default: the plan's deadline
    #: plus a minute, or an hour without one).
    max_duration_s: float | None = None


@dataclass
class Outcome:
    """What happened in one closed-loop run, for tests and the benchmark."""

    deployment_id: str
    scenario: str
    seed: int
    begin_ms: int
    canary_started_ms: int | None = None
    onset_ms: int | None = None
    terminal_action: str | None = None
    terminal_ms: int | None = None
    terminal_reason: str | None = None
    end_ms: int | None = None
    records: int = 0
    commands: list[s.Command] = field(default_factory=list)
    decisions: list[s.Decision] = field(default_factory=list)

    @property
    def detection_s(self) -> float | None:
        """Seconds from the fault's onset to a rollback command (negative: before the onset)."""
        if self.terminal_action != "rollback" or self.terminal_ms is None:
            return None
        if self.onset_ms is None:
            return None
        return (self.terminal_ms - self.onset_ms) / 1000.0


class LoopSource(Protocol):
    """What the closed loop needs of a record source (`Timeline`; the real-data `Traffic`)."""

    now_ms: int

    def set_percent(self, canary_percent: float, when_ms: int) -> None: ...

    def schedule(self, when_ms: int, data: s.Payload, source: str) -> None: ...

    def call_at(self, when_ms: int, callback: Callable[[int], None]) -> None: ...

    def next_record(self, until_ms: int | None = None) -> Envelope[Any] | None: ...


class LoopRecord(Protocol):
    """What the closed loop records of a run (`Outcome`; the real-data `RolloutResult`)."""

    records: int
    commands: list[s.Command]
    decisions: list[s.Decision]
    terminal_action: str | None
    terminal_ms: int | None
    terminal_reason: str | None
    canary_started_ms: int | None
    end_ms: int | None


@dataclass(frozen=True)
class LoopActors:
    """Who acts around the controller: the CloudEvents sources of their records, the router's
    and the approver's names, and what the approver says."""

    deployer: str = SOURCE_DEPLOYER
    router: str = SOURCE_ROUTER
    approver: str = SOURCE_APPROVER
    router_name: str = "router-sim"
    approver_name: str = "approver-sim"
    approval_reason: str | None = "looks good on the dashboard"


class RolloutLoop:
    """One rollout with a controller in the loop, over any record source.

    Every record goes to the controller as it is emitted (`controller.feed`), and between
    records the controller's clock moves on a one-second grid (`controller.advance`); its
    commands go to a router that applies and acknowledges them after `loop.router_delay_ms`,
    its decisions to an approver (a rollout awaiting approval is approved after
    `loop.approval_delay_s`). The log ends `loop.tail_s` after a terminal command is applied,
    or at `loop.max_duration_s` (default: the plan's deadline plus a minute, or an hour).
    """

    def __init__(
        self,
        deployment: s.DeploymentRequested,
        source: LoopSource,
        controller: Controller,
        record: LoopRecord,
        *,
        begin_ms: int,
        rng: random.Random,
        loop: LoopConfig,
        actors: LoopActors = LoopActors(),
    ) -> None:
        self.deployment = deployment
        self.controller = controller
        self.loop = loop
        self._source = source
        self._record = record
        self._begin_ms = begin_ms
        self._rng = rng
        self._actors = actors
        #: Everything the controller published, in order.
        self.published: list[Envelope[Any]] = []
        self._applied: set[str] = set()
        self._approvals: set[int] = set()
        plan_ = deployment.plan
        limit = loop.max_duration_s
        if limit is None:
            limit = plan_.deadline_s + 60.0 if plan_.deadline_s is not None else 3600.0
        self.end_ms = begin_ms + round(limit * 1000)

    def __iter__(self) -> Iterator[Envelope[Any]]:
        source, controller = self._source, self.controller
        source.schedule(self._begin_ms, self.deployment, self._actors.deployer)
        next_tick: int | None = None  # the controller's clock also moves between records
        while True:
            limit = self.end_ms if next_tick is None else min(next_tick, self.end_ms)
            record = source.next_record(until_ms=limit)
            if record is None:
                if next_tick is None or next_tick > self.end_ms:
                    break
                for output in controller.advance(epoch_s(next_tick)):
                    self._react(output, next_tick)
                next_tick += SLOT_MS
                continue
            self._record.records += 1
            yield record
            now = source.now_ms
            for output in controller.feed(record):
                self._react(output, now)
            if next_tick is None:
                next_tick = (now // SLOT_MS + 1) * SLOT_MS
        self._record.end_ms = min(source.now_ms, self.end_ms)
        self._finished()

    def _finished(self) -> None:
        """The run is over (a subclass records when the canary started, the fault's onset)."""

    def _react(self, output: Envelope[Any], now: int) -> None:
        self.published.append(output)
        data = output.data
        if isinstance(data, s.Command):
            self._route(data, now)
        elif isinstance(data, s.Decision):
            self._record.decisions.append(data)
            # the gate is the start (step 0) from pending, else the step after the current one
            gate = 0 if data.from_phase == "pending" else data.step + 1
            if data.to_phase == "awaiting_approval" and gate not in self._approvals:
                self._approvals.add(gate)
                low, high = self.loop.approval_delay_s
                delay = round(self._rng.uniform(low, high) * 1000)
                approval = s.ApprovalGranted(
                    deployment_id=data.deployment_id,
                    step=gate,
                    by=self._actors.approver_name,
                    reason=self._actors.approval_reason,
                )
                self._source.schedule(now + delay, approval, self._actors.approver)

    def _terminal(self, command: s.Command) -> None:
        """The first terminal command (a subclass records more of it)."""
        record = self._record
        record.terminal_action = command.action.value
        record.terminal_ms = ms_of(command.issued_at)
        record.terminal_reason = command.reason

    def _route(self, command: s.Command, now: int) -> None:
        self._record.commands.append(command)
        if command.command_id in self._applied:
            return  # a router applies each command once
        self._applied.add(command.command_id)
        issued = max(ms_of(command.issued_at), now)
        if command.action.is_terminal() and self._record.terminal_action is None:
            self._terminal(command)
        if command.action == s.CommandAction.PAUSE:
            return
        low, high = self.loop.router_delay_ms
        applied = issued + self._rng.randint(low, high)
        percent = command.canary_percent

        def apply(when: int) -> None:
            self._source.set_percent(percent, when)
            ack = s.TrafficApplied(
                deployment_id=command.deployment_id,
                command_id=command.command_id,
                canary_percent=percent,
                applied_by=self._actors.router_name,
                applied_at=at(when),
            )
            self._source.schedule(when, ack, self._actors.router)
            if command.action.is_terminal():
                self.end_ms = min(self.end_ms, when + round(self.loop.tail_s * 1000))

        self._source.call_at(applied, apply)


class ClosedLoop(RolloutLoop):
    """One rollout with the controller in the loop. Iterate it for the records, in log order.

    Every record goes to the controller as it is emitted (`controller.feed`); its commands go
    to the router (applied and acknowledged after `router_delay_ms`), its decisions to the
    approver (a rollout awaiting approval is approved after `approval_delay_s`).
    """

    def __init__(
        self,
        scenario_name: str,
        controller: Controller,
        *,
        seed: int,
        config: FleetConfig = FleetConfig(),
        loop: LoopConfig = LoopConfig(),
        rollout_plan: s.RolloutPlan | None = None,
    ) -> None:
        self.scenario = scenario(scenario_name)
        deployment = make_deployment(
            self.scenario.name, seed, rollout_plan, kind=config.prediction_kind
        )
        self.fleet = ServingFleet(deployment, self.scenario, seed=seed, config=config)
        self.timeline = Timeline(self.fleet)
        self.outcome = Outcome(
            deployment_id=deployment.deployment_id,
            scenario=self.scenario.name,
            seed=seed,
            begin_ms=self.fleet.begin_ms,
        )
        super().__init__(
            deployment,
            self.timeline,
            controller,
            self.outcome,
            begin_ms=self.fleet.begin_ms,
            rng=random.Random(f"{seed}/loop"),
            loop=loop,
        )

    def _finished(self) -> None:
        self.outcome.canary_started_ms = self.fleet.canary_started_ms
        self.outcome.onset_ms = self.fleet.onset_ms

    def run(self) -> Outcome:
        """Run to the end without keeping the records."""
        for _ in self:
            pass
        return self.outcome
