"""A tiny run of bench/join.py: its figures come out, with the run it was asked for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.join import main

FIGURES = (
    "predictions written per second",
    "labels joined per second",
    "labels joined per CPU-second of the calling thread",
    "index entries swept per second (one sweep)",
    "disk bytes per pending prediction (after the fill, flushed)",
    "bloom filter bytes per pending prediction",
    "index bytes per pending prediction",
    "memtable bytes per prediction (before its flush)",
    "peak RSS of the process",
)


def test_a_tiny_join_benchmark_prints_its_figures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    directory = tmp_path
    argv = ["--quick", "--pending", "3000", "--labels", "1000", "--batch", "500"]

    main([*argv, "--dir", str(directory)])

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Command: `python bench/join.py --quick --pending 3000")
    assert "- Code: commit " in out
    assert "block_cache_mb 64, write_buffer_mb 32" in out
    rows = {
        cells[0]: cells[1]
        for line in lines
        if line.startswith("| ")
        and len(cells := [c.strip() for c in line.strip("|").split("|")]) == 2
    }
    for figure in FIGURES:
        assert re.match(r"[\d,.]+", rows[figure]), (figure, rows.get(figure))
    # 10 % of the labels were for requests never predicted; the rest joined or were duplicates
    joined, duplicate, waiting = (
        int(x.replace(",", "")) for x in rows["labels: joined / duplicate / waiting"].split(" / ")
    )
    assert (1000, 100) == (joined + duplicate + waiting, waiting)
    assert float(rows["disk bytes per pending prediction (after the fill, flushed)"]) > 0
    assert [] == list(directory.iterdir())  # the store's directory is removed
