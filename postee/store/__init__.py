"""Durable state of a Postee node in one SQLite file.

Accepted events until they are finished (with each action's outcome), dedup keys with expiry (per
route), aggregation queues, action counters, the `/reload` API key, processed event ids, the runner
outbox and small settings; maintenance expires and evicts. All
SQLite work runs in a worker thread, one at a time per store (see `postee.store.sqlite`).
`Store` is the protocol the pipeline and the roles are written against (`postee.store.protocol`);
`SqliteStore` is the embedded implementation.

    async with open_store(db_path_from_env()) as store:
        if not await store.dedup_seen(route, key, ttl_seconds=3600, now=time.time()):
            ...
"""

from postee.store.errors import StoreClosed, StoreCorrupt, StoreError
from postee.store.maintenance import DEFAULT_VERIFY_INTERVAL, serve_maintenance
from postee.store.paths import DEFAULT_DB_PATH, PATH_ENV_VAR, db_path_from_env
from postee.store.protocol import Store
from postee.store.records import (
    AcceptedEvent,
    MaintenanceReport,
    OutboxItem,
    OutboxMessage,
    Outcome,
    PendingQueue,
    UnfinishedEvent,
)
from postee.store.schema import MIGRATIONS, SCHEMA_VERSION
from postee.store.sqlite import SqliteStore, open_store

__all__ = [
    "AcceptedEvent",
    "DEFAULT_DB_PATH",
    "DEFAULT_VERIFY_INTERVAL",
    "MIGRATIONS",
    "PATH_ENV_VAR",
    "SCHEMA_VERSION",
    "MaintenanceReport",
    "Outcome",
    "OutboxItem",
    "OutboxMessage",
    "PendingQueue",
    "SqliteStore",
    "Store",
    "StoreClosed",
    "StoreCorrupt",
    "StoreError",
    "UnfinishedEvent",
    "db_path_from_env",
    "open_store",
    "serve_maintenance",
]
