"""The committed JSON Schemas are exactly what the models say."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import schemas as s
from controller.cli import cli
from schemas.export import COMMITTED_DIR, json_schemas, render


def test_committed_schemas_match_the_models() -> None:
    expected = {name: render(doc) for name, doc in json_schemas().items()}
    committed = {p.name: p.read_text(encoding="utf-8") for p in COMMITTED_DIR.glob("*.json")}

    stale = sorted(n for n in expected if committed.get(n) != expected[n])
    extra = sorted(set(committed) - set(expected))
    assert not stale and not extra, (
        f"schemas/json is out of date (stale {stale}, extra {extra}); "
        "run `rollout schemas export schemas/json`"
    )


def test_one_schema_per_event_type_in_draft_2020_12() -> None:
    docs = json_schemas()

    assert len(s.PAYLOADS) == len(docs)
    for doc in docs.values():
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert doc["additionalProperties"] is False


def test_export_command_writes_the_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schemas", "export", str(tmp_path / "out")])

    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert sorted(json_schemas()) == written
    doc = json.loads((tmp_path / "out" / "dev.rollout.command.v1.schema.json").read_text())
    assert doc["title"] == "dev.rollout.command.v1"
