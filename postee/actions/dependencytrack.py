"""The `dependencytrack` action: upload the rendered CycloneDX BOM to Dependency-Track, as Postee does.

Templates such as `trivy-operator-dependencytrack` and `vuls-cyclonedx` render a CycloneDX document
(JSON or XML) as the description and the image as the title. The action sends it to
`PUT <url>/api/v1/bom` as `{"projectName", "projectVersion", "autoCreate": true, "bom": base64}` with
the API key in `X-Api-Key`, so Dependency-Track creates the project on first upload and analyses the
BOM in the background; a 200 reply carries the token of that processing, kept in the result.

The title names the project as `name:version`. It is split at the LAST colon, so that a registry
port stays in the name (`registry:5000/app:1.2` → `registry:5000/app`, `1.2`); a title without a
version (no colon, or only a port's) uploads as version `latest`.
"""

from __future__ import annotations

import base64
import json
from typing import ClassVar

from postee.actions.base import ActionError, Delivery, SendResult, define_action
from postee.actions.httpclient import HttpClientAction, describe_url, send_request
from postee.actions.registry import register
from postee.actions.settings import Kind, setting

DEFAULT_TIMEOUT = 30.0
"""Seconds per upload attempt (BOMs can be several megabytes; Dependency-Track answers once stored)."""

BOM_PATH = "/api/v1/bom"
API_KEY_HEADER = "X-Api-Key"
DEFAULT_VERSION = "latest"
"""Project version when the title names none."""


def project_of(title: str) -> tuple[str, str]:
    """(name, version) from a `name:version` title; split at the last colon, `latest` when none.

    A colon followed by a path (`host:5000/app`) is a registry port, not a version separator.
    """
    title = title.strip()
    name, colon, version = title.rpartition(":")
    if not colon or not name or "/" in version:
        return title, DEFAULT_VERSION
    return name, version or DEFAULT_VERSION


@register
@define_action
class DependencyTrackAction(HttpClientAction):
    type_name: ClassVar[str] = "dependencytrack"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    url: str = setting("url", kind=Kind.URL, required=True)
    _api_key: str = setting("dependency-track-api-key", required=True)

    @property
    def bom_url(self) -> str:
        return self.url.rstrip("/") + BOM_PATH

    def request_body(self, delivery: Delivery) -> dict[str, object]:
        """The upload request for `delivery`; `ActionError` when the title or the BOM is empty."""
        name, version = project_of(delivery.title)
        if not name:
            raise ActionError("the title is empty: it must name the project as name:version", retryable=False)
        bom = delivery.description
        if not bom.strip():
            raise ActionError("the description is empty: it must be a CycloneDX BOM", retryable=False)
        return {
            "projectName": name,
            "projectVersion": version,
            "autoCreate": True,
            "bom": base64.b64encode(bom.encode("utf-8")).decode("ascii"),
        }

    async def send(self, delivery: Delivery) -> SendResult:
        body = self.request_body(delivery)
        headers = {API_KEY_HEADER: self._api_key}
        result = await send_request(self.client, "PUT", self.bom_url, json=body, headers=headers)
        token = _token(result.output)
        if token is None:
            raise ActionError(
                f"PUT {describe_url(self.bom_url)}: HTTP {result.status} without an upload token:"
                " not Dependency-Track?",
                retryable=False,
                status=result.status,
                output=result.output,
            )
        return SendResult(
            output=f"BOM of {body['projectName']}:{body['projectVersion']} accepted, token {token}",
            status=result.status,
        )


def _token(output: str) -> str | None:
    try:
        reply = json.loads(output)
    except ValueError:
        return None
    token = reply.get("token") if isinstance(reply, dict) else None
    return token if isinstance(token, str) and token else None
