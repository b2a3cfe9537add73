"""Data quality counts of one field (a feature, or the prediction)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class FieldQuality:
    """How often a field was present, missing, invalid or out of its domain.

    `present` counts usable values; `missing` counts absent or null values; `invalid` counts
    non-finite numbers and values of a type the field cannot hold. `out_of_domain` counts present
    values outside the field's domain (a range, or a set of allowed categories). Observation does
    not know domains, so `CohortStats` stores it as 0; `CohortStats.field_quality(name, profile)`
    fills it from the recorded distribution and a profile's domain.
    """

    present: int = 0
    missing: int = 0
    invalid: int = 0
    out_of_domain: int = 0

    @property
    def total(self) -> int:
        """Every observation of the field: present, missing or invalid."""
        return self.present + self.missing + self.invalid

    def rate(self, count: int) -> float:
        return count / self.total if self.total else 0.0

    @property
    def missing_rate(self) -> float:
        return self.rate(self.missing)

    @property
    def invalid_rate(self) -> float:
        return self.rate(self.invalid)

    @property
    def out_of_domain_rate(self) -> float:
        return self.rate(self.out_of_domain)

    def copy(self) -> FieldQuality:
        return FieldQuality(self.present, self.missing, self.invalid, self.out_of_domain)

    def merged(self, other: FieldQuality) -> FieldQuality:
        return FieldQuality(
            self.present + other.present,
            self.missing + other.missing,
            self.invalid + other.invalid,
            self.out_of_domain + other.out_of_domain,
        )

    def merge_from(self, other: FieldQuality) -> None:
        """Add `other`'s counts to these, in place: `==` to `self.merged(other)`."""
        self.present += other.present
        self.missing += other.missing
        self.invalid += other.invalid
        self.out_of_domain += other.out_of_domain

    def to_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "missing": self.missing,
            "invalid": self.invalid,
            "out_of_domain": self.out_of_domain,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FieldQuality:
        return cls(
            present=int(data.get("present", 0)),
            missing=int(data.get("missing", 0)),
            invalid=int(data.get("invalid", 0)),
            out_of_domain=int(data.get("out_of_domain", 0)),
        )
