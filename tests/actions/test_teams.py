"""The teams action against a real local HTTP server playing both kinds of Teams webhook."""

import json
from pathlib import Path

import pytest

from postee.actions import ActionConfigError, ActionError, ActionSpec, Delivery, action_class, send_with_retries
from postee.actions.teams import MAX_PAYLOAD_BYTES, MAX_TITLE_CHARS, TeamsAction, build_text, cut_html
from tests.helpers.http_sink import Reply, open_http_sink

VULS_HTML = (Path(__file__).parent.parent / "fixtures" / "compat" / "goldens" / "vuls-html.golden").read_text()
LEGACY_PATH = "/webhookb2/0000-1111@2222/IncomingWebhook/s3cr3t/3333"
WORKFLOWS_PATH = "/workflows/abcd/triggers/manual/paths/invoke"
WORKFLOWS_QUERY = "api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=s3cr3tSig"
LEGACY_OK = (Reply(200, "1"),)
REPORT_URL = "https://aqua.example.com/#/images/Aqua/all-in-one%3A3.5.19223/vulns"
FAILED_429 = (
    "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 with ContextId "
    "tcid=0,server=msgapi-production-weu-azsc1-4-96,cv=abc."
)


def teams(url, **settings):
    spec = ActionSpec(name="my-teams", type="Teams", settings={"url": url, "retry-backoff": "0.01s", **settings})
    return TeamsAction.from_spec(spec)


def delivery(description=VULS_HTML, title="all-in-one:3.5.19223 vulnerability scan report", url=""):
    content = {"title": title, "description": description, "url": url}
    return Delivery(content=content, event={"image": "all-in-one"}, route="vuls-to-teams")


async def send_one(the_delivery, replies=LEGACY_OK, path=LEGACY_PATH):
    async with open_http_sink(replies) as sink:
        async with teams(sink.url + path) as action:
            result = await action.send(the_delivery)
        requests = list(sink.requests)
    return result, requests


async def test_legacy_connector_gets_postees_payload_and_answers_1():
    result, [request] = await send_one(delivery(title='Scan of <app> & "co"'))
    assert (result.status, result.output) == (200, "1")
    assert (request.method, request.path, request.query) == ("POST", LEGACY_PATH, "")
    assert request.header("content-type").startswith("application/json")
    assert request.json() == {"text": "<h2>Scan of &lt;app&gt; &amp; &quot;co&quot;</h2>" + VULS_HTML}


async def test_workflows_webhook_answers_202_accepted():
    result, [request] = await send_one(delivery(), replies=[Reply(202)], path=f"{WORKFLOWS_PATH}?{WORKFLOWS_QUERY}")
    assert (result.status, result.output) == (202, "")
    assert (request.path, request.query_params["sig"]) == (WORKFLOWS_PATH, ["s3cr3tSig"])
    assert request.json()["text"] == "<h2>all-in-one:3.5.19223 vulnerability scan report</h2>" + VULS_HTML


async def test_a_flow_answering_200_with_its_own_body_is_success():
    result, _ = await send_one(delivery(), replies=[Reply(200, '{"status": "posted"}')])
    assert (result.status, result.output) == (200, '{"status": "posted"}')


async def test_empty_title_gets_no_heading():
    _, [request] = await send_one(delivery(description="<p>body</p>", title=""))
    assert request.json() == {"text": "<p>body</p>"}


async def test_legacy_200_failure_notice_for_a_429_is_retried():
    replies = [Reply(200, FAILED_429), Reply(200, "1")]
    async with open_http_sink(replies) as sink:
        async with teams(sink.url + LEGACY_PATH) as action:
            attempts = []
            report = await send_with_retries(action, delivery(), on_attempt=attempts.append)
        assert len(sink.requests) == 2
    assert (report.ok, report.attempts, report.output) == (True, 2, "1")
    first = attempts[0].error
    assert (first.retryable, first.status) == (True, 200)
    assert "Teams did not deliver the message: Webhook message delivery failed" in first.message
    assert "s3cr3t" not in first.message


async def test_legacy_200_failure_notice_for_a_413_is_final():
    notice = FAILED_429.replace("429", "413")
    async with open_http_sink([Reply(200, notice)]) as sink:
        async with teams(sink.url + LEGACY_PATH) as action:
            report = await send_with_retries(action, delivery())
        assert len(sink.requests) == 1
    assert (report.ok, report.attempts, report.error.retryable) == (False, 1, False)
    assert "HTTP error 413" in report.error.message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, "Summary or Text is required."),
        (400, '{"error":{"code":"TriggerInputSchemaMismatch","message":"The input body does not match"}}'),
        (401, '{"error":{"code":"DirectApiAuthorizationRequired"}}'),
        (404, "Not Found"),
    ],
)
async def test_4xx_is_final_and_carries_the_reason_not_the_secret(status, body):
    async with open_http_sink([Reply(status, body)]) as sink:
        async with teams(f"{sink.url}{WORKFLOWS_PATH}?{WORKFLOWS_QUERY}") as action:
            report = await send_with_retries(action, delivery())
        assert len(sink.requests) == 1
    error = report.error
    assert (report.ok, report.attempts, error.retryable, error.status) == (False, 1, False, status)
    assert body[:40] in error.message
    assert "s3cr3t" not in error.message and "/workflows/" not in error.message


