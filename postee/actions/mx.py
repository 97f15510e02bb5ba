"""MX lookup for the email action's `use-mx`: a minimal DNS client (RFC 1035), asynchronous on Trio sockets.

Only what delivery needs: the MX records of one domain, asked over UDP (again over TCP when the
answer is truncated) of each nameserver in turn, under a timeout each. A domain without MX records
is its own mail host (RFC 5321 §5.1); a null MX refuses mail. The nameservers are `mx-resolver` or
those of /etc/resolv.conf.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterable

import trio

from postee.actions.smtp import Endpoint

DNS_PORT = 53
RESOLV_CONF = "/etc/resolv.conf"
DEFAULT_NAMESERVER = "127.0.0.1"
"""Asked when resolv.conf names no nameserver, as the C library does."""

DNS_QUERY_TIMEOUT = 5.0
"""Seconds one nameserver gets to answer (capped by the session's timeout)."""

DNS_MAX_UDP = 4096
DNS_TYPE_MX = 15
DNS_CLASS_IN = 1
DNS_FLAG_RESPONSE = 0x8000
DNS_FLAG_TRUNCATED = 0x0200
DNS_FLAG_RECURSION_DESIRED = 0x0100
DNS_RCODE_NXDOMAIN = 3
DNS_MAX_NAME_STEPS = 255
"""Labels and compression pointers read for one name before the answer is called malformed (loops)."""


class MxLookupError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def system_nameservers(path: str = RESOLV_CONF) -> tuple[Endpoint, ...]:
    """The `nameserver` lines of resolv.conf (blocking read: call it in a thread)."""
    servers: list[Endpoint] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    servers.append(Endpoint(fields[1].partition("%")[0], DNS_PORT))
    except OSError:
        pass
    return tuple(servers) or (Endpoint(DEFAULT_NAMESERVER, DNS_PORT),)


async def lookup_mx(domain: str, nameservers: Iterable[Endpoint], timeout: float) -> list[str]:
    """The mail hosts of `domain`, by preference; the domain itself when it has no MX (RFC 5321 §5.1)."""
    try:
        qname = domain.rstrip(".").encode("idna")
    except UnicodeError:
        raise MxLookupError(f"MX {domain}: not a valid domain name", retryable=False) from None
    errors: list[str] = []
    for server in nameservers:
        query_id = secrets.randbits(16)
        query = _dns_query(query_id, qname)
        try:
            with trio.fail_after(timeout):
                response = await _ask_udp(server, query)
                if _flags(response) & DNS_FLAG_TRUNCATED:
                    response = await _ask_tcp(server, query)
            records = parse_mx_response(response, query_id)
        except MxLookupError as exc:
            if not exc.retryable:
                raise MxLookupError(f"MX {domain}: {exc}", retryable=False) from None
            errors.append(f"{server}: {exc}")
            continue
        except trio.TooSlowError:
            errors.append(f"{server}: timed out")
            continue
        except OSError as exc:
            errors.append(f"{server}: {type(exc).__name__}: {exc}")
            continue
        if not records:
            return [domain]
        if len(records) == 1 and records[0][1] == "":
            raise MxLookupError(f"MX {domain}: the domain accepts no mail (null MX)", retryable=False)
        return [host for _, host in sorted(records, key=lambda record: record[0]) if host]
    raise MxLookupError(f"MX {domain}: no answer ({'; '.join(errors) or 'no nameserver'})", retryable=True)


def _dns_query(query_id: int, qname: bytes) -> bytes:
    labels = b"".join(bytes([len(label)]) + label for label in qname.split(b".") if label)
    return (
        struct.pack("!6H", query_id, DNS_FLAG_RECURSION_DESIRED, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!2H", DNS_TYPE_MX, DNS_CLASS_IN)
    )


def _flags(response: bytes) -> int:
    return struct.unpack_from("!H", response, 2)[0] if len(response) >= 4 else 0


async def _ask_udp(server: Endpoint, query: bytes) -> bytes:
    infos = await trio.socket.getaddrinfo(server.host, server.port, type=trio.socket.SOCK_DGRAM)
    family, kind, proto, _, address = infos[0]
    with trio.socket.socket(family, kind, proto) as sock:
        await sock.connect(address)  # a connected socket only hears from that server
        await sock.send(query)
        while True:
            response = await sock.recv(DNS_MAX_UDP)
            if response[:2] == query[:2]:  # anything else is a stray or late answer
                return response


async def _ask_tcp(server: Endpoint, query: bytes) -> bytes:
    stream = await trio.open_tcp_stream(server.host, server.port)
    async with stream:
        await stream.send_all(struct.pack("!H", len(query)) + query)
        (length,) = struct.unpack("!H", await _receive_exactly(stream, 2))
        return await _receive_exactly(stream, length)


async def _receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise MxLookupError("the nameserver closed the connection", retryable=True)
        data += chunk
    return bytes(data)


def parse_mx_response(response: bytes, query_id: int) -> list[tuple[int, str]]:
    """(preference, host) of the MX answers; [] when the domain exists without MX. Raises MxLookupError."""
    try:
        ident, flags, questions, answers, _, _ = struct.unpack_from("!6H", response, 0)
        if ident != query_id or not flags & DNS_FLAG_RESPONSE:
            raise MxLookupError("not an answer to our query", retryable=True)
        rcode = flags & 0xF
        if rcode == DNS_RCODE_NXDOMAIN:
            raise MxLookupError("no such domain", retryable=False)
        if rcode != 0:
            raise MxLookupError(f"DNS error (rcode {rcode})", retryable=True)
        offset = 12
        for _ in range(questions):
            _, offset = _read_name(response, offset)
            offset += 4
        records: list[tuple[int, str]] = []
        for _ in range(answers):
            _, offset = _read_name(response, offset)
            rtype, rclass, _ttl, length = struct.unpack_from("!2HIH", response, offset)
            offset += 10
            if rtype == DNS_TYPE_MX and rclass == DNS_CLASS_IN:
                (preference,) = struct.unpack_from("!H", response, offset)
                host, _ = _read_name(response, offset + 2)
                records.append((preference, host))
            offset += length
        return records
    except (struct.error, IndexError, UnicodeError):
        raise MxLookupError("malformed DNS answer", retryable=True) from None


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The (possibly compressed) name at `offset`, and the offset just after it."""
    labels: list[str] = []
    end: int | None = None
    for _ in range(DNS_MAX_NAME_STEPS):
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length == 0:
            return ".".join(labels), (end if end is not None else offset + 1)
        label = data[offset + 1 : offset + 1 + length]
        if len(label) != length:
            raise IndexError("label past the end")
        labels.append(label.decode("ascii"))
        offset += 1 + length
    raise IndexError("name too long, or a pointer loop")
