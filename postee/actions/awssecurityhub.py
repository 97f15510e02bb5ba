"""The `awssecurityhub` action: import the rendered ASFF findings into AWS Security Hub, as Postee does.

The template renders AWS Security Finding Format findings as the description, either
`{"Findings": [...]}` or a bare list. They go to Security Hub's BatchImportFindings, which takes at
most 100 findings per call, so they are sent in chunks of 100 (Postee sends them all at once, and
Security Hub refuses more than 100).

AWS's own client, boto3, does the request signing and finds credentials the standard way (the
environment, `~/.aws`, web identity, the container or instance role), as the AWS SDK does for
Postee; `aws-access-key-id`/`aws-secret-access-key` (and `aws-session-token`) set them explicitly,
best as `$VAR` secrets. boto3 blocks, so its client is built in `open()` and every call runs in a
worker thread; its own retries are off, retries are `send_with_retries`' job.

A reply listing failed findings (`FailedCount` > 0) is a non-retryable error naming them, after the
other chunks were still sent. Connection errors, timeouts, 5xx and throttling are retryable; a retry
sends the whole delivery again, which Security Hub takes as updates of the same findings.

boto3 is the optional extra `aws` (`pip install 'postee-py[aws]'`); without it the action's config
is refused at load time.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import trio

from postee.actions.base import Action, ActionError, Delivery, SendResult, define_action, excerpt
from postee.actions.httpclient import USER_AGENT, describe_url
from postee.actions.registry import register
from postee.actions.settings import Kind, SettingsReader, setting

DEFAULT_TIMEOUT = 30.0
"""Seconds for connecting to, and then for each read from, Security Hub per attempt."""

MAX_FINDINGS_PER_REQUEST = 100
"""BatchImportFindings refuses more findings than this in one call."""

MAX_FAILURES_LISTED = 10
"""Failed findings named in an error message; the rest are counted."""

SERVICE = "securityhub"
REGION_VARIABLE = "AWS_REGION"
"""The AWS SDK for Go's (so Postee's) region variable, which botocore ignores: honoured here, over
botocore's own AWS_DEFAULT_REGION and the profile's region, as Postee does."""
EXTRA = "aws"
THROTTLING_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "LimitExceededException", "RequestLimitExceeded"}
)
"""Error codes by which AWS says "slow down": worth retrying later."""

Finding = Mapping[str, Any]


@attrs.frozen(repr=False)
class Credentials:
    """Explicit credentials from the settings (otherwise boto3's standard chain finds them)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(access_key_id={self.access_key_id!r}, ...)"


def boto3_installed() -> bool:
    return importlib.util.find_spec("boto3") is not None


def findings_of(description: str) -> list[Finding]:
    """The ASFF findings of a description: `{"Findings": [...]}` or a bare list of finding objects."""
    try:
        document = json.loads(description)
    except ValueError as exc:
        raise ActionError(f"the description is not JSON: {exc}", retryable=False) from None
    findings = document.get("Findings") if isinstance(document, dict) else document
    if not isinstance(findings, list):
        raise ActionError('the description must be {"Findings": [...]} or a list of ASFF findings', retryable=False)
    for index, finding in enumerate(findings):
        if not isinstance(finding, dict):
            raise ActionError(f"finding {index} is not an object but {type(finding).__name__}", retryable=False)
    return findings


def chunks(findings: Sequence[Finding], size: int = MAX_FINDINGS_PER_REQUEST) -> list[Sequence[Finding]]:
    return [findings[start : start + size] for start in range(0, len(findings), size)]


@register
@define_action
class AwsSecurityHubAction(Action):
    type_name: ClassVar[str] = "awssecurityhub"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    region: str = setting("region")
    """"" for the standard lookup (AWS_REGION, AWS_DEFAULT_REGION, the profile)."""

    endpoint_url: str = setting("endpoint-url", kind=Kind.URL)
    _access_key_id: str = setting("aws-access-key-id")
    _secret_access_key: str = setting("aws-secret-access-key")
    _session_token: str = setting("aws-session-token")
    _client: Any = attrs.field(default=None, init=False)

    @classmethod
    def check_settings(cls, reader: SettingsReader, values: dict[str, Any]) -> None:
        if not boto3_installed():
            reader.problem("type", f"the awssecurityhub action needs boto3: install 'postee-py[{EXTRA}]'")
        key_id, secret, token = values["access_key_id"], values["secret_access_key"], values["session_token"]
        if (key_id or secret or token) and not (key_id and secret):
            missing = "aws-secret-access-key" if key_id else "aws-access-key-id"
            reader.problem(missing, "required with the other explicit credentials settings")

    @property
    def credentials(self) -> Credentials | None:
        """The explicit credentials, or None for boto3's standard chain."""
        if not (self._access_key_id and self._secret_access_key):
            return None
        return Credentials(self._access_key_id, self._secret_access_key, self._session_token or None)

    async def open(self) -> None:
        """Build the boto3 client in a worker thread (it reads its service model and config files).

        A client that cannot be built (no region, an unknown profile) does not fail the open: each
        send tries again and reports why it cannot, so the action's actor keeps running.
        """
        if self._client is None:
            try:
                self._client = await trio.to_thread.run_sync(self._make_client)
            except ActionError:
                pass

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await trio.to_thread.run_sync(client.close)

    def _make_client(self) -> Any:
        import boto3
        import botocore.config
        import botocore.exceptions

        credentials = self.credentials
        config = botocore.config.Config(
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            retries={"mode": "standard", "total_max_attempts": 1},
            user_agent_extra=USER_AGENT,
        )
        try:
            session = boto3.session.Session(
                aws_access_key_id=credentials.access_key_id if credentials else None,
                aws_secret_access_key=credentials.secret_access_key if credentials else None,
                aws_session_token=credentials.session_token if credentials else None,
                region_name=self.region or os.environ.get(REGION_VARIABLE) or None,
            )
            return session.client(SERVICE, endpoint_url=self.endpoint_url or None, config=config)
        except botocore.exceptions.NoRegionError:
            raise ActionError(
                "no AWS region: set the action's `region`, AWS_REGION, AWS_DEFAULT_REGION or a profile's region",
                retryable=False,
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ActionError(f"cannot set up the Security Hub client: {exc}", retryable=False) from None

    async def send(self, delivery: Delivery) -> SendResult:
        findings = findings_of(delivery.description)
        if not findings:
            return SendResult(output="no findings to import")
        if self._client is None:
            self._client = await trio.to_thread.run_sync(self._make_client)
        imported = failed_count = 0
        failed: list[Mapping[str, Any]] = []
        for chunk in chunks(findings):
            reply = await trio.to_thread.run_sync(self._import, self._client, chunk, abandon_on_cancel=True)
            imported += int(reply.get("SuccessCount") or 0)
            failed_count += int(reply.get("FailedCount") or 0)
            failed += reply.get("FailedFindings") or []
        if failed_count or failed:
            message = _failures_message(failed, max(failed_count, len(failed)), len(findings))
            raise ActionError(message, retryable=False, output=f"{imported} of {len(findings)} findings imported")
        return SendResult(output=f"{imported} of {len(findings)} findings imported", status=200)

    def _import(self, client: Any, findings: Sequence[Finding]) -> Mapping[str, Any]:
        """One BatchImportFindings call (in a worker thread), its failures as `ActionError`s."""
        import botocore.exceptions as errors

        where = f"BatchImportFindings {describe_url(client.meta.endpoint_url)}"
        try:
            return client.batch_import_findings(Findings=list(findings))
        except errors.ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = error.get("Code", "")
            retryable = code in THROTTLING_CODES or (status is not None and (status >= 500 or status in (408, 429)))
            message = excerpt(str(error.get("Message", "")), 300)
            raise ActionError(
                f"{where}: HTTP {status} {code}: {message}", retryable=retryable, status=status, output=message
            ) from None
        except (errors.ConnectionError, errors.HTTPClientError) as exc:  # refused, reset, timed out
            raise ActionError(f"{where}: {type(exc).__name__}: {exc}", retryable=True) from None
        except errors.NoCredentialsError:
            raise ActionError(
                f"{where}: no AWS credentials found (environment, ~/.aws, role) nor set on the action",
                retryable=False,
            ) from None
        except errors.BotoCoreError as exc:  # findings that do not fit the ASFF shape, bad credentials files, ...
            raise ActionError(f"{where}: {excerpt(str(exc), 500)}", retryable=False) from None


def _failures_message(failed: Sequence[Mapping[str, Any]], count: int, total: int) -> str:
    listed = [
        f"{item.get('Id', '?')} ({item.get('ErrorCode', 'error')}: {item.get('ErrorMessage', '')})"
        for item in failed[:MAX_FAILURES_LISTED]
    ]
    more = count - len(listed)
    details = "; ".join(listed) + (f"; and {more} more" if listed and more > 0 else "")
    return f"Security Hub refused {count} of {total} findings" + (f": {details}" if details else "")
