"""The kubernetes action against a real local HTTPS server speaking the pod part of the Kubernetes API.

`FakeKubeApi` is an ASGI app served by hypercorn over TLS (a trustme CA): it keeps pods per namespace,
answers `GET /api/v1/namespaces/{ns}/pods` with label-selector matching and `limit`/`continue` pages,
applies `PATCH .../pods/{name}` JSON merge patches, checks the bearer token, and records every request.
With `client_certs=True` the server requires a client certificate signed by the test CA.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import attrs
import pytest
import trio
import trustme
import yaml
from hypercorn.config import Config
from hypercorn.trio import serve

from postee.actions.base import ActionConfigError, ActionError, ActionSpec, Delivery
from postee.actions.kubernetes import KubernetesAction
from postee.actions.registry import build_action
from postee.actions.retry import send_with_retries

TOKEN = "kube-secret-token-123"
EVENT = {"SigMetadata": {"ID": "TRC-2", "Name": "Anti-Debugging"}, "Context": {"podName": "web-1", "app": "web"}}
DELIVERY = Delivery(content={"title": "t", "description": "d"}, event=EVENT, route="r", event_id="e")


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "labels": dict(labels), "annotations": {"kept": "yes"}}


def selector_terms(selector: str) -> list[str]:
    """The requirements of a selector: split on the commas outside parentheses, as the API server reads it."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [term.strip() for term in [*terms, current] if term.strip()]


def matches(selector: str, labels: dict[str, str]) -> bool:
    """Label selectors as the API server reads them: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (..)`, `k notin (..)`."""
    for term in selector_terms(selector):
        words = term.split(None, 1)
        if len(words) == 2 and words[1].split("(", 1)[0].strip() in ("in", "notin"):
            operator, values = words[1].split("(", 1)
            wanted = {value.strip() for value in values.rstrip(")").split(",")}
            if operator.strip() == "in":
                ok = words[0] in labels and labels[words[0]] in wanted
            else:
                ok = labels.get(words[0]) not in wanted
        elif "!=" in term:
            key, value = term.split("!=", 1)
            ok = labels.get(key.strip()) != value.strip()
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            ok = key.strip() in labels and labels[key.strip()] == value.strip()
        elif term.startswith("!"):
            ok = term[1:].strip() not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


@attrs.define
class Request:
    method: str
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define
class FakeKubeApi:
    pods: dict[str, list[dict[str, Any]]]
    token: str | None = TOKEN
    page_size: int | None = None
    failures: list[tuple[str, int]] = attrs.field(factory=list)
    """Scripted errors: the next request with that method gets that status."""
    delay: float = 0.0
    requests: list[Request] = attrs.field(factory=list)
    url: str = ""
    ca: trustme.CA | None = None

    def of(self, method: str) -> list[Request]:
        return [request for request in self.requests if request.method == method]

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return next(item for item in self.pods[namespace] if item["name"] == name)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = Request(
            scope["method"],
            scope["path"],
            parse_qs(scope["query_string"].decode(), keep_blank_values=True),
            {k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body,
        )
        self.requests.append(request)
        if self.delay:
            await trio.sleep(self.delay)
        status, reply = self.handle(request)
        payload = json.dumps(reply).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def handle(self, request: Request) -> tuple[int, Any]:
        for index, (method, status) in enumerate(self.failures):
            if method == request.method:
                del self.failures[index]
                return status, {"kind": "Status", "message": f"scripted {status}", "code": status}
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"kind": "Status", "message": "Unauthorized", "code": 401}
        parts = request.path.strip("/").split("/")
        if parts[:3] != ["api", "v1", "namespaces"] or len(parts) < 5 or parts[4] != "pods":
            return 404, {"kind": "Status", "message": "not found"}
        namespace = parts[3]
        pods = self.pods.get(namespace, [])
        if request.method == "GET" and len(parts) == 5:
            selected = [item for item in pods if matches(request.params.get("labelSelector", [""])[0], item["labels"])]
            start = int(request.params.get("continue", ["0"])[0])
            size = min(int(request.params.get("limit", ["100000"])[0]), self.page_size or 100000)
            page = selected[start : start + size]
            more = start + size < len(selected)
            items = [
                {"metadata": {"name": item["name"], "namespace": namespace, **item}, "spec": {}, "status": {}}
                for item in page
            ]
            return 200, {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"continue": str(start + size)} if more else {},
                "items": items,
            }
        if request.method == "PATCH" and len(parts) == 6:
            if request.headers.get("content-type") != "application/merge-patch+json":
                return 415, {"kind": "Status", "message": "unsupported media type"}
            target = next((item for item in pods if item["name"] == parts[5]), None)
            if target is None:
                return 404, {"kind": "Status", "message": f'pods "{parts[5]}" not found'}
            metadata = request.json()["metadata"]
            for kind in ("labels", "annotations"):
                for key, value in (metadata.get(kind) or {}).items():
                    if value is None:
                        target[kind].pop(key, None)
                    else:
                        target[kind][key] = value
            return 200, {"kind": "Pod", "metadata": target}
        return 405, {"kind": "Status", "message": "method not allowed"}


