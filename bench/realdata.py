"""Real-data benchmark: what the policy decides for canaries served on scikit-learn's bundled
datasets, with real features and real model outputs (controller.dev.realdata).

Per dataset it runs identical canaries (A/A: the same model on the same inputs, which should be
promoted) and each fault (which should be rolled back), each one closed-loop rollout with the
rollout core in the loop. It prints, per dataset and scenario, the runs, how many were
promoted, rolled back and left undecided, the rules that fired (the rollback command's
`failed_rules`), the fields the rollback reasons name, and the median time from the deployment
request to the terminal command; then the A/A false rollbacks over all datasets with a 95%
upper confidence bound (one-sided Clopper-Pearson). A reference table says what an exact
skew detector would see on the same data: each field's exact divergence from its training
profile, and how often a window of the rule's `min_samples` canary values crosses the
threshold by sampling noise alone.

    python bench/realdata.py [--aa-runs 20] [--fault-runs 10] [--datasets ...] [--faults ...]
                             [--workers 2] [--dry-run RULE ...] [--update-docs docs/realdata.md]

`--dry-run RULE` is an experiment: the default policy with those rules evaluated but never
acted on, to see what the other rules decide when one is known to misfire. Not a test: it
prints figures.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import platform
import random
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

import schemas as s  # noqa: E402
from bench.common import commit, upper_bound  # noqa: E402
from controller.core.policy import Policy  # noqa: E402
from controller.core.stats.distance import js_divergence, l_infinity  # noqa: E402
from controller.dev import realdata as rd  # noqa: E402
from controller.dev.simulate import PLANS  # noqa: E402
from controller.policy_io import default_policy, default_policy_text, parse_policy  # noqa: E402
from controller.replay.replay import Runner  # noqa: E402

#: Where --update-docs writes: between these markers; an experiment (--dry-run) writes between
#: the `realdata-experiment` ones.
MARKERS = "<!-- bench:{name}:begin -->", "<!-- bench:{name}:end -->"
#: The issue's target: no false rollback in at least this many A/A rollouts.
TARGET_AA_RUNS = 60
#: Windows drawn per dataset for the exact reference.
REFERENCE_WINDOWS = 2000

# ---------------------------------------------------------------------------------------------
# One run (in a worker process)
# ---------------------------------------------------------------------------------------------

_POLICY: Policy | None = None


def policy_with_dry_run(rules: list[str]) -> Policy:
    """The default policy, with the named rules evaluated and reported but never acted on (an
    experiment: what the other rules decide when one rule is known to misfire)."""
    if not rules:
        return default_policy()
    doc = yaml.safe_load(default_policy_text())
    known = [rule["name"] for rule in doc["rules"]]
    unknown = sorted(set(rules) - set(known))
    if unknown:
        raise SystemExit(f"unknown rules {unknown}; the default policy's rules: {known}")
    for rule in doc["rules"]:
        if rule["name"] in rules:
            rule["dry_run"] = True
    return parse_policy(yaml.safe_dump(doc, sort_keys=False))


def _init_worker(dry_run: list[str]) -> None:
    global _POLICY
    _POLICY = policy_with_dry_run(dry_run)


@dataclass(frozen=True)
class Job:
    dataset: str
    fault: str
    seed: int
    rate: float
    plan: str
    split_seed: int


@dataclass(frozen=True)
class Result:
    dataset: str
    fault: str
    seed: int
    action: str | None
    rules: tuple[str, ...]
    fields: tuple[str, ...]
    time_to_decision_s: float | None
    records: int
    cpu_s: float


#: "name JS 0.302 >= 0.1" or "name L-inf 0.41 >= 0.3" in a training-serving skew reason
_FIELD = re.compile(r"(?:: |, )([^,:]+?) (?:JS|L-inf) [0-9.]+ >= ")


def fields_named(reason: str | None) -> tuple[str, ...]:
    """The fields a training_serving_skew reason lists as over their threshold."""
    if not reason or "training-serving skew" not in reason:
        return ()
    skew = reason[reason.index("training-serving skew") :]
    return tuple(_FIELD.findall(skew))


def run_one(job: Job) -> Result:
    assert _POLICY is not None, "the worker initializer loads the policy"
    started = time.process_time()
    outcome = rd.rollout(
        job.dataset,
        job.fault,
        Runner(_POLICY),
        seed=job.seed,
        config=rd.TrafficConfig(rate=job.rate),
        rollout_plan=PLANS[job.plan],
        split_seed=job.split_seed,
    )
    return Result(
        dataset=job.dataset,
        fault=job.fault,
        seed=job.seed,
        action=outcome.terminal_action,
        rules=outcome.failed_rules,
        fields=fields_named(outcome.terminal_reason),
        time_to_decision_s=outcome.time_to_decision_s,
        records=outcome.records,
        cpu_s=time.process_time() - started,
    )


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# The exact reference: what an exact skew detector would see on the same data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    dataset: str
    population_field: str
    population_distance: float
    window: int
    window_rate: float
    window_fields: Counter[str]


def _skew_params(policy: Policy) -> tuple[int, float, float]:
    """min_samples, js and L-inf thresholds of the policy's training_serving_skew rule."""
    rules = policy.bind(()).rules
    rule = next((r for r in rules if r.detector_name == "training_serving_skew"), None)
    params: dict[str, object] = {} if rule is None else dict(rule.params)
    return (
        int(str(params.get("min_samples") or 300)),
        float(str(params.get("js_threshold") or 0.1)),
        float(str(params.get("linf_threshold") or 0.3)),
    )


