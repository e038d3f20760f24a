"""Numbers as both sides read them from JSON: integers that stay exact in every JSON
reader, and the bounded counts, sizes and durations of policies and quotas."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, Strict

# The largest integer every JSON reader holds exactly (a double's 53 bits); limits
# travel as int64 in the gRPC instructions and as JSON numbers in the API.
JSON_INT_MAX = 2**53 - 1


def json_integer(value: Any) -> Any:
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be an integer")
    return value


# A JSON integer: `5` or `5.0`, not `false` or `"5"`, which pydantic would convert.
# Bounds go before the validator in an Annotated (after it, the OpenAPI would
# show them as pydantic's `ge`/`le` instead of `minimum`/`maximum`).
JsonInt = Annotated[int, BeforeValidator(json_integer)]
HotInstances = Annotated[int, Field(ge=0, le=JSON_INT_MAX), BeforeValidator(json_integer)]
IdleTimeout = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
RequestBytes = Annotated[int, Field(ge=0, le=JSON_INT_MAX), BeforeValidator(json_integer)]
Limit = Annotated[int, Field(ge=1, le=JSON_INT_MAX), BeforeValidator(json_integer)]
Count = Annotated[int, Field(ge=0, le=JSON_INT_MAX), BeforeValidator(json_integer)]
# A JSON number of seconds (an integer is one too), not `false` or `"5"`.
CpuSeconds = Annotated[
    float, Field(ge=0, le=JSON_INT_MAX, allow_inf_nan=False), BeforeValidator(json_integer)
]