async def test_5xx_is_retried_per_policy():
    async with open_http_sink([Reply(502), Reply(500, "oops"), Reply(202)]) as sink:
        async with teams(sink.url + WORKFLOWS_PATH, retries=2) as action:
            report = await send_with_retries(action, delivery())
        assert len(sink.requests) == 3
    assert (report.ok, report.attempts, report.status) == (True, 3, 202)


async def test_5xx_retries_exhausted():
    async with open_http_sink(default=Reply(503, "Service Unavailable")) as sink:
        async with teams(sink.url + LEGACY_PATH, retries=1) as action:
            report = await send_with_retries(action, delivery())
        assert len(sink.requests) == 2
    assert (report.ok, report.attempts, report.error.retryable, report.error.status) == (False, 2, True, 503)


async def test_timeout():
    async with open_http_sink([Reply(200, "1", delay=2.0)]) as sink:
        async with teams(sink.url + LEGACY_PATH, timeout="0.2s") as action:
            with pytest.raises(ActionError) as info:
                await action.send(delivery())
        assert len(sink.requests) == 1
    assert info.value.retryable
    assert "timed out" in info.value.message


async def test_a_long_report_is_shortened_with_a_link_to_the_full_one():
    description = VULS_HTML * 20
    _, [request] = await send_one(delivery(description=description, url=REPORT_URL))
    assert len(request.body) <= MAX_PAYLOAD_BYTES
    assert len(request.body) > MAX_PAYLOAD_BYTES - 1000
    text = request.json()["text"]
    heading = "<h2>all-in-one:3.5.19223 vulnerability scan report</h2>"
    note = (
        "<p><i>Message shortened to fit Microsoft Teams' size limit.</i> Full report: "
        f'<a href="{REPORT_URL}">{REPORT_URL}</a></p>'
    )
    assert text.startswith(heading + VULS_HTML)
    assert text.endswith(note)
    kept = text[len(heading) : -len(note)]
    assert description.startswith(kept)
    assert kept.rfind("<") < kept.rfind(">")  # not cut inside a tag


async def test_a_long_report_without_url_gets_the_note_alone():
    _, [request] = await send_one(delivery(description=VULS_HTML * 20, url="javascript:alert(1)"))
    text = request.json()["text"]
    assert text.endswith("<p><i>Message shortened to fit Microsoft Teams' size limit.</i></p>")
    assert "javascript" not in text


async def test_shortening_counts_bytes_as_sent_escapes_and_multibyte_included():
    description = '<p>é "quoted" \\ 😀 tab\there</p>\n' * 2000
    _, [request] = await send_one(delivery(description=description, url=REPORT_URL))
    assert MAX_PAYLOAD_BYTES - 200 < len(request.body) <= MAX_PAYLOAD_BYTES
    assert "😀" in request.json()["text"]


def test_a_report_that_fits_is_not_touched():
    description = "x" * (MAX_PAYLOAD_BYTES - 200)
    assert build_text("T", description, REPORT_URL) == "<h2>T</h2>" + description


def test_long_title_is_cut():
    text = build_text("<" * (MAX_TITLE_CHARS + 50), "")
    assert text == "<h2>" + "&lt;" * (MAX_TITLE_CHARS - 1) + "…</h2>"


def test_cut_html_never_leaves_half_a_tag_or_entity():
    assert cut_html("<p>a</p><table border='1'>", 12) == "<p>a</p>"
    assert cut_html("<p>a &amp; b</p>", 7) == "<p>a "
    assert cut_html("<p>a &#8230; b</p>", 9) == "<p>a "
    assert cut_html("<p>a</p>", 100) == "<p>a</p>"
    assert json.dumps(cut_html('"' * 10, 6)) == json.dumps('"' * 3)


def test_url_is_required():
    with pytest.raises(ActionConfigError) as info:
        TeamsAction.from_spec(ActionSpec(name="my-teams", type="teams", settings={"retries": 2}))
    assert info.value.problems == [("url", "required")]
    assert str(info.value) == "actions[my-teams].url: required"


def test_bad_url_and_retries_are_all_reported():
    spec = ActionSpec(name="t", type="teams", settings={"url": "ftp://x/y", "retries": -1})
    with pytest.raises(ActionConfigError) as info:
        TeamsAction.from_spec(spec)
    assert [key for key, _ in info.value.problems] == ["url", "retries"]


def test_registered_case_insensitively():
    assert action_class("TEAMS") is TeamsAction