@asynccontextmanager
async def serving(api: FakeKubeApi, *, client_certs: bool = False) -> AsyncIterator[FakeKubeApi]:
    """Serve `api` over TLS on 127.0.0.1, port 0 (a certificate from `api.ca`, created if unset)."""
    api.ca = api.ca or trustme.CA()
    certificate = api.ca.issue_cert("127.0.0.1", "localhost")
    with tempfile.TemporaryDirectory() as directory:
        pem = f"{directory}/server.pem"
        certificate.private_key_and_cert_chain_pem.write_to_path(pem)
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = logging.getLogger("tests.fake_kube")
        config.graceful_timeout = 0.1
        config.certfile = config.keyfile = pem
        if client_certs:
            ca_pem = f"{directory}/ca.pem"
            api.ca.cert_pem.write_to_path(ca_pem)
            config.ca_certs = ca_pem
            config.verify_mode = ssl.CERT_REQUIRED
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, api, config, shutdown_trigger=trio.sleep_forever))
            api.url = binds[0]
            try:
                yield api
            finally:
                nursery.cancel_scope.cancel()


def kubeconfig(tmp_path, server: str, *, cluster: dict | None = None, user: dict | None = None, **top) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "contexts": [
            {"name": "other", "context": {"cluster": "nowhere", "user": "nobody"}},
            {"name": "test", "context": {"cluster": "local", "user": "me", "namespace": "ignored"}},
        ],
        "clusters": [{"name": "local", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "me", "user": user if user is not None else {"token": TOKEN}}],
        **top,
    }
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def ca_data(api: FakeKubeApi) -> str:
    return base64.b64encode(api.ca.cert_pem.bytes()).decode()


def kube_spec(config_file: str | None = None, **settings) -> ActionSpec:
    base = {
        "kube-namespace": "prod",
        "kube-label-selector": "app=event.input.Context.app",
        "kube-actions": {
            "labels": {"postee.io/rule": "event.input.SigMetadata.ID", "quarantine": "true"},
            "annotations": {"postee.io/reason": "event.input.SigMetadata.Name on event.input.Context.podName"},
        },
        "retry-backoff": "0.01s",
    }
    if config_file:
        base["kube-config-file"] = config_file
    return ActionSpec(name="k8s", type="kubernetes", settings={**base, **settings})


def prod_pods() -> dict[str, list[dict[str, Any]]]:
    return {
        "prod": [pod("web-1", app="web"), pod("web-2", app="web", tier="front"), pod("db-1", app="db")],
        "dev": [pod("web-9", app="web")],
    }


