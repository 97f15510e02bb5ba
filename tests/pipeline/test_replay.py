"""The replay rules: what a node restarted on a killed node's store does again, and what it does not.

The store is left as a node killed in the middle of event E1 leaves it (written through the store's
own calls, as the pipeline makes them): E1 recorded as accepted; its dedup key recorded by E1; its
item queued for aggregation (outcome "queued"); the first action of a serialized route done
(outcome recorded), the second not; and, on another route, an aggregate of two older items taken
for sending but not delivered. A real node then starts on that store and gets one more event, E2.
"""

from __future__ import annotations

import json

from postee.store import AcceptedEvent, Outcome, open_store
from postee.values.eventkeys import dedup_key
from tests.daemon.helpers import pipeline_settled, running_node
from tests.helpers.http_sink import open_http_sink
from tests.roles.helpers import eventually

E1 = AcceptedEvent("e1", "webhook", '{"image": "x", "n": 1}', 1_700_000_000.0)


def config(sink: str) -> str:
    return f"""
routes:
  - name: dd
    actions: [dd-hook]
    template: raw
    plugins:
      unique-message-props: [image]
  - name: agg
    actions: [agg-hook]
    template: raw
    plugins:
      aggregate-message-number: 2
  - name: inflight
    actions: [inflight-hook]
    template: raw
    plugins:
      aggregate-message-number: 2
  - name: two
    serialize-actions: true
    actions: [a, b]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
{numbered(sink, "dd-hook")}
{numbered(sink, "a")}
{numbered(sink, "b")}
  - name: agg-hook
    type: webhook
    enable: true
    url: {sink}/agg-hook
  - name: inflight-hook
    type: webhook
    enable: true
    url: {sink}/inflight-hook
"""


def numbered(sink: str, name: str) -> str:
    return f"""  - name: {name}
    type: http
    enable: true
    url: {sink}/{name}
    body-content: "n=event.input.n"
"""


def item(text: str) -> dict:
    return {"aggregation_pkg": None, "item": {"title": text, "description": text, "url": ""}}


async def leave_as_killed(db_path) -> None:
    """The store of a node killed while it worked on E1."""
    async with open_store(db_path) as store:
        # an aggregate of two older items of `inflight`, taken for sending when the node died
        for text in ("old-1", "old-2"):
            await store.aggregation_push("inflight", "inflight-hook", item(text))
        assert len(await store.aggregation_take("inflight", "inflight-hook", 2, "inflight:dead-sender")) == 2
        assert await store.intake_add(E1)
        body = json.loads(E1.text)
        assert not await store.dedup_seen("dd", dedup_key(body, ["image"]), None, None, E1.id)
        assert await store.aggregation_push("agg", "agg-hook", item("E1-item"), event_id=E1.id) == 1
        await store.intake_progress([Outcome(E1.id, "two", "a", True)])


def paths(sink) -> list[tuple[str, str]]:
    return sorted((r.path, r.text) for r in sink.requests)


async def test_a_replay_redoes_only_what_was_not_recorded(tmp_path):
    await leave_as_killed(tmp_path / "db" / "webhooks.db")
    async with open_http_sink() as sink:
        async with running_node(tmp_path, config(sink.url)) as (node, client):
            # E1 replayed before the node was ready: its dedup key is its own, (two, a) already ran,
            # its item is queued on `agg` already; b had not run. On `inflight` the aggregate taken by
            # the dead sender is back in the queue: E1's item (not queued before) completes a batch
            await eventually(lambda: pipeline_settled(node, 1))
            assert node.ledger.replayed == 1
            assert paths(sink) == [("/b", "n=1"), ("/dd-hook", "n=1"), ("/inflight-hook", "old-1\n\nold-2")]

            assert (await client.post("/", content=b'{"image": "x", "n": 2}')).status_code == 200
            await eventually(lambda: pipeline_settled(node, 2))
            await node.ledger.flush()  # what the ledger writes behind, now
            assert await node.store.intake_count() == 0  # both events finished and forgotten

        by_path = {}
        for request in sink.requests:
            by_path.setdefault(request.path, []).append(request.text)
    # E2: a duplicate of E1's key on `dd`; both actions of `two`
    assert sorted(by_path.pop("/a")) == ["n=2"] and sorted(by_path.pop("/b")) == ["n=1", "n=2"]
    assert by_path.pop("/dd-hook") == ["n=1"]
    # `agg`: E1's item once (not queued again by the replay), then E2's
    (aggregate,) = by_path.pop("/agg-hook")
    assert aggregate.count("E1-item") == 1 and aggregate.count('"n": 2') == 1, aggregate
    # `inflight`: the old aggregate once, then E1's and E2's items
    resent, batch = by_path.pop("/inflight-hook")
    assert resent == "old-1\n\nold-2"
    assert "old" not in batch and batch.count('"n": 1') == 1 and batch.count('"n": 2') == 1, batch
    assert by_path == {}
