"""Settings of `edgefn cp serve`: one object, read from flags and `EDGEFN_*` variables,
validated before anything starts."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgefn.contract import ResourceCaps


def check_edge_url(url: str) -> None:
    """An edge URL is a scheme, a host and maybe a port: nodes route by the request's
    host and whole path, so a path on it would not reach the function it names."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"edge_url {url!r} is not an http:// or https:// URL with a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"edge_url {url!r} has more than a scheme, a host and a port")
    try:
        _ = parts.port  # raises on a port out of range or not a number
    except ValueError as exc:
        raise ValueError(f"edge_url {url!r}: {exc}") from exc


class CPSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFN_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    data_dir: Path = Path(".edgefn")
    # None means a SQLite file in data_dir.
    database_url: str | None = None
    # The URL clients and nodes reach this CP at; signed artifact URLs are built on it.
    public_url: str | None = None
    # The URL users reach the edge nodes at (`https://edge.example.com`, a load
    # balancer or anycast name in front of them): a function's routes on it are its
    # live URLs (`urls` of GET /functions/{id}). None: the CP does not know it.
    edge_url: str | None = None
    bootstrap_token: SecretStr | None = None
    # Signs JWTs and local artifact URLs. Several CP replicas must share it, so it
    # is only generated (and kept in data_dir) when none is given.
    secret_key: SecretStr | None = None
    auto_migrate: bool = True

    artifact_store: Literal["local", "s3"] = "local"
    artifact_dir: Path | None = None
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_create_bucket: bool = False

    max_artifact_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # A version's data archive (docs/wagi.md, Volumes): its size as uploaded, and what
    # it may unpack to (all files together, and how many). Nodes unpack it within
    # their own limits, the same by default.
    max_data_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_data_unpacked_bytes: int = Field(default=128 * 1024 * 1024, gt=0)
    max_data_files: int = Field(default=5000, gt=0)
    # Every other request body (JSON): over it is 413 before the body is read, or at
    # the chunk that passes it, so a huge body costs no more than this in memory.
    # Above what clients send: a function with a full env (256 values of 16 KiB)
    # is about 4 MiB, a heartbeat of a node running 10,000 functions about 2 MiB.
    max_json_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    upload_url_ttl_s: int = Field(default=900, gt=0)
    download_url_ttl_s: int = Field(default=300, gt=0)
    jwt_ttl_s: int = Field(default=3600, gt=0)
    heartbeat_interval_s: float = Field(default=30.0, gt=0)
    # The most a function of this cluster may ask for (`--cap-*`, or EDGEFN_CAPS as a
    # JSON object); POST and PATCH /functions over them are 400.
    caps: ResourceCaps = ResourceCaps()

    # The EdgeControl gRPC server, on `host`; 0 picks a free port, None runs none
    # (an API-only replica, or tests of the REST API alone).
    grpc_port: int | None = Field(default=50051, ge=0, le=65535)
    # How often each node stream looks at the outbox without being woken: the
    # fallback for instructions committed by another CP replica.
    stream_recheck_s: float = Field(default=1.0, gt=0)

    # TLS of the API port and the gRPC port (PEM files); without them both are plain.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Mutual TLS with the nodes (docs/operations.md, Certificates and TLS): the gRPC
    # port then requires a client certificate of the node CA, and node-facing HTTP
    # (heartbeats, fresh artifact URLs, certificate renewal) moves to `node_port`,
    # an HTTPS listener that requires one too; None there runs no such listener.
    node_mtls: bool = False
    node_port: int | None = Field(default=8443, ge=0, le=65535)
    # The operator's CA for node certificates; default: one made in data_dir/pki.
    node_ca_cert: Path | None = None
    node_ca_key: Path | None = None
    node_cert_ttl_s: int = Field(default=30 * 86400, ge=60)
    # Names the node-facing ports answer to, besides `host`, the public URL's host,
    # localhost and the loopback addresses, when the CP issues its own server
    # certificate (no tls_cert).
    node_tls_names: list[str] = Field(default_factory=list)
    # Several replicas on one PostgreSQL (docs/operations.md, Several control planes).
    # This replica's name in the leases table and in its wake-ups; None: host, pid
    # and a random suffix, new at every start.
    replica_id: str | None = Field(default=None, min_length=1, max_length=200)
    # How long the maintenance lease lasts unrenewed (renewed every third of it):
    # the longest that periodic duties pause when their replica dies.
    lease_ttl_s: float = Field(default=15.0, gt=0)
    # How often the lease holder judges gated rollouts' bake windows.
    rollout_check_s: float = Field(default=5.0, gt=0)
    # How long the per-version series of the console's charts are kept.
    series_retention_s: float = Field(default=86_400.0, gt=0)
    # Wakes the node streams of other replicas after a commit through Redis pub/sub
    # on this URL; None: PostgreSQL LISTEN/NOTIFY on PostgreSQL, nothing on SQLite
    # (one replica only).
    wake_redis_url: str | None = None

    # Secrets of projects (docs/security.md, Secrets). `builtin` seals them in the
    # database with a key kept outside it: `secrets_key` (base64 of 32 bytes), else
    # the file `secrets_key_file` (default data_dir/secrets.key, created 0600 on
    # first start). `vault` keeps the values in HashiCorp Vault's KV v2 instead.
    secret_backend: Literal["builtin", "vault"] = "builtin"
    secrets_key: SecretStr | None = None
    secrets_key_file: Path | None = None
    vault_url: str | None = None
    vault_token: SecretStr | None = None
    vault_namespace: str | None = None
    vault_mount: str = "secret"
    vault_path_prefix: str = Field(default="edgefn", min_length=1)

    # Builds from source (docs/builds.md). Without `build_redis_url` the jobs go to
    # `build_workers` threads of this process; with it, to a Redis list that
    # `edgefn build-worker` processes (and this process's own threads, if any) take
    # jobs from.
    build_redis_url: str | None = None
    # With Redis: the keys' prefix (clusters sharing one Redis need their own), how
    # long a worker's lease on a job lasts without renewal (a job whose worker died
    # goes to another worker after it), and how many workers may take one job.
    build_queue_prefix: str = Field(default="edgefn:builds", min_length=1)
    build_lease_s: float = Field(default=60.0, ge=1)
    build_max_attempts: int = Field(default=3, ge=1)
    build_workers: int = Field(default=2, ge=0)
    build_timeout_s: float = Field(default=120.0, gt=0)
    max_source_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # Where AssemblyScript builds fetch and audit npm packages; None: npm's default.
    build_npm_registry: str | None = None
    # Parent of each build's scratch directory; None: the system's temporary directory.
    build_scratch_dir: Path | None = None
    # Builds from git (docs/builds.md): the URL schemes a function may link to
    # (`https`; add `http`, `git` or `file` only for repositories you trust), whether
    # a repository host may resolve to a private or loopback address, and how long a
    # fetch may take.
    git_url_schemes: list[Literal["https", "http", "git", "file"]] = ["https"]
    git_allow_private_hosts: bool = False
    git_fetch_timeout_s: float = Field(default=60.0, gt=0)

    # Precompiled artifacts (docs/engines.md): the engines this control plane compiles
    # each version with, for the nodes reporting their tags, comma-separated; "" is
    # off (every node compiles for itself). Engines missing here are skipped.
    precompile_engines: str = Field(default="wasmtime,wasmedge",
                                    pattern=r"^((wasmtime|wasmedge)(,(wasmtime|wasmedge))*)?$")
    # How often the precompiler looks for new engine tags without being woken.
    precompile_poll_s: float = Field(default=5.0, gt=0)

    # OWASP's second argon2id profile; tests lower these to save CPU.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19 * 1024, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)

    # Login throttling: a fixed window per account (the email tried) and per client
    # address; reaching a limit locks that key out for `login_lockout_s` (429).
    login_window_s: float = Field(default=900.0, gt=0)
    login_max_failures_account: int = Field(default=5, ge=1)
    login_max_failures_address: int = Field(default=20, ge=1)
    login_lockout_s: float = Field(default=900.0, gt=0)

    # The audit chain's HMAC key. The database must not hold it: give it here
    # (EDGEFN_AUDIT_KEY) or let the CP generate `data_dir/audit.key` (0600).
    audit_key: SecretStr | None = None
    # Signed checkpoints of the chain's head, kept outside the database so that
    # dropping the newest rows shows; default `data_dir/audit-checkpoints.jsonl`.
    audit_checkpoint_file: Path | None = None
    # A checkpoint after every N committed audit rows (1: after each one).
    audit_checkpoint_every: int = Field(default=1, ge=1)

    # OTLP/HTTP collector of the CP's traces (http://collector:4318); empty: none
    # are recorded or exported (docs/observability.md).
    otlp_endpoint: str = ""

    @model_validator(mode="after")
    def _check(self) -> CPSettings:
        if self.secret_key is not None and len(self.secret_key.get_secret_value()) < 32:
            raise ValueError("secret_key must be at least 32 characters (it signs HS256 JWTs)")
        if self.audit_key is not None and len(self.audit_key.get_secret_value()) < 32:
            raise ValueError("audit_key must be at least 32 characters")
        if self.secret_backend == "vault" and not (self.vault_url and self.vault_token):
            raise ValueError("secret_backend=vault needs vault_url and vault_token")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key")
        if (self.node_ca_cert is None) != (self.node_ca_key is None):
            raise ValueError("an operator's node CA needs both node_ca_cert and node_ca_key")
        if self.artifact_store == "s3" and not self.s3_bucket:
            raise ValueError("artifact_store=s3 needs s3_bucket (EDGEFN_S3_BUCKET)")
        if self.edge_url is not None:
            check_edge_url(self.edge_url)
        if self.otlp_endpoint and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ValueError("otlp_endpoint is an http:// or https:// URL (OTLP/HTTP, port 4318)")
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'controlplane.db').resolve()}"

    def resolved_replica_id(self) -> str:
        if self.replica_id:
            return self.replica_id
        return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"

    def resolved_artifact_dir(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"

    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"

    def resolved_secrets_key_file(self) -> Path:
        return self.secrets_key_file or self.data_dir / "secrets.key"

    def resolved_secret_key(self) -> str:
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return self._key_file("secret.key", create=True)

    def resolved_audit_key(self, *, create: bool = True) -> str:
        """The audit HMAC key; `create=False` (for `edgefn audit verify`) raises
        FileNotFoundError instead of making a key that could verify nothing."""
        if self.audit_key is not None:
            return self.audit_key.get_secret_value()
        return self._key_file("audit.key", create=create)

    def resolved_audit_checkpoint_file(self) -> Path:
        return self.audit_checkpoint_file or self.data_dir / "audit-checkpoints.jsonl"

    def _key_file(self, name: str, *, create: bool) -> str:
        """A random key kept in data_dir, made (mode 0600) on first use."""
        path = self.data_dir / name
        if path.exists() or not create:
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.touch(mode=0o600)
        path.write_text(key)
        return key
