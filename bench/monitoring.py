"""Monitoring benchmark: the always-on monitor's false alarms over days of production traffic
where nothing changes, its delay in detecting step changes beside their information limits, and
its cost per monitor.

    python bench/monitoring.py [--days 112] [--monitor-days 7] [--seeds 20] [--processes 2]
        [--families independent,errors_in_runs,bursts,heavy_tails] [--quick] [--cost-only]

Traffic is `controller.dev.production` (a daily cycle from 3 req/s at 03:00 to 20 req/s at
15:00 UTC, in each traffic family), folded per second as the worker gives it to the monitor;
the monitor (`controller.core.monitor`, the packaged default monitoring policy) is configured
as the log's first record configures it, observes each second and is checked every second.

- **False alarms.** `--days` monitor-days of the `diurnal_week` scenario (no change), split
  evenly over the families into monitors of `--monitor-days` each. Per rule and family: the
  alarms (alert_fired decisions), the monitor-days watched (after the reference and the
  calibration), the rate per 30 days with a 95 % upper bound (exact Poisson), beside the
  policy's stated bound. The dispersion each key measured is printed too.
- **Detection delay.** The step changes (drift JS 0.1, latency x1.5, errors x3, 10 % missing
  amounts at 11:00; a 10-minute outage at 03:00, the daily minimum), each in `--seeds` seeds of
  each family, from 2 h 30 min before the change (1 h reference, 1 h calibration, 30 min
  watching) to the expected rule's first alarm (of any of its keys: a latency rule's tail or
  body), or a miss at the end of the window (an hour; the outage's own 10 minutes). Beside
  the delays, the information limit of each change `h * phi / (n * KL(true after || true
  before))` checks of the rule (at least one; a rule of several keys: its key's with the
  smallest), from the generator's true parameters (200,000 requests served before and after
  the change) and the dispersion phi the monitor measured; and what the CUSUM itself expects,
  `h * phi / E[LLR]`, with the rule's own alternative (binomial and Poisson rules).
- **Cost.** `--cost-monitors` monitors in the watching stage, each fed 20 req/s, observed and
  checked every second for `--cost-seconds` seconds, on one core (this process): microseconds
  per observe and per check per monitor, monitors per core at one check a second, and the
  stored state's size (orjson of `state.to_dict()`).

Not a test: it prints figures, no time is asserted. `--quick` is a small run (about a minute).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import itertools
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
import traceback
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.common import commit, cpu_model  # noqa: E402
from controller.core.monitor import (  # noqa: E402
    MonitoringPolicy,
    MonitorState,
    check,
    configure,
    observe,
)
from controller.core.monitor.cusum import kl_binomial  # noqa: E402
from controller.core.monitor.monitor import observations  # noqa: E402
from controller.core.stats.cohort import CohortStats  # noqa: E402
from controller.core.stats.distribution import StatsConfig  # noqa: E402
from controller.dev.production import (  # noqa: E402
    PRODUCTION_FAMILIES,
    PRODUCTION_SCENARIOS,
    DailyCycle,
    ProductionConfig,
    ProductionScenario,
    ProductionTraffic,
    production_family,
)
from controller.policy_io import (  # noqa: E402
    DEFAULT_MONITORING_POLICY,
    default_monitoring_policy,
    load_monitoring_policy,
)
from schemas import MonitorDecision  # noqa: E402

#: The step changes of the detection table, in the order printed.
STEPS = ("drift_js_0.1", "latency_x1.5", "errors_x3", "missing_10pct", "night_outage")
#: Watching before a change, after the reference and the calibration.
WATCH_BEFORE_S = 1800.0
#: How long after a step change its alarm is awaited (an outage: while it lasts).
WINDOW_S = 3600.0
#: Requests served before and after a change that its information limit is computed from.
TRUTH_SAMPLES = 200_000
COST_RATE = 20.0

_POLICY: MonitoringPolicy | None = None
_TRUTH_SAMPLES = TRUTH_SAMPLES


def _load_policy(path: str | None) -> MonitoringPolicy:
    return load_monitoring_policy(path) if path else default_monitoring_policy()


def _init_worker(policy_path: str | None, truth_samples: int = TRUTH_SAMPLES) -> None:
    global _POLICY, _TRUTH_SAMPLES
    _POLICY = _load_policy(policy_path)
    _TRUTH_SAMPLES = truth_samples


def _policy() -> MonitoringPolicy:
    assert _POLICY is not None, "the worker initializer loads the policy"
    return _POLICY


# ---------------------------------------------------------------------------------------------
# A monitor over production traffic
# ---------------------------------------------------------------------------------------------


@dataclass
class Alarm:
    t: int
    key: str
    reason: str


@dataclass
class Run:
    """A monitor fed by a traffic, second by second (the worker's loop without the broker)."""

    traffic: ProductionTraffic
    policy: MonitoringPolicy
    state: MonitorState | None = None
    watching_since: int | None = None
    configs: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.configs = self.traffic.configurations()

    def steps(self, until: int | None = None) -> Iterator[tuple[int, list[MonitorDecision]]]:
        """Each second: (its end, the monitor's decisions at the check then). Stops before the
        second ending after `until` (None: the traffic's end)."""
        traffic, policy = self.traffic, self.policy
        model = traffic.config.model
        for t, stats in traffic.seconds():
            while self.configs and self.configs[0][0] < t:
                when, event = self.configs.pop(0)
                result = configure(self.state, event, float(when))
                assert result.refusal is None, result.refusal
                self.state = result.state
            if self.state is None:
                continue
            if stats.requests:
                version = traffic.version_at(t - 1)
                self.state = observe(
                    self.state, model, [("baseline", version, stats)], None, float(t)
                )
            result = check(self.state, policy, float(t))
            decisions = [o for o in result.outputs if isinstance(o, MonitorDecision)]
            for d in decisions:
                if d.action == "reference_learned" and d.evidence.get("stage") == "watching":
                    self.watching_since = t
            yield t, decisions
            if until is not None and t >= until:
                return


def is_expected(key: str, expected: str) -> bool:
    """Whether an alarm of `key` is the one a change expects: that key, or any key of the
    expected rule when the change names a rule alone (a latency rule's tail or body)."""
    return key == expected or ("/" not in expected and key.split("/", 1)[0] == expected)


def rule_of(key: str) -> str:
    """The rule an alarm's key belongs to; the skew rule's level against the training profile
    is a rule of its own here (no rate is stated for it)."""
    rule = key.split("/", 1)[0]
    if key.startswith(rule + "/training:"):
        return f"{rule} (vs training)"
    return rule


# ---------------------------------------------------------------------------------------------
# False alarms (in worker processes)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuietJob:
    family: str
    seed: int
    days: float


@dataclass
class QuietResult:
    family: str
    seed: int
    watched_s: float
    alarms: list[Alarm]
    phis: dict[str, float]
    requests: int
    cpu_s: float
    error: str | None = None


def run_quiet(job: QuietJob) -> QuietResult:
    started = time.process_time()
    config = ProductionConfig(family=production_family(job.family))
    traffic = ProductionTraffic(
        PRODUCTION_SCENARIOS["diurnal_week"], seed=job.seed, config=config, days=job.days
    )
    run = Run(traffic, _policy())
    alarms: list[Alarm] = []
    error = None
    end = traffic.start
    try:
        for t, decisions in run.steps():
            end = t
            for d in decisions:
                if d.action == "alert_fired":
                    alarms.append(Alarm(t, d.rule or "?", d.reason))
    except Exception:
        error = traceback.format_exc(limit=6)
    state = run.state
    watched = 0.0 if run.watching_since is None else end - run.watching_since
    return QuietResult(
        family=job.family,
        seed=job.seed,
        watched_s=watched,
        alarms=alarms,
        phis={k: c.phi for k, c in state.cusums.items()} if state else {},
        requests=state.requests if state else 0,
        cpu_s=time.process_time() - started,
        error=error,
    )


# ---------------------------------------------------------------------------------------------
# Detection delay (in worker processes)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepJob:
    family: str
    seed: int
    #: changes at the same time: one warm-up, then each from a copy of the monitor
    scenarios: tuple[str, ...]


@dataclass
class Limit:
    """The information limit of a change and what the CUSUM expects, in seconds."""

    limit_s: float
    cusum_s: float | None
    phi: float
    h: float
    per_check: str


@dataclass
class StepResult:
    family: str
    scenario: str
    seed: int
    expected: str
    delay_s: float | None
    #: alarms while watching before the change, and of other keys after it
    before: list[Alarm]
    others: list[Alarm]
    stage_at_change: str
    limit: Limit | None
    cpu_s: float
    error: str | None = None
    #: the key whose alarm found the change (a rule's tail or body key, ...)
    found_by: str | None = None


def _window(sc: ProductionScenario) -> float:
    return sc.outage_h * 3600.0 if sc.outage_h else WINDOW_S


def step_scenario(name: str, policy: MonitoringPolicy) -> ProductionScenario:
    """The scenario from the warm-up before its change to the end of its window."""
    ref = policy.reference
    before = ref.learn_s + ref.calibrate_s + WATCH_BEFORE_S
    sc = PRODUCTION_SCENARIOS[name]
    return sc.around_change(before, _window(sc))


def run_steps(job: StepJob) -> list[StepResult]:
    policy = _policy()
    config = ProductionConfig(family=production_family(job.family))
    scenarios = [step_scenario(name, policy) for name in job.scenarios]
    started = time.process_time()
    first = scenarios[0]
    traffic = ProductionTraffic(first, seed=job.seed, config=config)
    change = traffic.change_at
    assert change is not None
    run = Run(traffic, policy)
    before: list[Alarm] = []
    error = None
    try:
        for t, decisions in run.steps(until=change):
            before += [
                Alarm(t, d.rule or "?", d.reason) for d in decisions if d.action == "alert_fired"
            ]
    except Exception:
        error = traceback.format_exc(limit=6)
    warm_cpu = time.process_time() - started
    results = []
    for sc in scenarios:
        began = time.process_time()
        expected = sc.expected or "?"
        if error is not None or run.state is None:
            results.append(
                StepResult(
                    job.family,
                    sc.name,
                    job.seed,
                    expected,
                    None,
                    before,
                    [],
                    "?",
                    None,
                    warm_cpu,
                    error or "no monitor",
                )
            )
            continue
        this = copy.deepcopy(run)
        this.traffic.scenario = sc
        assert this.state is not None
        stage = this.state.stage()
        limit = None
        delay = None
        found_by: str | None = None
        others: list[Alarm] = []
        failed = None
        try:
            limit = information_limit(this.traffic, this.state, policy, sc, change)
            for t, decisions in this.steps():
                for d in decisions:
                    if d.action != "alert_fired":
                        continue
                    if is_expected(d.rule or "?", expected) and delay is None:
                        delay = float(t - change)
                        found_by = d.rule
                    elif not is_expected(d.rule or "?", expected):
                        others.append(Alarm(t, d.rule or "?", d.reason))
                if delay is not None:
                    break
        except Exception:
            failed = traceback.format_exc(limit=6)
        results.append(
            StepResult(
                job.family,
                sc.name,
                job.seed,
                expected,
                delay,
                before,
                others,
                stage,
                limit,
                warm_cpu / len(scenarios) + time.process_time() - began,
                failed,
                found_by,
            )
        )
    return results


@dataclass
class Truth:
    """What 'served as at t' is, from many requests: the shares the rules count, the latency
    sketch as the monitor keeps it, and the sorted numbers of each numeric field."""

    requests: int
    errors: float
    missing: dict[str, float]
    latency: CohortStats
    numbers: dict[str, list[float]]
    others: Counter[str]


_TRUTHS: dict[tuple[str, str, int], Truth] = {}


def truth(traffic: ProductionTraffic, t: int) -> Truth:
    """`_TRUTH_SAMPLES` requests served as at `t` (fixed seeds: the same in every run)."""
    key = (traffic.config.family.name, traffic.scenario.name, t)
    found = _TRUTHS.get(key)
    if found is not None:
        return found
    latency = CohortStats(StatsConfig())
    numbers: dict[str, list[float]] = defaultdict(list)
    missing: Counter[str] = Counter()
    others: Counter[str] = Counter()
    errors = 0
    chunk = 10_000
    for k in range(max(1, _TRUTH_SAMPLES // chunk)):
        rows = traffic.sample(t, chunk, seed=10**6 + k)
        latency.observe_many(rows)
        for r in rows:
            errors += not r.ok
            fields: dict[str, Any] = dict(r.features or {})
            if r.ok:
                fields["prediction"] = r.prediction
            for name, value in fields.items():
                if value is None:
                    missing[name] += 1
                elif type(value) is float:
                    numbers[name].append(value)
                else:
                    others[name] += 1
    n = latency.requests
    for values in numbers.values():
        values.sort()
    found = _TRUTHS[key] = Truth(
        n, errors / n, {k: v / n for k, v in missing.items()}, latency, dict(numbers), others
    )
    return found


def _binned(truth: Truth, name: str, edges: list[float]) -> list[float]:
    """Proportions on the reference's bins (numbers between the edges, then everything else),
    with half a count added to each as the monitor adds."""
    values = truth.numbers.get(name, [])
    cuts = [0, *(bisect_right(values, e) for e in edges), len(values)]
    counts = [float(b - a) for a, b in itertools.pairwise(cuts)] + [float(truth.others[name])]
    total = math.fsum(counts) + 0.5 * len(counts)
    return [(c + 0.5) / total for c in counts]


def information_limit(
    traffic: ProductionTraffic,
    state: MonitorState,
    policy: MonitoringPolicy,
    sc: ProductionScenario,
    change: int,
) -> Limit | None:
    """The change's information limit and the CUSUM's own expectation (see the module)."""
    expected = sc.expected
    if expected is None or state.reference is None:
        return None
    rule_name, _, key = expected.partition("/")
    rule = next(r for r in policy.rules if r.name == rule_name)
    keys = sum(1 for k in state.cusums if k == rule.name or k.startswith(rule.name + "/"))
    h = policy.threshold(rule, keys)
    cusum = state.cusums.get(expected)
    if cusum is None:
        return None
    phi = cusum.phi
    rate = traffic.config.cycle.rate(change)  # the mean rate at the change: the truth
    n = rate * rule.every_s
    before, after = truth(traffic, change - 1), truth(traffic, change)
    # the rule's own view: its keys' p0 and alternative, the rate the monitor expects (on a copy)
    probe = MonitorState.from_dict(state.to_dict())
    assert probe.reference is not None
    window = CohortStats(StatsConfig())
    window.observe_many(traffic.sample(change, 2000, seed=3 * 10**6))
    seen = {
        k: values
        for k, _family, values in observations(
            rule, window, probe.reference, probe, float(change), float(change + 1), None
        )
    }
    cusum_s: float | None = None
    if rule.detector == "latency_shift" and not key:
        # each key's own limit (the tail's, the body's): the rule's is the smallest of them
        entry = state.reference.frozen["rules"][rule.name]
        limits = []
        for k, spot in [("", entry), *([("body", entry["body"])] if "body" in entry else [])]:
            name = f"{rule.name}/{k}" if k else rule.name
            key_cusum = state.cusums.get(name)
            if key_cusum is None:
                continue
            slot = (int(spot["slot"][0]), int(spot["slot"][1]))
            p0, p1 = (x.latency.latency.count_above(slot) / x.requests for x in (before, after))
            kl = kl_binomial(p1, max(p0, 1e-4))
            limit_checks = h * key_cusum.phi / (n * kl)
            limits.append(
                Limit(
                    max(limit_checks, 1.0) * rule.every_s,
                    _cusum_expects(seen.get(k), p1, h, key_cusum.phi, n, rule.every_s),
                    key_cusum.phi,
                    h,
                    f"{name}: slower than {spot['value_ms']:.0f} ms: {100 * p0:.2f} % -> "
                    f"{100 * p1:.2f} % of {n:.0f} requests",
                )
            )
        return min(limits, key=lambda x: x.limit_s, default=None)
    if rule.detector in ("error_rate", "latency_shift", "data_quality"):
        if rule.detector == "error_rate":
            p0, p1 = before.errors, after.errors
            what = "errors"
        elif rule.detector == "latency_shift":
            spot = state.reference.frozen["rules"][rule.name][key]
            slot = (int(spot["slot"][0]), int(spot["slot"][1]))
            p0, p1 = (x.latency.latency.count_above(slot) / x.requests for x in (before, after))
            what = f"slower than {spot['value_ms']:.0f} ms"
        else:
            feature, kind = key.split(":", 1)
            assert kind == "missing", kind
            p0, p1 = before.missing.get(feature, 0.0), after.missing.get(feature, 0.0)
            what = f"{feature} missing"
        # a share never seen: the rule's own floor (the monitor never takes a log of 0)
        kl = kl_binomial(p1, max(p0, 1e-4))
        limit_checks = h * phi / (n * kl)
        cusum_s = _cusum_expects(seen.get(key), p1, h, phi, n, rule.every_s)
        per_check = f"{what}: {100 * p0:.2f} % -> {100 * p1:.2f} % of {n:.0f} requests"
    elif rule.detector == "outage":
        served = (1.0 - before.errors) * rate * rule.every_s  # expected per check, the truth
        drop_to = float(rule.param("drop_to"))
        limit_checks = h * phi / (served * (1.0 - drop_to))
        per_check = f"{served:.2f} served expected, 0 served"
        if "" in seen:
            e_monitor = seen[""][1]  # what the monitor expected in the check after the change
            cusum_s = max(h * phi / (e_monitor * (1.0 - drop_to)), 1.0) * rule.every_s
            per_check += f" (the monitor expected {e_monitor:.2f})"
    elif rule.detector in ("prediction_drift", "training_serving_skew"):
        edges = list(state.reference.frozen["rules"][rule.name]["bins"][key]["edges"])
        bins0, bins1 = _binned(before, key, edges), _binned(after, key, edges)
        kl = math.fsum(a * math.log(a / b) for a, b in zip(bins1, bins0, strict=True))
        limit_checks = h * phi / (n * kl)
        per_check = f"KL {kl:.4f} per value on {len(bins0)} bins, {n:.0f} values"
    else:
        return None
    return Limit(max(limit_checks, 1.0) * rule.every_s, cusum_s, phi, h, per_check)


def _cusum_expects(
    values: list[float] | None, p1: float, h: float, phi: float, n: float, every_s: float
) -> float | None:
    """What a binomial key's CUSUM expects, `h * phi / E[LLR]` seconds with its own p0 and
    alternative (`values`: its observation) when the true share is `p1` (None: not judged)."""
    if values is None:
        return None
    q0, q1 = values[2], values[3]
    drift = p1 * math.log(q1 / q0) + (1 - p1) * math.log((1 - q1) / (1 - q0))
    return max(h * phi / (n * drift), 1.0) * every_s if drift > 0 else math.inf


# ---------------------------------------------------------------------------------------------
# Cost (in this process, on one core)
# ---------------------------------------------------------------------------------------------


@dataclass
class Cost:
    monitors: int
    seconds: int
    observe_us: float
    check_us: float
    fold_us: float
    serialize_us: float
    state_bytes: list[int]
    watching: int

    @property
    def per_monitor_us(self) -> float:
        return self.observe_us + self.check_us

    @property
    def per_core(self) -> float:
        return 1e6 / self.per_monitor_us


def measure_cost(policy: MonitoringPolicy, monitors: int, seconds: int) -> Cost:
    """Monitors fed 20 req/s each, observed then checked every second (see the module)."""
    flat = ProductionConfig(cycle=DailyCycle(peak=COST_RATE, night=COST_RATE), wander_sd=0.0)
    warm = policy.reference.learn_s + policy.reference.calibrate_s + 120.0
    sc = dataclasses.replace(
        PRODUCTION_SCENARIOS["diurnal_week"], start_h=10.0, end_h=10.0 + (warm + seconds) / 3600
    )
    traffic = ProductionTraffic(sc, seed=7, config=flat)
    run = Run(traffic, policy)
    for _ in run.steps(until=traffic.start + int(warm)):
        pass
    assert run.state is not None
    model = traffic.config.model
    rows = [next(traffic.rows()) for _ in range(seconds)]
    folded: list[tuple[int, CohortStats]] = []
    started = time.perf_counter()
    for t, batch in rows:
        stats = CohortStats(StatsConfig())
        stats.observe_many(batch)
        folded.append((t, stats))
    fold_us = (time.perf_counter() - started) / seconds * 1e6
    plain = run.state.to_dict()
    states = [MonitorState.from_dict(plain) for _ in range(monitors)]
    observe_s = check_s = 0.0
    for t, stats in folded:
        version = traffic.version_at(t - 1)
        started = time.perf_counter()
        for i, state in enumerate(states):
            states[i] = observe(state, model, [("baseline", version, stats)], None, float(t))
        middle = time.perf_counter()
        for state in states:
            check(state, policy, float(t))
        check_s += time.perf_counter() - middle
        observe_s += middle - started
    started = time.perf_counter()
    sizes = [len(orjson.dumps(state.to_dict())) for state in states]
    serialize_us = (time.perf_counter() - started) / monitors * 1e6
    n = monitors * seconds
    return Cost(
        monitors=monitors,
        seconds=seconds,
        observe_us=observe_s / n * 1e6,
        check_us=check_s / n * 1e6,
        fold_us=fold_us,
        serialize_us=serialize_us,
        state_bytes=sizes,
        watching=sum(1 for state in states if state.stage() == "watching"),
    )


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def poisson_upper(k: int, confidence: float = 0.95) -> float:
    """The exact one-sided upper confidence bound of a Poisson mean after k events."""

    def cdf(mean: float) -> float:
        term = total = math.exp(-mean)
        for i in range(1, k + 1):
            term *= mean / i
            total += term
        return total

    lo, hi = float(k), float(k) + 10.0 + 10.0 * math.sqrt(k + 1)
    for _ in range(100):
        mid = (lo + hi) / 2
        if cdf(mid) > 1.0 - confidence:
            lo = mid
        else:
            hi = mid
    return hi


def _days(seconds: float) -> float:
    return seconds / 86400.0


def quiet_tables(
    results: list[QuietResult], policy: MonitoringPolicy, families: list[str]
) -> list[str]:
    per = policy.model.false_alarms.per_rule_days
    rules = [r.name for r in policy.rules]
    extra = sorted({rule_of(a.key) for x in results for a in x.alarms} - set(rules))
    lines = [
        f"False alarms: {len(results)} monitors of production traffic with nothing changing "
        f"(`diurnal_week`), {_days(sum(x.watched_s for x in results)):.1f} monitor-days "
        "watched after the reference and the calibration. Rate and its 95 % upper bound "
        f"(exact Poisson) per 30 days; the policy states at most 1 per rule per {per:g} days.",
        "",
        "| rule | family | monitors | false alarms | monitor-days watched | per 30 days "
        "| 95 % upper | stated bound | keys that fired |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rule in [*rules, *extra]:
        bound = f"{30.0 / per:g}" if rule in rules else "none stated"
        for family in [*families, "all"]:
            runs = [x for x in results if family in ("all", x.family)]
            if not runs:
                continue
            days = _days(sum(x.watched_s for x in runs))
            keys = Counter(a.key for x in runs for a in x.alarms if rule_of(a.key) == rule)
            k = sum(keys.values())
            rate = 30.0 * k / days if days else math.nan
            upper = 30.0 * poisson_upper(k) / days if days else math.nan
            fired = ", ".join(f"{key} {n}" for key, n in keys.most_common(4)) or "-"
            name = f"**{rule}**" if family == "all" else rule
            lines.append(
                f"| {name} | {family} | {len(runs)} | {k} | {days:.2f} | {rate:.2f} | "
                f"{upper:.2f} | {bound} | {fired} |"
            )
    lines += ["", *phi_table(results, families)]
    alarms = sorted(
        ((a.t, x.family, x.seed, a.key, a.reason) for x in results for a in x.alarms),
        key=lambda item: item[0],
    )
    if alarms:
        lines += ["", f"The false alarms (first 15 of {len(alarms)} by time):", ""]
        lines += [
            f"- {_clock(t)} {family} seed {seed}: `{key}`: {reason[:260]}"
            for t, family, seed, key, reason in alarms[:15]
        ]
    return lines


def _clock(t: float) -> str:
    day = int((t - 1_767_225_600) // 86400)
    rest = int((t - 1_767_225_600) % 86400)
    return f"day {day} {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def phi_table(results: list[QuietResult], families: list[str]) -> list[str]:
    keys = sorted({k for x in results for k in x.phis})
    if not keys:
        return []
    lines = [
        "Dispersion phi each key measured in calibration (median over monitors; min-max):",
        "",
        "| key | " + " | ".join(families) + " |",
        "|---|" + "---|" * len(families),
    ]
    for key in keys:
        cells = []
        for family in families:
            phis = [x.phis[key] for x in results if x.family == family and key in x.phis]
            cells.append(
                f"{statistics.median(phis):.2f} ({min(phis):.2f}-{max(phis):.2f})" if phis else "-"
            )
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def _s(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:.0f} s" if value >= 100 else f"{value:.1f} s"


def step_table(results: list[StepResult], families: list[str]) -> list[str]:
    lines = [
        "Detection delay: from the change to the expected rule's first alert_fired (misses: "
        "none within the window). Limit: the information limit, `h * phi / (n * KL)` checks of "
        "the rule (at least one check) from the true parameters and the measured phi; CUSUM: "
        "what the rule's own alternative gives, `h * phi / E[LLR]` (medians over seeds); for a "
        "rule of several keys (the latency rules' tail and body), those of its key with the "
        "smallest limit. Found by: the key whose alarm came first.",
        "",
        "| change | family | expected rule | runs | detected | misses | median delay | p95 "
        "| limit | CUSUM expects | phi | per check (truth) | other alarms after | "
        "alarms before | found by |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in STEPS:
        for family in families:
            runs = [x for x in results if x.scenario == name and x.family == family]
            if not runs:
                continue
            delays = [x.delay_s for x in runs if x.delay_s is not None]
            limits = [x.limit for x in runs if x.limit is not None]
            cusum = [x.limit.cusum_s for x in runs if x.limit and x.limit.cusum_s is not None]
            others = Counter(a.key for x in runs for a in x.others)
            before = sum(len(x.before) for x in runs)
            found_by = Counter(x.found_by for x in runs if x.found_by)
            lines.append(
                f"| {name} | {family} | {runs[0].expected} | {len(runs)} | {len(delays)} | "
                f"{len(runs) - len(delays)} | "
                f"{_s(statistics.median(delays) if delays else None)} | "
                f"{_s(percentile(delays, 95) if delays else None)} | "
                f"{_s(statistics.median(x.limit_s for x in limits) if limits else None)} | "
                f"{_s(statistics.median(cusum) if cusum else None)} | "
                f"{statistics.median(x.phi for x in limits) if limits else math.nan:.2f} | "
                f"{limits[0].per_check if limits else '-'} | "
                f"{', '.join(f'{k} {n}' for k, n in others.most_common(3)) or '-'} | "
                f"{before} | "
                f"{', '.join(f'{k} {n}' for k, n in found_by.most_common()) or '-'} |"
            )
    stages = Counter(x.stage_at_change for x in results)
    if set(stages) != {"watching"}:
        lines += ["", f"Stage of the monitor at the change: {dict(stages)}."]
    return lines


def cost_table(cost: Cost) -> list[str]:
    sizes = cost.state_bytes
    per_core = cost.per_core
    with_fold = 1e6 / (cost.per_monitor_us + cost.fold_us)
    memory = per_core * statistics.median(sizes) / 1e6
    return [
        f"Cost: {cost.monitors:,} monitors ({cost.watching:,} watching) fed {COST_RATE:g} req/s "
        f"each, observed and checked every second for {cost.seconds} s, on one core.",
        "",
        "| monitors | observe µs/monitor | check µs/monitor | observe + check | monitors per "
        "core at 1 check/s | fold of a second (20 predictions) µs | state bytes median "
        "| max | to_dict + orjson µs |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {cost.monitors:,} | {cost.observe_us:.1f} | {cost.check_us:.1f} | "
        f"{cost.per_monitor_us:.1f} | {per_core:,.0f} | {cost.fold_us:.1f} | "
        f"{statistics.median(sizes):,.0f} | {max(sizes):,} | {cost.serialize_us:.1f} |",
        "",
        f"Ceiling: one core observes and checks {per_core:,.0f} monitors at one check a second "
        f"({cost.per_monitor_us:.0f} µs each), {with_fold:,.0f} if it also folds their "
        f"predictions in Python; their states then hold {memory:.1f} MB, and storing every "
        f"state once a second would cost {cost.serialize_us:.0f} µs more each.",
    ]


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def _families(text: str) -> list[str]:
    names = list(PRODUCTION_FAMILIES) if text == "all" else [x.strip() for x in text.split(",")]
    unknown = [x for x in names if x not in PRODUCTION_FAMILIES]
    if unknown or not names:
        known = ", ".join(PRODUCTION_FAMILIES)
        raise argparse.ArgumentTypeError(f"unknown family {unknown}; known: {known} (or all)")
    return names


QUICK = {
    "days": 2.0,
    "monitor_days": 0.5,
    "seeds": 2,
    "detect_families": "independent",
    "cost_monitors": 200,
    "cost_seconds": 10,
    "truth_samples": 50_000,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--days", type=float, default=112.0, help="monitor-days of traffic with no change"
    )
    p.add_argument("--monitor-days", type=float, default=7.0, help="days of each such monitor")
    p.add_argument("--seeds", type=int, default=20, help="seeds of each step change and family")
    p.add_argument("--seed", type=int, default=1, help="first seed; run k uses seed + k")
    p.add_argument("--processes", type=int, default=2, help="worker processes")
    p.add_argument("--families", default="all", help="families of the false alarm runs")
    p.add_argument("--detect-families", default="all", help="families of the detection runs")
    p.add_argument("--steps", default=",".join(STEPS), help="the step changes to run")
    p.add_argument("--cost-monitors", type=int, default=1000, help="monitors of the cost part")
    p.add_argument("--cost-seconds", type=int, default=30, help="seconds of the cost part")
    p.add_argument(
        "--truth-samples",
        type=int,
        default=TRUTH_SAMPLES,
        help="requests served before and after a change for its information limit",
    )
    p.add_argument("--policy", default=None, help="a monitoring policy file (experiments)")
    p.add_argument(
        "--cost-only",
        action="store_true",
        help="the cost part alone (on a machine with nothing else running)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small run: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()),
    )
    return p


def command_line(argv: Sequence[str]) -> str:
    return " ".join(["python bench/monitoring.py", *argv])


def monitor_digest() -> str:
    """The monitor core's source as measured (its files may differ from the commit)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "controller" / "core" / "monitor").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cli = parser()
    args = cli.parse_args(argv)
    if args.quick:
        defaults = vars(cli.parse_args([]))
        for key, value in QUICK.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    code = commit()  # the code measured is the code at the start: read it before the runs
    core = monitor_digest()
    try:
        families = _families(args.families)
        detect_families = _families(args.detect_families)
    except argparse.ArgumentTypeError as exc:
        cli.error(str(exc))
    steps = [x.strip() for x in args.steps.split(",") if x.strip()]
    unknown = [x for x in steps if x not in STEPS]
    if unknown:
        cli.error(f"unknown step change {unknown}; known: {', '.join(STEPS)}")
    policy = _load_policy(args.policy)
    if args.cost_only:
        cost = measure_cost(policy, args.cost_monitors, args.cost_seconds)
        print(f"Command: `{command_line(argv)}`\n")
        print(f"- Code: commit {code}; the monitor core sha256 {core}; {cpu_model()}.\n")
        print("\n".join(cost_table(cost)))
        return

    per_family = args.days / len(families)
    monitors = max(1, math.ceil(per_family / args.monitor_days - 1e-9))
    quiet_jobs = [
        QuietJob(family, args.seed + k, per_family / monitors)
        for k in range(monitors)
        for family in families
    ]
    groups: dict[float | None, list[str]] = defaultdict(list)
    for name in steps:
        groups[PRODUCTION_SCENARIOS[name].change_h].append(name)
    step_jobs = [
        StepJob(family, args.seed + k, tuple(names))
        for k in range(args.seeds)
        for family in detect_families
        for names in groups.values()
    ]
    jobs: list[QuietJob | StepJob] = [*quiet_jobs, *step_jobs]  # the longest first

    quiet: list[QuietResult] = []
    detected: list[StepResult] = []
    started = time.monotonic()
    ctx = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
    with ctx.Pool(
        args.processes, initializer=_init_worker, initargs=(args.policy, args.truth_samples)
    ) as pool:
        for done, result in enumerate(pool.imap_unordered(_run_job, jobs), start=1):
            if isinstance(result, QuietResult):
                quiet.append(result)
            else:
                detected += result
            elapsed = time.monotonic() - started
            print(f"  {done}/{len(jobs)} jobs, {elapsed / 60:.1f} min", file=sys.stderr, flush=True)
    wall = time.monotonic() - started
    cpu = sum(x.cpu_s for x in quiet) + sum(x.cpu_s for x in detected)
    cost = measure_cost(policy, args.cost_monitors, args.cost_seconds)
    quiet.sort(key=lambda x: (x.family, x.seed))
    detected.sort(key=lambda x: (x.scenario, x.family, x.seed))

    if args.policy:
        policy_line = f"`{Path(args.policy).name}` (name `{policy.name}`; an experiment)"
    else:
        text = (resources.files("controller") / "policies" / DEFAULT_MONITORING_POLICY).read_text(
            "utf-8"
        )
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        policy_line = f"the default `controller/policies/{DEFAULT_MONITORING_POLICY}` ({digest})"
    cycle = DailyCycle()
    parts = [
        f"Command: `{command_line(argv)}`",
        "",
        f"- Code: commit {code}; the monitor core `controller/core/monitor/*.py` sha256 "
        f"{core}. Monitoring policy: {policy_line}.",
        f"- Traffic: `controller.dev.production`, {cycle.night:g} req/s at "
        f"{cycle.minimum_hour:02.0f}:00 to {cycle.peak:g} req/s at {cycle.peak_hour:02.0f}:00 UTC "
        "(and a random walk of the log-rate), 1 % errors; folded per second; the monitor "
        "observes and is checked every second.",
        f"- Machine: {os.cpu_count()} cores ({cpu_model()}), Python "
        f"{platform.python_version()}, {args.processes} worker processes; {wall / 60:.1f} min "
        f"wall, {cpu / 60:.1f} min CPU (before the cost part).",
        "",
        *quiet_tables(quiet, policy, families),
        "",
        *step_table(detected, detect_families),
        "",
        *cost_table(cost),
    ]
    crashes = [(f"{x.family} seed {x.seed}", x.error) for x in quiet if x.error]
    crashes += [(f"{x.scenario} {x.family} seed {x.seed}", x.error) for x in detected if x.error]
    if crashes:
        parts += ["", f"Crashes ({len(crashes)}):", ""]
        for where, error in crashes[:5]:
            parts += [f"- {where}:", "", "```", (error or "").rstrip(), "```"]
    print("\n".join(parts))


def _run_job(job: QuietJob | StepJob) -> QuietResult | list[StepResult]:
    return run_quiet(job) if isinstance(job, QuietJob) else run_steps(job)


if __name__ == "__main__":
    main()
