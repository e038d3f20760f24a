"""`edgefn build DIR` (compile a source tree here, or on the control plane with
`--remote`) and `edgefn build-worker` (take build jobs from Redis).

Exit codes of `edgefn build`, stable for scripts:
    0  built (remote: the version exists)
    1  the build failed (compiler error, refused archive, scan, refused module)
    2  usage error
    3  the toolchain is not installed here (local builds)
    4  the control plane refused the request or could not be reached
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgefn.builder import LANGUAGES, BuildLimits, BuildSpec, run_build
from edgefn.builder.archive import pack
from edgefn.builder.queue import RedisQueue
from edgefn.builder.toolchains import driver
from edgefn.builder.worker import WorkerConfig, serve
from edgefn.cli._api import CPClient, CPRequestError, CPUnreachable
from edgefn.cli._output import EXIT_MISSING_TOOL, Status
from edgefn.cli.credentials import cp_options, credentials_path, resolve

EXIT_FAILED = 1
POLL_S = 0.5


def detect_language(root: Path) -> str | None:
    """The language of a source tree, from the files that mark it."""
    if (root / "src" / "lib.rs").is_file() or (root / "src" / "main.rs").is_file():
        return "rust"
    if (root / "assembly" / "index.ts").is_file():
        return "assemblyscript"
    if any(root.glob("*.c")):
        return "c"
    if any(root.glob("*.wat")):
        return "wat"
    return None


def _finish(result: dict[str, Any], as_json: bool, code: int) -> None:
    if as_json:
        click.echo(json.dumps(result))
    raise SystemExit(code)


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--lang", "language", type=click.Choice(LANGUAGES), help="default: from the files")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="where the module goes (local builds) [default: the `artifact` PATH's "
    "function.json names, else PATH/build/function.wasm]",
)
@click.option("--remote", is_flag=True, help="build on the control plane; makes a version")
@click.option("--function", "function", help="--remote: the function's id or name")
@click.option("--version", "version", help="--remote: the version the build creates")
@click.option("--allow-critical", is_flag=True, help="build despite critical advisories")
@click.option("--timeout", "timeout_s", type=float, default=120.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the result")
@cp_options
def build(
    path: Path,
    language: str | None,
    out: Path | None,
    remote: bool,
    function: str | None,
    version: str | None,
    allow_critical: bool,
    timeout_s: float,
    as_json: bool,
    cp_url: str | None,
    token: str | None,
) -> None:
    """Compile the source tree in PATH to a WebAssembly module (C, WAT, Rust or
    AssemblyScript), with the same drivers the control plane's workers use.
    Exit codes: 0 built, 1 build failed, 2 usage, 3 toolchain missing, 4 CP error."""
    language = language or detect_language(path)
    if language is None:
        raise click.UsageError("cannot tell the language of PATH; pass --lang")
    source = pack(path)
    echo = (lambda _t: None) if as_json else (lambda t: click.echo(t, nl=False, err=True))
    if remote:
        if not function or not version:
            raise click.UsageError("--remote needs --function and --version")
        _remote(source, language, function, version, allow_critical, as_json, cp_url, token, echo)
        return
    probe = driver(language).probe()
    if not probe.ok and language != "assemblyscript":
        click.echo(f"{language}: {probe.detail}; install: {probe.install}", err=True)
        _finish({"ok": False, "error": probe.detail}, as_json, EXIT_MISSING_TOOL)
    spec = BuildSpec(
        language=language,
        allow_critical=allow_critical,
        limits=BuildLimits(timeout_s=timeout_s),
        private=[credentials_path().parent],
    )
    result = run_build(spec, source, echo)
    summary: dict[str, Any] = {
        "ok": result.ok,
        "language": language,
        "error": result.error,
        "scan": result.scan,
    }
    if result.wasm is None:
        _finish(summary, as_json, EXIT_FAILED)
        return
    target = out or default_out(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(result.wasm)
    summary |= {"out": str(target), "size": len(result.wasm)}
    if not as_json:
        click.echo(f"wrote {target} ({len(result.wasm)} bytes)")
    _finish(summary, as_json, 0)


def default_out(folder: Path) -> Path:
    """Where a local build writes the module: where the folder's `function.json` says
    it is (its `artifact`, inside the folder), so that `edgefn deploy` finds it;
    else `build/function.wasm`."""
    try:
        artifact = json.loads((folder / "function.json").read_text())["artifact"]
    except (OSError, ValueError, KeyError, TypeError):
        artifact = None
    if isinstance(artifact, str) and artifact:
        target = (folder / artifact).resolve()
        if target.is_relative_to(folder.resolve()) and target.suffix == ".wasm":
            return target
    return folder / "build" / "function.wasm"


def submit_build(api: CPClient, function_id: str, source: bytes, language: str, version: str,
                 *, allow_critical: bool = False) -> dict[str, Any]:
    """Send a source tree to be built into `version` of the function; the build, queued."""
    build: dict[str, Any] = api.call(
        "POST",
        f"/functions/{function_id}/builds",
        data={"language": language, "version": version,
              "allow_critical": str(allow_critical).lower()},
        files={"source": ("source.tar.gz", source, "application/gzip")},
    )
    return build


def follow_build(api: CPClient, build_id: str, *, log: Callable[[str], None] | None = None,
                 quiet: bool = False) -> dict[str, Any]:
    """Wait for a build on the control plane to end and return it (with its `log`).
    Prints each state it passes (`build ID: running`) and hands the log's new text
    to `log`, as it comes; on a terminal, a line with the time so far (`quiet`:
    none of these)."""
    status = Status(f"build {build_id}", enabled=not quiet)
    shown: str | None = None
    sent = 0
    at_line_start = True  # a log line cut short must not be wiped by the status line
    try:
        while True:
            build: dict[str, Any] = api.call("GET", f"/builds/{build_id}")
            text = build.get("log") or ""
            if log is not None and len(text) > sent:
                status.clear()
                log(text[sent:])
                sent = len(text)
                at_line_start = text.endswith("\n")
            if build["state"] in ("succeeded", "failed"):
                return build  # the caller says how it ended
            if build["state"] != shown:
                shown = build["state"]
                if not quiet:
                    status.clear()
                    click.echo(f"build {build_id}: {shown}")
            if at_line_start:
                status.update(build["state"])
            time.sleep(POLL_S)
    finally:
        status.finish()


def _remote(
    source: bytes,
    language: str,
    function: str,
    version: str,
    allow_critical: bool,
    as_json: bool,
    cp_url: str | None,
    token: str | None,
    echo: Any,
) -> None:
    url, token = resolve(cp_url, token)
    try:
        with CPClient(url, token, timeout_s=60) as api:
            fn_id = next(
                (f["id"] for f in api.list_all("/functions") if function in (f["id"], f["name"])),
                None,
            )
            if fn_id is None:
                raise click.UsageError(f"no function {function!r} on {url}")
            b = submit_build(api, fn_id, source, language, version,
                             allow_critical=allow_critical)
            final = follow_build(api, b["id"], log=echo, quiet=as_json)
    except (CPRequestError, CPUnreachable) as exc:
        click.echo(f"Error: {exc.message}", err=True)
        _finish({"ok": False, "error": exc.message}, as_json, exc.exit_code)
        return
    final.pop("log", None)
    ok = final["state"] == "succeeded"
    if not as_json:
        click.echo(
            f"build {final['id']}: {final['state']}"
            + (f", version {version} ({final['sha256']})" if ok else f": {final['error']}")
        )
    _finish({"ok": ok, **final}, as_json, 0 if ok else EXIT_FAILED)


@click.command("build-worker")
@click.option(
    "--redis-url",
    envvar="EDGEFN_BUILD_REDIS_URL",
    required=True,
    help="the queue the control plane puts jobs on [env EDGEFN_BUILD_REDIS_URL]",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--npm-registry",
    envvar="EDGEFN_BUILD_NPM_REGISTRY",
    help="registry for AssemblyScript dependencies and the scan",
)
@click.option(
    "--scratch-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="parent of each build's scratch directory [default: the system's]",
)
@click.option(
    "--queue-prefix",
    envvar="EDGEFN_BUILD_QUEUE_PREFIX",
    default="edgefn:builds",
    show_default=True,
    help="the control plane's build_queue_prefix",
)
@click.option(
    "--lease",
    "lease_s",
    type=click.FloatRange(min=1),
    envvar="EDGEFN_BUILD_LEASE_S",
    default=60.0,
    show_default=True,
    help="seconds a job stays this worker's without renewal (renewed every third)",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    envvar="EDGEFN_BUILD_MAX_ATTEMPTS",
    default=3,
    show_default=True,
    help="workers that may take a job whose worker stopped, before the build fails",
)
def build_worker(
    redis_url: str,
    concurrency: int,
    npm_registry: str | None,
    scratch_dir: Path | None,
    queue_prefix: str,
    lease_s: float,
    max_attempts: int,
) -> None:
    """Take build jobs from Redis and run them until interrupted. The worker needs
    no database or artifact store: sources, logs and modules travel through Redis.
    A job whose worker dies goes to another worker once its lease runs out."""
    jobs = RedisQueue(redis_url, prefix=queue_prefix, lease_s=lease_s, max_attempts=max_attempts)
    config = WorkerConfig(
        npm_registry=npm_registry, private=[credentials_path().parent], scratch_root=scratch_dir
    )
    stop = threading.Event()
    threads = [
        threading.Thread(target=serve, args=(jobs, config, stop), daemon=True)
        for _ in range(concurrency)
    ]
    for t in threads:
        t.start()
    click.echo(f"build worker: {concurrency} slot(s) on {redis_url.split('@')[-1]}", err=True)
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join(timeout=5)
