"""The `webhook` action: POST the rendered description as a JSON body, as Postee does.

The description is sent verbatim (templates for webhooks render JSON), with
`Content-Type: application/json`. Any 2xx reply is success.
"""

from __future__ import annotations

from typing import ClassVar, Self

import httpx

from postee.actions.base import Action, ActionSpec, Delivery, SendResult
from postee.actions.httpclient import open_http_client, send_request
from postee.actions.registry import register
from postee.actions.retry import RETRY_SETTINGS, RetryPolicy
from postee.actions.settings import SettingsReader

DEFAULT_TIMEOUT = 120.0
"""Postee's webhook timeout."""

CONTENT_TYPE = "application/json"


@register
class WebhookAction(Action):
    type_name: ClassVar[str] = "webhook"
    settings_keys: ClassVar[frozenset[str]] = RETRY_SETTINGS | {"url"}
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    def __init__(self, spec: ActionSpec, *, retry_policy: RetryPolicy, url: str) -> None:
        super().__init__(spec, retry_policy=retry_policy)
        self.url = url
        self._client: httpx.AsyncClient | None = None

    @property
    def timeout(self) -> float:
        return self.retry_policy.timeout

    @classmethod
    def from_spec(cls, spec: ActionSpec) -> Self:
        settings = SettingsReader(spec)
        url = settings.url("url", required=True)
        policy = settings.retry_policy(DEFAULT_TIMEOUT)
        settings.done()
        return cls(spec, retry_policy=policy, url=url)

    async def open(self) -> None:
        if self._client is None:
            self._client = await open_http_client(timeout=self.timeout)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def send(self, delivery: Delivery) -> SendResult:
        body = delivery.description.encode("utf-8")
        return await send_request(self._client, "POST", self.url, content=body, headers={"Content-Type": CONTENT_TYPE})
