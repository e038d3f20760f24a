"""Key-value storage behind the `kv_*` host functions: one `KvStore` per node.

`base.KvStore` is the contract; `sqlite.SqliteKvStore` (one file per node) and
`redis.RedisKvStore` (shared across nodes) implement it; `create_kv_store`
picks one from a URL. Policies (sizes, quotas, TTL caps) live in
`edgefn.edge.capabilities.kv`, not here.
"""

from edgefn.edge.kv.base import KvStore
from edgefn.edge.kv.errors import KvError, KvQuotaExceeded, KvUnavailable
from edgefn.edge.kv.factory import create_kv_store

__all__ = ["KvError", "KvQuotaExceeded", "KvStore", "KvUnavailable", "create_kv_store"]
