"""Statistics deltas: what the prediction lane hands the rollout agent.

The lane folds many predictions of one deployment into mergeable `CohortStats`, one per
(cohort, version), and sends the fold as one record on the internal stats topic, keyed by
deployment id. The agent merges it into the rollout's state. This is the internal wire contract
between the two halves of the worker; it is versioned like the public ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from controller.core.stats.cohort import CohortStats, StatsConfig
from schemas import Envelope, PredictionBatch, PredictionServed

DELTA_VERSION = 1


class DeploymentFold:
    """The predictions of one deployment since the last flush, one CohortStats per
    (cohort, version)."""

    __slots__ = ("cohorts", "count", "deployment_id", "model")

    def __init__(self, deployment_id: str, model: str) -> None:
        self.deployment_id = deployment_id
        self.model = model
        self.cohorts: dict[tuple[str, str], CohortStats] = {}
        self.count = 0

    def add_all(self, items: Iterable[Any], config: StatsConfig) -> None:
        """Fold predictions: `schemas.Prediction` models or the fast path's `Item` structs
        (the same field names)."""
        cohorts = self.cohorts
        n = 0
        key: tuple[str, str] | None = None
        observe: Any = None
        for item in items:
            # the cohort is a str (fast path) or a StrEnum (pydantic): equal and hash-equal
            item_key = (item.cohort, item.version)
            if item_key != key:  # runs of one cohort are common: look up only on a change
                key = item_key
                stats = cohorts.get(key)
                if stats is None:
                    stats = cohorts[key] = CohortStats(config)
                observe = stats.observe
            observe(
                ok=item.ok,
                latency_ms=item.latency_ms,
                event_time=item.event_time.timestamp(),
                error_type=item.error_type,
                prediction=item.prediction,
                features=item.features,
            )
            n += 1
        self.count += n


class Folder:
    """Folds predictions by deployment until `drain()`."""

    def __init__(self, config: StatsConfig | None = None) -> None:
        self.config = config or StatsConfig()
        self.folds: dict[str, DeploymentFold] = {}

    def add(self, event: Envelope[Any]) -> DeploymentFold | None:
        """Fold a decoded event; None when it carries no predictions."""
        data = event.data
        if isinstance(data, PredictionBatch):
            return self.add_items(data.deployment_id, data.model, data.predictions)
        if isinstance(data, PredictionServed):
            return self.add_items(data.deployment_id, data.model, (data,))
        return None

    def add_items(self, deployment_id: str, model: str, items: Iterable[Any]) -> DeploymentFold:
        fold = self.folds.get(deployment_id)
        if fold is None:
            fold = self.folds[deployment_id] = DeploymentFold(deployment_id, model)
        fold.add_all(items, self.config)
        return fold

    def drain(self) -> list[DeploymentFold]:
        folds = list(self.folds.values())
        self.folds = {}
        return folds


@dataclass(frozen=True)
class StatsDelta:
    delta_id: str
    deployment_id: str
    model: str
    count: int
    cohorts: tuple[tuple[str, str, CohortStats], ...]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "v": DELTA_VERSION,
                "delta_id": self.delta_id,
                "deployment_id": self.deployment_id,
                "model": self.model,
                "count": self.count,
                "cohorts": [
                    {"cohort": c, "version": v, "stats": s.to_dict()} for c, v, s in self.cohorts
                ],
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> StatsDelta:
        doc = orjson.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != DELTA_VERSION:
            raise ValueError(f"not a stats delta of version {DELTA_VERSION}")
        return cls(
            delta_id=str(doc["delta_id"]),
            deployment_id=str(doc["deployment_id"]),
            model=str(doc["model"]),
            count=int(doc["count"]),
            cohorts=tuple(
                (str(c["cohort"]), str(c["version"]), CohortStats.from_dict(c["stats"]))
                for c in doc["cohorts"]
            ),
        )

    @classmethod
    def of(cls, fold: DeploymentFold, delta_id: str) -> StatsDelta:
        return cls(
            delta_id=delta_id,
            deployment_id=fold.deployment_id,
            model=fold.model,
            count=fold.count,
            cohorts=tuple((c, v, s) for (c, v), s in sorted(fold.cohorts.items())),
        )
