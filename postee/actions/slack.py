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
  so the channel does not get the first part twice. A report that would take more than
  `MAX_MESSAGES` messages is replaced by Postee's short "too long" message with the content's `url`
  as links (`postee.legacy.slackbody.short_texts`): one message instead of a flood against Slack's
  rate limit (Postee's users asked for that message; only its body, invalid JSON, was wrong);
- the title is escaped as Slack's mrkdwn requires (`&`, `<`, `>` become `&amp;`, `&lt;`, `&gt;`),
  and cut to Slack's 3000-character limit for a section text; an empty title gets no title block
  (Slack rejects an empty text). Template blocks are sent as rendered: their `<url|text>` links are
  meant as links.

A description that is a run of blocks each followed by a comma (what Postee's legacy `slack` scan
renderer writes, see `postee.legacy.slackbody`) is posted exactly as Postee posts it: the title as a
bold section, the blocks re-encoded with Go's JSON encoder. Past 49 blocks, where Postee posts a short
"too long" message (as invalid JSON), it is split over several messages like any other report, up to
`MAX_MESSAGES`; past that it gets Postee's short message, as valid JSON.

Parsing and re-encoding a description is CPU work that grows with the report (seconds for a scan of
megabytes), so it runs in a worker thread: the event loop, which serves every other route and the
HTTP intake, is never held up by it.
"""

from __future__ import annotations

import json
import weakref
from typing import Any, ClassVar

import attrs
import trio

from postee.actions.base import ActionError, Delivery, SendResult, as_text, define_action
from postee.actions.httpclient import UrlAction, send_request
from postee.actions.registry import register
from postee.legacy.slackbody import SlackBodyError, build_bodies, is_block_run, mrkdwn_escape, short_texts
from postee.values.jsonkind import json_kind

DEFAULT_TIMEOUT = 30.0
"""Seconds per request (Postee sets no limit)."""

MAX_BLOCKS = 50
"""Slack's limit of blocks in one message, title block included."""

MAX_TEXT_CHARS = 3000
"""Slack's limit on the text of a section block."""

MAX_MESSAGES = 3
"""The most messages one report is split over; a longer one gets Postee's short message instead."""

BUILD_THREADS = 2
"""Worker threads that build bodies at once, per action: a burst of huge reports queues for them
rather than taking every thread (and, with the GIL, the event loop's share of the CPU)."""

CONTENT_TYPE = "application/json; charset=utf-8"


TEMPLATE_HINT = (
    "use a Slack template for this action, e.g. rego-package postee.vuls.slack or legacy-scan-renderer slack"
)

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

    _limiter: trio.CapacityLimiter | None = attrs.field(default=None, init=False)
    """Made at the first send, inside Trio (`from_spec` may run in a worker thread)."""

    async def send(self, delivery: Delivery) -> SendResult:
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(BUILD_THREADS)
        # Pure work on data nobody changes: if the attempt is cancelled, the thread may finish alone.
        bodies = await trio.to_thread.run_sync(self._bodies, delivery, abandon_on_cancel=True, limiter=self._limiter)
        key = id(delivery)
        result = SendResult()
        for index in range(self._progress.get(key, 0), len(bodies)):
            try:
                result = await send_request(self.client, "POST", self.url, content=bodies[index],
                                            headers={"Content-Type": CONTENT_TYPE})
            except ActionError as exc:
                if len(bodies) == 1:
                    raise
                raise ActionError(
                    f"message {index + 1} of {len(bodies)}: {exc.message}",
                    retryable=exc.retryable,
                    status=exc.status,
                    output=exc.output,
                    retry_after=exc.retry_after,
                ) from None
            self._remember(delivery, index + 1)
        self._progress.pop(key, None)
        return result

    def _bodies(self, delivery: Delivery) -> list[bytes]:
        """The request bodies for `delivery`, in order; a final ActionError when it is not Slack blocks.

        Runs in a worker thread: it must not touch the action's state.
        """
        route = f"route {delivery.route!r}: " if delivery.route else ""
        description = delivery.description
        url = as_text(delivery.content.get("url"))
        if is_block_run(description):
            try:
                return build_bodies(delivery.title, description, MAX_BLOCKS, url, MAX_MESSAGES)
            except SlackBodyError as exc:
                raise ActionError(
                    f"{route}the description is not a run of Slack blocks ({exc}); {TEMPLATE_HINT}",
                    retryable=False,
                ) from None
        try:
            blocks = parse_blocks(description)
        except BlocksError as exc:
            raise ActionError(
                f"{route}the description is not a JSON array of Slack blocks ({exc}); {TEMPLATE_HINT}",
                retryable=False,
            ) from None
        messages = build_messages(delivery.title, blocks)
        if len(messages) > MAX_MESSAGES:
            messages = build_messages(delivery.title, [section(text) for text in short_texts(url, MAX_BLOCKS - 1)])
        return [json.dumps(message, ensure_ascii=False).encode("utf-8") for message in messages]

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
    return mrkdwn_escape(text, limit)


def title_block(title: str, suffix: str = "") -> Block:
    """The section that leads a message: the escaped title (cut to fit), then `suffix` as it is."""
    return section((slack_escape(title, MAX_TEXT_CHARS - len(suffix)) + suffix).strip())


def section(text: str) -> Block:
    """A section block with one mrkdwn text."""
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
