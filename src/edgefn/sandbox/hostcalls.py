"""The `edge` host functions (docs/edge.md, Host functions), written once for every engine.

An engine decodes a call's arguments to Python numbers and hands them, with the
caller's linear memory, to the function's adapter; the adapter reads the guest's
buffers, asks the `Host`, and writes the answer back by the contract's rule.
Out-of-bounds pointers raise `IndexError`, which the engines turn into a trap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from edgefn.sandbox.engine import Host

I32 = "i32"
F64 = "f64"


class GuestMemory(Protocol):
    """One instance's linear memory as seen by a host call; every access bounds-checked."""

    def read(self, ptr: int, length: int) -> bytes:
        """`length` bytes at `ptr`; IndexError when any of them is outside memory."""
        ...

    def write(self, ptr: int, data: bytes) -> None:
        """Store `data` at `ptr`; IndexError when it does not fit."""
        ...


Args = Sequence[int | float]
Adapter = Callable[[GuestMemory, Host, Args], "int | None"]


def _i(value: int | float) -> int:
    return int(value)


def read(mem: GuestMemory, ptr: int | float, length: int | float) -> bytes:
    p, n = _i(ptr), _i(length)
    if p < 0 or n < 0:
        raise IndexError("negative pointer or length")
    return mem.read(p, n)


def write_value(
    mem: GuestMemory, value: bytes | int, out_ptr: int | float, out_cap: int | float
) -> int:
    """The contract's rule: return the full length, write at most out_cap bytes."""
    if isinstance(value, int):
        return value
    n = min(len(value), _i(out_cap))
    if n > 0:
        if _i(out_ptr) < 0:
            raise IndexError("guest output buffer out of bounds")
        mem.write(_i(out_ptr), value[:n])
    return len(value)


def _log(mem: GuestMemory, host: Host, a: Args) -> None:
    host.log(_i(a[0]), read(mem, a[1], a[2]))


def _metrics(mem: GuestMemory, host: Host, a: Args) -> None:
    host.metrics_increment(read(mem, a[0], a[1]), float(a[2]), read(mem, a[3], a[4]))


class Steps(NamedTuple):
    """A host call in three steps: read its inputs from guest memory, ask
    `host.<method>(*inputs)`, write the answer back. The calls that may wait (network,
    Redis, the secrets broker: `WAITING_FUNCTIONS`) are kept in steps so that an engine
    able to suspend the guest (`Module.suspends`) reads the inputs while the guest is in
    the call, asks the host with the guest suspended, and writes the answer when it
    resumes."""

    inputs: Callable[[GuestMemory, Args], tuple[bytes | int, ...]]
    method: str
    output: Callable[[GuestMemory, Args, bytes | int], int]

    def adapter(self) -> Adapter:
        """The three steps in one, the guest blocking its thread meanwhile."""
        def adapter(mem: GuestMemory, host: Host, a: Args) -> int:
            return self.output(mem, a, getattr(host, self.method)(*self.inputs(mem, a)))

        return adapter


def _key_in(mem: GuestMemory, a: Args) -> tuple[bytes | int, ...]:
    return (read(mem, a[0], a[1]),)


def _value_out(mem: GuestMemory, a: Args, value: bytes | int) -> int:
    return write_value(mem, value, a[2], a[3])


def _put_in(mem: GuestMemory, a: Args) -> tuple[bytes | int, ...]:
    return read(mem, a[0], a[1]), read(mem, a[2], a[3]), _i(a[4])


def _code_out(mem: GuestMemory, a: Args, value: bytes | int) -> int:
    assert isinstance(value, int)
    return value


def _lookup(method: str) -> Adapter:
    """A call that takes a key and answers a value (`env_get`, `request_header`)."""
    return Steps(_key_in, method, _value_out).adapter()


WAITING_FUNCTIONS: dict[str, Steps] = {
    "kv_get": Steps(_key_in, "kv_get", _value_out),
    "kv_put": Steps(_put_in, "kv_put", _code_out),
    "http_fetch": Steps(_key_in, "http_fetch", _value_out),
    "secret_get": Steps(_key_in, "secret_get", _value_out),
}


def _request_id(mem: GuestMemory, host: Host, a: Args) -> int:
    return write_value(mem, host.request_id(), a[0], a[1])


# name -> (parameter types, result types, adapter)
EDGE_FUNCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], Adapter]] = {
    "log": ((I32,) * 3, (), _log),
    "metrics_increment": ((I32, I32, F64, I32, I32), (), _metrics),
    "kv_get": ((I32,) * 4, (I32,), WAITING_FUNCTIONS["kv_get"].adapter()),
    "kv_put": ((I32,) * 5, (I32,), WAITING_FUNCTIONS["kv_put"].adapter()),
    "http_fetch": ((I32,) * 4, (I32,), WAITING_FUNCTIONS["http_fetch"].adapter()),
    "env_get": ((I32,) * 4, (I32,), _lookup("env_get")),
    "request_id": ((I32,) * 2, (I32,), _request_id),
    "request_header": ((I32,) * 4, (I32,), _lookup("request_header")),
    "secret_get": ((I32,) * 4, (I32,), WAITING_FUNCTIONS["secret_get"].adapter()),
}
