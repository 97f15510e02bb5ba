"""The email action against a real SMTP server (aiosmtpd) and, for `use-mx`, a real local DNS server.

aiosmtpd's Controller runs its asyncio loop in a thread on 127.0.0.1 (port 0); its handler records
each accepted message (envelope, TLS, login) before answering DATA, so once `send` returns the
record is there. STARTTLS uses a trustme certificate; AUTH uses aiosmtpd's authenticator.
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from postee.actions import ActionConfigError, ActionError, ActionSpec, Delivery, send_with_retries
from postee.actions.email import OWNER_PLACEHOLDER, EmailAction
from postee.actions.mx import DNS_TYPE_MX, lookup_mx, system_nameservers
from postee.actions.smtp import parse_endpoint

TITLE = "Critical: alpine:3.18 — 2 vulnerabilities"
DESCRIPTION = "<h1>alpine:3.18</h1><p>CVE-2024-1 <b>HIGH</b> — fixé</p>"
DELIVERY = Delivery(content={"title": TITLE, "description": DESCRIPTION}, event={"image": "alpine:3.18"})
USER, PASSWORD = "postee", "s3cret-pa55"


# --- a real SMTP server -------------------------------------------------------------------------


@attrs.frozen
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    tls: bool
    login: bytes | None

    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.content, policy=email.policy.default)


class Handler:
    """Records accepted messages; RCPT and DATA answers can be scripted (a reply per recipient, a queue for DATA)."""

    def __init__(self, *, rcpt: dict[str, list[str]] | None = None, data: list[str] | None = None) -> None:
        self.rcpt = {address: list(replies) for address, replies in (rcpt or {}).items()}
        self.data = list(data or [])
        self.received: list[Received] = []
        self.data_attempts = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        replies = self.rcpt.get(address)
        if replies:
            reply = replies.pop(0)
            if not reply.startswith("250"):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.data_attempts += 1
        if self.data:
            reply = self.data.pop(0)
            if not reply.startswith("250"):
                return reply
        login = session.auth_data if session.authenticated else None
        self.received.append(
            Received(
                envelope.mail_from, tuple(envelope.rcpt_tos), envelope.original_content, session.ssl is not None, login
            )
        )
        return "250 Message accepted for delivery"


class _Controller(Controller):
    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]  # bound to port 0: learn the real one
        super()._trigger_server()


@asynccontextmanager
async def smtp_server(handler: Handler | None = None, **smtp_options: Any) -> AsyncIterator[_Controller]:
    controller = _Controller(
        handler or Handler(), hostname="127.0.0.1", port=0, server_hostname="smtp.test", **smtp_options
    )
    await trio.to_thread.run_sync(controller.start)
    try:
        yield controller
    finally:
        await trio.to_thread.run_sync(controller.stop)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_context(ca) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def accept_login(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


def email_action(port: int, **settings: Any) -> EmailAction:
    return EmailAction.from_spec(
        ActionSpec(
            name="mail",
            type="email",
            settings={
                "host": "127.0.0.1",
                "port": port,
                "sender": "Postee <postee@example.com>",
                "recipients": ["sec@example.com", "ops@example.org"],
                "retry-backoff": "0.01s",
                "timeout": "5s",
                **settings,
            },
        )
    )


async def send(action: EmailAction, delivery: Delivery = DELIVERY):
    async with action:
        return await action.send(delivery)


async def send_error(action: EmailAction, delivery: Delivery = DELIVERY) -> ActionError:
    with pytest.raises(ActionError) as info:
        await send(action, delivery)
    return info.value


# --- delivery ------------------------------------------------------------------------------------


async def test_sends_an_html_mail_field_by_field():
    handler = Handler()
    async with smtp_server(handler) as server:
        result = await send(email_action(server.port, **{"client-host-name": "postee.example.com"}))
    [received] = handler.received
    assert received.mail_from == "postee@example.com"
    assert received.rcpt_tos == ("sec@example.com", "ops@example.org")
    assert not received.tls
    message = received.message()
    assert message["From"] == "Postee <postee@example.com>"
    assert message["To"] == "sec@example.com, ops@example.org"
    assert message["Subject"] == TITLE
    assert message.get_content_type() == "text/html"
    assert message.get_content_charset() == "utf-8"
    assert message.get_content().strip() == DESCRIPTION
    assert message["Date"] and message["Message-ID"].endswith("@example.com>")
    assert result.status == 250 and "Message accepted" in result.output


async def test_ehlo_uses_client_host_name():
    seen = []

    class Hello(Handler):
        async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
            seen.append(hostname)
            session.host_name = hostname
            return responses

    async with smtp_server(Hello()) as server:
        await send(email_action(server.port, **{"client-host-name": "postee.example.com"}))
        await send(email_action(server.port))
    assert seen == ["postee.example.com", "localhost"]


async def test_a_title_with_newlines_stays_one_subject_line():
    handler = Handler()
    delivery = Delivery(content={"title": "a\r\nBcc: victim@example.net\nb", "description": "<p>x</p>"})
    async with smtp_server(handler) as server:
        await send(email_action(server.port), delivery)
    message = handler.received[0].message()
    assert message["Subject"] == "a Bcc: victim@example.net b"
    assert message["Bcc"] is None
    assert handler.received[0].rcpt_tos == ("sec@example.com", "ops@example.org")


# --- STARTTLS --------------------------------------------------------------------------------------


async def test_starttls_is_used_when_offered(tls_context, ca_file):
    handler = Handler()
    async with smtp_server(handler, tls_context=tls_context, require_starttls=True) as server:
        await send(email_action(server.port, **{"ca-file": ca_file}))
    assert handler.received[0].tls


async def test_starttls_with_an_untrusted_certificate_is_not_retryable(tls_context):
    handler = Handler()
    async with smtp_server(handler, tls_context=tls_context, require_starttls=True) as server:
        error = await send_error(email_action(server.port))
    assert not error.retryable
    assert "certificate verification failed" in error.message
    assert handler.received == []


async def test_tls_verify_false_accepts_a_self_signed_server(tls_context):
    handler = Handler()
    async with smtp_server(handler, tls_context=tls_context, require_starttls=True) as server:
        await send(email_action(server.port, **{"tls-verify": False}))
    assert handler.received[0].tls


# --- AUTH ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("excluded", [[], ["PLAIN"]], ids=["plain", "login"])
async def test_authenticates_over_starttls(tls_context, ca_file, excluded):
    handler = Handler()
    options = {"auth_required": True, "authenticator": accept_login, "auth_exclude_mechanism": excluded}
    async with smtp_server(handler, tls_context=tls_context, **options) as server:
        await send(email_action(server.port, user=USER, password=PASSWORD, **{"ca-file": ca_file}))
    [received] = handler.received
    assert (received.tls, received.login) == (True, USER.encode())


async def test_refused_login_is_not_retryable_and_hides_the_password(tls_context, ca_file):
    handler = Handler()
    options = {"auth_required": True, "authenticator": accept_login}
    async with smtp_server(handler, tls_context=tls_context, **options) as server:
        action = email_action(server.port, user=USER, password="wrong-password", **{"ca-file": ca_file})
        error = await send_error(action)
    assert not error.retryable
    assert error.status == 535
    assert "authentication refused" in error.message
    assert "wrong-password" not in f"{error.message} {error.output} {error!r} {action!r} {action.credentials!r}"
    assert handler.received == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_login_in_clear_text_only_to_a_loopback_host():
    """Go's PlainAuth rule: no TLS offered is acceptable for localhost only (here the server is)."""
    handler = Handler()
    options = {"auth_required": True, "auth_require_tls": False, "authenticator": accept_login}
    async with smtp_server(handler, **options) as server:
        await send(email_action(server.port, user=USER, password=PASSWORD))
    assert handler.received[0].login == USER.encode()


