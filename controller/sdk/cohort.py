"""Sticky cohort assignment: which users the router sends to the canary.

A key (a user id, a session id) hashes with a salt to a bucket, a number uniform in [0, 100).
The key is in the canary iff its bucket is below the canary share. The bucket does not depend
on the share, so assignment is monotone: a user in the canary at 10 % stays there at 25 %, and a
rollout that grows only ever moves users from the baseline to the canary. Salting with the
deployment id gives each rollout its own independent draw of users.
"""

from __future__ import annotations

import hashlib

from schemas import Cohort

# 53 bits: exactly what a float holds, so every bucket stays below 100.
_SCALE = 100.0 / 2**53


def bucket(key: str, salt: str) -> float:
    """The key's position in [0, 100): a 64-bit BLAKE2b of the salt and the key, scaled.

    The salt goes in length-prefixed, so no (salt, key) pair collides with another by
    construction."""
    salt_bytes = salt.encode()
    h = hashlib.blake2b(len(salt_bytes).to_bytes(4, "big"), digest_size=8)
    h.update(salt_bytes)
    h.update(key.encode())
    return (int.from_bytes(h.digest(), "big") >> 11) * _SCALE


def assign_cohort(key: str, canary_percent: float, salt: str) -> Cohort:
    """CANARY iff the key's bucket is below `canary_percent`, else BASELINE.

    Pass the deployment id as `salt`. 0 sends nobody to the canary, 100 sends everybody."""
    if not 0.0 <= canary_percent <= 100.0:
        raise ValueError(f"canary_percent must be within [0, 100], got {canary_percent!r}")
    if canary_percent >= 100.0:
        return Cohort.CANARY
    return Cohort.CANARY if bucket(key, salt) < canary_percent else Cohort.BASELINE
