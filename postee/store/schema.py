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


_V2 = """
CREATE TABLE intake (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order: unfinished events are replayed in it
    event_id    TEXT NOT NULL UNIQUE,
    source      TEXT NOT NULL,
    route       TEXT,                               -- the one route of a tenant event, NULL for every route
    body        TEXT NOT NULL,                      -- the event's JSON text as received
    received_at REAL NOT NULL
);

CREATE TABLE outcomes (
    event_id TEXT NOT NULL,
    route    TEXT NOT NULL,
    action   TEXT NOT NULL,
    status   TEXT NOT NULL,                         -- sent, failed, or queued (for aggregation)
    PRIMARY KEY (event_id, route, action)
) WITHOUT ROWID;

ALTER TABLE dedup ADD COLUMN event_id TEXT;           -- the event that recorded the key
ALTER TABLE aggregation ADD COLUMN taken_by TEXT;     -- set while a taken batch is being sent
CREATE INDEX aggregation_by_taker ON aggregation (taken_by) WHERE taken_by IS NOT NULL
"""


def _durable_intake_v2(conn: sqlite3.Connection) -> None:
    """Accepted events until finished, action outcomes, and what a replay needs to recognise itself."""
    for statement in _V2.split(";"):
        if statement.strip():
            conn.execute(statement)


def _continuations_v3(conn: sqlite3.Connection) -> None:
    """An accepted event handed over by another side keeps the step it continues at (issue #16)."""
    conn.execute("ALTER TABLE intake ADD COLUMN continuation TEXT")  # JSON; NULL for a new event
    # A controller keeps each runner's waiting steps in the outbox, under a subject per runner.
    conn.execute("CREATE INDEX outbox_by_subject ON outbox (subject, id)")


MIGRATIONS: tuple[Migration, ...] = (_create_v1, _durable_intake_v2, _continuations_v3)
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
