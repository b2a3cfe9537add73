"""Rollouts over real data: scikit-learn's bundled datasets, real models, real outputs.

The simulator (`controller.dev.simulate`) draws features and scores from distributions that the
project chose; a detector tuned on them may still fail on data with integer, binary or
tightly clustered features. This module serves the datasets that ship inside scikit-learn (no
downloads) instead:

- `prepare(dataset)` splits a dataset (seeded, stratified for classification) into a training
  part and a serving part, trains the model on the training part (a `StandardScaler` then
  `LogisticRegression` for classification, `Ridge` for regression) and profiles the training
  part exactly: per feature a `FeatureProfile` of its kind (binary, integer or continuous)
  with edges at the deciles of the training values (see `numeric_profile`) and the training
  rows counted on them; for the prediction, the
  model's output on the training part (binary: the probability of class 1 as a score, binned
  the same way; multiclass: the shares of the predicted classes; regression: the output).
- `FAULTS` are what a canary can get wrong with real data: nothing (`identical`, an A/A
  rollout), a unit bug, a standardization bug, a skipped scaler, missing values, or a worse
  model whose outputs still look plausible. `cohorts(data, fault)` computes what each cohort
  serves for every serving row (the features it reports and the model's output on them), once.
- `RealDataLoop` runs one rollout with a controller in the loop (`controller.replay.replay.
  Runner` is one): requests arrive as a Poisson process at a constant rate, each draws a row of
  the serving part (with replacement), a router splits them between the cohorts by the share
  it was last told, each request gets a latency (the simulator's healthy `Behaviour`: a
  lognormal body and a slow tail) and maybe an error; predictions are reported in batches
  (baseline every second, canary every 250 ms). Commands reach the router after a short delay
  and are acknowledged (TrafficApplied); approvals are granted after a delay; the log ends
  shortly after a terminal command is applied, or at the deadline. `records(...)` is the open
  loop at a fixed share, without a controller.

The simulator's `ClosedLoop` builds its own fleet from a scenario name, so it cannot serve
these rows without changing it; this loop is a small one of its own, with the same
conventions (times in integer milliseconds since `simulate.EPOCH`, a seed-derived start, one
`random.Random` per purpose, controller ticks on a one-second grid of event time).

Everything is a function of the seeds: the split and the models of `split_seed`, the traffic
of `seed`. Needs scikit-learn (the `dev` extra: `pip install -e '.[dev]'`).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import schemas as s
from controller.dev.simulate import (
    ERROR_MIX,
    HEALTHY,
    PLANS,
    Behaviour,
    Controller,
    EventClock,
    LoopActors,
    LoopConfig,
    RolloutLoop,
    UnknownScenarioError,
    at,
    start_ms,
)
from schemas import Envelope
from schemas.events import resolvable_gap

try:
    import numpy as np
    from sklearn import datasets as _sk_datasets
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError(
        "controller.dev.realdata needs scikit-learn (and numpy): install the dev extra, "
        "`pip install -e '.[dev]'`"
    ) from error

Task = Literal["binary", "multiclass", "regression"]
CohortName = Literal["baseline", "canary"]

MODEL = "realdata-model"
BASELINE_VERSION = "r1"
CANARY_VERSION = "r2"
SOURCE_FLEET = "realdata/serving"
SOURCE_ROUTER = "realdata/router"
SOURCE_DEPLOYER = "realdata/deployer"
SOURCE_APPROVER = "realdata/approver"
#: Who acts around the controller in a real-data rollout (`RolloutLoop`).
ACTORS = LoopActors(
    deployer=SOURCE_DEPLOYER,
    router=SOURCE_ROUTER,
    approver=SOURCE_APPROVER,
    router_name="router-realdata",
    approver_name="approver-realdata",
    approval_reason=None,
)

#: Share of each dataset that trains the model; the rest is served.
TRAINING_SHARE = 0.6
DEFAULT_SPLIT_SEED = 0
#: Deciles: the profile's edges before deduplication.
PROFILE_QUANTILES = tuple(i / 10 for i in range(1, 10))
UNIT_FACTOR = 1000.0
MISSING_SHARE = 0.3
#: The degraded model learns from this share of the training part, with this share of its
#: labels wrong (classification: another class; regression: a target of another row).
DEGRADED_SHARE = 0.1
DEGRADED_LABEL_NOISE = 0.2
DEFAULT_LOOP = LoopConfig()


class RealDataError(UnknownScenarioError):
    """An unknown dataset or fault; the message lists the known ones."""


# ---------------------------------------------------------------------------------------------
# Datasets, models and training profiles
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """A bundled dataset: how to load it, its task, and the feature the faults hit."""

    name: str
    task: Task
    loader: Callable[[], Any]
    fault_feature: str
    summary: str


DATASETS: Mapping[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "breast_cancer",
            "binary",
            _sk_datasets.load_breast_cancer,
            "mean radius",
            "569 tumours, 30 continuous measurements; malignant (0) or benign (1)",
        ),
        DatasetSpec(
            "wine",
            "multiclass",
            _sk_datasets.load_wine,
            "magnesium",
            "178 wines, 13 chemical measurements (magnesium and proline integers); 3 cultivars",
        ),
        DatasetSpec(
            "digits",
            "multiclass",
            _sk_datasets.load_digits,
            "pixel_3_4",
            "1797 handwritten digits, 64 pixel intensities (integers 0..16); 10 classes",
        ),
        DatasetSpec(
            "diabetes",
            "regression",
            _sk_datasets.load_diabetes,
            "bmi",
            "442 patients, 10 standardized features (sex binary); disease progression",
        ),
    )
}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise RealDataError(f"unknown dataset {name!r}; known datasets: {known}") from None


@dataclass(frozen=True, eq=False)
class RealData:
    """One dataset split into training and serving parts, with its model and profile."""

    spec: DatasetSpec
    split_seed: int
    feature_names: tuple[str, ...]
    #: Features whose values are all integers: served as ints.
    integer_features: frozenset[str]
    #: Class names (as the prediction reports them); empty for regression.
    classes: tuple[str, ...]
    x_train: Any  # numpy arrays: rows x features, and targets
    y_train: Any
    x_serve: Any
    y_serve: Any
    model: Pipeline

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def task(self) -> Task:
        return self.spec.task

    def outputs(self, model: Pipeline, x: Any) -> list[s.PredictionValue]:
        """What a service reports for rows `x`: binary, the probability of class 1 (a score);
        multiclass, the class probabilities; regression, the number."""
        predict = model.predict if self.task == "regression" else model.predict_proba
        return _outputs(self.task, self.classes, predict, x)

    def training_profile(self) -> s.TrainingProfile:
        """The training part, profiled exactly (see `numeric_profile`)."""
        features = tuple(
            numeric_profile(name, self.x_train[:, j]) for j, name in enumerate(self.feature_names)
        )
        if self.task == "multiclass":
            predicted = self.model.predict(self.x_train)
            counts = {c: 0 for c in self.classes}
            for label in predicted.tolist():
                counts[self.classes[int(label)]] += 1
            total = len(predicted)
            prediction = s.FeatureProfile(
                name="prediction",
                kind="categorical",
                categories={c: n / total for c, n in counts.items()},
                allowed=self.classes,
                count=total,
            )
        else:
            values = np.asarray(self.outputs(self.model, self.x_train), dtype=float)
            prediction = numeric_profile("prediction", values)
            if self.task == "binary":
                prediction = prediction.model_copy(update={"domain_min": 0.0, "domain_max": 1.0})
        return s.TrainingProfile(
            dataset=f"sklearn-{self.name}-train-split{self.split_seed}",
            features=features,
            prediction=prediction,
        )

    def score(self, model: Pipeline) -> float:
        """The model's quality on the serving part: accuracy, or R^2 for regression."""
        return float(model.score(self.x_serve, self.y_serve))


