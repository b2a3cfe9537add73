"""Always-on monitoring of the models in production (see monitor.py for the whole story).

A monitor per served model, for as long as it serves: configured by people and by every
rollout, fed the model's predictions, judged on a grid of checks by sequential change detectors
with a stated false alarm rate (cusum.py), under a monitoring policy (policy.py); and, where the
label join runs, fed the model's labelled predictions: quality decay, label drift and label
delay, against a labelled reference of their own.
"""

from controller.core.monitor.monitor import (
    MonitorOutput,
    MonitorResult,
    check,
    configure,
    delete,
    freeze,
    next_check,
    observe,
    observe_labels,
)
from controller.core.monitor.policy import MonitoringPolicy, MonitorRule
from controller.core.monitor.state import MonitorState

__all__ = [
    "MonitorOutput",
    "MonitorResult",
    "MonitorRule",
    "MonitorState",
    "MonitoringPolicy",
    "check",
    "configure",
    "delete",
    "freeze",
    "next_check",
    "observe",
    "observe_labels",
]
