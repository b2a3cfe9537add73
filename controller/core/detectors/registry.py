"""The explicit registry of detectors: a policy names one, the registry builds it.

An unknown name fails when the policy loads, with the list of known names; there is no silent
default. Adding a detector means adding one line here: what the policy and the rollout need to
know about it (spends_alpha, judged_from_clock, wake_at) the detector says itself.
"""

from __future__ import annotations

from controller.core.detectors.base import Detector, DetectorFactory, Params, UnknownDetectorError
from controller.core.detectors.data_quality import DataQuality
from controller.core.detectors.error_rate import ErrorRate
from controller.core.detectors.estimated_accuracy import EstimatedAccuracy
from controller.core.detectors.latency import Latency
from controller.core.detectors.outage import Outage
from controller.core.detectors.prediction_skew import PredictionSkew
from controller.core.detectors.quality import Quality
from controller.core.detectors.training_serving_skew import TrainingServingSkew

DETECTORS: dict[str, DetectorFactory] = {
    ErrorRate.name: ErrorRate.from_params,
    Latency.name: Latency.from_params,
    Outage.name: Outage.from_params,
    PredictionSkew.name: PredictionSkew.from_params,
    TrainingServingSkew.name: TrainingServingSkew.from_params,
    DataQuality.name: DataQuality.from_params,
    Quality.name: Quality.from_params,
    EstimatedAccuracy.name: EstimatedAccuracy.from_params,
}


def get_detector(name: str) -> DetectorFactory:
    """The factory registered under `name`; UnknownDetectorError lists the known names."""
    try:
        return DETECTORS[name]
    except KeyError:
        raise UnknownDetectorError(name, known=list(DETECTORS)) from None


def build_detector(name: str, params: Params | None = None) -> Detector:
    """A configured detector; raises UnknownDetectorError or InvalidParameterError."""
    return get_detector(name)(params or {})
