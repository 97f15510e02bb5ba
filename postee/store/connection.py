"""Opening the database file: directory, connection, pragmas, schema, and errors that name the path.

Runs in a worker thread (called from `SqliteStore.open`). Every failure becomes a `StoreError` naming the
file and `PATH_TO_DB`, because the first thing an operator whose daemon will not start needs to know
is which path it tried and how to change it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from postee.store.errors import StoreCorrupt, StoreError
from postee.store.paths import DEFAULT_DB_PATH, PATH_ENV_VAR
from postee.store.private import make_private, make_private_dirs, narrow_side_files
from postee.store.schema import MIGRATIONS, Migration, SchemaTooNew, migrate

BUSY_TIMEOUT_MS = 5_000
"""How long a statement waits for another connection's write lock (e.g. `postee apikey` run while
the daemon writes) before failing with "database is locked"."""

WAL_AUTOCHECKPOINT_PAGES = 10_000
"""WAL pages (of 4 KB) after which a commit checkpoints by itself: a safety net only. A running node
checkpoints from a second connection, off the write path (`postee.store.checkpointer`)."""

JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
"""Bytes the WAL file is truncated to after a checkpoint, so one big transaction (a VACUUM) does not
leave a large `-wal` file behind for good."""

MEMORY = ":memory:"

_HINT = f"the path comes from {PATH_ENV_VAR} (default {DEFAULT_DB_PATH}); set it to a writable location"

# SQLite primary result codes (sqlite3.h) that mean "this file is not a database we can read".
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26


def is_corruption(exc: sqlite3.Error) -> bool:
    """Whether an SQLite error says the file itself is bad (as opposed to locked, full, ...)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def corrupt_error(path: str | os.PathLike[str], exc: sqlite3.Error) -> StoreCorrupt:
    return StoreCorrupt(
        f"the database {os.fspath(path)!r} is not a usable SQLite database ({exc}); if it is an old Go "
        f"Postee database (BoltDB) or damaged, move it away or point {PATH_ENV_VAR} at another file"
    )


def open_connection(path: str | os.PathLike[str], migrations: Sequence[Migration] = MIGRATIONS) -> sqlite3.Connection:
    """Create the parent directory, open the file, set the pragmas and bring the schema up to date.

    The directory is created 0700 and the file is made 0600 (`postee.store.private`): it holds the API key.

    The connection is in autocommit mode (`isolation_level=None`): each single statement is its own
    short transaction and multi-statement operations open an explicit `BEGIN IMMEDIATE`, so no
    implicit transaction stays open between calls holding the WAL snapshot. `check_same_thread` is
    off because calls run in whichever worker thread Trio hands out; the store's limiter guarantees
    one thread at a time.
    """
    name = os.fspath(path)
    if name != MEMORY:
        _prepare_private(name)
    try:
        conn = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the database {name!r} ({exc}); {_HINT}") from exc
    try:
        _configure(conn)
        migrate(conn, migrations)
    except SchemaTooNew as exc:
        conn.close()
        raise StoreError(f"the database {name!r} was written by a newer postee ({exc})") from exc
    except sqlite3.Error as exc:
        conn.close()
        if is_corruption(exc):
            raise corrupt_error(name, exc) from exc
        raise StoreError(f"cannot open the database {name!r} ({exc}); {_HINT}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare_private(name: str) -> None:
    """The directory (0700 when created) and an existing or empty database file, 0600, before SQLite
    opens it: SQLite would create the file 0644 minus the umask, and its `-wal`/`-shm` files copy
    the database's mode (see `postee.store.private`)."""
    parent = Path(name).parent
    try:
        make_private_dirs(parent)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory {str(parent)!r} for the database {name!r} "
            f"({exc.strerror or exc}); {_HINT}"
        ) from exc
    try:
        make_private(name)
    except OSError as exc:
        raise StoreError(f"cannot open the database {name!r} ({exc.strerror or exc}); {_HINT}") from exc
    narrow_side_files(name)


def _configure(conn: sqlite3.Connection) -> None:
    # busy_timeout first: switching to WAL needs a lock another process may hold.
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    # The first statement that reads the header: a non-SQLite file fails here with SQLITE_NOTADB.
    conn.execute("PRAGMA journal_mode = WAL").fetchone()
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT:d}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES:d}")
    # Reading the schema catches a damaged first page before the first real operation does.
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
