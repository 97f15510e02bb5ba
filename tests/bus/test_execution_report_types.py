"""An execution report comes from the bus, where a broken or hostile runner may send anything: a report
whose fields have the wrong types is refused when read, never stored (it used to reach `/executions`,
which then answered 500 comparing a string with a float, and the dashboard's table stopped)."""

from __future__ import annotations

import json

import pytest

from postee.bus.protocol import ExecutionReport

GOOD = {"runner": "r1", "route": "r", "action": "a", "action_type": "webhook", "event_id": "e", "ok": True,
        "attempts": 1, "started_at": 1.5, "duration": 0.25, "error": None, "output": ""}


def test_a_well_formed_report_is_read():
    assert ExecutionReport.from_json(json.dumps(GOOD).encode()).started_at == 1.5
    assert ExecutionReport.from_json(json.dumps({**GOOD, "started_at": 2, "duration": 0}).encode()).duration == 0


@pytest.mark.parametrize("field, value", [
    ("started_at", "soon"), ("duration", "x"), ("attempts", "1"), ("ok", "yes"), ("route", 3),
    ("error", {"nested": 1}), ("output", None), ("started_at", True), ("attempts", 1.5),
])
def test_a_field_of_the_wrong_type_is_refused(field, value):
    with pytest.raises((TypeError, ValueError)):
        ExecutionReport.from_json(json.dumps({**GOOD, field: value}).encode())
