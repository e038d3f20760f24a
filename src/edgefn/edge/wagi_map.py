"""A WAGI module map (`modules.toml`) read as function specs with their routes: what
`edgefn edge serve --modules-toml` serves and `edgefn deploy --modules-toml` deploys.

Each `[[module]]` entry becomes one function (an entry has its own entrypoint,
argv, volumes and allowlist) with one route; entries naming the same file share
its bytes. WAGI ignores keys it does not know; here they are reported, not fatal.
Paths are read relative to the map's folder, then to the current directory, as
WAGI reads them (its own examples name `examples/hello.wat` from the repository).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from edgefn.atomicfile import write_atomic
from edgefn.contract import RouteSpec
from edgefn.edge.spec import FunctionSpec, NodeState
from edgefn.sandbox.errors import InvalidModule
from edgefn.sandbox.wat import wat_to_wasm

log = logging.getLogger("edgefn.edge")

ENTRY_KEYS = frozenset({
    "route", "module", "entrypoint", "volumes", "environment", "allowed_hosts", "argv",
    "http_max_concurrency",
})
# Known to WAGI, without meaning here: `repository` is reserved, `bindle_server` serves
# `bindle:` references, `default_host` is the Host a request without one is given.
_IGNORED_KEYS = frozenset({"repository", "bindle_server"})
_TOP_KEYS = frozenset({"module"})
_IGNORED_TOP_KEYS = frozenset({"default_host"})
# WAGI bounds neither memory, nor time, nor the response: a map's functions get
# limits WAGI programs fit in (Rust and Grain start above the node's 1 MiB default),
# still bounded. The same for every entry; docs/wagi.md says so.
MAP_LIMITS = {"memory_pages": 1024, "max_execution_ms": 30_000,
              "max_response_bytes": 8 * 1024 * 1024}
# WAGI's `allowed_hosts` entry that lets a program reach any host.
ALLOW_ALL = "insecure:allow-all"
_NOT_ID = re.compile(r"[^A-Za-z0-9._-]+")

Warn = Callable[[str], None]


class ModuleMapError(ValueError):
    """A module map that cannot be read, or an entry that cannot be served."""


@dataclass(frozen=True)
class WagiModule:
    """One entry: its function (with its route) and the module's bytes."""

    spec: FunctionSpec
    wasm: bytes
    source: Path
    # The source is WebAssembly text, compiled here: `wasm` is not the file's bytes.
    from_text: bool = False


@dataclass(frozen=True)
class ModuleMap:
    modules: tuple[WagiModule, ...]
    # Entries that cannot be served, by their number and module, with the reason.
    problems: dict[str, str]


