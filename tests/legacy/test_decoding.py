"""How an event is decoded into Postee's scan model: Go `encoding/json` rules, one at a time.

Each expectation is what Postee (Go 1.18) does with the same event; see shared/compat/legacy/SPEC.md
section 2. The jira renderer is used because its output is the easiest to read.
"""

import json
import re

import pytest

from postee.legacy import LegacyRenderError, render_content
from postee.legacy.godecode import GoSlice, Kind, Slice, Struct, decode

EMPTY_COUNTS = (
    "||CRITICAL||HIGH||MEDIUM||LOW||NEGLIGIBLE||\n"
    "|{color:#c00000}0{color}|{color:#e0443d}0{color}|{color:#f79421}0{color}|{color:#e1c930}0{color}|"
    "{color:green}0{color}|\n\n"
)


def jira(event, server=""):
    return render_content(event, "jira", server)


def lines(event):
    return jira(event)["description"].splitlines()


def counts_row(event):
    """The values of the counts table (critical, high, medium, low, negligible)."""
    return re.findall(r"\{color:[^}]*\}(-?[0-9]+)\{color\}", lines(event)[4])


# --- key matching --------------------------------------------------------------------------------


def test_keys_match_ignoring_ascii_case_but_the_title_reads_the_exact_image_key():
    content = jira({"IMAGE": "alpine:3", "Registry": "docker.io"})
    assert content["title"] == "%!s(<nil>) vulnerability scan report"
    assert lines({"IMAGE": "alpine:3", "Registry": "docker.io"})[:2] == ["Image name: alpine:3", "Registry: docker.io"]
    assert content["url"] == "docker.io/alpine%3A3"


def test_long_s_and_kelvin_sign_fold_like_go_but_other_unicode_does_not():
    event = {
        "regi\u017ftry": "folded",  # ſ matches s
        "image_assurance_results": {"chec\u212as_performed": [{"control": "c", "failed": True}]},  # Kelvin sign
        "\u0131mage": "dotless i does not match",
    }
    text = lines(event)
    assert text[1] == "Registry: folded"
    assert text[0] == "Image name: "
    assert "|1|c||FAIL|" in text


def test_several_keys_for_one_field_apply_in_sorted_byte_order_each_on_top_of_the_last():
    # Sorted: "REGISTRY" < "Registry" < "registry"; a later null leaves the value as it was.
    assert lines({"registry": None, "Registry": "b", "REGISTRY": "a"})[1] == "Registry: b"
    assert lines({"registry": "c", "Registry": "b"})[1] == "Registry: c"
    summary = {"Vulnerability_Summary": {"critical": 4, "high": 2}, "vulnerability_summary": {"high": 7}}
    assert counts_row(summary) == ["4", "7", "0", "0", "0"]


def test_arrays_of_objects_are_decoded_element_by_element_on_top_of_the_earlier_array():
    event = {
        "Resources": [
            {"resource": {"name": "openssl", "version": "1.1"},
             "vulnerabilities": [{"name": "CVE-1", "aqua_severity": "high"}]},
        ],
        "resources": [{"resource": {"name": "libssl"}}],
    }
    assert "|CVE-1|libssl|1.1|none|" in lines(event)


def test_a_shorter_array_keeps_go_slice_capacity_so_stale_elements_come_back():
    # "Malware" < "mALWARE" < "malware". Go keeps the backing array of the first (capacity 4): after
    # the one-element array, the third array's second element is decoded over the first array's.
    first = [{"malware": "m0", "path": "/p0"}, {"malware": "m1", "path": "/p1"}, {"malware": "m2"}]
    event = {
        "Malware": first,
        "mALWARE": [{"malware": "x"}],
        "malware": [{"hash": "h0"}, {"hash": "h1"}],
    }
    text = lines(event)
    start = text.index("h2. Malware")
    assert text[start + 1 : start + 4] == ["||#||Malware||Hash||Path||", "|0|x|h0|/p0|", "|1|m1|h1|/p1|"]


def test_slice_growth_beyond_capacity_drops_stale_elements_like_go():
    element = Struct("E", (("a", Kind.STRING), ("b", Kind.STRING)))
    schema = Slice(element)
    first = decode(schema, [{"a": "0"}, {"a": "1"}, {"a": "2"}, {"a": "3"}, {"a": "4"}])  # cap 4 -> 6
    assert len(first.backing) == 6
    shorter = decode(schema, [{"b": "x"}], first)
    assert shorter.items == ({"a": "0", "b": "x"},)
    longer = decode(schema, [{}, {}, {}, {}, {}, {}, {"b": "y"}], shorter)  # grows past 6: copies len 6
    assert [item["a"] for item in longer.items] == ["0", "1", "2", "3", "4", "", ""]
    assert decode(schema, [], longer) == GoSlice([], 0, element)


# --- null and missing ------------------------------------------------------------------------------


def test_null_everywhere_is_an_empty_report_not_an_error():
    event = dict.fromkeys(
        ["image", "registry", "digest", "image_assurance_results", "vulnerability_summary", "scan_options",
         "resources", "malware", "sensitive_data", "application_scope_owners"]
    )
    content = jira(event)
    assert content == {
        "title": "%!s(<nil>) vulnerability scan report",
        "description": "Image name: \nRegistry: \nImage is compliant\n" + EMPTY_COUNTS,
        "url": "/",
    }
    assert jira({})["description"] == content["description"]


def test_null_array_means_no_entries_even_after_an_earlier_array():
    assert "h2. Malware" not in lines({"Malware": [{"malware": "m"}], "malware": None})
    assert "h2. Malware" not in lines({"malware": []})


