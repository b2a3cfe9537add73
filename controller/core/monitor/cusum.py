"""Sequential change detection with a stated false alarm rate: CUSUMs of log-likelihood ratios.

A monitor rule turns each check's data into the log-likelihood ratio (LLR) of "changed" against
"as in the reference" and feeds it to a `Cusum` (Page, 1954): `s = max(0, s + llr)`, an alarm
when `s >= h`. Lorden (1971): when the data follow the reference, the average run length to a
false alarm is at least e^h checks, however long the monitor runs; the policy picks `h` from the
false alarm rate it states. When the data follow the alternative, the delay is about
h / KL(alternative || reference) checks: the information limit the benchmark prints beside it.

- **Over-dispersion.** Requests are not independent: errors come in runs, traffic in bursts. Each
  key's LLR is divided by its dispersion `phi` (>= 1), measured on the reference traffic as
  Pearson's chi-square per degree of freedom over calibration intervals (quasi-likelihood).
- **Dispersion is measured for as long as the key is watched.** An hour of calibration at night
  holds a handful of error runs, and a phi measured on them can be a third of the truth. A
  binomial or Poisson key keeps measuring its intervals while it watches, pooled with the
  calibration's, older intervals weighed down with a half-life of a day once a day is in. A
  change must not pass for noise before it is found, so an interval joins the measure an hour
  or two after it was measured (`hold`, `release`), and an alarm discards those still held.
  The multinomial keys' phi, measured against the reference's distribution, stays the
  calibration's.
- **A reference rate is an estimate.** A share the reference measured (the error rate, the share
  above its p95, a missing-value share) is known only up to its sampling error, which the
  dispersion inflates: an hour of errors in runs of twenty is a few dozen runs, and an error
  rate learned from them can be a third off. A CUSUM against a rate set too low drifts up on
  healthy traffic and alarms. So once calibrated, such a key's reference rate is frozen at an
  upper confidence bound (`freeze_rate`): the share over the reference and the calibration
  together, plus `RATE_Z` standard errors inflated by `phi`.
- **Since when, by how much.** The change-point estimate is the last time `s` was 0 before the
  alarm (the CUSUM's maximum-likelihood estimate); the sums kept since then say by how much.
- **Resolved.** While firing, `back = max(0, back - llr)` weighs the evidence for the reference
  against the change; the alert resolves when it passes `ln(resolve_odds)` (100:1 by default).

Every function here is pure arithmetic on plain values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Step = Literal["fired", "resolved"] | None

#: probabilities are kept inside (EPS, 1 - EPS): a log of 0 is never taken
EPS = 1e-9
#: A reference rate is frozen this many (dispersed) standard errors above its estimate.
RATE_Z = 2.0


def binomial_llr(x: float, n: float, p0: float, p1: float) -> float:
    """LLR of x successes in n trials under p1 against p0."""
    p0 = min(max(p0, EPS), 1 - EPS)
    p1 = min(max(p1, EPS), 1 - EPS)
    return x * math.log(p1 / p0) + (n - x) * math.log((1 - p1) / (1 - p0))


def poisson_llr(x: float, expected: float, drop_to: float) -> float:
    """LLR of x events where `expected` were due, under a rate cut to `drop_to` of it."""
    return x * math.log(drop_to) + expected * (1.0 - drop_to)


def multinomial_llr(counts: Sequence[float], p0: Sequence[float], p1: Sequence[float]) -> float:
    return math.fsum(
        x * math.log(max(b, EPS) / max(a, EPS)) for x, a, b in zip(counts, p0, p1, strict=True) if x
    )


def adaptive_alternative(since: Sequence[float], p0: Sequence[float], prior: float) -> list[float]:
    """The alternative of Lorden and Pollak's adaptive CUSUM: the distribution of the data since
    the last reset, shrunk towards the reference with `prior` pseudo-counts. It uses only data
    before the check it is applied to, so the alarm level keeps its meaning."""
    total = math.fsum(since) + prior
    return [(c + prior * q) / total for c, q in zip(since, p0, strict=True)]


def smoothed(counts: Sequence[float]) -> list[float]:
    """Proportions with half a count added to every bin (no bin has probability 0)."""
    total = math.fsum(counts) + 0.5 * len(counts)
    return [(c + 0.5) / total for c in counts]


def pearson_poisson(x: float, expected: float) -> float:
    return (x - expected) ** 2 / expected if expected > 0 else 0.0


def pearson_multinomial(counts: Sequence[float], p0: Sequence[float]) -> float:
    """Pearson's chi-square per degree of freedom of counts against p0."""
    n = math.fsum(counts)
    if n <= 0 or len(p0) < 2:
        return 0.0
    x2 = math.fsum((c - n * q) ** 2 / (n * q) for c, q in zip(counts, p0, strict=True) if q > 0)
    return x2 / (len(p0) - 1)


