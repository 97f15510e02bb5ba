"""The slack action against a real local HTTP server playing Slack's incoming webhook."""

import json
import time
from pathlib import Path

import pytest
import trio

from postee.actions import ActionConfigError, ActionError, ActionSpec, Delivery, action_class, send_with_retries
from postee.actions.slack import (
    MAX_BLOCKS,
    MAX_MESSAGES,
    MAX_TEXT_CHARS,
    SlackAction,
    drop_trailing_commas,
    parse_blocks,
)
from postee.legacy import render_content
from tests.helpers.http_sink import Reply, open_http_sink

GOLDENS = Path(__file__).parent.parent / "fixtures" / "compat" / "goldens"
VULS_SLACK = (GOLDENS / "vuls-slack.golden").read_text()
WEBHOOK_PATH = "/services/T0001/B0002/s3cr3tT0k3n"
SLACK_OK = (Reply(200, "ok"),)


def slack(url, **settings):
    spec = ActionSpec(name="my-slack", type="Slack", settings={"url": url, "retry-backoff": "0.01s", **settings})
    return SlackAction.from_spec(spec)


def delivery(description, title="all-in-one:3.5.19223 vulnerability scan report", route="vuls"):
    return Delivery(content={"title": title, "description": description}, event={"image": "x"}, route=route)


def section(text):
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def numbered_blocks(count):
    return [section(f"block {n}") for n in range(count)]


async def send_one(description, replies=SLACK_OK, **delivery_fields):
    async with open_http_sink(replies) as sink:
        async with slack(sink.url + WEBHOOK_PATH) as action:
            result = await action.send(delivery(description, **delivery_fields))
        requests = list(sink.requests)
    return result, requests


async def test_posts_title_and_the_rendered_golden_blocks():
    result, [request] = await send_one(VULS_SLACK)
    assert (result.status, result.output) == (200, "ok")
    assert (request.method, request.path, request.query) == ("POST", WEBHOOK_PATH, "")
    assert request.header("content-type").startswith("application/json")
    payload = request.json()
    assert list(payload) == ["blocks"]
    title, *blocks = payload["blocks"]
    assert title == section("all-in-one:3.5.19223 vulnerability scan report")
    assert blocks == json.loads(VULS_SLACK)
    assert blocks[0] == section("Image name: all-in-one:3.5.19223")
    assert len(payload["blocks"]) == 22


@pytest.mark.parametrize("golden", ["trivy-vulns-slack", "trivy-operator-slack"])
async def test_other_bundled_slack_goldens_go_through(golden):
    description = (GOLDENS / f"{golden}.golden").read_text()
    _, [request] = await send_one(description)
    assert request.json()["blocks"][1:] == json.loads(description)


async def test_title_is_escaped_for_slack_and_blocks_are_not():
    blocks = '[{"type": "section", "text": {"type": "mrkdwn", "text": "<https://aqua.example/x|open> & see"}}]'
    _, [request] = await send_one(blocks, title="Scan of <app> & \"co\" > 1")
    title, block = request.json()["blocks"]
    assert title["text"]["text"] == 'Scan of &lt;app&gt; &amp; "co" &gt; 1'
    assert block["text"]["text"] == "<https://aqua.example/x|open> & see"


async def test_long_title_is_cut_to_slacks_limit_never_inside_an_entity():
    title = "a" * (MAX_TEXT_CHARS - 2) + "&&&"
    _, [request] = await send_one("[]", title=title)
    text = request.json()["blocks"][0]["text"]["text"]
    assert text == "a" * (MAX_TEXT_CHARS - 2)


async def test_trailing_commas_as_postee_templates_write_them():
    description = '[\n {"type": "section", "text": {"type": "mrkdwn", "text": "a, ]"},},\n {"type": "divider"},\n]'
    _, [request] = await send_one(description)
    assert request.json()["blocks"][1:] == [section("a, ]"), {"type": "divider"}]


async def test_concatenated_descriptions_are_merged():
    description = json.dumps([section("first")]) + "\n\n" + json.dumps([section("second"), {"type": "divider"}])
    _, [request] = await send_one(description)
    assert request.json()["blocks"][1:] == [section("first"), section("second"), {"type": "divider"}]


async def test_empty_description_sends_the_title_alone_and_empty_title_no_title_block():
    _, [request] = await send_one("", title="Just a title")
    assert request.json() == {"blocks": [section("Just a title")]}
    _, [request] = await send_one('[{"type": "divider"}]', title="  ")
    assert request.json() == {"blocks": [{"type": "divider"}]}


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        ("<h1>Vulnerability report</h1>", "not valid JSON"),
        ('{"type": "section"}', "expected an array, got a JSON object"),
        ('[{"type": "section"}, "text"]', "block 1 is a JSON string"),
        ('[{"text": "no type"}]', 'block 0 has no "type"'),
        ('[{"type": "divider"}', "not valid JSON"),
    ],
)
async def test_a_description_that_is_not_blocks_is_a_clear_final_error(description, reason):
    async with open_http_sink() as sink:
        async with slack(sink.url + WEBHOOK_PATH) as action:
            with pytest.raises(ActionError) as info:
                await action.send(delivery(description, route="trivy-to-slack"))
            report = await send_with_retries(action, delivery(description))
        assert sink.requests == []
    error = info.value
    assert not error.retryable
    assert error.message.startswith("route 'trivy-to-slack': the description is not a JSON array of Slack blocks")
    assert reason in error.message
    assert "postee.vuls.slack" in error.message
    assert (report.ok, report.attempts) == (False, 1)


