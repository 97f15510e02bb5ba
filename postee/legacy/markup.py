"""The three markups of Postee's legacy renderers (`html`, `jira`, `slack`), byte for byte.

Each provider offers the same primitives (paragraph, headings, colour, link, table); the report is
written once against them (`report.py`). Nothing from the event is escaped by the html or jira
providers: that is what Postee does, and the goldens hold it. The slack provider writes Block Kit JSON
fragments, and its JSON string encoding (Go 1.18 `encoding/json`, `go_json_string`) is the only
escaping there is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

Rows = Sequence[Sequence[str]]

_GO_JSON_ESCAPES: dict[int, str] = {code: f"\\u{code:04x}" for code in range(0x20)}
_GO_JSON_ESCAPES.update(
    {
        ord("\n"): "\\n",
        ord("\r"): "\\r",
        ord("\t"): "\\t",
        ord('"'): '\\"',
        ord("\\"): "\\\\",
        ord("<"): "\\u003c",
        ord(">"): "\\u003e",
        ord("&"): "\\u0026",
        0x2028: "\\u2028",
        0x2029: "\\u2029",
    }
)
_GO_JSON_ESCAPES.update({code: "\ufffd" for code in range(0xD800, 0xE000)})


def go_json_string(text: str) -> str:
    """`text` as a JSON string literal, exactly as Go 1.18's `encoding/json` writes it.

    Go escapes `<`, `>`, `&`, U+2028 and U+2029 (its HTML-safe default), writes control characters as
    `\\u00xx` except `\\n`, `\\r`, `\\t` (no `\\b`, `\\f`, unlike Python), leaves DEL and all other
    non-ASCII text raw, and writes invalid text (a lone surrogate here) as U+FFFD.
    """
    return '"' + text.translate(_GO_JSON_ESCAPES) + '"'


class Markup(Protocol):
    """The primitives Postee's `LayoutProvider` offers the report."""

    name: ClassVar[str]

    def p(self, text: str) -> str: ...
    def h1(self, text: str) -> str: ...
    def h2(self, text: str) -> str: ...
    def h3(self, text: str) -> str: ...
    def colour(self, text: str, colour: str) -> str: ...
    def link(self, url: str, text: str) -> str: ...
    def table(self, rows: Rows) -> str: ...


class Html:
    name: ClassVar[str] = "html"

    TABLE_OPEN = "<TABLE border='1' style='width: 100%; border-collapse: collapse;'>"
    HEADER_CELL = "<TH style='padding: 5px;'>{}</TH>"
    CELL = "<TD style='padding: 5px;'>{}</TD>"

    def p(self, text: str) -> str:
        return f"<p>{text}</p>\n"

    def h1(self, text: str) -> str:
        return f"<h1>{text}</h1>\n"

    def h2(self, text: str) -> str:
        return f"<h2>{text}</h2>\n"

    def h3(self, text: str) -> str:
        return f"<h3>{text}</h3>\n"

    def colour(self, text: str, colour: str) -> str:
        return f"<span style='color:{colour}'>{text}</span>"

    def link(self, url: str, text: str) -> str:
        return f"<a href='{url}'>{text}</a>"

    def table(self, rows: Rows) -> str:
        lines = [self.TABLE_OPEN]
        for index, row in enumerate(rows):
            cell = self.HEADER_CELL if index == 0 else self.CELL
            lines += ["<TR>", "".join(cell.format(value) for value in row), "</TR>"]
        lines.append("</TABLE>")
        return "\n".join(lines) + "\n"


class Jira:
    name: ClassVar[str] = "jira"

    def p(self, text: str) -> str:
        return f"{text}\n"

    def h1(self, text: str) -> str:
        return f"h1. {text}\n"

    def h2(self, text: str) -> str:
        return f"h2. {text}\n"

    def h3(self, text: str) -> str:
        return f"h3. {text}\n"

    def colour(self, text: str, colour: str) -> str:
        return f"{{color:{colour}}}{text}{{color}}"

    def link(self, url: str, text: str) -> str:
        return f"[{text}|{url}]"

    def table(self, rows: Rows) -> str:
        if not rows:
            return ""
        header, *body = rows
        lines = ["||" + "||".join(header) + "||\n"]
        lines += ["|" + "|".join(row) + "|\n" for row in body]
        return "".join(lines) + "\n"


class Slack:
    """Block Kit fragments, each followed by a comma (the Slack action wraps them in `[...]`)."""

    name: ClassVar[str] = "slack"

    COUNTS_COLUMNS = 5
    """The counts table (one header row, one value row, five severities) is laid out column by column."""
    ROWS_PER_BLOCK = 5
    """Other tables put five rows (ten fields) in one section block."""

    def p(self, text: str) -> str:
        return text_block(text) + ","

    def h1(self, text: str) -> str:
        return self.p(f"*{text}*")

    h2 = h1
    h3 = h1

    def colour(self, text: str, colour: str) -> str:
        return f"*{text}*"

    def link(self, url: str, text: str) -> str:
        return f"<{url}|{text}>"

    def table(self, rows: Rows) -> str:
        if not rows:
            return ""
        header = rows[0]
        if len(rows) == 2 and len(header) == self.COUNTS_COLUMNS:
            fields = []
            for name, value in zip(header, rows[1], strict=False):
                fields += [f"*{name}*", value]
            return fields_block(fields) + ","
        numbered = bool(header) and header[0] == "#"
        blocks = []
        for start in range(0, len(rows), self.ROWS_PER_BLOCK):
            fields = []
            for index in range(start, min(start + self.ROWS_PER_BLOCK, len(rows))):
                cells = [f"*{cell}*" for cell in rows[index]] if index == 0 else list(rows[index])
                fields += _left_right(cells, numbered)
            blocks.append(fields_block(fields) + ",")
        return "".join(blocks)


def _left_right(cells: list[str], numbered: bool) -> list[str]:
    """A table row as Postee's slack provider shows it: two fields, `id` and the rest joined by ` / `."""
    split = 2 if numbered else 1
    left = " ".join(cells[:split])
    return [left, " / ".join(cells[split:])]


def text_block(text: str) -> str:
    """A section block with one mrkdwn text, as compact JSON (Go encoding, keys in Postee's order)."""
    return '{"type":"section","text":{"type":"mrkdwn","text":' + go_json_string(text) + "}}"


def fields_block(fields: Sequence[str]) -> str:
    """A section block with mrkdwn fields, as compact JSON (Go encoding, keys in Postee's order)."""
    encoded = ",".join('{"type":"mrkdwn","text":' + go_json_string(field) + "}" for field in fields)
    return '{"type":"section","fields":[' + encoded + "]}"


PROVIDERS: dict[str, Markup] = {provider.name: provider for provider in (Html(), Slack(), Jira())}
