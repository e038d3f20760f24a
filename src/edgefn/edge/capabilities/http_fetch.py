"""`http_fetch`: outbound HTTP for a function, limited to its allowlist and to the addresses
the node's egress rules let it reach (public ones, unless the operator opened more).

Every hop (the first request and each redirect, followed here, never by the
client) is checked against the allowlist; every connection against the node's
address rules (`egress_rules.EgressRules`, applied in `egress.GuardedBackend`). The
whole exchange ends within `timeout_s`, the invocation's remaining budget. A
response body over `max_response_bytes` is refused with -3, not truncated: a
cut JSON document or image parses as garbage, and the guest can tell a -3
apart. Bodies come back as sent on the wire (`accept-encoding: identity` unless
the guest asks otherwise), so the cap counts what crossed the network and no
decompression can be made to blow up.
"""

from __future__ import annotations

import functools
import logging
import ssl
import time
from typing import NamedTuple
from urllib.parse import urlsplit

import httpcore
import httpx

from edgefn.contract import HTTP_METHODS, EgressAllowlist, HttpFetchPolicy
from edgefn.edge.capabilities.egress import GuardedBackend
from edgefn.edge.capabilities.egress_rules import EgressRules, parse_host
from edgefn.edge.capabilities.errors import CallFailed, CapabilityError, Denied
from edgefn.edge.capabilities.http1 import Http1Client, Origin, Response
from edgefn.edge.spec import FunctionSpec
from edgefn.sandbox.abi import FetchRequest, encode_response, parse_fetch_request
from edgefn.sandbox.errors import GuestError
from edgefn.sandbox.hostcodes import FAILED

