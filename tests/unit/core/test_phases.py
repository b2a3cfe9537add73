"""Phases: one transition table, terminal phases with no way out (but the rollback of a
promoted model), illegal moves named."""

from __future__ import annotations

import typing

import pytest

import schemas as s
from controller.core.ids import command_id, decision_id
from controller.core.phases import TRANSITIONS, IllegalTransition, Phase, transition
from controller.errors import RolloutError


def test_phase_values_are_the_wire_phase_names() -> None:
    assert set(typing.get_args(s.PhaseName)) == {p.value for p in Phase}


def test_promoted_rolled_back_and_aborted_are_terminal() -> None:
    assert {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED} == {
        p for p in Phase if p.is_terminal()
    }


def test_a_terminal_phase_has_no_way_out_but_a_rollback_of_the_promoted_model() -> None:
    assert {
        Phase.PROMOTED: frozenset({Phase.ROLLED_BACK}),
        Phase.ROLLED_BACK: frozenset(),
        Phase.ABORTED: frozenset(),
    } == {phase: TRANSITIONS[phase] for phase in Phase if phase.is_terminal()}


def test_every_live_phase_can_be_rolled_back_or_aborted() -> None:
    for phase in (Phase.AWAITING_APPROVAL, Phase.PROGRESSING, Phase.PAUSED):
        assert phase.can_go_to(Phase.ROLLED_BACK)
        assert phase.can_go_to(Phase.ABORTED)


def test_only_a_progressing_rollout_is_promoted() -> None:
    assert [Phase.PROGRESSING] == [p for p in Phase if p.can_go_to(Phase.PROMOTED)]


def test_a_legal_transition_returns_the_new_phase() -> None:
    assert Phase.PAUSED is transition(Phase.PROGRESSING, Phase.PAUSED)


def test_an_illegal_transition_raises_naming_both_phases() -> None:
    with pytest.raises(IllegalTransition) as caught:
        transition(Phase.ROLLED_BACK, Phase.PROGRESSING)

    assert isinstance(caught.value, RolloutError)
    assert "rolled_back -> progressing" in str(caught.value)
    assert "terminal" in str(caught.value)
    assert Phase.ROLLED_BACK is caught.value.from_phase


def test_a_promoted_rollout_goes_nowhere_but_rolled_back() -> None:
    with pytest.raises(IllegalTransition, match=r"promoted -> progressing.*allows: rolled_back"):
        transition(Phase.PROMOTED, Phase.PROGRESSING)


def test_an_illegal_transition_lists_what_the_table_allows() -> None:
    with pytest.raises(IllegalTransition, match=r"pending -> paused.*allows: aborted"):
        transition(Phase.PENDING, Phase.PAUSED)


def test_ids_are_a_function_of_deployment_sequence_action_and_step() -> None:
    first = command_id("dep-1", 3, "rollback", 1)

    assert first == command_id("dep-1", 3, "rollback", 1)
    assert first.startswith("cmd-") and 20 == len(first)
    assert first != command_id("dep-1", 4, "rollback", 1)
    assert first != command_id("dep-2", 3, "rollback", 1)
    assert first != command_id("dep-1", 3, "promote", 1)
    assert first != command_id("dep-1", 3, "rollback", 2)
    assert decision_id("dep-1", 3, "rollback", 1).startswith("dec-")
