"""`postee events` prints what others wrote (an action's error can quote the event, a runner names
itself): control characters must reach the terminal as visible escapes, never as terminal commands."""

from __future__ import annotations

import json

from postee.cli_events import _print, line_of

HOSTILE = "boom\x1b]0;owned\x07\x1b[2J\x9b31m\u202egnp.exe\r\nfake line \U000e0041\U000e0042 hidden tags"


def execution(error: str) -> dict:
    return {"type": "execution", "node": "runner\x1b[1m-1", "route": "r", "action": "a", "event_id": "e",
            "status": "failed", "attempts": 1, "duration": 0.1, "error": error}


def test_a_readable_line_carries_no_control_character():
    line = line_of(execution(HOSTILE))
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 or c == "\u202e" for c in line), repr(line)
    assert "\\x1b]0;owned" in line and "\\u202e" in line  # shown, not obeyed
    assert "\\U000e0041\\U000e0042" in line  # tag characters (hidden text) shown, whole
    assert "\n" not in line  # one message, one line


def test_a_json_line_is_valid_json_without_raw_c1_or_format_characters(capsys):
    message = execution(HOSTILE)
    _print(message, as_json=True)
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    assert not any(0x80 <= ord(c) < 0xa0 or c in "\u202e\x1b\U000e0041" for c in out), repr(out)
    assert json.loads(out) == message


def test_ordinary_text_is_left_alone():
    line = line_of(execution("connexion refusée: 503 — réessayez"))
    assert line.endswith("connexion refusée: 503 — réessayez")


def test_an_events_routes_are_said_once_known():
    assert line_of({"type": "event", "stage": "routed", "id": "e1", "routes": ["a", "b"], "failed": ["c"]}) == (
        "event     e1 matched a, b; failed in c")
    assert line_of({"type": "event", "stage": "routed", "id": "e2", "routes": [], "failed": []}) == (
        "event     e2 matched no route")
