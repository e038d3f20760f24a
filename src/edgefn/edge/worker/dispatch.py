"""How a loaded function runs, chosen once when it is loaded: its ABI codec and its place.

A request for a function goes through two objects kept with the loaded function
(`runtime.LoadedFunction`), so that nothing about the module is decided again
per request:

- its **codec** (`EdgeV1Codec` or `WagiCodec`): the request turned into what the
  guest reads, and what the guest wrote turned into an HTTP response;
- its **placement**: whether its calls may run **on the worker's event loop**
  (no thread hop, no GIL hand-off; the epoch deadline bounds the call) or go to
  the worker's elastic pool of request threads.

A function runs on the loop only if it cannot block it: it imports none of the
host calls that wait (`http_fetch`, `kv_get`, `kv_put`, `secret_get`), or its
policy gives it none of those capabilities, so they answer "denied" at once, or
its guests are suspended while they wait (`Module.suspends`), in which case its
calls on the loop are green tasks (edge/green.py) and only their CPU counts. It
earns its place: it starts on the threads, and moves to the loop after
`probation` calls in a row each under `budget_s` of CPU with no timeout. On the
loop, one call that times out or uses over four times the budget sends it back to
the threads, and so does being over the budget in half of its last 16 calls there
(`OVER_WINDOW`, `OVER_LIMIT`); there it stays for `hold_s` before it can earn its
place again. Calls a little over the budget now and then are the machine's noise,
not the guest's: a virtual CPU taken away for a moment, page faults, and on a
shared cloud machine they come a few in a row (four calls at 2 to 3 ms where the
same calls take 0.4 ms, `bench/fetch_cost.py`). A guest that is always a little
over leaves after 8 calls, at most 64 ms of its loop's time per `hold_s`. A
looping guest therefore never reaches the loop unless it first behaved, and then
stalls its loop at most once for its deadline per `hold_s`; the penalty box
(fairness.py) deals with it on the threads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgefn.contract import RouteSpec
from edgefn.edge.worker.exchange import HttpRequest, HttpResponse
from edgefn.sandbox.abi import (
    GuestResponse,
    WagiRoute,
    cgi_environ,
    encode_headers,
    parse_cgi,
    parse_response_text,
    text_headers,
    wagi_argv,
)
from edgefn.sandbox.engine import GuestRequest
from edgefn.sandbox.wasminfo import ABI_EDGE_V1, uses_wasi_http

if TYPE_CHECKING:
    from edgefn.edge.spec import FunctionSpec
    from edgefn.edge.worker.host_functions import FunctionHost
    from edgefn.sandbox.engine import Module

# Host calls that may wait (network, disk, the secrets broker), with the capability
# that makes them do more than answer "denied".
_WAITING_CALLS = {"http_fetch": "fetch", "kv_get": "kv", "kv_put": "kv", "secret_get": "secrets"}


def may_block(module: Module, host: FunctionHost) -> bool:
    """True when a call of this function may wait in a host call."""
    imported = {imp.name for imp in module.info.imports if imp.module == "edge"}
    if uses_wasi_http(module.info):
        imported.add("http_fetch")  # its `req` is an http_fetch
    return any(getattr(host, capability) is not None
               for name, capability in _WAITING_CALLS.items() if name in imported)


@dataclass(frozen=True, slots=True)
class InlinePolicy:
    """The node's rules for running calls on the event loop (`EdgeSettings.inline*`)."""

    enabled: bool = True
    budget_s: float = 0.002
    probation: int = 32
    hold_s: float = 30.0


log = logging.getLogger(__name__)

# On the loop: the last OVER_WINDOW calls are remembered (one bit each, set when the call
# was over the budget); OVER_LIMIT of them over sends the function back.
OVER_WINDOW = 16
OVER_LIMIT = 8
_WINDOW_MASK = (1 << OVER_WINDOW) - 1


