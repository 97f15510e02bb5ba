"""Moving a rule's modules under a namespace: packages and `data` move, nothing else does."""

from __future__ import annotations

import pytest

from postee.rego.namespace import move_query_under, move_under


def test_packages_and_data_references_move_under_the_namespace():
    source = (
        "package postee\n"
        "import data.lib.limits\n"
        "import future.keywords.in\n"
        "default allow = false\n"
        "allow { input.n > data.lib.limits.max; x := data; count(x) > 0 }\n"
        "allow { data[\"lib\"].on with data.lib.on as true }\n"
    )
    assert move_under(source, "rule_3") == (
        "package rule_3.postee\n"
        "import data.rule_3.lib.limits\n"
        "import future.keywords.in\n"
        "default allow = false\n"
        "allow { input.n > data.rule_3.lib.limits.max; x := data.rule_3; count(x) > 0 }\n"
        "allow { data.rule_3[\"lib\"].on with data.rule_3.lib.on as true }\n"
    )


def test_strings_comments_fields_and_longer_names_stay():
    source = (
        "  package lib.x  # package data\n"
        'allow { input.data == "data.postee"; metadata := `data\npackage p`; input.package_data == 1 }\n'
        '# data.postee.allow\n'
        'escaped := "a \\" data \\" b"\n'
    )
    moved = move_under(source, "ns")
    assert moved == (
        "  package ns.lib.x  # package data\n"
        'allow { input.data == "data.postee"; metadata := `data\npackage p`; input.package_data == 1 }\n'
        '# data.postee.allow\n'
        'escaped := "a \\" data \\" b"\n'
    )
    assert moved.count("\n") == source.count("\n")  # error lines still point at the user's lines


def test_queries_move_the_same_way_and_the_namespace_must_be_an_identifier():
    assert move_query_under("data.postee.allow", "rule_0") == "data.rule_0.postee.allow"
    with pytest.raises(ValueError):
        move_under("package p", "not valid")
