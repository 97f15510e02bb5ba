"""The `kubernetes` action: label and annotate the pods an event points at, as Postee's kubernetes action.

Settings: `kube-namespace` (required), `kube-label-selector` (required), `kube-actions` (required: a
`labels` and/or `annotations` map of key → value), `kube-config-file` (a kubeconfig; without it the
in-cluster service account is used) and `timeout` (default 30s). The selector and every value may hold
`event.input.<path>` references to the raw event (see `eventpath`).

Per delivery the action lists the pods of the namespace matching the selector
(`GET /api/v1/namespaces/{ns}/pods?labelSelector=...`) and sends each one a JSON merge patch of its
`metadata.labels` / `metadata.annotations`. A merge patch changes only the keys given, so unlike
Postee's get-and-update it needs no retry on conflicts and never overwrites a concurrent change.

It speaks the API over plain HTTP(S) with httpx rather than through a Kubernetes client library: the
kubeconfig (current context → cluster server, CA, `insecure-skip-tls-verify`; user token, token file,
client certificate, or basic auth) is read once, at load time, so a broken one is a config error
(see `kubeconfig`). Tokens are re-read from their file on every send, as service-account tokens are
rotated.

A selector whose `event.input` reference resolves to nothing (`app=event.input.missing` → `app=`)
selects nothing and fails without retry, where Postee ends up labelling every pod of the namespace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import attrs
import httpx
import trio

from postee.actions.base import ActionError, Delivery, SendResult, define_action, excerpt
from postee.actions.httpclient import MAX_RESPONSE_BYTES, HttpClientAction, check_response, describe_url, request
from postee.actions.kubeconfig import SERVICE_ACCOUNT_DIR, ClusterAccess, load_ssl_context, read_access
from postee.actions.registry import register
from postee.actions.settings import SettingsReader, setting
from postee.values.eventpath import REFERENCE_RE, resolve, substitute

DEFAULT_TIMEOUT = 30.0
"""Seconds for one send: the pod list and every patch (Postee has no limit)."""

LIST_PAGE_SIZE = 500
"""Pods asked for per list request; larger selections are read page by page (`continue`)."""

MAX_LIST_PAGES = 100
"""A bound on the pages read in one send, so a misbehaving server cannot keep it listing forever."""

MAX_LIST_BYTES = 32 * 1024 * 1024
"""Largest pod-list page read; a full pod object is a few KiB, so a page of 500 stays well below."""

MERGE_PATCH = "application/merge-patch+json"
ACTION_KINDS = ("labels", "annotations")
"""The keys of `kube-actions`, and the `metadata` fields they patch."""


def resolve_selector(selector: str, event: Mapping[str, Any]) -> str:
    """`selector` with its references resolved; an `ActionError` when one resolves to nothing.

    An empty value changes what the selector means (`app=` asks for pods whose `app` label is empty,
    an empty selector for every pod), so the action refuses to select rather than patch pods by accident.
    """
    empty = [match.group(0) for match in REFERENCE_RE.finditer(selector) if not resolve(event, match.group(1))]
    resolved = substitute(selector, event).strip()
    if empty or not resolved:
        raise ActionError(
            f"kube-label-selector {selector!r} resolves to {resolved!r}"
            + (f" ({', '.join(empty)} is missing or empty in the event)" if empty else "")
            + ": it would select too many pods, so none was changed",
            retryable=False,
        )
    return resolved


def _read_kube_actions(settings: SettingsReader, key: str) -> dict[str, dict[str, str]]:
    """`kube-actions` as {"labels": {...}, "annotations": {...}}."""
    raw = settings.mapping(key)
    if not settings.has(key):
        settings.problem(key, "required: set labels and/or annotations")
        return {kind: {} for kind in ACTION_KINDS}
    result: dict[str, dict[str, str]] = {kind: {} for kind in ACTION_KINDS}
    invalid = False
    for kind, values in raw.items():
        where = f"{key}.{kind}"
        if kind not in ACTION_KINDS:
            settings.problem(where, f"unknown key; expected {' or '.join(ACTION_KINDS)}")
            invalid = True
            continue
        if values is None:
            continue
        if not isinstance(values, Mapping):
            settings.problem(where, f"expected a mapping of key to value, not {type(values).__name__}")
            invalid = True
            continue
        for name, value in values.items():
            if not isinstance(name, str) or not name:
                settings.problem(f"{where}.{name}", "expected a non-empty string key")
                invalid = True
            elif isinstance(value, bool) or not isinstance(value, str | int | float | None):
                settings.problem(f"{where}.{name}", f"expected a string, not {type(value).__name__}")
                invalid = True
            else:
                result[kind][name] = "" if value is None else str(value)
    if isinstance(raw, Mapping) and not invalid and not any(result.values()):
        settings.problem(key, "set at least one label or annotation")
    return result


@register
@define_action
class KubernetesAction(HttpClientAction):
    type_name: ClassVar[str] = "kubernetes"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    namespace: str = setting("kube-namespace", required=True)
    selector: str = setting("kube-label-selector", required=True)
    changes: dict[str, dict[str, str]] = setting("kube-actions", read=_read_kube_actions)
    """The labels and annotations to set: {"labels": {...}, "annotations": {...}}."""

    config_file: str = setting("kube-config-file")
    account_dir: str = setting("kube-serviceaccount-dir", default=SERVICE_ACCOUNT_DIR)
    access: ClusterAccess = attrs.field()
    """Derived from `config_file` or the in-cluster mount, in `check_settings`."""

    @classmethod
    def check_settings(cls, reader: SettingsReader, values: dict[str, Any]) -> None:
        """Read the kubeconfig (or the pod's mount) and build the TLS context now: broken ones are config errors."""
        if not reader.local:  # the kubeconfig is on the host that runs the action; this one is only checked
            values.update(access=None, verify=True)
            return
        access = read_access(reader, values["config_file"], values["account_dir"])
        context = load_ssl_context(reader, access) if access is not None else None
        if access is not None and context is not None:
            values.update(access=access, verify=context)

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"headers": {"Accept": "application/json"}}
        if self.access.username is not None:
            options["auth"] = httpx.BasicAuth(self.access.username, self.access.password or "")
        return options

    async def send(self, delivery: Delivery) -> SendResult:
        selector = resolve_selector(self.selector, delivery.event)
        patch = self.patch_body(delivery)
        headers = await self._auth_headers()
        pods_url = f"{self.access.server}/api/v1/namespaces/{quote(self.namespace, safe='')}/pods"
        names = await self._list_pods(pods_url, selector, headers)
        if not names:
            return SendResult(output=f"no pod in namespace {self.namespace!r} matches {selector!r}")
        patched, gone = [], []
        body = json.dumps(patch).encode("utf-8")
        for name in names:
            try:
                await self._call(
                    "PATCH",
                    f"{pods_url}/{quote(name, safe='')}",
                    headers={**headers, "Content-Type": MERGE_PATCH},
                    content=body,
                )
            except ActionError as exc:
                if exc.status != 404:  # a pod deleted since the list is no failure
                    done = f" (already patched: {', '.join(patched)})" if patched else ""
                    raise ActionError(
                        f"pod {name}: {exc.message}{done}",
                        retryable=exc.retryable,
                        status=exc.status,
                        output=exc.output,
                        retry_after=exc.retry_after,
                    ) from None
                gone.append(name)
                continue
            patched.append(name)
        what = " and ".join(kind for kind in ACTION_KINDS if patch["metadata"].get(kind))
        output = f"{what} set on {len(patched)} pod(s) in namespace {self.namespace!r}: {', '.join(patched)}"
        if gone:
            output += f"; gone before patching: {', '.join(gone)}"
        return SendResult(output=excerpt(output), status=200)

    def patch_body(self, delivery: Delivery) -> dict[str, Any]:
        """The merge patch: configured labels/annotations with their `event.input` references resolved."""
        metadata: dict[str, Any] = {}
        for kind, values in self.changes.items():
            if values:
                metadata[kind] = {key: substitute(value, delivery.event) for key, value in values.items()}
        return {"metadata": metadata}

    async def _auth_headers(self) -> dict[str, str]:
        token = self.access.token
        if self.access.token_file:
            try:
                token = (await trio.Path(self.access.token_file).read_text(encoding="utf-8")).strip()
            except OSError as exc:
                raise ActionError(f"cannot read the token file: {exc.strerror}", retryable=True) from None
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _list_pods(self, url: str, selector: str, headers: Mapping[str, str]) -> list[str]:
        names: list[str] = []
        params = {"labelSelector": selector, "limit": str(LIST_PAGE_SIZE)}
        for _ in range(MAX_LIST_PAGES):
            response = await self._call("GET", url, headers=headers, params=params, limit=MAX_LIST_BYTES)
            try:
                listing = json.loads(response)
                names += [item["metadata"]["name"] for item in listing.get("items") or []]
                token = (listing.get("metadata") or {}).get("continue")
            except (ValueError, TypeError, KeyError, AttributeError):
                raise ActionError(
                    f"GET {describe_url(url)}: not a pod list: {excerpt(response, 200)}", retryable=False
                ) from None
            if not token:
                return names
            params["continue"] = token
        raise ActionError(f"GET {describe_url(url)}: more than {MAX_LIST_PAGES} pages of pods", retryable=False)

    async def _call(self, method: str, url: str, *, limit: int = MAX_RESPONSE_BYTES, **kwargs: Any) -> bytes:
        """One request; the body of a 2xx reply (a longer one than `limit` is an error), else an `ActionError`."""
        where = f"{method} {describe_url(url)}"
        reply = await request(self.client, method, url, where=where, limit=limit, whole=True, **kwargs)
        check_response(where, reply.status, reply.body, reply.headers)
        return reply.body
