"""The awssecurityhub action against a real local HTTP server speaking Security Hub's JSON API.

botocore signs and sends `POST /findings/import` with `{"Findings": [...]}` to the `endpoint-url`;
the sink answers as Security Hub does (`FailedCount`, `SuccessCount`, `FailedFindings`, or an error
with `x-amzn-ErrorType`). The environment is emptied of AWS settings so the host's cannot interfere.
"""

import json
import os
import subprocess
import sys

import pytest
import trio

from postee.actions import ActionConfigError, ActionError, ActionSpec, Delivery, send_with_retries
from postee.actions.awssecurityhub import AwsSecurityHubAction, findings_of
from tests.helpers.http_sink import Reply, open_http_sink

ACCOUNT = "123456789012"
REGION = "eu-west-1"
KEY_ID, SECRET = "AKIDPOSTEETEST", "wJalrXUtnFEMI/K7MDENG/SECRETKEY"
PRODUCT_ARN = f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default"


def finding(number):
    return {
        "SchemaVersion": "2018-10-08",
        "Id": f"trivy/nginx/CVE-2024-{number:04d}",
        "ProductArn": PRODUCT_ARN,
        "GeneratorId": "Trivy",
        "AwsAccountId": ACCOUNT,
        "Types": ["Software and Configuration Checks/Vulnerabilities/CVE"],
        "CreatedAt": "2024-05-01T10:00:00Z",
        "UpdatedAt": "2024-05-01T10:00:00Z",
        "Severity": {"Label": "HIGH"},
        "Title": f"CVE-2024-{number:04d} in openssl",
        "Description": "a vulnerability",
        "Resources": [{"Type": "Container", "Id": "nginx:1.25", "Partition": "aws", "Region": REGION}],
        "RecordState": "ACTIVE",
    }


def imported(success, failed=()):
    body = {"FailedCount": len(failed), "SuccessCount": success, "FailedFindings": list(failed)}
    return Reply(200, json.dumps(body), headers=(("Content-Type", "application/json"),))


def aws_error(status, code, message):
    headers = (("Content-Type", "application/json"), ("x-amzn-ErrorType", code))
    return Reply(status, json.dumps({"Message": message}), headers=headers)


def delivery(findings):
    return Delivery(content={"title": "Trivy findings", "description": json.dumps(findings)}, route="sechub")