def _outputs(
    task: Task, classes: Sequence[str], predict: Callable[[Any], Any], x: Any
) -> list[s.PredictionValue]:
    raw = predict(x)
    if task == "regression":
        return [float(v) for v in raw.tolist()]
    if task == "binary":
        return [float(p) for p in raw[:, 1].tolist()]
    return [dict(zip(classes, (float(p) for p in row), strict=True)) for row in raw.tolist()]


def numeric_profile(name: str, values: Any) -> s.FeatureProfile:
    """A numeric profile of `values` that states its kind, with each value counted exactly in
    its bin (below the first edge, [edge i, edge i+1), at or above the last edge), as
    `FeatureProfile` defines them; no missing values.

    - binary (every value 0 or 1): the edge 1;
    - integer (every value whole): edges at the deciles, rounded up to whole numbers;
    - continuous: edges at the deciles, dropping each edge the serving sketch could not tell
      from the one kept before it (`schemas.events.resolvable_gap`: 5 % apart), so that the
      decoder accepts the profile (a score that piles up against 1 has deciles 0.998, 0.999).
    """
    column = np.asarray(values, dtype=float)
    deciles = np.quantile(column, PROFILE_QUANTILES)
    kind: str
    if np.isin(column, (0.0, 1.0)).all():
        kind, edges = "binary", (1.0,)
    elif (column == np.round(column)).all():
        kind, edges = "integer", tuple(float(e) for e in np.unique(np.ceil(deciles)))
    else:
        kind, edges = "continuous", _resolvable(float(e) for e in np.unique(deciles))
    counts = bin_counts(column, edges)
    total = len(column)
    return s.FeatureProfile(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        bin_edges=edges,
        proportions=tuple(c / total for c in counts),
        missing_rate=0.0,
        count=total,
    )


