"""What the Slack action posts for a description that is a run of blocks (the legacy `slack` renderer).

The legacy renderer writes Block Kit blocks each followed by a comma, not wrapped in `[...]`. Postee's
Slack action drops the last comma, wraps the rest in brackets, decodes it into its `Block` structs (Go
rules: unknown keys dropped, a wrong type fails the message) and writes the body itself:
`{"blocks":[` + the title as a bold section + the blocks re-encoded compactly with Go's encoder +
`]}`. Reproducing that byte for byte keeps what a Slack channel shows identical after a migration.

Where Postee gives up on a long report (49 blocks or more: it posts a short "too long, see the link"
message, and that body is invalid JSON because of a trailing comma), the report is split here over
several messages of at most `max_blocks` blocks, each led by the title, like the Slack action does for
Rego templates. Reports under 49 blocks are posted exactly as Postee posts them. A report that would
need more than `max_messages` messages gets Postee's short message after all (`short_texts`), as
valid JSON: one message with the link is what Postee's users asked for, and a flood of messages runs
into Slack's rate limit.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

from postee.legacy.godecode import (
    GoDecodeError,
    Kind,
    Pointer,
    Slice,
    Struct,
    decode,
    go_string,
    loads_pairs,
    slice_items,
)
from postee.legacy.markup import go_json_string, text_block

TEXT = Struct("TextBlock", (("type", Kind.STRING), ("text", Kind.STRING)))
BLOCK = Struct("Block", (("type", Kind.STRING), ("text", Pointer(TEXT)), ("fields", Slice(TEXT))))
BLOCKS = Slice(BLOCK)
"""Postee's Slack `Block`: `text` is a pointer (omitted when absent or null), `fields` omitted when empty."""

MAX_TEXT_CHARS = 3000
"""Slack's limit on the text of a section block (the title block is cut to fit it)."""

TOO_LONG = "This message is too long to display here. Please visit the link to read the content."
NO_SERVER = "Please configure Aqua server url to get link to entire scan results."
SETTINGS_URL = "https://aquasecurity.github.io/postee/settings/"
SETTINGS_TEXT = "Postee settings"
NO_LINK = (
    "Unable to create link to entire scan results. "
    "Input message doesn't contain 'registry' and 'image' fields or they are empty"
)
"""Postee's short message texts (`buildShortMessage`), word for word."""

LINK_SCHEMES = ("http://", "https://")
_MRKDWN_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MRKDWN_TABLE = str.maketrans(_MRKDWN_ESCAPES)
_BAD_PERCENT = re.compile("%(?![0-9A-Fa-f]{2})")


class SlackBodyError(ValueError):
    """The description looks like a run of blocks but is not one (Postee: `wrong template selected`)."""


def is_block_run(description: str) -> bool:
    """Whether `description` is a run of blocks each followed by a comma, as the legacy renderer writes.

    A JSON array of blocks (what Slack Rego templates render) is not one: the action keeps its own
    handling for those.
    """
    text = description.strip()
    return text.startswith("{") and text.endswith(",")


def encode_blocks(description: str) -> list[str]:
    """The blocks of a run, each re-encoded as Postee's action writes it (compact, Go escaping)."""
    text = description.strip()
    if text.endswith(","):
        text = text[:-1]
    if not text.startswith("["):
        text = "[" + text + "]"
    try:
        value = loads_pairs(text)
    except ValueError as exc:
        raise SlackBodyError(f"not valid JSON: {exc}") from None
    try:
        blocks = decode(BLOCKS, value, None, "blocks")
    except GoDecodeError as exc:
        raise SlackBodyError(str(exc)) from None
    return [_encode_block(block) for block in slice_items(blocks)]


def _encode_block(block: dict[str, Any]) -> str:
    out = '{"type":' + go_json_string(block["type"])
    if block["text"] is not None:
        out += ',"text":' + _encode_text(block["text"])
    fields = slice_items(block["fields"])
    if fields:
        out += ',"fields":[' + ",".join(_encode_text(field) for field in fields) + "]"
    return out + "}"


def _encode_text(text: dict[str, str]) -> str:
    return '{"type":' + go_json_string(text["type"]) + ',"text":' + go_json_string(text["text"]) + "}"


