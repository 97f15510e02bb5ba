"""The lean HTTP client of the URL actions (`postee.actions.lean_http`) against real local servers.

Two kinds of proof:

- differential: the same request through the httpx client `open_http_client` builds and through the
  lean client, against the same scripted server; the bytes the server received (head and body, for
  every request, redirects included) and the outcome (`SendResult` or the `ActionError`'s message,
  retryable flag, status, Retry-After) must be identical;
- behaviour the brief asks for that httpx cannot be compared on (connection reuse and closing, the pool,
  timeouts under the autojump clock, concurrency).

The scripted server is a raw TCP server (`tests.helpers.raw_http`) on 127.0.0.1, port 0, in the test's Trio
run: it reads each request's head and Content-Length body, records them with the connection they came on,
and writes whatever bytes the script says, so replies can be malformed, chunked, cut short or absent.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
from typing import Any

import h11
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from postee.actions import ActionError, ActionSpec, Delivery, build_action, send_with_retries
from postee.actions.httpclient import (
    MAX_RESPONSE_BYTES,
    open_http_client,
    open_lean_client,
    request,
    send_request,
)
from postee.actions.lean_http import MAX_REDIRECTS, LeanClient, parse_plain_head
from tests.helpers.http_sink import open_https_sink
from tests.helpers.raw_http import Answer, Seen, Server, hang, open_server, trickle

TIMEOUT = 5.0
WAIT = 5.0
"""Seconds a test waits for something a server should do at once."""


# --- scripted replies (the server: `tests.helpers.raw_http`) ---------------------------------------

def reply(status: int = 200, body: bytes = b"ok", *headers: str, reason: str = "OK") -> bytes:
    """A plain HTTP/1.1 reply with Content-Length."""
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*parts: bytes) -> bytes:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


# --- the scripted replies, by path ---------------------------------------------------------------

BIG = b"x" * (MAX_RESPONSE_BYTES + 5000)


def scripted(request: Seen) -> Answer | bytes:
    path = request.target.split("?")[0]
    if request.method == "HEAD":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
    answers: dict[str, Answer | bytes] = {
        "/ok": reply(200, b"fine"),
        "/echo": reply(200, request.body),
        "/204": b"HTTP/1.1 204 No Content\r\n\r\n",
        "/chunked": chunked(b"hello ", b"chunked ", b"world"),
        "/gzip": reply(200, gzip.compress(b"squeezed " * 50), "Content-Encoding: gzip"),
        "/bad-gzip": reply(200, b"not gzip at all", "Content-Encoding: gzip"),
        "/http10": Answer(b"HTTP/1.0 200 OK\r\n\r\nold style", close=True),
        "/until-close": Answer(b"HTTP/1.1 200 OK\r\n\r\nto the end", close=True),
        "/continue": b"HTTP/1.1 100 Continue\r\n\r\n" + reply(200, b"after 100"),
        "/garbage": Answer(b"NOT HTTP AT ALL\r\n\r\n", close=True),
        "/fold": b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  folded\r\nContent-Length: 2\r\n\r\nok",
        "/bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        "/no-reason": b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
        "/dup-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        "/conflict-length": Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", close=True),
        "/te-gzip": Answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", close=True),
        "/space-first": Answer(b" HTTP/1.1 200 OK\r\n\r\n", close=True),
        "/short": Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True),
        "/silent": Answer(b"", close=True),
        "/half-head": Answer(b"HTTP/1.1 200 OK\r\nContent-Le", close=True),
        "/429": reply(429, b"slow down", "Retry-After: 7", reason="Too Many Requests"),
        "/503": reply(503, b"busy", "Retry-After: 2", "Retry-After: 3", reason="Service Unavailable"),
        "/500": reply(500, b"oops", reason="Internal Server Error"),
        "/404": reply(404, b"no such hook", reason="Not Found"),
        "/302": reply(302, b"moved", "Location: /echo"),
        "/303": reply(303, b"", "Location: /echo?from=303"),
        "/301": reply(301, b"", "Location: /echo"),
        "/307": reply(307, b"", "Location: /echo"),
        "/308": reply(308, b"", f"Location: http://127.0.0.1:{request_port(request)}/echo#frag"),
        "/302-no-location": reply(302, b"where?"),
        "/loop": reply(302, b"", "Location: /loop"),
        "/bad-location": reply(302, b"", "Location: http://[::1/x"),
        "/ftp": reply(302, b"", "Location: ftp://example.com/file"),
        "/cookie": reply(200, b"have one", "Set-Cookie: sid=abc123; Path=/"),
        "/cookie-redirect": reply(302, b"", "Set-Cookie: step=one; Path=/", "Location: /echo"),
        "/big": reply(200, BIG),
        "/close": reply(200, b"bye", "Connection: close"),
        "/utf8-header": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Name: caf\xc3\xa9\r\n\r\nok",
    }
    return answers.get(path, reply(200, request.body))


def request_port(request: Seen) -> int:
    return int((request.header("host") or ":0").rsplit(":", 1)[1])


async def outcome(client: Any, method: str, url: str, **kwargs: Any) -> tuple[Any, ...]:
    """What `send_request` made of one request: its result, or its error in every detail."""
    try:
        result = await send_request(client, method, url, **kwargs)
    except ActionError as exc:
        return ("error", exc.message, exc.retryable, exc.status, exc.retry_after, exc.output)
    return ("ok", result.status, result.output)


async def through_both(server: Server, method: str, url: str, **kwargs: Any) -> list[Any]:
    """The outcome and the requests the server saw, through httpx then through the lean client: must match."""
    runs = []
    for opener in (open_http_client, open_lean_client):
        del server.seen[:]
        client = await opener(timeout=TIMEOUT)
        if isinstance(client, LeanClient):
            assert client.plan(method, url, **kwargs) is not None, "the lean client would leave it to httpx"
        try:
            result = await outcome(client, method, url, **kwargs)
        finally:
            await client.aclose()
        runs.append((result, [(r.head, r.body) for r in server.seen]))
    assert runs[0] == runs[1]
    return runs[1]


# --- the same bytes, the same outcome as httpx --------------------------------------------------

JSON = {"Content-Type": "application/json"}
BODY = json.dumps({"image": "alpine:3.18", "vulnerabilities": [{"id": "CVE-2024-1"}]}).encode()

REQUESTS = {
    "webhook POST": ("POST", "/echo?k=v", {"content": BODY, "headers": JSON}),
    "http action headers, repeated, overriding defaults": ("POST", "/echo", {
        "content": b"x=1",
        "headers": [("X-Token", "a"), ("x-token", "b"), ("user-agent", "mine/1"), ("Accept", "text/plain"),
                    ("Postee-Event", "eyJhIjogMX0="), ("Connection", "keep-alive")],
    }),
    "POST without a body": ("POST", "/echo", {}),
    "PUT with an empty body": ("PUT", "/echo", {"content": b""}),
    "GET": ("GET", "/ok", {}),
    "DELETE with a body": ("DELETE", "/echo", {"content": b"gone"}),
    "HEAD": ("HEAD", "/ok", {}),
    "lower-case method": ("post", "/echo", {"content": b"{}"}),
    "query kept verbatim, fragment dropped": ("POST", "/echo?a=1&b=%20x&c=%zz&d=a b#frag", {"content": b"1"}),
    "non-ASCII path": ("POST", "/h\u00e9ll\u00f6 w/\u00e4?q=\u00fc", {"content": b"1"}),
    "user-given Authorization and Cookie": ("POST", "/echo", {
        "content": b"1", "headers": {"Authorization": "Bearer t0k", "Cookie": "a=b"}}),
    "Connection: close asked": ("POST", "/echo", {"content": b"1", "headers": {"Connection": "close"}}),
}


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_requests_are_sent_byte_for_byte_as_httpx_sends_them(name):
    method, path, kwargs = REQUESTS[name]
    async with open_server(scripted) as server:
        result, seen = await through_both(server, method, server.url + path, **kwargs)
    assert result[0] == "ok"
    assert len(seen) == 1


async def test_userinfo_becomes_basic_auth_as_httpx_does():
    async with open_server(scripted) as server:
        url = server.url.replace("http://", "http://us%40er:p%3Ass@") + "/echo"
        _, [(head, _)] = await through_both(server, "POST", url, content=b"{}", headers={"authorization": "x"})
    assert b"Authorization: Basic dXNAZXI6cDpzcw==\r\n" in head
    assert b"us%40er" not in head


REPLIES = [
    "/ok", "/204", "/chunked", "/gzip", "/bad-gzip", "/http10", "/until-close", "/continue", "/garbage",
    "/fold", "/bare-lf", "/no-reason", "/dup-length", "/conflict-length", "/te-gzip", "/space-first", "/short",
    "/silent", "/half-head", "/429", "/503", "/500", "/404", "/302", "/303", "/301", "/307", "/308",
    "/302-no-location", "/loop", "/bad-location", "/ftp", "/big", "/close", "/utf8-header",
]


@pytest.mark.parametrize("path", REPLIES)
@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_replies_are_understood_as_httpx_understands_them(path, method):
    async with open_server(scripted) as server:
        await through_both(server, method, f"{server.url}{path}", content=BODY, headers=JSON)


async def test_429_and_5xx_are_retryable_with_retry_after_and_4xx_is_not():
    async with open_server(scripted) as server:
        (_, message, retryable, status, retry_after, output), _ = await through_both(
            server, "POST", server.url + "/429", content=BODY)
        assert (retryable, status, retry_after, output) == (True, 429, 7.0, "slow down")
        assert message == f"POST {server.url}: HTTP 429: slow down"
        (_, _, retryable, status, retry_after, _), _ = await through_both(server, "POST", server.url + "/503")
        assert (retryable, status, retry_after) == (True, 503, None)  # "2, 3": two values are no number
        (_, _, retryable, status, _, _), _ = await through_both(server, "POST", server.url + "/404")
        assert (retryable, status) == (False, 404)


async def test_a_302_turns_the_post_into_a_get_without_body_and_a_307_keeps_both():
    async with open_server(scripted) as server:
        result, [(first, body), (second, second_body)] = await through_both(
            server, "POST", server.url + "/302", content=BODY, headers=JSON)
        assert result == ("ok", 200, "")
        assert (first.startswith(b"POST /302 "), body) == (True, BODY)
        assert second.startswith(b"GET /echo ") and second_body == b""
        assert b"Content-Length" not in second and b"Content-Type: application/json" in second

        result, [_, (second, second_body)] = await through_both(
            server, "POST", server.url + "/307", content=BODY, headers=JSON)
        assert result == ("ok", 200, BODY.decode())
        assert second.startswith(b"POST /echo ") and second_body == BODY
        assert b"Content-Length: %d" % len(BODY) in second


async def test_a_redirect_loop_stops_after_20_redirects_and_is_not_retryable():
    async with open_server(scripted) as server:
        (kind, message, retryable, *_), seen = await through_both(server, "POST", server.url + "/loop", content=b"1")
    assert (kind, retryable) == ("error", False)
    assert message == f"POST {server.url}: TooManyRedirects: Exceeded maximum allowed redirects."
    assert len(seen) == MAX_REDIRECTS + 1


async def test_a_redirect_to_another_origin_drops_authorization_and_names_the_new_host():
    async with open_server(scripted) as target:
        def to_target(request: Seen) -> bytes:
            return reply(307, b"", f"Location: {target.url}/echo", "Set-Cookie: here=1; Path=/")

        async with open_server(to_target) as origin:
            runs = []
            for opener in (open_http_client, open_lean_client):
                del origin.seen[:], target.seen[:]
                client = await opener(timeout=TIMEOUT)
                async with client:
                    result = await outcome(client, "POST", origin.url.replace("//", "//u:p@") + "/hook",
                                           content=b"{}", headers={"X-Keep": "1"})
                runs.append((result, [r.head for r in origin.seen + target.seen]))
    assert runs[0] == runs[1]
    result, [first, second] = runs[1]
    assert result == ("ok", 200, "{}")
    assert b"Authorization: Basic" in first and b"Authorization" not in second
    assert f"Host: 127.0.0.1:{target.port}".encode() in second and b"X-Keep: 1" in second
    assert b"Cookie" not in second  # the cookie is the first host's


async def test_cookies_a_remote_sets_are_never_sent_back_as_in_postee():
    """Postee's Go client has no cookie jar: neither client keeps what a `Set-Cookie` says."""
    async with open_server(scripted) as server:
        runs = []
        for opener in (open_http_client, open_lean_client):
            del server.seen[:]
            client = await opener(timeout=TIMEOUT)
            async with client:
                outcomes = [await outcome(client, "POST", server.url + path, content=b"1")
                            for path in ("/cookie", "/echo", "/cookie-redirect", "/echo")]
            runs.append((outcomes, [r.head for r in server.seen]))
    assert runs[0] == runs[1]
    heads = runs[1][1]
    assert len(heads) >= 4 and not any(b"Cookie" in head for head in heads)