def _resolvable(edges: Iterable[float]) -> tuple[float, ...]:
    kept: list[float] = []
    for edge in edges:
        if not kept or resolvable_gap(kept[-1], edge):
            kept.append(edge)
    return tuple(kept)


def bin_counts(values: Any, edges: Sequence[float]) -> list[int]:
    """How many values fall in each of the len(edges) + 1 bins of a numeric profile."""
    index = np.searchsorted(
        np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="right"
    )
    return np.bincount(index, minlength=len(edges) + 1).tolist()  # type: ignore[no-any-return]


def _model(task: Task) -> Pipeline:
    if task == "regression":
        return make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


@functools.cache
def prepare(dataset: str, split_seed: int = DEFAULT_SPLIT_SEED) -> RealData:
    """Load, split, train and profile `dataset` (cached: the same object for the same seeds)."""
    spec = dataset_spec(dataset)
    bunch = spec.loader()
    x = np.asarray(bunch.data, dtype=float)
    y = np.asarray(bunch.target)
    names = tuple(str(n) for n in bunch.feature_names)
    stratify = None if spec.task == "regression" else y
    x_train, x_serve, y_train, y_serve = train_test_split(
        x, y, train_size=TRAINING_SHARE, random_state=split_seed, stratify=stratify
    )
    classes: tuple[str, ...] = ()
    if spec.task != "regression":
        classes = tuple(str(c) for c in bunch.target_names)
    integer = frozenset(n for j, n in enumerate(names) if np.all(x[:, j] == np.round(x[:, j])))
    model = _model(spec.task).fit(x_train, y_train)
    return RealData(
        spec, split_seed, names, integer, classes, x_train, y_train, x_serve, y_serve, model
    )