class Placement:
    """Where one loaded function's calls run; `on_loop` is read once per request.

    Updated by `record` from any thread; the counters are plain attributes (a lost
    update under a race only delays a move by a call).
    """

    __slots__ = ("_good", "_held_until", "_recent", "may_block", "name", "on_loop", "policy",
                 "suspends")

    def __init__(self, policy: InlinePolicy, *, may_block: bool, suspends: bool = False,
                 name: str = "") -> None:
        self.policy = policy
        self.name = name  # the function's, for the log line when it leaves the loop
        self.may_block = may_block
        # It may block, but its guests are suspended while they wait: on the loop, its
        # calls are green tasks.
        self.suspends = may_block and suspends
        self.on_loop = False
        self._good = 0
        self._recent = 0  # its last calls on the loop, a bit set for each over the budget
        self._held_until = 0.0

    def record(self, *, cpu_s: float, timed_out: bool, on_loop: bool) -> None:
        """After each call of the function, `on_loop` where the call ran: move the
        function on or off the loop."""
        policy = self.policy
        if (self.may_block and not self.suspends) or not policy.enabled:
            return
        far_over = timed_out or cpu_s > 4 * policy.budget_s
        if on_loop and self.on_loop:
            recent = ((self._recent << 1) | (cpu_s > policy.budget_s)) & _WINDOW_MASK
            self._recent = recent
            if far_over:
                self._leave("a timeout" if timed_out else
                            f"a call of {cpu_s * 1000:.1f} ms, over 4 times the budget")
            elif recent and recent.bit_count() >= OVER_LIMIT:
                self._leave(f"{OVER_LIMIT} of its last {OVER_WINDOW} calls over the budget")
            return
        # A call on the threads (or one begun on the loop before its function left it).
        # There a call competes for the GIL with the others, and its CPU time grows with
        # them (2 to 5 times the same call's on the loop with 50 requests waiting on a
        # worker): only a timeout or a call far over the budget restarts the probation,
        # and only a timeout sends back a function that has reached the loop meanwhile.
        if timed_out and self.on_loop:
            self._leave("a timeout")
        if far_over:
            self._good = 0
            return
        if not self.on_loop:
            self._good += 1
            if self._good >= policy.probation and time.monotonic() >= self._held_until:
                self.on_loop = True
                self._recent = 0

    def _leave(self, why: str) -> None:
        self.on_loop = False
        self._good = 0
        self._held_until = time.monotonic() + self.policy.hold_s
        # At most once per hold_s per function: what an operator needs to tell a guest
        # that computes too long at once from a noisy machine.
        log.info("function %s leaves the event loop for %.0f s: %s (budget %.1f ms)",
                 self.name or "?", self.policy.hold_s, why, self.policy.budget_s * 1000)


def _http(parsed: GuestResponse) -> HttpResponse:
    return HttpResponse(parsed.status, text_headers(parsed.headers), parsed.body)


class EdgeV1Codec:
    """The `edge-v1` ABI (docs/edge.md): method, target, header block, body; the
    response encoding back."""

    __slots__ = ()

    def request(self, req: HttpRequest, headers: list[tuple[bytes, bytes]], body: bytes,
                route: RouteSpec) -> GuestRequest:
        target = req.path + "?" + req.query if req.query else req.path
        return GuestRequest(req.method.encode(), target.encode(), encode_headers(headers), body)

    def response(self, raw: bytes) -> HttpResponse:
        return HttpResponse(*parse_response_text(raw))


class SubRoute(RouteSpec):
    """A route a WAGI module declared with its `_routes` export, under one of its
    function's routes: served by the export `entrypoint` (docs/wagi.md)."""

    entrypoint: str


# What a WAGI function names as its entrypoint when it names none: `handle` is the
# field's default, an export no WAGI module has (wasminfo.py).
_WAGI_DEFAULTS = ("", "handle")


def wagi_entrypoint(spec: FunctionSpec) -> str:
    """The export a WAGI function's own routes call."""
    return "_start" if spec.entrypoint in _WAGI_DEFAULTS else spec.entrypoint


class WagiCodec:
    """The `wagi` ABI: CGI variables, argv and the body on stdin; the export to call
    (the function's entrypoint, or a sub-route's); a CGI response on stdout."""

    __slots__ = ("argv", "entrypoint")

    def __init__(self, entrypoint: str = "_start", argv: str | None = None) -> None:
        self.entrypoint = entrypoint
        self.argv = argv

    def request(self, req: HttpRequest, headers: list[tuple[bytes, bytes]], body: bytes,
                route: RouteSpec) -> GuestRequest:
        raw = req.raw_path or req.path
        env = cgi_environ(
            method=req.method, path=req.path, raw_path=raw, query=req.query,
            route=WagiRoute.of_route(route.path), server_name=req.host.split(":")[0],
            server_port=req.server_port, scheme=req.scheme, headers=headers,
            body_length=len(body), remote_addr=req.remote_addr,
        )
        entrypoint = route.entrypoint if isinstance(route, SubRoute) else self.entrypoint
        return GuestRequest(b"", b"", b"", body, env, wagi_argv(self.argv, raw, req.query),
                            entrypoint)

    def response(self, raw: bytes) -> HttpResponse:
        return _http(parse_cgi(raw))


Codec = EdgeV1Codec | WagiCodec


def codec_for(module: Module, spec: FunctionSpec) -> Codec:
    if module.abi == ABI_EDGE_V1:
        return EdgeV1Codec()
    return WagiCodec(wagi_entrypoint(spec), spec.argv)
