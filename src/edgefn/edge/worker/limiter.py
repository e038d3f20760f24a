"""Connections per client address, counted across the worker processes of a node.

Each worker owns one row of a shared array of counters, indexed by a keyed hash
of the address; a worker writes only its row and reads the sum of all rows, so
no lock is taken and a worker that dies takes its counts with it (its
replacement clears the row). Two addresses sharing a bucket share its limit: with
16,384 buckets and a secret key, a client cannot aim at someone else's.
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import os
from typing import Any

BUCKETS = 16384


def shared_counts(workers: int) -> Any:
    """The array the main process creates and hands to every worker."""
    return multiprocessing.RawArray(ctypes.c_int32, workers * BUCKETS)


def new_key() -> bytes:
    return os.urandom(16)


class ClientLimiter:
    """At most `limit` open connections per client address on the node."""

    def __init__(self, counts: Any, key: bytes, worker: int, workers: int, limit: int) -> None:
        self._counts = counts
        self._key = key
        self._row = worker * BUCKETS
        self._rows = [w * BUCKETS for w in range(workers)]
        self.limit = limit
        for i in range(self._row, self._row + BUCKETS):
            counts[i] = 0

    def _bucket(self, address: str) -> int:
        digest = hashlib.blake2b(address.encode(), key=self._key, digest_size=4).digest()
        return int.from_bytes(digest, "little") % BUCKETS

    def acquire(self, address: str) -> int | None:
        """The bucket to release later, or None when the client is at its limit."""
        bucket = self._bucket(address)
        counts = self._counts
        if sum(counts[row + bucket] for row in self._rows) >= self.limit:
            return None
        counts[self._row + bucket] += 1
        return bucket

    def release(self, bucket: int) -> None:
        self._counts[self._row + bucket] -= 1