async def test_labels_and_annotates_the_selected_pods_with_a_token(tmp_path):
    async with serving(FakeKubeApi(prod_pods())) as api:
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config)) as action:
            result = await action.send(DELIVERY)
    listing, *patches = api.requests
    assert (listing.method, listing.path) == ("GET", "/api/v1/namespaces/prod/pods")
    assert listing.params["labelSelector"] == ["app=web"]
    assert listing.params["limit"] == ["500"]
    assert listing.headers["authorization"] == f"Bearer {TOKEN}"
    assert [(p.method, p.path) for p in patches] == [
        ("PATCH", "/api/v1/namespaces/prod/pods/web-1"),
        ("PATCH", "/api/v1/namespaces/prod/pods/web-2"),
    ]
    for patch in patches:
        assert patch.headers["content-type"] == "application/merge-patch+json"
        assert patch.headers["authorization"] == f"Bearer {TOKEN}"
        assert patch.json() == {
            "metadata": {
                "labels": {"postee.io/rule": "TRC-2", "quarantine": "true"},
                "annotations": {"postee.io/reason": "Anti-Debugging on web-1"},
            }
        }
    web2 = api.pod("prod", "web-2")
    assert web2["labels"] == {"app": "web", "tier": "front", "postee.io/rule": "TRC-2", "quarantine": "true"}
    assert web2["annotations"] == {"kept": "yes", "postee.io/reason": "Anti-Debugging on web-1"}
    assert api.pod("prod", "db-1")["labels"] == {"app": "db"}
    assert api.pod("dev", "web-9")["labels"] == {"app": "web"}
    assert result.output == "labels and annotations set on 2 pod(s) in namespace 'prod': web-1, web-2"


@pytest.mark.parametrize("as_files", [False, True], ids=["data", "files"])
async def test_client_certificate_authentication(tmp_path, as_files):
    api = FakeKubeApi(prod_pods(), token=None)
    client = api.ca = trustme.CA()
    client_cert = client.issue_cert("postee-client")
    async with serving(api, client_certs=True):
        if as_files:
            (tmp_path / "certs").mkdir()
            client_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "certs/client.crt"))
            client_cert.private_key_pem.write_to_path(str(tmp_path / "certs/client.key"))
            api.ca.cert_pem.write_to_path(str(tmp_path / "certs/ca.crt"))
            cluster = {"certificate-authority": "certs/ca.crt"}  # relative to the kubeconfig's directory
            user = {"client-certificate": "certs/client.crt", "client-key": "certs/client.key"}
        else:
            cluster = {"certificate-authority-data": ca_data(api)}
            user = {
                "client-certificate-data": base64.b64encode(client_cert.cert_chain_pems[0].bytes()).decode(),
                "client-key-data": base64.b64encode(client_cert.private_key_pem.bytes()).decode(),
            }
        spec = kube_spec(
            kubeconfig(tmp_path, api.url, cluster=cluster, user=user),
            **{"kube-actions": {"labels": {"seen": "yes"}}},
        )
        async with KubernetesAction.from_spec(spec) as action:
            await action.send(DELIVERY)
    assert [(r.method, r.path) for r in api.requests] == [
        ("GET", "/api/v1/namespaces/prod/pods"),
        ("PATCH", "/api/v1/namespaces/prod/pods/web-1"),
        ("PATCH", "/api/v1/namespaces/prod/pods/web-2"),
    ]
    assert all("authorization" not in r.headers for r in api.requests)
    assert api.requests[1].json() == {"metadata": {"labels": {"seen": "yes"}}}
    assert list(tmp_path.glob("**/*.key")) == ([tmp_path / "certs/client.key"] if as_files else [])


async def test_built_in_worker_threads_several_at_once(tmp_path):
    """The pipeline builder calls `build_action` in worker threads: reading the kubeconfig, writing the
    in-memory key to a private temporary directory and loading it must work there, concurrently."""
    api = FakeKubeApi(prod_pods(), token=None)
    client = api.ca = trustme.CA()
    client_cert = client.issue_cert("postee-client")
    async with serving(api, client_certs=True):
        user = {
            "client-certificate-data": base64.b64encode(client_cert.cert_chain_pems[0].bytes()).decode(),
            "client-key-data": base64.b64encode(client_cert.private_key_pem.bytes()).decode(),
        }
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)}, user=user)
        spec = kube_spec(config, **{"kube-actions": {"labels": {"seen": "yes"}}})
        actions = []

        async def build() -> None:
            actions.append(await trio.to_thread.run_sync(build_action, spec))

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(build)
        for action in actions:
            async with action:
                await action.send(DELIVERY)
    assert len(actions) == 4
    assert len(api.of("PATCH")) == 8
    assert list(tmp_path.glob("**/*.key")) == []


