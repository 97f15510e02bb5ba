"""The Slack action with legacy `slack` output, against a real local HTTP server playing Slack.

Below 49 blocks the body is Postee's, byte for byte (see test_goldens). From 49 blocks on, Postee posts
a short "too long, see the link" message whose body is invalid JSON. Here a report that fits in
MAX_MESSAGES messages is split over them instead, as the action does for Rego templates; a longer one
gets Postee's short message, as valid JSON (one message instead of a flood against Slack's rate limit).
"""

import json

import pytest

from postee.actions import ActionError, ActionSpec, Delivery, send_with_retries
from postee.actions.slack import MAX_BLOCKS, MAX_MESSAGES, SlackAction
from postee.legacy import aggregate_contents, render_content, server_url
from postee.legacy.slackbody import encode_blocks
from tests.helpers.http_sink import Reply, open_http_sink

WEBHOOK_PATH = "/services/T0001/B0002/s3cr3t"
SERVER = server_url("https://aqua.example")
FIXED_BLOCKS = 7
"""Image, registry, compliance, counts, "Found vulnerabilities", one severity heading, "See more"."""


def scan_with(vulnerabilities: int) -> dict:
    """A scan whose slack rendering (with a server URL) has FIXED_BLOCKS + ceil((vulnerabilities + 1) / 5) blocks."""
    vulns = [{"name": f"CVE-{n}", "fix_version": "2", "aqua_severity": "high"} for n in range(vulnerabilities)]
    return {"image": "big <app>", "registry": "r", "resources": [{"resource": {"name": "p"}, "vulnerabilities": vulns}]}


def block_count(content) -> int:
    return len(encode_blocks(content["description"]))


SLACK_OK = (Reply(200, "ok"),)


async def post(content, replies=SLACK_OK, route="scans"):
    async with open_http_sink(replies) as sink:
        settings = {"url": sink.url + WEBHOOK_PATH, "retry-backoff": "0.01s"}
        spec = ActionSpec(name="slack", type="slack", settings=settings)
        async with SlackAction.from_spec(spec) as action:
            report = await send_with_retries(action, Delivery(content=content, route=route))
        return report, list(sink.requests)


async def test_exactly_49_blocks_go_in_one_message_where_postee_would_post_its_short_message():
    content = render_content(scan_with(209), "slack", SERVER)
    assert block_count(content) == FIXED_BLOCKS + 42 == MAX_BLOCKS - 1
    report, [request] = await post(content)
    assert report.ok
    blocks = request.json()["blocks"]
    assert len(blocks) == MAX_BLOCKS
    assert blocks[0]["text"]["text"] == "*big <app> vulnerability scan report*"
    title = b'{"blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*big \\u003capp\\u003e vulnerability'
    assert request.body.startswith(title)


async def test_50_blocks_take_two_messages():
    content = render_content(scan_with(210), "slack", SERVER)
    assert block_count(content) == MAX_BLOCKS
    report, requests = await post(content, replies=[Reply(200, "ok")] * 2)
    assert report.ok
    assert [len(r.json()["blocks"]) for r in requests] == [MAX_BLOCKS, 2]


async def test_a_longer_report_is_split_into_valid_messages_of_at_most_50_blocks_in_order():
    content = render_content(scan_with(600), "slack", SERVER)
    expected = [json.loads(block) for block in encode_blocks(content["description"])]
    assert len(expected) == FIXED_BLOCKS + 121 == 128
    report, requests = await post(content, replies=[Reply(200, "ok")] * 3)
    assert report.ok
    payloads = [r.json()["blocks"] for r in requests]  # every body is valid JSON (Postee's is not)
    assert [len(p) for p in payloads] == [50, 50, 128 - 2 * 49 + 1]
    assert [p[0]["text"]["text"] for p in payloads] == [
        "*big <app> vulnerability scan report*",
        "*big <app> vulnerability scan report (continued, 2/3)*",
        "*big <app> vulnerability scan report (continued, 3/3)*",
    ]
    assert [block for p in payloads for block in p[1:]] == expected
    assert expected[-1]["text"]["text"].startswith("See more: <https://aqua.example/#/images/r/big+%3Capp%3E|")


