"""Templates -> content (Postee 2.x semantics), the template library, aggregation, goldens via the pool."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import trio

from postee.rego.library import ENV_TEMPLATES, TemplateLibrary, TemplateLibraryError, bundled_templates_dir
from postee.rego.pool import open_rego_pool
from postee.rego.render import (
    Content,
    TemplateError,
    TemplateSpec,
    aggregate,
    aggregation_item,
    augment_event,
    check_template,
    check_templates,
    find_result_object,
    load_template,
    package_template,
    render,
)

TIMEOUT = 30.0
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "compat"


def _available(name: str) -> bool:
    return (
        importlib.util.find_spec(name) is not None
        and importlib.util.find_spec(f"postee.rego.{name}_backend") is not None
    )


BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(not _available(name), reason=f"no {name} backend"))
    for name in ("regopy", "regorus")
]


@pytest.fixture(params=BACKENDS)
async def pool(request):
    async with open_rego_pool(request.param, workers=2, timeout=TIMEOUT, isolation="thread") as pool:
        yield pool


COMMON = """package postee

with_default(obj, prop, default_value) = default_value {
\tnot obj[prop]
}

with_default(obj, prop, default_value) = obj[prop] {
\tobj[prop]
}
"""

TEMPLATES = {
    "plain.rego": """package test.plain

title := sprintf("%s report", [input.image])
result := "<b>done</b>"
url := sprintf("%s/#/images/%s", [input.postee.AquaServer, input.image])
aggregation_pkg := "test.plain.aggregation"
""",
    "structured.rego": """package test.structured

title := 42
result := {"z": [1, 2.5, 3.0], "a": "<&>", "m": {"b": true, "a": null}}
result_date := 1624544066
result_severity := "1"
result_summary := "sum"
result_category := "cat"
result_subcategory := "sub"
result_assigned_to := "owner"
result_assigned_group := "group"
""",
    "untitled.rego": """package test.untitled

result := "no title here"
""",
    "aggregation.rego": """package test.plain.aggregation

title := sprintf("%d items", [count(input)])
result := [sprintf("%s:%v", [item.title, item.description]) | item := input[_]]
url := input[0].url
""",
    "broken.rego": """package test.broken

