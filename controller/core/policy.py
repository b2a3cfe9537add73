"""The rollout policy: which rules judge a canary, and what the rollout does with their verdicts.

A policy is plain data (YAML or JSON on disk, see controller/policies/default.yaml), validated
when it loads: an unknown detector, an unknown or ill-typed detector parameter, a duplicate rule
name or a runbook template with an unknown field fails with a `PolicyError` that says which
rule and what to fix (an unknown detector lists the known ones). Reading the file is the shell's
job (controller.policy_io); this module only turns a parsed mapping (or JSON text) into a
`Policy`.

```yaml
version: 1
name: default
significance: {alpha: 0.01}            # total false-rollback budget of the sequential rules
steps: {min_samples: 200, min_bake_s: 60}   # used where the plan's TrafficStep leaves them unset
deadline: {after_s: 7200, action: rollback} # rollback | promote | pause; plan.deadline_s wins
no_data: wait                           # wait | pass | rollback
inconclusive: wait                      # wait | pass
alerts: {runbook_url: "https://runbooks.example/rollout/{rule}", resource_warning: 0.9, ...}
evaluation: {recent_s: 6}               # pane width of `window: recent` rules
rules:
  - name: errors
    detector: error_rate
    params: {tolerance: 0.2}
    dry_run: false                      # evaluated and reported, never acted on
    requires: null                      # training_profile: acting only when one exists
    no_data: null                       # per-rule override of the policy's no_data
    inconclusive: null
    every_n: 1                          # judge every n new canary samples (expensive rules)
    window: rollout                     # rollout | recent: which statistics the rule judges
    locked: false                       # a plan's guardrail may not override a locked rule
```

**The significance budget.** The detectors that say they spend alpha (`Detector.spends_alpha()`:
today `error_rate`, `latency` and `data_quality`) are anytime-valid: each fails falsely with
probability at most its `alpha` over the whole rollout, however often it is checked. The
policy's `significance.alpha` is the budget of the acting rules among them (a latency rule with
`quantiles: []` has no test and takes no share: its detector says so): each one that
does not set `alpha` itself gets `split_alpha(alpha, n)` (Bonferroni, alpha / n over the n such
rules), so the probability that any of them rolls back a healthy canary stays at most
`significance.alpha` (plus any alpha a rule sets explicitly: that rule opts out of the split and
its alpha adds to the total). A rule on the recent window divides its share again by the number
of panes in the rollout's horizon (see `Window`). Dry-run rules never act: they take no share. The
other detectors (outage, prediction_skew, training_serving_skew, latency's plain p99 rules) are
thresholds far beyond sampling noise, not tests with a level: their false alarm rate is governed
by their own parameters (outage's per-silence alpha, skew's max_p_value and min_samples).

**Judged from the clock.** A detector whose verdict changes with `now` alone
(`Detector.judged_from_clock`: today `outage`) is judged at every evaluation: its rule's
`every_n` must be 1.

**Guardrails of the plan.** A deployment request's `plan.guardrails` merge with the policy's
rules by name: a guardrail with a new name adds a rule; one with the name of a policy rule
overrides it: with the same detector its params are laid over the rule's (the guardrail's keys
win) and its `dry_run` replaces the rule's; with another detector it replaces the rule (params
and all). The rule's policy-only settings (requires, no_data, inconclusive, every_n, window)
stay. A `locked` rule cannot be overridden; a guardrail that tries, or that names an unknown
detector or parameter, rejects the deployment (see controller.core.rollout).
"""

from __future__ import annotations

import enum
import json
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controller.core.detectors import (
    DETECTORS,
    Detector,
    DetectorFactory,
    InvalidParameterError,
    ParamValue,
    RestartsOnSlowRequests,
    UnknownDetectorError,
    split_alpha,
)
from controller.errors import InvariantError, RolloutError
from schemas import GuardrailRule

#: The longest a rollout without a deadline is assumed to last (for the recent-window split).
DEFAULT_HORIZON_S = 86_400.0
#: The detectors' own default alpha (what a recent-window rule without one starts from).
_DETECTOR_DEFAULT_ALPHA = 0.01
#: Fields a runbook URL template may use.
RUNBOOK_FIELDS = frozenset({"deployment_id", "rule", "detector", "kind", "model"})

Registry = Mapping[str, DetectorFactory]


