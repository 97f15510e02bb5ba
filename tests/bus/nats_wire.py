"""A few lines of the NATS client protocol over raw Trio streams: enough to test a server without a client library.

The server greets every connection with `INFO {json}`; with TLS (not "handshake first") the client
upgrades the same TCP connection after reading it; then `CONNECT {json}` and `PING` get `+OK`
(when verbose) and `PONG`, or `-ERR '...'`.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import trio

from postee.bus.nkeys_util import public_key_from_seed, sign_nonce

WIRE_TIMEOUT = 5.0
MAX_LINE = 1 << 20


class NatsWire:
    def __init__(self, stream: trio.abc.Stream, info: dict[str, Any]) -> None:
        self.stream = stream
        self.info = info
        self._buffer = bytearray()

    @classmethod
    async def connect(cls, host: str, port: int) -> NatsWire:
        """Open a TCP connection and read the server's INFO."""
        with trio.fail_after(WIRE_TIMEOUT):
            stream = await trio.open_tcp_stream(host, port)
        wire = cls(stream, {})
        line = await wire.read_line()
        assert line.startswith("INFO "), line
        wire.info = json.loads(line[5:])
        return wire

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str = "127.0.0.1") -> None:
        """Upgrade to TLS (after INFO, as nats-server expects); raises on a failed handshake."""
        assert not self._buffer
        tls = trio.SSLStream(self.stream, context, server_hostname=server_hostname)
        with trio.fail_after(WIRE_TIMEOUT):
            await tls.do_handshake()
        self.stream = tls

    async def read_line(self) -> str:
        with trio.fail_after(WIRE_TIMEOUT):
            while b"\r\n" not in self._buffer:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise EOFError(f"connection closed; got {bytes(self._buffer)!r}")
                self._buffer += chunk
                assert len(self._buffer) < MAX_LINE
        line, _, rest = bytes(self._buffer).partition(b"\r\n")
        self._buffer[:] = rest
        return line.decode()

    async def send(self, text: str) -> None:
        with trio.fail_after(WIRE_TIMEOUT):
            await self.stream.send_all(text.encode())

    async def hello(self, *, seed: bytes | None = None, **fields: Any) -> list[str]:
        """CONNECT (verbose, signing the nonce with `seed` if given) + PING; the lines up to PONG or -ERR."""
        connect: dict[str, Any] = {"verbose": True, "pedantic": False, "protocol": 1, "lang": "python-test",
                                   "version": "0", "tls_required": isinstance(self.stream, trio.SSLStream)}
        if seed is not None:
            connect["nkey"] = public_key_from_seed(seed)
            connect["sig"] = sign_nonce(seed, self.info["nonce"])
        connect.update(fields)
        await self.send(f"CONNECT {json.dumps(connect)}\r\nPING\r\n")
        lines: list[str] = []
        for _ in range(5):
            line = await self.read_line()
            lines.append(line)
            if line == "PONG" or line.startswith("-ERR"):
                break
        return lines

    async def aclose(self) -> None:
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                pass

    async def __aenter__(self) -> NatsWire:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