def non_loopback_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("203.0.113.1", 9))  # TEST-NET-3: only the route matters
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_no_password_in_clear_text_to_another_host():
    address = non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback local address")
    handler = Handler()
    options = {"auth_required": True, "auth_require_tls": False, "authenticator": accept_login}
    controller = _Controller(handler, hostname=address, port=0, server_hostname="smtp.test", **options)
    await trio.to_thread.run_sync(controller.start)
    try:
        error = await send_error(email_action(controller.port, host=address, user=USER, password=PASSWORD))
    finally:
        await trio.to_thread.run_sync(controller.stop)
    assert not error.retryable and "refusing to send the password unencrypted" in error.message
    assert handler.received == []


async def test_credentials_without_server_auth_support_are_not_retryable():
    async with smtp_server(Handler()) as server:
        error = await send_error(email_action(server.port, user=USER, password=PASSWORD))
    assert not error.retryable and "no AUTH PLAIN or LOGIN" in error.message


# --- recipients ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "delivery",
    [
        Delivery(content={"title": "t", "description": "d", "owners": "a@x.test; b@y.test;"}),
        Delivery(
            content={"title": "t", "description": "d"}, event={"application_scope_owners": ["a@x.test", "b@y.test"]}
        ),
    ],
    ids=["content-owners", "event-owners"],
)
async def test_owner_placeholder_expands_to_the_owners(delivery):
    handler = Handler()
    async with smtp_server(handler) as server:
        await send(email_action(server.port, recipients=["sec@example.com", OWNER_PLACEHOLDER, "a@x.test"]), delivery)
    [received] = handler.received
    assert received.rcpt_tos == ("sec@example.com", "a@x.test", "b@y.test")
    assert received.message()["To"] == "sec@example.com, a@x.test, b@y.test"


