"""Verdicts: what a detector concludes, why, and on what numbers.

A verdict is never a bare bool. It names the detector, gives an `Outcome`, a reason a person reads
in an alert ("canary p99 412 ms vs baseline 201 ms, ratio 2.05 > 1.5") and the evidence behind
it as plain JSON values. Verdicts combine with an explicit worst-of order, `ORDER`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: A JSON-able scalar: what evidence values may be.
EvidenceValue = float | int | str | bool | None
Evidence = Mapping[str, EvidenceValue]


class Outcome(enum.Enum):
    """What a rule concluded. Severity follows `ORDER`: PASS < NO_DATA < INCONCLUSIVE < FAIL."""

    PASS = "pass"
    NO_DATA = "no_data"
    INCONCLUSIVE = "inconclusive"
    FAIL = "fail"

    @property
    def severity(self) -> int:
        """Position in `ORDER`; a larger number is worse."""
        return ORDER.index(self)

    def is_worse_than(self, other: Outcome) -> bool:
        return self.severity > other.severity

    def is_failure(self) -> bool:
        return self is Outcome.FAIL


#: The worst-of order, best first. `worst` folds verdicts along it.
ORDER: tuple[Outcome, ...] = (Outcome.PASS, Outcome.NO_DATA, Outcome.INCONCLUSIVE, Outcome.FAIL)


def _plain(value: EvidenceValue) -> EvidenceValue:
    """Keep evidence JSON-able: a non-finite float becomes its name ("inf", "-inf", "nan")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@dataclass(frozen=True)
class Verdict:
    """The conclusion of one detector (or one rule) about a canary."""

    detector: str
    outcome: Outcome
    reason: str
    evidence: Evidence = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        plain = {str(k): _plain(v) for k, v in self.evidence.items()}
        object.__setattr__(self, "evidence", plain)

    @classmethod
    def passed(cls, detector: str, reason: str, evidence: Evidence | None = None) -> Verdict:
        return cls(detector, Outcome.PASS, reason, evidence or {})

    @classmethod
    def no_data(cls, detector: str, reason: str, evidence: Evidence | None = None) -> Verdict:
        return cls(detector, Outcome.NO_DATA, reason, evidence or {})

    @classmethod
    def inconclusive(cls, detector: str, reason: str, evidence: Evidence | None = None) -> Verdict:
        return cls(detector, Outcome.INCONCLUSIVE, reason, evidence or {})

    @classmethod
    def failed(cls, detector: str, reason: str, evidence: Evidence | None = None) -> Verdict:
        return cls(detector, Outcome.FAIL, reason, evidence or {})

    def renamed(self, detector: str) -> Verdict:
        """The same verdict under another name (a policy rule's name, for instance)."""
        return Verdict(detector, self.outcome, self.reason, self.evidence)

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(
            detector=str(data["detector"]),
            outcome=Outcome(data["outcome"]),
            reason=str(data["reason"]),
            evidence=dict(data.get("evidence", {})),
        )


NO_RULES = "no rules evaluated"


def worst(verdicts: Iterable[Verdict], detector: str = "worst") -> Verdict:
    """The most severe verdict along `ORDER`; the first one wins a tie.

    An empty list is NO_DATA with reason "no rules evaluated": nothing judged is not a pass.
    """
    result: Verdict | None = None
    for verdict in verdicts:
        if result is None or verdict.outcome.is_worse_than(result.outcome):
            result = verdict
    if result is None:
        return Verdict.no_data(detector, NO_RULES)
    return result
