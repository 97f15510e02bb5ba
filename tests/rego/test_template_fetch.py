"""`url:` templates are fetched bounded and over https (issue #11, point 5), from real local servers.

A template download is read as a stream and abandoned past 1 MiB; plain http is refused unless the
host is loopback (also when a redirect leads there); every error names the template and the URL.
"""

from __future__ import annotations

import pytest
import trio

from postee.rego.library import TemplateLibrary, bundled_templates_dir
from postee.rego.render import MAX_TEMPLATE_BYTES, TemplateError, TemplateSpec, load_template

TEMPLATE = 'package remote\n\ntitle := "remote"\nresult := input.image\n'
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def library():
    return TemplateLibrary.load(bundled_templates_dir())


class Server:
    """A raw HTTP/1.1 server on 127.0.0.1: `/ok`, `/endless` (chunked, never ends), `/declared-big`
    (a Content-Length over the cap), `/to-http` (a redirect to a plain-http public address)."""

    def __init__(self) -> None:
        self.base = ""
        self.endless_sent = 0
        self.endless_closed = trio.Event()

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.base = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.fail_after(5):
                while b"\r\n\r\n" not in request:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    request += chunk
            path = request.split(b" ", 2)[1].decode()
            if path == "/ok":
                body = TEMPLATE.encode()
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                                      % (len(body), body))
            elif path == "/declared-big":
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                                      % (MAX_TEMPLATE_BYTES + 1))
                await stream.send_all(b"#" * 4096)
            elif path == "/to-http":
                await stream.send_all(b"HTTP/1.1 302 Found\r\nLocation: http://192.0.2.1/t.rego\r\n"
                                      b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            elif path == "/endless":
                await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                piece = b"%x\r\n%s\r\n" % (CHUNK, b"#" * CHUNK)
                try:
                    with trio.fail_after(10):
                        while True:
                            await stream.send_all(piece)
                            self.endless_sent += CHUNK
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                finally:
                    self.endless_closed.set()


@pytest.fixture
async def server(nursery):
    server = Server()
    await nursery.start(server.serve)
    return server


async def test_loopback_http_template_still_loads(server, library):
    template = await load_template(TemplateSpec("remote", url=f"{server.base}/ok"), library)
    assert template.origin == f"url {server.base}/ok"
    localhost = server.base.replace("127.0.0.1", "localhost")
    assert (await load_template(TemplateSpec("remote", url=f"{localhost}/ok"), library)).name == "remote"


async def test_a_download_is_abandoned_past_one_mib(server, library):
    assert MAX_TEMPLATE_BYTES == 1024 * 1024
    url = f"{server.base}/endless"
    with trio.fail_after(5), pytest.raises(TemplateError) as caught:
        await load_template(TemplateSpec("huge", url=url), library)
    message = str(caught.value)
    assert "template 'huge'" in message and url in message and "1 MiB" in message
    with trio.fail_after(5):
        await server.endless_closed.wait()
    # we stopped reading: what was sent is the cap plus what the socket buffers hold, not 10 s of data
    assert server.endless_sent < 16 * 1024 * 1024


async def test_a_declared_oversize_download_is_refused(server, library):
    url = f"{server.base}/declared-big"
    with trio.fail_after(5), pytest.raises(TemplateError, match=r"template 'big'.*1 MiB"):
        await load_template(TemplateSpec("big", url=url), library)


@pytest.mark.parametrize("url", ["http://192.0.2.1/t.rego", "http://example.invalid/t.rego", "ftp://127.0.0.1/t"])
async def test_plain_http_to_a_public_host_is_refused_without_connecting(url, library):
    with trio.fail_after(2), pytest.raises(TemplateError) as caught:
        await load_template(TemplateSpec("remote", url=url), library)
    message = str(caught.value)
    assert "template 'remote'" in message and url in message and "https" in message


async def test_a_redirect_to_plain_http_is_refused(server, library):
    url = f"{server.base}/to-http"
    with trio.fail_after(2), pytest.raises(TemplateError) as caught:
        await load_template(TemplateSpec("moved", url=url), library)
    message = str(caught.value)
    assert "template 'moved'" in message and "http://192.0.2.1/t.rego" in message and "https" in message
