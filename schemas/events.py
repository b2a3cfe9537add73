"""The payloads (CloudEvents `data`) of every event type, one model each.

Each payload class names its CloudEvents `type` and the logical topic it travels on. The key of
every record that belongs to a rollout is its deployment id (the envelope's `subject`), so one
worker sees all of a rollout.
"""

from __future__ import annotations

import enum
import itertools
from typing import Annotated, ClassVar, Literal

from pydantic import (
    Field,
    Strict,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.base import (
    Bool,
    Contract,
    Count,
    Evidence,
    Float,
    Ident,
    Int,
    Name,
    NonNegative,
    Percent,
    Share,
    Str,
    Text,
    Timestamp,
)

TYPE_PREFIX = "dev.rollout."


class Topic(enum.StrEnum):
    """Logical topics; the deployed names carry a configurable prefix."""

    DEPLOYMENTS = "deployments"
    PREDICTIONS = "predictions"
    LABELS = "labels"
    METRICS = "metrics"
    COMMANDS = "commands"
    ALERTS = "alerts"
    DECISIONS = "decisions"
    DEAD_LETTER = "deadletter"


class Payload(Contract):
    """A CloudEvents `data` model. Subclasses set EVENT_TYPE, TOPIC and the key field."""

    EVENT_TYPE: ClassVar[str]
    TOPIC: ClassVar[Topic]

    def record_key(self) -> str:
        """The Kafka record key: the deployment id for everything that belongs to a rollout."""
        return str(getattr(self, "deployment_id"))  # noqa: B009  # every rollout payload has it


# ---------------------------------------------------------------------------------------------
# deployments topic: what people and routers say about a rollout
# ---------------------------------------------------------------------------------------------


class TrafficStep(Contract):
    """One step of the plan: route `canary_percent` of traffic to the candidate."""

    canary_percent: Annotated[float, Strict(), Field(gt=0, le=100)]
    min_bake_s: NonNegative = 60.0
    min_samples: Count = 100
    requires_approval: Bool = False


class GuardrailRule(Contract):
    """A rule of the rollout policy: a named detector with its parameters."""

    name: Ident
    detector: Ident
    params: dict[str, Float | Int | Str | Bool | list[Float] | None] = Field(default_factory=dict)
    dry_run: Bool = False


#: The kinds of feature a profile may state. "numeric" is the kind of the first version of this
#: contract, read as "continuous" without the edge-resolution rule (see `edge_problems`), so
#: that stored rollouts and existing producers keep working; new profiles should say which.
FeatureKindName = Literal["continuous", "integer", "binary", "categorical", "numeric"]
NUMERIC_KINDS = frozenset({"continuous", "integer", "binary", "numeric"})

#: Consecutive edges of a continuous feature must be at least this far apart, relative to the
#: larger magnitude: 2.5 buckets of the serving sketch at its default relative accuracy of 1 %
#: (a bucket spans 2.02 %), so that re-binning the sketch onto the edges misplaces at most 40 %
#: of a bin's mass at its two edges (JS well below 0.03, typically below 0.003).
MIN_RELATIVE_EDGE_GAP = 0.05
#: ... and at least this far apart in absolute terms (1,000 times the band of values the sketch
#: counts as zero).
MIN_ABSOLUTE_EDGE_GAP = 1e-6
#: The distinct values the serving statistics count exactly per field (`StatsConfig`'s
#: `max_exact_values` default): an integer feature whose edges span fewer integers is counted
#: exactly on them even when the sketch cannot resolve them.
MAX_EXACT_VALUES = 256
#: The largest integer edge: every integer up to it is a float exactly.
MAX_INTEGER_EDGE = 2.0**53
#: The edges a binary feature (values 0 and 1) may have.
BINARY_EDGES = ((1.0,), (0.0, 1.0))


def resolvable_gap(a: float, b: float) -> bool:
    """Whether the serving sketch separates consecutive edges a < b (see MIN_RELATIVE_EDGE_GAP)."""
    gap = b - a
    return gap >= MIN_RELATIVE_EDGE_GAP * max(abs(a), abs(b)) and gap >= MIN_ABSOLUTE_EDGE_GAP


def edge_problems(kind: str, edges: tuple[float, ...]) -> list[str]:
    """Why the skew detector could not honour these edges for a feature of this kind (empty
    when it can); each problem names `bin_edges`. Edges must be strictly ascending anyway.

    - continuous: every consecutive pair resolvable by the serving sketch (`resolvable_gap`);
      its values are counted exactly while a cohort has at most 256 distinct ones, else from
      the sketch.
    - integer: whole numbers of magnitude at most 2**53; and either resolvable by the sketch
      or spanning fewer than `MAX_EXACT_VALUES` integers, which the exact counts keep.
    - binary: `[1]` (0 below, 1 at or above) or `[0, 1]`.
    - numeric (the first version's kind) and categorical: no rule.
    """
    if len(edges) < 2 and kind not in ("integer", "binary"):
        return []
    if kind == "continuous":
        for a, b in itertools.pairwise(edges):
            if not resolvable_gap(a, b):
                return [
                    f"bin_edges {a:g} and {b:g} are closer than the serving sketch resolves "
                    f"(consecutive edges of a continuous feature must differ by at least "
                    f"{MIN_RELATIVE_EDGE_GAP:.0%} of the larger magnitude and by "
                    f"{MIN_ABSOLUTE_EDGE_GAP:g}); use fewer edges, or kind integer or binary "
                    f"for a discrete feature"
                ]
    elif kind == "integer":
        odd = [e for e in edges if e != round(e) or abs(e) > MAX_INTEGER_EDGE]
        if odd:
            return [
                f"bin_edges of an integer feature must be whole numbers of magnitude at most "
                f"2**53, got {odd[0]:g}"
            ]
        resolvable = all(resolvable_gap(a, b) for a, b in itertools.pairwise(edges))
        if not resolvable and edges[-1] - edges[0] >= MAX_EXACT_VALUES:
            return [
                f"bin_edges of an integer feature span {edges[-1] - edges[0]:g} integers, more "
                f"than the {MAX_EXACT_VALUES} values counted exactly, and some are closer than "
                f"the serving sketch resolves ({MIN_RELATIVE_EDGE_GAP:.0%} of the larger "
                f"magnitude); use fewer edges"
            ]
    elif kind == "binary" and tuple(edges) not in BINARY_EDGES:
        return [
            f"bin_edges of a binary feature (values 0 and 1) must be [1] or [0, 1], got "
            f"{list(edges)}"
        ]
    return []


class FeatureProfile(Contract):
    """The distribution of one feature (or the label, or the prediction) in a dataset.

    `kind`: continuous, integer, binary (values 0 and 1) or categorical ("numeric", the first
    version's kind, is read as continuous; see `FeatureKindName`). Numeric kinds: `bin_edges`
    (ascending, n edges) and `proportions` of n + 1 bins: below the first edge, between
    consecutive edges, at or above the last edge; the edges must be ones the skew detector can
    honour (`edge_problems`), and a binary feature's bins other than 0 and 1 must be empty.
    Categorical: `categories` maps a value to its share. `missing_rate` is the share of rows
    with no value, `invalid_rate` the share with a value that cannot be used (corrupt);
    `domain_min`, `domain_max` and `allowed` bound what counts as a valid value.
    """

    name: Name
    kind: FeatureKindName
    bin_edges: tuple[Float, ...] = ()
    proportions: tuple[Share, ...] = ()
    categories: dict[str, Share] = Field(default_factory=dict)
    missing_rate: Share = 0.0
    #: the share of rows with a value that could not be used (corrupt: unparseable, of the
    #: wrong type, or outside the domain)
    invalid_rate: Share = 0.0
    domain_min: Float | None = None
    domain_max: Float | None = None
    allowed: tuple[Str, ...] | None = None
    count: Count | None = None

    @field_validator("bin_edges")
    @classmethod
    def _honourable(cls, edges: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError("bin_edges must be strictly ascending")
        kind = info.data.get("kind")
        problems = edge_problems(kind, edges) if isinstance(kind, str) and edges else []
        if problems:
            raise ValueError(problems[0])
        return edges

    @model_validator(mode="after")
    def _shape(self) -> FeatureProfile:
        if self.kind in NUMERIC_KINDS:
            if not self.bin_edges:
                raise ValueError(f"a {self.kind} profile needs bin_edges")
            if len(self.proportions) != len(self.bin_edges) + 1:
                raise ValueError(
                    f"a {self.kind} profile with {len(self.bin_edges)} bin_edges needs "
                    f"{len(self.bin_edges) + 1} proportions, got {len(self.proportions)}"
                )
            if self.kind == "binary" and self.bin_edges == (0.0, 1.0) and self.proportions[0]:
                raise ValueError(
                    "proportions of a binary feature: the bin below 0 must be empty (values "
                    "are 0 and 1)"
                )
            total = sum(self.proportions)
        else:
            if not self.categories:
                raise ValueError("a categorical profile needs categories")
            total = sum(self.categories.values())
        if abs(total - 1.0) > 1e-3:
            raise ValueError(f"proportions must sum to 1, got {total:.4f}")
        return self


class TrainingProfile(Contract):
    """Feature distributions the model was trained on, for training-serving skew."""

    dataset: Name | None = None
    features: tuple[FeatureProfile, ...] = ()
    prediction: FeatureProfile | None = None


class ServingCapacity(Contract):
    """What the serving pool must carry for the candidate: each traffic step is held until the
    pool's free capacity (its `resource.usage` events with a limit: cpu, gpu, memory_gb) holds
    the canary's extra replicas (controller.core.pipelines.capacity.guard_step)."""

    #: the peak queries per second the deployment serves (canary and baseline together)
    predicted_qps: Annotated[float, Strict(), Field(gt=0)]
    #: what one replica serves within its latency objective
    replica_qps: Annotated[float, Strict(), Field(gt=0)]
    cpu: NonNegative = 0.0
    gpu: NonNegative = 0.0
    memory_gb: NonNegative = 0.0
    #: the share of a replica's throughput planned for
    utilisation: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.7


class RolloutPlan(Contract):
    steps: tuple[TrafficStep, ...] = Field(min_length=1, max_length=100)
    approval_to_start: Bool = False
    deadline_s: Annotated[float, Strict(), Field(gt=0)] | None = None
    guardrails: tuple[GuardrailRule, ...] = ()
    policy: Name | None = None
    #: hold a step the serving pool cannot carry (None: not judged)
    capacity: ServingCapacity | None = None

    @model_validator(mode="after")
    def _ascending(self) -> RolloutPlan:
        shares = [s.canary_percent for s in self.steps]
        if any(b < a for a, b in itertools.pairwise(shares)):
            raise ValueError(f"traffic steps must not decrease: {shares}")
        names = [g.name for g in self.guardrails]
        if len(names) != len(set(names)):
            raise ValueError(f"guardrail names must be unique: {names}")
        return self


#: An Ed25519 signature in standard base64 (64 bytes: 86 characters and "==").
SignatureValue = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Za-z0-9+/]{86}==$")]


class Signature(Contract):
    """An Ed25519 signature of the payload that carries it (docs/security.md, "Signatures").

    The signed message is `rollout-controller.signature.v1`, a newline, the event type, a
    newline, then the payload as canonical JSON: this signature with `value` left out
    (`key_id` and `signed_at` are signed), fields whose value is null left out, object keys
    sorted, no whitespace, UTF-8. `key_id` names the public key that verifies it: a person's
    or a CI system's (approvals and manual actions), the controller's (commands)."""

    key_id: Name
    signed_at: Timestamp
    value: SignatureValue


#: A link or a reference (a runbook, a build, an artifact): free text, bounded like a URL.
Reference = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=2048)]