# --- integers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (3, "3"),
        (3.0, "3"),
        (json.loads("300e-2"), "3"),
        (-2, "-2"),
        (-0.0, "0"),
        (2**53 + 1, "9007199254740992"),
        (1152921504606846976, "1152921504606847000"),
        (json.loads("1e18"), "1000000000000000000"),
    ],
)
def test_integers_take_the_float64_round_trip(value, shown):
    assert counts_row({"vulnerability_summary": {"critical": value}})[0] == shown


@pytest.mark.parametrize(
    "value",
    [1.5, 1e-7, 1e20, 1e21, 9223372036854775807, -(2**63) - 4096, 10**400, float("inf"), "3", True, [3], {"n": 3}],
)
def test_what_is_not_an_int64_after_the_round_trip_fails_the_event(value):
    with pytest.raises(LegacyRenderError) as info:
        jira({"image": "x", "vulnerability_summary": {"HIGH": value}})
    assert "vulnerability_summary.HIGH: expected an integer" in str(info.value)


def test_int64_bounds_apply_to_the_shortest_float_text():
    # 2**63 - 1024 is 9223372036854774784 as a float64, written 9223372036854775000: fits.
    assert counts_row({"vulnerability_summary": {"low": 2**63 - 1024}})[3] == "9223372036854775000"
    # -2**63 is exact as a float64 but written -9223372036854776000, which ParseInt refuses.
    for value in (2**63 - 1, -(2**63)):
        with pytest.raises(LegacyRenderError, match="fits in 64 bits"):
            jira({"vulnerability_summary": {"low": value}})


# --- type errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "where"),
    [
        ({"image": 5}, "image: expected a string, got a number"),
        ({"Image": {"a": 1}}, "Image: expected a string, got an object"),
        ({"digest": 5}, "digest: expected a string, got a number"),
        ({"previous_digest": []}, "previous_digest: expected a string, got an array"),
        ({"vulnerability_summary": {"total": "9"}}, "vulnerability_summary.total: expected an integer, got a string"),
        (
            {"image_assurance_results": {"disallowed": "yes"}},
            "image_assurance_results.disallowed: expected true or false",
        ),
        ({"image_assurance_results": []}, "image_assurance_results: expected an object, got an array"),
        ({"resources": {"0": {}}}, "resources: expected an array, got an object"),
        ({"resources": ["x"]}, "resources[0]: expected an object, got a string"),
        (
            {"resources": [{}, {"vulnerabilities": [{"version": 1.1}]}]},
            "resources[1].vulnerabilities[0].version: expected a string, got a number",
        ),
        ({"application_scope_owners": "alice"}, "application_scope_owners: expected an array, got a string"),
        ({"application_scope_owners": ["alice", 7]}, "application_scope_owners[1]: expected a string, got a number"),
        ({"malware": [{"malware": "m", "hash": False}]}, "malware[0].hash: expected a string, got a boolean"),
    ],
)
def test_a_wrong_type_in_any_known_field_fails_the_whole_event_and_says_where(event, where):
    for renderer in ("html", "slack", "jira"):
        with pytest.raises(LegacyRenderError) as info:
            render_content({"image": "ok", "registry": "r", **event}, renderer, "")
        assert where in str(info.value)


def test_unknown_keys_are_never_looked_at():
    event = {"image": "x", "extra": {"anything": [1, None, {"nested": True}]}, "scan_options": {"other": "s"}}
    assert jira(event)["title"] == "x vulnerability scan report"


def test_a_non_object_event_is_an_error():
    for event in ([], "scan", 3, None):
        with pytest.raises(LegacyRenderError, match="not a JSON object"):
            jira(event)


# --- strings -------------------------------------------------------------------------------------


def test_lone_surrogates_become_u_fffd_in_title_description_url_and_owners():
    event = json.loads('{"image": "a\\ud800b", "registry": "r\\udfff", "application_scope_owners": ["o\\ud801"]}')
    content = jira(event)
    assert content["title"] == "a\ufffdb vulnerability scan report"
    assert content["description"].startswith("Image name: a\ufffdb\nRegistry: r\ufffd\n")
    assert content["url"] == "r\ufffd/a%EF%BF%BDb"
    assert content["owners"] == "o\ufffd"
    content["description"].encode("utf-8")  # valid text throughout


def test_fix_version_loses_control_characters_and_u_fffd_which_may_leave_an_empty_cell():
    vulns = [
        {"name": "A", "fix_version": "1.0\t\r\n", "aqua_severity": "high"},
        {"name": "B", "fix_version": "\x00\x1f\x7f\ufffd", "aqua_severity": "high"},
        {"name": "C", "fix_version": "", "aqua_severity": "high"},
        {"name": "D", "fix_version": "2\ud800", "aqua_severity": "high"},
    ]
    text = lines({"resources": [{"resource": {"name": "p", "version": "v"}, "vulnerabilities": vulns}]})
    assert text[-5:-1] == ["|A|p|v|1.0|", "|B|p|v||", "|C|p|v|none|", "|D|p|v|2|"]


def test_severity_groups_lower_case_with_go_rules_and_drop_anything_else():
    vulns = [
        {"name": "n1", "aqua_severity": "NEGL\u0130G\u0130BLE"},  # İ lower-cases to i in Go
        {"name": "c1", "aqua_severity": "Critical"},
        {"name": "x1", "aqua_severity": "critical "},
        {"name": "x2", "aqua_severity": "unknown"},
        {"name": "x3", "aqua_severity": ""},
    ]
    text = lines({"resources": [{"resource": {}, "vulnerabilities": vulns}]})
    assert [line for line in text if line.startswith("h3.")] == [
        "h3. Critical severity vulnerabilities",
        "h3. Negligible severity vulnerabilities",
    ]
    assert not any(name in "\n".join(text) for name in ("x1", "x2", "x3"))
