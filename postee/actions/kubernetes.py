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
client certificate, or basic auth) is read once, at load time, so a broken one is a config error.
Tokens are re-read from their file on every send, as service-account tokens are rotated.

A selector whose `event.input` reference resolves to nothing (`app=event.input.missing` → `app=`)
selects nothing and fails without retry, where Postee ends up labelling every pod of the namespace.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any, ClassVar, Self
from urllib.parse import quote, urlsplit

import attrs
import httpx
import trio
import yaml

from postee.actions.base import ActionError, ActionSpec, Delivery, SendResult, excerpt
from postee.actions.eventpath import REFERENCE_RE, resolve, substitute
from postee.actions.httpclient import HttpClientAction, _caused_by, check_response, describe_url
from postee.actions.registry import register
from postee.actions.retry import RETRY_SETTINGS, RetryPolicy
from postee.actions.settings import SettingsReader

DEFAULT_TIMEOUT = 30.0
"""Seconds for one send: the pod list and every patch (Postee has no limit)."""

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where Kubernetes mounts a pod's service-account token and the cluster CA (`token`, `ca.crt`)."""

SERVICE_HOST_VARIABLE = "KUBERNETES_SERVICE_HOST"
SERVICE_PORT_VARIABLE = "KUBERNETES_SERVICE_PORT"

LIST_PAGE_SIZE = 500
"""Pods asked for per list request; larger selections are read page by page (`continue`)."""

MAX_LIST_PAGES = 100
"""A bound on the pages read in one send, so a misbehaving server cannot keep it listing forever."""

MAX_LIST_BYTES = 32 * 1024 * 1024
"""Largest pod-list page read; a full pod object is a few KiB, so a page of 500 stays well below."""

MERGE_PATCH = "application/merge-patch+json"
ACTION_KINDS = ("labels", "annotations")
"""The keys of `kube-actions`, and the `metadata` fields they patch."""

UNSUPPORTED_AUTH = ("exec", "auth-provider")
"""Kubeconfig user entries that run plugins; not supported (use a token or a client certificate)."""


@attrs.frozen
class ClusterAccess:
    """How to reach and authenticate to the API server, as read from a kubeconfig or the pod's mount.

    PEM material is kept in memory (`*_pem`) or as file paths; `open` turns it into an SSL context.
    """

    server: str
    ca_file: str | None = None
    ca_pem: str | None = None
    insecure: bool = False
    token: str | None = attrs.field(default=None, repr=False)
    token_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_pem: bytes | None = attrs.field(default=None, repr=False)
    key_pem: bytes | None = attrs.field(default=None, repr=False)
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)


@register
class KubernetesAction(HttpClientAction):
    type_name: ClassVar[str] = "kubernetes"
    settings_keys: ClassVar[frozenset[str]] = RETRY_SETTINGS | {
        "kube-config-file",
        "kube-namespace",
        "kube-label-selector",
        "kube-actions",
        "kube-serviceaccount-dir",
    }
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    def __init__(
        self,
        spec: ActionSpec,
        *,
        retry_policy: RetryPolicy,
        access: ClusterAccess,
        namespace: str,
        selector: str,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
    ) -> None:
        super().__init__(spec, retry_policy=retry_policy)
        self.access = access
        self.namespace = namespace
        self.selector = selector
        self.labels = dict(labels)
        self.annotations = dict(annotations)

    @classmethod
    def from_spec(cls, spec: ActionSpec) -> Self:
        settings = SettingsReader(spec)
        namespace = settings.string("kube-namespace", required=True)
        selector = settings.string("kube-label-selector", required=True)
        labels, annotations = _read_kube_actions(settings)
        config_file = settings.string("kube-config-file")
        account_dir = settings.string("kube-serviceaccount-dir", SERVICE_ACCOUNT_DIR)
        if config_file:
            access = _read_kubeconfig(settings, os.path.expanduser(config_file))
        else:
            access = _in_cluster_access(settings, account_dir)
        context = _load_ssl_context(settings, access) if access is not None else None
        policy = settings.retry_policy(DEFAULT_TIMEOUT)
        settings.done()
        assert access is not None and context is not None
        action = cls(
            spec,
            retry_policy=policy,
            access=access,
            namespace=namespace,
            selector=selector,
            labels=labels,
            annotations=annotations,
        )
        action.verify = context
        return action

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
        for kind, values in (("labels", self.labels), ("annotations", self.annotations)):
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

    async def _call(self, method: str, url: str, *, limit: int = 64 * 1024, **kwargs: Any) -> bytes:
        """One request; the (bounded) body of a 2xx reply, else an `ActionError` as `send_request` maps it."""
        if self.client is None:
            raise RuntimeError("the action was not opened: call `await action.open()` (or `async with action:`) first")
        where = f"{method} {describe_url(url)}"
        try:
            async with self.client.stream(method, url, **kwargs) as response:
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        raise ActionError(f"{where}: reply larger than {limit} bytes", retryable=False)
        except httpx.TimeoutException as exc:
            raise ActionError(f"{where}: timed out ({type(exc).__name__})", retryable=True) from None
        except httpx.TransportError as exc:
            if _caused_by(exc, ssl.SSLCertVerificationError):
                raise ActionError(f"{where}: TLS certificate verification failed: {exc}", retryable=False) from None
            raise ActionError(f"{where}: {type(exc).__name__}: {exc}", retryable=True) from None
        except httpx.RequestError as exc:
            raise ActionError(f"{where}: {type(exc).__name__}: {exc}", retryable=False) from None
        body = b"".join(chunks)
        check_response(where, response.status_code, body, response.headers)
        return body


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