class PolicyError(RolloutError, ValueError):
    """A policy (or a plan's guardrails) is invalid; `problems` lists what to fix, one each."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        listed = "; ".join(self.problems)
        super().__init__(f"invalid {source}: {listed}")


# ---------------------------------------------------------------------------------------------
# Closed sets with behaviour
# ---------------------------------------------------------------------------------------------


class NoData(enum.StrEnum):
    """What a NO_DATA verdict of an acting rule means for the step."""

    #: Keep baking: the step does not advance; the deadline settles a rollout that never gets data.
    WAIT = "wait"
    #: The rule has nothing to say (an optional signal): it does not hold the step.
    PASS = "pass"
    #: Like wait, and a rule still without data at the deadline rolls back whatever the
    #: deadline's action says: missing evidence counts as unsafe.
    ROLLBACK = "rollback"

    def holds_step(self) -> bool:
        return self is not NoData.PASS

    def rolls_back_at_deadline(self) -> bool:
        return self is NoData.ROLLBACK


class Inconclusive(enum.StrEnum):
    """What an INCONCLUSIVE verdict of an acting rule means for the step."""

    WAIT = "wait"
    PASS = "pass"

    def holds_step(self) -> bool:
        return self is Inconclusive.WAIT


class DeadlineAction(enum.StrEnum):
    """What the rollout does when its deadline passes before the last step promotes."""

    ROLLBACK = "rollback"
    PROMOTE = "promote"
    PAUSE = "pause"


class Requirement(enum.StrEnum):
    """A condition for a rule to act; unmet, the rule is evaluated as a dry run."""

    TRAINING_PROFILE = "training_profile"


class Window(enum.StrEnum):
    """Which statistics a rule judges."""

    #: Everything since the rollout started: what anytime-valid tests need.
    ROLLOUT = "rollout"
    #: The last `recent_s` to 2 x `recent_s` seconds (two rotating panes): a shift that starts
    #: late in a long rollout is not diluted by the healthy data before it. An anytime-valid
    #: rule on it is a new test with every pane, so its alpha is divided by the number of
    #: panes in the rollout's horizon (its deadline, or a day): the rollout keeps its budget.
    RECENT = "recent"


# ---------------------------------------------------------------------------------------------
# The policy document
# ---------------------------------------------------------------------------------------------

_STRICT = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
Ident = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class _Model(BaseModel):
    model_config = _STRICT


class RuleSpec(_Model):
    """One rule as the policy file writes it."""

    name: Ident
    detector: Ident
    params: dict[str, ParamValue] = Field(default_factory=dict)
    dry_run: bool = False
    requires: Requirement | None = None
    no_data: NoData | None = None
    inconclusive: Inconclusive | None = None
    every_n: Annotated[int, Field(ge=1)] = 1
    window: Window = Window.ROLLOUT
    locked: bool = False


class Significance(_Model):
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.01


class StepDefaults(_Model):
    """Gates of a step where the plan's TrafficStep does not set them explicitly."""

    min_samples: Annotated[int, Field(ge=0)] = 200
    min_bake_s: Annotated[float, Field(ge=0)] = 60.0


class Deadline(_Model):
    """`after_s` counts from the deployment request; the plan's `deadline_s` wins."""

    after_s: Annotated[float, Field(gt=0)] | None = None
    action: DeadlineAction = DeadlineAction.ROLLBACK


class AlertSettings(_Model):
    #: A template with fields among RUNBOOK_FIELDS, e.g. "https://runbooks.example/{rule}".
    runbook_url: Annotated[str, Field(max_length=2048)] | None = None
    #: ResourceUsage used/limit at or above which a warning (critical) alert fires.
    resource_warning: Annotated[float, Field(gt=0)] = 0.9
    resource_critical: Annotated[float, Field(gt=0)] = 1.0
    #: A failed TrainingRun fires a warning alert (resolved by the pipeline's next success).
    training_run_failed: bool = True

    @field_validator("runbook_url")
    @classmethod
    def _known_fields(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"runbook_url is not a valid template: {exc}") from None
        unknown = sorted(n for n in names if n not in RUNBOOK_FIELDS)
        if unknown:
            raise ValueError(
                f"runbook_url uses unknown fields {unknown}; known: {sorted(RUNBOOK_FIELDS)}"
            )
        return value

    @model_validator(mode="after")
    def _ordered(self) -> AlertSettings:
        if self.resource_critical < self.resource_warning:
            raise ValueError("resource_critical must be >= resource_warning")
        return self


