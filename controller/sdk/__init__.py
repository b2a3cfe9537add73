"""What serving services import: report predictions, assign cohorts, apply commands."""

from controller.sdk.cohort import assign_cohort, bucket
from controller.sdk.emit import EmitError, emit
from controller.sdk.listener import CommandListener, ListenerStats, SeenCommands
from controller.sdk.reporter import PredictionReporter, ReporterStats

__all__ = [
    "CommandListener",
    "EmitError",
    "ListenerStats",
    "PredictionReporter",
    "ReporterStats",
    "SeenCommands",
    "assign_cohort",
    "bucket",
    "emit",
]