log = logging.getLogger(__name__)

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the client from the URL and the body; a guest's copy could only contradict them.
_FRAMING = frozenset({b"host", b"content-length"})
# Credentials that must not follow a redirect to another origin.
_CREDENTIALS = frozenset({b"authorization", b"cookie", b"proxy-authorization"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Sent unless the guest sets its own.
_DEFAULT_HEADERS = ((b"accept-encoding", b"identity"), (b"user-agent", b"edgefn-http-fetch"))


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of ms; one context serves every function's client.
    return httpx.create_ssl_context(trust_env=False)


class HttpFetchCapability:
    """Per function version; thread-safe, one pooled client shared by all its invocations."""

    def __init__(
        self,
        policy: HttpFetchPolicy,
        egress: EgressRules,
        *,
        # As many as a worker's request threads (EdgeSettings.threads), each of which may
        # wait in one fetch: fewer would close connections a burst of fetches just opened.
        max_idle_connections: int = 128,
    ) -> None:
        self.policy = policy
        self._allowlist = EgressAllowlist(policy.allow_hosts)
        self._backend = GuardedBackend(egress, allow_private=policy.allow_private)
        # A client of its own (http1.py): no cookie jar, which would carry one invocation's
        # cookies into the next (another end user's); no proxies from the environment,
        # which would open connections past the address checks; redirects are judged here.
        self._client = Http1Client(self._backend, _ssl_context(),
                                   max_idle=max_idle_connections)

    @classmethod
    def configure(
        cls, spec: FunctionSpec, egress: EgressRules | None = None
    ) -> HttpFetchCapability | None:
        """None (the host answers -2) unless the function allows at least one host.
        `egress` is the node's rules; without them only public addresses are reachable."""
        if not spec.http_fetch.allow_hosts:
            return None
        return cls(spec.http_fetch, egress or EgressRules())

    def fetch(
        self, request: bytes, *, timeout_s: float, traceparent: str | None = None
    ) -> bytes | int:
        """The response in the section-1 encoding, or -2 / -3 / -4; never raises."""
        if timeout_s <= 0:
            return FAILED
        deadline = time.monotonic() + timeout_s
        try:
            parsed = parse_fetch_request(request)
            with self._backend.deadline(deadline):
                return self._exchange(parsed, deadline, traceparent)
        except CapabilityError as exc:
            log.debug("http_fetch refused: %s", exc)
            return exc.code
        except (GuestError, httpcore.NetworkError, httpcore.TimeoutException) as exc:
            log.debug("http_fetch failed: %s", exc)
            return FAILED
        except Exception:
            # Anything raised here would trap the guest; a host bug is still only -4 to it.
            log.exception("http_fetch failed")
            return FAILED

    def close(self) -> None:
        self._client.close()
        self._backend.close()

    def _exchange(self, req: FetchRequest, deadline: float, traceparent: str | None) -> bytes:
        if req.method not in HTTP_METHODS:
            raise CallFailed(f"method {req.method} is not one http_fetch sends")
        method, body = req.method, req.body
        headers = _outbound_headers(req.headers, traceparent)
        url = self._check(_url(req.url))
        for hop in range(self.policy.max_redirects + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise CallFailed("the fetch deadline has passed")
            response = self._client.exchange(
                method, url.origin, url.raw_path, url.netloc, _with_defaults(headers), body,
                max_body=self.policy.max_response_bytes,
            )
            location = _header(response.headers, b"location")
            if response.status not in _REDIRECTS or not location:
                return _encode(response)
            if hop == self.policy.max_redirects:
                raise CallFailed(f"more than {self.policy.max_redirects} redirects")
            target = self._check(_target(_join(url.url, location.decode("latin-1"))))
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                # What browsers (and httpx) do: the next hop is a GET without the body.
                method = "GET" if method != "HEAD" else method
                body = b""
                headers = [(k, v) for k, v in headers if k != b"content-type"]
            if target.origin != url.origin:
                headers = [(k, v) for k, v in headers if k not in _CREDENTIALS]
            url = target
        raise AssertionError("unreachable: the last hop returns or raises")

    def _check(self, url: _Target) -> _Target:
        """Scheme, credentials and allowlist; addresses are checked when connecting."""
        if url.scheme not in ("http", "https"):
            raise Denied(f"scheme {url.scheme!r} is not allowed")
        if not url.raw_host:
            raise CallFailed("the URL has no host")
        if url.userinfo:
            # `http://allowed@elsewhere/` reads as one host and goes to the other.
            raise Denied("credentials in the URL are not allowed")
        host = url.raw_host.decode("ascii")
        if not self._allowlist.allows(parse_host(host)):
            raise Denied(f"host {host!r} is not on the allowlist")
        return url


class _Target(NamedTuple):
    """A URL and the parts of it a fetch reads, each read once (httpx's properties
    encode and decode on every read)."""

    url: httpx.URL
    scheme: str
    raw_host: bytes
    userinfo: bytes
    # Scheme, host as sent (IDNA, an IPv6 address without brackets), port: used once
    # `_check` has read the host as ASCII.
    origin: Origin
    raw_path: bytes
    netloc: bytes


def _target(url: httpx.URL) -> _Target:
    scheme, raw_host = url.scheme, url.raw_host
    origin = (scheme, raw_host.decode("ascii", "replace"),
              url.port or (443 if scheme == "https" else 80))
    return _Target(url, scheme, raw_host, url.userinfo, origin, url.raw_path, url.netloc)


def _encode(response: Response) -> bytes:
    dropped = _HOP_BY_HOP | _FRAMING | _connection_listed(response.headers)
    headers = [
        (name.lower(), value) for name, value in response.headers if name.lower() not in dropped
    ]
    return encode_response(response.status, headers, response.body)


def _header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
    for name, value in headers:
        if name.lower() == wanted:
            return value
    return None


@functools.lru_cache(maxsize=1024)
def _url(text: str) -> _Target:
    """Parsed once per text: httpx's parser is Python and regular expressions, about a
    tenth of a fetch's CPU, and a function fetches the same few URLs over and over. A URL
    is immutable and a pure function of its text, so one cache serves every function;
    what a function may reach is still checked on every call (`_check`, the backend)."""
    try:
        return _target(httpx.URL(text))
    except httpx.InvalidURL as exc:
        _refuse_address_spelling(text)
        raise CallFailed(f"malformed URL: {exc}") from exc


def _join(base: httpx.URL, location: str) -> httpx.URL:
    try:
        return base.join(location)
    except httpx.InvalidURL as exc:
        _refuse_address_spelling(location)
        raise CallFailed(f"malformed redirect location: {exc}") from exc


def _refuse_address_spelling(text: str) -> None:
    """`Denied` for a URL the parser refused because its host spells an address in a
    form it does not take (`0177.0.0.1`): an attempt on an address, not a typo, and
    the guest is told so (-2) as for every other spelling."""
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return
    last = (host or "").rstrip(".").rsplit(".", 1)[-1]
    if last.isdigit() or last.startswith("0x"):
        # The URL standard reads a host ending in a number as an IPv4 address.
        raise Denied(f"not a canonical IPv4 address: {host!r}")


def _connection_listed(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Headers a `Connection` header names are hop-by-hop too (RFC 9110 section 7.6.1)."""
    return frozenset(
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    )


def _with_defaults(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    given = {name for name, _ in headers}
    return [*(h for h in _DEFAULT_HEADERS if h[0] not in given), *headers]


def _outbound_headers(
    headers: list[tuple[bytes, bytes]], traceparent: str | None
) -> list[tuple[bytes, bytes]]:
    dropped = _HOP_BY_HOP | _FRAMING | _connection_listed(headers)
    if traceparent:
        # The invocation's trace context replaces any the guest set, so the call joins its trace.
        dropped |= {b"traceparent"}
    out = [(name, value) for name, value in headers if name not in dropped]
    if traceparent:
        out.append((b"traceparent", traceparent.encode("ascii")))
    return out