async def outcomes_of_both(url: str, content: bytes, **options) -> list:
    """One POST's outcome through httpx, then through the lean client (each a fresh client)."""
    outcomes = []
    for opener in (open_http_client, open_lean_client):
        async with await opener(timeout=TIMEOUT, **options) as client:
            outcomes.append(await outcome(client, "POST", url, content=content))
    return outcomes


async def test_connection_refused_is_retryable_with_httpx_message(closed_port_url):
    outcomes = await outcomes_of_both(closed_port_url, b"{}")
    assert outcomes[0] == outcomes[1]
    kind, message, retryable, *_ = outcomes[1]
    assert (kind, retryable) == ("error", True)
    assert "ConnectError" in message


async def test_https_with_a_trusted_ca_and_sni_as_httpx():
    async with open_https_sink() as sink:
        for host in ("127.0.0.1", "localhost"):
            url = sink.url.replace("127.0.0.1", host) + "/in?x=1"
            client = await open_lean_client(timeout=TIMEOUT, verify=sink.client_ssl_context())
            async with client:
                assert client.plan("POST", url, content=b"{}") is not None
                result = await send_request(client, "POST", url, content=b"{}", headers=JSON)
            assert result.status == 200
        first, second = await sink.wait_for(2)
    assert (first.path, first.query, first.body) == ("/in", "x=1", b"{}")
    assert second.header("host") == f"localhost:{sink.url.rsplit(':', 1)[1]}"


