"""Build a real pipeline (Rego pool in threads, SQLite store in tmp_path) without the web layer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import yaml

from postee.config import parse_config
from postee.pipeline.build import Pipeline, build_pipeline
from postee.rego.library import TemplateLibrary
from postee.rego.pool import open_rego_pool
from postee.store.sqlite import open_store


class FakeWallClock:
    """A settable wall clock for dedup expiry (the store compares against the time it is given)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running_pipeline(tmp_path: Path, cfg_text: str, *, db: str = "db.sqlite", workers: int = 2,
                           **options) -> AsyncIterator[Pipeline]:
    """`options` go to `build_pipeline`; `workers`: the Rego pool's (threads)."""
    config, problems = parse_config(yaml.safe_load(cfg_text), environ={})
    assert not [p for p in problems if p.severity.value == "error"], problems
    async with open_store(tmp_path / db) as store, \
            open_rego_pool("regorus", isolation="thread", workers=workers) as pool:
        pipeline = await build_pipeline(config, pool=pool, store=store, library=TemplateLibrary.load(), **options)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.supervisor.run)
            try:
                yield pipeline
            finally:
                with trio.fail_after(20):
                    await pipeline.supervisor.stop(5)
