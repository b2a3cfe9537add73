"""Detection benchmark: how often and how fast the policy rolls back each fault, and how often
it rolls back a healthy canary.

Each run is one closed-loop rollout (controller.dev.simulate.ClosedLoop): a simulated fleet
serves both cohorts, the rollout core judges every record it reports (and ticks every second of
event time), and a simulated router applies the commands. Per scenario it prints the runs, the
detection rate (rolled back after the fault's onset) with a 95% lower confidence bound, the
median and 95th percentile of the time from the onset to the rollback command, and for healthy
rollouts the false rollback rate with a 95% upper confidence bound (one-sided
Clopper-Pearson).

    python bench/detection.py [--runs N] [--other-runs N] [--healthy N] [--rate 20] [--workers 2]
        [--family NAME[,NAME...]|all] [--share 5,20,50] [--run-length N]

`--family` runs every scenario on each traffic family (controller.dev.simulate.FAMILIES: errors
in runs, bursts, heavy tails, shared outages, a strong rate cycle; default: independent) and
`--share` at each first-step canary share (the plan with its first step at that percent); the
same tables are printed for each family and share, then a summary of all of them.

Not a test: it prints figures. `--update-docs docs/detection.md` also writes the results of the
independent family at the plan's own first step between the benchmark markers of that file.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import math
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from bench.common import commit, cpu_model, lower_bound, upper_bound  # noqa: E402
from controller.core.policy import Policy  # noqa: E402
from controller.dev.simulate import (  # noqa: E402
    FAMILIES,
    PLANS,
    SCENARIOS,
    ClosedLoop,
    FleetConfig,
    ServingFleet,
    make_deployment,
    with_first_step,
)
from controller.policy_io import default_policy, default_policy_text, load_policy  # noqa: E402
from controller.replay.replay import Runner  # noqa: E402
from schemas import RolloutPlan  # noqa: E402

BEGIN = "<!-- bench:detection:begin -->"
END = "<!-- bench:detection:end -->"
#: The hard faults and their targets: detected in >= 99% of runs, median < 10 s after onset.
TARGET_DETECTION = 0.99
TARGET_MEDIAN_S = 10.0
#: A hard fault's median onset-to-rollback target: within this factor of its information limit.
LIMIT_FACTOR = 2.0
#: The false rollback target of healthy rollouts.
TARGET_FALSE_ROLLBACK = 0.01


# ---------------------------------------------------------------------------------------------
# One run (in a worker process)
# ---------------------------------------------------------------------------------------------

_POLICY: Policy | None = None


def _init_worker(policy_path: str | None) -> None:
    global _POLICY
    _POLICY = load_policy(policy_path) if policy_path else default_policy()


@dataclass(frozen=True)
class Job:
    scenario: str
    seed: int
    rate: float
    canary_batch_s: float | None
    fault_onset_s: float
    plan: str
    family: str = "independent"
    share: float | None = None  # the first step's canary percent; None: the plan's
    run_length: float | None = None  # of a family's error runs; None: the family's

    def rollout_plan(self) -> RolloutPlan:
        return plan_at(self.plan, self.share)

    def config(self) -> FleetConfig:
        family = FAMILIES[self.family]
        if self.run_length is not None and family.error_runs is not None:
            family = family.with_run_length(self.run_length)
        return FleetConfig(
            rate=self.rate,
            fault_onset_s=self.fault_onset_s,
            canary_batch_s=self.canary_batch_s,
            family=family,
        )


def plan_at(name: str, share: float | None) -> RolloutPlan:
    """The plan called `name`, with its first step at `share` percent (None: as it is)."""
    plan = PLANS[name]
    if share is None or share == plan.steps[0].canary_percent:
        return plan
    return with_first_step(plan, share)


@dataclass(frozen=True)
class Result:
    family: str
    share: float | None
    scenario: str
    seed: int
    action: str | None
    detection_s: float | None
    rule: str | None
    records: int
    cpu_s: float


def run_one(job: Job) -> Result:
    assert _POLICY is not None, "the worker initializer loads the policy"
    started = time.process_time()
    loop = ClosedLoop(
        job.scenario,
        Runner(_POLICY),
        seed=job.seed,
        config=job.config(),
        rollout_plan=job.rollout_plan(),
    )
    outcome = loop.run()
    rule = None
    for command in outcome.commands:
        if command.action.value == "rollback":
            rules = command.evidence.get("failed_rules") or [command.evidence.get("rule")]
            rule = ",".join(str(r) for r in rules if r) or None
    return Result(
        family=job.family,
        share=job.share,
        scenario=job.scenario,
        seed=job.seed,
        action=outcome.terminal_action,
        detection_s=outcome.detection_s,
        rule=rule,
        records=outcome.records,
        cpu_s=time.process_time() - started,
    )


# ---------------------------------------------------------------------------------------------
# The information limit of an error-rate regression
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """How fast a fault can be seen at all: Wald's SPRT told the true rates of one kind of
    "bad" request and the onset, at the alpha and tolerance of the rule that counts them."""

    scenario: str
    event: str
    rule: str
    alpha: float
    tolerance: float
    canary_rps: float
    baseline_rps: float
    p_canary: float
    p_baseline: float
    median_s: float
    p95_s: float


def _sprt_times(
    rng: random.Random, up: float, down: float, p_up: float, gap: Callable[[], float], runs: int
) -> tuple[float, float]:
    """Median and p95 of the first time a random walk reaches 1: a step after each `gap()`
    seconds, +up with probability p_up, else +down (log likelihood ratios over ln(1/alpha))."""
    times = []
    for _ in range(runs):
        t = level = 0.0
        while level < 1.0:
            t += gap()
            level += up if rng.random() < p_up else down
        times.append(t)
    return statistics.median(times), percentile(times, 95)


@functools.cache  # the report and the target check ask for the same limits
def share_sprt(
    p_c: float,
    p_b: float,
    canary_rps: float,
    baseline_rps: float,
    alpha: float,
    tolerance: float,
    runs: int = 4000,
) -> tuple[float, float] | None:
    """Median and p95 onset-to-detection of the two-sample SPRT on the canary's share of the
    bad requests (what the share tests see), told the true rates; None if the canary's share
    is not above the null share (the event says nothing about this fault)."""
    odds0 = (1.0 + tolerance) * canary_rps / baseline_rps
    theta0, per_s = odds0 / (1.0 + odds0), canary_rps * p_c + baseline_rps * p_b
    if per_s <= 0.0:
        return None
    theta1 = canary_rps * p_c / per_s
    if theta1 <= theta0:
        return None
    scale = math.log(1.0 / alpha)
    rng = random.Random(20261125)
    return _sprt_times(
        rng,
        math.log(theta1 / theta0) / scale,
        math.log((1.0 - theta1) / (1.0 - theta0)) / scale,
        theta1,
        lambda: rng.expovariate(per_s),
        runs,
    )


@functools.cache
def _served(
    name: str, cohort: str, family: str, n: int = 100_000
) -> tuple[tuple[bool, ...], list[float]]:
    """n requests of one cohort after the fault's onset, served as `family` serves them
    outside its shared outages (at one instant: runs, bursts and a diurnal rate change when bad
    requests come, not how many; an outage is a spell the limit leaves out): ok, latency."""
    config = FleetConfig(family=dataclasses.replace(FAMILIES[family], shared_outage=None))
    fleet = ServingFleet(make_deployment(name, 1), SCENARIOS[name], seed=20261202, config=config)
    fleet.canary_started_ms = fleet.begin_ms
    assert fleet.onset_ms is not None
    items = [fleet.serve(cohort, fleet.onset_ms + 1000) for _ in range(n)]  # type: ignore[arg-type]
    served = [p for p in items if p is not None]
    return tuple(p.ok for p in served), sorted(p.latency_ms for p in served)


def _candidates(
    policy: Policy, name: str, family: str
) -> list[tuple[str, str, float, float, float, float]]:
    """The kinds of bad request the policy's share tests count, for scenario `name`: (event,
    rule, canary rate, baseline rate, alpha of that test, tolerance)."""
    out = []
    ok_c, lat_c = _served(name, "canary", family)
    ok_b, lat_b = _served(name, "baseline", family)
    for rule in policy.bind(()).rules:
        alpha = float(rule.params.get("alpha") or 0.01)  # type: ignore[arg-type]
        tolerance = float(rule.params.get("tolerance", 0.2))  # type: ignore[arg-type]
        if rule.detector_name == "error_rate":
            p_c = 1.0 - sum(ok_c) / len(ok_c)
            p_b = 1.0 - sum(ok_b) / len(ok_b)
            out.append(("errors", rule.name, p_c, p_b, alpha, tolerance))
        elif rule.detector_name == "latency":
            quantiles = [float(q) for q in rule.params.get("quantiles", ())]  # type: ignore[union-attr]
            for q in quantiles:
                threshold = lat_b[min(len(lat_b) - 1, int(q * len(lat_b)))]
                p_b = sum(x > threshold for x in lat_b) / len(lat_b)
                p_c = sum(x > threshold for x in lat_c) / len(lat_c)
                event = f"requests above the baseline's p{100 * q:g} ({threshold:.0f} ms)"
                out.append((event, rule.name, p_c, p_b, alpha / len(quantiles), tolerance))
    return out


#: The hard faults whose limit is a share test's: the others (silence, a score distribution)
#: are judged against TARGET_MEDIAN_S.
SHARE_FAULTS = ("latency_p99_x2", "tail_only_x3", "timeouts_x10", "error_burst_x5")


def information_limit(
    policy: Policy, plan: RolloutPlan, rate: float, name: str, family: str = "independent"
) -> Limit | None:
    """The shortest SPRT median over the kinds of bad request the policy's share tests count
    (Monte Carlo, seeds fixed; rates from 100,000 requests of each cohort). For that one
    alternative no test of the same event has a shorter expected time (Wald and Wolfowitz); a
    test that must also find the alternative and the onset is slower."""
    if name not in SHARE_FAULTS:
        return None
    share = plan.steps[0].canary_percent / 100.0
    baseline_rps = rate * (1.0 - share) / share
    best: Limit | None = None
    for event, rule, p_c, p_b, alpha, tolerance in _candidates(policy, name, family):
        times = share_sprt(p_c, p_b, rate, baseline_rps, alpha, tolerance)
        if times is not None and (best is None or times[0] < best.median_s):
            best = Limit(name, event, rule, alpha, tolerance, rate, baseline_rps, p_c, p_b, *times)
    return best


def limits_text(limits: list[Limit]) -> str:
    lines = [
        "Information limits (Wald's SPRT on the canary's share of one kind of bad request, told "
        "the true rates and the onset, at the alpha and tolerance of the test that counts it; "
        "the fastest such kind; 4000 Monte Carlo runs each). A hard fault's target: its median "
        f"within {LIMIT_FACTOR:g}x its limit.",
        "",
        "| fault | bad requests | rule | canary rate | baseline rate | alpha | limit: median "
        "| p95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {x.scenario} | {x.event} | {x.rule} | {x.p_canary:.2%} of {x.canary_rps:g} req/s "
        f"| {x.p_baseline:.2%} of {x.baseline_rps:g} req/s | {x.alpha:.3g} | "
        f"{x.median_s:.1f} s | {x.p95_s:.1f} s |"
        for x in limits
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    scenario: str
    hard: bool
    expected: str
    runs: int
    rolled_back: int
    detected: int
    early: int
    promoted: int
    undecided: int
    times: list[float]
    rules: Counter[str]
    cpu_s: float
    #: The median of the fault's information limit (None: judged against TARGET_MEDIAN_S).
    limit_s: float | None = None

    @property
    def detection_rate(self) -> float:
        return self.detected / self.runs if self.runs else 0.0

    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def p95(self) -> float | None:
        return percentile(self.times, 95) if self.times else None


def summarize(scenario: str, results: list[Result], limit_s: float | None = None) -> Row:
    sc = SCENARIOS[scenario]
    times = [r.detection_s for r in results if r.detection_s is not None and r.detection_s >= 0]
    rules: Counter[str] = Counter(r.rule for r in results if r.rule)
    return Row(
        scenario=scenario,
        hard=sc.hard,
        expected=sc.expected,
        runs=len(results),
        rolled_back=sum(r.action == "rollback" for r in results),
        detected=len(times),
        early=sum(
            r.action == "rollback" and r.detection_s is not None and r.detection_s < 0
            for r in results
        ),
        promoted=sum(r.action == "promote" for r in results),
        undecided=sum(r.action is None for r in results),
        times=times,
        rules=rules,
        cpu_s=sum(r.cpu_s for r in results),
        limit_s=limit_s,
    )


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _rules(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common(3)) or "-"


def _fault_cells(r: Row) -> str:
    median = r.median()
    met = "-"
    if r.hard:
        bound = TARGET_MEDIAN_S if r.limit_s is None else LIMIT_FACTOR * r.limit_s
        met = (
            "yes"
            if r.detection_rate >= TARGET_DETECTION and median is not None and median <= bound
            else "**no**"
        )
    return (
        f"{r.scenario} | {'yes' if r.hard else ''} | {r.runs} | {r.detected} "
        f"({_pct(r.detection_rate)}) | {_pct(lower_bound(r.detected, r.runs))} | "
        f"{_s(median)} | {_s(r.p95())} | {_s(r.limit_s)} | {r.early} | {r.promoted} | "
        f"{r.undecided} | "
        f"{_rules(r.rules)} | {met} |"
    )


_FAULT_HEAD = (
    "scenario | hard | runs | detected (rolled back after onset) | 95% lower bound | "
    "median onset to rollback | p95 | limit | before onset | promoted | undecided | "
    "rules that fired | target met |"
)


def fault_table(rows: list[Row]) -> str:
    lines = ["| " + _FAULT_HEAD, "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {_fault_cells(r)}" for r in rows]
    return "\n".join(lines)


def _healthy_cells(row: Row) -> str:
    bound = upper_bound(row.rolled_back, row.runs)
    met = "yes" if bound <= TARGET_FALSE_ROLLBACK else "**no**"
    point = row.rolled_back / row.runs if row.runs else 0.0
    return (
        f"{row.runs} | {row.rolled_back} | {_pct(point)} | {_pct(bound)} | "
        f"{row.promoted} | {row.undecided} | {_rules(row.rules)} | {met} |"
    )


_HEALTHY_HEAD = (
    "runs | false rollbacks | rate | 95% upper bound | promoted | "
    "undecided | rules that fired | target met (bound <= 1%) |"
)


def healthy_table(row: Row) -> str:
    return "\n".join(
        [
            "| scenario | " + _HEALTHY_HEAD,
            "|---|---|---|---|---|---|---|---|---|",
            f"| healthy | {_healthy_cells(row)}",
        ]
    )


@dataclass
class Section:
    """The results of one traffic family at one first-step share."""

    family: str
    share: float | None
    rows: list[Row]
    healthy: Row | None

    @property
    def cpu_s(self) -> float:
        return sum(r.cpu_s for r in self.rows) + (self.healthy.cpu_s if self.healthy else 0.0)

    def percent(self, plan: str) -> float:
        return plan_at(plan, self.share).steps[0].canary_percent

    def is_default(self, plan: str) -> bool:
        return (
            self.family == "independent"
            and self.percent(plan) == PLANS[plan].steps[0].canary_percent
        )


def healthy_summary(sections: list[Section], plan: str) -> str:
    lines = [
        "| family | first step | " + _HEALTHY_HEAD,
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {x.family} | {x.percent(plan):g}% | {_healthy_cells(x.healthy)}"
        for x in sections
        if x.healthy is not None
    ]
    return "\n".join(lines)


def fault_summary(sections: list[Section], plan: str) -> str:
    lines = [
        "| family | first step | " + _FAULT_HEAD,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {x.family} | {x.percent(plan):g}% | {_fault_cells(r)}" for x in sections for r in x.rows
    ]
    return "\n".join(lines)


def _plan_line(args: argparse.Namespace, share: float | None) -> str:
    plan = plan_at(args.plan, share)
    steps = ", ".join(
        f"{s.canary_percent:g}% (bake {s.min_bake_s:g} s, {s.min_samples} samples)"
        for s in plan.steps
    )
    name = f"Plan `{args.plan}`"
    if plan is not PLANS[args.plan]:
        name += f" with its first step at {plan.steps[0].canary_percent:g}%"
    return f"- {name}: {steps}; deadline {plan.deadline_s:g} s."


def _traffic_lines(args: argparse.Namespace, section: Section) -> list[str]:
    percent = section.percent(args.plan)
    batch = (
        "one record per prediction"
        if args.canary_batch_ms == 0
        else f"batched every {args.canary_batch_ms:g} ms"
    )
    lines = [
        f"- Traffic: {args.rate:g} canary requests/s in the first step (baseline "
        f"{args.rate * (100 / percent - 1):g} req/s); canary predictions "
        f"{batch}, baseline predictions batched every second; the core judges every record "
        "and ticks every second of event time."
    ]
    if section.family != "independent":
        family = FAMILIES[section.family]
        if args.run_length is not None and family.error_runs is not None:
            family = family.with_run_length(args.run_length)
        runs = ""
        if family.error_runs is not None:
            runs = f" (mean run {family.error_runs.run_length:g} requests)"
        lines.insert(0, f"- Traffic family `{family.name}`: {family.summary}{runs}.")
    return lines


def _section_body(args: argparse.Namespace, policy: Policy, section: Section) -> list[str]:
    parts: list[str] = []
    if section.healthy is not None:
        parts += ["Healthy rollouts (false rollbacks):", "", healthy_table(section.healthy), ""]
    if section.rows:
        parts += [
            "Faults (onset to the rollback command; target for hard faults: detected in >= 99% "
            f"of runs, median within {LIMIT_FACTOR:g}x the fault's information limit, or "
            f"{TARGET_MEDIAN_S:g} s where none is computed):",
            "",
            fault_table(section.rows),
            "",
        ]
    plan = plan_at(args.plan, section.share)
    limits = [
        x
        for r in section.rows
        if (x := information_limit(policy, plan, args.rate, r.scenario, section.family))
    ]
    if limits:
        parts += [limits_text(limits), ""]
    return parts


def report(args: argparse.Namespace, policy: Policy, sections: list[Section], wall_s: float) -> str:
    """One section: the header and its tables. More: the shared header, each family and share
    with its plan, traffic and tables, then a summary table of all of them."""
    if args.policy:
        policy_line = f"`{Path(args.policy).name}` (name `{policy.name}`; an experiment)"
    else:
        digest = hashlib.sha256(default_policy_text().encode()).hexdigest()[:12]
        policy_line = f"the default policy `controller/policies/default.yaml` (sha256 {digest})"
    cpu = sum(x.cpu_s for x in sections)
    code = f"- Code: commit {commit()}. Policy: {policy_line}."
    onset = f"- Fault onset {args.onset:g} s after the canary gets traffic."
    machine = (
        f"- Machine: {os.cpu_count()} cores ({cpu_model()}), Python "
        f"{platform.python_version()}, {args.workers} worker processes; "
        f"{wall_s / 60:.1f} min wall, {cpu / 60:.1f} min CPU."
    )
    parts = [f"Command: `{command_line(args)}`", ""]
    if len(sections) == 1:
        section = sections[0]
        parts += [
            code,
            _plan_line(args, section.share),
            *_traffic_lines(args, section),
            onset,
            machine,
            "",
            *_section_body(args, policy, section),
        ]
        return "\n".join(parts)
    parts += [code, onset, machine, ""]
    for section in sections:
        parts += [
            f"### Family `{section.family}`, first step {section.percent(args.plan):g}%",
            "",
            _plan_line(args, section.share),
            *_traffic_lines(args, section),
            "",
            *_section_body(args, policy, section),
        ]
    parts += ["### Summary", ""]
    if any(x.healthy is not None for x in sections):
        parts += ["Healthy rollouts:", "", healthy_summary(sections, args.plan), ""]
    if any(x.rows for x in sections):
        parts += ["Faults:", "", fault_summary(sections, args.plan), ""]
    return "\n".join(parts)


def command_line(args: argparse.Namespace) -> str:
    words = ["python bench/detection.py"]
    defaults = vars(parser().parse_args([]))
    for key, value in vars(args).items():
        if key == "update_docs" or value == defaults.get(key):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, list):
            words.append(f"{flag} {' '.join(value)}")
        else:
            words.append(f"{flag} {value}")
    return " ".join(words)


def update_docs(path: Path, text: str) -> None:
    doc = path.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} markers to write between")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def _families(text: str) -> list[str]:
    names = list(FAMILIES) if text == "all" else [x.strip() for x in text.split(",")]
    unknown = [x for x in names if x not in FAMILIES]
    if unknown or not names:
        known = ", ".join(FAMILIES)
        raise argparse.ArgumentTypeError(f"unknown family {unknown}; known: {known} (or all)")
    return names


def _shares(text: str) -> list[float]:
    try:
        shares = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of percents: {text!r}") from None
    if not shares or not all(0.0 < x <= 100.0 for x in shares):
        raise argparse.ArgumentTypeError(f"canary shares must be in (0, 100]: {text!r}")
    return shares


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=100, help="runs per hard fault scenario")
    p.add_argument("--other-runs", type=int, default=50, help="runs per other fault scenario")
    p.add_argument("--healthy", type=int, default=500, help="healthy rollouts")
    p.add_argument("--rate", type=float, default=20.0, help="canary req/s in the first step")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument(
        "--scenarios",
        nargs="+",
        default=[name for name in SCENARIOS if name != "healthy"],
        choices=[name for name in SCENARIOS if name != "healthy"],
        help="fault scenarios to run",
    )
    p.add_argument("--plan", default="short", choices=list(PLANS), help="the rollout plan")
    p.add_argument("--onset", type=float, default=60.0, help="fault onset after the canary starts")
    p.add_argument(
        "--canary-batch-ms",
        type=float,
        default=250.0,
        help="canary predictions batched every N ms (0: one record each)",
    )
    p.add_argument("--seed", type=int, default=1, help="first seed; run k uses seed + k")
    p.add_argument(
        "--family",
        default="independent",
        help="traffic families, comma-separated, or all: " + ", ".join(FAMILIES),
    )
    p.add_argument(
        "--share",
        default=None,
        help="first-step canary percents, comma-separated (e.g. 5,20,50; default: the plan's)",
    )
    p.add_argument(
        "--run-length",
        type=float,
        default=None,
        help="mean length of the error runs in requests (families with error runs)",
    )
    p.add_argument("--policy", default=None, help="a policy file (experiments; default policy)")
    p.add_argument(
        "--update-docs",
        type=Path,
        default=None,
        help="write the results of the independent family at the plan's first step into FILE",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    cli = parser()
    args = cli.parse_args(argv)
    commit()  # the code measured is the code at the start: read it before the runs
    try:
        families = _families(args.family)
        shares: list[float | None] = [None] if args.share is None else [*_shares(args.share)]
    except argparse.ArgumentTypeError as exc:
        cli.error(str(exc))
    policy = load_policy(args.policy) if args.policy else default_policy()
    batch = None if args.canary_batch_ms == 0 else args.canary_batch_ms / 1000
    grid = [(family, share) for family in families for share in shares]

    def job(family: str, share: float | None, scenario: str, k: int) -> Job:
        return Job(
            scenario,
            args.seed + k,
            args.rate,
            batch,
            args.onset,
            args.plan,
            family=family,
            share=share,
            run_length=args.run_length,
        )

    runs = {name: args.runs if SCENARIOS[name].hard else args.other_runs for name in args.scenarios}
    healthy_jobs = [job(f, x, "healthy", k) for f, x in grid for k in range(args.healthy)]
    fault_jobs = [
        job(f, x, name, k) for f, x in grid for name in args.scenarios for k in range(runs[name])
    ]
    # healthy rollouts run longest: interleave them so the workers finish together
    jobs: list[Job] = []
    for i in range(max(len(healthy_jobs), len(fault_jobs))):
        jobs += healthy_jobs[i : i + 1] + fault_jobs[i : i + 1]

    def limit_median(family: str, share: float | None, name: str) -> float | None:
        limit = information_limit(policy, plan_at(args.plan, share), args.rate, name, family)
        return None if limit is None else limit.median_s

    results: dict[tuple[str, float | None, str], list[Result]] = {}
    started = time.monotonic()
    ctx = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
    with ctx.Pool(args.workers, initializer=_init_worker, initargs=(args.policy,)) as pool:
        for done, result in enumerate(pool.imap_unordered(run_one, jobs, chunksize=2), start=1):
            results.setdefault((result.family, result.share, result.scenario), []).append(result)
            if done % 50 == 0 or done == len(jobs):
                elapsed = time.monotonic() - started
                print(
                    f"  {done}/{len(jobs)} runs, {elapsed / 60:.1f} min",
                    file=sys.stderr,
                    flush=True,
                )
    wall = time.monotonic() - started

    sections = [
        Section(
            family,
            share,
            rows=[
                summarize(name, results[(family, share, name)], limit_median(family, share, name))
                for name in args.scenarios
                if runs[name]
            ],
            healthy=summarize("healthy", results[(family, share, "healthy")])
            if args.healthy
            else None,
        )
        for family, share in grid
    ]
    text = report(args, policy, sections, wall)
    print(text)
    if args.update_docs is not None:
        default = [x for x in sections if x.is_default(args.plan)]
        if not default:
            raise SystemExit("--update-docs needs the independent family at the plan's share")
        update_docs(args.update_docs, report(args, policy, default, wall))


if __name__ == "__main__":
    main()