async def test_https_with_an_untrusted_certificate_is_not_retryable_with_httpx_message():
    async with open_https_sink() as sink:
        outcomes = await outcomes_of_both(sink.url, b"{}", verify=True)
    assert outcomes[0] == outcomes[1]
    kind, message, retryable, *_ = outcomes[1]
    assert (kind, retryable) == ("error", False)
    assert "TLS certificate verification failed" in message


async def test_ipv6_literal():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    async with open_server(scripted, host="::1") as server:
        result, [(head, _)] = await through_both(server, "POST", server.url + "/echo", content=b"6")
    assert result == ("ok", 200, "6")
    assert f"Host: [::1]:{server.port}\r\n".encode() in head


# --- connections, the pool, timeouts, concurrency ------------------------------------------------

async def test_keep_alive_one_connection_for_three_requests():
    async with open_server(scripted) as server:
        async with await open_lean_client(timeout=TIMEOUT) as client:
            for index in range(3):
                result = await send_request(client, "POST", server.url + "/echo", content=b"%d" % index)
                assert result.output == str(index)
        assert [r.connection for r in server.seen] == [0, 0, 0]
        assert server.connections == 1


async def test_an_idle_connection_the_server_closed_is_not_used_and_the_next_request_succeeds():
    def answer_then_hang_up(request: Seen) -> Answer:
        return Answer(reply(200, b"once"), close=request.connection == 0)  # no "Connection: close" said

    async with open_server(answer_then_hang_up) as server:
        async with await open_lean_client(timeout=TIMEOUT) as client:
            assert (await send_request(client, "POST", server.url + "/a", content=b"1")).output == "once"
            await server.wait(lambda: server.closed == 1)
            assert (await send_request(client, "POST", server.url + "/b", content=b"2")).output == "once"
    assert [(r.connection, r.target, r.body) for r in server.seen] == [(0, "/a", b"1"), (1, "/b", b"2")]


