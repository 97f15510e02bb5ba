"""The `webhook` action: POST the rendered description as a JSON body, as Postee does.

The description is sent verbatim (templates for webhooks render JSON), with
`Content-Type: application/json`. Any 2xx reply is success.
"""

from __future__ import annotations

from typing import ClassVar

from postee.actions.base import Delivery, SendResult, define_action
from postee.actions.httpclient import UrlAction, send_request
from postee.actions.registry import register

DEFAULT_TIMEOUT = 120.0
"""Postee's webhook timeout."""

CONTENT_TYPE = "application/json"


@register
@define_action
class WebhookAction(UrlAction):
    type_name: ClassVar[str] = "webhook"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    async def send(self, delivery: Delivery) -> SendResult:
        body = delivery.description.encode("utf-8")
        return await send_request(self.client, "POST", self.url, content=body, headers={"Content-Type": CONTENT_TYPE})
