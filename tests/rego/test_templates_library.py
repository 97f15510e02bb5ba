"""The bundled template library: every package Postee ships, each compiling and rendering its tool's events.

The golden cases (test_goldens.py) pin the exact output of 12 packages; this checks the whole library
on regorus: every package exists, compiles, and yields a title and a result on a sample event of its
tool; aggregation packages merge rendered items; Slack output stays inside Slack's limits.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from postee.rego import gojson
from postee.rego.backends import get_backend
from postee.rego.engine import UNDEFINED

pytestmark = pytest.mark.skipif(importlib.util.find_spec("regorus") is None, reason="regorus not installed")

TESTS = Path(__file__).resolve().parents[1]
TEMPLATES = TESTS.parent / "postee" / "templates"
COMPAT_INPUTS = TESTS / "fixtures" / "compat" / "inputs"
EVENTS = TESTS / "fixtures" / "events"

AQUA_SCAN = COMPAT_INPUTS / "aqua-input.json"
TRIVY = COMPAT_INPUTS / "trivy-input.json"
TRIVY_OPERATOR = EVENTS / "trivy-operator-vulnerabilityreport.json"
TRACEE = EVENTS / "tracee-event.json"

# every package Postee ships -> a sample event of the tool it is for
SAMPLE_EVENTS = {
    "postee.rawmessage.html": COMPAT_INPUTS / "simple-input.json",
    "postee.rawmessage.json": COMPAT_INPUTS / "simple-input.json",
    "postee.vuls.html": AQUA_SCAN,
    "postee.vuls.slack": AQUA_SCAN,
    "postee.vuls.cyclondx": AQUA_SCAN,
    "postee.vuls.opsgenie": AQUA_SCAN,
    "postee.servicenow": AQUA_SCAN,
    "postee.servicenow.incident": COMPAT_INPUTS / "aqua-incident-input.json",
    "postee.servicenow.insight": COMPAT_INPUTS / "aqua-insight-input.json",
    "postee.vuls.trivy.slack": TRIVY,
    "postee.trivy.jira": TRIVY,
    "postee.trivyoperator.jira": TRIVY_OPERATOR,
    "postee.trivyoperator.slack": TRIVY_OPERATOR,
    "postee.trivyoperator.dependencytrack": TRIVY_OPERATOR,
    "postee.tracee.html": TRACEE,
    "postee.tracee.slack": TRACEE,
}
# aggregation package -> the template whose rendered items it merges
AGGREGATIONS = {
    "postee.vuls.html.aggregation": "postee.vuls.html",
    "postee.vuls.slack.aggregation": "postee.vuls.slack",
    "postee.vuls.slack.trivy.aggregation": "postee.vuls.trivy.slack",
}
CONTENT_RULES = {
    "title": "title",
    "url": "url",
    "date": "result_date",
    "severity": "result_severity",
    "summary": "result_summary",
    "category": "result_category",
    "subcategory": "result_subcategory",
    "assignedTo": "result_assigned_to",
    "assignedGroup": "result_assigned_group",
}
BACKENDS = [
    "regorus",
    pytest.param(
        "regopy",
        marks=pytest.mark.skipif(importlib.util.find_spec("regopy") is None, reason="regopy not installed"),
    ),
]
SLACK_MAX_FIELDS = 10
SLACK_MAX_BLOCKS = 50


def template_files() -> dict[str, Path]:
    files = {}
    for path in sorted(TEMPLATES.glob("*.rego")):
        match = re.search(r"^package\s+([\w.]+)", path.read_text(encoding="utf-8"), re.MULTILINE)
        assert match, f"{path.name} has no package line"
        assert match.group(1) not in files, f"package {match.group(1)} defined twice"
        files[match.group(1)] = path
    return files


def common_modules() -> dict[str, str]:
    return {str(p): p.read_text(encoding="utf-8") for p in sorted((TEMPLATES / "common").glob("*.rego"))}


def evaluate(package: str, event: Any, backend: str = "regorus") -> dict[str, Any]:
    path = template_files()[package]
    modules = {str(path): path.read_text(encoding="utf-8"), **common_modules()}
    if isinstance(event, dict):
        event = {**event, "postee": {"AquaServer": ""}}
    value = get_backend(backend).compile(modules, f"data.{package}").evaluate(json.dumps(event))
    assert value is not UNDEFINED
    return value


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def description_of(values: dict[str, Any]) -> str:
    result = values["result"]
    return result if isinstance(result, str) else gojson.marshal(result)


def aggregation_item(values: dict[str, Any]) -> dict[str, Any]:
    """What Postee hands an aggregation package for one rendered message."""
    description = description_of(values)
    try:
        parsed = json.loads(description)
    except ValueError:
        parsed = None
    item = {field: values.get(rule, "") for field, rule in CONTENT_RULES.items()}
    item["description"] = parsed if isinstance(parsed, list) else description
    return item


def assert_has_title_and_result(values: dict[str, Any]) -> None:
    assert isinstance(values.get("title"), str) and values["title"]
    assert "result" in values and values["result"] not in ("", [], {}, None)


def test_library_has_every_package_postee_ships() -> None:
    assert set(template_files()) == set(SAMPLE_EVENTS) | set(AGGREGATIONS)


def test_common_helpers_package() -> None:
    source = "\n".join(common_modules().values())
    assert re.search(r"^package postee\s*$", source, re.MULTILINE)
    for helper in ("flat_array", "with_default", "by_flag", "duplicate", "clamp"):
        assert re.search(rf"^{helper}\(", source, re.MULTILINE), helper


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("package", sorted(SAMPLE_EVENTS))
def test_template_renders_its_tools_event(package: str, backend: str) -> None:
    values = evaluate(package, load(SAMPLE_EVENTS[package]), backend)
    assert_has_title_and_result(values)
    assert isinstance(description_of(values), str)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("package", sorted(AGGREGATIONS))
def test_aggregation_merges_rendered_items(package: str, backend: str) -> None:
    base = AGGREGATIONS[package]
    first = load(SAMPLE_EVENTS[base])
    second = copy.deepcopy(first)
    if "image" in second:
        second["image"] = "second-image:1.0"
    else:
        second["ArtifactName"] = "second-artifact"
    items = [aggregation_item(evaluate(base, event, backend)) for event in (first, second)]

    values = evaluate(package, items, backend)

    assert_has_title_and_result(values)
    rendered = description_of(values)
    for item in items:
        assert item["title"] in rendered


def test_templates_that_can_be_aggregated_name_a_bundled_aggregation_package() -> None:
    for package, base in AGGREGATIONS.items():
        assert evaluate(base, load(SAMPLE_EVENTS[base]))["aggregation_pkg"] == package


def test_url_is_set_only_when_postee_knows_the_aqua_server() -> None:
    event = load(AQUA_SCAN)
    assert "url" not in evaluate("postee.vuls.html", event)
    with_server = {**event, "postee": {"AquaServer": "https://aqua.example"}}
    path = template_files()["postee.vuls.html"]
    query = get_backend("regorus").compile(
        {str(path): path.read_text(encoding="utf-8"), **common_modules()}, "data.postee.vuls.html.url"
    )
    assert query.evaluate(json.dumps(with_server)).startswith("https://aqua.example/")


def test_tracee_detection_content() -> None:
    html = evaluate("postee.tracee.html", load(TRACEE))
    assert html["title"] == "Tracee Detection - Anti-Debugging"
    assert "<p><b>Severity:</b> high</p>" in html["result"]
    assert "<p><b>Process name:</b> strace</p>" in html["result"]
    blocks = evaluate("postee.tracee.slack", load(TRACEE))["result"]
    texts = json.dumps(blocks)
    assert "TRC-2" in texts and "worker-node-1" in texts


def test_trivy_operator_dependencytrack_is_a_cyclonedx_bom() -> None:
    values = evaluate("postee.trivyoperator.dependencytrack", load(TRIVY_OPERATOR))
    bom = json.loads(values["result"])
    assert bom["bomFormat"] == "CycloneDX"
    refs = [c["bom-ref"] for c in bom["components"]]
    assert len(refs) == len(set(refs)) == 3  # openssl has two vulnerabilities, one component
    assert {v["id"] for v in bom["vulnerabilities"]} == {
        "CVE-2022-1292",
        "CVE-2022-2068",
        "CVE-2022-32207",
        "CVE-2021-3999",
    }
    assert all(a["ref"] in refs for v in bom["vulnerabilities"] for a in v["affects"])
    assert values["title"] == "library/nginx:1.21.6"


def _big_trivy_report(count: int) -> dict[str, Any]:
    report = load(TRIVY)
    template = report["Results"][0]["Vulnerabilities"][0]
    vulns = []
    for n in range(count):
        vuln = copy.deepcopy(template)
        vuln["VulnerabilityID"] = f"CVE-2024-{n:05d}"
        vuln["Severity"] = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"][n % 5]
        vulns.append(vuln)
    report["Results"][0]["Vulnerabilities"] = vulns
    return report


@pytest.mark.parametrize("package", ["postee.vuls.trivy.slack", "postee.vuls.slack.trivy.aggregation"])
def test_slack_output_stays_within_slack_limits(package: str) -> None:
    report = _big_trivy_report(200)
    if package in AGGREGATIONS:
        item = aggregation_item(evaluate(AGGREGATIONS[package], report))
        blocks = evaluate(package, [item, item, item])["result"]
        assert len(blocks) <= SLACK_MAX_BLOCKS
    else:
        blocks = evaluate(package, report)["result"]
        ids = {f["text"] for b in blocks for f in b.get("fields", []) if f["text"].startswith("CVE-")}
        assert len(ids) == 200  # nothing lost by splitting into sections
    assert all(len(block.get("fields", [])) <= SLACK_MAX_FIELDS for block in blocks)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("flat_array([[1, 2], [], [3]])", [1, 2, 3]),
        ('with_default({"a": 1}, "a", 0)', 1),
        ('with_default({"a": 1}, "b", 0)', 0),
        ('by_flag("yes", "no", true)', "yes"),
        ('by_flag("yes", "no", false)', "no"),
        ('duplicate("a", "b", 1)', "a"),
        ('duplicate("a", "b", 2)', "b"),
        ("clamp(70, 50)", 50),
        ("clamp(7, 50)", 7),
    ],
)
def test_common_helpers(expression: str, expected: Any) -> None:
    module = f"package t\nimport data.postee\nvalue := postee.{expression}\n"
    query = get_backend("regorus").compile({"t.rego": module, **common_modules()}, "data.t.value")
    assert query.evaluate("{}") == expected