async def test_more_than_50_blocks_are_split_over_several_messages_in_order():
    blocks = numbered_blocks(120)
    replies = [Reply(200, "ok")] * 3
    result, requests = await send_one(json.dumps(blocks), replies, title="Big <report>")
    assert result.output == "ok"
    payloads = [r.json()["blocks"] for r in requests]
    assert [len(p) for p in payloads] == [MAX_BLOCKS, MAX_BLOCKS, 120 - 2 * (MAX_BLOCKS - 1) + 1]
    assert [p[0]["text"]["text"] for p in payloads] == [
        "Big &lt;report&gt;",
        "Big &lt;report&gt; (continued, 2/3)",
        "Big &lt;report&gt; (continued, 3/3)",
    ]
    assert [b for p in payloads for b in p[1:]] == blocks
    assert requests[0].received_at <= requests[1].received_at <= requests[2].received_at


async def test_a_report_longer_than_max_messages_is_one_short_message_with_its_link():
    # Split, a report would flood the channel against Slack's rate limit: past MAX_MESSAGES messages
    # it is replaced by Postee's short "too long, see the link" message.
    url = "https://aqua.example/#/images/r/i/vulns"
    full = MAX_MESSAGES * (MAX_BLOCKS - 1)
    _, requests = await send_one(json.dumps(numbered_blocks(full)), [Reply(200, "ok")] * MAX_MESSAGES)
    assert [len(r.json()["blocks"]) for r in requests] == [MAX_BLOCKS] * MAX_MESSAGES
    content = {"title": "Big <report>", "description": json.dumps(numbered_blocks(full + 1)), "url": url}
    async with open_http_sink(SLACK_OK) as sink:
        async with slack(sink.url + WEBHOOK_PATH) as action:
            await action.send(Delivery(content=content, route="vuls"))
        [request] = sink.requests
    assert request.json()["blocks"] == [
        section("Big &lt;report&gt;"),
        section("This message is too long to display here. Please visit the link to read the content."),
        section(f"<{url}|{url}>"),
    ]


async def test_exactly_49_blocks_fit_one_message():
    _, requests = await send_one(json.dumps(numbered_blocks(MAX_BLOCKS - 1)))
    assert [len(r.json()["blocks"]) for r in requests] == [MAX_BLOCKS]


async def test_a_retry_of_a_split_report_resumes_where_slack_stopped_accepting():
    blocks = numbered_blocks(2 * (MAX_BLOCKS - 1) + 5)
    replies = [Reply(200, "ok"), Reply(500, "rollup_error"), Reply(200, "ok"), Reply(200, "ok")]
    async with open_http_sink(replies) as sink:
        async with slack(sink.url + WEBHOOK_PATH) as action:
            attempts = []
            report = await send_with_retries(action, delivery(json.dumps(blocks)), on_attempt=attempts.append)
            assert action._progress == {}
        requests = await sink.wait_for(4)
    assert (report.ok, report.attempts) == (True, 2)
    assert "message 2 of 3: POST http://127.0.0.1" in attempts[0].error.message
    assert "rollup_error" in attempts[0].error.message
    heads = [r.json()["blocks"][1]["text"]["text"] for r in requests]
    assert heads == ["block 0", "block 49", "block 49", "block 98"]


def big_legacy_report() -> str:
    """A legacy `slack` rendering of 20,000 vulnerabilities: parsing and re-encoding it takes a while."""
    vulns = [{"name": f"CVE-{n}", "fix_version": "2", "aqua_severity": "high"} for n in range(20_000)]
    event = {"image": "i", "registry": "r", "resources": [{"resource": {"name": "p"}, "vulnerabilities": vulns}]}
    return render_content(event, "slack", "")["description"]


def big_template_report() -> str:
    """A Rego template's array of 100 large blocks with a trailing comma: the tolerant re-parse is slow."""
    blocks = [section("x" * 20_000) for _ in range(100)]
    return json.dumps(blocks)[:-1] + ",]"


