"""The `kubernetes` action: label and annotate the pods an event points at, as Postee's kubernetes action.

Settings: `kube-namespace` (required), `kube-label-selector` (required), `kube-actions` (required: a
`labels` and/or `annotations` map of key → value), `kube-config-file` (a kubeconfig; without it the
in-cluster service account is used), `kube-max-pods` (new, default 10) and `timeout` (default 30s).
The selector and every value may hold `event.input.<path>` references to the raw event (see `eventpath`).

Per delivery the action lists the pods of the namespace matching the selector
(`GET /api/v1/namespaces/{ns}/pods?labelSelector=...`) and sends each one a JSON merge patch of its
`metadata.labels` / `metadata.annotations`. A merge patch changes only the keys given, so unlike
Postee's get-and-update it needs no retry on conflicts and never overwrites a concurrent change.

It speaks the API over plain HTTP(S) with httpx rather than through a Kubernetes client library: the
kubeconfig (current context → cluster server, CA, `insecure-skip-tls-verify`; user token, token file,
client certificate, or basic auth) is read once, at load time, so a broken one is a config error
(see `kubeconfig`). Tokens are re-read from their file on every send, as service-account tokens are
rotated.

Event values are data, never selector syntax (see `labels`). The selector is parsed at load time
into requirements; per event a reference is resolved inside its one key or value, which must then be
a valid, non-blank label key or value, or the send fails without retry and changes nothing, where
Postee pastes the text (`app in (event.input.app)` with `web,db,ingress` selects three apps; a blank
`app!=event.input.app` every pod of the namespace). Label values taken from the event must be valid
label values too; annotation values are free text (Kubernetes allows any), sent as JSON data.
A selector matching more than `kube-max-pods` pods patches none: the failure says how many matched.
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
from postee.actions.labels import (
    LabelValueError,
    Selector,
    SelectorError,
    has_reference,
    label_key_problem,
    label_value_problem,
    parse_selector,
    resolve_value,
)
from postee.actions.registry import register
from postee.actions.settings import Kind, SettingsReader, setting
from postee.values.eventpath import substitute

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

SELECTOR_KEY = "kube-label-selector"
ACTIONS_KEY = "kube-actions"

DEFAULT_MAX_PODS = 10
"""Pods one event may patch (`kube-max-pods`): an alert is about a workload, not a namespace."""

NOTHING_CHANGED = "no pod was changed"


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
            elif problem := _change_problem(kind, name, "" if value is None else str(value)):
                settings.problem(f"{where}.{name}", problem)
                invalid = True
            else:
                result[kind][name] = "" if value is None else str(value)
    if isinstance(raw, Mapping) and not invalid and not any(result.values()):
        settings.problem(key, "set at least one label or annotation")
    return result


def _change_problem(kind: str, key: str, value: str) -> str | None:
    """Why a configured label/annotation cannot be set as written: a bad key, or a bad literal label value."""
    if problem := label_key_problem(key):
        return f"not a valid {kind[:-1]} key: {problem}"
    if kind == "labels" and not has_reference(value) and (problem := label_value_problem(value)):
        return f"{value!r} is not a valid label value: {problem}"
    return None


@register
@define_action
class KubernetesAction(HttpClientAction):
    type_name: ClassVar[str] = "kubernetes"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    namespace: str = setting("kube-namespace", required=True)
    selector: str = setting(SELECTOR_KEY, required=True)
    changes: dict[str, dict[str, str]] = setting(ACTIONS_KEY, read=_read_kube_actions)
    """The labels and annotations to set: {"labels": {...}, "annotations": {...}}."""
    max_pods: int = setting("kube-max-pods", kind=Kind.INTEGER, default=DEFAULT_MAX_PODS, minimum=1)

    config_file: str = setting("kube-config-file")
    account_dir: str = setting("kube-serviceaccount-dir", default=SERVICE_ACCOUNT_DIR)
    access: ClusterAccess = attrs.field()
    """Derived from `config_file` or the in-cluster mount, in `check_settings`."""
    requirements: Selector = attrs.field()
    """`selector` parsed, in `check_settings`."""

    @classmethod
    def check_settings(cls, reader: SettingsReader, values: dict[str, Any]) -> None:
        """Parse the selector; read the kubeconfig (or the pod's mount) and build the TLS context now:
        broken ones are config errors."""
        values["requirements"] = Selector(())
        if values["selector"]:
            try:
                values["requirements"] = parse_selector(values["selector"])
            except SelectorError as exc:
                reader.problem(SELECTOR_KEY, f"not a label selector: {exc}")
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
        try:
            selector = str(self.requirements.resolve(delivery.event))
        except LabelValueError as exc:
            raise ActionError(f"{SELECTOR_KEY}: {exc}: {NOTHING_CHANGED}", retryable=False) from None
        patch = self.patch_body(delivery)
        headers = await self._auth_headers()
        pods_url = f"{self.access.server}/api/v1/namespaces/{quote(self.namespace, safe='')}/pods"
        names = await self._list_pods(pods_url, selector, headers)
        if not names:
            return SendResult(output=f"no pod in namespace {self.namespace!r} matches {selector!r}")
        if len(names) > self.max_pods:
            raise ActionError(
                f"{SELECTOR_KEY} {selector!r} matches {len(names)} pods in namespace {self.namespace!r},"
                f" more than kube-max-pods ({self.max_pods}): {NOTHING_CHANGED}",
                retryable=False,
            )
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
        """The merge patch: configured labels/annotations with their `event.input` references resolved.

        A label value from the event must be a valid label value (`ActionError` otherwise, before any
        pod is touched); annotation values are free text, and `json.dumps` keeps them data.
        """
        metadata: dict[str, Any] = {}
        for kind, values in self.changes.items():
            if not values:
                continue
            resolved = {}
            for key, value in values.items():
                if kind == "labels":
                    try:
                        resolved[key] = resolve_value(value, delivery.event)
                    except LabelValueError as exc:
                        raise ActionError(
                            f"{ACTIONS_KEY}.{kind}.{key}: {exc}: {NOTHING_CHANGED}", retryable=False
                        ) from None
                else:
                    resolved[key] = substitute(value, delivery.event)
            metadata[kind] = resolved
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
