"""Shared building blocks of the wire contracts.

Scalars are strict: a number never comes from a string, a string never from a number, a
boolean only from `true`/`false`. Enums, timestamps and arrays take their JSON forms. Models are
frozen and reject unknown fields; NaN and infinity are rejected everywhere.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
)

STRICT = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Contract(BaseModel):
    """Base of every wire model."""

    model_config = STRICT


Bool = Annotated[bool, Strict()]
Int = Annotated[int, Strict()]
#: A finite number (an integer is accepted as a float, a string is not).
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]
#: An identifier: no blanks at either end, bounded.
Ident = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=256, pattern=r"^\S(.*\S)?$")
]
Name = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=256)]
Text = Annotated[str, Strict(), StringConstraints(max_length=4096)]
NonNegative = Annotated[float, Strict(), Field(ge=0)]
Percent = Annotated[float, Strict(), Field(ge=0, le=100)]
Share = Annotated[float, Strict(), Field(ge=0, le=1)]
Count = Annotated[int, Strict(), Field(ge=0)]


def _not_a_number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("a timestamp is an RFC 3339 string with its UTC offset, not a number")
    return value


#: A moment with its UTC offset: an RFC 3339 string on the wire (what the JSON Schemas say and
#: the fast path reads), never a number of seconds (which pydantic alone would take).
Timestamp = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]
#: Evidence: a map of plain JSON values, what a person reads in an alert or a decision.
Evidence = dict[str, Any]
