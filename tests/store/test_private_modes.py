"""The store holds the API key: its file, directory, lock and WAL files are private whatever the umask."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from postee.store import open_store
from postee.store.owner import own_store


def mode(path: Path) -> int:
    """The permission bits of `path` (FileNotFoundError when it does not exist)."""
    return stat.S_IMODE(path.stat().st_mode)


def open_lock_file(path: Path) -> None:
    """A lock file left behind by an older version, world-writable."""
    path.touch()
    os.chmod(path, 0o666)


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """A permissive process umask for the test (restored after): modes must not depend on it."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


async def test_a_new_store_and_its_directory_are_private(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "state" / "db" / "webhooks.db"
    with own_store(path):
        async with open_store(path) as store:
            await store.kv_set("x", "y")
            assert mode(path.parent) == 0o700
            assert mode(path) == 0o600
            for suffix in ("-wal", "-shm", ".lock"):
                assert mode(Path(f"{path}{suffix}")) == 0o600, suffix


async def test_an_existing_world_readable_store_is_made_private(tmp_path: Path, umask: int) -> None:
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "webhooks.db"
    async with open_store(path) as store:
        await store.kv_set("x", "y")
    os.chmod(path, 0o644)
    lock = Path(f"{path}.lock")
    open_lock_file(lock)
    with own_store(path):
        async with open_store(path) as store:
            assert await store.kv_get("x") == "y"
            assert mode(path) == 0o600
            assert mode(Path(f"{path}-wal")) == 0o600
            assert mode(lock) == 0o600
    assert mode(tmp_path) == 0o755  # a directory the store did not create is left as it is