@functools.cache
def degraded_model(dataset: str, split_seed: int = DEFAULT_SPLIT_SEED) -> Pipeline:
    """A worse model of the same kind: trained on `DEGRADED_SHARE` of the training part with
    `DEGRADED_LABEL_NOISE` of its labels wrong. Its outputs have the healthy model's form and
    range; only labels would show how much worse it is."""
    data = prepare(dataset, split_seed)
    rng = np.random.default_rng([split_seed, 1])
    n = len(data.y_train)
    stratify = None if data.task == "regression" else data.y_train
    keep, _ = train_test_split(
        np.arange(n), train_size=DEGRADED_SHARE, random_state=split_seed, stratify=stratify
    )
    x, y = data.x_train[keep], data.y_train[keep].copy()
    wrong = rng.random(len(y)) < DEGRADED_LABEL_NOISE
    if data.task == "regression":
        y[wrong] = rng.permutation(y)[wrong]
    else:
        k = len(data.classes)
        y[wrong] = (y[wrong] + rng.integers(1, k, size=int(wrong.sum()))) % k
    return _model(data.task).fit(x, y)


# ---------------------------------------------------------------------------------------------
# What each cohort serves: the faults
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """What one cohort serves for each row of the serving part: the features it reports and
    the model's output. With `missing_share`, each request has `missing_feature` missing with
    that probability and then reports `features_missing[i]` and `outputs_missing[i]` (the
    model filled the gap with the training mean)."""

    features: tuple[dict[str, s.FeatureValue], ...]
    outputs: tuple[s.PredictionValue, ...]
    missing_feature: str | None = None
    missing_share: float = 0.0
    features_missing: tuple[dict[str, s.FeatureValue], ...] = ()
    outputs_missing: tuple[s.PredictionValue, ...] = ()


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    expected: Literal["promote", "rollback"]


FAULTS: Mapping[str, Fault] = {
    f.name: f
    for f in (
        Fault(
            "identical", "the canary is the baseline's model on the same inputs (A/A)", "promote"
        ),
        Fault(
            "unit_bug",
            f"one feature reaches the canary x{UNIT_FACTOR:g} (another unit); the model sees it",
            "rollback",
        ),
        Fault(
            "standardization_bug",
            "the canary receives already standardized features (and standardizes them again)",
            "rollback",
        ),
        Fault(
            "scaler_skipped",
            "the canary's model skips its scaler: the features look right, the outputs do not",
            "rollback",
        ),
        Fault(
            "missing_values",
            f"{MISSING_SHARE:.0%} of one feature missing for the canary (filled with the "
            "training mean by the model)",
            "rollback",
        ),
        Fault(
            "degraded_model",
            f"a worse model: trained on {DEGRADED_SHARE:.0%} of the training part with "
            f"{DEGRADED_LABEL_NOISE:.0%} wrong labels; plausible outputs",
            "rollback",
        ),
    )
}


def fault(name: str) -> Fault:
    try:
        return FAULTS[name]
    except KeyError:
        known = ", ".join(FAULTS)
        raise RealDataError(f"unknown fault {name!r}; known faults: {known}") from None


def _rows(data: RealData, x: Any) -> tuple[dict[str, s.FeatureValue], ...]:
    names, integer = data.feature_names, data.integer_features
    casts = [(name, name in integer) for name in names]
    out = []
    for row in x.tolist():
        features: dict[str, s.FeatureValue] = {}
        for (name, is_int), value in zip(casts, row, strict=True):
            features[name] = int(value) if is_int and value == int(value) else float(value)
        out.append(features)
    return tuple(out)