def vulnerabilities_for(blocks: int) -> int:
    """The number of vulnerabilities whose rendering (see scan_with) has exactly `blocks` blocks."""
    return (blocks - FIXED_BLOCKS) * 5 - 1


TITLE_BLOCK = b'{"type":"section","text":{"type":"mrkdwn","text":"*big \\u003capp\\u003e vulnerability scan report*"}}'


def text_block(text: bytes) -> bytes:
    return b'{"type":"section","text":{"type":"mrkdwn","text":"' + text + b'"}}'


async def test_a_report_filling_max_messages_is_still_split():
    content = render_content(scan_with(vulnerabilities_for(MAX_MESSAGES * (MAX_BLOCKS - 1))), "slack", SERVER)
    assert block_count(content) == 147
    report, requests = await post(content, replies=[Reply(200, "ok")] * MAX_MESSAGES)
    assert report.ok
    assert [len(r.json()["blocks"]) for r in requests] == [MAX_BLOCKS] * MAX_MESSAGES


async def test_a_longer_report_is_one_short_message_with_its_link_as_valid_json():
    content = render_content(scan_with(vulnerabilities_for(MAX_MESSAGES * (MAX_BLOCKS - 1) + 1)), "slack", SERVER)
    assert block_count(content) == 148
    report, [request] = await post(content)
    assert report.ok
    # Postee's short message, without its final comma; the link's text is the unescaped url, with
    # the `<`, `>` of the image escaped for Slack (raw, they would end the link early).
    assert request.body == (
        b'{"blocks":[' + TITLE_BLOCK + b","
        + text_block(b"This message is too long to display here. Please visit the link to read the content.") + b","
        + text_block(b"\\u003chttps://aqua.example/#/images/r/big+%3Capp%3E|"
                     b"https://aqua.example/#/images/r/big \\u0026lt;app\\u0026gt;\\u003e")
        + b"]}"
    )
    assert request.json()["blocks"][2]["text"]["text"] == (
        "<https://aqua.example/#/images/r/big+%3Capp%3E|https://aqua.example/#/images/r/big &lt;app&gt;>"
    )


async def test_without_aqua_server_the_short_message_says_how_to_get_the_link():
    content = render_content(scan_with(2000), "slack", "")
    assert content["url"] == "r/big+%3Capp%3E"  # not a link: no aqua-server
    report, [request] = await post(content)
    assert report.ok
    assert request.body == (
        b'{"blocks":[' + TITLE_BLOCK + b","
        + text_block(b"Please configure Aqua server url to get link to entire scan results.") + b","
        + text_block(b"\\u003chttps://aquasecurity.github.io/postee/settings/|Postee settings\\u003e")
        + b"]}"
    )


async def test_without_url_the_short_message_says_no_link_can_be_made():
    content = dict(render_content(scan_with(2000), "slack", SERVER), url="")
    _, [request] = await post(content)
    assert [b["text"]["text"] for b in request.json()["blocks"]] == [
        "*big <app> vulnerability scan report*",
        "Unable to create link to entire scan results. "
        "Input message doesn't contain 'registry' and 'image' fields or they are empty",
    ]


async def test_an_aggregated_long_report_links_every_scan():
    big, small = scan_with(1000), {"image": "a b", "registry": "r"}
    items = [render_content(big, "slack", SERVER), render_content(small, "slack", SERVER)]
    content = aggregate_contents("slack", items)
    _, [request] = await post(content)
    texts = [b["text"]["text"] for b in request.json()["blocks"]]
    assert texts == [
        "*Vulnerability scan report*",
        "This message is too long to display here. Please visit the link to read the content.",
        "<https://aqua.example/#/images/r/big+%3Capp%3E|https://aqua.example/#/images/r/big &lt;app&gt;>",
        "<https://aqua.example/#/images/r/a+b|https://aqua.example/#/images/r/a b>",
    ]