async def test_placeholder_without_owners_and_nobody_else_is_not_retryable():
    handler = Handler()
    async with smtp_server(handler) as server:
        error = await send_error(email_action(server.port, recipients=[OWNER_PLACEHOLDER]))
    assert not error.retryable and "no recipients" in error.message
    assert handler.data_attempts == 0


async def test_a_retry_only_goes_to_the_recipients_still_missing():
    handler = Handler(rcpt={"ops@example.org": ["450 mailbox busy", "250 OK"]})
    async with smtp_server(handler) as server:
        async with email_action(server.port) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts) == (True, 2)
    assert [r.rcpt_tos for r in handler.received] == [("sec@example.com",), ("ops@example.org",)]


async def test_a_recipient_refused_for_good_is_reported_after_the_others_got_it():
    handler = Handler(rcpt={"ops@example.org": ["550 no such user"]})
    async with smtp_server(handler) as server:
        error = await send_error(email_action(server.port))
    assert not error.retryable and error.status == 550
    assert "delivered to 1 of 2" in error.message and "ops@example.org" in error.message
    assert [r.rcpt_tos for r in handler.received] == [("sec@example.com",)]


# --- failures and retries --------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "retryable"), [("451 try later", True), ("554 rejected as spam", False)])
async def test_smtp_reply_classes(reply, retryable):
    handler = Handler(data=[reply])
    async with smtp_server(handler) as server:
        error = await send_error(email_action(server.port))
    assert error.retryable is retryable
    assert error.status == int(reply[:3]) and reply[4:] in error.message
    assert handler.received == []


async def test_4xx_is_retried_per_policy():
    handler = Handler(data=["451 later", "421 still later"])
    async with smtp_server(handler) as server:
        async with email_action(server.port, retries=2) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, handler.data_attempts) == (True, 3, 3)
    assert len(handler.received) == 1


async def test_5xx_is_not_retried():
    handler = Handler(data=["550 no"])
    async with smtp_server(handler) as server:
        async with email_action(server.port, retries=3) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, handler.data_attempts) == (False, 1, 1)


async def test_server_down_is_retryable(closed_port_url):
    port = int(closed_port_url.rsplit(":", 1)[1].strip("/"))
    async with email_action(port, retries=1) as action:
        report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts) == (False, 2)
    assert report.error.retryable and "ConnectionRefusedError" in report.error.message


async def test_a_silent_server_times_out():
    with socket.socket() as listener:  # accepts connections (backlog) but never says hello
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        action = email_action(listener.getsockname()[1], timeout="0.2s", retries=0)
        started = trio.current_time()
        async with action:
            report = await send_with_retries(action, DELIVERY)
    assert not report.ok and report.error.retryable and "timed out" in report.error.message
    assert trio.current_time() - started < 10  # the 0.2s limit, not a hang