@functools.cache
def cohorts(
    dataset: str, fault_name: str, split_seed: int = DEFAULT_SPLIT_SEED
) -> dict[CohortName, Served]:
    """What the baseline and the canary serve for each serving row under `fault_name`."""
    data = prepare(dataset, split_seed)
    fault(fault_name)
    x = data.x_serve
    baseline = Served(_rows(data, x), tuple(data.outputs(data.model, x)))
    j = data.feature_names.index(data.spec.fault_feature)
    canary = baseline
    if fault_name == "unit_bug":
        bad = x.copy()
        bad[:, j] *= UNIT_FACTOR
        canary = Served(_rows(data, bad), tuple(data.outputs(data.model, bad)))
    elif fault_name == "standardization_bug":
        bad = data.model[0].transform(x)
        canary = Served(_rows(data, bad), tuple(data.outputs(data.model, bad)))
    elif fault_name == "scaler_skipped":
        estimator = data.model[-1]
        predict = estimator.predict if data.task == "regression" else estimator.predict_proba
        canary = Served(baseline.features, tuple(_outputs(data.task, data.classes, predict, x)))
    elif fault_name == "missing_values":
        filled = x.copy()
        filled[:, j] = data.x_train[:, j].mean()
        name = data.feature_names[j]
        missing = tuple({**row, name: None} for row in baseline.features)
        canary = Served(
            baseline.features,
            baseline.outputs,
            missing_feature=name,
            missing_share=MISSING_SHARE,
            features_missing=missing,
            outputs_missing=tuple(data.outputs(data.model, filled)),
        )
    elif fault_name == "degraded_model":
        worse = degraded_model(dataset, split_seed)
        canary = Served(baseline.features, tuple(data.outputs(worse, x)))
    return {"baseline": baseline, "canary": canary}


def deployment_id(dataset: str, fault_name: str, seed: int) -> str:
    return f"real-{dataset}-{fault_name}-{seed}".replace("_", "-")


def make_deployment(
    dataset: str,
    fault_name: str,
    seed: int,
    rollout_plan: s.RolloutPlan | None = None,
    *,
    split_seed: int = DEFAULT_SPLIT_SEED,
) -> s.DeploymentRequested:
    """The deployment request of a rollout over `dataset`, with the training part's profile."""
    data = prepare(dataset, split_seed)
    return s.DeploymentRequested(
        deployment_id=deployment_id(dataset, fault(fault_name).name, seed),
        model=f"{MODEL}-{dataset.replace('_', '-')}",
        candidate_version=CANARY_VERSION,
        baseline_version=BASELINE_VERSION,
        plan=rollout_plan or PLANS["short"],
        training_profile=data.training_profile(),
        requested_by="realdata",
    )


# ---------------------------------------------------------------------------------------------
# Traffic: requests, a router and batched records on one clock
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficConfig:
    """`rate` is the canary's req/s in the plan's first step; the total rate is constant."""

    rate: float = 20.0
    behaviour: Behaviour = HEALTHY
    #: Seconds between batched records of a cohort.
    baseline_batch_s: float = 1.0
    canary_batch_s: float = 0.25
    timeout_ms: float = 1000.0

    def __post_init__(self) -> None:
        if not self.rate > 0.0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        if not (self.baseline_batch_s > 0.0 and self.canary_batch_s > 0.0):
            raise ValueError("batch intervals must be positive")