def distance(values: Any, profile: s.FeatureProfile) -> float:
    """The exact distance of some values to a profile: JS (bits) on its bins for numbers,
    L-inf between class shares for categories."""
    if profile.kind == "categorical":
        counts = Counter(values.tolist())
        n = sum(counts.values())
        keys = sorted(set(profile.categories) | set(counts))
        return l_infinity(
            [counts.get(k, 0) / n for k in keys], [profile.categories.get(k, 0.0) for k in keys]
        )
    return js_divergence(rd.bin_counts(values, profile.bin_edges), profile.proportions)


def reference(dataset: str, policy: Policy, split_seed: int, seed: int) -> Reference:
    """Exact distances of the served rows (the A/A canary's population) to the training
    profile: the largest over all fields; and the share of windows of `min_samples` rows drawn
    with replacement in which some field reaches its threshold, counted exactly on the
    profile's bins (no sketch)."""
    data = rd.prepare(dataset, split_seed)
    profile = data.training_profile()
    served = rd.cohorts(dataset, "identical", split_seed)["baseline"]
    window, js_threshold, linf_threshold = _skew_params(policy)
    columns: list[tuple[str, Any, s.FeatureProfile, float]] = [
        (fp.name, data.x_serve[:, j], fp, js_threshold) for j, fp in enumerate(profile.features)
    ]
    prediction = profile.prediction
    assert prediction is not None
    if prediction.kind == "categorical":
        labels = [max(o, key=o.__getitem__) for o in served.outputs if isinstance(o, dict)]
        columns.append(("prediction", np.asarray(labels), prediction, linf_threshold))
    else:
        values = np.asarray(served.outputs, dtype=float)
        columns.append(("prediction", values, prediction, js_threshold))
    worst, worst_name = max((distance(v, fp), name) for name, v, fp, _ in columns)
    rng = random.Random(f"{seed}/reference/{dataset}")
    n = len(data.x_serve)
    hits = 0
    over: Counter[str] = Counter()
    for _ in range(REFERENCE_WINDOWS):
        rows = np.asarray([rng.randrange(n) for _ in range(window)])
        crossed = [name for name, v, fp, t in columns if distance(v[rows], fp) >= t]
        hits += bool(crossed)
        over.update(crossed)
    return Reference(dataset, worst_name, worst, window, hits / REFERENCE_WINDOWS, over)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _top(counter: Counter[str], k: int = 3) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common(k)) or "-"