class DeployMethod(Contract):
    """How the model is deployed: the serving stack or mechanism ("kserve", "sagemaker
    endpoint", "helm chart fraud-serving") and a reference to the build or artifact."""

    name: Name
    reference: Reference | None = None


class RequiredApproval(Contract):
    """Who must approve the gate before traffic step `step` (0 is the start gate, as in
    `approval.granted`): any one of `by`, named people or groups. Naming approvers for a gate
    makes the gate ask for an approval, as `requires_approval` does."""

    step: Count
    by: tuple[Name, ...] = Field(min_length=1, max_length=32)


FailureAction = Literal["rollback", "pause", "abort", "notify"]


class OnFailure(Contract):
    """What to do if the deployment fails, as the people on call read it. Recorded and shown,
    not acted on: a failing rule's consequence is the policy's (docs/policy.md)."""

    action: FailureAction = "rollback"
    note: Text = ""
    runbook_url: Reference | None = None


class RollbackProcedure(Contract):
    """How to roll back the model once it is in production: the version to return to (None:
    the baseline version) and how."""

    version: Ident | None = None
    procedure: Text = ""
    runbook_url: Reference | None = None


class DeploymentRequested(Payload):
    """A rollout request, and its deployment record: where (`environment`, `target`), how
    (`method`), who must approve each gate (`approvals`), what to do if it fails
    (`on_failure`) and how to roll it back from production (`rollback`). Every record field is
    optional; a request without them is the request of before."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "deployment.requested.v1"
    TOPIC: ClassVar[Topic] = Topic.DEPLOYMENTS

    deployment_id: Ident
    model: Ident
    candidate_version: Ident
    baseline_version: Ident
    plan: RolloutPlan
    training_profile: TrainingProfile | None = None
    requested_by: Name | None = None
    #: where: the environment (prod, staging, ...)
    environment: Name | None = None
    #: where the canary (or experiment) runs: a cluster, region, service or traffic segment
    target: Name | None = None
    method: DeployMethod | None = None
    #: None (not sent) when the record names no approvers: a request without a record keeps
    #: the bytes it had before the record existed, which consumers of before accept
    approvals: Annotated[tuple[RequiredApproval, ...], Field(max_length=101)] | None = None
    on_failure: OnFailure | None = None
    rollback: RollbackProcedure | None = None
    #: by `requested_by`'s key: a worker with an identities file starts only signed requests
    signature: Signature | None = None

    @model_validator(mode="after")
    def _distinct_versions(self) -> DeploymentRequested:
        if self.candidate_version == self.baseline_version:
            raise ValueError("candidate_version and baseline_version must differ")
        if self.rollback is not None and self.rollback.version == self.candidate_version:
            raise ValueError(
                f"rollback.version must differ from candidate_version "
                f"({self.candidate_version}): a rollback returns to another version"
            )
        steps = [a.step for a in self.approvals or ()]
        missing = sorted(k for k in steps if k >= len(self.plan.steps))
        if missing:
            raise ValueError(
                f"approvals name steps {missing} the plan does not have (it has steps 0 to "
                f"{len(self.plan.steps) - 1}; 0 is the start gate)"
            )
        if len(steps) != len(set(steps)):
            raise ValueError(f"approvals must name each step once: {steps}")
        return self

    def rollback_version(self) -> str:
        """The version a rollback from production returns to: the record's, else the
        baseline."""
        if self.rollback is not None and self.rollback.version is not None:
            return self.rollback.version
        return self.baseline_version

    def approvers(self, step: int) -> tuple[str, ...]:
        """Who the record asks to approve the gate before `step` (empty: nobody named)."""
        for required in self.approvals or ():
            if required.step == step:
                return required.by
        return ()

    def has_record(self) -> bool:
        """Whether the request carries any field of the deployment record."""
        return bool(
            self.environment
            or self.target
            or self.method
            or self.approvals
            or self.on_failure
            or self.rollback
        )

    def record(self) -> Evidence:
        """The deployment record as plain JSON values, with what applies by default: the
        approvals asked for at every gate (`by` empty: anyone), the rollback version."""
        rollback = self.rollback
        return {
            "environment": self.environment,
            "target": self.target,
            "method": None if self.method is None else self.method.model_dump(mode="json"),
            "approvals_required": [
                {
                    "step": k,
                    "canary_percent": step.canary_percent,
                    "by": list(self.approvers(k)),
                }
                for k, step in enumerate(self.plan.steps)
                if self.gated(k)
            ],
            "on_failure": (
                None if self.on_failure is None else self.on_failure.model_dump(mode="json")
            ),
            "rollback": {
                "version": self.rollback_version(),
                "default": rollback is None or rollback.version is None,
                "procedure": "" if rollback is None else rollback.procedure,
                "runbook_url": None if rollback is None else rollback.runbook_url,
            },
            "requested_by": self.requested_by,
        }

    def gated(self, step: int) -> bool:
        """Whether the gate before `step` asks for an approval: the plan says so (the start:
        `approval_to_start`; any step: `requires_approval`), or the record names approvers."""
        plan = self.plan
        return (
            (step == 0 and plan.approval_to_start)
            or plan.steps[step].requires_approval
            or bool(self.approvers(step))
        )


class _Approval(Payload):
    TOPIC: ClassVar[Topic] = Topic.DEPLOYMENTS

    deployment_id: Ident
    step: Count = Field(
        description="Index of the traffic step the approval opens (0 is the start gate)."
    )
    by: Name
    reason: Text = ""
    #: by `by`'s key: a worker with an identities file accepts only signed control events
    signature: Signature | None = None


class ApprovalGranted(_Approval):
    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "approval.granted.v1"


class ApprovalDenied(_Approval):
    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "approval.denied.v1"


class _ManualAction(Payload):
    TOPIC: ClassVar[Topic] = Topic.DEPLOYMENTS

    deployment_id: Ident
    by: Name
    reason: Text = ""
    #: by `by`'s key: a worker with an identities file accepts only signed control events
    signature: Signature | None = None


class PauseRequested(_ManualAction):
    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "pause.requested.v1"


class ResumeRequested(_ManualAction):
    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "resume.requested.v1"


class AbortRequested(_ManualAction):
    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "abort.requested.v1"


class RollbackRequested(_ManualAction):
    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "rollback.requested.v1"


class MonitorConfigured(Payload):
    """Watch a model in production, or change how it is watched: keyed by the model.

    Sent by people (`rollout monitor set`) and by the controller itself for every rollout: at
    its start (the baseline is watched) and at its end (the candidate after a promote, the
    baseline after a rollback or abort). A field left out keeps what the monitor had."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "monitor.configured.v1"
    TOPIC: ClassVar[Topic] = Topic.DEPLOYMENTS

    model: Ident
    #: the version serving production; None keeps the monitor's (at first: the version that
    #: reports the most traffic)
    version: Ident | None = None
    #: an inline monitoring policy (format: controller/core/monitor/policy.py); None keeps the
    #: monitor's (at first: the packaged default)
    policy: Evidence | None = None
    training_profile: TrainingProfile | None = None
    #: auto: learn a reference for each new version; relearn: start learning one now; pin:
    #: keep the current reference across versions until a relearn
    reference: Literal["auto", "relearn", "pin"] = "auto"
    #: who configured it: "operator", or "rollout:<deployment id>"
    source: Name = "operator"
    by: Name
    reason: Text = ""

    def record_key(self) -> str:
        return self.model


