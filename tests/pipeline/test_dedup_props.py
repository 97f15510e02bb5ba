"""Every one of `unique-message-props` is part of the dedup key: events differing in one prop only both pass.

A key that ignored one prop (an off-by-one over the list, a path step lost) would make the route drop
a genuinely new event as a duplicate, silently. Each position of a three-prop list is checked, the
middle one through a nested path and an array (the two ways a prop is looked up), and an exact repeat
is still dropped, so the test cannot pass by deduplication doing nothing.
"""

from __future__ import annotations

import json

import pytest

from postee.pipeline.events import parse_event
from postee.values.eventkeys import dedup_key
from tests.helpers.http_sink import open_http_sink
from tests.pipeline.conftest import FakeWallClock, running_pipeline
from tests.pipeline.test_plugins import route_cfg

PROPS = ["digest", "resources.resource.name", "image"]
BASE = {"digest": "sha256:1", "resources": [{"resource": {"name": "openssl"}}], "image": "alpine", "other": 1}
CHANGED = {  # the same event, one prop different (by position in PROPS)
    0: {**BASE, "digest": "sha256:2"},
    1: {**BASE, "resources": [{"resource": {"name": "zlib"}}]},
    2: {**BASE, "image": "debian"},
}
POSITIONS = {0: "first", 1: "middle", 2: "last"}


@pytest.mark.parametrize("position", POSITIONS, ids=POSITIONS.values())
def test_the_key_changes_with_each_prop(position):
    assert dedup_key(BASE, PROPS) == "sha256:1-openssl-alpine"
    assert dedup_key(CHANGED[position], PROPS) != dedup_key(BASE, PROPS)
    assert dedup_key({**BASE, "other": 2}, PROPS) == dedup_key(BASE, PROPS)  # not a prop: same key


@pytest.mark.parametrize("position", POSITIONS, ids=POSITIONS.values())
async def test_events_differing_in_one_prop_are_both_delivered(tmp_path, position):
    plugins = f"""      unique-message-props: {json.dumps(PROPS)}
      unique-message-timeout: 1h"""
    async with open_http_sink() as sink:
        cfg = route_cfg(sink.url, plugins)
        async with running_pipeline(tmp_path, cfg, wall_clock=FakeWallClock()) as pipeline:

            async def run(body: dict) -> str | None:
                outcome = await pipeline.run_route("r0", parse_event(json.dumps(body).encode()), timeout=10)
                assert outcome.matched
                return outcome.dropped

            assert await run(BASE) is None
            assert await run(CHANGED[position]) is None, f"differs in the {POSITIONS[position]} prop only"
            assert await run(BASE) == "duplicate"  # deduplication is on: an exact repeat is dropped
            assert await run(CHANGED[position]) == "duplicate"
    bodies = [json.loads(r.body) for r in sink.requests]
    assert bodies == [BASE, CHANGED[position]]
