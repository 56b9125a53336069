"""The generic cache: `Cache` (get/set/delete/exists/get_or_set with leases) and its metrics.

See `shared.cache.client` for the lease protocol (docs/decisions/0016-leases.md).
"""

from __future__ import annotations

from shared.cache.client import (
    PURGE_IF_OLDER,
    Cache,
    CacheUnavailableError,
    Lookup,
    encode,
    unversioned,
    versioned,
)
from shared.cache.metrics import CacheMetrics

__all__ = [
    "PURGE_IF_OLDER",
    "Cache",
    "CacheMetrics",
    "CacheUnavailableError",
    "Lookup",
    "encode",
    "unversioned",
    "versioned",
]