async def test_a_server_requiring_a_client_certificate_refuses_a_token_only_client(tmp_path):
    async with serving(FakeKubeApi(prod_pods()), client_certs=True) as api:
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config)) as action:
            with pytest.raises(ActionError):
                await action.send(DELIVERY)
    assert api.requests == []


async def test_in_cluster_config_rereads_the_rotated_token(tmp_path, monkeypatch):
    api = FakeKubeApi(prod_pods(), token="first-token")
    async with serving(api):
        account = tmp_path / "serviceaccount"
        account.mkdir()
        (account / "token").write_text("first-token\n")
        api.ca.cert_pem.write_to_path(str(account / "ca.crt"))
        host, port = api.url.removeprefix("https://").rsplit(":", 1)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
        spec = kube_spec(**{"kube-serviceaccount-dir": str(account)})
        async with KubernetesAction.from_spec(spec) as action:
            await action.send(DELIVERY)
            (account / "token").write_text("second-token")
            api.token = "second-token"
            await action.send(DELIVERY)
    assert [r.headers["authorization"] for r in api.of("GET")] == ["Bearer first-token", "Bearer second-token"]
    assert len(api.of("PATCH")) == 4


def test_in_cluster_config_outside_a_cluster_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ActionConfigError) as info:
        KubernetesAction.from_spec(kube_spec())
    assert [key for key, _ in info.value.problems] == ["kube-config-file"]
    assert "KUBERNETES_SERVICE_HOST" in str(info.value)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ActionConfigError, match="token is missing"):
        KubernetesAction.from_spec(kube_spec(**{"kube-serviceaccount-dir": str(tmp_path)}))


@pytest.mark.parametrize(
    ("selector", "reference", "what"),
    [
        ("app=event.input.missing", "event.input.missing", "value"),
        ("event.input.Context.none", "event.input.Context.none", "key"),
        ("app=web,tier=event.input.SigMetadata.Nope", "event.input.SigMetadata.Nope", "value"),
    ],
)
async def test_a_selector_resolving_to_empty_selects_nothing(tmp_path, selector, reference, what):
    async with serving(FakeKubeApi(prod_pods())) as api:
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config, **{"kube-label-selector": selector})) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.error.retryable) == (False, 1, False)
    assert report.error.message == (
        f"kube-label-selector: {reference!r} gave '', not a valid label {what}:"
        " it is missing or blank in the event: no pod was changed"
    )
    assert api.requests == []
    assert api.pod("prod", "db-1")["labels"] == {"app": "db"}


async def test_no_matching_pod_is_a_success_without_patches(tmp_path):
    async with serving(FakeKubeApi(prod_pods())) as api:
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config, **{"kube-label-selector": "app=cache"})) as action:
            result = await action.send(DELIVERY)
    assert result.output == "no pod in namespace 'prod' matches 'app=cache'"
    assert [r.method for r in api.requests] == ["GET"]


async def test_pages_of_pods_are_followed(tmp_path):
    pods = {"prod": [pod(f"web-{i}", app="web") for i in range(5)]}
    async with serving(FakeKubeApi(pods, page_size=2)) as api:
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config)) as action:
            await action.send(DELIVERY)
    assert [r.params.get("continue") for r in api.of("GET")] == [None, ["2"], ["4"]]
    assert [r.path.rsplit("/", 1)[1] for r in api.of("PATCH")] == [f"web-{i}" for i in range(5)]


async def test_5xx_is_retried_per_policy(tmp_path):
    api = FakeKubeApi(prod_pods(), failures=[("GET", 503), ("GET", 500)])
    async with serving(api):
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config, retries=2)) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts) == (True, 3)
    assert len(api.of("GET")) == 3 and len(api.of("PATCH")) == 2