def title_block(title: str, suffix: str = "") -> str:
    """Postee's title block: the title in bold (`*...*`), cut to Slack's limit, with no mrkdwn escaping."""
    room = MAX_TEXT_CHARS - 2 - len(suffix)
    return text_block(f"*{title[:room]}{suffix}*")


def build_bodies(
    title: str, description: str, max_blocks: int, url: str = "", max_messages: int | None = None
) -> list[bytes]:
    """The request bodies for a run of blocks: none for no blocks, else one per `max_blocks - 1` blocks,
    or the one short message (see `short_texts`, with the content's `url`) past `max_messages` bodies.

    Raises `SlackBodyError` when the run is not valid JSON or a block has a wrong type.
    """
    blocks = encode_blocks(description)
    per_message = max_blocks - 1
    chunks = [blocks[start : start + per_message] for start in range(0, len(blocks), per_message)]
    if max_messages is not None and len(chunks) > max_messages:
        short = ",".join(text_block(text) for text in short_texts(url, per_message))
        return [('{"blocks":[' + title_block(title) + "," + short + "]}").encode("utf-8")]
    bodies = []
    for number, chunk in enumerate(chunks, 1):
        suffix = "" if number == 1 else f" (continued, {number}/{len(chunks)})"
        body = '{"blocks":[' + title_block(title, suffix) + "," + ",".join(chunk) + "]}"
        bodies.append(body.encode("utf-8"))
    return bodies


def short_texts(url: str, max_texts: int) -> list[str]:
    """The mrkdwn texts of Postee's short message for a report too long to post (at most `max_texts`).

    Postee chooses from its `aqua-server` setting, which the Slack action does not know; the content's
    `url` (one line per report, several when aggregated) tells the same: its lines are links when the
    server is set. So: the links when every line is one, else how to configure the server, else (no
    url) that no link can be made. Unlike Postee, a link is escaped for Slack (a `<`, `>` or `|` of the
    event's image or registry would otherwise end it and start markup of the event's choosing), an
    unreadable link text shows the link itself, and the texts keep within Slack's limits.
    """
    links = [line.strip() for line in url.split("\n") if line.strip()]
    if not links:
        return [NO_LINK]
    if not all(link.lower().startswith(LINK_SCHEMES) for link in links):
        return [NO_SERVER, mrkdwn_link(SETTINGS_URL, SETTINGS_TEXT)]
    room = max_texts - 1
    shown = links if len(links) <= room else links[: room - 1]
    texts = [TOO_LONG, *(mrkdwn_link(link, query_unescape(link)) for link in shown)]
    if len(shown) < len(links):
        texts.append(f"... and {len(links) - len(shown)} more links.")
    return texts


def mrkdwn_link(url: str, text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`<url|text>` with both escaped for Slack's mrkdwn, the text cut to fit `limit` characters.

    Without a text it is `<url>` (Slack shows the url); a url too long for a block is shown as text.
    """
    target = mrkdwn_escape(url).replace("|", "%7C")
    if len(target) + 2 > limit:
        return mrkdwn_escape(url, limit)
    label = mrkdwn_escape(text, max(limit - len(target) - 3, 0))
    return f"<{target}|{label}>" if label else f"<{target}>"


def mrkdwn_escape(text: str, limit: int | None = None) -> str:
    """`text` with `&`, `<`, `>` escaped for Slack, cut (never inside an entity) to `limit` characters."""
    if limit is None:
        return text.translate(_MRKDWN_TABLE)
    out: list[str] = []
    size = 0
    for char in text[:limit]:  # each character takes at least one place
        piece = _MRKDWN_ESCAPES.get(char, char)
        if size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def query_unescape(text: str) -> str:
    """Go's `url.QueryUnescape` as Postee uses it: `+` is a space, `%XX` a byte; "" for a malformed `%`.

    Bytes that are not UTF-8 become U+FFFD, one per byte, as Go's JSON encoder writes them.
    """
    if _BAD_PERCENT.search(text):
        return ""
    raw = unquote_to_bytes(go_string(text).replace("+", " "))
    return go_string(raw.decode("utf-8", "surrogateescape"))
