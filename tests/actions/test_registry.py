import pytest

from postee.actions import (
    ActionConfigError,
    ActionSpec,
    UnknownActionType,
    action_class,
    build_action,
    known_types,
    unknown_settings,
    validate_spec,
)
from postee.actions.exec import ExecAction
from postee.actions.http import HttpAction
from postee.actions.stdout import StdoutAction
from postee.actions.webhook import WebhookAction


@pytest.mark.parametrize(
    ("type_name", "cls"),
    [
        ("stdout", StdoutAction),
        ("STDOUT", StdoutAction),
        ("Webhook", WebhookAction),
        ("HTTP", HttpAction),
        ("Http", HttpAction),
        ("eXeC", ExecAction),
        (" exec ", ExecAction),
    ],
)
def test_types_are_case_insensitive(type_name, cls):
    assert action_class(type_name) is cls


def test_known_types():
    assert {"stdout", "webhook", "http", "exec"} <= set(known_types())


def test_unknown_type_lists_the_known_ones():
    spec = ActionSpec(name="chat", type="slak")
    with pytest.raises(UnknownActionType) as info:
        build_action(spec)
    message = str(info.value)
    assert message.startswith("actions[chat].type: unknown action type 'slak'; known types: ")
    for known in ("exec", "http", "stdout", "webhook"):
        assert known in message
    assert validate_spec(spec)[0][0] == "type"
    with pytest.raises(KeyError):
        action_class("slak")


@pytest.mark.parametrize("type_name", ["webhook", "http"])
def test_missing_url_is_named(type_name):
    spec = ActionSpec(name="hook", type=type_name, settings={})
    with pytest.raises(ActionConfigError) as info:
        build_action(spec)
    assert info.value.problems == [("url", "required")]
    assert str(info.value) == "actions[hook].url: required"
    assert info.value.lines(prefix="actions[3]") == ["actions[3].url: required"]


def test_every_problem_is_reported_at_once(tmp_path):
    spec = ActionSpec(
        name="h",
        type="http",
        settings={
            "url": "ftp://example.org",
            "method": "GE T",
            "headers": {"Bad Name": ["x"], "X-Ok": ["a", {"no": 1}]},
            "body-file": str(tmp_path / "missing.txt"),
            "retries": -2,
            "retry-backoff": "soon",
            "timeout": "0s",
        },
    )
    keys = [key for key, _ in validate_spec(spec)]
    assert keys == [
        "url",
        "method",
        "headers.Bad Name",
        "headers.X-Ok[1]",
        "body-file",
        "retries",
        "retry-backoff",
        "timeout",
    ]


def test_exec_needs_exactly_one_script_source(tmp_path):
    assert validate_spec(ActionSpec(name="e", type="exec")) == [
        ("exec-script", "required: set exec-script or input-file")
    ]
    script = tmp_path / "s.sh"
    script.write_text("true\n")
    both = ActionSpec(name="e", type="exec", settings={"exec-script": "true", "input-file": str(script)})
    assert validate_spec(both) == [("input-file", "set either exec-script or input-file, not both")]
    missing = ActionSpec(name="e", type="exec", settings={"input-file": str(tmp_path / "nope.sh")})
    assert validate_spec(missing) == [("input-file", f"file not found: {tmp_path / 'nope.sh'}")]
    bad_env = ActionSpec(name="e", type="exec", settings={"exec-script": "true", "env": ["OK=1", "NOEQUALS", "=x"]})
    assert [key for key, _ in validate_spec(bad_env)] == ["env[1]", "env[2]"]


def test_valid_specs_have_no_problems(tmp_path):
    body = tmp_path / "body.json"
    body.write_text('{"id": "event.input.id"}')
    specs = [
        ActionSpec(name="s", type="stdout"),
        ActionSpec(name="w", type="webhook", settings={"url": "https://example.org/hook", "timeout": "10s"}),
        ActionSpec(name="h", type="http", settings={"url": "http://127.0.0.1:1/x", "body-file": str(body)}),
        ActionSpec(name="e", type="exec", settings={"exec-script": "echo hi", "env": ["A=1"], "retries": 0}),
    ]
    assert [validate_spec(spec) for spec in specs] == [[], [], [], []]
    assert build_action(specs[2]).body == '{"id": "event.input.id"}'


def test_body_file_is_read_at_load_time(tmp_path):
    body = tmp_path / "body.txt"
    body.write_text("first")
    action = build_action(ActionSpec(name="h", type="http", settings={"url": "http://h/", "body-file": str(body)}))
    body.write_text("second")
    assert action.body == "first"


def test_unknown_settings_are_listed_for_warnings():
    spec = ActionSpec(name="h", type="HTTP", settings={"url": "http://h/", "bodycontent": "x", "retries": 1})
    assert unknown_settings(spec) == ["bodycontent"]
    assert unknown_settings(ActionSpec(name="x", type="slak", settings={"a": 1})) == []


def test_default_timeouts_and_policy():
    webhook = build_action(ActionSpec(name="w", type="webhook", settings={"url": "http://h/"}))
    http = build_action(ActionSpec(name="h", type="http", settings={"url": "http://h/"}))
    script = build_action(ActionSpec(name="e", type="exec", settings={"exec-script": "true"}))
    assert (webhook.retry_policy.timeout, http.retry_policy.timeout, script.retry_policy.timeout) == (120.0, 5.0, 60.0)
    assert http.method == "POST"
    tuned = build_action(
        ActionSpec(name="h", type="http", settings={"url": "http://h/", "timeout": "2m", "retries": 0, "method": "put"})
    )
    assert (tuned.retry_policy.timeout, tuned.retry_policy.retries, tuned.method) == (120.0, 0, "PUT")


def test_spec_settings_are_read_only():
    spec = ActionSpec(name="s", type="stdout", settings={"a": 1})
    with pytest.raises(TypeError):
        spec.settings["a"] = 2  # type: ignore[index]
