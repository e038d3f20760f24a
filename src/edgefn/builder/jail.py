"""Running one toolchain command for a build: its own working directory, a scrubbed
environment, resource limits, a wall-clock limit, and (where the kernel allows
unprivileged user namespaces) no network and no view of the directories the
caller names as private.

What it gives: the command sees only PATH, HOME, TMPDIR and LANG (no tokens or
keys of the process that started it); rlimits cap CPU seconds, the size of any
file it writes, open files and core dumps; the whole process group is killed at
the deadline; its output is kept up to a cap. Inside a user namespace with its
own network namespace (`unshare --user --net --mount`) it has no interface but
loopback, and every private directory (the control plane's data, the caller's
home) is covered by an empty tmpfs.

What it lacks: it still runs as the same uid outside the namespace and sees the
rest of the file system read-write where that uid may write; there is no seccomp
filter, no cgroup memory limit and no disk quota on the scratch directory (the
file size rlimit bounds each file, not their sum). Steps that must reach a package
registry run with the network, limited to that registry only by configuration.
Run workers in a container or VM of their own for stronger isolation.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgefn.builder.errors import LimitExceeded, ToolchainMissing

_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class JailLimits:
    timeout_s: float = 120.0
    max_file_bytes: int = 64 * 1024 * 1024
    max_log_bytes: int = 256 * 1024
    max_open_files: int = 1024


@dataclass
class Jail:
    """Where and how a build's commands run."""

    scratch: Path
    limits: JailLimits = field(default_factory=JailLimits)
    # Directories the command must not see (covered when namespaces work).
    private: Sequence[Path] = ()
    # Called with each chunk of the commands' output, as it comes.
    on_output: Callable[[str], None] = lambda _text: None
    deadline: float = 0.0
    log_bytes: int = 0

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.limits.timeout_s
        for sub in ("home", "tmp"):
            (self.scratch / sub).mkdir(parents=True, exist_ok=True)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            "PATH": _SYSTEM_PATH,
            "HOME": str(self.scratch / "home"),
            "TMPDIR": str(self.scratch / "tmp"),
            "LANG": "C.UTF-8",
            **(extra or {}),
        }

    def say(self, text: str) -> None:
        self._emit(text if text.endswith("\n") else text + "\n")

    def _emit(self, text: str) -> None:
        room = self.limits.max_log_bytes - self.log_bytes
        if room <= 0:
            return
        if len(text) > room:
            text = text[:room] + "\n[log truncated]\n"
        self.log_bytes += len(text)
        self.on_output(text)

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        network: bool = False,
        env: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """Run `argv`; its exit status and output (stdout and stderr together,
        capped). LimitExceeded when the build's time runs out."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise LimitExceeded(f"the build ran past its time limit of {self.limits.timeout_s:g} s")
        self.say("$ " + " ".join(str(a) for a in argv))
        full = [*_limits_command(self.limits, remaining),
                *_confinement(network, self.private), *argv]
        proc = subprocess.Popen(
            full,
            cwd=cwd or self.scratch,
            env=self.env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        captured: list[str] = []
        reader = threading.Thread(target=self._pump, args=(proc, captured), daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            _kill(proc)
            reader.join(timeout=5)
            raise LimitExceeded(
                f"the build ran past its time limit of {self.limits.timeout_s:g} s"
            ) from None
        finally:
            if proc.poll() is None:
                _kill(proc)
        reader.join(timeout=5)
        # A signal shows as -N, or as 128+N when a shell ran the process that got it.
        if rc in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
            raise LimitExceeded(
                f"a file passed the output limit of {self.limits.max_file_bytes} bytes"
            )
        if rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            raise LimitExceeded("the build used up its CPU time")
        return rc, "".join(captured)

    def _pump(self, proc: subprocess.Popen[bytes], captured: list[str]) -> None:
        assert proc.stdout is not None
        kept = 0
        while chunk := os.read(proc.stdout.fileno(), 4096):
            text = chunk.decode("utf-8", "replace")
            if kept < self.limits.max_log_bytes:
                captured.append(text)
                kept += len(text)
            self._emit(text)


def _limits_command(limits: JailLimits, remaining_s: float) -> list[str]:
    """The command that sets the limits, then runs the rest (util-linux's `prlimit`,
    which execs it). Not a `preexec_fn`: Python code run between fork and exec in
    a process with threads (the control plane's gRPC poller among them) may run
    their at-fork handlers, and a child seen to abort there (SIGABRT, gRPC's
    poller finding its descriptors closed) failed a build that had done nothing."""
    prlimit = shutil.which("prlimit", path=_SYSTEM_PATH)
    if prlimit is None:
        raise ToolchainMissing("the build jail needs prlimit (util-linux) in " + _SYSTEM_PATH)
    cpu = int(remaining_s) + 1
    size, files = limits.max_file_bytes, limits.max_open_files
    return [prlimit, f"--cpu={cpu}:{cpu + 1}", f"--fsize={size}:{size}", "--core=0:0",
            f"--nofile={files}:{files}", "--"]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@functools.cache
def namespaces_work() -> bool:
    """Whether this kernel lets us make a user, network and mount namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        probe = subprocess.run(
            [unshare, "--user", "--map-root-user", "--net", "--mount", "true"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


# Covers each private directory with an empty tmpfs, then runs the command.
_COVER = (
    'for d in "$@"; do [ "$d" = -- ] && { shift; break; }; '
    'mount -t tmpfs -o size=4k,mode=0 none "$d" || exit 125; shift; done; exec "$@"'
)


def _confinement(network: bool, private: Sequence[Path]) -> list[str]:
    if not namespaces_work():
        return []
    flags = ["--user", "--map-root-user", "--mount"] + ([] if network else ["--net"])
    dirs = [p for p in private if p.is_dir()]
    # A directory inside another one is covered with it (and gone once that is).
    hidden = [str(p) for p in dirs if not any(q in p.parents for q in dirs)]
    return ["unshare", *flags, "--", "/bin/sh", "-c", _COVER, "cover", *hidden, "--"]
