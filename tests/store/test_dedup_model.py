"""Dedup against a dictionary model: any sequence of sightings, expiries and maintenance passes."""

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postee.store import open_store

T0 = 1_700_000_000.0

_examples = itertools.count()

sighting = st.tuples(
    st.sampled_from(["route-a", "route-b"]),
    st.sampled_from(["k0", "k1", "k2"]),
    st.sampled_from([None, 0, 3, 10]),  # ttl
    st.integers(min_value=0, max_value=6),  # seconds since the previous step
    st.booleans(),  # run maintenance before this sighting
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(sighting, max_size=25))
async def test_dedup_matches_a_dictionary_model(tmp_path, steps) -> None:
    async with open_store(tmp_path / f"example-{next(_examples)}.db") as store:
        await _check(store, steps)


async def _check(store, steps) -> None:
    expiry: dict[tuple[str, str], float | None] = {}
    now = T0
    for route, key, ttl, dt, maintain in steps:
        now += dt
        if maintain:
            await store.maintenance(now=now)
        scoped = (route, key)
        live = scoped in expiry and (expiry[scoped] is None or now < expiry[scoped])
        if not live:
            expiry[scoped] = now + ttl if ttl else None
        assert await store.dedup_seen(route, key, ttl, now=now) is live