async def test_the_short_message_keeps_within_slacks_limits_whatever_the_urls():
    # More links than a message holds blocks, a malformed escape (Postee: empty link text), a `|` and
    # a link too long for a block: the message stays valid for Slack.
    urls = [f"https://aqua.example/#/images/r/img{n}" for n in range(60)]
    urls[0] = "https://aqua.example/#/images/r/bad%zz|x"
    urls[1] = "https://aqua.example/#/images/r/" + "i" * 4000
    content = {"title": "T", "description": '{"type":"divider"},' * 200, "url": "\n".join(urls)}
    _, [request] = await post(content)
    texts = [b["text"]["text"] for b in request.json()["blocks"][1:]]
    assert len(texts) == MAX_BLOCKS - 1
    assert texts[1] == "<https://aqua.example/#/images/r/bad%zz%7Cx>"
    assert texts[2] == ("https://aqua.example/#/images/r/" + "i" * 4000)[:3000]
    assert texts[3] == "<https://aqua.example/#/images/r/img2|https://aqua.example/#/images/r/img2>"
    assert texts[-1] == "... and 13 more links."
    assert all(len(text) <= 3000 for text in texts)


async def test_aggregated_legacy_output_is_posted_as_one_run():
    items = [render_content(scan_with(n), "slack", "") for n in (2, 1)]
    content = aggregate_contents("slack", items)
    report, [request] = await post(content)
    assert report.ok
    texts = [b.get("text", {}).get("text") for b in request.json()["blocks"]]
    assert texts[0] == "*Vulnerability scan report*"
    assert texts.count("*big <app> vulnerability scan report*") == 2


async def test_blocks_are_re_encoded_as_postee_does_unknown_keys_dropped_null_and_empty_omitted():
    description = (
        '{"type": "divider", "block_id": "x", "text": null, "fields": []},\n'
        '{"TYPE": "section", "Text": {"type": "mrkdwn", "text": "a\\b<&>", "verbatim": true}},'
    )
    report, [request] = await post({"title": "T", "description": description})
    assert report.ok
    assert request.body == (
        b'{"blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*T*"}},'
        b'{"type":"divider"},{"type":"section","text":{"type":"mrkdwn","text":"a\\u0008\\u003c\\u0026\\u003e"}}]}'
    )


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        ('{"type": "section", "text": {"type": "mrkdwn", "text": 5}},', "blocks[0].text.text: expected a string"),
        ('{"type": "divider"}, 7,', "blocks[1]: expected an object, got a number"),
        ('{"type": "section", "fields": {"a": 1}},', "blocks[0].fields: expected an array"),
        ('{"type": "section",', "not valid JSON"),
        ('{"type": "section", "n": NaN},', "not valid JSON"),
    ],
)
async def test_a_broken_run_of_blocks_is_a_clear_final_error_and_nothing_is_sent(description, reason):
    report, requests = await post({"title": "T", "description": description}, route="aqua-scans")
    assert requests == []
    assert (report.ok, report.attempts, report.error.retryable) == (False, 1, False)
    message = report.error.message
    assert message.startswith("route 'aqua-scans': the description is not a run of Slack blocks")
    assert reason in message
    assert "legacy-scan-renderer slack" in message


async def test_a_title_longer_than_slacks_limit_is_cut():
    content = render_content({"image": "i" * 4000}, "slack", "")
    _, [request] = await post(content)
    assert len(request.json()["blocks"][0]["text"]["text"]) == 3000


async def test_slack_refusal_of_legacy_output_is_reported_with_its_reason():
    content = render_content(scan_with(3), "slack", "")
    async with open_http_sink([Reply(400, "invalid_blocks")]) as sink:
        spec = ActionSpec(name="slack", type="slack", settings={"url": sink.url + WEBHOOK_PATH})
        async with SlackAction.from_spec(spec) as action:
            with pytest.raises(ActionError) as info:
                await action.send(Delivery(content=content))
    assert "invalid_blocks" in info.value.message
    assert "s3cr3t" not in info.value.message