async def test_5xx_gives_up_after_the_retries(tmp_path):
    api = FakeKubeApi(prod_pods(), failures=[("PATCH", 500)] * 5)
    async with serving(api):
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config, retries=1)) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status, report.error.retryable) == (False, 2, 500, True)
    assert report.error.message.startswith("pod web-1: PATCH https://127.0.0.1:")
    assert len(api.of("PATCH")) == 2


async def test_403_is_not_retried_and_names_the_pod(tmp_path):
    api = FakeKubeApi(prod_pods(), failures=[("PATCH", 200), ("PATCH", 403)])
    async with serving(api):
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config)) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status, report.error.retryable) == (False, 1, 403, False)
    assert report.error.message.startswith("pod web-2: ")
    assert "(already patched: web-1)" in report.error.message
    assert "scripted 403" in report.error.output


async def test_a_pod_gone_before_patching_is_skipped(tmp_path):
    api = FakeKubeApi(prod_pods(), failures=[("PATCH", 404)])
    async with serving(api):
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config)) as action:
            result = await action.send(DELIVERY)
    assert result.output.endswith("1 pod(s) in namespace 'prod': web-2; gone before patching: web-1")


async def test_a_wrong_token_is_a_401_that_does_not_show_the_token(tmp_path):
    async with serving(FakeKubeApi(prod_pods(), token="the-right-one")) as api:
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config)) as action:
            with pytest.raises(ActionError) as info:
                await action.send(DELIVERY)
    assert (info.value.status, info.value.retryable) == (401, False)
    assert TOKEN not in str(info.value) and TOKEN not in info.value.output
    assert TOKEN not in repr(action.access)


async def test_timeout(tmp_path):
    api = FakeKubeApi(prod_pods(), delay=5.0)
    async with serving(api):
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config, timeout="0.5s", retries=1)) as action:
            with trio.fail_after(3):
                report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.error.retryable) == (False, 2, True)
    assert "timed out" in report.error.message
    assert len(api.requests) == 2


async def test_untrusted_server_certificate_fails_unless_insecure(tmp_path):
    async with serving(FakeKubeApi(prod_pods())) as api:
        other_ca = base64.b64encode(trustme.CA().cert_pem.bytes()).decode()
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": other_ca})
        async with KubernetesAction.from_spec(kube_spec(config)) as action:
            with pytest.raises(ActionError) as info:
                await action.send(DELIVERY)
        assert not info.value.retryable and "certificate verification failed" in info.value.message
        assert api.requests == []
        config = kubeconfig(tmp_path, api.url, cluster={"insecure-skip-tls-verify": True})
        async with KubernetesAction.from_spec(kube_spec(config)) as action:
            await action.send(DELIVERY)
        assert len(api.of("PATCH")) == 2


def test_missing_required_keys_are_all_named(tmp_path):
    config = kubeconfig(tmp_path, "https://127.0.0.1:6443")
    with pytest.raises(ActionConfigError) as info:
        KubernetesAction.from_spec(ActionSpec(name="k8s", type="kubernetes", settings={"kube-config-file": config}))
    assert [key for key, _ in info.value.problems] == ["kube-namespace", "kube-label-selector", "kube-actions"]
    assert "actions[k8s].kube-namespace: required" in str(info.value)


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ({"labels": {}}, "kube-actions: set at least one label or annotation"),
        ({"label": {"a": "b"}}, "kube-actions.label: unknown key"),
        ({"labels": ["a=b"]}, "kube-actions.labels: expected a mapping"),
        ({"annotations": {"a": {"nested": 1}}}, "kube-actions.annotations.a: expected a string"),
        ("labels", "kube-actions: expected a mapping"),
    ],
)
def test_bad_kube_actions(tmp_path, actions, message):
    config = kubeconfig(tmp_path, "https://127.0.0.1:6443")
    with pytest.raises(ActionConfigError, match=message):
        KubernetesAction.from_spec(kube_spec(config, **{"kube-actions": actions}))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"current-context": ""}, "no current-context"),
        ({"current-context": "ghost"}, "no context named 'ghost'"),
        ({"user": {"exec": {"command": "aws"}}}, "exec credentials are not supported"),
        ({"cluster": {"certificate-authority": "missing.crt"}}, "certificate-authority: file not found"),
        ({"cluster": {"certificate-authority-data": "not base64!"}}, "not valid base64"),
        ({"cluster": {"certificate-authority-data": base64.b64encode(b"junk").decode()}}, "unusable TLS material"),
        ({"user": {"client-certificate-data": "QUJD"}}, "needs both a certificate and a key"),
    ],
)
def test_bad_kubeconfig(tmp_path, kwargs, message):
    config = kubeconfig(tmp_path, "https://127.0.0.1:6443", **kwargs)
    with pytest.raises(ActionConfigError, match=message) as info:
        KubernetesAction.from_spec(kube_spec(config))
    assert [key for key, _ in info.value.problems] == ["kube-config-file"]


