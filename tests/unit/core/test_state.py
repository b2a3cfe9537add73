"""RolloutState as plain data: a stored state loads and dumps to the very same dict, every
field takes part in the value (`to_dict`, `from_dict`, `==`), the derived caches do not, and a
field no codec can write fails loudly."""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from controller.core.phases import Phase
from controller.core.state import NoCodecError, RolloutState, field_codecs
from controller.core.stats.cohort import CohortStats
from controller.core.stats.labelled import LabelledStats
from controller.errors import RolloutError
from schemas import Command
from tests.factories import sample_payloads

#: A rich state (every field set, two approvals, panes, a rule cache, checkpoints...) as the
#: version of the code before serialization was derived from the fields stored it.
STORED_V1 = Path(__file__).parent / "stored" / "rollout_state_v1.json"


def stored_v1() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(STORED_V1.read_text())
    return data


def dumped(data: dict[str, Any]) -> str:
    """The stored form as bytes would be written: key order included."""
    return json.dumps(data, allow_nan=False)


def with_exact_counts(node: Any) -> Any:
    """The stored form with what the statistics stored before exact counts existed load as:
    the default cap in every config, and numbers of unknown detail (overflowed) in every
    distribution."""
    if isinstance(node, list):
        return [with_exact_counts(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: with_exact_counts(v) for k, v in node.items()}
    if "slow" in node and "errors" in node:  # a checkpoint: its slow counts gain `previous`,
        node["slow"] = [[*item, None] if len(item) == 3 else item for item in node["slow"]]
        node.setdefault("cut", False)  # and it is no cut, with its interval tested
        node.setdefault("tested", True)
    if "latency_alpha" in node:
        node["max_exact_values"] = 256
    if "numbers" in node and "categories" in node:
        total = node["numbers"]["count"]
        node["exact"] = {"max_values": 256, "total": total, "overflowed": total > 0, "counts": []}
    return node


def with_profile_invalid_rates(state: dict[str, Any]) -> dict[str, Any]:
    """The stored state with `invalid_rate` (0) after each profiled feature's `missing_rate`,
    as a FeatureProfile now writes it."""
    state = copy.deepcopy(state)
    entries = []
    for profile in (state.get("training_profile"), state["deployment"].get("training_profile")):
        if profile:
            entries += [*profile.get("features", []), profile.get("prediction")]
    for entry in (e for e in entries if e):
        items = list(entry.items())
        at = [k for k, _ in items].index("missing_rate") + 1
        rebuilt = dict([*items[:at], ("invalid_rate", 0.0), *items[at:]])
        entry.clear()
        entry.update(rebuilt)
    state["deployment"]["plan"]["capacity"] = None  # the plan's capacity guard: none
    # the deployment record: none, written after `requested_by`; then the request's signature
    state["deployment"].update(
        environment=None, target=None, method=None, approvals=None, on_failure=None, rollback=None
    )
    state["deployment"]["signature"] = None
    return state


def test_a_state_stored_by_version_1_loads_and_dumps_to_the_very_same_dict() -> None:
    """Key for key, in the same order, with the same value forms; the additions are
    `alert_seq`, which the stored state predates: it loads as 0 and is written after `seq`,
    the approvals' reasons (none, written after `approvals`),
    the statistics' exact counts and the checkpoints' `previous` slow counts
    (`with_exact_counts`), and the alignment (no alignment for a
    rollout stored before it: `align_s` 0, nothing received or held) and the step's cuts
    (none pending, `settle_s` 0) and the router's acknowledgements (a rollout stored before
    them does not wait for any), and the joined labels (none), written last; and in the
    training profiles (the state's and the request's), each feature's `invalid_rate` (0, after
    `missing_rate`); the plan's `capacity` (none); the deployment record (none); the serving
    pool's free capacity (none); the verified approvals' keys and the control events'
    signatures (none: nothing was verified), after the approvals' reasons."""
    stored = stored_v1()
    items = list(with_profile_invalid_rates(with_exact_counts(stored)).items())
    after_seq = [k for k, _ in items].index("seq") + 1
    alignment = [("align_s", 0.0), ("received", {}), ("held", {}), ("held_done", {})]
    alignment += [("cut_slot", None), ("cut_waits_for", []), ("settling", False), ("settle_s", 0.0)]
    acks = [("acks", False), ("acked_percent", 0.0), ("acked_at", None)]
    acks += [("step_command", None), ("resends", 0)]
    alignment += acks
    alignment += [("labelled", {}), ("share_spans", []), ("label_strata", [])]
    alignment += [("label_seen", {}), ("labels_unplaced", 0), ("free_capacity", {})]
    after_approvals = [k for k, _ in items].index("approvals") + 1
    items.insert(after_approvals, ("approval_reasons", {}))
    items.insert(after_approvals + 1, ("approval_keys", {}))
    items.insert(after_approvals + 2, ("control_signatures", []))
    expected = dict([*items[:after_seq], ("alert_seq", 0), *items[after_seq:], *alignment])

    state = RolloutState.from_dict(stored)

    assert 0 == state.alert_seq
    assert (0.0, {}, {}) == (state.align_s, state.received, state.held)
    assert dumped(expected) == dumped(state.to_dict())
    assert dumped(expected) == dumped(RolloutState.from_dict(expected).to_dict())


def test_a_stored_state_reads_back_as_the_values_it_was_written_from() -> None:
    state = RolloutState.from_dict(stored_v1())

    assert Phase.PAUSED == state.phase
    assert Phase.PROGRESSING == state.resume_phase
    assert {0: "bob", 2: "carol"} == state.approvals
    assert "fraud-train-2" == (state.training_profile and state.training_profile.dataset)
    assert (6, 5, 2) == (state.baseline.requests, state.canary.requests, state.shadow.requests)
    assert state.panes is not None and ["baseline", "canary"] == sorted(state.panes)
    assert [1, 2] == [c.index for c in state.checkpoints]
    assert 400 == state.rule_cache["skew"].at_requests


def test_a_copy_is_equal_and_independent() -> None:
    state = RolloutState.from_dict(stored_v1())

    copy = state.copy()
    copy.firing["new"] = "warning"

    assert state != copy
    assert "new" not in state.firing
    assert state == RolloutState.from_dict(stored_v1())


def test_approvals_are_written_in_step_order_with_string_keys() -> None:
    state = RolloutState.from_dict(stored_v1())
    state.approvals = {10: "dave", 2: "carol"}

    data = state.to_dict()

    assert {"2": "carol", "10": "dave"} == data["approvals"]
    assert ["2", "10"] == list(data["approvals"])
    assert {10: "dave", 2: "carol"} == RolloutState.from_dict(data).approvals


def test_the_derived_caches_are_not_part_of_the_value() -> None:
    state = RolloutState.from_dict(stored_v1())
    other = RolloutState.from_dict(stored_v1())

    assert state.seen("evt-2")  # builds the index cache of one of them only

    assert state == other
    assert not any(key.startswith("_") for key in state.to_dict())
    assert dataclasses.fields(state)  # a dataclass: its fields are what the value derives from


def every_field_set() -> RolloutState:
    """The stored state with the fields it leaves at their default set too."""
    state = RolloutState.from_dict(stored_v1())
    state.alert_seq = 3
    state.approval_reasons = {2: "LGTM"}
    state.approval_keys = {2: "bob-2026"}
    state.control_signatures = ["9c8160ce28ab0392b28bc24be3f31b46"]
    state.align_s = 5.0
    state.received = {"baseline": 1795000020.5, "canary": 1795000021.25}
    held = CohortStats()
    held.observe(ok=False, latency_ms=80.0, event_time=1795000021.25, error_type="timeout")
    state.held = {"canary": {17950000212: held}}
    state.held_done = {"canary": {17950000212: 1795000021.33}}
    state.cut_slot, state.cut_waits_for = 17950000220, ["baseline"]
    state.settling, state.settle_s = True, 2.0
    state.acks = True
    state.acked_percent, state.acked_at = 10.0, 1795000020.0
    state.step_command = next(p for p in sample_payloads() if isinstance(p, Command))
    state.resends = 2
    labelled = LabelledStats()
    labelled.add("req-1", 0.8, 1, 3600.0)
    state.labelled = {"canary": labelled}
    state.share_spans = [[1795000000.0, 10.0]]
    state.label_strata = [[1, 1, 0, 0]]
    state.label_seen = {"canary": 1795000021.0}
    state.labels_unplaced = 4
    state.free_capacity = {"gpu": 6.0}
    return state


def blank() -> RolloutState:
    """Another rollout, just created: every field at its default (or another value)."""
    other = every_field_set().deployment.model_copy(update={"deployment_id": "dep-other"})
    return RolloutState(deployment=other, phase=Phase.PENDING, created_at=0.0)


def test_the_rich_state_sets_every_value_field_to_another_value_than_a_new_state() -> None:
    """What makes the round trip below cover every field: a new field must be set above."""
    state, other = every_field_set(), blank()

    same = [
        f.name
        for f in field_codecs(RolloutState)
        if getattr(state, f.name) == getattr(other, f.name)
    ]

    assert [] == same


def test_every_value_field_is_written_read_and_compared() -> None:
    state, other = every_field_set(), blank()

    restored = RolloutState.from_dict(json.loads(dumped(state.to_dict())))

    assert state == restored
    assert dumped(state.to_dict()) == dumped(restored.to_dict())
    for f in field_codecs(RolloutState):
        changed = state.copy()
        setattr(changed, f.name, getattr(other, f.name))
        assert state != changed, f"{f.name} is not compared"
        assert f.name in state.to_dict(), f"{f.name} is not written"
        assert getattr(state, f.name) == getattr(restored, f.name), f"{f.name} is not read"


def test_a_stored_state_without_a_field_that_has_no_default_does_not_load() -> None:
    stored = stored_v1()
    del stored["created_at"]

    with pytest.raises(ValueError, match="'created_at' is missing"):
        RolloutState.from_dict(stored)


@dataclass
class WithATimestamp:
    seq: int
    at: datetime


def test_a_field_of_a_type_without_a_codec_fails_with_a_named_error() -> None:
    with pytest.raises(NoCodecError) as caught:
        field_codecs(WithATimestamp)

    assert isinstance(caught.value, RolloutError)
    assert ("WithATimestamp", "at") == (caught.value.owner, caught.value.field)
    assert str(caught.value).startswith("WithATimestamp.at has type datetime, which has no codec")


@dataclass
class WithAnAmbiguousUnion:
    value: int | str | None = None


def test_a_union_of_two_types_has_no_codec_either() -> None:
    """A stored int | str could not be told apart from its plain form: refused, not guessed."""
    with pytest.raises(NoCodecError) as caught:
        field_codecs(WithAnAmbiguousUnion)

    assert "value" == caught.value.field


@dataclass
class WithACache:
    seq: int
    _at: datetime | None = None


def test_only_the_value_fields_need_a_codec() -> None:
    """A derived cache (a `_` field) is left out of the value, whatever its type."""
    assert ["seq"] == [f.name for f in field_codecs(WithACache)]
