"""Detectors: each judges a canary cohort against its baseline and returns a `Verdict`.

Build one from a policy rule with `build_detector(name, params)` (or `get_detector(name)(params)`)
and call `detector.evaluate(baseline, canary, context)` as often as needed; it is pure. A
detector also says whether it spends significance (`spends_alpha()`), whether it is judged from
the clock (`judged_from_clock`) and when its outcome could next change without new data
(`wake_at(baseline, canary, context)`).
"""

from controller.core.detectors.base import (
    Detector,
    DetectorFactory,
    EvaluationContext,
    InvalidParameterError,
    JudgedFromData,
    ParamValue,
    RestartsOnSlowRequests,
    UnknownDetectorError,
)
from controller.core.detectors.data_quality import DataQuality, DataQualityParams
from controller.core.detectors.error_rate import ErrorRate, ErrorRateParams
from controller.core.detectors.latency import Latency, LatencyParams
from controller.core.detectors.outage import Outage, OutageParams
from controller.core.detectors.prediction_skew import PredictionSkew, PredictionSkewParams
from controller.core.detectors.registry import DETECTORS, build_detector, get_detector
from controller.core.detectors.training_serving_skew import (
    TrainingServingSkew,
    TrainingServingSkewParams,
)
from controller.core.stats.sequential import split_alpha

__all__ = [
    "DETECTORS",
    "DataQuality",
    "DataQualityParams",
    "Detector",
    "DetectorFactory",
    "ErrorRate",
    "ErrorRateParams",
    "EvaluationContext",
    "InvalidParameterError",
    "JudgedFromData",
    "Latency",
    "LatencyParams",
    "Outage",
    "OutageParams",
    "ParamValue",
    "PredictionSkew",
    "PredictionSkewParams",
    "RestartsOnSlowRequests",
    "TrainingServingSkew",
    "TrainingServingSkewParams",
    "UnknownDetectorError",
    "build_detector",
    "get_detector",
    "split_alpha",
]