def hub_action(url, **settings):
    base = {
        "region": REGION,
        "endpoint-url": url,
        "aws-access-key-id": KEY_ID,
        "aws-secret-access-key": SECRET,
        "retry-backoff": "0.01s",
    }
    spec = ActionSpec(name="my-securityhub", type="awssecurityhub", settings={**base, **settings})
    return AwsSecurityHubAction.from_spec(spec)


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch, tmp_path):
    """No credentials, region, profile or instance metadata from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


async def test_250_findings_go_in_signed_chunks_of_100():
    findings = [finding(n) for n in range(250)]
    async with open_http_sink([imported(100), imported(100), imported(50)]) as sink:
        async with hub_action(sink.url) as action:
            result = await action.send(delivery({"Findings": findings}))
        requests = await sink.wait_for(3)
        assert len(sink.requests) == 3
    assert result.output == "250 of 250 findings imported"
    sent = [request.json()["Findings"] for request in requests]
    assert [len(chunk) for chunk in sent] == [100, 100, 50]
    assert [f for chunk in sent for f in chunk] == findings
    for request in requests:
        assert (request.method, request.path) == ("POST", "/findings/import")
        assert request.header("content-type") == "application/json"
        assert set(request.json()) == {"Findings"}
        authorization = request.header("authorization")
        assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
        assert f"/{REGION}/securityhub/aws4_request" in authorization
        assert SECRET not in authorization
        assert request.header("amz-sdk-request") == "attempt=1; max=1"  # botocore's own retries are off
        assert "postee-py/" in request.header("user-agent")


async def test_a_bare_list_and_a_session_token():
    async with open_http_sink([imported(1)]) as sink:
        async with hub_action(sink.url, **{"aws-session-token": "SESSION-TOKEN"}) as action:
            await action.send(delivery([finding(1)]))
        [request] = await sink.wait_for(1)
    assert request.json() == {"Findings": [finding(1)]}
    assert request.header("x-amz-security-token") == "SESSION-TOKEN"


@pytest.mark.parametrize(
    "region_variables",
    [
        {"AWS_DEFAULT_REGION": "us-east-2"},
        {"AWS_REGION": "us-east-2"},
        {"AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "x"},
    ],
)
async def test_credentials_and_region_from_the_standard_chain(monkeypatch, region_variables):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    for name, value in region_variables.items():
        monkeypatch.setenv(name, value)
    async with open_http_sink([imported(1)]) as sink:
        spec = ActionSpec(name="hub", type="awssecurityhub", settings={"endpoint-url": sink.url})
        async with AwsSecurityHubAction.from_spec(spec) as action:
            await action.send(delivery([finding(1)]))
        [request] = await sink.wait_for(1)
    assert request.header("authorization").startswith("AWS4-HMAC-SHA256 Credential=AKIDFROMENV/")
    assert "/us-east-2/securityhub/" in request.header("authorization")


async def test_failed_findings_are_a_non_retryable_error_after_every_chunk_was_sent():
    findings = [finding(n) for n in range(150)]
    refused = [
        {"Id": findings[3]["Id"], "ErrorCode": "InvalidInput", "ErrorMessage": "Finding does not adhere to ASFF"},
        {"Id": findings[7]["Id"], "ErrorCode": "AccessDeniedException", "ErrorMessage": "wrong product"},
    ]
    async with open_http_sink([imported(98, refused), imported(50)]) as sink:
        async with hub_action(sink.url, retries=3) as action:
            report = await send_with_retries(action, delivery({"Findings": findings}))
        assert len(sink.requests) == 2
    assert (report.ok, report.attempts) == (False, 1)
    error = report.error
    assert not error.retryable
    assert "refused 2 of 150 findings" in error.message
    assert findings[3]["Id"] in error.message and "InvalidInput" in error.message
    assert findings[7]["Id"] in error.message and "wrong product" in error.message
    assert error.output == "148 of 150 findings imported"


async def test_many_failed_findings_are_listed_in_part():
    findings = [finding(n) for n in range(30)]
    refused = [{"Id": f["Id"], "ErrorCode": "InvalidInput", "ErrorMessage": "bad"} for f in findings]
    async with open_http_sink([imported(0, refused)]) as sink:
        async with hub_action(sink.url) as action:
            with pytest.raises(ActionError) as info:
                await action.send(delivery(findings))
    assert "refused 30 of 30 findings" in info.value.message
    assert info.value.message.endswith("; and 20 more")


async def test_5xx_is_retried_per_policy():
    async with open_http_sink(default=aws_error(500, "InternalException", "internal error")) as sink:
        async with hub_action(sink.url, retries=2) as action:
            with pytest.raises(ActionError) as info:
                await action.send(delivery([finding(1)]))
            assert info.value.retryable and info.value.status == 500
            assert "InternalException" in info.value.message
            report = await send_with_retries(action, delivery([finding(1)]))
        assert (report.ok, report.attempts, report.status) == (False, 3, 500)
        assert len(sink.requests) == 1 + 3


async def test_5xx_then_success():
    async with open_http_sink([aws_error(503, "ServiceUnavailableException", "down"), imported(1)]) as sink:
        async with hub_action(sink.url) as action:
            report = await send_with_retries(action, delivery([finding(1)]))
        assert (report.ok, report.attempts) == (True, 2)
        first, second = await sink.wait_for(2)
    assert first.json() == second.json()


async def test_throttling_is_retryable():
    async with open_http_sink([aws_error(429, "LimitExceededException", "slow down"), imported(1)]) as sink:
        async with hub_action(sink.url) as action:
            seen = []
            report = await send_with_retries(action, delivery([finding(1)]), on_attempt=seen.append)
    assert (report.ok, report.attempts) == (True, 2)
    assert seen[0].error.retryable and seen[0].error.status == 429


@pytest.mark.parametrize(
    ("status", "code"), [(400, "InvalidInputException"), (401, "UnrecognizedClientException"), (403, "AccessDenied")]
)
async def test_4xx_is_not_retried(status, code):
    async with open_http_sink(default=aws_error(status, code, "no")) as sink:
        async with hub_action(sink.url, retries=3) as action:
            report = await send_with_retries(action, delivery([finding(1)]))
        assert (report.ok, report.attempts, report.status) == (False, 1, status)
        assert not report.error.retryable and code in report.error.message
        assert SECRET not in str(report.error)
        assert len(sink.requests) == 1


async def test_timeout_is_retryable():
    async with open_http_sink([Reply(200, delay=5.0), imported(1)]) as sink:
        async with hub_action(sink.url, timeout="0.2s", retries=1) as action:
            seen = []
            with trio.fail_after(5):
                report = await send_with_retries(action, delivery([finding(1)]), on_attempt=seen.append)
        assert (report.ok, report.attempts) == (True, 2)
        assert seen[0].error.retryable and "Timeout" in seen[0].error.message
        assert len(sink.requests) == 2


async def test_connection_refused_is_retryable(closed_port_url):
    async with hub_action(closed_port_url) as action:
        with pytest.raises(ActionError) as info:
            await action.send(delivery([finding(1)]))
    assert info.value.retryable
    assert "127.0.0.1" in info.value.message


@pytest.mark.parametrize(
    ("description", "message"),
    [
        ("not json", "not JSON"),
        ('{"findings": []}', "Findings"),
        ("[1, 2]", "finding 0 is not an object"),
    ],
)
async def test_unusable_descriptions_send_nothing(description, message):
    async with open_http_sink() as sink:
        async with hub_action(sink.url) as action:
            with pytest.raises(ActionError, match=message) as info:
                await action.send(Delivery(content={"description": description}))
        assert sink.requests == []
    assert not info.value.retryable


async def test_findings_that_do_not_fit_asff_are_refused_before_sending():
    async with open_http_sink() as sink:
        async with hub_action(sink.url) as action:
            with pytest.raises(ActionError, match="AwsAccountId") as info:
                await action.send(delivery([{"Id": "x", "Title": "missing most fields"}]))
        assert sink.requests == []
    assert not info.value.retryable


async def test_no_findings_is_nothing_to_do():
    async with open_http_sink() as sink:
        async with hub_action(sink.url) as action:
            result = await action.send(delivery({"Findings": []}))
        assert sink.requests == []
    assert result.output == "no findings to import"


async def test_no_region_is_reported_at_send():
    async with open_http_sink() as sink:
        action = AwsSecurityHubAction.from_spec(
            ActionSpec(name="hub", type="awssecurityhub", settings={"endpoint-url": sink.url})
        )
        async with action:  # opening does not fail: the actor keeps running and reports each send
            with pytest.raises(ActionError, match="no AWS region") as info:
                await action.send(delivery([finding(1)]))
        assert sink.requests == []
    assert not info.value.retryable


async def test_no_credentials_is_a_clear_error():
    async with open_http_sink() as sink:
        spec = ActionSpec(name="hub", type="awssecurityhub", settings={"endpoint-url": sink.url, "region": REGION})
        async with AwsSecurityHubAction.from_spec(spec) as action:
            with pytest.raises(ActionError, match="no AWS credentials") as info:
                await action.send(delivery([finding(1)]))
        assert sink.requests == []
    assert not info.value.retryable


def test_findings_of_accepts_both_shapes():
    assert findings_of('{"Findings": [{"Id": "a"}]}') == [{"Id": "a"}]
    assert findings_of('[{"Id": "a"}]') == [{"Id": "a"}]


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"aws-access-key-id": KEY_ID}, "aws-secret-access-key"),
        ({"aws-secret-access-key": SECRET}, "aws-access-key-id"),
        ({"endpoint-url": "localhost:4566"}, "endpoint-url"),
        ({"timeout": "0s"}, "timeout"),
    ],
)
def test_config_problems_name_the_key(settings, key):
    with pytest.raises(ActionConfigError) as info:
        AwsSecurityHubAction.from_spec(ActionSpec(name="hub", type="awssecurityhub", settings=settings))
    assert [k for k, _ in info.value.problems] == [key]
    assert f"actions[hub].{key}:" in str(info.value)
    assert SECRET not in str(info.value)


def test_no_settings_at_all_is_valid():
    action = AwsSecurityHubAction.from_spec(ActionSpec(name="hub", type="awssecurityhub"))
    assert action.name == "hub" and action.retry_policy.retries >= 0  # region and credentials: the standard chain


def test_without_boto3_the_config_says_to_install_the_extra():
    code = (
        "import sys; sys.modules['boto3'] = None\n"
        "from postee.actions import ActionSpec, ActionConfigError\n"
        "from postee.actions.awssecurityhub import AwsSecurityHubAction\n"
        "try:\n"
        "    AwsSecurityHubAction.from_spec(ActionSpec(name='hub', type='awssecurityhub'))\n"
        "except ActionConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert "actions[hub].type:" in done.stdout and "postee-py[aws]" in done.stdout


async def test_a_send_is_cancellable_while_boto3_waits_in_its_thread():
    async with open_http_sink(default=Reply(200, delay=5.0)) as sink:
        async with hub_action(sink.url, timeout="30s") as action:
            with trio.move_on_after(0.3) as scope:
                await action.send(delivery([finding(1)]))
            assert scope.cancelled_caught
            await sink.wait_for(1)
