"""The recording server itself: what later action tests rely on."""

import httpx
import pytest

from tests.helpers.http_sink import Reply, open_http_sink


async def test_records_requests_and_plays_replies_in_order():
    async with open_http_sink([Reply(201, "a", headers=(("X-Reply", "1"),)), 404]) as sink:
        async with httpx.AsyncClient() as client:
            first = await client.post(f"{sink.url}/p?q=1&q=2", content=b"body", headers=[("X-H", "1"), ("X-H", "2")])
            second = await client.get(f"{sink.url}/other")
            third = await client.delete(sink.url)
        requests = await sink.wait_for(3)
    assert [(r.status_code, r.text) for r in (first, second, third)] == [(201, "a"), (404, ""), (200, "")]
    assert first.headers["x-reply"] == "1"
    assert [(r.method, r.path) for r in requests] == [("POST", "/p"), ("GET", "/other"), ("DELETE", "/")]
    assert requests[0].query_params == {"q": ["1", "2"]}
    assert requests[0].header_values("X-H") == ["1", "2"]
    assert requests[0].body == b"body"


async def test_wait_for_times_out_with_a_clear_error():
    async with open_http_sink() as sink:
        with pytest.raises(TimeoutError, match="expected 1 request"):
            await sink.wait_for(1, timeout=0.05)


async def test_a_delayed_reply_is_recorded_on_arrival():
    async with open_http_sink([Reply(200, delay=60.0)]) as sink:
        async with httpx.AsyncClient(timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(sink.url)
        assert len(await sink.wait_for(1)) == 1
