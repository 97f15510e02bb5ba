"""The `nexusIq` action: submit the rendered CycloneDX BOM to a Nexus IQ application, as Postee does.

Nexus IQ evaluates a BOM against an *application*, which must exist first. Per delivery the action:

1. looks the application up by public id: `GET <url>/api/v2/applications?publicId=<id>`, the id being
   the title with every character Nexus IQ refuses in public ids (anything but letters, digits,
   `_`, `-`, `.`) replaced by `_` (`nginx:1.25` → `nginx_1.25`);
2. creates it when missing: `POST <url>/api/v2/applications` with `publicId`, `name` (the title as
   it is) and `organizationId` (the `organization-id` setting); when the create is refused because
   a concurrent send created it first, the lookup is made once more;
3. posts the description to `POST <url>/api/v2/scan/applications/<internal id>/sources/cyclone`,
   as `application/xml` or `application/json` after what the document is (Postee always says XML).

Every request uses Basic auth with `user` and `password`. Nexus IQ answers the scan with a status
URL; the evaluation itself goes on in the background.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar
from urllib.parse import quote

from postee.actions.base import ActionError, Delivery, SendResult, define_action
from postee.actions.httpclient import HttpClientAction, describe_url, send_request
from postee.actions.registry import register
from postee.actions.settings import Kind, setting

DEFAULT_TIMEOUT = 30.0
"""Seconds per request attempt."""

APPLICATIONS_PATH = "/api/v2/applications"
SCAN_PATH = "/api/v2/scan/applications/{internal_id}/sources/cyclone"
XML_CONTENT_TYPE = "application/xml"
JSON_CONTENT_TYPE = "application/json"
PUBLIC_ID_REFUSED = re.compile(r"[^A-Za-z0-9_.-]")
"""Characters Nexus IQ does not accept in an application's public id."""
PUBLIC_ID_REPLACEMENT = "_"


def public_id_of(title: str) -> str:
    """The application public id for a title: refused characters become `_`."""
    return PUBLIC_ID_REFUSED.sub(PUBLIC_ID_REPLACEMENT, title.strip())


def content_type_of(document: str) -> str:
    """`application/xml` or `application/json` after the document's first character."""
    start = document.lstrip()[:1]
    if start == "<":
        return XML_CONTENT_TYPE
    if start in ("{", "["):
        return JSON_CONTENT_TYPE
    raise ActionError("the description is not a CycloneDX document (neither XML nor JSON)", retryable=False)


@register
@define_action
class NexusIqAction(HttpClientAction):
    type_name: ClassVar[str] = "nexusIq"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    url: str = setting("url", kind=Kind.URL, required=True)
    user: str = setting("user", required=True)
    _password: str = setting("password", required=True)
    organization_id: str = setting("organization-id", required=True)

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    def client_options(self) -> dict[str, Any]:
        return {"auth": (self.user, self._password)}

    async def send(self, delivery: Delivery) -> SendResult:
        title = delivery.title.strip()
        public_id = public_id_of(title)
        if not public_id:
            raise ActionError("the title is empty: it names the Nexus IQ application", retryable=False)
        document = delivery.description
        content_type = content_type_of(document)
        internal_id = await self.find_application(public_id)
        if internal_id is None:
            internal_id = await self.create_application(public_id, title)
        url = self.base_url + SCAN_PATH.format(internal_id=quote(internal_id, safe=""))
        result = await send_request(
            self.client, "POST", url, content=document.encode("utf-8"), headers={"Content-Type": content_type}
        )
        return SendResult(output=f"BOM submitted to application {public_id}: {result.output}", status=result.status)

    async def find_application(self, public_id: str) -> str | None:
        """The internal id of the application with `public_id`, or None when there is none."""
        url = self.base_url + APPLICATIONS_PATH
        reply = await self._json("GET", url, params={"publicId": public_id})
        applications = reply.get("applications") if isinstance(reply, dict) else None
        if not isinstance(applications, list):
            raise _unexpected("GET", url, "no applications list")
        for application in applications:
            if isinstance(application, dict) and application.get("publicId") == public_id:
                return _internal_id("GET", url, application)
        return None

    async def create_application(self, public_id: str, name: str) -> str:
        """Create the application; when that is refused but it exists by now, its id is used."""
        url = self.base_url + APPLICATIONS_PATH
        body = {"publicId": public_id, "name": name or public_id, "organizationId": self.organization_id}
        try:
            reply = await self._json("POST", url, json=body)
        except ActionError as exc:
            if exc.retryable:
                raise
            existing = await self.find_application(public_id)
            if existing is None:
                raise
            return existing
        return _internal_id("POST", url, reply)

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        result = await send_request(self.client, method, url, **kwargs)
        try:
            return json.loads(result.output)
        except ValueError:
            raise _unexpected(method, url, "not JSON") from None


def _internal_id(method: str, url: str, application: Any) -> str:
    internal_id = application.get("id") if isinstance(application, dict) else None
    if not isinstance(internal_id, str) or not internal_id:
        raise _unexpected(method, url, "no application id")
    return internal_id


def _unexpected(method: str, url: str, what: str) -> ActionError:
    return ActionError(f"{method} {describe_url(url)}: unexpected reply ({what}): not Nexus IQ?", retryable=False)
