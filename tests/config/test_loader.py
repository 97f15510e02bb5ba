from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from postee.config import ConfigError, Severity, load_config, parse_config
from postee.values.durations import parse_duration
from postee.values.sizes import parse_size

ROOT = Path(__file__).resolve().parents[2]

POSTEE_STYLE = """
name: tenant
aqua-server: https://aqua.example.com
max-db-size: 13MB
db-verify-interval: 2
routes:
  - name: stdout
    actions: [stdout]
    template: raw-html
  - name: route1
    input: contains(input.image, "alpine")
    input-files: [allow-image-name.rego]
    serialize-actions: true
    actions: [my-webhook, stdout]
    template: vuls-html
    plugins:
      aggregate-message-number: 10
      aggregate-message-timeout: 2 d
      unique-message-props: ["digest", "image", "registry"]
      unique-message-timeout: 1h
      policy-show-all: true
templates:
  - name: raw-html
    rego-package: postee.rawmessage.html
  - name: vuls-html
    rego-package: postee.vuls.html
actions:
  - name: stdout
    type: stdout
    enable: true
  - name: my-webhook
    type: Webhook
    enable: true
    url: $HOOK_URL
    timeout: 30s
"""


def problems_of(text, environ=None):
    return parse_config(yaml.safe_load(text), environ=environ or {})


def test_postee_style_config_loads_with_parsed_units():
    config, problems = problems_of(POSTEE_STYLE, {"HOOK_URL": "https://hooks.example.com/x"})
    assert [p for p in problems if p.severity is Severity.ERROR] == []
    assert config.max_db_size == 13 * 1024 * 1024 and config.db_verify_interval_hours == 2
    route = config.route("route1")
    assert route.serialize_actions and route.input_files == ("allow-image-name.rego",)
    assert route.plugins.aggregate_message_number == 10
    assert route.plugins.aggregate_message_timeout == 2 * 86400
    assert route.plugins.unique_message_timeout == 3600
    assert route.plugins.unique_message_props == ("digest", "image", "registry")
    hook = config.action("my-webhook")
    assert hook.settings["url"] == "https://hooks.example.com/x"  # $VAR resolved
    assert config.template("vuls-html").kind == "rego-package"


def test_every_problem_is_reported_with_its_path():
    text = """
routes:
  - name: r0
    actions: [stdout]
    template: raw
  - name: r1
    actions: [stdout, slack]
    template: raw
  - name: r2
    actions: [slak, stdout]
    template: rawjson
    serialise-actions: true
    plugins:
      unique-message-timeout: soon
templates:
  - name: raw
    rego-package: postee.rawmessage.json
  - name: empty
actions:
  - name: stdout
    type: stdout
    enable: true
  - name: slack
    type: slack
    enable: true
    url: $SLACK_URL
  - name: stdout
    type: nosuchthing
"""
    _, problems = problems_of(text)
    errors = {str(p) for p in problems if p.severity is Severity.ERROR}
    warnings = {str(p) for p in problems if p.severity is Severity.WARNING}
    assert "routes[2] (name: r2).actions[0]: unknown action 'slak' (did you mean 'slack'?)" in errors
    assert "routes[2] (name: r2).template: unknown template 'rawjson' (did you mean 'raw'?)" in errors
    # no route uses the template "empty": a warning (see test_unused_entries)
    assert ("warning: templates[1] (name: empty): a template needs one of body, url, rego-package or "
            "legacy-scan-renderer (no route uses it: ignored)") in warnings
    assert "actions[1] (name: slack).url: environment variable SLACK_URL is not set" in errors
    assert any(e.startswith("actions[2] (name: stdout).name: duplicate action name 'stdout'") for e in errors)
    assert any(e.startswith("routes[2] (name: r2).plugins.unique-message-timeout: invalid duration 'soon'")
               for e in errors)
    assert any(e.startswith("actions[2] (name: stdout).type: unknown action type 'nosuchthing'") for e in errors)
    assert ("warning: routes[2] (name: r2).serialise-actions: unknown key 'serialise-actions' is ignored "
            "(did you mean 'serialize-actions'?)") in warnings
    assert ("warning: actions[2] (name: stdout).enable: not set: the action is disabled, as in Postee "
            "(add `enable: true`)") in warnings


def test_load_config_raises_with_all_errors_and_returns_warnings(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  - name: r\n    actions: [a, b]\n    template: t\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(bad), environ={})
    text = str(info.value)
    assert "unknown action 'a'" in text and "unknown action 'b'" in text and "unknown template 't'" in text


def test_yaml_syntax_error_names_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("routes:\n  - name: r\n   actions: [x]\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(broken), environ={})
    assert "line 3" in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "nope.yaml"), environ={})


def test_yaml_booleans_as_names_get_a_hint():
    _, problems = problems_of("routes:\n  - name: off\n")
    (problem,) = [p for p in problems if p.severity is Severity.ERROR]
    assert "quote the value" in str(problem) and problem.path == "routes[0].name"


def test_example_config_is_valid():
    config, warnings = load_config(str(ROOT / "examples" / "cfg.yaml"), environ={})
    assert [r.name for r in config.routes] == ["trivy-to-stdout", "tracee-findings", "audit"]
    assert warnings == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("2m", 120), ("1h", 3600), ("2 d", 172800), ("90", 90), (45, 45), ("1h30m", 5400), ("0.5s", 0.5)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "5 parsecs", "-3s", True, [1]])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "size"), [("10MB", 10 * 1024**2), ("1 GB", 1024**3), ("512KB", 512 * 1024),
                                            ("1000", 1000), (1000, 1000)])
def test_sizes(text, size):
    assert parse_size(text) == size


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["s", "m", "h", "d"]), st.booleans())
def test_duration_round_trip(number, unit, space):
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{number}{' ' if space else ''}{unit}") == number * factor
