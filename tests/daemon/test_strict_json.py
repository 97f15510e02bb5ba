"""Strict JSON at the webhook, as Postee's Go decoder reads it (issue #12, point 3).

Over real HTTP against a real node, with a real sink recording what the route's action sent:
`NaN` and `±Infinity` are not JSON and numbers beyond float range are refused (400 with the reason);
duplicate keys keep the last value, whichever Rego engine the routes use; lone UTF-16 surrogates
become U+FFFD, as Go does, and flow on as valid UTF-8.
"""

import pytest
import trio

from tests.daemon.helpers import admin_headers, pipeline_settled, running_node, webhook_route
from tests.helpers.http_sink import open_http_sink


def alpine_route(url: str) -> str:
    """Events whose `image` contains "alpine" go, rendered raw, to a webhook at `url`."""
    return webhook_route(url, route="images", rule='contains(input.image, "alpine")')


async def wait_until(predicate, timeout=10):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def refused_then_only_the_valid_one_arrives(tmp_path, bodies: list[bytes], reason: str) -> None:
    async with open_http_sink() as sink, running_node(tmp_path, alpine_route(sink.url)) as (node, client):
        for body in bodies:
            response = await client.post("/", content=body)
            assert response.status_code == 400, (body[:80], response.status_code, response.text)
            assert reason in response.text, (body[:80], response.text)
        assert (await client.post("/", content=b'{"image": "alpine", "n": "valid"}')).status_code == 200
        await wait_until(lambda: pipeline_settled(node, 1))
        assert [r.json()["n"] for r in sink.requests] == ["valid"]
        events = (await client.get("/events", headers=admin_headers(node))).json()
        assert [e["event"]["n"] for e in events] == ["valid"]


async def test_nan_and_infinity_are_refused_with_400(tmp_path):
    bodies = [
        b'{"image": "alpine", "score": NaN}',
        b'{"image": "alpine", "score": Infinity}',
        b'{"image": "alpine", "scores": [1, -Infinity]}',
        b'{"image": "alpine", "nested": {"deep": [{"x": NaN}]}}',
    ]
    await refused_then_only_the_valid_one_arrives(tmp_path, bodies, "not JSON")


async def test_numbers_beyond_float_range_are_refused_with_400(tmp_path):
    bodies = [
        b'{"image": "alpine", "n": 1e400}',
        b'{"image": "alpine", "n": -1E+309}',
        b'{"image": "alpine", "n": ' + b"9" * 400 + b"}",  # an integer past float range (Go reads a float64)
        b'{"image": "alpine", "n": ' + b"1" * 5000 + b"}",  # past Python's int-from-text limit too
    ]
    await refused_then_only_the_valid_one_arrives(tmp_path, bodies, "out of range")


async def test_numbers_within_range_still_pass(tmp_path):
    async with open_http_sink() as sink, running_node(tmp_path, alpine_route(sink.url)) as (node, client):
        body = (b'{"image": "alpine", "small": 2.5e-308, "tiny": 1e-400, "e": -1.5E+3, "i": 9007199254740993, '
                b'"underflow": 0.' + b"0" * 5000 + b"1}")
        assert (await client.post("/", content=body)).status_code == 200
        (request,) = await sink.wait_for(1)
        sent = request.json()
        assert (sent["small"], sent["tiny"], sent["e"], sent["underflow"]) == (2.5e-308, 0, -1500, 0)
        assert sent["i"] in (9007199254740993, 9007199254740992)  # Go reads a float64


@pytest.mark.parametrize("engine", ["regorus", "regopy"])
async def test_duplicate_keys_keep_the_last_value_as_go_does(tmp_path, engine):
    async with open_http_sink() as sink, running_node(tmp_path, alpine_route(sink.url), engine=engine) as (
        node,
        client,
    ):
        # The route must see what the action sends: the last `image` of each body.
        assert (await client.post("/", content=b'{"image": "debian", "n": 1, "image": "alpine"}')).status_code == 200
        assert (await client.post("/", content=b'{"image": "alpine", "n": 2, "image": "debian"}')).status_code == 200
        await wait_until(lambda: pipeline_settled(node, 2))
        assert [r.json() for r in sink.requests] == [{"image": "alpine", "n": 1}]
        events = (await client.get("/events", headers=admin_headers(node))).json()
        assert [e["event"]["image"] for e in events] == ["alpine", "debian"]


@pytest.mark.parametrize("engine", ["regorus", "regopy"])
async def test_lone_surrogates_become_replacement_characters_as_go_does(tmp_path, engine):
    async with open_http_sink() as sink, running_node(tmp_path, alpine_route(sink.url), engine=engine) as (
        node,
        client,
    ):
        # A lone high, a lone low (in a key), a high followed by a non-surrogate escape, and a valid pair.
        body = rb'{"image": "alpine\ud800", "\udc00key": "x\uD83D\u0041", "pair": "\ud83d\ude00"}'
        response = await client.post("/", content=body)
        assert response.status_code == 200, response.text
        (request,) = await sink.wait_for(1)
        assert request.body.decode("utf-8")  # valid UTF-8 on the wire
        assert request.json() == {"image": "alpine\ufffd", "\ufffdkey": "x\ufffdA", "pair": "\U0001f600"}
        await wait_until(lambda: pipeline_settled(node, 1))
        events = (await client.get("/events", headers=admin_headers(node))).json()
        assert events[0]["event"]["image"] == "alpine\ufffd"


async def test_nesting_deeper_than_the_engines_take_is_refused_with_400(tmp_path):
    """regorus refuses inputs nested past 126 levels (the event would then be dropped by every route
    rule, silently); regopy takes them: refused at intake, every engine sees the same events."""
    deep = b'{"image": "alpine", "x": ' + b"[" * 150 + b"]" * 150 + b"}"
    await refused_then_only_the_valid_one_arrives(tmp_path, [deep], "nested deeper than 100 levels")


@pytest.mark.parametrize("engine", ["regorus", "regopy"])
async def test_integers_past_64_bits_are_read_as_go_reads_them(tmp_path, engine):
    """Go reads every number as a float64; past 64 bits regorus refuses an integer and regopy keeps it
    exact, so the event is made what Go makes of it, whichever engine."""
    async with open_http_sink() as sink, running_node(tmp_path, alpine_route(sink.url), engine=engine) as (
        node, client
    ):
        body = b'{"image": "alpine", "big": 18446744073709551616, "low": -9223372036854775809, "ok": 42}'
        assert (await client.post("/", content=body)).status_code == 200
        await wait_until(lambda: pipeline_settled(node, 1))
        (request,) = sink.requests  # delivered (regorus dropped it before), with the float64 values
        sent = request.json()
        assert (sent["image"], sent["ok"]) == ("alpine", 42)
        # regorus writes the float 2**64 as u64's maximum, one less: the same float64 as Go's value
        assert float(sent["big"]) == 1.8446744073709552e19 and float(sent["low"]) == -9.223372036854776e18