def load_modules_toml(path: Path, *, warn: Warn | None = None) -> ModuleMap:
    """Every entry of the map; a broken entry goes to `problems`, an unreadable map
    raises `ModuleMapError`."""
    say = warn or log.warning
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModuleMapError(f"{path}: {exc}") from exc
    for key in sorted(set(raw) - _TOP_KEYS):
        if key not in _IGNORED_TOP_KEYS:
            say(f"{path}: unknown key {key!r} ignored")
    entries = raw.get("module", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ModuleMapError(f"{path}: `module` must be a list of [[module]] tables")
    if not entries:
        raise ModuleMapError(f"{path}: no [[module]] entries")
    base = path.resolve().parent
    modules: list[WagiModule] = []
    problems: dict[str, str] = {}
    taken: set[str] = set()
    bytes_of: dict[Path, tuple[bytes, bool]] = {}
    for number, entry in enumerate(entries, 1):
        label = f"module {number} ({entry.get('module', '?')})"
        for key in sorted(set(entry) - ENTRY_KEYS):
            if key not in _IGNORED_KEYS:
                say(f"{path}: {label}: unknown key {key!r} ignored")
        try:
            source = _module_path(entry, base)
            if source not in bytes_of:
                bytes_of[source] = _read_module(source)
            wasm, from_text = bytes_of[source]
            spec = _spec(entry, base, _function_id(source, taken), source, wasm)
        except (ModuleMapError, InvalidModule, ValidationError) as exc:
            problems[label] = _reason(exc)
            continue
        taken.add(spec.id)
        modules.append(WagiModule(spec, wasm, source, from_text=from_text))
    return ModuleMap(tuple(modules), problems)


def state_from_modules_toml(path: Path, compiled_dir: Path, generation: int = 1) -> NodeState:
    """The node state serving a module map; modules given as text are compiled into
    `compiled_dir` (the node's data), broken entries logged and left out."""
    loaded = load_modules_toml(path)
    for label, reason in loaded.problems.items():
        log.error("skipping %s: %s", label, reason)
    functions = [_materialized(m, compiled_dir) for m in loaded.modules]
    return NodeState(generation=generation, functions=tuple(functions),
                     unavailable=dict(loaded.problems))


def wagi_route(route: str) -> str:
    """WAGI's route (`/x` exact, `/x/...` the prefix and below) as a route path."""
    if not isinstance(route, str) or not route.startswith("/"):
        raise ModuleMapError(f"route {route!r} must start with /")
    if route.endswith("/..."):
        return route[:-3] + "*"
    if "..." in route or "*" in route:
        raise ModuleMapError(f"route {route!r}: only a trailing /... is a wildcard")
    return route


def allow_hosts(entries: Any) -> tuple[tuple[str, ...], bool]:
    """WAGI's `allowed_hosts` (URLs, or `insecure:allow-all`) as an http_fetch
    allowlist, and whether it names a loopback or private address, which a
    function reaches only with `allow_private` on a node that opened it."""
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ModuleMapError("allowed_hosts must be a list of URLs")
    hosts: list[str] = []
    private = False
    for entry in entries:
        if entry.strip() == ALLOW_ALL:
            hosts.append("*")
            continue
        # WAGI compares hosts only (scheme and port are not checked there either).
        host = (urlsplit(entry).hostname if "://" in entry else entry.strip().lower()) or ""
        if not host:
            raise ModuleMapError(f"allowed_hosts entry {entry!r} names no host")
        hosts.append(host)
        private = private or _is_private(host)
    return tuple(dict.fromkeys(hosts)), private


def _is_private(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False


def _module_path(entry: dict[str, Any], base: Path) -> Path:
    ref = entry.get("module")
    if not isinstance(ref, str) or not ref:
        raise ModuleMapError("`module` is required (a path or a file: URL)")
    if ref.startswith("file:"):
        parts = urlsplit(ref)
        if parts.netloc not in ("", "localhost"):
            raise ModuleMapError(f"{ref}: a file: URL names a file on this machine")
        return _existing(Path(unquote(parts.path)), base, "module")
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", ref) and not Path(ref).exists():
        scheme = ref.split(":", 1)[0]
        raise ModuleMapError(
            f"{ref}: {scheme}: references are not served here; name a .wasm or .wat file"
        )
    return _existing(Path(ref), base, "module")


def _existing(path: Path, base: Path, what: str) -> Path:
    """`path` as given when absolute; else beside the map, else from the current
    directory (WAGI's rule)."""
    for candidate in ([path] if path.is_absolute() else [base / path, Path.cwd() / path]):
        if candidate.exists():
            return candidate.resolve()
    raise ModuleMapError(f"{what} {path} does not exist")


def _read_module(path: Path) -> tuple[bytes, bool]:
    """The module's binary, and whether it was given as text."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModuleMapError(f"cannot read {path}: {exc}") from exc
    if data[:4] == b"\0asm":
        return data, False
    if path.suffix.lower() == ".wat" or data.lstrip()[:1] in (b"(", b";"):
        try:
            return wat_to_wasm(data.decode("utf-8")), True
        except UnicodeDecodeError as exc:
            raise ModuleMapError(f"{path}: WebAssembly text must be UTF-8") from exc
    raise ModuleMapError(f"{path} is neither a WebAssembly module nor WebAssembly text")


def _function_id(source: Path, taken: set[str]) -> str:
    stem = _NOT_ID.sub("-", source.stem).strip("-._")[:100] or "module"
    candidate, n = stem, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def _spec(entry: dict[str, Any], base: Path, function_id: str, source: Path,
          wasm: bytes) -> FunctionSpec:
    digest = hashlib.sha256(wasm).hexdigest()
    fields: dict[str, Any] = {
        "id": function_id,
        "name": function_id,
        "version": f"0.0.0+wagi.{digest[:12]}",  # the CP takes semantic versions
        "abi": "wagi",
        "artifact": str(source),
        "sha256": digest,
        "entrypoint": entry.get("entrypoint", "_start"),
        "routes": (RouteSpec(path=wagi_route(entry.get("route", ""))),),
        **MAP_LIMITS,
    }
    if "argv" in entry:
        fields["argv"] = entry["argv"]
    if "environment" in entry:
        env = entry["environment"]
        if not isinstance(env, dict):
            raise ModuleMapError("environment must be a table of NAME = value")
        fields["env"] = {str(k): v if isinstance(v, str) else str(v) for k, v in env.items()}
    if "volumes" in entry:
        fields["volumes"] = _volumes(entry["volumes"], base)
    if "allowed_hosts" in entry:
        hosts, private = allow_hosts(entry["allowed_hosts"])
        fields["http_fetch"] = {"allow_hosts": hosts, "allow_private": private}
    if "http_max_concurrency" in entry:
        fields["http_max_concurrency"] = entry["http_max_concurrency"]
    return FunctionSpec.model_validate(fields)


def _volumes(volumes: Any, base: Path) -> dict[str, str]:
    if not isinstance(volumes, dict):
        raise ModuleMapError("volumes must be a table of \"/guest/path\" = \"host dir\"")
    out: dict[str, str] = {}
    for guest, host in volumes.items():
        if not guest.startswith("/") or not isinstance(host, str):
            raise ModuleMapError(f"volume {guest!r}: an absolute guest path = a host directory")
        found = _existing(Path(host), base, f"volume {guest} directory")
        if not found.is_dir():
            raise ModuleMapError(f"volume {guest}: {found} is not a directory")
        out[guest] = str(found)
    return out


def _materialized(module: WagiModule, compiled_dir: Path) -> FunctionSpec:
    """The spec with an artifact the runtime can read: the file itself, or for text
    the binary written beside the node's data under its digest."""
    spec = module.spec
    if not module.from_text:
        return spec
    target = compiled_dir / f"{spec.sha256}.wasm"
    if not target.exists():
        compiled_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(target, [module.wasm])
    return spec.model_copy(update={"artifact": str(target)})


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}"
                         for e in exc.errors())
    return str(exc)
