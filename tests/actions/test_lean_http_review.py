"""Review of the lean HTTP client (issue #15): what a hostile or broken peer can do to it.

The lean client (`postee.actions.lean_http`) writes request heads by hand and parses reply heads by hand,
so this file looks for the ways that goes wrong where httpx/h11 would not:

- request smuggling and header injection: what comes from an event (a body), a config header or a URL,
  and what comes from the remote (a redirect `Location`) never changes the request head;
- reply heads a server gets wrong (Content-Length forms, status lines, a head that never ends) are
  understood as httpx understands them, and cost bounded memory;
- the pool: a connection whose exchange was cancelled or cut is never reused, the connection limit
  holds, `aclose` closes everything even when it runs in a cancelled scope (daemon shutdown);
- TLS: a certificate for another name fails (not retryable), SNI is sent;
- redirects keep or drop `Authorization` and cookies exactly as httpx does.

Most tests are differential: the same exchange through the httpx client `open_http_client` builds and
through the lean client, against the same raw TCP (or TLS) server on 127.0.0.1 port 0; the outcome and
the bytes the server received must be identical.
"""

from __future__ import annotations

import ssl
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from postee.actions import ActionError
from postee.actions.httpclient import open_http_client, open_lean_client, request
from postee.actions.lean_http import LeanClient
from tests.helpers.raw_http import Answer, Seen, Server, hang, open_server

TIMEOUT = 5.0


def reply(status: int = 200, body: bytes = b"ok", *headers: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status, len(body), b"".join(header + b"\r\n" for header in headers), body)


# --- the differential harness ---------------------------------------------------------------------

async def outcome(client: Any, method: str, url: str, **kwargs: Any) -> tuple[Any, ...]:
    """What `request` made of one exchange: status and body, or the `ActionError` (message, retryable)."""
    try:
        result = await request(client, method, url, **kwargs)
    except ActionError as exc:
        return ("error", exc.message, exc.retryable)
    return ("ok", result.status, result.body)


async def through_both(server: Server, method: str, url: str, *, verify: Any = True, **kwargs: Any
                       ) -> tuple[tuple[Any, ...], list[tuple[bytes, bytes]]]:
    """The outcome and what the server received, through httpx and then the lean client: they must match."""
    runs = []
    for opener in (open_http_client, open_lean_client):
        del server.seen[:]
        client = await opener(timeout=TIMEOUT, verify=verify)
        if isinstance(client, LeanClient):
            assert client.plan(method, url, **kwargs) is not None, "the lean client would leave it to httpx"
        try:
            result = await outcome(client, method, url, **kwargs)
        finally:
            await client.aclose()
        runs.append((result, [(seen.head, seen.body) for seen in server.seen]))
    assert runs[0] == runs[1]
    return runs[1]


@pytest.fixture
def slow_autojump_clock():
    """Virtual time that jumps once the run has been idle 20 ms of real time (loopback I/O still happens)."""
    return trio.testing.MockClock(autojump_threshold=0.02)


# --- request smuggling, header injection ----------------------------------------------------------

SMUGGLE = b"x\r\n\r\nPOST /smuggled HTTP/1.1\r\nHost: evil\r\nContent-Length: 0\r\n\r\n"


async def test_a_body_that_looks_like_a_request_stays_one_body():
    # The http action's body is rendered from the event: whatever it holds, it is the body, framed by its length.
    async with open_server(lambda seen: reply(200, seen.body)) as server:
        result, wire = await through_both(server, "POST", server.url + "/hook", content=SMUGGLE)
    assert result == ("ok", 200, SMUGGLE)
    assert wire == [(wire[0][0], SMUGGLE)] and b"Content-Length: %d" % len(SMUGGLE) in wire[0][0]