@pytest.mark.parametrize("make_description", [big_legacy_report, big_template_report])
async def test_building_the_bodies_does_not_block_the_event_loop(make_description):
    # A heartbeat task ticks every 5 ms while the action sends; the longest gap between its ticks is
    # how long the event loop (every other route, the HTTP intake) was held up. Compared with the
    # whole send, so the test does not depend on the machine's speed (built on the loop, the bodies
    # stall it for most of the send; in a thread, only garbage collection pauses it, briefly).
    description = make_description()
    gaps = []

    async def heartbeat():
        last = time.perf_counter()
        while True:
            await trio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with open_http_sink() as sink:
        async with slack(sink.url + WEBHOOK_PATH) as action, trio.open_nursery() as nursery:
            nursery.start_soon(heartbeat)
            await trio.sleep(0.02)
            start = time.perf_counter()
            await action.send(delivery(description))
            elapsed = time.perf_counter() - start
            nursery.cancel_scope.cancel()
        assert sink.requests
    assert max(gaps) < elapsed / 3, f"the event loop stalled {max(gaps):.3f}s of a {elapsed:.3f}s send"


async def test_slack_refusal_is_final_and_carries_slacks_reason_but_not_the_webhook_secret():
    async with open_http_sink([Reply(400, "invalid_blocks")]) as sink:
        async with slack(sink.url + WEBHOOK_PATH) as action:
            report = await send_with_retries(action, delivery(VULS_SLACK))
        assert len(sink.requests) == 1
    error = report.error
    assert (report.ok, report.attempts, error.retryable, error.status) == (False, 1, False, 400)
    assert "HTTP 400: invalid_blocks" in error.message
    assert error.output == "invalid_blocks"
    assert "s3cr3t" not in error.message and "/services/" not in error.message


@pytest.mark.parametrize(
    ("status", "body"), [(404, "no_service"), (403, "action_prohibited"), (410, "channel_is_archived")]
)
async def test_other_4xx_are_not_retried(status, body):
    async with open_http_sink([Reply(status, body)]) as sink:
        async with slack(sink.url + WEBHOOK_PATH) as action:
            with pytest.raises(ActionError) as info:
                await action.send(delivery(VULS_SLACK))
    assert (info.value.retryable, info.value.status) == (False, status)
    assert body in info.value.message


async def test_5xx_is_retried_per_policy():
    async with open_http_sink([Reply(500, "rollup_error"), Reply(503), Reply(200, "ok")]) as sink:
        async with slack(sink.url + WEBHOOK_PATH, retries=3) as action:
            report = await send_with_retries(action, delivery(VULS_SLACK))
        assert len(sink.requests) == 3
    assert (report.ok, report.attempts, report.output) == (True, 3, "ok")
    assert sink.requests[0].body == sink.requests[2].body


async def test_5xx_retries_exhausted():
    async with open_http_sink(default=Reply(500, "rollup_error")) as sink:
        async with slack(sink.url + WEBHOOK_PATH, retries=2) as action:
            report = await send_with_retries(action, delivery(VULS_SLACK))
        assert len(sink.requests) == 3
    assert (report.ok, report.attempts, report.error.retryable, report.error.status) == (False, 3, True, 500)


async def test_rate_limit_is_retryable_with_retry_after():
    async with open_http_sink([Reply(429, "rate_limited", headers=(("Retry-After", "7"),))]) as sink:
        async with slack(sink.url + WEBHOOK_PATH) as action:
            with pytest.raises(ActionError) as info:
                await action.send(delivery(VULS_SLACK))
    assert (info.value.retryable, info.value.status, info.value.retry_after) == (True, 429, 7.0)


async def test_timeout():
    async with open_http_sink([Reply(200, "ok", delay=2.0)]) as sink:
        async with slack(sink.url + WEBHOOK_PATH, timeout="0.2s") as action:
            with pytest.raises(ActionError) as info:
                await action.send(delivery(VULS_SLACK))
        assert len(sink.requests) == 1
    assert info.value.retryable
    assert "timed out" in info.value.message


def test_url_is_required():
    with pytest.raises(ActionConfigError) as info:
        SlackAction.from_spec(ActionSpec(name="my-slack", type="slack", settings={}))
    assert info.value.problems == [("url", "required")]
    assert str(info.value) == "actions[my-slack].url: required"


def test_url_must_be_http_and_timeout_valid():
    spec = ActionSpec(name="s", type="slack", settings={"url": "hooks.slack.com/services/x", "timeout": "soon"})
    with pytest.raises(ActionConfigError) as info:
        SlackAction.from_spec(spec)
    assert [key for key, _ in info.value.problems] == ["url", "timeout"]


def test_registered_case_insensitively():
    assert action_class("SLACK") is SlackAction
    assert SlackAction.settings_keys >= {"url", "retries", "timeout"}


def test_parse_blocks_details():
    assert parse_blocks("  \n ") == []
    assert parse_blocks('[]\n[{"type": "divider"}]') == [{"type": "divider"}]
    assert drop_trailing_commas('{"a": "x,]", "b": [1,2,],}') == '{"a": "x,]", "b": [1,2]}'
    assert drop_trailing_commas('["\\",]",]') == '["\\",]"]'
