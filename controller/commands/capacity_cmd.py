"""`rollout capacity plan`: the serving quota a predicted QPS needs (replicas, CPU, GPU,
memory), with room for the plan's largest canary and for running experiments, and every
assumption in words. controller/core/pipelines/capacity.py estimates; this reads the flags, a
rollout plan and the metrics topic."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click
import orjson
from pydantic import ValidationError

from controller.commands.ops import (
    _consume,
    _load_document,
    _settings,
    bootstrap_option,
    json_option,
)
from controller.core.pipelines import capacity
from controller.errors import RolloutError
from schemas import Envelope, MetricReported, RolloutPlan, Topic

DEFAULT_QPS_METRIC = "replica_qps"
DEFAULT_LATENCY_METRIC = "latency_p99_ms"
#: the share of the predicted traffic an experiment carries, unless told (percent)
DEFAULT_EXPERIMENT_PERCENT = 5.0


class CapacityFlagError(RolloutError):
    """The flags do not describe one estimate; the message says what to change."""


def plan_canary_percent(document: Any, where: str = "the plan") -> float:
    """The largest traffic step of a rollout plan: a `plan` mapping (a RolloutPlan), or the
    fields of a deployment.requested with its `plan`."""
    if isinstance(document, Mapping) and isinstance(document.get("plan"), Mapping):
        document = document["plan"]
    try:
        plan = RolloutPlan.model_validate_json(orjson.dumps(document))
    except (ValidationError, TypeError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"msg": str(exc)}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise CapacityFlagError(
            f"{where} is not a rollout plan (the steps of deployment.requested): "
            f"{loc + ': ' if loc else ''}{str(first['msg']).removeprefix('Value error, ')}"
        ) from None
    return max(step.canary_percent for step in plan.steps)


def one_source(*, replica_qps: bool, from_metrics: bool, concurrency: bool) -> None:
    """Exactly one source of per-replica throughput, or `CapacityFlagError` saying which."""
    sources = [
        name
        for name, given in (
            ("--replica-qps", replica_qps),
            ("--from-metrics", from_metrics),
            ("--concurrency", concurrency),
        )
        if given
    ]
    if not sources:
        raise CapacityFlagError(
            "give the per-replica throughput: --replica-qps, --from-metrics DEPLOYMENT, or "
            "--concurrency with --replica-latency-ms (Little's law)"
        )
    if len(sources) > 1:
        raise CapacityFlagError(
            f"give one source of per-replica throughput, not {' and '.join(sources)}"
        )


def capacity_inputs(
    *,
    qps: float,
    cpu: float = 0.0,
    gpu: float = 0.0,
    memory_gb: float = 0.0,
    replica_qps: float | None = None,
    observations: Iterable[capacity.ThroughputObservation] | None = None,
    latency_slo_ms: float | None = None,
    concurrency: float | None = None,
    replica_latency_ms: float | None = None,
    canary_percent: float = 0.0,
    experiments: int = 0,
    experiment_percent: float = DEFAULT_EXPERIMENT_PERCENT,
    utilisation: float = 0.7,
) -> capacity.CapacityInputs:
    """The estimate's inputs from a person's flags: exactly one source of per-replica throughput
    (given, measured observations, or a concurrency with a latency); `CapacityFlagError`
    otherwise."""
    one_source(
        replica_qps=replica_qps is not None,
        from_metrics=observations is not None,
        concurrency=concurrency is not None,
    )
    if (concurrency is None) != (replica_latency_ms is None):
        raise CapacityFlagError(
            "--concurrency and --replica-latency-ms go together (Little's law: requests in "
            "flight per replica over the latency of each)"
        )
    if latency_slo_ms is not None and observations is None:
        raise CapacityFlagError(
            "--latency-slo-ms keeps the measured rates that met it: use it with --from-metrics"
        )
    return capacity.CapacityInputs(
        predicted_qps=qps,
        replica=capacity.ReplicaSize(cpu=cpu, gpu=gpu, memory_gb=memory_gb),
        per_replica_qps=replica_qps,
        observations=tuple(observations or ()),
        latency_slo_ms=latency_slo_ms,
        concurrency=concurrency,
        latency_ms=replica_latency_ms,
        target_utilisation=utilisation,
        canary_share=canary_percent / 100.0,
        experiment_shares=(experiment_percent / 100.0,) * experiments,
    )


def metrics_of(events: Iterable[Envelope[Any]], deployment: str) -> list[MetricReported]:
    """The metric events of one deployment, in the order read."""
    return [
        e.data
        for e in events
        if isinstance(e.data, MetricReported) and e.data.deployment_id == deployment
    ]


def estimate_dict(estimate: capacity.CapacityEstimate) -> dict[str, Any]:
    """The estimate as JSON-ready data (every field of `CapacityEstimate`)."""
    doc: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(estimate)))  # tuples: lists
    return doc


def estimate_lines(estimate: capacity.CapacityEstimate) -> list[str]:
    """The estimate for people: the total, its breakdown, the resources, every assumption
    (an estimate that is not `ok` is only its reason)."""
    if estimate.outcome != "ok":
        return [f"{estimate.outcome}: {estimate.reason}"]
    width = max(len(k) for k in estimate.breakdown)
    lines = [f"estimate: {estimate.reason}", f"replicas: {estimate.replicas}"]
    lines += [f"  {k:{width}}  {v}" for k, v in estimate.breakdown.items()]
    lines.append("resources: " + ", ".join(f"{v:g} {r}" for r, v in estimate.resources.items()))
    lines.append("assumptions:")
    lines += [f"  - {a}" for a in estimate.assumptions]
    return lines


@click.group("capacity")
def capacity_group() -> None:
    """Serving capacity: the quota a predicted traffic needs (docs/pipelines.md)."""


@capacity_group.command("plan")
@click.option(
    "--qps",
    type=click.FloatRange(min=0),
    required=True,
    help="The predicted peak queries per second the model must carry.",
)
@click.option(
    "--replica-qps",
    type=click.FloatRange(min=0, min_open=True),
    help="Per-replica throughput (req/s), as measured by you.",
)
@click.option(
    "--from-metrics",
    "deployment",
    metavar="DEPLOYMENT",
    help="Measure the per-replica throughput from DEPLOYMENT's metric.reported events on the "
    f"metrics topic, from the beginning: each '{DEFAULT_QPS_METRIC}' (one replica's req/s) "
    f"paired, in order, with the '{DEFAULT_LATENCY_METRIC}' of the same cohort and attributes "
    "(e.g. replica=...); the 90th percentile of the rates within --latency-slo-ms.",
)
@click.option(
    "--qps-metric",
    default=DEFAULT_QPS_METRIC,
    show_default=True,
    help="The metric name of a replica's rate (with --from-metrics).",
)
@click.option(
    "--latency-metric",
    default=DEFAULT_LATENCY_METRIC,
    show_default=True,
    help="The metric name of a replica's latency at that rate (with --from-metrics).",
)
@click.option(
    "--latency-slo-ms",
    type=click.FloatRange(min=0, min_open=True),
    help="The latency SLO: measured rates whose latency exceeded it do not count.",
)
@click.option(
    "--concurrency",
    type=click.FloatRange(min=0, min_open=True),
    help="Requests in flight per replica (with --replica-latency-ms: Little's law).",
)
@click.option(
    "--replica-latency-ms",
    type=click.FloatRange(min=0, min_open=True),
    help="A request's latency at that concurrency (with --concurrency).",
)
@click.option("--cpu", type=click.FloatRange(min=0), default=0.0, help="CPUs per replica.")
@click.option("--gpu", type=click.FloatRange(min=0), default=0.0, help="GPUs per replica.")
@click.option(
    "--memory-gb", type=click.FloatRange(min=0), default=0.0, help="Memory per replica (GB)."
)
@click.option(
    "--max-canary-percent",
    type=click.FloatRange(0, 100),
    help="The largest share of traffic the canary will carry (default: the largest step of "
    "--plan, else 0: no canary).",
)
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A rollout plan (YAML or JSON: the file `rollout deploy` takes, or its plan alone).",
)
@click.option(
    "--experiments",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Experiments running beside the model, each on replicas of its own.",
)
@click.option(
    "--experiment-share",
    "experiment_percent",
    type=click.FloatRange(0, 100, min_open=True),
    help="Percent of the predicted traffic each experiment carries (with --experiments; "
    "default 5).",
)
@click.option(
    "--utilisation",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.7,
    show_default=True,
    help="The share of a replica's throughput to plan for (the rest absorbs bursts).",
)
@bootstrap_option
@json_option
def capacity_plan_cmd(
    qps: float,
    replica_qps: float | None,
    deployment: str | None,
    qps_metric: str,
    latency_metric: str,
    latency_slo_ms: float | None,
    concurrency: float | None,
    replica_latency_ms: float | None,
    cpu: float,
    gpu: float,
    memory_gb: float,
    max_canary_percent: float | None,
    plan_file: Path | None,
    experiments: int,
    experiment_percent: float | None,
    utilisation: float,
    bootstrap: str | None,
    as_json: bool,
) -> None:
    """Estimate the replicas, CPU, GPU and memory that serving --qps needs: the baseline
    whole for the whole rollout (a rollback is instant), the canary at the plan's largest
    share, each experiment at its share. Prints the breakdown and every assumption; exits 1
    with the reason when there is no estimate."""
    try:
        if experiment_percent is not None and not experiments:
            raise CapacityFlagError("--experiment-share needs --experiments N (how many run)")
        canary = max_canary_percent
        if canary is None and plan_file is not None:
            canary = plan_canary_percent(_load_document(plan_file), str(plan_file))
        observations = None
        read = 0
        if deployment is not None:
            one_source(  # before reading the topic
                replica_qps=replica_qps is not None,
                from_metrics=True,
                concurrency=concurrency is not None,
            )
            metrics = metrics_of(
                _consume(_settings(bootstrap), [Topic.METRICS], follow=False, from_beginning=True),
                deployment,
            )
            read = len(metrics)
            observations = capacity.observations_from_metrics(metrics, qps_metric, latency_metric)
        inputs = capacity_inputs(
            qps=qps,
            cpu=cpu,
            gpu=gpu,
            memory_gb=memory_gb,
            replica_qps=replica_qps,
            observations=observations,
            latency_slo_ms=latency_slo_ms,
            concurrency=concurrency,
            replica_latency_ms=replica_latency_ms,
            canary_percent=canary or 0.0,
            experiments=experiments,
            experiment_percent=DEFAULT_EXPERIMENT_PERCENT
            if experiment_percent is None
            else experiment_percent,
            utilisation=utilisation,
        )
    except CapacityFlagError as exc:
        raise click.UsageError(str(exc)) from None
    estimate = capacity.estimate(inputs)
    source = (
        f"read {read} metric event(s) of {deployment}: {len(inputs.observations)} "
        f"'{qps_metric}' paired with '{latency_metric}'"
        if deployment is not None
        else None
    )
    if as_json:
        doc = estimate_dict(estimate)
        if source is not None:
            doc["measured"] = {"deployment": deployment, "metric_events": read}
        click.echo(json.dumps(doc))
    else:
        if source is not None:
            click.echo(source)
        if estimate.outcome == "ok":
            for line in estimate_lines(estimate):
                click.echo(line)
        if estimate.outcome == "ok" and canary is None:
            click.echo("note: no room for a canary: give --max-canary-percent or --plan")
    if estimate.outcome != "ok":
        reason = estimate.reason
        if deployment is not None and not inputs.observations:
            reason = (
                f"no '{qps_metric}' of {deployment} paired with a '{latency_metric}' on the "
                "metrics topic: report them, or give --replica-qps"
            )
        raise click.ClickException(f"{estimate.outcome}: {reason}")


__all__ = [
    "CapacityFlagError",
    "capacity_group",
    "capacity_inputs",
    "estimate_dict",
    "estimate_lines",
    "metrics_of",
    "one_source",
    "plan_canary_percent",
]