@pytest.mark.parametrize("value", [
    "a\r\nX-Injected: 1", "a\nX-Injected: 1", "a\rX-Injected: 1", "a\x00b", "a\x0bb", "a\x7fb",
])
async def test_a_header_value_with_a_line_break_or_control_never_reaches_the_wire(value):
    # Header values come from the config; one the lean client would have to escape goes to httpx, which refuses it.
    async with open_server(lambda seen: reply()) as server:
        async with await open_lean_client(timeout=TIMEOUT) as client:
            assert client.plan("POST", server.url + "/hook", headers={"X-Token": value}, content=b"1") is None
            kind, *_ = await outcome(client, "POST", server.url + "/hook", headers={"X-Token": value}, content=b"1")
    if "\r" in value or "\n" in value or "\x00" in value:
        assert kind == "error"  # h11 refuses it; DEL, VT and non-ASCII go out inside their one header line
    assert all(b"X-Injected" not in seen.head for seen in server.seen)


@pytest.mark.parametrize("path", ["/a\r\nX-Injected: 1", "/a\nb", "/a\x00b", "/a?q=\r\nX-Injected: 1", "/a\tb"])
async def test_a_url_with_a_control_character_is_refused_before_anything_is_sent(path):
    async with open_server(lambda seen: reply()) as server:
        async with await open_lean_client(timeout=TIMEOUT) as client:
            assert client.plan("POST", server.url + path, content=b"1") is None
            result = await outcome(client, "POST", server.url + path, content=b"1")
    assert result[:1] == ("error",) and "unusable URL" in result[1] and result[2] is False
    assert server.seen == []


@pytest.mark.parametrize("path", ["/a%0D%0AX-Injected:%201", "/a b?c d", "/a?q=%00&r=\u00e9", "/%E2%80%A8"])
async def test_escaped_controls_in_a_url_stay_escaped_on_the_wire(path):
    async with open_server(lambda seen: reply()) as server:
        result, wire = await through_both(server, "POST", server.url + path, content=b"1")
    assert result == ("ok", 200, b"ok") and len(wire) == 1
    assert b"\nX-Injected" not in wire[0][0] and b"%" in wire[0][0].split(b" ")[1]


LOCATIONS = [
    b"/next%0D%0AX-Injected:%201",  # escaped CRLF: stays escaped
    b"/a\x01b",  # a control byte h11 lets through in a header value: httpx.URL refuses it
    b"/a\tb",
    b"/a b",  # a blank inside: escaped
    b"/caf\xc3\xa9?q=\xff",  # raw non-ASCII (utf-8, then latin-1)
    b"/a\x7fb",
    b"http://127.0.0.1:%d/absolute",
    b"//127.0.0.1:%d/protocol-relative",
    b"relative?x=1",
    b"?only-query",
    b"http:/no-host",  # a scheme and no host: httpx takes the request's host
    b"HTTP://127.0.0.1:%d/UPPER",
    b"http://[::1/broken",
    b"",
]


@pytest.mark.parametrize("location", LOCATIONS)
async def test_a_hostile_location_is_followed_or_refused_as_httpx_does(location):
    # The Location header comes from the remote server: it must never add a header line or a second request.
    def answer(seen: Seen) -> bytes:
        if seen.target == "/start/here":
            where = location.replace(b"%d", str(server.port).encode()) if b"%d" in location else location
            return reply(302, b"", b"Location: " + where)
        return reply(200, seen.target.encode())

    async with open_server(answer) as server:
        result, wire = await through_both(server, "POST", server.url + "/start/here", content=b"1")
    assert all(b"\nX-Injected" not in head and b"\r" not in head.replace(b"\r\n", b"") for head, _ in wire)
    assert len(wire) <= 2 or "TooManyRedirects" in result[1]  # an empty Location points back: a loop


@pytest.mark.parametrize("location", [b"mailto:someone@example.com", b"urn:isbn:0451450523"])
async def test_a_location_httpx_cannot_build_a_request_for_is_an_unusable_url(location):
    async with open_server(lambda seen: reply(302, b"", b"Location: " + location)) as server:
        result, wire = await through_both(server, "POST", server.url + "/start", content=b"1")
    assert result[0] == "error" and "unusable URL" in result[1] and result[2] is False
    assert len(wire) == 1


