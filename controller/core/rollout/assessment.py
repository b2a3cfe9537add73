"""Judging and assessing: which rules fail, which hold the step, which lack data.

`judge` runs every rule of a rollout on its statistics; `assess` reads the verdicts against the
rules and the step's gates and says, in one place, what the rollout should do and why:

- `failing`: acting rules that FAIL; the canary rolls back.
- `holding`: acting rules whose outcome holds the step (a rule's `no_data` / `inconclusive`
  settings say which outcomes hold).
- `missing`: acting rules with NO_DATA whose `no_data` is `rollback`: at the deadline they turn
  any deadline into a rollback.
- `gates`: the step's bake time and canary samples against their minimums.

`Assessment.explain()` is the sentence an SRE reads for "why did it roll back" or "why is it
stuck"; the evaluation acts on the same fields, so the two cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from controller.core.detectors import EvaluationContext
from controller.core.phases import Phase
from controller.core.policy import Policy, Rule, RuleSet, Window
from controller.core.state import BASELINE, CANARY, CachedVerdict, RolloutState
from controller.core.stats.cohort import CohortStats
from controller.core.stats.sequential import Counts
from controller.core.verdict import Outcome, Verdict


@dataclass(frozen=True)
class Judged:
    """One rule's verdict, and whether the rule acts (else it runs in dry run)."""

    rule: Rule
    verdict: Verdict
    acting: bool

    def as_evidence(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "detector": self.rule.detector_name,
            "acting": self.acting,
            "outcome": self.verdict.outcome.value,
            "reason": self.verdict.reason,
            "evidence": dict(self.verdict.evidence),
        }


#: The bake runs this far (s) past the inputs' reach: a report batch, a short lull. Inputs that
#: trail the clock by more (a worker cut off from the broker, a backlog) hold the bake where
#: they reach, and a step's gates say by how much they trail.
INPUTS_BEHIND_S = 5.0


@dataclass(frozen=True)
class Gates:
    """The current step's gates: bake time and canary requests since its traffic was set."""

    baked_s: float
    min_bake_s: float
    samples: int
    min_samples: int
    #: Why the bake clock does not run (the router's acknowledgement awaited), or "".
    held: str = ""
    #: How far the inputs trail the clock (s): the bake runs at most INPUTS_BEHIND_S past them.
    behind_s: float = 0.0

    def met(self) -> bool:
        return (
            not self.held and self.baked_s >= self.min_bake_s and self.samples >= self.min_samples
        )

    def describe(self) -> str:
        text = (
            f"baked {self.baked_s:.0f} s of {self.min_bake_s:g} s, "
            f"{self.samples} of {self.min_samples} canary requests"
        )
        if self.held:
            text += f" ({self.held})"
        elif self.behind_s > INPUTS_BEHIND_S:
            text += (
                f" (the inputs trail the clock by {self.behind_s:.0f} s: the bake runs "
                f"{INPUTS_BEHIND_S:g} s past them at most)"
            )
        return text


@dataclass(frozen=True)
class Assessment:
    """What the verdicts mean for the rollout (see the module docstring)."""

    judged: tuple[Judged, ...]
    failing: tuple[Judged, ...]
    holding: tuple[Judged, ...]
    missing: tuple[Judged, ...]
    gates: Gates | None = None

    @property
    def acting(self) -> tuple[Judged, ...]:
        return tuple(j for j in self.judged if j.acting)

    def dry_run_failing(self) -> tuple[Judged, ...]:
        return tuple(j for j in self.judged if not j.acting and j.verdict.outcome is Outcome.FAIL)

    def may_advance(self) -> bool:
        """Nothing fails or holds and the gates are met: the step may pass."""
        return not self.failing and not self.holding and self.gates is not None and self.gates.met()

    def explain(self) -> str:
        """Why the rollout rolls back, holds, or may advance: one sentence."""
        if self.failing:
            return "rolls back: " + "; ".join(
                f"{j.rule.name}: {j.verdict.reason}" for j in self.failing
            )
        parts: list[str] = []
        if self.gates is not None and not self.gates.met():
            parts.append(self.gates.describe())
        parts += [f"{j.rule.name} {j.verdict.outcome}: {j.verdict.reason}" for j in self.holding]
        if parts:
            return "holds: " + "; ".join(parts)
        if self.gates is None:
            return "no step is judged (not progressing)"
        acting = len(self.acting)
        return f"may advance: {self.gates.describe()}, {acting} acting rules pass"

    def verdicts_evidence(self) -> list[dict[str, Any]]:
        return [j.as_evidence() for j in self.judged]


