"""Field types of the API's bodies and parameters: each states in the OpenAPI
exactly what it accepts, and no accepted value can fail in the database.

Patterns are written for three regex engines at once: pydantic validates them
with Rust's `regex`, the OpenAPI document hands them to ECMA-262 clients, and
Python code matches some of them with `re`. So character classes are spelled
out (`[0-9]`, never `\\d`, `\\s` or `\\w`, whose Unicode meaning differs between
the three), `^...$` are only used where Rust or ECMA read them (there `$` is the
end of the text; Python's `re.match` would also take a trailing newline, so
Python code uses `fullmatch`), and no pattern uses a feature one of them lacks.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import Field, Strict

from edgefn.contract import JSON_INT_MAX

# What the database holds: SQL INTEGER is 32-bit on PostgreSQL; BIGINT, SQLite's
# INTEGER, and LIMIT/OFFSET are 64-bit. Wider integers fields stop at the
# largest one every JSON reader holds exactly (a double's 53 bits): a client
# that reads the document's bound as a double cannot tell 2**63 - 1 from 2**63.
INT32_MAX = 2**31 - 1

_MEANINGS: dict[str, str] = {}


def pattern(regex: str, meaning: str) -> str:
    """`regex`, with what it accepts in words for validation messages (the regex
    itself is no message for a person)."""
    _MEANINGS[regex] = meaning
    return regex


def pattern_meaning(regex: str) -> str | None:
    return _MEANINGS.get(regex)


# One line of text: no control characters (C0 and DEL), hence no NUL, which
# PostgreSQL cannot store in text, and no newline.
LINE_PATTERN = pattern(r"^[^\x00-\x1f\x7f]*$", "one line of text without control characters")
# Free text (passwords, messages, env values): anything but NUL.
TEXT_PATTERN = pattern(r"^[^\x00]*$", "text without NUL characters")
# Identifiers the control plane hands out (UUIDs) or accepts (node ids).
ID_PATTERN = pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", "an id of letters, digits, `.`, `_` and `-`")
# semver.org's expression with ASCII digits.
_NUM = r"(0|[1-9][0-9]*)"
_PRE_ID = r"(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
SEMVER_PATTERN = pattern(
    rf"^{_NUM}\.{_NUM}\.{_NUM}(-{_PRE_ID}(\.{_PRE_ID})*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$",
    "a semantic version (e.g. 1.2.0)",
)

Line = Annotated[str, Field(pattern=LINE_PATTERN)]
Text = Annotated[str, Field(pattern=TEXT_PATTERN)]
Id = Annotated[str, Field(min_length=1, max_length=100, pattern=ID_PATTERN)]
Version = Annotated[
    str,
    Field(
        min_length=5,
        max_length=100,
        pattern=SEMVER_PATTERN,
        description="a semantic version, e.g. `1.2.0` or `2.0.0-rc.1`",
        examples=["1.0.0"],
    ),
]
SHA256_PATTERN = pattern(r"^[0-9A-Fa-f]{64}$", "64 hex digits")
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN, description="hex SHA-256")]

# A JSON scalar a client may attach (labels, counters). Each branch is strict so
# that one never converts into another: a too-long string is refused, not read
# as the number it spells.
Scalar = (
    Annotated[Line, Field(max_length=256), Strict()]
    | Annotated[int, Field(ge=-JSON_INT_MAX, le=JSON_INT_MAX), Strict()]
    | Annotated[float, Field(allow_inf_nan=False), Strict()]
    | Annotated[bool, Strict()]
)

# A resource id in a URL path. Malformed ids are a 400 rather than a lookup:
# PostgreSQL refuses some characters (NUL) outright.
PathId = Annotated[str, Path(min_length=1, max_length=100, pattern=ID_PATTERN, description="an id")]


# For a dict whose key type has a pattern: pydantic states it as
# `patternProperties`, which alone lets any other key through in JSON Schema.
ONLY_PATTERN_KEYS: dict[str, Any] = {"additionalProperties": False}


def omitted(**constraints: Any) -> Any:
    """The default of a PATCH field that may be left out but not set to null: an
    absent field stays unset (the model is dumped with `exclude_unset`) and null
    fails the field's type. The model's `json_schema_extra` must be
    `drop_null_defaults`, so that the OpenAPI shows no `default: null`."""
    return Field(None, **constraints)


def drop_null_defaults(schema: dict[str, Any]) -> None:
    """Remove `default: null` from properties that do not accept null."""
    for prop in schema.get("properties", {}).values():
        nullable = any(branch.get("type") == "null" for branch in prop.get("anyOf", ()))
        if "default" in prop and prop["default"] is None and not nullable:
            del prop["default"]