class MonitorDeleted(Payload):
    """Stop watching a model (its predictions are counted as unmonitored again)."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "monitor.deleted.v1"
    TOPIC: ClassVar[Topic] = Topic.DEPLOYMENTS

    model: Ident
    by: Name
    reason: Text = ""

    def record_key(self) -> str:
        return self.model


class TrafficApplied(Payload):
    """The serving router's acknowledgement that it applied a command."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "traffic.applied.v1"
    TOPIC: ClassVar[Topic] = Topic.DEPLOYMENTS

    deployment_id: Ident
    command_id: Ident
    canary_percent: Percent
    applied_by: Name
    applied_at: Timestamp


class CommandRefused(Payload):
    """A serving router's answer to a command it would not apply: unsigned, signed with a key
    it does not trust, or with a signature that does not verify. The command id is the
    refused command's (when it decoded); the worker raises a critical alert."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "command.refused.v1"
    TOPIC: ClassVar[Topic] = Topic.DEPLOYMENTS

    deployment_id: Ident
    command_id: Ident
    refused_by: Name
    reason: Text
    refused_at: Timestamp


class PoolMember(Contract):
    """A pipeline sharing a quota pool: its guaranteed share of the limit (in the pool's unit)
    and its weight in the fair division of the rest (Kueue's cohorts, in spirit)."""

    pipeline: Ident
    guaranteed: NonNegative | None = None
    weight: Annotated[float, Strict(), Field(gt=0, le=1e6)] = 1.0


class QuotaPoolConfigured(Payload):
    """Configure a shared quota pool (or change it): keyed by the pool.

    `limit` of `resource` in `unit`, shared by `pipelines`; usage events naming the pool
    (`ResourceUsage.pool`) feed it. Alerts at `warning` and `critical` of the limit; with
    `throttle`, the pipelines' throttle commands are published (commands topic, keyed by the
    pipeline); without, the alerts and decisions alone say what to do."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "quota.pool.configured.v1"
    TOPIC: ClassVar[Topic] = Topic.DEPLOYMENTS

    pool: Ident
    resource: Name
    unit: Name = "1"
    limit: Annotated[float, Strict(), Field(gt=0)]
    pipelines: tuple[PoolMember, ...] = Field(default=(), max_length=256)
    warning: Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.8
    critical: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.95
    throttle: Bool = False
    by: Name
    reason: Text = ""

    @model_validator(mode="after")
    def _consistent(self) -> QuotaPoolConfigured:
        names = [m.pipeline for m in self.pipelines]
        if len(names) != len(set(names)):
            raise ValueError(f"pipelines must be listed once each: {names}")
        if self.warning >= self.critical:
            raise ValueError(f"warning ({self.warning}) must be below critical ({self.critical})")
        guaranteed = sum(m.guaranteed or 0.0 for m in self.pipelines)
        if guaranteed > self.limit:
            raise ValueError(
                f"the guaranteed shares add up to {guaranteed:g}, over the limit {self.limit:g}"
            )
        return self

    def record_key(self) -> str:
        return self.pool


class QuotaPoolDeleted(Payload):
    """Stop watching a quota pool (its firing alerts resolve)."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "quota.pool.deleted.v1"
    TOPIC: ClassVar[Topic] = Topic.DEPLOYMENTS

    pool: Ident
    by: Name
    reason: Text = ""

    def record_key(self) -> str:
        return self.pool


# ---------------------------------------------------------------------------------------------
# predictions topic
# ---------------------------------------------------------------------------------------------


class Cohort(enum.StrEnum):
    BASELINE = "baseline"
    CANARY = "canary"
    SHADOW = "shadow"


#: A prediction: a number (regression, score), a class, or class probabilities.
PredictionValue = Float | Name | dict[str, Share]
FeatureValue = Int | Float | Str | Bool | None


class Prediction(Contract):
    """One served prediction: the item of a batch, and the body of a single record."""

    version: Ident
    cohort: Cohort
    request_id: Ident
    event_time: Timestamp
    latency_ms: Annotated[float, Strict(), Field(ge=0, le=3_600_000)]
    ok: Bool = True
    error_type: Name | None = None
    prediction: PredictionValue | None = None
    features: dict[str, FeatureValue] | None = None
    user_key: Name | None = None

    @model_validator(mode="after")
    def _error_type_with_errors(self) -> Prediction:
        if not self.ok and self.error_type is None:
            raise ValueError("a failed prediction (ok=false) needs an error_type")
        if self.ok and self.error_type is not None:
            raise ValueError("error_type is only allowed when ok=false")
        return self


class PredictionServed(Prediction, Payload):
    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "prediction.served.v1"
    TOPIC: ClassVar[Topic] = Topic.PREDICTIONS

    deployment_id: Ident
    model: Ident


MAX_BATCH = 10_000


class PredictionBatch(Payload):
    """Many predictions of one deployment in one record, for high-volume services."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "prediction.batch.v1"
    TOPIC: ClassVar[Topic] = Topic.PREDICTIONS

    deployment_id: Ident
    model: Ident
    predictions: tuple[Prediction, ...] = Field(min_length=1, max_length=MAX_BATCH)


# ---------------------------------------------------------------------------------------------
# labels topic
# ---------------------------------------------------------------------------------------------


class LabelReported(Payload):
    """Ground truth arriving later for a request id."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "label.reported.v1"
    TOPIC: ClassVar[Topic] = Topic.LABELS

    deployment_id: Ident
    request_id: Ident
    label: Float | Name
    event_time: Timestamp


# ---------------------------------------------------------------------------------------------
# metrics topic: the rest of what a production ML system must watch
# ---------------------------------------------------------------------------------------------


class MetricReported(Payload):
    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "metric.reported.v1"
    TOPIC: ClassVar[Topic] = Topic.METRICS

    deployment_id: Ident
    name: Name
    value: Float
    unit: Name = "1"
    cohort: Cohort | None = None
    attributes: dict[str, Str] = Field(default_factory=dict)


class ResourceUsage(Payload):
    """Quota or resource use: `used` of `limit` (GPU hours, memory, requests per day, ...).

    A gauge: `used` is the pipeline's use now, not an increment. With `pool`, it feeds that
    quota pool and is keyed by the pool (one worker sees the whole pool); without, it is keyed
    by the deployment as before. `requested`: what the pipeline asks for (its demand), so a
    pipeline that gets less than it asks for is known to wait."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "resource.usage.v1"
    TOPIC: ClassVar[Topic] = Topic.METRICS

    deployment_id: Ident
    resource: Name
    used: NonNegative
    limit: Annotated[float, Strict(), Field(gt=0)] | None = None
    unit: Name = "1"
    pipeline: Name | None = None
    pool: Ident | None = None
    requested: NonNegative | None = None

    def record_key(self) -> str:
        return self.pool if self.pool is not None else self.deployment_id


class TrainingRun(Payload):
    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "training.run.v1"
    TOPIC: ClassVar[Topic] = Topic.METRICS

    deployment_id: Ident
    pipeline: Name
    run_id: Ident
    status: Literal["started", "succeeded", "failed"]
    duration_s: NonNegative | None = None
    error: Text | None = None

    @model_validator(mode="after")
    def _error_when_failed(self) -> TrainingRun:
        if self.status == "failed" and not self.error:
            raise ValueError("a failed training run needs an error")
        return self


class DataProfile(Payload):
    """Feature and label statistics of a dataset: training, validation, test or serving."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "data.profile.v1"
    TOPIC: ClassVar[Topic] = Topic.METRICS

    deployment_id: Ident
    dataset: Name
    split: Literal["training", "validation", "test", "serving"]
    row_count: Count
    features: tuple[FeatureProfile, ...] = ()
    label: FeatureProfile | None = None
    #: the data pipeline that produced it (its alerts are the pipeline's; None: the deployment)
    pipeline: Name | None = None


# ---------------------------------------------------------------------------------------------
# out: commands, alerts, decisions, dead letters
# ---------------------------------------------------------------------------------------------


class CommandAction(enum.StrEnum):
    SET_TRAFFIC = "set_traffic"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    PAUSE = "pause"

    def is_terminal(self) -> bool:
        return self in (CommandAction.PROMOTE, CommandAction.ROLLBACK)


class Command(Payload):
    """What the serving router must do. `command_id` is deterministic: a re-delivered or
    replayed input produces the same id, so routers apply each command once."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "command.v1"
    TOPIC: ClassVar[Topic] = Topic.COMMANDS

    command_id: Ident
    deployment_id: Ident
    action: CommandAction
    canary_percent: Percent
    step: Count
    model: Ident
    candidate_version: Ident
    baseline_version: Ident
    reason: Annotated[str, Strict(), Field(min_length=1, max_length=4096)]
    evidence: Evidence = Field(default_factory=dict)
    issued_at: Timestamp
    #: A rollback's after a promotion: the version that serves all traffic after it (the
    #: deployment record's rollback version, else the baseline). None for every other command,
    #: a rollback during a rollout included: it returns to the baseline, as commands did
    #: before the field existed (so routers of before read them).
    rollback_version: Ident | None = None
    #: by the controller's key (a worker with a command key signs every command; a
    #: CommandListener given the controller's public keys applies only signed ones)
    signature: Signature | None = None


class PipelineThrottle(Payload):
    """Throttle a pipeline's use of a quota pool (or release the throttle): keyed by the
    pipeline, so one pipeline's throttles and releases stay in order. A pipeline's runner
    (a scheduler, a queue's admission) applies it; `command_id` is deterministic, so it is
    applied once. Not a rollout `Command`: it has no deployment, step or versions."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "pipeline.throttle.v1"
    TOPIC: ClassVar[Topic] = Topic.COMMANDS

    command_id: Ident
    pipeline: Ident
    pool: Ident
    resource: Name
    action: Literal["throttle", "release"]
    #: the use to come down to (in the pool's unit); None with a release
    limit: NonNegative | None = None
    unit: Name = "1"
    #: by the controller's key, as a Command's
    signature: Signature | None = None
    reason: Annotated[str, Strict(), Field(min_length=1, max_length=4096)]
    evidence: Evidence = Field(default_factory=dict)
    issued_at: Timestamp

    def record_key(self) -> str:
        return self.pipeline


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(Payload):
    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "alert.v1"
    TOPIC: ClassVar[Topic] = Topic.ALERTS

    #: Deterministic: a function of the deployment, the rollout's alert sequence number, the
    #: status and the dedup key (controller.core.ids.alert_id); the envelope's id too.
    alert_id: Ident
    status: Literal["firing", "resolved"]
    severity: Severity
    kind: Name
    deployment_id: Ident
    subject: Name
    summary: Annotated[str, Strict(), Field(min_length=1, max_length=4096)]
    evidence: Evidence = Field(default_factory=dict)
    runbook_url: Annotated[str, Strict(), Field(max_length=2048)] | None = None
    dedup_key: Ident
    at: Timestamp


PhaseName = Literal[
    "pending", "awaiting_approval", "progressing", "paused", "promoted", "rolled_back", "aborted"
]


class Decision(Payload):
    """A rollout transition with its reason and evidence: the audit trail."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "decision.v1"
    TOPIC: ClassVar[Topic] = Topic.DECISIONS

    decision_id: Ident
    deployment_id: Ident
    from_phase: PhaseName
    to_phase: PhaseName
    step: Count
    canary_percent: Percent
    reason: Annotated[str, Strict(), Field(min_length=1, max_length=4096)]
    evidence: Evidence = Field(default_factory=dict)
    verdicts: tuple[Evidence, ...] = ()
    command_ids: tuple[Ident, ...] = ()
    at: Timestamp


MonitorAction = Literal[
    "configured",
    "deleted",
    "reference_learned",
    "alert_fired",
    "alert_resolved",
    "unmonitored",
    "quality",
]


class MonitorDecision(Payload):
    """What a model's monitor judged and why: the audit trail of production, keyed by model."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "monitor.decision.v1"
    TOPIC: ClassVar[Topic] = Topic.DECISIONS

    decision_id: Ident
    model: Ident
    version: Ident | None = None
    action: MonitorAction
    #: the rule (and its key: a feature, a kind) an alert decision is about
    rule: Name | None = None
    reason: Annotated[str, Strict(), Field(min_length=1, max_length=4096)]
    evidence: Evidence = Field(default_factory=dict)
    at: Timestamp

    def record_key(self) -> str:
        return self.model


PipelineAction = Literal[
    "configured",
    "deleted",
    "alert_fired",
    "alert_resolved",
    "throttled",
    "released",
    "run_judged",
    "profile_judged",
]


class PipelineDecision(Payload):
    """What the pipelines core judged and why (quota pools, training runs, datasets): keyed by
    the pool for a pool's decisions, else by the pipeline."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "pipeline.decision.v1"
    TOPIC: ClassVar[Topic] = Topic.DECISIONS

    decision_id: Ident
    pool: Ident | None = None
    pipeline: Ident | None = None
    action: PipelineAction
    #: the rule (and its key) an alert decision is about
    rule: Name | None = None
    reason: Annotated[str, Strict(), Field(min_length=1, max_length=4096)]
    evidence: Evidence = Field(default_factory=dict)
    at: Timestamp

    @model_validator(mode="after")
    def _keyed(self) -> PipelineDecision:
        if self.pool is None and self.pipeline is None:
            raise ValueError("a pipeline decision names a pool or a pipeline")
        return self

    def record_key(self) -> str:
        return self.pool if self.pool is not None else str(self.pipeline)


class FieldError(Contract):
    loc: Str
    message: Str
    kind: Str


class DeadLetter(Payload):
    """A record that could not be decoded or validated, with why, so nothing is lost."""

    EVENT_TYPE: ClassVar[str] = TYPE_PREFIX + "deadletter.v1"
    TOPIC: ClassVar[Topic] = Topic.DEAD_LETTER

    original_b64: Str
    original_size: Count
    source_topic: Name | None = None
    partition: Count | None = None
    offset: Count | None = None
    key: Str | None = None
    reason: Annotated[str, Strict(), Field(min_length=1)]
    errors: tuple[FieldError, ...] = ()
    rejected_at: Timestamp

    def record_key(self) -> str:
        return self.key or ""


#: Every payload, in a stable order (used by the envelope union and the JSON Schema export).
PAYLOADS: tuple[type[Payload], ...] = (
    DeploymentRequested,
    ApprovalGranted,
    ApprovalDenied,
    PauseRequested,
    ResumeRequested,
    AbortRequested,
    RollbackRequested,
    TrafficApplied,
    CommandRefused,
    MonitorConfigured,
    MonitorDeleted,
    QuotaPoolConfigured,
    QuotaPoolDeleted,
    PredictionServed,
    PredictionBatch,
    LabelReported,
    MetricReported,
    ResourceUsage,
    TrainingRun,
    DataProfile,
    Command,
    PipelineThrottle,
    Alert,
    Decision,
    MonitorDecision,
    PipelineDecision,
    DeadLetter,
)

PAYLOAD_BY_TYPE: dict[str, type[Payload]] = {p.EVENT_TYPE: p for p in PAYLOADS}
