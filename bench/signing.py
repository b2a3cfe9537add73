"""Signature cost: signing and verifying a command and an approval (controller/security/signing.py).

    python bench/signing.py [--rounds 5000]

Prints microseconds per sign and per verify (the best of five runs of `--rounds` each), beside
the cost of the JSON round trip every record already pays (encode the envelope, decode it), as
the baseline measured in the same run. Not a test: it prints figures, no time is asserted.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

import schemas as s  # noqa: E402
from bench.common import commit, cpu_model  # noqa: E402
from controller.security.signing import KeyRing, RegisteredKey, SigningKey  # noqa: E402

AT = datetime(2026, 12, 3, tzinfo=UTC)


def best_us(fn: object, rounds: int) -> float:
    return min(timeit.repeat(fn, number=rounds, repeat=5)) / rounds * 1e6  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=5000)
    args = p.parse_args(argv)
    controller = SigningKey.generate("controller-1", "rollout-controller")
    alice = SigningKey.generate("alice-1", "alice")
    ring = KeyRing.of(
        [
            RegisteredKey("controller-1", "rollout-controller", (), controller.public),
            RegisteredKey("alice-1", "alice", ("sre",), alice.public),
        ]
    )
    command = s.Command(
        command_id="cmd-1",
        deployment_id="fraud-2026-12",
        action=s.CommandAction.SET_TRAFFIC,
        canary_percent=25.0,
        step=1,
        model="fraud",
        candidate_version="v2",
        baseline_version="v1",
        reason="step 1: canary healthy for 60 s over 400 requests",
        evidence={"error_rate": {"canary": 0.011, "baseline": 0.012}, "p99_ms": 201.5},
        issued_at=AT,
    )
    approval = s.ApprovalGranted(deployment_id="fraud-2026-12", step=1, by="alice", reason="ok")
    signed_command = controller.sign(command, AT)
    signed_approval = alice.sign(approval, AT)
    raw = s.make_event(signed_command, source="bench", time=AT).to_json()
    rows = [
        ("command: sign", best_us(lambda: controller.sign(command, AT), args.rounds)),
        ("command: verify", best_us(lambda: ring.check(signed_command, AT), args.rounds)),
        ("approval: sign", best_us(lambda: alice.sign(approval, AT), args.rounds)),
        ("approval: verify", best_us(lambda: ring.identify(signed_approval, AT), args.rounds)),
        (
            "baseline: the command's envelope encoded and decoded",
            best_us(
                lambda: s.decode(s.make_event(command, source="b", time=AT, id="x").to_json()),
                args.rounds,
            ),
        ),
    ]
    print(f"Command: `python bench/signing.py --rounds {args.rounds}`")
    print(f"- Code: commit {commit()}; machine: {cpu_model()}; {len(raw)} bytes a signed command.")
    print()
    print("| operation | microseconds |")
    print("|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:.0f} |")


if __name__ == "__main__":
    main()
