"""Where the legacy goldens live: a copy of shared/compat/legacy (and the inputs it names)."""

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent.parent / "fixtures" / "legacy"
CASES = json.loads((FIXTURES / "cases.json").read_text())["cases"]


def fixture_path(relative: str) -> Path:
    """A path of cases.json (relative to shared/compat) in our copy: legacy/x -> x, inputs/x -> inputs/x."""
    folder, _, name = relative.partition("/")
    return FIXTURES / name if folder == "legacy" else FIXTURES / relative


def load_event(relative: str) -> Any:
    return json.loads(fixture_path(relative).read_text(encoding="utf-8"))


def golden(relative: str) -> bytes:
    return fixture_path(relative).read_bytes()
