"""The bundled example rego-filters: each allows what it says and nothing else, alone and OR-ed."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from postee.rego.backends import get_backend
from postee.rego.engine import UNDEFINED

TESTS = Path(__file__).resolve().parents[1]
FILTERS = TESTS.parent / "postee" / "filters"
INPUTS = TESTS / "fixtures" / "compat" / "inputs"
EVENTS = TESTS / "fixtures" / "events"
QUERY = "data.postee.allow"

BACKENDS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"{name} not installed"),
    )
    for name in ("regorus", "regopy")
]


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def aqua(**changes: Any) -> dict[str, Any]:
    event = load(INPUTS / "aqua-input.json")
    event.update(changes)
    return event


def aqua_with_vulnerabilities(change: Any) -> dict[str, Any]:
    event = aqua()
    for resource in event["resources"]:
        for vulnerability in resource["vulnerabilities"]:
            change(vulnerability)
    return event


def _only_low(v: dict[str, Any]) -> None:
    v["aqua_severity"] = "low"


def _no_fix(v: dict[str, Any]) -> None:
    v.pop("fix_version", None)


def trivy_without_fixes() -> dict[str, Any]:
    report = load(INPUTS / "trivy-input.json")
    for result in report["Results"]:
        for vulnerability in result["Vulnerabilities"]:
            vulnerability.pop("FixedVersion", None)
    return report


def operator(image_tag: str = "1.21.6", severity: str | None = None) -> dict[str, Any]:
    report = copy.deepcopy(load(EVENTS / "trivy-operator-vulnerabilityreport.json"))
    report["report"]["artifact"]["tag"] = image_tag
    if severity is not None:
        for vulnerability in report["report"]["vulnerabilities"]:
            vulnerability["severity"] = severity
    return report


def allows(backend: str, files: list[str], event: Any) -> bool:
    modules = {name: (FILTERS / name).read_text(encoding="utf-8") for name in files}
    value = get_backend(backend).compile(modules, QUERY).evaluate(json.dumps(event))
    assert value is True or value is UNDEFINED, value
    return value is True


# filter file -> (events it allows, events it does not)
CASES = {
    "allow-image-name.rego": (
        [aqua(), operator()],
        [aqua(image="redis:7"), load(INPUTS / "trivy-input.json"), load(INPUTS / "simple-input.json")],
    ),
    "ignore-image-name.rego": (
        [aqua(), operator()],
        [aqua(image="test-app:1.0"), aqua(image="registry.local/team/test-api:2"), operator("dev")],
    ),
    "allow-registry.rego": (
        [aqua(), operator()],
        [aqua(registry="Docker Hub"), load(INPUTS / "simple-input.json")],
    ),
    "ignore-registry.rego": (
        [aqua(), operator()],
        [aqua(registry="Docker Hub"), load(INPUTS / "simple-input.json")],
    ),
    "min-vulnerability-severity.rego": (
        [aqua(), load(INPUTS / "trivy-input.json"), operator()],
        [aqua_with_vulnerabilities(_only_low), operator(severity="MEDIUM"), aqua(resources=[])],
    ),
    "only-fix-available.rego": (
        [aqua(), load(INPUTS / "trivy-input.json"), operator()],
        [aqua_with_vulnerabilities(_no_fix), trivy_without_fixes(), load(INPUTS / "simple-input.json")],
    ),
}


def test_every_bundled_filter_is_tested() -> None:
    assert sorted(p.name for p in FILTERS.glob("*.rego")) == sorted(CASES)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_filter_allows_and_refuses(backend: str, name: str) -> None:
    allowed, refused = CASES[name]
    assert [allows(backend, [name], event) for event in allowed] == [True] * len(allowed)
    assert [allows(backend, [name], event) for event in refused] == [False] * len(refused)


@pytest.mark.parametrize("backend", BACKENDS)
def test_filters_are_ored_and_load_together(backend: str) -> None:
    pair = ["allow-registry.rego", "min-vulnerability-severity.rego"]
    assert allows(backend, pair, aqua(registry="Docker Hub"))  # severity allows it
    assert allows(backend, pair, aqua_with_vulnerabilities(_only_low))  # registry allows it
    low_from_hub = aqua_with_vulnerabilities(_only_low)
    low_from_hub["registry"] = "Docker Hub"
    assert not allows(backend, pair, low_from_hub)
    # every bundled filter in one route: no rule conflicts between the files
    assert allows(backend, sorted(CASES), aqua())
