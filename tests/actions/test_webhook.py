"""The webhook action against a real local HTTP(S) server."""

import pytest

from postee.actions import ActionError, ActionSpec, Delivery, build_action, send_with_retries
from postee.actions.httpclient import open_http_client, send_request
from tests.helpers.http_sink import Reply, open_http_sink, open_https_sink

DESCRIPTION = '{"image": "alpine:3.18", "vulnerabilities": [{"id": "CVE-2024-1", "severity": "HIGH"}]}'
DELIVERY = Delivery(content={"title": "t", "description": DESCRIPTION}, event={"x": 1}, route="r")


def webhook_spec(url, **settings):
    return ActionSpec(name="hook", type="Webhook", settings={"url": url, "retry-backoff": "0.01s", **settings})


async def test_posts_the_description_verbatim_as_json():
    async with open_http_sink([Reply(200, "thanks")]) as sink:
        async with build_action(webhook_spec(f"{sink.url}/in/path?k=v")) as action:
            result = await action.send(DELIVERY)
        [request] = await sink.wait_for(1)
    assert (result.status, result.output) == (200, "thanks")
    assert (request.method, request.path, request.query) == ("POST", "/in/path", "k=v")
    assert request.header("content-type") == "application/json"
    assert request.body == DESCRIPTION.encode()
    assert request.json()["vulnerabilities"][0]["id"] == "CVE-2024-1"
    assert request.header("postee-event") is None


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
async def test_any_2xx_is_success(status):
    async with open_http_sink([Reply(status)]) as sink:
        async with build_action(webhook_spec(sink.url)) as action:
            result = await action.send(DELIVERY)
    assert result.status == status


async def test_3xx_redirect_is_followed():
    async with open_http_sink([Reply(307, headers=(("Location", "/moved"),)), Reply(200)]) as sink:
        async with build_action(webhook_spec(f"{sink.url}/old")) as action:
            await action.send(DELIVERY)
        first, second = await sink.wait_for(2)
    assert (first.path, second.path) == ("/old", "/moved")
    assert second.body == DESCRIPTION.encode()


async def test_500_retried_then_success():
    async with open_http_sink([Reply(500), Reply(200)]) as sink:
        async with build_action(webhook_spec(sink.url)) as action:
            report = await send_with_retries(action, DELIVERY)
        assert (report.ok, report.attempts) == (True, 2)
        assert [r.body for r in sink.requests] == [DESCRIPTION.encode()] * 2


async def test_connection_refused(closed_port_url):
    async with build_action(webhook_spec(closed_port_url, retries=1)) as action:
        report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts) == (False, 2)
    assert report.error.retryable


async def test_https_with_a_trusted_ca():
    async with open_https_sink([Reply(200, "secure")]) as sink:
        assert sink.url.startswith("https://127.0.0.1:")
        client = await open_http_client(timeout=5.0, verify=sink.client_ssl_context())
        async with client:
            result = await send_request(client, "POST", sink.url, content=b"{}")
        [request] = await sink.wait_for(1)
    assert (result.output, request.body) == ("secure", b"{}")


async def test_https_with_an_untrusted_certificate_is_not_retryable():
    async with open_https_sink() as sink:
        client = await open_http_client(timeout=5.0, verify=True)
        async with client:
            with pytest.raises(ActionError) as info:
                await send_request(client, "POST", sink.url, content=b"{}")
    assert not info.value.retryable
    assert "certificate" in info.value.message


async def test_https_without_verification():
    async with open_https_sink() as sink:
        async with await open_http_client(timeout=5.0, verify=False) as client:
            result = await send_request(client, "GET", sink.url)
    assert result.status == 200
