"""`postee render` and `postee route test`, in-process through `postee.cli.main` and once as a process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from postee.cli import main

ENGINE = "regorus"  # fast and always installed in dev; the regopy path is the same code
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("postee.rego.regorus_backend") is None, reason="no regorus backend"
)

REPO = Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT = 60

COMMON = "package postee\n\nwith_default(obj, prop, d) = d {\n\tnot obj[prop]\n}\n\n" + (
    "with_default(obj, prop, d) = obj[prop] {\n\tobj[prop]\n}\n"
)
SCAN_TEMPLATE = """package test.scan

import data.postee.with_default

title := sprintf("%s scan", [input.image])
result := sprintf("critical: %d", [with_default(input.vulnerability_summary, "critical", 0)])
url := sprintf("%s/images/%s", [input.postee.AquaServer, input.image])
"""
EVENT = {
    "image": "alpine:3.18",
    "registry": "Docker Hub",
    "vulnerability_summary": {"critical": 2},
    "application_scope_owners": ["a@x", "b@y"],
}


@pytest.fixture
def templates(tmp_path) -> Path:
    root = tmp_path / "templates"
    (root / "common").mkdir(parents=True)
    (root / "common" / "common.rego").write_text(COMMON)
    (root / "scan.rego").write_text(SCAN_TEMPLATE)
    return root


@pytest.fixture
def event_file(tmp_path) -> Path:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(EVENT))
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("POSTEE_REGO_ENGINE", "POSTEE_REGO_TEMPLATES", "POSTEE_CFG", "AQUAALERT_CFG"):
        monkeypatch.delenv(name, raising=False)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# --- render ------------------------------------------------------------------------------------------


def test_render_text(capsys, templates, event_file):
    status, out, err = run_cli(
        capsys, "--rego-engine", ENGINE, "--rego-templates", str(templates),
        "render", "--template", "test.scan", "--event", str(event_file),
    )  # fmt: skip
    assert (status, err) == (0, "")
    assert out == "title: alpine:3.18 scan\nurl: /images/alpine:3.18\nowners: a@x;b@y\ndescription:\n  critical: 2\n"


def test_render_json_with_options_after_the_subcommand(capsys, templates, event_file):
    status, out, _ = run_cli(
        capsys, "render", "--template", "test.scan", "--event", str(event_file), "--json",
        "--rego-engine", ENGINE, "--rego-templates", str(templates),
    )  # fmt: skip
    assert status == 0
    assert json.loads(out) == {
        "title": "alpine:3.18 scan",
        "description": "critical: 2",
        "url": "/images/alpine:3.18",
        "date": "",
        "severity": "",
        "summary": "",
        "category": "",
        "subcategory": "",
        "assignedTo": "",
        "assignedGroup": "",
        "owners": "a@x;b@y",
    }


def test_render_a_template_file_with_common_helpers(capsys, templates, event_file, monkeypatch, tmp_path):
    monkeypatch.setenv("POSTEE_REGO_ENGINE", ENGINE)
    monkeypatch.setenv("POSTEE_REGO_TEMPLATES", str(templates))
    body = tmp_path / "mine.rego"
    body.write_text(SCAN_TEMPLATE.replace("package test.scan", "package my.own"))
    status, out, _ = run_cli(capsys, "render", "--template", str(body), "--event", str(event_file), "--json")
    assert status == 0
    assert json.loads(out)["description"] == "critical: 2"


def test_render_bundled_raw_json(capsys, event_file):
    status, out, _ = run_cli(
        capsys, "--rego-engine", ENGINE, "render", "--template", "postee.rawmessage.json",
        "--event", str(event_file), "--json",
    )  # fmt: skip
    assert status == 0
    assert json.loads(json.loads(out)["description"]) == EVENT


def test_render_errors(capsys, templates, event_file, tmp_path):
    common = ("--rego-engine", ENGINE, "--rego-templates", str(templates), "render")
    status, _, err = run_cli(capsys, *common, "--template", "no.such", "--event", str(event_file))
    assert status == 1 and "no template package 'no.such'" in err
    status, _, err = run_cli(capsys, *common, "--template", "test.scan", "--event", str(tmp_path / "x.json"))
    assert status == 2 and "cannot read event" in err
    (tmp_path / "list.json").write_text("[1]")
    status, _, err = run_cli(capsys, *common, "--template", "test.scan", "--event", str(tmp_path / "list.json"))
    assert status == 2 and "must be a JSON object" in err
    status, _, err = run_cli(
        capsys, "--rego-templates", str(tmp_path / "none"), "render", "--template", "a", "--event", "x"
    )
    assert status == 2 and "does not exist" in err


# --- route test ---------------------------------------------------------------------------------------


def write_config(tmp_path: Path, filters: Path) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"""
name: test
aqua-server: https://aqua.example
routes:
  - name: alpine-critical
    input: |
      contains(input.image, "alpine")
      input.vulnerability_summary.critical > 0
    actions: [my-slack, my-webhook]
    template: scan
  - name: debian-only
    input: contains(input.image, "debian")
    actions: [my-jira]
    template: scan
  - name: from-files
    input-files: [{filters}/registry.rego]
    actions: [my-stdout]
    template: raw
  - name: everything
    actions: []
    template: scan