# --- config ----------------------------------------------------------------------------------------


def problems(**settings: Any) -> dict[str, str]:
    with pytest.raises(ActionConfigError) as info:
        EmailAction.from_spec(ActionSpec(name="mail", type="email", settings=settings))
    return dict(info.value.problems)


def test_missing_required_keys():
    assert problems() == {"host": "required", "sender": "required", "recipients": "required"}


def test_bad_values():
    found = problems(
        host="h", port=70000, sender="nobody", recipients=["ok@x.test", ""], user="u", **{"mx-resolver": "a:b:c"}
    )
    assert set(found) == {"port", "sender", "recipients[1]", "password", "mx-resolver"}


def test_use_mx_needs_no_host_but_addresses_with_domains():
    assert set(problems(sender="a@b.test", recipients=["root"], **{"use-mx": True})) == {"recipients[0]"}
    action = EmailAction.from_spec(
        ActionSpec(name="m", type="Email", settings={"sender": "a@b.test", "recipients": "x@y.test", "use-mx": "true"})
    )
    assert action.use_mx and action.recipients == ("x@y.test",) and action.port == 25


def test_system_nameservers(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.com\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\n")
    assert [str(e) for e in system_nameservers(str(conf))] == ["10.0.0.53:53", "[fe80::1]:53"]
    assert [str(e) for e in system_nameservers(str(tmp_path / "missing"))] == ["127.0.0.1:53"]


def test_parse_endpoint():
    assert str(parse_endpoint("127.0.0.1:5353", 53)) == "127.0.0.1:5353"
    assert str(parse_endpoint("[::1]", 53)) == "[::1]:53"
    assert parse_endpoint("host:0", 53) is None


# --- use-mx: a real DNS server on 127.0.0.1 (UDP and TCP, same port) ---------------------------------


def _encode_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label) + b"\0"


def dns_answer(query: bytes, zone: dict[str, list[tuple[int, str]] | None], *, truncate: bool) -> bytes:
    """The answer to `query` from `zone` (domain → MX records; None: NXDOMAIN; absent: NXDOMAIN)."""
    ident = query[:2]
    offset, labels = 12, []
    while query[offset]:
        labels.append(query[offset + 1 : offset + 1 + query[offset]].decode())
        offset += 1 + query[offset]
    question = query[12 : offset + 5]
    qtype = struct.unpack_from("!H", query, offset + 1)[0]
    records = zone.get(".".join(labels)) if qtype == DNS_TYPE_MX else []
    if records is None:
        return ident + struct.pack("!5H", 0x8183, 1, 0, 0, 0) + question
    if truncate and records:
        return ident + struct.pack("!5H", 0x8380, 1, 0, 0, 0) + question
    answers = b"".join(
        b"\xc0\x0c"  # a pointer to the question's name
        + struct.pack("!2HIH", DNS_TYPE_MX, 1, 60, 2 + len(_encode_name(host)))
        + struct.pack("!H", preference)
        + _encode_name(host)
        for preference, host in records
    )
    return ident + struct.pack("!5H", 0x8180, 1, len(records), 0, 0) + question + answers


@attrs.define
class DnsServer:
    port: int
    udp_queries: int = 0
    tcp_queries: int = 0


@asynccontextmanager
async def dns_server(zone: dict[str, Any], *, truncate: bool = False) -> AsyncIterator[DnsServer]:
    udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    [tcp] = await trio.open_tcp_listeners(port, host="127.0.0.1")
    server = DnsServer(port)

    async def serve_udp() -> None:
        while True:
            query, peer = await udp.recvfrom(4096)
            server.udp_queries += 1
            await udp.sendto(dns_answer(query, zone, truncate=truncate), peer)

    async def serve_tcp(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
                data += await stream.receive_some(4096)
            server.tcp_queries += 1
            answer = dns_answer(data[2:], zone, truncate=False)
            await stream.send_all(struct.pack("!H", len(answer)) + answer)

    with udp:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_udp)
            nursery.start_soon(trio.serve_listeners, serve_tcp, [tcp])
            yield server
            nursery.cancel_scope.cancel()