def test_unreadable_kubeconfig_and_bad_server(tmp_path):
    with pytest.raises(ActionConfigError, match="cannot read"):
        KubernetesAction.from_spec(kube_spec(str(tmp_path / "absent.yaml")))
    with pytest.raises(ActionConfigError, match="server must be an http"):
        KubernetesAction.from_spec(kube_spec(kubeconfig(tmp_path, "ftp://cluster")))


# --- event values cannot widen what the action selects or sets (issue #11, finding 3) ---------------


def mixed_pods() -> dict[str, list[dict[str, Any]]]:
    return {
        "prod": [
            pod("web-1", app="web"),
            pod("web-2", app="web", tier="front"),
            pod("db-1", app="db"),
            pod("ingress-1", app="ingress"),
            pod("kube-proxy-1", k8s_app="kube-proxy"),
        ]
    }


def app_event(app: Any, **extra: Any) -> Delivery:
    event = {"SigMetadata": {"ID": "TRC-2", "Name": "N"}, "Context": {"podName": "web-1", "app": app, **extra}}
    return Delivery(content={"title": "t", "description": "d"}, event=event, route="r", event_id="e")


async def send_for(tmp_path, delivery: Delivery, *, pods=None, **settings):
    """Run the action once against a real local API server; (report, api)."""
    async with serving(FakeKubeApi(pods or mixed_pods())) as api:
        config = kubeconfig(tmp_path, api.url, cluster={"certificate-authority-data": ca_data(api)})
        async with KubernetesAction.from_spec(kube_spec(config, **settings)) as action:
            report = await send_with_retries(action, delivery)
    return report, api


def patched(api: FakeKubeApi) -> list[str]:
    return [request.path.rsplit("/", 1)[1] for request in api.of("PATCH")]


@pytest.mark.parametrize(
    ("selector", "value"),
    [
        ("app in (event.input.Context.app)", "web,db,ingress"),
        ("app in (event.input.Context.app)", "web) , !tier, app in (db"),
        ("app!=event.input.Context.app", " "),
        ("app!=event.input.Context.app", ""),
        ("app=event.input.Context.app", "web,!app"),
        ("app=event.input.Context.app", "web db"),
        ("app=event.input.Context.app", "-web"),
        ("app=event.input.Context.app", "x" * 64),
        ("app=event.input.Context.app", "web\n"),
        ("event.input.Context.app", "app in (web,db)"),
        ("app notin (event.input.Context.app)", "web)"),
    ],
)
async def test_an_event_value_that_is_not_a_label_value_selects_nothing(tmp_path, selector, value):
    report, api = await send_for(tmp_path, app_event(value), **{"kube-label-selector": selector})
    assert (report.ok, report.attempts, report.error.retryable) == (False, 1, False)
    message = report.error.message
    assert message.startswith("kube-label-selector: ")
    assert "event.input.Context.app" in message and repr(value[:40])[:-1] in message
    assert "no pod was changed" in message
    assert api.requests == []  # not even listed
    assert all(pod["labels"].get("postee.io/rule") is None for pod in api.pods["prod"])


