"""One node per store: a second node started on the same `PATH_TO_DB` is refused, the first goes on.

A node replays the store's unfinished events at start and puts back aggregates that were being sent:
on a store another live node uses, that would run the other node's in-flight work a second time.
"""

import attrs
import trio

from postee.roles.node import Node
from postee.store.errors import StoreError
from tests.roles.helpers import STDOUT_CONFIG, node_options


async def test_a_second_node_on_the_same_store_is_refused_and_the_first_goes_on(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(STDOUT_CONFIG)
    options = node_options(tmp_path, "node", str(cfg))
    first = Node(options)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            await nursery.start(first.run)
        second = Node(attrs.evolve(options))
        try:
            with trio.fail_after(30):
                await nursery.start(second.run)
        except StoreError as exc:
            refused = exc
        else:
            second.request_stop()
            first.request_stop()
            raise AssertionError("the second node started on a store in use")
        assert "another postee node is using the store" in str(refused)
        assert options.db_path in str(refused)
        assert not first.stopped.is_set() and first.store is not None
        first.request_stop()
    # once the first has stopped, the store is free again
    third = Node(attrs.evolve(options))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            await nursery.start(third.run)
        third.request_stop()