def dataset_table(datasets: list[str], split_seed: int) -> str:
    lines = [
        "| dataset | task | training / serving rows | features (integer) | fault feature | "
        "model on the serving part | degraded model |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in datasets:
        data = rd.prepare(name, split_seed)
        measure = "R^2" if data.task == "regression" else "accuracy"
        lines.append(
            f"| {name} | {data.task} | {len(data.x_train)} / {len(data.x_serve)} | "
            f"{len(data.feature_names)} ({len(data.integer_features)}) | "
            f"{data.spec.fault_feature} | {measure} {data.score(data.model):.3f} | "
            f"{measure} {data.score(rd.degraded_model(name, split_seed)):.3f} |"
        )
    return "\n".join(lines)


def reference_table(refs: list[Reference]) -> str:
    lines = [
        "| dataset | largest exact distance of the served rows to the profile | windows of "
        "n canary values with a field over its threshold (exact counts) | fields most often "
        "over |",
        "|---|---|---|---|",
    ]
    for r in refs:
        lines.append(
            f"| {r.dataset} | {r.population_distance:.3f} ({r.population_field}) | "
            f"{r.window_rate:.1%} (n = {r.window}) | {_top(r.window_fields)} |"
        )
    return "\n".join(lines)


def results_table(
    results: dict[tuple[str, str], list[Result]], datasets: list[str], faults: list[str]
) -> str:
    lines = [
        "| dataset | scenario | expected | runs | promoted | rolled back | undecided | "
        "rules that fired | fields named by the skew reasons | median time to decision |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in datasets:
        for name in faults:
            rs = results.get((dataset, name), [])
            if not rs:
                continue
            rules: Counter[str] = Counter(r for x in rs for r in x.rules)
            fields: Counter[str] = Counter(f for x in rs for f in x.fields)
            times = [x.time_to_decision_s for x in rs if x.time_to_decision_s is not None]
            lines.append(
                f"| {dataset} | {name} | {rd.FAULTS[name].expected} | {len(rs)} | "
                f"{sum(x.action == 'promote' for x in rs)} | "
                f"{sum(x.action == 'rollback' for x in rs)} | "
                f"{sum(x.action is None for x in rs)} | {_top(rules)} | {_top(fields)} | "
                f"{_s(statistics.median(times) if times else None)} |"
            )
    return "\n".join(lines)


def aa_summary(results: dict[tuple[str, str], list[Result]], datasets: list[str]) -> str:
    rs = [r for d in datasets for r in results.get((d, "identical"), [])]
    false = sum(r.action == "rollback" for r in rs)
    bound = upper_bound(false, len(rs))
    met = "yes" if len(rs) >= TARGET_AA_RUNS and false == 0 else "**no**"
    return "\n".join(
        [
            "| A/A rollouts | datasets | false rollbacks | rate | 95% upper bound | promoted | "
            f"undecided | target met (0 in >= {TARGET_AA_RUNS}) |",
            "|---|---|---|---|---|---|---|---|",
            f"| {len(rs)} | {len(datasets)} | {false} | "
            f"{(false / len(rs) if rs else 0.0):.1%} | {bound:.1%} | "
            f"{sum(r.action == 'promote' for r in rs)} | {sum(r.action is None for r in rs)} | "
            f"{met} |",
        ]
    )


def command_line(args: argparse.Namespace) -> str:
    words = ["python bench/realdata.py"]
    defaults = vars(parser().parse_args([]))
    for key, value in vars(args).items():
        if key == "update_docs" or value == defaults.get(key):
            continue
        flag = "--" + key.replace("_", "-")
        words.append(f"{flag} {' '.join(value)}" if isinstance(value, list) else f"{flag} {value}")
    return " ".join(words)


def report(
    args: argparse.Namespace,
    results: dict[tuple[str, str], list[Result]],
    refs: list[Reference],
    wall_s: float,
) -> str:
    import sklearn

    plan = PLANS[args.plan]
    steps = ", ".join(
        f"{s.canary_percent:g}% (bake {s.min_bake_s:g} s, {s.min_samples} samples)"
        for s in plan.steps
    )
    digest = hashlib.sha256(default_policy_text().encode()).hexdigest()[:12]
    dry_run = ""
    if args.dry_run:
        names = ", ".join(f"`{name}`" for name in args.dry_run)
        dry_run = f", **an experiment**: {names} in dry run (evaluated, never acted on)"
    cpu = sum(r.cpu_s for rs in results.values() for r in rs)
    faults = ["identical", *args.faults]
    parts = [
        f"Command: `{command_line(args)}`",
        "",
        f"- Code: commit {commit()}. Policy: the default policy "
        f"`controller/policies/default.yaml` (sha256 {digest}){dry_run}.",
        f"- Plan `{args.plan}`: {steps}; deadline {plan.deadline_s:g} s.",
        f"- Traffic: {args.rate:g} canary requests/s in the first step, rows drawn with "
        f"replacement from the serving part (split seed {args.split_seed}); canary predictions "
        "batched every 250 ms, baseline every second; the core judges every record and ticks "
        "every second of event time. Faults act from the canary's first request.",
        f"- Machine: {os.cpu_count()} cores, Python {platform.python_version()}, scikit-learn "
        f"{sklearn.__version__}, {args.workers} worker processes; {wall_s / 60:.1f} min wall, "
        f"{cpu / 60:.1f} min CPU.",
        "",
        "Datasets (split 60 % training, 40 % serving; the model's quality on the serving part):",
        "",
        dataset_table(args.datasets, args.split_seed),
        "",
        "A/A (identical canaries; a rollback is a false rollback):",
        "",
        aa_summary(results, args.datasets),
        "",
        "Per dataset and scenario (time to decision: deployment request to the terminal command):",
        "",
        results_table(results, args.datasets, faults),
        "",
    ]
    if refs:
        parts += [
            "What an exact skew detector would see on the same rows (no sketch; the served "
            "rows' distances to the training profile, and windows of the rule's min_samples "
            f"rows drawn with replacement, {REFERENCE_WINDOWS} per dataset; thresholds JS 0.1, "
            "L-inf 0.3):",
            "",
            reference_table(refs),
            "",
        ]
    return "\n".join(parts)


def update_docs(path: Path, text: str, name: str) -> None:
    begin, end = (marker.format(name=name) for marker in MARKERS)
    doc = path.read_text(encoding="utf-8")
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path} has no {begin} ... {end} markers to write between")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    faults = [name for name in rd.FAULTS if name != "identical"]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--aa-runs", type=int, default=20, help="identical canaries per dataset")
    p.add_argument("--fault-runs", type=int, default=10, help="runs per fault per dataset")
    p.add_argument("--datasets", nargs="+", default=list(rd.DATASETS), choices=list(rd.DATASETS))
    p.add_argument("--faults", nargs="+", default=faults, choices=faults)
    p.add_argument("--rate", type=float, default=20.0, help="canary req/s in the first step")
    p.add_argument("--plan", default="short", choices=list(PLANS), help="the rollout plan")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--seed", type=int, default=1, help="first seed; run k uses seed + k")
    p.add_argument("--split-seed", type=int, default=rd.DEFAULT_SPLIT_SEED)
    p.add_argument(
        "--dry-run",
        nargs="+",
        default=[],
        metavar="RULE",
        help="an experiment: these rules of the default policy in dry run",
    )
    p.add_argument("--update-docs", type=Path, default=None, help="write the results into FILE")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    commit()  # the code measured is the code at the start: read it before the runs
    policy = policy_with_dry_run(args.dry_run)
    # train and precompute in the parent, so forked workers share the caches
    for dataset in args.datasets:
        for name in ["identical", *args.faults]:
            rd.cohorts(dataset, name, args.split_seed)

    def job(dataset: str, fault: str, k: int) -> Job:
        return Job(dataset, fault, args.seed + k, args.rate, args.plan, args.split_seed)

    aa = [job(d, "identical", k) for d in args.datasets for k in range(args.aa_runs)]
    faulty = [
        job(d, f, k) for d in args.datasets for f in args.faults for k in range(args.fault_runs)
    ]
    jobs: list[Job] = []
    for i in range(max(len(aa), len(faulty))):  # interleave: A/A rollouts run longest
        jobs += aa[i : i + 1] + faulty[i : i + 1]

    results: dict[tuple[str, str], list[Result]] = {}
    started = time.monotonic()
    ctx = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
    with ctx.Pool(args.workers, initializer=_init_worker, initargs=(args.dry_run,)) as pool:
        for done, result in enumerate(pool.imap_unordered(run_one, jobs, chunksize=1), start=1):
            results.setdefault((result.dataset, result.fault), []).append(result)
            if done % 20 == 0 or done == len(jobs):
                minutes = (time.monotonic() - started) / 60
                print(f"  {done}/{len(jobs)} runs, {minutes:.1f} min", file=sys.stderr, flush=True)
    wall = time.monotonic() - started
    for rs in results.values():
        rs.sort(key=lambda r: r.seed)
    refs = [reference(d, policy, args.split_seed, args.seed) for d in args.datasets]
    text = report(args, results, refs, wall)
    print(text)
    if args.update_docs is not None:
        update_docs(args.update_docs, text, "realdata-experiment" if args.dry_run else "realdata")


if __name__ == "__main__":
    main()
