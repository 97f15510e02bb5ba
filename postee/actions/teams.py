"""The `teams` action: post the rendered HTML to a Microsoft Teams webhook, as Postee's teams action.

The payload is Postee's: `{"text": "<h2>" + title + "</h2>" + description}`, the description being
HTML (templates such as `postee.vuls.html`); the title is HTML-escaped, the description is not (it
is markup). `url` is the webhook URL, which carries its secret: it is never logged, errors name its
host only. Two kinds of webhook answer differently, and the reply tells which one it was:

- a legacy Office 365 connector (`https://<tenant>.webhook.office.com/webhookb2/...`) answers 200
  with the body `1`. It also answers 200 when delivery *failed* (`Webhook message delivery failed
  with error: Microsoft Teams endpoint returned HTTP error 429 ...`): a 200 whose body says it
  failed is a failure, retryable when the status it quotes is a 429 or a 5xx;
- a Power Automate Workflows webhook (`https://...logic.azure.com/workflows/...`) answers
  202 Accepted with an empty body: the flow runs later, so 202 is success (as is any other 2xx, e.g.
  a flow that ends with its own Response step).

Teams rejects messages over about 28 KB, and a vulnerability report easily exceeds that. Postee
then replaces the whole report by a short "too long" notice; here the description is kept as far
as it fits: it is cut, at a tag boundary, so that the whole JSON payload stays under
`MAX_PAYLOAD_BYTES`, and a note is appended saying so, with a link to the event's `url` content
field (the report in the Aqua console) when the template gave one.
"""

from __future__ import annotations

import html
import json
import re
from typing import ClassVar

from postee.actions.base import ActionError, Delivery, SendResult, as_text, define_action
from postee.actions.httpclient import UrlAction, describe_url, send_request
from postee.actions.registry import register

DEFAULT_TIMEOUT = 30.0
"""Seconds per request (Postee sets no limit)."""

MAX_PAYLOAD_BYTES = 26 * 1024
"""Largest JSON payload sent, in UTF-8 bytes: under Teams' ~28 KB limit with room for its own envelope."""

MAX_TITLE_CHARS = 1024
"""Longest title shown (before escaping); a longer one is cut with an ellipsis."""

LEGACY_SUCCESS_BODY = "1"
"""What a legacy Office 365 connector answers, with status 200, when it delivered the message."""

CONTENT_TYPE = "application/json; charset=utf-8"

TRUNCATED_NOTE = "<p><i>Message shortened to fit Microsoft Teams' size limit.</i></p>"
TRUNCATED_NOTE_WITH_LINK = (
    '<p><i>Message shortened to fit Microsoft Teams\' size limit.</i> Full report: <a href="{href}">{text}</a></p>'
)

_FAILURE_NOTICE = re.compile(r"(?i)\b(?:fail(?:ed|ure)?|error)\b")
"""A 200 body that is a legacy connector's failure notice rather than its `1`."""

LINK_SCHEMES = ("http://", "https://")
"""A content `url` is linked to only with one of these schemes."""

_RETRYABLE_FAILURE = re.compile(r"HTTP error (?:429|5\d\d)\b")
"""A legacy connector's 200 failure body that quotes a status worth trying again."""

_ENTITY_TAIL = re.compile(r"&#?[A-Za-z0-9]{0,10}$")
"""An HTML character reference cut before its `;`."""


@register
@define_action
class TeamsAction(UrlAction):
    type_name: ClassVar[str] = "teams"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    async def send(self, delivery: Delivery) -> SendResult:
        text = build_text(delivery.title, delivery.description, as_text(delivery.content.get("url")))
        body = json.dumps({"text": text}, ensure_ascii=False).encode("utf-8")
        result = await send_request(self.client, "POST", self.url, content=body, headers={"Content-Type": CONTENT_TYPE})
        check_legacy_reply(f"POST {describe_url(self.url)}", result)
        return result


def check_legacy_reply(where: str, result: SendResult) -> None:
    """Raise when a 200 reply is a legacy connector's failure notice rather than its `1`."""
    answer = result.output.strip()
    if result.status != 200 or answer == LEGACY_SUCCESS_BODY or not _FAILURE_NOTICE.search(answer):
        return
    raise ActionError(
        f"{where}: HTTP 200 but Teams did not deliver the message: {answer[:200]}",
        retryable=bool(_RETRYABLE_FAILURE.search(answer)),
        status=result.status,
        output=result.output,
    )


def build_text(title: str, description: str, link: str = "", limit: int = MAX_PAYLOAD_BYTES) -> str:
    """The message HTML: the escaped title as a heading, then the description, shortened to fit `limit`."""
    if len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 1] + "…"
    heading = f"<h2>{html.escape(title)}</h2>" if title else ""
    text = heading + description
    if _payload_size(text) <= limit:
        return text
    note = truncation_note(link)
    budget = limit - _payload_size(heading + note)
    return heading + cut_html(description, budget) + note


def truncation_note(link: str) -> str:
    if not link.lower().startswith(LINK_SCHEMES):
        return TRUNCATED_NOTE
    return TRUNCATED_NOTE_WITH_LINK.format(href=html.escape(link, quote=True), text=html.escape(link))


def _payload_size(text: str) -> int:
    return len(json.dumps({"text": text}, ensure_ascii=False).encode("utf-8"))


def _encoded_size(char: str) -> int:
    """Bytes `char` takes inside a JSON string written as UTF-8 (escapes included)."""
    if " " <= char <= "~" and char not in '"\\':
        return 1
    return len(json.dumps(char, ensure_ascii=False).encode("utf-8")) - 2


def cut_html(markup: str, budget: int) -> str:
    """The longest prefix of `markup` taking at most `budget` bytes in the JSON payload, not cut inside
    a tag or a character reference."""
    size = 0
    for end, char in enumerate(markup):
        size += _encoded_size(char)
        if size > budget:
            prefix = markup[:end]
            break
    else:
        return markup
    open_tag = prefix.rfind("<")
    if open_tag > prefix.rfind(">"):
        prefix = prefix[:open_tag]
    entity = _ENTITY_TAIL.search(prefix)
    if entity:
        prefix = prefix[: entity.start()]
    return prefix
