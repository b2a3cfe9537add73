"""The one exception root of rollout-controller.

Every error raised on purpose derives from RolloutError, so the CLI and the worker can tell a
known failure (print its message, which says what to do) from a bug (show the traceback).
"""

from __future__ import annotations


class RolloutError(Exception):
    """Root of every error this project raises on purpose."""


class InvariantError(RolloutError):
    """An invariant of the core was broken: a bug in the caller or the core, never bad data.
    (Raised instead of `assert`, which `python -O` strips.)"""
