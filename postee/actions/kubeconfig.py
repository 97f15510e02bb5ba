"""Where the kubernetes action finds the API server and its credentials: a kubeconfig, or the pod's mount.

The kubeconfig's current context gives the cluster (server, CA, `insecure-skip-tls-verify`) and the
user (a token, a token file, a client certificate, or basic auth); plugins (`exec`, `auth-provider`)
are not supported. Without a kubeconfig, the in-cluster service account is used (the token and CA
Kubernetes mounts in a pod, the server from `KUBERNETES_SERVICE_HOST`/`_PORT`).

Everything here is read once, at load time, so that a broken kubeconfig is a config error, and it
all blocks (files, TLS material): it runs wherever `from_spec` runs, in a worker thread in the
daemon. It is thread-safe: it shares no state, and private keys held in memory are written to a
temporary directory of their own for the moment `load_cert_chain` reads them.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
import yaml

from postee.actions.settings import SettingsReader

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where Kubernetes mounts a pod's service-account token and the cluster CA (`token`, `ca.crt`)."""

SERVICE_HOST_VARIABLE = "KUBERNETES_SERVICE_HOST"
SERVICE_PORT_VARIABLE = "KUBERNETES_SERVICE_PORT"

UNSUPPORTED_AUTH = ("exec", "auth-provider")
"""Kubeconfig user entries that run plugins; not supported (use a token or a client certificate)."""

CONFIG_KEY = "kube-config-file"
"""The setting problems with the cluster access are reported under."""


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


def read_access(settings: SettingsReader, config_file: str, account_dir: str) -> ClusterAccess | None:
    """The access from the kubeconfig `config_file`, else from the in-cluster mount in `account_dir`;
    None (with a problem recorded under `kube-config-file`) when neither works."""
    if config_file:
        return _read_kubeconfig(settings, os.path.expanduser(config_file))
    return _in_cluster_access(settings, account_dir)


def _in_cluster_access(settings: SettingsReader, account_dir: str) -> ClusterAccess | None:
    host = os.environ.get(SERVICE_HOST_VARIABLE, "")
    port = os.environ.get(SERVICE_PORT_VARIABLE, "")
    if not host or not port:
        settings.problem(
            CONFIG_KEY,
            f"required when not running in a cluster ({SERVICE_HOST_VARIABLE}/{SERVICE_PORT_VARIABLE} are not set)",
        )
        return None
    token_file = os.path.join(account_dir, "token")
    ca_file = os.path.join(account_dir, "ca.crt")
    for path in (token_file, ca_file):
        if not os.path.isfile(path):
            settings.problem(CONFIG_KEY, f"not set, and the in-cluster {path} is missing")
            return None
    server_host = f"[{host}]" if ":" in host else host
    return ClusterAccess(server=f"https://{server_host}:{port}", ca_file=ca_file, token_file=token_file)


def _read_kubeconfig(settings: SettingsReader, path: str) -> ClusterAccess | None:
    """The current context's cluster and user from the kubeconfig at `path`; problems under `kube-config-file`."""
    key = CONFIG_KEY
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


def load_ssl_context(settings: SettingsReader, access: ClusterAccess) -> ssl.SSLContext | None:
    """The TLS context, built at load time so that a bad CA, certificate or key is a config error."""
    try:
        return _ssl_context(access)
    except (ssl.SSLError, OSError, ValueError) as exc:
        settings.problem(CONFIG_KEY, f"unusable TLS material (CA, client certificate or key): {exc}")
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
