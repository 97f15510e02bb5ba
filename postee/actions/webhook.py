"""The `webhook` action: POST the rendered description as a JSON body, as Postee does.

The description is sent verbatim (templates for webhooks render JSON), with
`Content-Type: application/json`. Any 2xx reply is success.
"""

from __future__ import annotations

from typing import ClassVar, Self

from postee.actions.base import ActionSpec, Delivery, SendResult
from postee.actions.httpclient import HttpClientAction, send_request
from postee.actions.registry import register
from postee.actions.retry import RETRY_SETTINGS, RetryPolicy
from postee.actions.settings import SettingsReader

DEFAULT_TIMEOUT = 120.0
"""Postee's webhook timeout."""

CONTENT_TYPE = "application/json"


@register
class WebhookAction(HttpClientAction):
    type_name: ClassVar[str] = "webhook"
    settings_keys: ClassVar[frozenset[str]] = RETRY_SETTINGS | {"url"}
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    def __init__(self, spec: ActionSpec, *, retry_policy: RetryPolicy, url: str) -> None:
        super().__init__(spec, retry_policy=retry_policy)
        self.url = url

    @classmethod
    def from_spec(cls, spec: ActionSpec) -> Self:
        settings = SettingsReader(spec)
        url = settings.url("url", required=True)
        policy = settings.retry_policy(DEFAULT_TIMEOUT)
        settings.done()
        return cls(spec, retry_policy=policy, url=url)

    async def send(self, delivery: Delivery) -> SendResult:
        body = delivery.description.encode("utf-8")
        return await send_request(self.client, "POST", self.url, content=body, headers={"Content-Type": CONTENT_TYPE})