class Traffic(EventClock):
    """A discrete-event clock over the serving part: records come out in time order.

    Requests arrive as one Poisson process; each goes to the canary with the probability of the
    share the router last applied (`set_percent`), draws a serving row, and completes after its
    latency into its cohort's next batch. Other records and callbacks are scheduled at a time.
    """

    def __init__(
        self,
        deployment: s.DeploymentRequested,
        served: Mapping[CohortName, Served],
        *,
        seed: int,
        config: TrafficConfig = TrafficConfig(),
        begin_ms: int | None = None,
    ) -> None:
        self.served = served
        self.config = config
        self.begin_ms = start_ms(seed) if begin_ms is None else begin_ms
        self.total_rate = config.rate * 100.0 / deployment.plan.steps[0].canary_percent
        self.canary_percent = 0.0
        self.canary_started_ms: int | None = None
        self._arrivals = random.Random(f"{seed}/realdata/arrivals")
        self._router = random.Random(f"{seed}/realdata/router")
        self._serving = {c: random.Random(f"{seed}/realdata/{c}/serving") for c in served}
        self._counter = dict.fromkeys(served, 0)
        self._rows = len(next(iter(served.values())).features)
        super().__init__(
            deployment,
            self.begin_ms,
            {
                "baseline": round(config.baseline_batch_s * 1000),
                "canary": round(config.canary_batch_s * 1000),
            },
            SOURCE_FLEET,
        )
        self._arrival_at(self._next_arrival(self.begin_ms))

    def _next_arrival(self, after_ms: float) -> float:
        return after_ms + self._arrivals.expovariate(self.total_rate) * 1000.0

    def set_percent(self, canary_percent: float, when_ms: int) -> None:
        """The router sends `canary_percent` of the requests after `when_ms` to the canary."""
        self.canary_percent = canary_percent
        if canary_percent > 0.0 and self.canary_started_ms is None:
            self.canary_started_ms = when_ms

    def serve(self, cohort: CohortName, arrival_ms: float) -> s.Prediction:
        """One request of `cohort`: a serving row, a latency, maybe an error."""
        rng = self._serving[cohort]
        b, served = self.config.behaviour, self.served[cohort]
        self._counter[cohort] += 1
        row = rng.randrange(self._rows)
        features, output = served.features[row], served.outputs[row]
        if served.missing_share and rng.random() < served.missing_share:
            features, output = served.features_missing[row], served.outputs_missing[row]
        if rng.random() < b.tail_share:
            body = b.tail_median_ms * math.exp(b.tail_sigma * rng.gauss(0.0, 1.0))
        else:
            body = b.latency_median_ms * math.exp(b.latency_sigma * rng.gauss(0.0, 1.0))
        body *= b.latency_scale
        error: str | None = None
        if rng.random() < b.error_rate:
            error = _pick(rng, ERROR_MIX)
        if error == "timeout":
            latency = self.config.timeout_ms * (1.0 + 0.02 * rng.random())
        elif error == "internal":
            latency = body * 0.3
        elif error == "bad_request":
            latency = 1.0 + 4.0 * rng.random()
        else:
            latency = body
        return s.Prediction(
            version=CANARY_VERSION if cohort == "canary" else BASELINE_VERSION,
            cohort=s.Cohort(cohort),
            request_id=f"{cohort[0]}{self._counter[cohort]:08d}",
            event_time=at(int(arrival_ms)),
            latency_ms=round(latency, 1),
            ok=error is None,
            error_type=error,
            prediction=output if error is None else None,
            features=features,
        )

    def _arrive(self, when: float, item: Any) -> None:
        self._arrival_at(self._next_arrival(when))
        share = self.canary_percent / 100.0
        cohort: CohortName = "canary" if self._router.random() < share else "baseline"
        self._complete(self.serve(cohort, when), when)


def _pick(rng: random.Random, mix: Sequence[tuple[str, float]]) -> str:
    x = rng.random() * sum(share for _, share in mix)
    for name, share in mix:
        x -= share
        if x < 0.0:
            return name
    return mix[-1][0]


def records(
    dataset: str,
    fault_name: str,
    *,
    seed: int,
    duration_s: float = 60.0,
    canary_percent: float = 20.0,
    config: TrafficConfig = TrafficConfig(),
    split_seed: int = DEFAULT_SPLIT_SEED,
) -> Iterator[Envelope[Any]]:
    """The open loop: the deployment request, then both cohorts' predictions at a fixed share
    for `duration_s`, without a controller."""
    deployment = make_deployment(dataset, fault_name, seed, split_seed=split_seed)
    traffic = Traffic(
        deployment, cohorts(dataset, fault_name, split_seed), seed=seed, config=config
    )
    yield traffic.envelope(deployment, traffic.begin_ms, SOURCE_DEPLOYER)
    traffic.set_percent(canary_percent, traffic.begin_ms)
    end = traffic.begin_ms + round(duration_s * 1000)
    while (record := traffic.next_record(until_ms=end)) is not None:
        yield record


