"""`GET /events` is bounded by bytes as well as by count (issue #11, point 5): an outsider posting large
events cannot make the node hold 1000 of 16 MiB each."""

import json
import sys

from postee.pipeline.events import RECENT_EVENTS, RECENT_EVENTS_BYTES, RecentEvents, parse_event
from tests.daemon.helpers import STDOUT_ONLY, admin_headers, running_node

MIB = 1024 * 1024


def big_event(n: int, size: int) -> bytes:
    return json.dumps({"n": n, "pad": "x" * size}).encode()


def test_default_bound_is_64_mib_and_the_oldest_go_first():
    assert RECENT_EVENTS_BYTES == 64 * MIB
    recent = RecentEvents()
    for n in range(20):  # twenty 8 MiB events: 160 MiB offered
        recent.add(parse_event(big_event(n, 8 * MIB)))
    assert recent.size_bytes <= 64 * MIB
    kept = [e["event"]["n"] for e in json.loads(recent.to_json())]
    assert kept == list(range(20 - len(kept), 20)) and 5 <= len(kept) <= 7


def test_count_still_bounds_small_events():
    recent = RecentEvents()
    for n in range(RECENT_EVENTS + 5):
        recent.add(parse_event(json.dumps({"n": n})))
    assert len(recent) == RECENT_EVENTS
    assert json.loads(recent.to_json())[0]["event"]["n"] == 5


def test_an_event_larger_than_the_whole_budget_is_not_kept():
    recent = RecentEvents(max_bytes=MIB)
    recent.add(parse_event(big_event(1, 1000)))
    recent.add(parse_event(big_event(2, 2 * MIB)))
    assert [e["event"]["n"] for e in json.loads(recent.to_json())] == [1]


def test_size_counts_memory_not_characters():
    """A non-ASCII text takes up to four bytes a character in memory: the bound is on memory."""
    recent = RecentEvents(max_bytes=MIB)
    text = json.dumps({"pad": "\U0001f600" * (MIB // 8)}, ensure_ascii=False)
    recent.add(parse_event(text))
    recent.add(parse_event(text))
    assert len(recent) == 1 and recent.size_bytes >= sys.getsizeof(text) - 100


async def test_node_bounds_events_by_the_configured_bytes(tmp_path):
    async with running_node(tmp_path, STDOUT_ONLY, recent_events_bytes=3 * MIB) as (node, client):
        for n in range(6):
            assert (await client.post("/", content=big_event(n, MIB))).status_code == 200
        response = await client.get("/events", headers=admin_headers(node))
        assert len(response.content) <= 3 * MIB
        assert [e["event"]["n"] for e in response.json()] == [4, 5]
