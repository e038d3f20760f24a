"""`env_get`: only the variables the function declares in its spec."""

from __future__ import annotations

from edgefn.edge.spec import FunctionSpec
from edgefn.sandbox.hostcodes import NOT_FOUND


class EnvCapability:
    __slots__ = ("_values",)

    def __init__(self, values: dict[bytes, bytes]) -> None:
        self._values = values

    @classmethod
    def configure(cls, spec: FunctionSpec) -> EnvCapability:
        return cls({k.encode(): v.encode() for k, v in spec.env.items()})

    def get(self, key: bytes) -> bytes | int:
        value = self._values.get(key)
        return NOT_FOUND if value is None else value
