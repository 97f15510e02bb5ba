"""The http action's JSON bodies beyond one document (issue #11, finding 2, second pass).

An NDJSON body (an Elasticsearch `_bulk` call, JSON Lines) is one JSON document per line; pasting
an event's text into it lets a newline in the value add a line, that is an operation. A template
that looks like JSON but is not (a trailing comma) must not fall back to raw pasting either.
"""

import json
import re

import pytest

from postee.actions import ActionConfigError, ActionSpec, Delivery, build_action
from tests.helpers.http_sink import open_http_sink

INJECTION = 'x"}\n{"delete": {"_index": "alerts", "_id": "1"}}\n'
EVENT = {"image": INJECTION, "rule": "TRC-2", "count": 3}
DELIVERY = Delivery(content={"title": "t", "description": "d"}, event=EVENT)

BULK = (
    '{"index": {"_index": "alerts"}}\n'
    '{"image": "event.input.image", "rule": "event.input.rule", "n": event.input.count}\n'
)
"""An Elasticsearch `_bulk` body: an action line, then a document line; the trailing newline is required."""


def http_spec(url, **settings):
    return ActionSpec(name="bulk", type="http", settings={"url": url, "retry-backoff": "0.01s", **settings})


async def sent_body(content_type: str | None, body: str) -> str:
    """The body the http action sent to a real local server for `DELIVERY`."""
    headers = {"Content-Type": [content_type]} if content_type else {}
    async with open_http_sink() as sink:
        async with build_action(http_spec(sink.url, headers=headers, **{"body-content": body})) as action:
            await action.send(DELIVERY)
        [request] = await sink.wait_for(1)
    return request.text


def config_problem(body: str, content_type: str | None = None) -> str:
    """The one problem the config check finds with `body`."""
    headers = {"Content-Type": [content_type]} if content_type else {}
    with pytest.raises(ActionConfigError) as info:
        build_action(http_spec("http://127.0.0.1:1/", headers=headers, **{"body-content": body}))
    [(key, message)] = info.value.problems
    assert key == "body-content"
    return message


@pytest.mark.parametrize(
    "content_type",
    ["application/x-ndjson", "application/x-ndjson; charset=utf-8", "application/jsonl", "application/json", None],
)
async def test_an_ndjson_body_gets_values_escaped_line_by_line(content_type):
    """With an NDJSON media type, or with none but one JSON document per line, a newline in a value
    stays inside its string: the `delete` line the event tries to add is never sent."""
    body = await sent_body(content_type, BULK)
    assert body.endswith("\n")
    lines = body.split("\n")[:-1]
    assert [json.loads(line) for line in lines] == [
        {"index": {"_index": "alerts"}},
        {"image": INJECTION, "rule": "TRC-2", "n": 3},
    ]


async def test_a_json_seq_body_gets_values_escaped_record_by_record():
    """RFC 7464 JSON text sequences: each record starts with RS (0x1E) and may span lines."""
    template = '\x1e{"index": {"_index": "alerts"}}\n\x1e{\n  "image": "event.input.image"\n}\n'
    body = await sent_body("application/json-seq", template)
    records = body.split("\x1e")
    assert records[0] == ""
    assert [json.loads(record) for record in records[1:]] == [{"index": {"_index": "alerts"}}, {"image": INJECTION}]


async def test_blank_lines_in_an_ndjson_body_are_kept():
    template = '\n{"a": "event.input.rule"}\n\n{"b": event.input.count}\n'
    assert await sent_body("application/x-ndjson", template) == '\n{"a": "TRC-2"}\n\n{"b": 3}\n'


@pytest.mark.parametrize(
    "template",
    [
        '{"image": "event.input.image", "rule": "event.input.rule",}',  # trailing comma
        '  \n[{"image": "event.input.image"},]',  # an array, after whitespace
        "{'image': 'event.input.image'}",  # single quotes
        '{"image": "event.input.image"} and more',
    ],
)
def test_a_body_that_looks_like_json_but_is_not_is_a_config_error(template):
    """Without a Content-Type header too: the user meant JSON, and pasting raw would be injectable."""
    message = config_problem(template)
    assert "starts with" in message and "not a JSON document" in message
    assert re.search(r"line \d+ column \d+", message)  # where the JSON breaks
    assert "event.input." in message  # how to fix: where references may stand


def test_an_ndjson_body_with_a_broken_line_is_a_config_error_naming_the_line():
    template = '{"index": {}}\n{"image": "event.input.image",}\n'
    message = config_problem(template, "application/x-ndjson")
    assert "line 2" in message and "NDJSON" in message
    # with no media type, one document per line is still what the user meant
    assert "line 2" in config_problem(template)


def test_an_ndjson_media_type_with_a_plain_text_line_is_a_config_error():
    message = config_problem('{"index": {}}\nimage=event.input.image\n', "application/x-ndjson")
    assert "line 2" in message


def test_json_looking_bodies_without_references_and_plain_text_bodies_are_left_alone():
    """Nothing is inserted into a body without references, so it is the user's own business; a plain
    text body (not starting with `{` or `[`) keeps plain substitution."""
    for body in ['{"a": 1,}', "[not json"]:
        build_action(http_spec("http://127.0.0.1:1/", **{"body-content": body}))
    build_action(http_spec("http://127.0.0.1:1/", **{"body-content": "image=event.input.image {"}))


async def test_a_plain_text_body_keeps_plain_substitution():
    assert await sent_body("text/plain", "rule=event.input.rule\n") == "rule=TRC-2\n"