def assess(judged: tuple[Judged, ...], gates: Gates | None = None) -> Assessment:
    """Read the verdicts: which acting rules fail, hold the step, or lack data."""
    acting = [j for j in judged if j.acting]
    failing = tuple(j for j in acting if j.verdict.outcome is Outcome.FAIL)
    holding = tuple(
        j
        for j in acting
        if j.verdict.outcome not in (Outcome.PASS, Outcome.FAIL)
        and j.rule.holds_step(j.verdict.outcome.value)
    )
    missing = tuple(
        j
        for j in acting
        if j.verdict.outcome is Outcome.NO_DATA and j.rule.no_data.rolls_back_at_deadline()
    )
    return Assessment(judged, failing, holding, missing, gates)


def gate_values(state: RolloutState, policy: Policy) -> tuple[float, int]:
    """The current step's minimum bake time and samples: the step's own, else the policy's."""
    step = state.steps[state.step]
    given = step.model_fields_set
    bake = step.min_bake_s if "min_bake_s" in given else policy.steps.min_bake_s
    samples = step.min_samples if "min_samples" in given else policy.steps.min_samples
    return bake, samples


def gates(state: RolloutState, policy: Policy, now: float) -> Gates | None:
    """The gates of the current step while the rollout progresses; None otherwise."""
    if state.phase is not Phase.PROGRESSING:
        return None
    min_bake, min_samples = gate_values(state, policy)
    started = state.step_started_at if state.step_started_at is not None else now
    if state.awaiting_ack():
        held = (
            f"the router has not acknowledged set_traffic {state.step_command_id} "
            f"({now - started:.0f} s): the bake starts at its traffic.applied"
        )
        return Gates(0.0, min_bake, state.step_samples, min_samples, held=held)
    reach = state.inputs_reach()
    if reach is None:  # a routed cohort has reported nothing yet
        return Gates(0.0, min_bake, state.step_samples, min_samples, behind_s=now - started)
    covered = min(now, max(reach + INPUTS_BEHIND_S, started))
    return Gates(covered - started, min_bake, state.step_samples, min_samples, behind_s=now - reach)


def context(state: RolloutState, now: float) -> EvaluationContext:
    """What the detectors are told besides the cohorts: the clock, the traffic share the
    router has put in place and since when (`RolloutState.applied`), the training profile,
    the checkpoints and each cohort's newest event time."""
    features, prediction = state.profiles()
    percent, since = state.applied()
    return EvaluationContext(
        now=now,
        step_started_at=since,
        traffic_share=percent / 100.0,
        training_profile=features,
        prediction_profile=prediction,
        checkpoints=state.checkpoints,
        last_seen=state.received,
        labelled=state.labelled,
        label_strata=[Counts.from_list(c) for c in state.label_strata],
        label_seen=state.label_seen,
    )


def cohorts(state: RolloutState, rule: Rule, now: float) -> tuple[CohortStats, CohortStats]:
    """The baseline and canary statistics a rule judges: the recent panes (rotated to `now`)
    for a rule with `window: recent`, else the whole rollout's."""
    if rule.window is Window.RECENT and state.panes is not None:
        for p in state.panes.values():
            p.rotate(now)
        return state.panes[BASELINE].view(), state.panes[CANARY].view()
    return state.baseline, state.canary


def judge(state: RolloutState, rules: RuleSet, now: float) -> tuple[Judged, ...]:
    """Every rule's verdict on the statistics so far (a rule with `every_n` > 1 reuses its
    last verdict until that many more canary requests arrived)."""
    base = context(state, now)
    has_profile = state.has_training_profile()
    canary_requests = state.canary.requests
    recent: tuple[CohortStats, CohortStats] | None = None
    judged = []
    for rule in rules.rules:
        cached = state.rule_cache.get(rule.name) if rule.every_n > 1 else None
        if (
            cached is not None
            and cached.profile_version == state.profile_version
            and 0 <= canary_requests - cached.at_requests < rule.every_n
        ):
            verdict = cached.verdict
        else:
            if rule.window is Window.RECENT and state.panes is not None:
                if recent is None:  # the panes' view is merged once for every recent rule
                    recent = cohorts(state, rule, now)
                baseline, canary = recent
                # the checkpoints count the whole rollout, not the panes
                rule_context = replace(base, checkpoints=())
            else:
                baseline, canary = state.baseline, state.canary
                rule_context = base
            verdict = rule.detector.evaluate(baseline, canary, rule_context).renamed(rule.name)
            if rule.every_n > 1:
                state.rule_cache[rule.name] = CachedVerdict(
                    canary_requests, state.profile_version, verdict
                )
        judged.append(Judged(rule, verdict, rule.is_acting(has_profile)))
    return tuple(judged)
