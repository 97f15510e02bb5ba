"""A TCP proxy on 127.0.0.1 that a test can cut and restore: one client's link, broken on demand.

A runner connected through it loses its link to the controller's nats-server (every connection is
closed, new ones are accepted and closed at once) while the controller and the server go on.
"""

from __future__ import annotations

import attrs
import trio

CHUNK = 65536


@attrs.define(eq=False)
class TcpProxy:
    target_port: int
    port: int = 0
    is_cut: bool = False
    connections: int = 0
    """Connections forwarded so far (a reconnect adds one)."""
    attempts: int = 0
    """Connections accepted so far, forwarded or (while cut) closed at once."""
    _scopes: set[trio.CancelScope] = attrs.field(factory=set)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def run(self, *, task_status: trio.TaskStatus[TcpProxy] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self)

    def cut(self) -> None:
        """Close every forwarded connection and refuse new ones until `restore()`."""
        self.is_cut = True
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self.is_cut = False

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            self.attempts += 1
            if self.is_cut:
                return
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                    self.connections += 1
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
                        nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)
                finally:
                    self._scopes.discard(scope)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, both: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(CHUNK):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    both.cancel()  # one side ended: end the other too
