"""Quality benchmark: the quality rule's false rollbacks (A/A) and its delay on real data.

    python bench/quality.py [--rollouts 200] [--seed 1] [--alpha 0.01] [--quick]

Scores are out-of-fold probabilities of a logistic regression on scikit-learn's breast-cancer
data (569 rows, bundled: no download). A rollout serves requests drawn from the rows at random,
10 % to the canary for its first step and 50 % for its second, each step `--pairs` labelled
requests; labels come back in batches of 50, shuffled across the two steps (out of order: a
label of the first step can come after labels of the second), and the rule's test
(`controller.core.stats.labelled.quality_test`, stratified by step, tolerance 0.1, `--alpha`)
is judged after every batch, as the worker judges after every labels delta.

- **A/A.** The candidate serves the baseline's scores: a rollback is a false one. The rate and
  its exact 95 % upper bound, beside alpha.
- **Worse models whose outputs look the same.** The candidate serves the baseline's score for
  `keep` of the rows and another random row's score for the rest: the same score
  distribution, a worse Brier score. Labelled requests until the rollback (median, p95,
  misses), beside the information limit `ln(1/alpha) / (events per pair x KL)`, where KL is
  between the canary's share of loss events under the truth and under the null (1 + tolerance
  times the baseline's rate), at the 50 % step's share.

- **What a pass at `min_pairs` rests on.** One step at a 20 % canary with `min_pairs` canary
  pairs (and four times as many baseline pairs) all labelled: the share of worse candidates the
  test has not rejected, i.e. the chance such a candidate passes on exactly `min_pairs`. The
  rule reaches that case when a step's early pairs are not judged (a share change in the
  minute bucket) or labels come in one burst; otherwise it may reject sooner.

Not a test: it prints figures, no time is asserted.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import commit, upper_bound  # noqa: E402
from controller.core.stats.labelled import LabelledStats, quality_test  # noqa: E402

ALPHA = 0.01
TOLERANCE = 0.1
SHARES = (0.1, 0.5)
BATCH = 50
PASS_SHARE = 0.2
MIN_PAIRS = (200, 300, 450, 600)


def scores() -> tuple[list[float], list[int]]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    found = cross_val_predict(model, x, y, cv=5, method="predict_proba")[:, 1]
    return [float(p) for p in found], [int(v) for v in y]


def degraded(base: list[float], keep: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [p if rng.random() < keep else rng.choice(base) for p in base]


def rollout(
    base: list[float],
    candidate: list[float],
    labels: list[int],
    pairs: int,
    seed: int,
    alpha: float = ALPHA,
) -> int | None:
    """The labelled requests seen when the test first rejects (None: never)."""
    rng = random.Random(seed)
    requests = []
    for stratum, share in enumerate(SHARES):
        for k in range(pairs):
            i = rng.randrange(len(labels))
            canary = rng.random() < share
            requests.append((stratum, canary, (candidate if canary else base)[i], labels[i], k))
    rng.shuffle(requests)  # labels come back out of order, across the steps
    strata = [(LabelledStats(), LabelledStats()) for _ in SHARES]
    for start in range(0, len(requests), BATCH):
        for stratum, canary, score, label, k in requests[start : start + BATCH]:
            strata[stratum][1 if canary else 0].add(f"{seed}-{stratum}-{k}", score, label, 1.0)
        if quality_test(strata, TOLERANCE, alpha).rejects:
            return start + BATCH
    return None


def passes_at(
    base: list[float],
    candidate: list[float],
    labels: list[int],
    canary_pairs: int,
    seed: int,
    alpha: float = ALPHA,
) -> bool:
    """One step at `PASS_SHARE`: does the test leave `canary_pairs` canary pairs (and the
    baseline's pairs of the same requests) unrejected?"""
    rng = random.Random(seed)
    baseline_stats, canary_stats = LabelledStats(), LabelledStats()
    baseline_pairs = round(canary_pairs * (1 - PASS_SHARE) / PASS_SHARE)
    for k in range(canary_pairs + baseline_pairs):
        i = rng.randrange(len(labels))
        canary = k < canary_pairs
        served = (candidate if canary else base)[i]
        (canary_stats if canary else baseline_stats).add(f"{seed}-{k}", served, labels[i], 1.0)
    return not quality_test([(baseline_stats, canary_stats)], TOLERANCE, alpha).rejects


def brier(candidate: list[float], labels: list[int]) -> float:
    return statistics.fmean((p - y) ** 2 for p, y in zip(candidate, labels, strict=True))


def information_limit(
    base: list[float], candidate: list[float], labels: list[int], alpha: float = ALPHA
) -> float:
    """Labelled requests the test needs on average at the 50 % step: ln(1/alpha) over the
    events a pair gives times the KL of the canary's share of events, truth against null."""
    s = SHARES[-1]
    loss_b, loss_c = (brier(served, labels) for served in (base, candidate))
    events_per_pair = s * loss_c + (1 - s) * loss_b
    theta1 = s * loss_c / events_per_pair
    odds0 = (1 + TOLERANCE) * s / (1 - s)
    theta0 = odds0 / (1 + odds0)
    if theta1 <= theta0:
        return math.inf
    kl = theta1 * math.log(theta1 / theta0) + (1 - theta1) * math.log((1 - theta1) / (1 - theta0))
    return math.log(1 / alpha) / (events_per_pair * kl)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rollouts", type=int, default=200, help="A/A rollouts, and per worse model")
    p.add_argument("--pairs", type=int, default=3000, help="labelled requests per step")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--alpha", type=float, default=ALPHA, help="the rule's alpha")
    p.add_argument("--quick", action="store_true", help="20 rollouts of 1,000 pairs a step")
    args = p.parse_args(argv)
    if args.quick:
        args.rollouts, args.pairs = 20, 1000
    code = commit()
    started = time.process_time()
    base, labels = scores()
    aa = [
        rollout(base, base, labels, args.pairs, args.seed * 100_000 + k, args.alpha)
        for k in range(args.rollouts)
    ]
    false = sum(1 for r in aa if r is not None)
    upper = upper_bound(false, args.rollouts)
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"Command: `python bench/quality.py {shown}`")
    print(f"Code: commit {code}. Data: breast cancer (569 rows), logistic regression, out of fold.")
    print()
    print(
        f"A/A: {false} false rollbacks in {args.rollouts} rollouts ({false / args.rollouts:.3f}; "
        f"95 % upper bound {upper:.3f}) at alpha {args.alpha}, checked after every {BATCH} labels "
        f"of {2 * args.pairs} per rollout."
    )
    print()
    print("| candidate | Brier | found | median labels | p95 | limit |")
    print("|---|---|---|---|---|---|")
    for keep in (0.8, 0.9, 0.95):
        candidate = degraded(base, keep, args.seed)
        found = [
            rollout(base, candidate, labels, args.pairs, args.seed * 200_000 + k, args.alpha)
            for k in range(args.rollouts)
        ]
        hits = sorted(r for r in found if r is not None)
        median = statistics.median(hits) if hits else None
        p95 = hits[min(len(hits) - 1, int(0.95 * len(hits)))] if hits else None
        limit = information_limit(base, candidate, labels, args.alpha)
        print(
            f"| keep {keep:.0%} of the scores | {brier(candidate, labels):.4f} "
            f"(baseline {brier(base, labels):.4f}) | {len(hits)}/{args.rollouts} | "
            f"{median if median is not None else '-'} | {p95 if p95 is not None else '-'} | "
            f"{limit:,.0f} |"
        )
    print()
    print(
        f"Worse candidates passing at min_pairs ({PASS_SHARE:.0%} canary, all pairs labelled, "
        f"{args.rollouts * 5} draws each; exact 95 % upper bound in brackets):"
    )
    print()
    print("| candidate | " + " | ".join(f"{n} pairs" for n in MIN_PAIRS) + " |")
    print("|---|" + "---|" * len(MIN_PAIRS))
    for keep in (0.8, 0.9, 0.95):
        candidate = degraded(base, keep, args.seed)
        cells = []
        for n in MIN_PAIRS:
            draws = args.rollouts * 5
            passed = sum(
                passes_at(
                    base, candidate, labels, n, args.seed * 300_000 + n * 1_000 + k, args.alpha
                )
                for k in range(draws)
            )
            cells.append(f"{passed / draws:.3f} ({upper_bound(passed, draws):.3f})")
        print(f"| keep {keep:.0%} of the scores | " + " | ".join(cells) + " |")
    print()
    print(f"CPU {time.process_time() - started:.1f} s.")


if __name__ == "__main__":
    main()
