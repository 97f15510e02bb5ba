from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postee.store import SqliteStore, open_store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "webhooks.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(db_path) as store:
        yield store