def js_bits(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits of two weight vectors (0 when either is empty)."""
    sp, sq = math.fsum(p), math.fsum(q)
    if sp <= 0 or sq <= 0:
        return 0.0
    total = 0.0
    for a, b in zip(p, q, strict=True):
        a, b = a / sp, b / sq
        m = (a + b) / 2
        if a > 0:
            total += a * math.log2(a / m)
        if b > 0:
            total += b * math.log2(b / m)
    return min(max(total / 2, 0.0), 1.0)


@dataclass
class Cusum:
    """One key's CUSUM, its change-point estimate and what it saw since (plain data)."""

    s: float = 0.0
    #: when the data behind `s` begin: the change-point estimate once it alarms (the last
    #: check at which s was 0)
    since: float | None = None
    #: sums since `since` of the key's numerator and denominator (errors and requests, ...)
    num: float = 0.0
    den: float = 0.0
    #: counts per bin since the last reset (multinomial keys: the adaptive alternative)
    counts: list[float] = field(default_factory=list)
    firing: bool = False
    fired_at: float | None = None
    #: the alternative frozen at the alarm (multinomial keys), for the recovery statistic
    frozen: list[float] = field(default_factory=list)
    back: float = 0.0
    #: the dispersion of this key (>= 1), set when calibration ends
    phi: float = 1.0
    #: calibration: Pearson chi-square per degree of freedom summed over intervals, and how many
    #: (weights: while watching, older intervals count less, see `forget`)
    calib_sum: float = 0.0
    calib_bins: float = 0.0
    #: binomial keys: sums of x^2/n, x and n over the calibration intervals
    calib_sq: float = 0.0
    calib_x: float = 0.0
    calib_n: float = 0.0
    #: the reference rate of a binomial key whose rate was estimated (None: not frozen yet)
    p0: float | None = None
    #: a share judged against its recent history: its exponentially weighted estimate and the
    #: requests behind it (their weights)
    recent: float | None = None
    recent_n: float = 0.0
    #: intervals measured while watching, not yet in the measure: since the last release, and
    #: waiting for the next ([Pearson sum, intervals, sum x^2/n, x, n])
    held: list[float] = field(default_factory=list)
    waiting: list[float] = field(default_factory=list)
    #: whether phi has been measured (a calibration finished)
    calibrated: bool = False
    #: whether it judges the model's traffic, not its version (kept across versions)
    carry: bool = False

    def step(
        self,
        llr: float,
        t: float,
        *,
        start: float,
        h: float,
        h_back: float,
        num: float = 0.0,
        den: float = 0.0,
        counts: Sequence[float] = (),
        cap: float = math.inf,
    ) -> Step:
        """Add one check's LLR (raw, divided here by phi, then at most `cap`) of the data in
        [start, t]. The cap only lowers the statistic, so the alarm level keeps its false alarm
        rate; it keeps a burst of a few seconds from alarming alone."""
        z = min(llr / self.phi, cap)
        if self.firing:
            self.num += num
            self.den += den
            self.back = max(0.0, self.back - z)
            if self.back >= h_back:
                self._reset()
                return "resolved"
            return None
        if self.since is None:
            self.since = start
        self.s = max(0.0, self.s + z)
        if self.s <= 0.0:
            # a new candidate change starts with this check's data: an adaptive key estimates
            # its alternative from it at the next check
            self.s = 0.0
            self.since = start
            self.num, self.den = num, den
            self.counts = list(counts)
            return None
        self.num += num
        self.den += den
        if counts:
            if len(self.counts) != len(counts):
                self.counts = [0.0] * len(counts)
            self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        if self.s >= h:
            self.discard_held()  # the change may have begun in them: not noise
            self.firing = True
            self.fired_at = t
            self.back = 0.0
            return "fired"
        return None

    def _reset(self) -> None:
        self.s = 0.0
        self.since = None
        self.num = self.den = 0.0
        self.counts = []
        self.firing = False
        self.fired_at = None
        self.frozen = []
        self.back = 0.0

    def calibrate(self, pearson_per_df: float) -> None:
        self.calib_sum += pearson_per_df
        self.calib_bins += 1

    def calibrate_share(self, x: float, n: float) -> None:
        """A binomial key's calibration interval: x of n (its dispersion is measured around
        the calibration's own pooled share, not the reference's or an allowance)."""
        if n <= 0:
            return
        self.calib_sq += x * x / n
        self.calib_x += x
        self.calib_n += n
        self.calib_bins += 1

    def hold(self, pearson_per_df: float | None = None, x: float = 0.0, n: float = 0.0) -> None:
        """An interval measured while watching: held back (`held`) until `release` (a Pearson
        value, or a binomial key's x of n)."""
        if not self.held:
            self.held = [0.0] * 5
        if pearson_per_df is not None:
            self.held[0] += pearson_per_df
            self.held[1] += 1
        elif n > 0:
            self.held[1] += 1
            self.held[2] += x * x / n
            self.held[3] += x
            self.held[4] += n

    def release(self, half_life_bins: float) -> None:
        """Move the intervals waiting since the last release into the measure, weighing the
        older ones down once `half_life_bins` are in, and measure phi again; what was held since
        waits for the next release. A fired key discards both (`discard_held`)."""
        waiting, self.waiting = self.waiting, self.held
        self.held = []
        if not waiting or waiting[1] <= 0:
            return
        if self.calib_bins > half_life_bins:
            weight = 2.0 ** (-waiting[1] / half_life_bins)
            self.calib_sum *= weight
            self.calib_bins *= weight
            self.calib_sq *= weight
            self.calib_x *= weight
            self.calib_n *= weight
        self.calib_sum += waiting[0]
        self.calib_bins += waiting[1]
        self.calib_sq += waiting[2]
        self.calib_x += waiting[3]
        self.calib_n += waiting[4]
        self.finish_calibration()

    def discard_held(self) -> None:
        self.held, self.waiting = [], []

    def finish_calibration(self) -> None:
        """phi from the calibration intervals (at least 1: never sharper than independence);
        a key carried from an earlier version pools its intervals with the new ones. Called
        again after every interval measured while watching (binomial and Poisson keys)."""
        self.calibrated = True
        if self.calib_n > 0:
            p = self.calib_x / self.calib_n
            if 0.0 < p < 1.0 and self.calib_bins > 1:
                x2 = (self.calib_sq - 2 * p * self.calib_x + p * p * self.calib_n) / (p * (1 - p))
                self.phi = max(1.0, x2 / (self.calib_bins - 1))
            return
        if self.calib_bins:
            self.phi = max(1.0, self.calib_sum / self.calib_bins)

    def freeze_rate(self, x: float, n: float) -> float:
        """Freeze this key's reference rate from the reference's `x` of `n` and the calibration's
        counts: their pooled share plus RATE_Z standard errors, inflated by phi (with no event
        at all, the standard error of one event in all the requests)."""
        total = n + self.calib_n
        if total <= 0:
            self.p0 = 0.0
            return self.p0
        share = (x + self.calib_x) / total
        spread = max(share, 1.0 / total) * (1.0 - share)
        self.p0 = min(share + RATE_Z * math.sqrt(self.phi * spread / total), 1.0)
        return self.p0

    def recent_rate(self) -> float | None:
        """The recent share at its upper confidence bound (as `freeze_rate`)."""
        if self.recent is None or self.recent_n <= 0:
            return None
        spread = max(self.recent, 1.0 / self.recent_n) * (1.0 - self.recent)
        return min(self.recent + RATE_Z * math.sqrt(self.phi * spread / self.recent_n), 1.0)

    def learn_recent(self, x: float, n: float, dt: float, half_life_s: float) -> None:
        """Weigh a check's `x` of `n` into the recent share: what is older than `half_life_s`
        counts half."""
        if n <= 0 and dt <= 0:
            return
        keep = 2.0 ** (-max(dt, 0.0) / half_life_s)
        total = self.recent_n * keep + n
        if total <= 0:
            return
        old = self.recent if self.recent is not None else 0.0
        self.recent = (old * self.recent_n * keep + x) / total
        self.recent_n = total

    def to_dict(self) -> dict[str, Any]:
        return {
            "s": self.s,
            "since": self.since,
            "num": self.num,
            "den": self.den,
            "counts": self.counts,
            "firing": self.firing,
            "fired_at": self.fired_at,
            "frozen": self.frozen,
            "back": self.back,
            "phi": self.phi,
            "calib_sum": self.calib_sum,
            "calib_bins": self.calib_bins,
            "calib_sq": self.calib_sq,
            "calib_x": self.calib_x,
            "calib_n": self.calib_n,
            "p0": self.p0,
            "recent": self.recent,
            "recent_n": self.recent_n,
            "held": self.held,
            "waiting": self.waiting,
            "calibrated": self.calibrated,
            "carry": self.carry,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cusum:
        return cls(
            s=float(data["s"]),
            since=data.get("since"),
            num=float(data["num"]),
            den=float(data["den"]),
            counts=[float(c) for c in data.get("counts", [])],
            firing=bool(data["firing"]),
            fired_at=data.get("fired_at"),
            frozen=[float(c) for c in data.get("frozen", [])],
            back=float(data["back"]),
            phi=float(data["phi"]),
            calib_sum=float(data["calib_sum"]),
            calib_bins=float(data["calib_bins"]),
            calib_sq=float(data.get("calib_sq", 0.0)),
            calib_x=float(data.get("calib_x", 0.0)),
            calib_n=float(data.get("calib_n", 0.0)),
            p0=None if data.get("p0") is None else float(data["p0"]),
            recent=None if data.get("recent") is None else float(data["recent"]),
            recent_n=float(data.get("recent_n", 0.0)),
            held=[float(x) for x in data.get("held", [])],
            waiting=[float(x) for x in data.get("waiting", [])],
            calibrated=bool(data.get("calibrated", False)),
            carry=bool(data.get("carry", False)),
        )


def kl_binomial(p1: float, p0: float) -> float:
    """KL(Bernoulli(p1) || Bernoulli(p0)) in nats: the LLR a request adds on average after a
    change to p1 (the information limit's denominator)."""
    p0 = min(max(p0, EPS), 1 - EPS)
    p1 = min(max(p1, EPS), 1 - EPS)
    return p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))


__all__ = [
    "RATE_Z",
    "Cusum",
    "adaptive_alternative",
    "binomial_llr",
    "js_bits",
    "kl_binomial",
    "multinomial_llr",
    "pearson_multinomial",
    "pearson_poisson",
    "poisson_llr",
    "smoothed",
]