# --- reply heads a server gets wrong ----------------------------------------------------------------

HEADS = {
    "plus length": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    "minus length": b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
    "blanks around length": b"HTTP/1.1 200 OK\r\nContent-Length:   2  \r\n\r\nok",
    "length list": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
    "different lengths in a list": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
    "leading zeros": b"HTTP/1.1 200 OK\r\nContent-Length: 0002\r\n\r\nok",
    "hex length": b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok",
    "empty length": b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nok",
    "huge length": b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nok",
    "18 nines": b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\nok",
    "duplicate length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok",
    "length and chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"2\r\nok\r\n0\r\n\r\n",
    "chunked then identity": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
    "chunked twice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"2\r\nok\r\n0\r\n\r\n",
    "space before colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "four-digit status": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "two-digit status": b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok",
    "status 099": b"HTTP/1.1 099 OK\r\nContent-Length: 2\r\n\r\nok",
    "status 999": b"HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.2": b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "lower-case version": b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "two blanks before reason": b"HTTP/1.1 200  OK\r\nContent-Length: 2\r\n\r\nok",
    "control byte in reason": b"HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok",
    "vertical tab in reason": b"HTTP/1.1 200 O\x0bK\r\nContent-Length: 2\r\n\r\nok",
    "NUL in a value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "bare CR in a value": b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok",
    "no colon": b"HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 2\r\n\r\nok",
    "CR LF LF end": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok",
    "204 with a length": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "304 with chunked": b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    "Connection: close, keep-alive": b"HTTP/1.1 200 OK\r\nConnection: keep-alive, CLOSE\r\nContent-Length: 2\r\n\r\nok",
}


@pytest.mark.parametrize("name", list(HEADS))
async def test_a_malformed_or_odd_reply_head_is_read_as_httpx_reads_it(name):
    async with open_server(lambda seen: Answer(HEADS[name], close=True)) as server:
        await through_both(server, "POST", server.url + "/hook", content=b"1")


async def test_a_head_that_never_ends_fails_within_bounded_memory(slow_autojump_clock):
    # Header lines for ever, no blank line: the client must give up at h11's limit (100 KiB) as httpx
    # does, not buffer until the read times out (or memory runs out).
    sent = []

    async def endless_head(stream: trio.abc.Stream) -> None:
        line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
        total = 0
        for _ in range(16 * 1024):  # at most 16 MiB, then stop and wait
            await stream.send_all(line * 16)
            total += 16 * len(line)
            sent.append(total)
        await hang(stream)

    async with open_server(lambda seen: Answer(b"HTTP/1.1 200 OK\r\n", then=endless_head)) as server:
        result, _ = await through_both(server, "POST", server.url + "/hook", content=b"1")
    assert result[:1] == ("error",)
    assert "RemoteProtocolError" in result[1] and "timed out" not in result[1]
    assert sent[-1] < 16 * 1024 * 16 * 1016  # the client hung up before the server ran out of lines


async def test_a_reply_trickling_forever_is_bounded_by_the_limit(slow_autojump_clock):
    # httpx bounds each read, not the whole body; the caller's limit is what bounds a body without end.
    async def trickle(stream: trio.abc.Stream) -> None:
        for _ in range(10_000):
            await trio.sleep(1.0)
            await stream.send_all(b"z" * 10)
        await hang(stream)

    async with open_server(lambda seen: Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n",
                                                then=trickle)) as server:
        async with await open_lean_client(timeout=TIMEOUT) as client:
            start = trio.current_time()
            result = await request(client, "POST", server.url + "/hook", content=b"1", limit=100)
            elapsed = trio.current_time() - start
        await server.wait(lambda: server.closed == 1)  # cut: the connection is closed, not kept
    assert result.body == b"z" * 100
    assert 10.0 <= elapsed < 12.0


# --- the pool -------------------------------------------------------------------------------------

