"""`create_kv_store`: the backend a node's `kv_url` names."""

from __future__ import annotations

from edgefn.edge.kv.base import KvStore


def create_kv_store(url: str) -> KvStore:
    """`sqlite:///relative/path`, `sqlite:////absolute/path`, `redis://` or `rediss://`."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise ValueError("sqlite kv url names no file")
        from edgefn.edge.kv.sqlite import SqliteKvStore

        return SqliteKvStore(path)
    if url.startswith(("redis://", "rediss://", "unix://")):
        # Imported here so a node on SQLite never loads redis-py.
        from edgefn.edge.kv.redis import RedisKvStore

        return RedisKvStore(url)
    raise ValueError(f"unsupported kv url {url.split('://', 1)[0]!r}: use sqlite:/// or redis://")
