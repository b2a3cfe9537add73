"""Invariants of replay over simulated logs of every scenario, seed and shape.

A replay is a pure function of the log and the policy: the same bytes in, the same bytes out;
it publishes exactly what the controller published in the loop that wrote the log; bad or blank
lines in between change nothing else; rollouts in one log do not see each other; and no rollout
ever gets a second terminal command or a decision after its end.
"""

from __future__ import annotations

import heapq

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas as s
from controller.core.policy import Policy
from controller.dev.simulate import PLANS, SCENARIOS, ClosedLoop, FleetConfig, LoopConfig
from controller.policy_io import default_policy
from controller.replay.replay import Runner, replay

POLICY: Policy = default_policy()
TERMINAL = {"promoted", "rolled_back", "aborted"}

# Short logs keep the properties fast: at most a simulated minute and a half, canary predictions
# batched every half second (the core still judges every record).
scenarios = st.sampled_from(sorted(SCENARIOS))
seeds = st.integers(0, 10**6)
configs = st.builds(
    FleetConfig,
    rate=st.sampled_from([5.0, 10.0, 20.0]),
    fault_onset_s=st.sampled_from([0.0, 5.0, 20.0]),
    prediction_kind=st.sampled_from(["score", "class", "probabilities"]),
    canary_batch_s=st.sampled_from([0.5, 1.0]),
)
ticks = st.sampled_from([0.0, 0.5, 1.0, 2.0])
SHORT = LoopConfig(max_duration_s=90.0)
FAST = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def simulate(scenario: str, seed: int, config: FleetConfig) -> tuple[list[bytes], list[bytes]]:
    loop = ClosedLoop(
        scenario, Runner(POLICY), seed=seed, config=config, loop=SHORT, rollout_plan=PLANS["quick"]
    )
    log = [event.to_json() for event in loop]
    return log, [o.to_json() for o in loop.published]


def run(lines: list[bytes], tick_s: float = 1.0) -> list[bytes]:
    out: list[bytes] = []
    replay(lines, POLICY, tick_s=tick_s, emit=lambda e: out.append(e.to_json()))
    return out


@FAST
@given(scenarios, seeds, configs, ticks)
def test_replay_is_deterministic(
    scenario: str, seed: int, config: FleetConfig, tick_s: float
) -> None:
    log, _ = simulate(scenario, seed, config)

    assert run(log, tick_s) == run(log, tick_s)


@FAST
@given(scenarios, seeds, configs)
def test_replay_publishes_what_the_loop_published(
    scenario: str, seed: int, config: FleetConfig
) -> None:
    log, published = simulate(scenario, seed, config)

    assert published == run(log)


@FAST
@given(scenarios, seeds, configs, st.data())
def test_bad_and_blank_lines_change_nothing_else(
    scenario: str, seed: int, config: FleetConfig, data: st.DataObject
) -> None:
    log, _ = simulate(scenario, seed, config)
    noise = [b"\n", b"{", b"[]\n", b'{"type": "dev.rollout.nope.v1"}\n', b"\xff\xfe\n"]
    noisy = list(log)
    for _ in range(data.draw(st.integers(1, 5))):
        position = data.draw(st.integers(0, len(noisy)))
        noisy.insert(position, data.draw(st.sampled_from(noise)))

    assert run(log) == run(noisy)


#: What a model's monitor publishes: shared by every rollout of the model, by design.
MONITOR_TYPES = {s.MonitorDecision.EVENT_TYPE, s.MonitorConfigured.EVENT_TYPE}


def _by_deployment(outputs: list[bytes]) -> dict[str, list[bytes]]:
    """The rollouts' outputs by deployment (the model's monitor, which they share, left out)."""
    grouped: dict[str, list[bytes]] = {}
    for line in outputs:
        doc = orjson.loads(line)
        if doc["type"] in MONITOR_TYPES or doc["data"].get("kind", "").startswith("monitor."):
            continue
        grouped.setdefault(doc["subject"], []).append(line)
    return grouped


@settings(FAST, max_examples=4)  # two simulations and three replays per example
@given(scenarios, scenarios, seeds, configs)
def test_rollouts_in_one_log_do_not_see_each_other(
    first: str, second: str, seed: int, config: FleetConfig
) -> None:
    log_a, _ = simulate(first, seed, config)
    log_b, _ = simulate(second, seed + 1, config)

    def time_of(line: bytes) -> str:
        return str(orjson.loads(line)["time"])

    merged = list(heapq.merge(log_a, log_b, key=time_of))
    together = _by_deployment(run(merged))
    for alone_log in (log_a, log_b):
        grouped = _by_deployment(run(alone_log))
        (deployment,) = grouped
        alone = grouped[deployment]
        # ticks go on while the other rollout's events arrive: compare up to this log's end
        # (a command sent again later carries its first time: the very same record, left out)
        end = time_of(alone_log[-1])
        mine = [o for o in together[deployment] if time_of(o) <= end]
        assert list(dict.fromkeys(alone)) == list(dict.fromkeys(mine))


@FAST
@given(scenarios, seeds, configs, ticks)
def test_a_rollout_ends_once_with_one_terminal_command(
    scenario: str, seed: int, config: FleetConfig, tick_s: float
) -> None:
    log, _ = simulate(scenario, seed, config)
    docs = [orjson.loads(line) for line in run(log, tick_s)]

    terminal_commands = [
        d
        for d in docs
        if d["type"] == s.Command.EVENT_TYPE and d["data"]["action"] in ("promote", "rollback")
    ]
    decisions = [d["data"] for d in docs if d["type"] == s.Decision.EVENT_TYPE]
    assert len(terminal_commands) <= 1
    ends = [i for i, d in enumerate(decisions) if d["to_phase"] in TERMINAL]
    assert ends == [] or ends == [len(decisions) - 1]
    assert all(d["reason"] for d in decisions)


def _run_ticking(lines: list[bytes], *, every_rollout: bool, tick_s: float) -> list[bytes]:
    runner = Runner(POLICY, tick_s=tick_s, tick_every_rollout=every_rollout)
    out: list[bytes] = []
    for line in lines:
        decoded = s.decode(line)
        assert not isinstance(decoded, s.Rejection)
        out += [e.to_json() for e in runner.feed(decoded)]
    return out


@FAST
@given(scenarios, seeds, configs, st.sampled_from([0.5, 1.0, 2.0]))
def test_ticking_only_the_rollouts_that_are_due_decides_what_ticking_all_decides(
    scenario: str, seed: int, config: FleetConfig, tick_s: float
) -> None:
    """The wake-ups leave out only ticks that would decide nothing: the same bytes out."""
    log, _ = simulate(scenario, seed, config)

    every = _run_ticking(log, every_rollout=True, tick_s=tick_s)
    due = _run_ticking(log, every_rollout=False, tick_s=tick_s)

    assert every == due
