"""Settings of an edge node, from flags and `EDGEFN_*` environment variables."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgefn.contract import ResourceCaps


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFN_", extra="ignore")

    node_id: str = Field(default_factory=socket.gethostname)
    pop_id: str = "local"
    labels: dict[str, str] = Field(default_factory=dict)

    host: str = "127.0.0.1"
    edge_port: int = Field(8000, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9090, ge=0, le=65535)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64)
    # Request threads per worker, at most: started when a request finds none idle, ended
    # after 30 s idle (two are kept). Functions that may wait in a host call (http_fetch,
    # KV, secrets) hold one each while they wait; functions that cannot block run on the
    # event loop instead, once they have shown they are short (edge/worker/dispatch.py).
    threads: int = Field(128, ge=1, le=1024)
    # Run the calls of functions that cannot block on the worker's event loop; false:
    # every call goes to a request thread.
    inline: bool = True
    # Functions that may wait in a host call run as suspended guests in green tasks on
    # the worker's event loop (wasmtime; edge/green.py), not one request thread each;
    # false: each holds a request thread while it waits.
    suspend_waiting: bool = True
    # A function runs on the loop only while its calls stay under this much CPU (and
    # never time out); one call over it sends the function back to the threads.
    inline_budget_ms: float = Field(2.0, gt=0, le=1000)
    # Requests one function may have running in a worker at once; beyond it a request
    # gets 503 at once, so a slow or hostile function cannot hold every thread while
    # others wait. None: no limit (a node serving one busy function would otherwise
    # refuse its own traffic at peaks; set it on nodes shared by many tenants).
    max_inflight_per_function: int | None = Field(None, ge=1)
    # Threads per worker for functions that often time out or burn CPU, paced to a
    # tenth of a core (edge/worker/fairness.py); 0: they run on the request threads like any other.
    penalty_threads: int = Field(1, ge=0, le=64)
    # Node-wide quotas of a project that the control plane did not set (seed 4.4.2).
    quota_max_concurrency: int = Field(100, ge=0)
    quota_invocations_per_minute: int = Field(10_000, ge=0)
    quota_cpu_seconds_per_day: float = Field(3600.0, ge=0, allow_inf_nan=False)
    # Redis that counts quotas across nodes; empty: the KV's Redis if it has one,
    # else each node counts alone.
    quota_redis_url: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Hostile clients (docs/security.md): a request's head must arrive within
    # header_timeout_s of its first byte (of the connection, for a new one), its body
    # within body_timeout_s of the head, and a kept-alive connection may stay idle
    # keepalive_timeout_s; past them, 408 or the connection closed.
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    body_timeout_s: float = Field(30.0, gt=0, le=3600)
    keepalive_timeout_s: float = Field(5.0, gt=0, le=3600)
    # Open connections one client address may hold on the node; 0: no limit.
    max_connections_per_client: int = Field(64, ge=0)
    # Complete requests a worker holds for its threads; past it, 503 at once.
    max_pending_requests: int = Field(1024, ge=1)

    data_dir: Path = Path(".edgefn/edge")
    functions_dir: Path | None = None
    # A WAGI module map served as it is (edge/wagi_map.py); not with functions_dir.
    modules_toml: Path | None = None
    engine: str = "wasmtime"
    # The key sealing compiled code in {data_dir}/compiled; None: {data_dir}/compile.key.
    compile_key_file: Path | None = None
    # Where sealed compiled code is kept; None: {data_dir}/compiled. Nodes of one host
    # given the same directory and the same compile_key_file compile each module
    # once between them (docs/performance.md, Deploy propagation).
    compile_cache_dir: Path | None = None
    # The Python ticker's tick, used only where the native deadline thread was not
    # built (sandbox/epoch_timer.py).
    epoch_tick_ms: float = Field(1.0, gt=0, le=100)
    # Cranelift's optimisation level; part of the engine tag, so a node set apart
    # from the control plane's default ("speed") compiles every module itself.
    wasmtime_opt_level: Literal["none", "speed", "speed_and_size"] = "speed"

    # Per worker process: idle instances and compiled modules beyond this are evicted.
    memory_budget_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024)
    max_request_body_bytes: int = Field(8 * 1024 * 1024, ge=0)
    cache_max_files: int = Field(1000, ge=1)
    cache_max_bytes: int = Field(10 * 1024**3, ge=1024)
    # A version's data archive (docs/wagi.md, Volumes): the most it may download, and
    # unpack to (all files together, and how many); the control plane's defaults.
    max_data_bytes: int = Field(32 * 1024 * 1024, ge=1)
    max_data_unpacked_bytes: int = Field(128 * 1024 * 1024, ge=1)
    max_data_files: int = Field(5000, ge=1)
    kv_url: str = ""
    # Non-public networks (loopback, private, link-local, this node's own addresses) that
    # functions asking for them (http_fetch.allow_private) may reach; none by default.
    # The node's own ports are refused even inside them (docs/security.md, Egress).
    allow_private_egress: tuple[IPvAnyNetwork, ...] = ()
    # The most a function may ask for on this node; one over them is not loaded.
    caps: ResourceCaps = ResourceCaps()
    log_file: Path | None = None
    # The JSON log file is rotated past log_max_bytes (0: never), keeping log_backups
    # old files (file.1 ... file.N); log_sample_success is the share of successful
    # invocations' lines written (errors are always written).
    log_max_bytes: int = Field(100 * 1024 * 1024, ge=0)
    log_backups: int = Field(5, ge=0, le=1000)
    log_sample_success: float = Field(1.0, ge=0, le=1)
    # OTLP/HTTP collector (e.g. http://collector:4318); empty: no spans are exported.
    otlp_endpoint: str = ""
    state_poll_s: float = Field(0.01, gt=0, le=10)

    cp_url: str = ""
    grpc_url: str = ""
    # How the control stream reaches the CP: gRPC on grpc_url, or a WebSocket on
    # cp_url where HTTP/2 to the CP is blocked (docs/operations.md, WebSocket transport).
    transport: Literal["grpc", "websocket"] = "grpc"
    node_token: SecretStr | None = None
    # Mutual TLS with the control plane: the node's client certificate and key (the
    # agent renews them in place, so they must be writable), and the CA it trusts the
    # CP's gRPC and HTTPS ports with (default: the system's).
    node_cert: Path | None = None
    node_key: Path | None = None
    cp_ca_file: Path | None = None
    heartbeat_interval_s: float = Field(30.0, gt=0)
    # A node without a control plane: `{function_id: {name: value}}`, mode 0600,
    # where `secret_get` finds the secrets functions list (docs/edge.md).
    secrets_file: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> EdgeSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key")
        if (self.node_cert is None) != (self.node_key is None):
            raise ValueError("a client certificate needs both node_cert and node_key")
        return self

    @model_validator(mode="after")
    def _one_source(self) -> EdgeSettings:
        if self.functions_dir is not None and self.modules_toml is not None:
            raise ValueError("serve functions_dir or modules_toml, not both")
        return self

    @model_validator(mode="after")
    def _transport_url(self) -> EdgeSettings:
        if self.transport == "websocket" and not self.cp_url:
            raise ValueError("the websocket transport connects to cp_url: set it")
        return self

    @model_validator(mode="after")
    def _otlp_url(self) -> EdgeSettings:
        if self.otlp_endpoint and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ValueError("otlp_endpoint is an http:// or https:// URL (OTLP/HTTP, port 4318)")
        return self

    @property
    def inflight_limit(self) -> int:
        # A worker runs at most `threads` requests at once on its threads: that many
        # never refuses. It is also what one function may hold in green tasks (each with
        # a live instance and its memory), so that a tenant's share of a worker does
        # not grow with suspension; an operator raises it on purpose.
        return self.max_inflight_per_function or self.threads

    @property
    def resolved_quota_redis_url(self) -> str:
        if self.quota_redis_url:
            return self.quota_redis_url
        return self.kv_url if self.kv_url.startswith(("redis://", "rediss://")) else ""

    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.json"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def resolved_kv_url(self) -> str:
        return self.kv_url or f"sqlite:///{(self.data_dir / 'kv.sqlite3').resolve()}"
