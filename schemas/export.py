"""JSON Schema (draft 2020-12) of every event type, one file each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.envelope import ENVELOPES

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Where the committed copies live (a test fails when they differ from the models).
COMMITTED_DIR = Path(__file__).parent / "json"


def file_name(event_type: str) -> str:
    return f"{event_type}.schema.json"


#: Envelope attributes the models give defaults (so pydantic marks them optional) that
#: `schemas.decode` still requires in the bytes: the event type picks the envelope.
REQUIRED_ATTRIBUTES = ("type",)


def json_schemas() -> dict[str, dict[str, Any]]:
    """Map file name -> JSON Schema document, for every event type."""
    out: dict[str, dict[str, Any]] = {}
    for event_type, envelope in ENVELOPES.items():
        schema = envelope.model_json_schema(mode="validation")
        required = list(schema.get("required", ()))
        schema["required"] = required + [a for a in REQUIRED_ATTRIBUTES if a not in required]
        doc = {"$schema": DIALECT, "$id": file_name(event_type), **schema}
        doc["title"] = event_type
        out[file_name(event_type)] = doc
    return out


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def export(directory: Path) -> list[Path]:
    """Write every schema into `directory` (created if needed) and return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in json_schemas().items():
        path = directory / name
        path.write_text(render(doc), encoding="utf-8")
        written.append(path)
    return written