class Evaluation(_Model):
    """How the statistics behind rules with `window: recent` are kept, and how often the
    change-point tests restart."""

    #: Width of one pane; a recent window covers between recent_s and 2 * recent_s seconds.
    recent_s: Annotated[float, Field(gt=0)] = 30.0
    #: A checkpoint of the counts every checkpoint_s seconds once the canary has requests: the
    #: error-rate and slow-request tests restart there too (controller.core.stats.checkpoint);
    #: 0 takes none.
    checkpoint_s: Annotated[float, Field(ge=0)] = 10.0
    #: The cohorts are compared over the same span of event time: data of one cohort newer
    #: than the other's newest waits up to align_s seconds for it (controller.core.rollout.
    #: alignment); 0 compares the statistics as they arrive.
    align_s: Annotated[float, Field(ge=0)] = 5.0
    #: Where a step changes the canary's share the statistics are cut, and the settle_s seconds
    #: after the step starts (at the router's acknowledged `applied_at`) are left out of the
    #: share tests: set it to at least the serving timeout (controller.core.rollout.alignment).
    settle_s: Annotated[float, Field(ge=0)] = 2.0


class RouterSettings(_Model):
    """What the serving router does with a `set_traffic` command (docs/contracts.md)."""

    #: The router acknowledges each set_traffic with `traffic.applied` (the serving SDK's
    #: CommandListener does). Then a step's bake clock and the outage rule's silence count from
    #: the acknowledged `applied_at`: before it the canary is judged at the share last
    #: acknowledged. False for a router that never acknowledges: both count from the command.
    acknowledges: bool = True
    #: A set_traffic not acknowledged this long after it was issued fires a router alert (the
    #: step stays held until the acknowledgement arrives; the alert resolves then).
    ack_timeout_s: Annotated[float, Field(gt=0)] = 30.0


#: An access entry: an identity's name, a group, or "*" (any verified identity).
Principal = Annotated[str, Field(min_length=1, max_length=256)]
_ANYONE: tuple[str, ...] = ("*",)


class AccessSettings(_Model):
    """Who may act on a rollout once the worker verifies signed control events (an identities
    file; controller.core.access): identity names or groups, "*" for any verified identity.
    A gate whose approvers the deployment record names is theirs to approve or deny."""

    #: request a rollout (a signed deployment request)
    deploy: tuple[Principal, ...] = _ANYONE
    #: approve or deny a gate the deployment record names nobody for
    approve: tuple[Principal, ...] = _ANYONE
    #: pause and resume
    pause: tuple[Principal, ...] = _ANYONE
    abort: tuple[Principal, ...] = _ANYONE
    #: roll back, during a rollout or after its promotion
    rollback: tuple[Principal, ...] = _ANYONE