async def test_a_reply_over_the_limit_is_cut_and_its_connection_not_reused():
    async with open_server(scripted) as server:
        async with await open_lean_client(timeout=TIMEOUT) as client:
            big = await request(client, "POST", server.url + "/big", content=b"1")
            assert big.body == BIG[:MAX_RESPONSE_BYTES]
            with pytest.raises(ActionError, match="reply larger than 100 bytes") as info:
                await request(client, "POST", server.url + "/big", limit=100, whole=True)
            assert not info.value.retryable
            small = await request(client, "POST", server.url + "/echo", content=b"small")
            assert small.body == b"small"
        await server.wait(lambda: server.closed == 3)
    assert [r.connection for r in server.seen] == [0, 1, 2]


async def test_a_chunked_reply_keeps_its_connection():
    async with open_server(scripted) as server:
        async with await open_lean_client(timeout=TIMEOUT) as client:
            first = await send_request(client, "POST", server.url + "/chunked", content=b"1")
            second = await send_request(client, "POST", server.url + "/chunked", content=b"2")
    assert first.output == second.output == "hello chunked world"
    assert [r.connection for r in server.seen] == [0, 0]


async def test_connection_close_from_the_server_is_honoured():
    async with open_server(scripted) as server:
        async with await open_lean_client(timeout=TIMEOUT) as client:
            for _ in range(2):
                assert (await send_request(client, "POST", server.url + "/close")).output == "bye"
        await server.wait(lambda: server.closed == 2)
    assert [r.connection for r in server.seen] == [0, 1]