# ---------------------------------------------------------------------------------------------
# The closed loop
# ---------------------------------------------------------------------------------------------


@dataclass
class RolloutResult:
    """What happened in one closed-loop rollout over real data."""

    dataset: str
    fault: str
    seed: int
    begin_ms: int
    canary_started_ms: int | None = None
    terminal_action: str | None = None
    terminal_ms: int | None = None
    terminal_reason: str | None = None
    #: The rules the rollback decision names (`failed_rules` of the command's evidence).
    failed_rules: tuple[str, ...] = ()
    end_ms: int | None = None
    records: int = 0
    commands: list[s.Command] = field(default_factory=list)
    decisions: list[s.Decision] = field(default_factory=list)

    @property
    def time_to_decision_s(self) -> float | None:
        """Seconds from the deployment request to the terminal command."""
        if self.terminal_ms is None:
            return None
        return (self.terminal_ms - self.begin_ms) / 1000.0


class RealDataLoop(RolloutLoop):
    """One rollout over `dataset` with `fault` and a controller in the loop; iterate it for the
    records in log order, or `run()` it.

    Every record goes to the controller as it is emitted; its commands go to the router
    (applied and acknowledged after `loop.router_delay_ms`), its decisions to an approver (a
    rollout awaiting approval is approved after `loop.approval_delay_s`). Between records the
    controller's clock moves on a one-second grid.
    """

    def __init__(
        self,
        dataset: str,
        fault_name: str,
        controller: Controller,
        *,
        seed: int,
        config: TrafficConfig = TrafficConfig(),
        loop: LoopConfig = DEFAULT_LOOP,
        rollout_plan: s.RolloutPlan | None = None,
        split_seed: int = DEFAULT_SPLIT_SEED,
    ) -> None:
        deployment = make_deployment(dataset, fault_name, seed, rollout_plan, split_seed=split_seed)
        self.traffic = Traffic(
            deployment, cohorts(dataset, fault_name, split_seed), seed=seed, config=config
        )
        self.result = RolloutResult(dataset, fault_name, seed, self.traffic.begin_ms)
        super().__init__(
            deployment,
            self.traffic,
            controller,
            self.result,
            begin_ms=self.traffic.begin_ms,
            rng=random.Random(f"{seed}/realdata/loop"),
            loop=loop,
            actors=ACTORS,
        )

    def run(self) -> RolloutResult:
        for _ in self:
            pass
        return self.result

    def _finished(self) -> None:
        self.result.canary_started_ms = self.traffic.canary_started_ms

    def _terminal(self, command: s.Command) -> None:
        super()._terminal(command)
        if command.action == s.CommandAction.ROLLBACK:
            rules = command.evidence.get("failed_rules") or [command.evidence.get("rule")]
            self.result.failed_rules = tuple(str(r) for r in rules if r)


def rollout(
    dataset: str,
    fault_name: str,
    controller: Controller,
    *,
    seed: int,
    config: TrafficConfig = TrafficConfig(),
    loop: LoopConfig = DEFAULT_LOOP,
    rollout_plan: s.RolloutPlan | None = None,
    split_seed: int = DEFAULT_SPLIT_SEED,
) -> RolloutResult:
    """Run one closed-loop rollout to its end (see `RealDataLoop`)."""
    return RealDataLoop(
        dataset,
        fault_name,
        controller,
        seed=seed,
        config=config,
        loop=loop,
        rollout_plan=rollout_plan,
        split_seed=split_seed,
    ).run()


__all__ = [
    "DATASETS",
    "FAULTS",
    "DatasetSpec",
    "Fault",
    "RealData",
    "RealDataError",
    "RealDataLoop",
    "RolloutResult",
    "Served",
    "Traffic",
    "TrafficConfig",
    "bin_counts",
    "cohorts",
    "dataset_spec",
    "degraded_model",
    "fault",
    "make_deployment",
    "numeric_profile",
    "prepare",
    "records",
    "rollout",
]
