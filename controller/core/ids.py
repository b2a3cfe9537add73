"""Deterministic ids for commands, decisions and alerts.

An id is a short sha256 of what makes the output unique inside its rollout: the deployment id,
the rollout's transition sequence number (it grows by one with every decision), the action and
the traffic step. The same input sequence therefore yields the same ids in the live worker, in a
replay and in a test, and a router that sees a command id twice knows it is the same command.
"""

from __future__ import annotations

import hashlib

#: Hex digits kept from the sha256: 64 bits, ample inside one deployment's outputs.
ID_HEX_DIGITS = 16


def derive_id(prefix: str, deployment_id: str, seq: int, action: str, step: int) -> str:
    """`{prefix}-{16 hex}`, a function of (deployment_id, seq, action, step) alone."""
    material = "\x1f".join((prefix, deployment_id, str(seq), action, str(step)))
    digest = hashlib.sha256(material.encode()).hexdigest()[:ID_HEX_DIGITS]
    return f"{prefix}-{digest}"


def command_id(deployment_id: str, seq: int, action: str, step: int) -> str:
    return derive_id("cmd", deployment_id, seq, action, step)


def decision_id(deployment_id: str, seq: int, action: str, step: int) -> str:
    return derive_id("dec", deployment_id, seq, action, step)


def alert_id(deployment_id: str, alert_seq: int, status: str, dedup_key: str) -> str:
    """An alert's id: a function of the rollout's alert sequence number (it grows by one with
    every alert), the status and the dedup key."""
    return derive_id("alert", deployment_id, alert_seq, f"{status}\x1f{dedup_key}", 0)