ZONE = {
    # 127.0.0.2 refuses (nothing listens there): the next exchanger, by preference, takes the mail
    "x.test": [(20, "localhost"), (10, "127.0.0.2")],
    "y.test": [(5, "127.0.0.1")],
    "null.test": [(0, "")],
    "gone.test": None,
}


def mx_action(smtp_port: int, dns_port: int, recipients: list[str], **settings: Any) -> EmailAction:
    return email_action(
        smtp_port,
        recipients=recipients,
        host=None,
        **{"use-mx": True, "mx-resolver": f"127.0.0.1:{dns_port}"},
        **settings,
    )


async def test_use_mx_delivers_per_domain_via_its_exchangers():
    handler = Handler()
    async with smtp_server(handler) as server, dns_server(ZONE) as dns:
        result = await send(mx_action(server.port, dns.port, ["a@x.test", "b@y.test", "c@x.test"]))
    assert sorted(r.rcpt_tos for r in handler.received) == [("a@x.test", "c@x.test"), ("b@y.test",)]
    assert {r.message()["To"] for r in handler.received} == {"a@x.test, b@y.test, c@x.test"}
    assert dns.udp_queries == 2 and result.status == 250


async def test_use_mx_never_sends_credentials(tls_context, ca_file):
    handler = Handler()
    async with smtp_server(handler, tls_context=tls_context) as server, dns_server(ZONE) as dns:
        await send(mx_action(server.port, dns.port, ["a@y.test"], user=USER, password=PASSWORD, **{"ca-file": ca_file}))
    [received] = handler.received
    assert received.tls and received.login is None


async def test_use_mx_falls_back_to_tcp_for_a_truncated_answer():
    handler = Handler()
    async with smtp_server(handler) as server, dns_server(ZONE, truncate=True) as dns:
        await send(mx_action(server.port, dns.port, ["b@y.test"]))
    assert (dns.udp_queries, dns.tcp_queries) == (1, 1)
    assert handler.received[0].rcpt_tos == ("b@y.test",)


@pytest.mark.parametrize(("domain", "reason"), [("gone.test", "no such domain"), ("null.test", "null MX")])
async def test_use_mx_undeliverable_domains_are_not_retryable(domain, reason):
    handler = Handler()
    async with smtp_server(handler) as server, dns_server(ZONE) as dns:
        error = await send_error(mx_action(server.port, dns.port, ["b@y.test", f"z@{domain}"]))
    assert not error.retryable and reason in error.message and f"z@{domain}" in error.message
    assert [r.rcpt_tos for r in handler.received] == [("b@y.test",)]


async def test_use_mx_without_an_answering_nameserver_is_retryable():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # receives queries, never answers
        silent.bind(("127.0.0.1", 0))
        action = mx_action(1, silent.getsockname()[1], ["b@y.test"], timeout="0.2s")
        error = await send_error(action)
    assert error.retryable and "timed out" in error.message


async def test_lookup_mx_orders_by_preference():
    async with dns_server(ZONE) as dns:
        hosts = await lookup_mx("x.test", [parse_endpoint(f"127.0.0.1:{dns.port}", 53)], 2.0)
    assert hosts == ["127.0.0.2", "localhost"]


# --- recipients taken from event content are bounded (issue #11, finding 5) ---------------------------

EMAIL_LOGGER = "postee.actions.email"


def owners_delivery(owners: Any) -> Delivery:
    return Delivery(content={"title": "t", "description": "d"}, event={"application_scope_owners": owners})


async def test_recipients_from_the_event_are_capped(caplog):
    owners = [f"owner{i}@x{i % 7}.test" for i in range(503)]
    handler = Handler()
    async with smtp_server(handler) as server:
        action = email_action(server.port, recipients=["sec@example.com", OWNER_PLACEHOLDER])
        with caplog.at_level("WARNING", logger=EMAIL_LOGGER):
            result = await send(action, owners_delivery(owners))
    [received] = handler.received
    assert received.rcpt_tos == ("sec@example.com", *owners[:50])
    assert "dropped 453 recipient(s) taken from the event" in result.output
    assert "453 over max-owner-recipients (50)" in caplog.text