async def test_a_request_cancelled_while_its_body_is_being_written_is_not_reused():
    # The server reads nothing, so an 8 MiB body blocks in send_all (more than the socket buffers take:
    # a receive window that never grows, a send buffer of at most 4 MiB); cancelled there, the connection
    # holds half a request: the next request must go on a new connection.
    stalled = trio.Event()

    async def stall_then_serve(stream: trio.SocketStream) -> None:
        if not stalled.is_set():
            stalled.set()
            await trio.sleep_forever()
        await server.handle(stream)

    server = Server(lambda seen: reply(200, b"second"))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, stall_then_serve, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/hook"
        async with await open_lean_client(timeout=TIMEOUT) as client:
            with trio.move_on_after(0.5) as scope:
                await request(client, "POST", url, content=b"b" * (8 << 20))
            assert scope.cancelled_caught
            assert client._open == set() and client._idle_count == 0
            result = await request(client, "POST", url, content=b"2")
        nursery.cancel_scope.cancel()
    assert result.body == b"second"
    assert [seen.body for seen in server.seen] == [b"2"]


async def test_a_request_cancelled_mid_body_leaves_no_bytes_for_the_next_reply():
    # Half a reply body was read when the request is cancelled: were the connection reused, the rest of
    # that body would be read as the next reply.
    first = trio.Event()

    def answer(seen: Seen) -> Answer:
        if seen.target == "/half":
            first.set()
            return Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + b"h" * 20, then=hang)
        return Answer(reply(200, b"fresh"))

    async with open_server(answer) as server:
        async with await open_lean_client(timeout=TIMEOUT) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(outcome, client, "POST", server.url + "/half")
                await first.wait()
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            result = await request(client, "POST", server.url + "/next", content=b"2")
        await server.wait(lambda: server.closed == 2)
    assert result.body == b"fresh"
    assert [seen.connection for seen in server.seen] == [0, 1]


async def test_the_connection_limit_holds_under_concurrency():
    release = trio.Event()

    async def wait_then_answer(stream: trio.abc.Stream) -> None:
        await release.wait()
        await stream.send_all(reply(200, b"done"))

    async with open_server(lambda seen: Answer(then=wait_then_answer, keep=True)) as server:
        context = await trio.to_thread.run_sync(ssl.create_default_context)
        client = LeanClient(await open_http_client(timeout=TIMEOUT), context, TIMEOUT, max_connections=2)
        results = []

        async def post(index: int) -> None:
            results.append(await request(client, "POST", f"{server.url}/{index}", content=b"%d" % index))

        async with client, trio.open_nursery() as nursery:
            for index in range(6):
                nursery.start_soon(post, index)
            await server.wait(lambda: len(server.seen) == 2)
            await trio.testing.wait_all_tasks_blocked()
            assert server.max_open == 2 and len(server.seen) == 2
            release.set()
    assert [result.body for result in results] == [b"done"] * 6
    assert server.max_open == 2


async def test_aclose_in_a_cancelled_scope_still_closes_every_connection_and_the_httpx_client():
    # Actions are closed by `async with action:`, whose exit runs in a cancelled scope when the daemon
    # shuts down: httpcore shields its connection closing; the lean client must close all of them too.
    async with open_server(lambda seen: reply()) as server:
        client = await open_lean_client(timeout=TIMEOUT)
        async with trio.open_nursery() as nursery:
            for index in range(3):
                nursery.start_soon(request, client, "POST", f"{server.url}/{index}")
        assert client._idle_count == 3
        connections = [connection for idle in client._idle.values() for connection in idle]
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.aclose()
        assert all(connection.socket.fileno() == -1 for connection in connections)
        assert client.fallback.is_closed
        await server.wait(lambda: server.closed == 3)


# --- TLS ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_a_certificate_for_another_name_fails_and_is_not_retryable(ca):
    async with open_server(lambda seen: reply(), tls=ca.issue_cert("other.example")) as server:
        result, wire = await through_both(server, "POST", server.url + "/hook", verify=trusting(ca), content=b"1")
    assert result[0] == "error" and result[2] is False
    assert "TLS certificate verification failed" in result[1]
    assert wire == []