async def test_an_event_value_in_a_set_selector_is_one_value(tmp_path):
    selector = "app in (event.input.Context.app, db), tier notin (event.input.Context.tier)"
    report, api = await send_for(tmp_path, app_event("web", tier="back"), **{"kube-label-selector": selector})
    assert report.ok
    [listing] = api.of("GET")
    assert listing.params["labelSelector"] == ["app in (web,db),tier notin (back)"]
    assert patched(api) == ["web-1", "web-2", "db-1"]


async def test_a_long_hostile_value_is_cut_in_the_error(tmp_path):
    value = "web," + "a" * 5000
    report, _ = await send_for(
        tmp_path, app_event(value), **{"kube-label-selector": "app in (event.input.Context.app)"}
    )
    assert not report.ok and len(report.error.message) < 600


@pytest.mark.parametrize("value", ["a b", "web,db", "", "x" * 64, "ok\r\nX: y"])
async def test_a_label_value_from_the_event_must_be_a_label_value(tmp_path, value):
    actions = {"labels": {"owner": "event.input.Context.owner"}, "annotations": {"why": "event.input.Context.owner"}}
    report, api = await send_for(tmp_path, app_event("web", owner=value), **{"kube-actions": actions})
    assert (report.ok, report.error.retryable) == (False, False)
    assert report.error.message.startswith("kube-actions.labels.owner: ")
    assert "no pod was changed" in report.error.message
    assert api.of("PATCH") == []


async def test_annotation_values_are_free_text_sent_as_json_data(tmp_path):
    text = 'Anti-Debugging, "quoted" } {\n on web-1'
    actions = {"labels": {"owner": "event.input.Context.owner"}, "annotations": {"why": "event.input.Context.why"}}
    report, api = await send_for(tmp_path, app_event("web", owner="team-a", why=text), **{"kube-actions": actions})
    assert report.ok
    assert api.pod("prod", "web-1")["annotations"] == {"kept": "yes", "why": text}
    assert api.pod("prod", "web-1")["labels"]["owner"] == "team-a"


async def test_more_pods_than_the_cap_patches_none(tmp_path):
    pods = {"prod": [pod(f"web-{i}", app="web") for i in range(12)]}
    report, api = await send_for(tmp_path, app_event("web"), pods=pods)
    assert (report.ok, report.error.retryable) == (False, False)
    assert "matches 12 pods" in report.error.message and "kube-max-pods (10)" in report.error.message
    assert api.of("PATCH") == []
    report, api = await send_for(tmp_path, app_event("web"), pods=pods, **{"kube-max-pods": 12})
    assert report.ok and len(patched(api)) == 12


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("app in (web", "expected"),
        ("app in ()", "expected"),
        ("app=we b", "expected"),
        ("app=-web", "not a valid label value"),
        ("Bad_Prefix.io/app=web", "not a valid label key"),
        ("app=web,,tier=front", "expected"),
        ("app=(", "expected"),
        ("app>five", "needs an integer"),
    ],
)
def test_a_bad_selector_is_a_config_error(tmp_path, selector, message):
    config = kubeconfig(tmp_path, "https://127.0.0.1:6443")
    with pytest.raises(ActionConfigError, match=message) as info:
        KubernetesAction.from_spec(kube_spec(config, **{"kube-label-selector": selector}))
    assert [key for key, _ in info.value.problems] == ["kube-label-selector"]


def test_bad_label_keys_and_literal_values_are_config_errors(tmp_path):
    config = kubeconfig(tmp_path, "https://127.0.0.1:6443")
    actions = {"labels": {"bad key": "v", "ok": "not valid!"}, "annotations": {"-x": "free text is fine"}}
    with pytest.raises(ActionConfigError) as info:
        KubernetesAction.from_spec(kube_spec(config, **{"kube-actions": actions, "kube-max-pods": 0}))
    assert sorted(key for key, _ in info.value.problems) == [
        "kube-actions.annotations.-x",
        "kube-actions.labels.bad key",
        "kube-actions.labels.ok",
        "kube-max-pods",
    ]
