"""A reference distribution of one feature (or of the prediction), e.g. from the training set.

Plain data with the field names of the wire `FeatureProfile`, so the schemas layer maps one onto
the other with `FeatureProfile.from_dict(model.model_dump())`.

Numeric kinds (continuous, integer, binary, and "numeric", the first version's kind, read as
continuous): n strictly ascending `bin_edges` and n + 1 `proportions`: below the first edge, one
per `[edges[i-1], edges[i])`, and at or above the last edge (the `NumericHistogram` layout). A
profile that has no tails may give n - 1 proportions; they are padded with zero tails. The edges
must be ones the skew detector can honour for the kind (`schemas.events.edge_problems`, the one
rule the wire contract applies too).
Categorical: `categories` maps each value to its share. Both kinds may bound the valid domain:
`domain_min` / `domain_max` for numbers, `allowed` categories for strings.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from controller.errors import RolloutError
from schemas.events import edge_problems


class InvalidProfileError(RolloutError, ValueError):
    """A feature profile is malformed; the message says which field and why."""


class FeatureKind(Enum):
    """What a feature's values are; every kind but CATEGORICAL is numeric."""

    CONTINUOUS = "continuous"
    INTEGER = "integer"
    BINARY = "binary"
    CATEGORICAL = "categorical"
    #: the first version's numeric kind: continuous, without the edge-resolution rule
    NUMERIC = "numeric"

    @property
    def is_numeric(self) -> bool:
        return self is not FeatureKind.CATEGORICAL

    @property
    def is_discrete(self) -> bool:
        """Integer or binary: values the serving statistics count exactly."""
        return self in (FeatureKind.INTEGER, FeatureKind.BINARY)


SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    kind: FeatureKind
    bin_edges: tuple[float, ...] = ()
    proportions: tuple[float, ...] = ()
    categories: Mapping[str, float] = field(default_factory=dict, hash=False)
    missing_rate: float = 0.0
    domain_min: float | None = None
    domain_max: float | None = None
    allowed: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        kind = FeatureKind(self.kind)  # accepts the kind's name ("continuous", ...) too
        object.__setattr__(self, "kind", kind)
        edges = tuple(float(e) for e in self.bin_edges)
        props = tuple(float(p) for p in self.proportions)
        object.__setattr__(self, "categories", dict(self.categories))
        if self.allowed is not None:
            object.__setattr__(self, "allowed", tuple(self.allowed))
        if kind.is_numeric:
            if not edges:
                raise InvalidProfileError(f"{kind.value} profile {self.name!r} needs bin_edges")
            if not all(math.isfinite(e) for e in edges) or any(
                b <= a for a, b in itertools.pairwise(edges)
            ):
                raise InvalidProfileError(
                    f"profile {self.name!r}: bin_edges must be finite and strictly ascending"
                )
            problems = edge_problems(kind.value, edges)
            if problems:
                raise InvalidProfileError(f"profile {self.name!r}: {problems[0]}")
            if len(props) == len(edges) - 1:
                props = (0.0, *props, 0.0)
            if len(props) != len(edges) + 1:
                raise InvalidProfileError(
                    f"profile {self.name!r}: {len(edges)} bin_edges need {len(edges) + 1} "
                    f"proportions (with tails) or {len(edges) - 1} (without), got {len(props)}"
                )
            if kind is FeatureKind.BINARY and len(edges) == 2 and props[0]:
                raise InvalidProfileError(
                    f"profile {self.name!r}: proportions of a binary feature: the bin below 0 "
                    "must be empty (values are 0 and 1)"
                )
            total = sum(props)
            values: Sequence[float] = props
        else:
            if not self.categories:
                raise InvalidProfileError(f"categorical profile {self.name!r} needs categories")
            values = list(self.categories.values())
            total = sum(values)
        if any(not (0.0 <= v <= 1.0) for v in values) or abs(total - 1.0) > SUM_TOLERANCE:
            raise InvalidProfileError(
                f"profile {self.name!r}: proportions must be in [0, 1] and sum to 1, "
                f"got a sum of {total:.4f}"
            )
        object.__setattr__(self, "bin_edges", edges)
        object.__setattr__(self, "proportions", props)

    @property
    def is_numeric(self) -> bool:
        return self.kind.is_numeric

    def has_domain(self) -> bool:
        return (
            self.domain_min is not None or self.domain_max is not None or self.allowed is not None
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "bin_edges": list(self.bin_edges),
            "proportions": list(self.proportions),
            "categories": dict(self.categories),
            "missing_rate": self.missing_rate,
            "domain_min": self.domain_min,
            "domain_max": self.domain_max,
            "allowed": None if self.allowed is None else list(self.allowed),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureProfile:
        allowed = data.get("allowed")
        return cls(
            name=str(data["name"]),
            kind=FeatureKind(data["kind"]),
            bin_edges=tuple(data.get("bin_edges", ())),
            proportions=tuple(data.get("proportions", ())),
            categories=dict(data.get("categories", {})),
            missing_rate=float(data.get("missing_rate", 0.0)),
            domain_min=data.get("domain_min"),
            domain_max=data.get("domain_max"),
            allowed=None if allowed is None else tuple(allowed),
        )
