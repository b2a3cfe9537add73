"""Errors raised by the statistics on purpose."""

from __future__ import annotations

from controller.errors import RolloutError


class IncompatibleStatsError(RolloutError, ValueError):
    """Two statistics cannot merge or compare: their settings (alpha, bin edges, ...) differ."""