title := "x"
result := concat(", ",
""",
}


@pytest.fixture
def library(tmp_path) -> TemplateLibrary:
    root = tmp_path / "rego-templates"
    (root / "common").mkdir(parents=True)
    (root / "common" / "common.rego").write_text(COMMON)
    for name, source in TEMPLATES.items():
        (root / name).write_text(source)
    return TemplateLibrary.load(root)


# --- library ------------------------------------------------------------------------------------------


def test_library_indexes_packages_and_common(library):
    assert set(library.packages) == {
        "test.plain",
        "test.structured",
        "test.untitled",
        "test.plain.aggregation",
        "test.broken",
    }
    modules = library.modules_for("test.plain")
    assert sorted(Path(name).name for name in modules) == ["common.rego", "plain.rego"]


def test_unknown_package_lists_known_ones(library):
    with pytest.raises(TemplateLibraryError, match="no template package 'nope'.*test.plain"):
        library.modules_for("nope")


def test_user_directory_replaces_bundled(tmp_path, monkeypatch, library):
    monkeypatch.setenv(ENV_TEMPLATES, str(library.root))
    assert TemplateLibrary.load().root == library.root
    monkeypatch.delenv(ENV_TEMPLATES)
    assert TemplateLibrary.load().root == bundled_templates_dir()
    with pytest.raises(TemplateLibraryError, match="does not exist"):
        TemplateLibrary.load(tmp_path / "missing")


def test_package_line_may_carry_a_comment(tmp_path):
    (tmp_path / "t.rego").write_text("# header\npackage a.b.c # trailing comment\n\ntitle := 1\n")
    assert set(TemplateLibrary.load(tmp_path).packages) == {"a.b.c"}


# --- helpers ------------------------------------------------------------------------------------------


def test_find_result_object_is_depth_first_in_key_order():
    data = {"postee": {"z": {"result": 2}, "a": {"deep": {"result": 1, "title": "t"}}}}
    assert find_result_object(data) == {"result": 1, "title": "t"}
    assert find_result_object({"a": [{"result": 1}]}) is None


def test_augment_event_adds_aqua_server_without_touching_the_event():
    event = {"image": "x"}
    assert augment_event(event, "https://aqua") == {"image": "x", "postee": {"AquaServer": "https://aqua"}}
    assert augment_event(event)["postee"] == {"AquaServer": ""}
    assert event == {"image": "x"}


def test_aggregation_item_parses_only_json_arrays():
    array = aggregation_item(Content(title="t", description='[{"a": 1}]', url="u"))
    assert array["description"] == [{"a": 1}]
    assert array == {
        "title": "t",
        "description": [{"a": 1}],
        "url": "u",
        "date": "",
        "severity": "",
        "summary": "",
        "category": "",
        "subcategory": "",
        "assignedTo": "",
        "assignedGroup": "",
    }
    assert aggregation_item(Content(title="t", description='{"a": 1}'))["description"] == '{"a": 1}'
    assert aggregation_item(Content(title="t", description="[not json"))["description"] == "[not json"


# --- rendering ----------------------------------------------------------------------------------------


async def test_package_template_content(pool, library):
    template = await load_template(TemplateSpec("t", rego_package="test.plain"), library)
    content = await render(pool, template, {"image": "alpine:3"}, aqua_server="https://aqua")
    assert content.as_map() == {
        "title": "alpine:3 report",
        "description": "<b>done</b>",
        "url": "https://aqua/#/images/alpine:3",
        "date": "",
        "severity": "",
        "summary": "",
        "category": "",
        "subcategory": "",
        "assignedTo": "",
        "assignedGroup": "",
    }
    assert content.aggregation_pkg == "test.plain.aggregation"


async def test_non_string_fields_are_go_json(pool, library):
    template = package_template("test.structured", library)
    content = await render(pool, template, {})
    assert content.title == "42"
    assert content.description == '{"a":"\\u003c\\u0026\\u003e","m":{"a":null,"b":true},"z":[1,2.5,3]}'
    assert (content.date, content.severity, content.summary) == ("1624544066", "1", "sum")
    assert (content.category, content.subcategory) == ("cat", "sub")
    assert (content.assigned_to, content.assigned_group) == ("owner", "group")
    assert content.aggregation_pkg is None


async def test_owners_are_joined(pool, library):
    template = package_template("test.plain", library)
    content = await render(pool, template, {"image": "a", "application_scope_owners": ["x@a", "y@b"]})
    assert content.as_map()["owners"] == "x@a;y@b"
    assert "owners" not in (await render(pool, template, {"image": "a"})).as_map()


async def test_missing_title_is_reported_clearly(pool, library):
    template = package_template("test.untitled", library)
    with pytest.raises(TemplateError, match=r"'test.untitled' \(rego-package test.untitled\) produced no title"):
        await render(pool, template, {})
    with pytest.raises(TemplateError, match="produced no title on a sample event"):
        await check_template(pool, template)


async def test_compile_error_names_file_and_line(pool, library):
    template = package_template("test.broken", library)
    with pytest.raises(TemplateError, match=r"broken\.rego:\d+"):
        await check_template(pool, template)


async def test_check_template_accepts_a_good_template(pool, library):
    template = package_template("test.plain", library)
    assert await check_template(pool, template, {"image": "x"}) is None  # raises TemplateError otherwise
    assert (await render(pool, template, {"image": "x"})).title


async def test_body_template_uses_common_helpers_and_result_search(pool, library):
    body = """package custom.message

import data.postee.with_default

title := with_default(input, "name", "nameless")
result := sprintf("registry: %s", [input.registry])
"""
    template = await load_template(TemplateSpec("inline", body=body, rego_package="test.plain"), library)
    assert template.origin == "body"  # body wins over rego-package
    content = await render(pool, template, {"registry": "hub"})
    assert (content.title, content.description) == ("nameless", "registry: hub")


async def test_body_without_result_object(pool, library):
    template = await load_template(TemplateSpec("nothing", body="package x\n\ntitle := 1\n"), library)
    with pytest.raises(TemplateError, match="produced no object with a 'result' key"):
        await render(pool, template, {})


async def test_template_without_source_is_an_error(library):
    with pytest.raises(TemplateError, match="needs one of body, url, rego-package or legacy-scan-renderer"):
        await load_template(TemplateSpec("empty"), library)
    with pytest.raises(TemplateError, match="template 'gone': no template package 'no.such'"):
        await load_template(TemplateSpec("gone", rego_package="no.such"), library)


async def test_aggregation_has_no_leading_nulls(pool, library):
    contents = [
        Content(title="a", description='["x", "y"]', url="u1"),
        Content(title="b", description="plain", url="u2"),
    ]
    aggregated = await aggregate(pool, "test.plain.aggregation", library, contents)
    assert aggregated.title == "2 items"
    assert json.loads(aggregated.description) == ['a:["x", "y"]', "b:plain"]
    assert aggregated.url == "u1"


# --- url templates, fetched from a real local HTTP server ---------------------------------------------


async def _serve_once_per_connection(listener, routes):
    async def handle(stream):
        async with stream:
            request = b""
            with trio.fail_after(5):
                while b"\r\n\r\n" not in request:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    request += chunk
            path = request.split(b" ", 2)[1].decode()
            status, body = routes.get(path, (404, "not found"))
            data = body.encode()
            await stream.send_all(
                f"HTTP/1.1 {status} X\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
            )

    await trio.serve_listeners(handle, [listener])


async def test_url_template_is_fetched_and_beats_rego_package(pool, library, nursery):
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    routes = {"/t.rego": (200, 'package remote\n\ntitle := "remote"\nresult := input.image\n')}
    nursery.start_soon(_serve_once_per_connection, listeners[0], routes)
    base = f"http://127.0.0.1:{port}"

    spec = TemplateSpec("remote", url=f"{base}/t.rego", rego_package="test.plain")
    template = await load_template(spec, library)
    assert template.origin == f"url {base}/t.rego"
    content = await render(pool, template, {"image": "img"})
    assert (content.title, content.description) == ("remote", "img")

    with pytest.raises(TemplateError, match="HTTP 404"):
        await load_template(TemplateSpec("missing", url=f"{base}/missing.rego"), library)
    nursery.cancel_scope.cancel()


# --- the golden cases through the pipeline (bundled library; cases whose package is not there yet skip) -


def _golden_cases():
    cases = json.loads((FIXTURES / "template-cases.json").read_text())["cases"]
    return [pytest.param(case, id=case["rego_package"]) for case in cases]


@pytest.fixture(scope="module")
def bundled():
    return TemplateLibrary.load(bundled_templates_dir())


@pytest.mark.parametrize("case", _golden_cases())
async def test_golden_case_through_the_pool(pool, bundled, case):
    if case["rego_package"] not in bundled:
        pytest.skip(f"{case['rego_package']} not in the bundled library yet")
    event = json.loads((FIXTURES / case["input"]).read_text())
    content = await render(pool, package_template(case["rego_package"], bundled), event)
    assert content.description == (FIXTURES / case["description_golden"]).read_text()
    content_map = content.as_map()
    for key, value in case["expected"].items():
        assert content_map[key] == value, key


async def test_check_templates_reports_every_problem(pool, library):
    templates = [package_template(name, library) for name in ("test.plain", "test.untitled", "test.broken")]
    problems = await check_templates(pool, templates, {"image": "x"})
    assert [str(p).split(" ", 2)[1] for p in problems] == ["'test.untitled'", "'test.broken'"]
