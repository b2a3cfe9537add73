"""A small run of bench/fuzz.py: mutated records of every type through every decode path."""

from __future__ import annotations

from bench.fuzz import fuzz, invalid_for_the_lane, quiet
from controller.stream import native


def test_mutated_records_never_raise_and_are_all_dead_lettered_or_counted() -> None:
    quiet()
    lanes = (False, True) if native.available() else (False,)

    tally = fuzz(1_500, seed=7, lanes=lanes)

    assert {} == dict(tally.exceptions)
    assert 0 == tally.unsound
    assert 0 == tally.letters_bad
    assert tally.valid_predictions > 50 and tally.rejected > 1_000  # both kinds were exercised
    assert tally.kinds["deep"] > 50
    for got in tally.lanes.values():
        assert invalid_for_the_lane(tally) == got["letters"]
        assert tally.predictions == got["predictions"]
