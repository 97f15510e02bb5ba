from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postee.store import SqliteStore, open_store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "webhooks.db"


@pytest.fixture(params=["file", "in-loop"])
async def store(request: pytest.FixtureRequest, db_path: Path) -> AsyncIterator[SqliteStore]:
    """Every test of the store contract runs on both stores: a file with its worker thread (the daemon's),
    and an in-memory database on the event loop (the deterministic one for simulation)."""
    if request.param == "file":
        async with open_store(db_path) as store:
            yield store
    else:
        async with open_store(":memory:", in_loop=True) as store:
            yield store


@pytest.fixture
async def file_store(db_path: Path) -> AsyncIterator[SqliteStore]:
    """The daemon's store only: for what a file and its worker thread do (threads, WAL, file size)."""
    async with open_store(db_path) as store:
        yield store
