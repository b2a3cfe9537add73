"""The committed JSON Schemas and `schemas.decode` agree: a producer that validates its events
against the schemas sends what the worker accepts, and the schemas reject what the worker would
dead-letter, except for the checks a JSON Schema cannot state (listed in CANNOT_STATE)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

import schemas as s
from schemas.export import file_name, json_schemas
from tests.factories import make_event, sample_payloads

SCHEMAS = json_schemas()
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER

#: What decode checks beyond the schemas' reach, as the rejection's error kinds: rules across
#: fields of a model (the subject is the data's record key, a failed run has an error, an error
#: has an error type; pydantic's `value_error`) and times in the future (`future`).
CANNOT_STATE = frozenset({"value_error", "future"})


def schema_accepts(doc: Any, event_type: str) -> bool:
    schema = SCHEMAS[file_name(event_type)]
    return jsonschema.Draft202012Validator(schema, format_checker=FORMATS).is_valid(doc)


def mutations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every attribute and every data field deleted, null, and of each wrong JSON type; an
    unknown attribute and an unknown data field."""
    wrong: list[Any] = [None, -1, 1.5, "x", "", True, [], {}, {"x": 1}]
    for where, node_of in (("", lambda d: d), ("data.", lambda d: d["data"])):
        for key in list(node_of(doc)):
            gone = copy.deepcopy(doc)
            del node_of(gone)[key]
            yield f"no {where}{key}", gone
            for value in wrong:
                changed = copy.deepcopy(doc)
                node_of(changed)[key] = value
                yield f"{where}{key} = {value!r}", changed
        extra = copy.deepcopy(doc)
        node_of(extra)["colour"] = "red"
        yield f"unknown {where}colour", extra


def cases() -> Iterator[Any]:
    for payload in sample_payloads():
        doc = json.loads(make_event(payload).to_json())
        yield pytest.param(doc["type"], "valid", doc, id=f"{type(payload).__name__}: valid")
        for name, mutated in mutations(doc):
            yield pytest.param(doc["type"], name, mutated, id=f"{type(payload).__name__}: {name}")


@pytest.mark.parametrize(("event_type", "case", "doc"), list(cases()))
def test_the_schema_and_decode_agree(event_type: str, case: str, doc: dict[str, Any]) -> None:
    decoded = s.decode(json.dumps(doc).encode())
    rejected = isinstance(decoded, s.Rejection)

    if schema_accepts(doc, event_type):
        if rejected:
            kinds = {e.kind for e in decoded.errors}  # type: ignore[union-attr]
            assert kinds <= CANNOT_STATE, f"schema accepts, decode rejects: {decoded.reason}"
    else:
        assert rejected, f"schema rejects {case}, decode accepts it"