async def test_owners_are_not_looked_at_without_the_placeholder(caplog):
    handler = Handler()
    async with smtp_server(handler) as server:
        with caplog.at_level("WARNING", logger=EMAIL_LOGGER):
            result = await send(email_action(server.port), owners_delivery(["bad owner"] * 3 + ["x@y.test"] * 60))
    assert handler.received[0].rcpt_tos == ("sec@example.com", "ops@example.org")
    assert "dropped" not in result.output and caplog.text == ""


async def test_max_owner_recipients_is_a_setting():
    handler = Handler()
    async with smtp_server(handler) as server:
        action = email_action(server.port, recipients=[OWNER_PLACEHOLDER], **{"max-owner-recipients": 2})
        await send(action, owners_delivery(["a@x.test", "b@x.test", "c@x.test"]))
    assert handler.received[0].rcpt_tos == ("a@x.test", "b@x.test")


async def test_recipient_domains_drop_event_recipients_elsewhere_but_never_configured_ones(caplog):
    owners = ["a@example.com", "b@evil.test", "c@team.example.com", "d@EXAMPLE.com", "e@example.com.evil.test"]
    handler = Handler()
    async with smtp_server(handler) as server:
        action = email_action(
            server.port,
            recipients=["ops@example.org", OWNER_PLACEHOLDER],
            **{"recipient-domains": ["example.com", "*.example.com"]},
        )
        with caplog.at_level("WARNING", logger=EMAIL_LOGGER):
            result = await send(action, owners_delivery(owners))
    [received] = handler.received
    assert received.rcpt_tos == ("ops@example.org", "a@example.com", "c@team.example.com", "d@EXAMPLE.com")
    assert "2 outside recipient-domains" in caplog.text and "2 outside recipient-domains" in result.output


async def test_no_recipient_left_after_the_domain_filter_is_a_clear_failure():
    handler = Handler()
    async with smtp_server(handler) as server:
        action = email_action(server.port, recipients=[OWNER_PLACEHOLDER], **{"recipient-domains": "example.com"})
        error = await send_error(action, owners_delivery("a@evil.test;b@evil.test"))
    assert not error.retryable
    assert "no recipients" in error.message and "2 outside recipient-domains" in error.message
    assert handler.data_attempts == 0


@pytest.mark.parametrize(
    "owner",
    [
        "a@x.test\r\nRCPT TO:<evil@evil.test>",
        "a@x.test\nBcc: evil@evil.test",
        "b@x.test, evil@evil.test",
        "Evil <evil@evil.test>",
        "<evil@evil.test>",
        "evil@evil.test>",
        '"quoted,local"@evil.test',
        "no-at-sign",
        "two@@evil.test",
        "a@-evil.test",
        "x" * 65 + "@evil.test",
    ],
)
async def test_an_owner_that_is_not_one_plain_address_is_dropped(owner, caplog):
    handler = Handler()
    async with smtp_server(handler) as server:
        action = email_action(server.port, recipients=["sec@example.com", OWNER_PLACEHOLDER])
        with caplog.at_level("WARNING", logger=EMAIL_LOGGER):
            result = await send(action, owners_delivery([owner, "good@x.test"]))
    [received] = handler.received
    assert received.rcpt_tos == ("sec@example.com", "good@x.test")
    message = received.message()
    assert message["To"] == "sec@example.com, good@x.test"
    assert message["Bcc"] is None and "evil" not in received.content.decode()
    assert "1 not a plain e-mail address" in caplog.text and "1 not a plain e-mail address" in result.output


def test_recipient_settings_are_checked():
    found = problems(
        host="h",
        sender="a@b.test",
        recipients=["x@y.test"],
        **{"recipient-domains": ["example.com", "bad domain", "*.", "a@b.test"], "max-owner-recipients": -1},
    )
    assert set(found) == {
        "recipient-domains[1]",
        "recipient-domains[2]",
        "recipient-domains[3]",
        "max-owner-recipients",
    }
