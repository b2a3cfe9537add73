"""What the benchmarks share: confidence bounds of a rate, the commit they measured, and the
machine they ran on.

Imported by the scripts beside it; not a test.
"""

from __future__ import annotations

import functools
import math
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIDENCE = 0.95


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k + 1):
        log_term = (
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
        ) + (n - i) * log_q
        total += math.exp(log_term)
    return min(total, 1.0)


def upper_bound(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound of a rate after k events in n trials."""
    if n == 0 or k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(100):  # P(X <= k | p) falls as p grows: bisect where it is 1 - confidence
        mid = (lo + hi) / 2
        if _binom_cdf(k, n, mid) > 1.0 - confidence:
            lo = mid
        else:
            hi = mid
    return hi


def lower_bound(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson lower bound (the upper bound of the complement)."""
    if n == 0:
        return 0.0
    return 1.0 - upper_bound(n - k, n, confidence)


@functools.cache
def commit() -> str:
    """The checkout's commit, and whether tracked files have local changes. Cached: call it at
    a benchmark's start, so that the commit named is the code measured."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" with local changes" if dirty else "")


def cpu_model() -> str:
    """The processor's model name (Linux's /proc/cpuinfo, else what `platform` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
