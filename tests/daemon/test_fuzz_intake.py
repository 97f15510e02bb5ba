"""Property test: whatever is thrown at the webhook, it answers 2xx/4xx and stays up."""

import json

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.daemon.helpers import running_node

CFG = """
routes:
  - name: images
    input: contains(input.image, "alpine")
    actions: [out]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: out
    type: stdout
    enable: false
"""
MAX_BODY = 4096

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=300).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.text(max_size=10), json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
    st.integers(min_value=MAX_BODY + 1, max_value=MAX_BODY * 4).map(lambda n: b'{"a": "' + b"x" * n + b'"}'),
    st.sampled_from([b"", b"{", b"[", b'"\\ud800"', b"\xff\xfe", b"{" * 5000, b'{"a":' * 2000]),
)


async def test_malformed_and_huge_bodies_get_4xx_and_the_process_stays_up(tmp_path):
    async with running_node(tmp_path, CFG, max_body=MAX_BODY) as (node, client):
        seen: dict[int, int] = {}

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(body=bodies)
        def probe(body: bytes) -> None:
            status = trio.from_thread.run(post, body)
            seen[status] = seen.get(status, 0) + 1
            assert status in (200, 400, 413), (status, body[:100])
            if len(body) > MAX_BODY:
                assert status == 413

        async def post(body: bytes) -> int:
            return (await client.post("/", content=body)).status_code

        # Hypothesis drives synchronously; run it in a thread that calls back into this Trio run.
        await trio.to_thread.run_sync(probe)
        assert (await client.get("/ping")).status_code == 200
        assert seen.get(400, 0) > 0 and seen.get(413, 0) > 0
        async with httpx.AsyncClient(base_url=node.urls[0]) as fresh:
            assert (await fresh.post("/", content=b'{"image": "alpine"}')).status_code == 200
