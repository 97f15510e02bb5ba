"""The `slack` action: post the rendered blocks to a Slack incoming webhook, as Postee's slack action.

Slack templates (`postee.vuls.slack`, `postee.vuls.trivy.slack`, `postee.trivyoperator.slack`,
`postee.tracee.slack`, their aggregations) render the description as a JSON array of Block Kit
blocks. The action POSTs `{"blocks": [<title section>, *blocks]}` to `url`, the webhook URL (which is
itself the secret: it is never logged, errors name its host only). Slack answers 200 with the body
`ok`; a refusal comes with a reason in the body (`invalid_blocks`, `no_text`, `channel_not_found`,
...), which the `ActionError` carries.

Where Postee gives up, this action does what its users meant:

- a trailing comma before a closing `]` or `}` (as hand-written and older Postee templates produce) is
  tolerated, and so are several arrays one after another (a route without an aggregation package
  aggregates by concatenating descriptions);
- a description that is not a list of blocks is a clear, non-retryable error naming the route and
  what to fix, not a JSON decoder message;
- Slack takes at most 50 blocks per message. Postee drops a longer report; here it is split over
  several messages, each led by the title (`... (continued, 2/3)`), all sent in order. If a later
  message fails, the retry of that same delivery resumes with the first message not yet accepted,
  so the channel does not get the first part twice;
- the title is escaped as Slack's mrkdwn requires (`&`, `<`, `>` become `&amp;`, `&lt;`, `&gt;`),
  and cut to Slack's 3000-character limit for a section text; an empty title gets no title block
  (Slack rejects an empty text). Template blocks are sent as rendered: their `<url|text>` links are
  meant as links.
"""

from __future__ import annotations

import json
import weakref
from typing import Any, ClassVar

import attrs

from postee.actions.base import ActionError, Delivery, SendResult, define_action
from postee.actions.httpclient import UrlAction, send_request
from postee.actions.registry import register
from postee.values.jsonkind import json_kind

DEFAULT_TIMEOUT = 30.0
"""Seconds per request (Postee sets no limit)."""

MAX_BLOCKS = 50
"""Slack's limit of blocks in one message, title block included."""

MAX_TEXT_CHARS = 3000
"""Slack's limit on the text of a section block."""

CONTENT_TYPE = "application/json; charset=utf-8"

SLACK_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
"""What Slack's mrkdwn requires escaped in text that is not meant as markup."""

TEMPLATE_HINT = "use a Slack template for this action, e.g. rego-package postee.vuls.slack"

Block = dict[str, Any]


class BlocksError(ValueError):
    """A description is not a JSON array (or a run of arrays) of Slack blocks."""


@register
@define_action
class SlackAction(UrlAction):
    type_name: ClassVar[str] = "slack"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    _progress: dict[int, int] = attrs.field(factory=dict, init=False)
    """id(delivery) -> messages of it Slack already accepted, while a split report is partly sent."""

    async def send(self, delivery: Delivery) -> SendResult:
        try:
            blocks = parse_blocks(delivery.description)
        except BlocksError as exc:
            route = f"route {delivery.route!r}: " if delivery.route else ""
            raise ActionError(
                f"{route}the description is not a JSON array of Slack blocks ({exc}); {TEMPLATE_HINT}",
                retryable=False,
            ) from None
        messages = build_messages(delivery.title, blocks)
        key = id(delivery)
        result = SendResult()
        for index in range(self._progress.get(key, 0), len(messages)):
            body = json.dumps(messages[index], ensure_ascii=False).encode("utf-8")
            try:
                result = await send_request(self.client, "POST", self.url, content=body,
                                            headers={"Content-Type": CONTENT_TYPE})
            except ActionError as exc:
                if len(messages) == 1:
                    raise
                raise ActionError(
                    f"message {index + 1} of {len(messages)}: {exc.message}",
                    retryable=exc.retryable,
                    status=exc.status,
                    output=exc.output,
                    retry_after=exc.retry_after,
                ) from None
            self._remember(delivery, index + 1)
        self._progress.pop(key, None)
        return result

    def _remember(self, delivery: Delivery, sent: int) -> None:
        """Note that the first `sent` messages of `delivery` were accepted, until it is garbage."""
        key = id(delivery)
        if key not in self._progress:
            try:
                weakref.finalize(delivery, self._progress.pop, key, None)
            except TypeError:  # not weak-referenceable: no resuming, a retry sends everything again
                return
        self._progress[key] = sent


def parse_blocks(description: str) -> list[Block]:
    """The blocks of a rendered description: one JSON array, or several in a row; "" gives none.

    A trailing comma before a closing bracket is tolerated. Each block must be an object with a
    string `type`; Slack checks the rest (and answers `invalid_blocks`).
    """
    text = description.strip()
    if not text:
        return []
    try:
        values = _decode_all(text)
    except ValueError:
        try:
            values = _decode_all(drop_trailing_commas(text))
        except ValueError as exc:
            raise BlocksError(f"not valid JSON: {exc}") from None
    blocks: list[Block] = []
    for value in values:
        if not isinstance(value, list):
            raise BlocksError(f"expected an array, got a JSON {json_kind(value)}")
        blocks.extend(value)
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise BlocksError(f"block {index} is a JSON {json_kind(block)}, not an object")
        if not isinstance(block.get("type"), str) or not block["type"]:
            raise BlocksError(f"block {index} has no \"type\"")
    return blocks


def _decode_all(text: str) -> list[Any]:
    """Every JSON value in `text`, which holds one or more separated by whitespace."""
    decoder = json.JSONDecoder()
    values = []
    position = 0
    while position < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
        while position < len(text) and text[position].isspace():
            position += 1
    return values


def drop_trailing_commas(text: str) -> str:
    """`text` without the commas that directly precede (up to whitespace) a `]` or `}`, outside strings."""
    out: list[str] = []
    in_string = escaped = False
    length = len(text)
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == ",":
            following = index + 1
            while following < length and text[following].isspace():
                following += 1
            if following < length and text[following] in "]}":
                continue
        out.append(char)
    return "".join(out)


def slack_escape(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` with `&`, `<`, `>` escaped for Slack, cut (never inside an entity) to `limit` characters."""
    out: list[str] = []
    size = 0
    for char in text:
        piece = SLACK_ESCAPES.get(char, char)
        if size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def title_block(title: str, suffix: str = "") -> Block:
    """The section that leads a message: the escaped title (cut to fit), then `suffix` as it is."""
    text = (slack_escape(title, MAX_TEXT_CHARS - len(suffix)) + suffix).strip()
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def build_messages(title: str, blocks: list[Block], max_blocks: int = MAX_BLOCKS) -> list[dict[str, list[Block]]]:
    """The webhook payloads for `blocks`: one, or several of at most `max_blocks` blocks, each led by the title."""
    per_message = max_blocks - 1
    chunks = [blocks[start : start + per_message] for start in range(0, len(blocks), per_message)] or [[]]
    messages = []
    for number, chunk in enumerate(chunks, 1):
        suffix = "" if number == 1 else f" (continued, {number}/{len(chunks)})"
        lead = [title_block(title, suffix)] if title.strip() or suffix else []
        messages.append({"blocks": [*lead, *chunk]})
    return messages
