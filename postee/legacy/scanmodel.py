"""The Aqua image scan as Postee's legacy renderers see it (Go's `ScanImageInfo`), decoded from an event.

Postee parses the event into a Go map, marshals it again and unmarshals the text into its scan
structs, so the model is filled by Go's rules (`godecode`): keys matched ignoring ASCII case and
applied in sorted order, integers through float64, strings with U+FFFD for invalid text, and a type
error in *any* known field, even one the report never shows (`digest`, `previous_digest`,
`vulnerability_summary.total`, a vulnerability's `version`, `application_scope_owners`), fails the
whole event. Every other key is ignored at any depth, so a non-scan event decodes to an empty scan.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from postee.legacy.godecode import GoDecodeError, Kind, Slice, Struct, decode, go_string, slice_items

S, B, INT = Kind.STRING, Kind.BOOL, Kind.INT

CHECK = Struct("ControlCheck", (("control", S), ("policy_name", S), ("failed", B)))
ASSURANCE = Struct("ImageAssuranceResults", (("disallowed", B), ("checks_performed", Slice(CHECK))))
SUMMARY = Struct(
    "VulnerabilitySummary",
    tuple((name, INT) for name in ("total", "critical", "high", "medium", "low", "negligible", "sensitive", "malware")),
)
OPTIONS = Struct("ScanOptions", (("scan_malware", B), ("scan_sensitive_data", B)))
VULNERABILITY = Struct(
    "Vulnerability", (("name", S), ("version", S), ("fix_version", S), ("aqua_severity", S))
)
RESOURCE_INFO = Struct("ResourceInfo", (("name", S), ("version", S)))
RESOURCE = Struct("InfoResources", (("resource", RESOURCE_INFO), ("vulnerabilities", Slice(VULNERABILITY))))
MALWARE = Struct("MalwareData", (("malware", S), ("hash", S), ("path", S)))
SENSITIVE = Struct("SensitiveData", (("filename", S), ("path", S), ("type", S), ("hash", S)))
SCAN = Struct(
    "ScanImageInfo",
    (
        ("image", S),
        ("registry", S),
        ("digest", S),
        ("previous_digest", S),
        ("image_assurance_results", ASSURANCE),
        ("vulnerability_summary", SUMMARY),
        ("scan_options", OPTIONS),
        ("resources", Slice(RESOURCE)),
        ("malware", Slice(MALWARE)),
        ("sensitive_data", Slice(SENSITIVE)),
        ("application_scope_owners", Slice(S)),
    ),
)
"""Postee's scan structs, field by field (the decoded-but-unused ones included: they can fail an event)."""


class LegacyRenderError(ValueError):
    """The event cannot be decoded into Postee's scan model (Postee drops it too); says where."""


@attrs.frozen
class Check:
    control: str
    policy_name: str
    failed: bool


@attrs.frozen
class Vulnerability:
    name: str
    fix_version: str
    aqua_severity: str


@attrs.frozen
class Resource:
    name: str
    version: str
    vulnerabilities: tuple[Vulnerability, ...]


@attrs.frozen
class Malware:
    malware: str
    hash: str
    path: str


@attrs.frozen
class SensitiveFile:
    filename: str
    path: str
    type: str
    hash: str


@attrs.frozen
class Scan:
    """What the report shows of a decoded scan."""

    image: str = ""
    registry: str = ""
    disallowed: bool = False
    checks: tuple[Check, ...] = ()
    counts: Mapping[str, int] = attrs.field(factory=dict)
    """vulnerability_summary: critical, high, medium, low, negligible, sensitive, malware (and total)."""
    scan_malware: bool = False
    scan_sensitive_data: bool = False
    resources: tuple[Resource, ...] = ()
    malware: tuple[Malware, ...] = ()
    sensitive_data: tuple[SensitiveFile, ...] = ()


def decode_scan(event: Mapping[str, Any]) -> Scan:
    """Decode `event` (a parsed JSON object) as Postee does; `LegacyRenderError` if Go would fail."""
    if not isinstance(event, Mapping):
        raise LegacyRenderError("the event is not a JSON object")
    try:
        raw = decode(SCAN, event)
    except GoDecodeError as exc:
        raise LegacyRenderError(f"the event does not fit Postee's scan model: {exc}") from None
    assurance, options = raw["image_assurance_results"], raw["scan_options"]
    return Scan(
        image=raw["image"],
        registry=raw["registry"],
        disallowed=assurance["disallowed"],
        checks=tuple(
            Check(c["control"], c["policy_name"], c["failed"]) for c in slice_items(assurance["checks_performed"])
        ),
        counts=dict(raw["vulnerability_summary"]),
        scan_malware=options["scan_malware"],
        scan_sensitive_data=options["scan_sensitive_data"],
        resources=tuple(
            Resource(
                r["resource"]["name"],
                r["resource"]["version"],
                tuple(
                    Vulnerability(v["name"], v["fix_version"], v["aqua_severity"])
                    for v in slice_items(r["vulnerabilities"])
                ),
            )
            for r in slice_items(raw["resources"])
        ),
        malware=tuple(Malware(m["malware"], m["hash"], m["path"]) for m in slice_items(raw["malware"])),
        sensitive_data=tuple(
            SensitiveFile(s["filename"], s["path"], s["type"], s["hash"]) for s in slice_items(raw["sensitive_data"])
        ),
    )


def event_owners(event: Mapping[str, Any]) -> str:
    """The event's `application_scope_owners` strings joined with `;` ("" when there are none).

    Postee reads the exact key and panics when it is not an array of strings (`null` included). Here
    anything that is not a string is skipped: once the event decodes, that can only be a `null`
    element or a `null` value, since any other type already fails `decode_scan`.
    """
    owners = event.get("application_scope_owners")
    if not isinstance(owners, list):
        return ""
    return ";".join(go_string(owner) for owner in owners if isinstance(owner, str))
