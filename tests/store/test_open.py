"""Opening: path from PATH_TO_DB, directory creation, pragmas, schema versions, clear errors."""

import sqlite3
from pathlib import Path

import pytest

from postee.store import (
    DEFAULT_DB_PATH,
    MIGRATIONS,
    SCHEMA_VERSION,
    SqliteStore,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    db_path_from_env,
    open_store,
)


def test_db_path_from_env() -> None:
    assert DEFAULT_DB_PATH == "/server/database/webhooks.db"
    assert db_path_from_env({}) == DEFAULT_DB_PATH
    assert db_path_from_env({"PATH_TO_DB": ""}) == DEFAULT_DB_PATH
    assert db_path_from_env({"PATH_TO_DB": "/data/postee.db"}) == "/data/postee.db"


def test_db_path_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH_TO_DB", "/elsewhere/x.db")
    assert db_path_from_env() == "/elsewhere/x.db"


async def test_creates_missing_directories_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "webhooks.db"
    async with open_store(path) as store:
        assert store.path == str(path)
        await store.kv_set("x", "y")
        synchronous = await store._call(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        assert synchronous == 1  # NORMAL (a per-connection setting: only visible from our connection)
    assert path.is_file()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
    finally:
        conn.close()


async def test_open_and_aclose_without_context_manager(db_path: Path) -> None:
    store = await SqliteStore.open(db_path)
    assert await store.dedup_seen("r", "k", 0, now=1.0) is False
    await store.aclose()
    await store.aclose()  # idempotent
    assert store.closed
    with pytest.raises(StoreClosed, match="closed"):
        await store.dedup_seen("r", "k", 0, now=1.0)


async def test_directory_that_cannot_be_created_names_path_and_env_var(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    path = blocker / "database" / "webhooks.db"
    with pytest.raises(StoreError) as info:
        await SqliteStore.open(path)
    message = str(info.value)
    assert str(blocker / "database") in message
    assert str(path) in message
    assert "PATH_TO_DB" in message


async def test_path_that_is_a_directory_names_path_and_env_var(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.db"
    path.mkdir()
    with pytest.raises(StoreError) as info:
        await SqliteStore.open(path)
    assert str(path) in str(info.value)
    assert "PATH_TO_DB" in str(info.value)


async def test_non_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.db"
    path.write_bytes(b"\x00\x00\x00\x00\x00\x00\x00\x00 this is a BoltDB file, honest " * 200)
    with pytest.raises(StoreCorrupt) as info:
        await SqliteStore.open(path)
    assert str(path) in str(info.value)
    assert "not a usable SQLite database" in str(info.value)
    assert "PATH_TO_DB" in str(info.value)


def _smash_schema_page(path: Path) -> None:
    """Keep the 100-byte header (so the file still looks like SQLite), overwrite the schema page."""
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)
    path.write_bytes(bytes(data))


async def test_damaged_sqlite_file_is_a_clear_error(db_path: Path) -> None:
    async with open_store(db_path) as store:
        await store.kv_set("x", "y")
    _smash_schema_page(db_path)
    with pytest.raises(StoreCorrupt) as info:
        await SqliteStore.open(db_path)
    assert str(db_path) in str(info.value)


def _add_notes_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE notes (text TEXT)")


async def test_migration_hook_upgrades_and_newer_files_are_refused(db_path: Path) -> None:
    async with open_store(db_path) as store:
        await store.kv_set("kept", "yes")
    upgraded = (*MIGRATIONS, _add_notes_table)
    async with open_store(db_path, migrations=upgraded) as store:
        assert await store.kv_get("kept") == "yes"
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        conn.execute("INSERT INTO notes VALUES ('the new table exists')")
        conn.commit()
    finally:
        conn.close()
    # Reopening with the upgraded history is a no-op; with the old one it is refused.
    async with open_store(db_path, migrations=upgraded) as store:
        assert await store.kv_get("kept") == "yes"
    with pytest.raises(StoreError, match="newer") as info:
        await SqliteStore.open(db_path)
    assert str(db_path) in str(info.value)