@pytest.fixture
def slow_autojump_clock():
    """Virtual time that jumps once the run has been idle 20 ms of real time: real sockets still get
    their (near-instant) loopback round trips, waits for what never comes end at once."""
    return trio.testing.MockClock(autojump_threshold=0.02)


async def test_a_server_that_never_answers_times_out_after_timeout_seconds(slow_autojump_clock):
    async with open_server(lambda request: Answer(then=hang)) as server:
        async with await open_lean_client(timeout=120.0) as client:
            start = trio.current_time()
            with pytest.raises(ActionError) as info:
                await send_request(client, "POST", server.url + "/hook", content=b"1")
            elapsed = trio.current_time() - start
    assert info.value.retryable
    assert info.value.message == f"POST {server.url}: timed out (ReadTimeout)"
    assert 120.0 <= elapsed < 121.0


async def test_waiting_for_a_free_connection_slot_times_out(slow_autojump_clock):
    # The first request holds the only slot: its reply comes a line every 10 s, never a read timeout.
    async with open_server(lambda request: Answer(b"HTTP/1.1 200 OK\r\n", then=trickle)) as server:
        context = await trio.to_thread.run_sync(ssl.create_default_context)
        client = LeanClient(await open_http_client(timeout=30.0), context, 30.0, max_connections=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outcome, client, "POST", server.url + "/first")
            await server.wait(lambda: len(server.seen) == 1)
            assert await outcome(client, "POST", server.url + "/second") == (
                "error", f"POST {server.url}: timed out (PoolTimeout)", True, None, None, "")
            nursery.cancel_scope.cancel()
        await client.aclose()
    assert server.connections == 1


async def test_an_idle_connection_expires_after_five_seconds(slow_autojump_clock):
    async with open_server(scripted) as server:
        async with await open_lean_client(timeout=TIMEOUT) as client:
            await send_request(client, "POST", server.url + "/echo", content=b"1")
            await trio.sleep(4.0)
            await send_request(client, "POST", server.url + "/echo", content=b"2")
            await trio.sleep(5.5)
            await send_request(client, "POST", server.url + "/echo", content=b"3")
    assert [r.connection for r in server.seen] == [0, 0, 1]


async def test_eight_concurrent_requests_are_all_answered_correctly():
    async with open_server(scripted) as server:
        results: dict[int, str] = {}
        async with await open_lean_client(timeout=TIMEOUT) as client:

            async def post(index: int) -> None:
                for round_ in range(5):
                    body = json.dumps({"task": index, "round": round_}).encode()
                    result = await send_request(client, "POST", f"{server.url}/echo?t={index}", content=body)
                    assert json.loads(result.output) == {"task": index, "round": round_}
                    results[index] = result.output

            async with trio.open_nursery() as nursery:
                for index in range(8):
                    nursery.start_soon(post, index)
    assert len(results) == 8 and len(server.seen) == 40
    assert 1 < server.connections <= 8


async def test_a_cancelled_request_leaves_no_connection_behind():
    async with open_server(lambda request: Answer(then=hang) if request.target == "/hang" else reply()) as server:
        async with await open_lean_client(timeout=TIMEOUT) as client:
            with trio.move_on_after(WAIT) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send_request, client, "POST", server.url + "/hang")
                    await server.wait(lambda: len(server.seen) == 1)
                    nursery.cancel_scope.cancel()
            assert not scope.cancelled_caught
            await server.wait(lambda: server.closed == 1)
            assert (await send_request(client, "POST", server.url + "/next")).status == 200
    assert [r.connection for r in server.seen] == [0, 1]


async def test_after_aclose_a_request_is_a_runtime_error():
    client = await open_lean_client(timeout=TIMEOUT)
    await client.aclose()
    with pytest.raises(RuntimeError, match="client has been closed"):
        await send_request(client, "POST", "http://127.0.0.1:9/", content=b"1")


