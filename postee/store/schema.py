"""The schema and its migrations, versioned with `PRAGMA user_version`.

Migration *n* (0-based index in `MIGRATIONS`) brings a database from version *n* to *n + 1*; a new
file is at version 0, so it runs them all. Each step runs in its own transaction together with the
version bump, so a crash half-way leaves the file at a consistent version that the next start
continues from. To change the schema, append a function: never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

Migration = Callable[[sqlite3.Connection], None]

_V1 = """
CREATE TABLE dedup (
    route   TEXT NOT NULL,
    key     TEXT NOT NULL,
    expires REAL,              -- epoch seconds, NULL = never expires (no unique-message-timeout)
    created REAL NOT NULL,     -- epoch seconds of the (re)recording: eviction order
    PRIMARY KEY (route, key)
) WITHOUT ROWID;
CREATE INDEX dedup_by_created ON dedup (created);
CREATE INDEX dedup_by_expires ON dedup (expires) WHERE expires IS NOT NULL;

CREATE TABLE aggregation (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused, so order is insertion order
    route  TEXT NOT NULL,
    action TEXT NOT NULL,
    item   TEXT NOT NULL,                      -- JSON
    ts     REAL NOT NULL
);
CREATE INDEX aggregation_by_queue ON aggregation (route, action, id);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE processed (
    event_id TEXT PRIMARY KEY,
    ts       REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX processed_by_ts ON processed (ts);

CREATE TABLE outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    headers TEXT NOT NULL,                     -- JSON object
    ts      REAL NOT NULL
);
"""


def _create_v1(conn: sqlite3.Connection) -> None:
    # No `;` inside the DDL's comments: the script is split on it (executescript would COMMIT).
    for statement in _V1.split(";"):
        if statement.strip():
            conn.execute(statement)


MIGRATIONS: tuple[Migration, ...] = (_create_v1,)
"""The schema history; `len(MIGRATIONS)` is the current version."""

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The file was written by a newer version of the program than this one."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(f"schema version {found} is newer than the supported {supported}")
        self.found = found
        self.supported = supported


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to `len(migrations)`; return the version found before.

    The connection must be in autocommit mode (`isolation_level=None`): transactions are explicit.
    """
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > len(migrations):
        raise SchemaTooNew(found, len(migrations))
    for version in range(found, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            if conn.execute("PRAGMA user_version").fetchone()[0] != version:
                conn.execute("ROLLBACK")
                continue
            migrations[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return found