class PolicyDocument(_Model):
    """The policy file's schema (version 1)."""

    version: Literal[1] = 1
    name: Ident = "default"
    description: str = ""
    significance: Significance = Significance()
    steps: StepDefaults = StepDefaults()
    deadline: Deadline = Deadline()
    no_data: NoData = NoData.WAIT
    inconclusive: Inconclusive = Inconclusive.WAIT
    alerts: AlertSettings = AlertSettings()
    evaluation: Evaluation = Evaluation()
    router: RouterSettings = RouterSettings()
    access: AccessSettings = AccessSettings()
    rules: tuple[RuleSpec, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> PolicyDocument:
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique, repeated: {duplicates}")
        return self


# ---------------------------------------------------------------------------------------------
# Bound rules: a rule with its detector built and its significance level set
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A rule ready to judge: its detector built from the effective parameters."""

    name: str
    detector_name: str
    detector: Detector
    params: Mapping[str, ParamValue]
    dry_run: bool
    requires: Requirement | None
    no_data: NoData
    inconclusive: Inconclusive
    every_n: int
    window: Window
    #: "policy", "plan" (added by a guardrail) or "policy+plan" (overridden by one).
    origin: str

    def is_acting(self, has_training_profile: bool) -> bool:
        """Acting rules roll back on FAIL and gate the steps; the others only report."""
        if self.dry_run:
            return False
        if self.requires is Requirement.TRAINING_PROFILE:
            return has_training_profile
        return True

    def holds_step(self, outcome_name: str) -> bool:
        """Does an acting rule with this outcome (not FAIL) keep the step baking?"""
        if outcome_name == "no_data":
            return self.no_data.holds_step()
        if outcome_name == "inconclusive":
            return self.inconclusive.holds_step()
        return False

    def describe(self) -> dict[str, Any]:
        return {
            "rule": self.name,
            "detector": self.detector_name,
            "dry_run": self.dry_run,
            "origin": self.origin,
            "alpha": self.params.get("alpha") if self.detector.spends_alpha() else None,
        }


@dataclass(frozen=True)
class RuleSet:
    """The rules of one rollout (policy merged with the plan's guardrails)."""

    rules: tuple[Rule, ...]
    #: The significance split: total alpha, how many rules share it, the share of each.
    alpha_total: float
    alpha_shared_by: tuple[str, ...]
    alpha_each: float | None
    #: Panes of the recent window in the rollout's horizon (tests on it divide alpha by this).
    recent_windows: int = 1

    def by_name(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def has_window(self, window: Window) -> bool:
        return any(r.window is window for r in self.rules)

    def checkpoint_quantiles(self) -> tuple[float, ...]:
        """The latency quantiles whose slow requests the checkpoints record: those of the rules
        on the whole rollout whose detector restarts on them."""
        quantiles = {
            q
            for r in self.rules
            if r.window is Window.ROLLOUT and isinstance(r.detector, RestartsOnSlowRequests)
            for q in r.detector.checkpoint_quantiles
        }
        return tuple(sorted(quantiles))


class Policy:
    """A validated policy. Build with `Policy.from_mapping` / `parse_policy_json`.

    `registry` is the detector registry rules are built from (the real `DETECTORS` unless a test
    passes its own). The rules of a rollout are bound once per plan (`bind`), which builds the
    detectors and splits alpha; the result is cached on the policy by the guardrails' content.
    """

    def __init__(self, document: PolicyDocument, registry: Registry | None = None) -> None:
        self.document = document
        self.registry: Registry = DETECTORS if registry is None else registry
        self._bound: dict[str, RuleSet] = {}
        problems = [p for spec in document.rules for p in self._check_spec(spec, "rules")]
        if problems:
            raise PolicyError(f"policy {document.name!r}", problems)
        self.default_rules = self.bind(())

    # ---- construction -----------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], registry: Registry | None = None) -> Policy:
        try:
            document = PolicyDocument.model_validate(dict(data))
        except ValidationError as exc:
            name = data.get("name", "?") if isinstance(data, Mapping) else "?"
            raise PolicyError(f"policy {name!r}", _problems(exc)) from None
        return cls(document, registry)

    # ---- reading ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.document.name

    @property
    def alpha(self) -> float:
        return self.document.significance.alpha

    @property
    def deadline(self) -> Deadline:
        return self.document.deadline

    @property
    def alerts(self) -> AlertSettings:
        return self.document.alerts

    @property
    def steps(self) -> StepDefaults:
        return self.document.steps

    @property
    def router(self) -> RouterSettings:
        return self.document.router

    @property
    def access(self) -> AccessSettings:
        return self.document.access

    @property
    def recent_s(self) -> float:
        return self.document.evaluation.recent_s

    @property
    def checkpoint_s(self) -> float:
        return self.document.evaluation.checkpoint_s

    @property
    def align_s(self) -> float:
        return self.document.evaluation.align_s

    @property
    def settle_s(self) -> float:
        return self.document.evaluation.settle_s

    def to_dict(self) -> dict[str, Any]:
        """The policy document as plain JSON values (defaults filled in)."""
        return self.document.model_dump(mode="json")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        return self.document == other.document and self.registry is other.registry

    __hash__ = None  # type: ignore[assignment]  # holds a cache: compared by content

    def __repr__(self) -> str:
        return f"Policy(name={self.name!r}, rules={[r.name for r in self.document.rules]})"

    def runbook_url(
        self, *, deployment_id: str, rule: str, detector: str, kind: str, model: str
    ) -> str | None:
        template = self.alerts.runbook_url
        if template is None:
            return None
        return template.format(
            deployment_id=deployment_id, rule=rule, detector=detector, kind=kind, model=model
        )

    # ---- binding the rules of one rollout ---------------------------------------------

    def bind(self, guardrails: Sequence[GuardrailRule], horizon_s: float | None = None) -> RuleSet:
        """The rules of a rollout whose plan carries `guardrails` and that lasts at most
        `horizon_s` (its deadline; a day when it has none); raises PolicyError."""
        horizon = DEFAULT_HORIZON_S if horizon_s is None else horizon_s
        key = f"{horizon!r}|{_guardrails_key(guardrails)}"
        found = self._bound.get(key)
        if found is None:
            found = self._bind(guardrails, horizon)
            if len(self._bound) >= 1024:  # bounded: plans rarely differ, but never grow forever
                self._bound.clear()
            self._bound[key] = found
        return found

    def _bind(self, guardrails: Sequence[GuardrailRule], horizon_s: float) -> RuleSet:
        specs: dict[str, tuple[RuleSpec, str]] = {
            s.name: (s, "policy") for s in self.document.rules
        }
        problems: list[str] = []
        for guard in guardrails:
            current = specs.get(guard.name)
            if current is None:
                spec = RuleSpec(
                    name=guard.name,
                    detector=guard.detector,
                    params=dict(guard.params),
                    dry_run=guard.dry_run,
                )
                specs[guard.name] = (spec, "plan")
                continue
            base = current[0]
            if base.locked:
                problems.append(
                    f"guardrail {guard.name!r} overrides a locked policy rule; "
                    "rename the guardrail or ask the policy owner to unlock the rule"
                )
                continue
            params = (
                {**base.params, **guard.params}
                if base.detector == guard.detector
                else dict(guard.params)
            )
            spec = base.model_copy(
                update={"detector": guard.detector, "params": params, "dry_run": guard.dry_run}
            )
            specs[guard.name] = (spec, "policy+plan")
        for spec, origin in specs.values():
            if origin != "policy":
                problems += self._check_spec(spec, "plan.guardrails")
        if problems:
            raise PolicyError("plan.guardrails", problems)

        # built from the rule's own parameters (valid: checked above), to ask what it spends
        spends = {
            s.name: self.registry[s.detector](s.params).spends_alpha() for s, _ in specs.values()
        }
        sharing = [
            s.name
            for s, _ in specs.values()
            if spends[s.name] and not s.dry_run and "alpha" not in s.params
        ]
        each = split_alpha(self.alpha, len(sharing)) if sharing else None
        windows = math.ceil(horizon_s / self.recent_s) + 1
        rules = []
        for spec, origin in specs.values():
            params = dict(spec.params)
            if spec.name in sharing:
                params["alpha"] = each
            if spec.window is Window.RECENT and spends[spec.name]:
                # one test per pane: the rule's alpha is spread over the panes of the horizon
                alpha = params.get("alpha", _DETECTOR_DEFAULT_ALPHA)
                if not isinstance(alpha, float | int):  # the detector checked its parameters
                    raise InvariantError(f"rule {spec.name!r}: alpha {alpha!r} is not a number")
                params["alpha"] = float(alpha) / windows
            rules.append(
                Rule(
                    name=spec.name,
                    detector_name=spec.detector,
                    detector=self.registry[spec.detector](params),
                    params=params,
                    dry_run=spec.dry_run,
                    requires=spec.requires,
                    no_data=spec.no_data or self.document.no_data,
                    inconclusive=spec.inconclusive or self.document.inconclusive,
                    every_n=spec.every_n,
                    window=spec.window,
                    origin=origin,
                )
            )
        return RuleSet(tuple(rules), self.alpha, tuple(sharing), each, windows)

    def _check_spec(self, spec: RuleSpec, where: str) -> list[str]:
        """Problems of one rule: unknown detector (with the known ones), bad parameters."""
        label = f"{where} rule {spec.name!r}"
        factory = self.registry.get(spec.detector)
        if factory is None:
            return [f"{label}: {UnknownDetectorError(spec.detector, list(self.registry))}"]
        try:
            detector = factory(dict(spec.params))
        except InvalidParameterError as exc:
            return [f"{label}: {exc}"]
        if spec.every_n > 1 and detector.judged_from_clock:
            return [f"{label}: {spec.detector} is judged from the clock, every_n must be 1"]
        return []


def _guardrails_key(guardrails: Sequence[GuardrailRule]) -> str:
    if not guardrails:
        return ""
    return json.dumps([g.model_dump(mode="json") for g in guardrails], sort_keys=True)


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"]) or "$"
        out.append(f"{loc}: {error['msg']}")
    return out


def parse_policy_json(text: str, registry: Registry | None = None) -> Policy:
    """A policy from JSON text (YAML is read by controller.policy_io, outside the core)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError("policy", [f"not JSON: {exc}"]) from None
    if not isinstance(data, Mapping):
        raise PolicyError("policy", ["the document must be a mapping"])
    return Policy.from_mapping(data, registry)