def _read_kube_actions(settings: SettingsReader) -> tuple[dict[str, str], dict[str, str]]:
    raw = settings.mapping("kube-actions")
    if not settings.has("kube-actions"):
        settings.problem("kube-actions", "required: set labels and/or annotations")
        return {}, {}
    result: dict[str, dict[str, str]] = {kind: {} for kind in ACTION_KINDS}
    invalid = False
    for kind, values in raw.items():
        key = f"kube-actions.{kind}"
        if kind not in ACTION_KINDS:
            settings.problem(key, f"unknown key; expected {' or '.join(ACTION_KINDS)}")
            invalid = True
            continue
        if values is None:
            continue
        if not isinstance(values, Mapping):
            settings.problem(key, f"expected a mapping of key to value, not {type(values).__name__}")
            invalid = True
            continue
        for name, value in values.items():
            if not isinstance(name, str) or not name:
                settings.problem(f"{key}.{name}", "expected a non-empty string key")
                invalid = True
            elif isinstance(value, bool) or not isinstance(value, str | int | float | None):
                settings.problem(f"{key}.{name}", f"expected a string, not {type(value).__name__}")
                invalid = True
            else:
                result[kind][name] = "" if value is None else str(value)
    if isinstance(raw, Mapping) and not invalid and not any(result.values()):
        settings.problem("kube-actions", "set at least one label or annotation")
    return result["labels"], result["annotations"]


def _in_cluster_access(settings: SettingsReader, account_dir: str) -> ClusterAccess | None:
    host = os.environ.get(SERVICE_HOST_VARIABLE, "")
    port = os.environ.get(SERVICE_PORT_VARIABLE, "")
    if not host or not port:
        settings.problem(
            "kube-config-file",
            f"required when not running in a cluster ({SERVICE_HOST_VARIABLE}/{SERVICE_PORT_VARIABLE} are not set)",
        )
        return None
    token_file = os.path.join(account_dir, "token")
    ca_file = os.path.join(account_dir, "ca.crt")
    for path in (token_file, ca_file):
        if not os.path.isfile(path):
            settings.problem("kube-config-file", f"not set, and the in-cluster {path} is missing")
            return None
    server_host = f"[{host}]" if ":" in host else host
    return ClusterAccess(server=f"https://{server_host}:{port}", ca_file=ca_file, token_file=token_file)


def _read_kubeconfig(settings: SettingsReader, path: str) -> ClusterAccess | None:
    """The current context's cluster and user from the kubeconfig at `path`; problems under `kube-config-file`."""
    key = "kube-config-file"
    try:
        with open(path, encoding="utf-8") as file:
            config = yaml.safe_load(file)
    except OSError as exc:
        settings.problem(key, f"cannot read {path}: {exc.strerror}")
        return None
    except yaml.YAMLError as exc:
        settings.problem(key, f"{path} is not valid YAML: {exc}")
        return None
    try:
        return _access_from_kubeconfig(config, os.path.dirname(os.path.abspath(path)))
    except _KubeconfigError as exc:
        settings.problem(key, f"{path}: {exc}")
        return None