# --- what goes to httpx instead, and the actions ---------------------------------------------------

@pytest.mark.parametrize(("url", "kwargs"), [
    ("http://127.0.0.1:1/x", {"json": {"a": 1}}),
    ("http://127.0.0.1:1/x", {"content": "text, not bytes"}),
    ("http://127.0.0.1:1/x", {"headers": {"X-Name": "caf\u00e9"}}),
    ("http://127.0.0.1:1/x", {"headers": {"X-Padded": " value"}}),
    ("http://127.0.0.1:1/x", {"headers": {"Host": "elsewhere"}}),
    ("http://127.0.0.1:1/x", {"headers": {"Content-Length": "3"}}),
    ("ftp://127.0.0.1:1/x", {}),
    ("127.0.0.1:1/x", {}),
    ("http:///x", {}),
])
async def test_what_the_lean_client_does_not_do_goes_through_httpx(url, kwargs):
    async with await open_lean_client(timeout=TIMEOUT) as client:
        assert client.plan("POST", url, **kwargs) is None
    assert client.plan("CONNECT", "http://127.0.0.1:1/") is None


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http:///x", "127.0.0.1/x"])
async def test_unusable_urls_fail_as_under_httpx(url):
    outcomes = await outcomes_of_both(url, b"1")
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][0] == "error"


async def test_with_a_proxy_in_the_environment_every_request_goes_through_httpx(monkeypatch):
    async with open_server(lambda request: reply(200, b"via proxy")) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with await open_lean_client(timeout=TIMEOUT) as client:
            assert not client.enabled
            result = await send_request(client, "POST", "http://webhook.invalid/hook", content=b"1")
    assert result.output == "via proxy"
    [seen] = proxy.seen
    assert seen.head.startswith(b"POST http://webhook.invalid/hook HTTP/1.1\r\n")


def webhook_spec(url: str) -> ActionSpec:
    return ActionSpec(name="hook", type="webhook", settings={"url": url})


async def test_url_actions_use_the_lean_client_and_reuse_one_connection():
    delivery = Delivery(content={"title": "t", "description": '{"a": 1}'}, event={}, route="r")
    async with open_server(scripted) as server:
        async with build_action(webhook_spec(server.url + "/echo")) as action:
            assert isinstance(action.client, LeanClient)
            for _ in range(3):
                report = await send_with_retries(action, delivery)
                assert (report.ok, report.result.output) == (True, '{"a": 1}')
        assert action.client is None
        await server.wait(lambda: server.closed == 1)
    assert [r.connection for r in server.seen] == [0, 0, 0]
    assert server.seen[0].header("content-type") == "application/json"


# --- the hand parser agrees with h11 ---------------------------------------------------------------

_names = st.sampled_from(["X-A", "x-a", "Server", "Content-Type", "Retry-After", "Set-Cookie", "a!#$%&'*+.^_`|~"])
_blanks = st.sampled_from(["", " ", "\t", "  ", " \t"])
_words = st.text(alphabet=st.sampled_from(list("ab1:;,=\"/\x01\x7f") + ["\u00e9", "\u20ac"]), min_size=1, max_size=5)
_values = st.lists(st.tuples(_blanks, _words), max_size=3).map(lambda parts: "".join(b + w for b, w in parts).strip())
_reasons = st.text(alphabet=st.sampled_from(list("OK not\t!\x01:") + ["\u00e9"]), max_size=8)


@given(
    status=st.integers(min_value=200, max_value=999),
    reason=st.one_of(st.none(), _reasons),
    headers=st.lists(st.tuples(_names, _blanks, _values, _blanks), max_size=5),
)
def test_the_hand_parser_reads_every_plain_head_as_h11_does(status, reason, headers):
    lines = [f"HTTP/1.1 {status}" + ("" if reason is None else f" {reason}")]
    lines += [f"{name}:{before}{value}{after}" for name, before, value, after in headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    state = h11.Connection(h11.CLIENT)
    state.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    state.send(h11.EndOfMessage())
    state.receive_data(head)
    event = state.next_event()
    assert isinstance(event, h11.Response)
    assert parse_plain_head(head) == (event.status_code, list(event.headers))


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\n",
    b"HTTP/1.1 200 OK\r\nX-Long: a\r\n folded\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n",
    b" HTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
])
def test_heads_that_are_not_plain_are_left_to_h11(head):
    assert parse_plain_head(head) is None