templates:
  - name: scan
    rego-package: test.scan
  - name: raw
    rego-package: postee.rawmessage.json
"""
    )
    return cfg


@pytest.fixture
def filters(tmp_path) -> Path:
    root = tmp_path / "filters"
    root.mkdir()
    (root / "registry.rego").write_text('package postee\n\nallow {\n  input.registry == "Docker Hub"\n}\n')
    return root


def test_route_test_json(capsys, tmp_path, templates, filters, event_file):
    cfg = write_config(tmp_path, filters)
    # The user's library replaces the bundled one: bring the raw template along, as a user would.
    bundled_raw = REPO / "postee" / "templates" / "raw-message-json.rego"
    (templates / "raw-message-json.rego").write_text(bundled_raw.read_text())
    status, out, err = run_cli(
        capsys, "--rego-engine", ENGINE, "--rego-templates", str(templates),
        "route", "test", "--cfgfile", str(cfg), "--event", str(event_file), "--json",
    )  # fmt: skip
    assert (status, err) == (0, "")
    routes = json.loads(out)["routes"]
    assert [(r["name"], r["matched"], r["actions"]) for r in routes] == [
        ("alpine-critical", True, ["my-slack", "my-webhook"]),
        ("debian-only", False, ["my-jira"]),
        ("from-files", True, ["my-stdout"]),
        ("everything", True, []),
    ]
    assert routes[0]["content"]["url"] == "https://aqua.example/images/alpine:3.18"  # aqua-server used
    assert routes[0]["content"] == routes[3]["content"]
    assert routes[1]["content"] is None
    assert routes[2]["content"]["title"] == "-"
    assert json.loads(routes[2]["content"]["description"])["image"] == "alpine:3.18"


def test_route_test_text(capsys, tmp_path, templates, filters, event_file):
    cfg = write_config(tmp_path, filters)
    status, out, _ = run_cli(
        capsys, "--rego-engine", ENGINE, "--rego-templates", str(templates), "--cfgfile", str(cfg),
        "route", "test", "--event", str(event_file),
    )  # fmt: skip
    assert status == 1  # `raw` names a package the user library does not have
    lines = out.splitlines()
    assert lines[0] == "route 'alpine-critical': matched -> actions: my-slack, my-webhook"
    assert "  title: alpine:3.18 scan" in lines
    assert "route 'debian-only': not matched" in lines
    assert any(line.startswith("  error: template 'raw'") for line in lines)


def test_route_test_missing_template_is_a_clear_error(capsys, tmp_path, event_file):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("routes:\n  - name: r\n    template: nowhere\ntemplates: []\n")
    status, _, err = run_cli(
        capsys, "--rego-engine", ENGINE, "route", "test", "--cfgfile", str(cfg), "--event", str(event_file)
    )
    assert status == 2
    assert f"{cfg}: routes[0] (name: r).template: unknown template 'nowhere'" in err


def test_route_test_reports_a_broken_rule(capsys, tmp_path, event_file):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "routes:\n  - name: bad\n    input: |\n      input.a == 1\n      input.b ==\n    template: t\n"
        "templates:\n  - name: t\n    rego-package: postee.rawmessage.json\n"
    )
    status, out, _ = run_cli(
        capsys, "--rego-engine", ENGINE, "route", "test", "--cfgfile", str(cfg), "--event", str(event_file),
        "--json",
    )  # fmt: skip
    assert status == 1
    (route,) = json.loads(out)["routes"]
    assert route["matched"] is False and route["error"].startswith("route 'bad':2: input: ")


def test_render_as_a_real_process(templates, event_file):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTEE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "postee", "--rego-engine", ENGINE, "--rego-templates", str(templates),
         "render", "--template", "test.scan", "--event", str(event_file), "--json"],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, cwd=REPO, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["title"] == "alpine:3.18 scan"
    assert proc.stderr == ""