async def test_sni_names_the_host_and_the_certificate_is_checked_against_it(ca):
    async with open_server(lambda seen: reply(), tls=ca.issue_cert("localhost", "127.0.0.1")) as server:
        url = server.url.replace("127.0.0.1", "localhost") + "/hook"
        result, _ = await through_both(server, "POST", url, verify=trusting(ca), content=b"1")
    assert result == ("ok", 200, b"ok")
    assert server.server_names == ["localhost", "localhost"]


async def test_a_redirect_from_https_to_http_drops_authorization_as_httpx_does(ca):
    async with open_server(lambda seen: reply(200, (seen.header("authorization") or "-").encode())) as plain:
        target = (plain.url + "/landed").encode()

        def answer(seen: Seen) -> bytes:
            return reply(302, b"", b"Location: " + target, b"Set-Cookie: s=1; Path=/")

        async with open_server(answer, tls=ca.issue_cert("127.0.0.1")) as secure:
            url = secure.url.replace("https://", "https://user:pw@") + "/start"
            for headers in ({}, {"Authorization": "Bearer from-config"}):
                result, wire = await through_both(secure, "POST", url, verify=trusting(ca), content=b"1",
                                                  headers=headers)
                assert result == ("ok", 200, b"-")
                assert len(wire) == 1


# --- redirects: Authorization and cookies across origins -------------------------------------------

@pytest.mark.parametrize(("userinfo", "headers", "final"), [
    # no cookie jar (Postee's Go client has none): what the hops set never comes back
    ("user:pw@", {"Cookie": "given=1", "X-Api-Key": "k"}, b"-|-"),
    ("", {"Authorization": "Bearer t", "Cookie": "given=1", "X-Api-Key": "k"}, b"-|-"),
])
async def test_a_redirect_to_another_host_keeps_and_drops_authorization_and_cookies_as_httpx_does(
    userinfo, headers, final
):
    # 127.0.0.1 sets a cookie and sends to localhost (another host, same port), which sends back.
    def answer(seen: Seen) -> bytes:
        port = (seen.header("host") or "").rsplit(":", 1)[1].encode()
        hops = {
            "/start": b"Location: http://localhost:%s/away" % port,
            "/away": b"Location: http://127.0.0.1:%s/back" % port,
            "/back": b"Location: /final",
        }
        if seen.target in hops:
            return reply(307, b"", hops[seen.target], b"Set-Cookie: at%s=1; Path=/" % seen.target[1:].encode())
        return reply(200, b"%s|%s" % ((seen.header("authorization") or "-").encode(),
                                       (seen.header("cookie") or "-").encode()))

    async with open_server(answer) as server:
        url = server.url.replace("http://", f"http://{userinfo}") + "/start"
        result, wire = await through_both(server, "POST", url, content=b"body", headers=headers)
    assert result == ("ok", 200, final)
    assert [head.split(b" ")[1] for head, _ in wire] == [b"/start", b"/away", b"/back", b"/final"]
    assert [body for _, body in wire] == [b"body"] * 4
    assert b"Authorization: " in wire[0][0] and b"Cookie: given=1" in wire[0][0]
    away = wire[1][0]
    assert b"Authorization" not in away and b"Cookie" not in away and b"X-Api-Key: k" in away


@pytest.mark.parametrize("opener", [open_http_client, open_lean_client])
async def test_a_non_ascii_cookie_from_the_remote_does_not_break_later_requests(opener):
    def answer(seen: Seen) -> bytes:
        return reply(200, b"ok", b"Set-Cookie: team=Z\xc3\xbcrich; Path=/")

    crash = None
    async with open_server(answer) as server:
        async with await opener(timeout=TIMEOUT) as client:
            first = await outcome(client, "POST", server.url + "/hook", content=b"1")
            try:
                second = await outcome(client, "POST", server.url + "/hook", content=b"2")
            except UnicodeEncodeError as exc:
                crash = exc
    assert crash is None, f"a raw {crash!r} instead of an ActionError"
    assert first == ("ok", 200, b"ok")
    assert second[0] in ("ok", "error")