class _KubeconfigError(ValueError):
    pass


def _named(config: Mapping[str, Any], section: str, name: str) -> Mapping[str, Any]:
    field = section[:-1]  # clusters → cluster, users → user, contexts → context
    for entry in config.get(section) or []:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            value = entry.get(field)
            if not isinstance(value, Mapping):
                raise _KubeconfigError(f"{section}[{name}] has no {field} entry")
            return value
    raise _KubeconfigError(f"no {field} named {name!r}")


def _access_from_kubeconfig(config: Any, base_dir: str) -> ClusterAccess:
    if not isinstance(config, Mapping):
        raise _KubeconfigError("not a kubeconfig (expected a mapping)")
    current = config.get("current-context")
    if not current:
        raise _KubeconfigError("no current-context")
    context = _named(config, "contexts", str(current))
    cluster = _named(config, "clusters", str(context.get("cluster", "")))
    user = _named(config, "users", str(context.get("user"))) if context.get("user") else {}

    server = str(cluster.get("server") or "").rstrip("/")
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _KubeconfigError(f"cluster {context.get('cluster')!r}: server must be an http(s) URL")
    for plugin in UNSUPPORTED_AUTH:
        if user.get(plugin):
            raise _KubeconfigError(
                f"user {context.get('user')!r}: {plugin} credentials are not supported;"
                " use a token or a client certificate"
            )

    def path_of(name: str) -> str | None:
        value = user.get(name) if name in _USER_FILES else cluster.get(name)
        if not value:
            return None
        full = os.path.join(base_dir, os.path.expanduser(str(value)))
        if not os.path.isfile(full):
            raise _KubeconfigError(f"{name}: file not found: {full}")
        return full

    cert_file, key_file = path_of("client-certificate"), path_of("client-key")
    cert_pem, key_pem = _pem_data(user, "client-certificate-data"), _pem_data(user, "client-key-data")
    if bool(cert_file or cert_pem) != bool(key_file or key_pem):
        raise _KubeconfigError("a client certificate needs both a certificate and a key")
    ca_pem = _pem_data(cluster, "certificate-authority-data")
    return ClusterAccess(
        server=server,
        ca_file=path_of("certificate-authority"),
        ca_pem=ca_pem.decode("ascii", errors="replace") if ca_pem else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=str(user["token"]) if user.get("token") else None,
        token_file=path_of("tokenFile"),
        cert_file=cert_file,
        key_file=key_file,
        cert_pem=cert_pem,
        key_pem=key_pem,
        username=str(user["username"]) if user.get("username") else None,
        password=str(user.get("password") or "") if user.get("username") else None,
    )


_USER_FILES = ("client-certificate", "client-key", "tokenFile")


def _pem_data(section: Mapping[str, Any], name: str) -> bytes | None:
    value = section.get(name)
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise _KubeconfigError(f"{name} is not valid base64") from None


def _load_ssl_context(settings: SettingsReader, access: ClusterAccess) -> ssl.SSLContext | None:
    """The TLS context, built at load time so that a bad CA, certificate or key is a config error."""
    try:
        return _ssl_context(access)
    except (ssl.SSLError, OSError, ValueError) as exc:
        settings.problem("kube-config-file", f"unusable TLS material (CA, client certificate or key): {exc}")
        return None


def _ssl_context(access: ClusterAccess) -> ssl.SSLContext:
    """The TLS context for the API server: its CA (or none, if insecure) and the client certificate.

    Blocking (reads files), as `from_spec` may be. In-memory keys are written to a private temporary
    directory only for as long as `load_cert_chain`, which reads files only, takes to load them.
    """
    context = ssl.create_default_context(cafile=access.ca_file, cadata=access.ca_pem)
    if access.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if access.cert_file or access.cert_pem:
        directory = tempfile.mkdtemp(prefix="postee-kube-")  # mode 0700
        try:
            cert_file = access.cert_file or _write_private(directory, "client.crt", access.cert_pem or b"")
            key_file = access.key_file or _write_private(directory, "client.key", access.key_pem or b"")
            context.load_cert_chain(cert_file, key_file)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return context


def _write_private(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    return path
