"""`SqliteStore` offers every call of the `Store` protocol, with the same parameters.

Nothing checks types statically here, so a renamed method or parameter on either side would only
show when the pipeline or a role first made that call.
"""

from __future__ import annotations

import inspect

from postee.store import SqliteStore, Store

PROTOCOL_CALLS = sorted(name for name, value in vars(Store).items() if inspect.iscoroutinefunction(value))


def test_the_protocol_lists_the_calls_of_the_pipeline_and_the_roles() -> None:
    assert PROTOCOL_CALLS == sorted(
        [
            "aggregation_delivered",
            "aggregation_push",
            "aggregation_release",
            "aggregation_take",
            "api_key",
            "dedup_seen",
            "forget_processed",
            "intake_add",
            "intake_progress",
            "intake_unfinished",
            "mark_processed",
            "outbox_ack",
            "outbox_add",
            "outbox_count",
            "outbox_pending",
            "set_api_key",
        ]
    )


def test_sqlite_store_has_every_call_with_the_same_parameters() -> None:
    for name in PROTOCOL_CALLS:
        implementation = getattr(SqliteStore, name, None)
        assert inspect.iscoroutinefunction(implementation), name
        expected = [(p.name, p.kind) for p in inspect.signature(getattr(Store, name)).parameters.values()]
        actual = [(p.name, p.kind) for p in inspect.signature(implementation).parameters.values()]
        assert actual == expected, name
