"""The ``kmsKey`` switch (cdk/README.md, "Encryption: kmsKey"): off, no customer-managed key
anywhere; on, one rotated key under the queues, the secrets and every log group of its region,
a key policy for the services that use it on their own account, and each role allowed only the
KMS actions the services it calls need, through those services."""

from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs

from chalicelib.eventroutes import ROUTES
from tests.conftest import ROOT
from tests.test_cdk import (  # noqa: F401
    Assembly,
    as_list,
    cfn_lint_errors,
    plain,
    role_statements,
    site,
    synthesize,
)

sys.path.insert(0, str(ROOT / "cdk"))  # done by tests.test_cdk too; said here for readers
from gatehouse_infra import runtime
from gatehouse_infra.encryption import EncryptLogGroups

QUEUES = {
    f"gatehouse-production-{name}"
    for route in ROUTES
    for name in (route.worker, f"{route.worker}-dlq")
} | {"gatehouse-production-stream-dlq"}
LOG_GROUP_PATTERNS = ("/gatehouse/production/*", "gatehouse-production-*")
SQS = "sqs.eu-west-2.${AWS::URLSuffix}"
DECRYPT = "kms:Decrypt"
DATA_KEY = "kms:GenerateDataKey"
# Which role may do which KMS action through SQS, by function: the workers read their queue, the
# stream handler's event source mapping sends to the stream's dead-letter queue. (The data unit
# grants the uses of the table, the buckets and the signing key: tests/test_cdk_data.py.)
QUEUE_KEY_GRANTS: dict[str, set[str]] = {
    "OnTableChange": {DECRYPT, DATA_KEY},
    "NotifyWorker": {DECRYPT},
    "MailWorker": {DECRYPT},
    "PurgeWorker": {DECRYPT},
}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Assembly:  # noqa: F811
    """kmsKey on, with apiKeys for the site key's secret."""
    return synthesize(tmp_path_factory.mktemp("kms"), site, {"kmsKey": True, "apiKeys": True})


def resources(assembly: Assembly, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every resource of ``kind`` in every stack: (stack, logical id, properties)."""
    found = []
    for name in assembly.stacks():
        stack = name.removeprefix("gatehouse-production-").removesuffix(".template.json")
        for logical_id, resource in assembly.resources(stack, kind).items():
            found.append((stack, logical_id, resource.get("Properties", {})))
    return found


def regions(assembly: Assembly) -> dict[str, str]:
    """Each stack's region, by its short name (``api``, ``edge-monitoring``)."""
    manifest = json.loads((assembly.path / "manifest.json").read_text())
    return {
        name.removeprefix("gatehouse-production-"): artifact["environment"].rsplit("/", 1)[1]
        for name, artifact in manifest["artifacts"].items()
        if artifact["type"] == "aws:cloudformation:stack"
    }


def the_key(assembly: Assembly) -> tuple[str, str, dict[str, Any]]:
    keys = resources(assembly, "AWS::KMS::Key")
    assert len(keys) == 1, keys
    return keys[0]


def is_the_key(value: Any, stack: str, assembly: Assembly) -> bool:
    """``value`` is the key's ARN: its own attribute in its stack, an import elsewhere."""
    key_stack, key_id, _ = the_key(assembly)
    if stack == key_stack:
        return bool(value == {"Fn::GetAtt": [key_id, "Arn"]})
    return isinstance(value, dict) and key_id in str(value.get("Fn::ImportValue", ""))


def kms_statements(assembly: Assembly) -> list[tuple[str, str, dict[str, Any]]]:
    """Every IAM statement (policies and roles' inline policies) with a kms: action."""
    found = []
    for kind in ("AWS::IAM::Policy", "AWS::IAM::Role"):
        for stack, logical_id, properties in resources(assembly, kind):
            documents = [properties.get("PolicyDocument")] + [
                policy["PolicyDocument"] for policy in properties.get("Policies", [])
            ]
            for document in filter(None, documents):
                for statement in document["Statement"]:
                    if any(a.startswith("kms:") for a in as_list(statement["Action"])):
                        found.append((stack, logical_id, statement))
    return found


def function_key_grants(assembly: Assembly, function: str) -> set[tuple[str, str | None]]:
    """(action, kms:ViaService or None) for each KMS action the role of ``function`` has, each
    on the key alone."""
    granted: set[tuple[str, str | None]] = set()
    for statement in role_statements(assembly.template("api"), function):
        actions = [a for a in as_list(statement["Action"]) if a.startswith("kms:")]
        if not actions:
            continue
        assert statement["Effect"] == "Allow"
        assert [is_the_key(r, "api", assembly) for r in as_list(statement["Resource"])] == [True], (
            statement
        )
        condition = statement.get("Condition")
        if condition is None:
            vias: list[str | None] = [None]
        else:
            assert list(condition) == ["StringEquals"], statement
            assert list(condition["StringEquals"]) == ["kms:ViaService"], statement
            vias = [join(via) for via in as_list(condition["StringEquals"]["kms:ViaService"])]
        granted.update((action, via) for action in actions for via in vias)
    return granted


def join(value: Any) -> str:
    """A Fn::Join of literals and pseudo parameters, as a string with ${Param} in it."""
    if isinstance(value, str):
        return value
    separator, parts = value["Fn::Join"]
    return str(separator).join(
        part if isinstance(part, str) else "${" + part["Ref"] + "}" for part in parts
    )


class TestOff:
    def test_no_customer_managed_key_anywhere(self, plain: Assembly) -> None:  # noqa: F811
        assert resources(plain, "AWS::KMS::Key") == []
        assert kms_statements(plain) == []

    def test_queues_use_sqs_managed_encryption(self, plain: Assembly) -> None:  # noqa: F811
        queues = resources(plain, "AWS::SQS::Queue")
        assert {properties["QueueName"] for _, _, properties in queues} == QUEUES
        for _, _, properties in queues:
            assert properties["SqsManagedSseEnabled"] is True
            assert "KmsMasterKeyId" not in properties

    def test_log_groups_and_secrets_have_no_key(self, plain: Assembly) -> None:  # noqa: F811
        groups = resources(plain, "AWS::Logs::LogGroup")
        assert len(groups) > 12
        assert all("KmsKeyId" not in properties for _, _, properties in groups)
        secrets = resources(plain, "AWS::SecretsManager::Secret")
        assert secrets
        assert all("KmsKeyId" not in properties for _, _, properties in secrets)


class TestOn:
    def test_one_key_with_rotation_in_the_primary_region(self, keyed: Assembly) -> None:
        stack, _, properties = the_key(keyed)
        assert regions(keyed)[stack] == "eu-west-2"
        assert properties["EnableKeyRotation"] is True

    def test_every_queue_is_under_the_key(self, keyed: Assembly) -> None:
        queues = resources(keyed, "AWS::SQS::Queue")
        assert {properties["QueueName"] for _, _, properties in queues} == QUEUES
        for stack, _, properties in queues:
            assert is_the_key(properties["KmsMasterKeyId"], stack, keyed), properties
            assert "SqsManagedSseEnabled" not in properties

    def test_eventbridge_may_send_to_the_queues_from_our_rules_only(self, keyed: Assembly) -> None:
        """CDK drops the rule's aws:SourceArn condition from a queue it knows is under a key:
        the queues' policies keep it."""
        sending = [
            statement
            for _, _, properties in resources(keyed, "AWS::SQS::QueuePolicy")
            for statement in properties["PolicyDocument"]["Statement"]
            if statement.get("Principal") == {"Service": "events.amazonaws.com"}
        ]
        assert len(sending) == 2 * len(ROUTES)  # each work queue and its dead-letter queue
        for statement in sending:
            source = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
            assert source["Fn::GetAtt"][1] == "Arn", statement

    def test_every_log_group_in_the_keys_region_is_under_the_key(self, keyed: Assembly) -> None:
        groups = resources(keyed, "AWS::Logs::LogGroup")
        region = regions(keyed)
        primary = [group for group in groups if region[group[0]] == "eu-west-2"]
        # The functions' 12, and the providers' in the site stack (deployment, custom
        # resource, auto-delete, the cross-region writer CDK adds after the aspects).
        assert len(primary) >= 16
        assert any("CrossRegionExportWriter" in logical_id for _, logical_id, _ in primary)
        for stack, logical_id, properties in primary:
            assert is_the_key(properties.get("KmsKeyId"), stack, keyed), (stack, logical_id)
            # Named so that the key policy's condition covers it.
            name = properties.get("LogGroupName", f"gatehouse-production-{stack}-{logical_id}")
            assert any(fnmatch.fnmatchcase(name, p) for p in LOG_GROUP_PATTERNS), name
        edge = [group for group in groups if region[group[0]] == "us-east-1"]
        assert edge
        assert all("KmsKeyId" not in properties for _, _, properties in edge)

    def test_the_shared_secrets_are_under_the_key(self, keyed: Assembly) -> None:
        secrets = {
            properties["Name"]: properties
            for stack, _, properties in resources(keyed, "AWS::SecretsManager::Secret")
            if stack == "api"
        }
        for name in ("gatehouse/production/edge-key", "gatehouse/production/site-api-key"):
            assert is_the_key(secrets[name].get("KmsKeyId"), "api", keyed), name

    def test_the_site_and_access_log_buckets_keep_sse_s3(self, keyed: Assembly) -> None:
        """The site's objects are public through CloudFront; S3 delivers access logs only to
        SSE-S3 buckets (cdk/README.md, Encryption: kmsKey)."""
        site_bucket = keyed.one("site", "AWS::S3::Bucket")
        access_logs = next(
            properties
            for logical_id, properties in (
                (name, resource["Properties"])
                for name, resource in keyed.resources("data", "AWS::S3::Bucket").items()
            )
            if logical_id.startswith("AccessLogs")
        )
        for bucket in (site_bucket, access_logs):
            (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}

    def test_the_alarm_topics_stay_off_the_key(self, keyed: Assembly) -> None:
        """An alarm must reach its subscribers when the key is what failed."""
        topics = resources(keyed, "AWS::SNS::Topic")
        assert len(topics) == 2
        assert all("KmsMasterKeyId" not in properties for _, _, properties in topics)

    def test_the_key_policy_lets_in_the_account_and_two_services_on_conditions(
        self, keyed: Assembly
    ) -> None:
        _, _, properties = the_key(keyed)
        root = "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"
        by_service: dict[str, dict[str, Any]] = {}
        for statement in properties["KeyPolicy"]["Statement"]:
            assert statement["Effect"] == "Allow"
            principal = statement["Principal"]
            if "Service" in principal:
                assert principal["Service"] not in by_service, statement
                by_service[principal["Service"]] = statement
            else:  # the account alone: what IAM policies in it may grant
                assert join(principal["AWS"]) == root, statement
        assert sorted(by_service) == ["events.amazonaws.com", "logs.eu-west-2.amazonaws.com"]
        assert any(
            statement["Action"] == "kms:*" and "Condition" not in statement
            for statement in properties["KeyPolicy"]["Statement"]
            if "AWS" in statement["Principal"]
        )

        logs_statement = by_service["logs.eu-west-2.amazonaws.com"]
        assert set(logs_statement["Action"]) == {
            "kms:Encrypt*",
            "kms:Decrypt*",
            "kms:ReEncrypt*",
            "kms:GenerateDataKey*",
            "kms:Describe*",
        }
        assert list(logs_statement["Condition"]) == ["ArnLike"]
        context = logs_statement["Condition"]["ArnLike"]
        assert list(context) == ["kms:EncryptionContext:aws:logs:arn"]
        assert sorted(join(arn) for arn in context["kms:EncryptionContext:aws:logs:arn"]) == sorted(
            f"arn:${{AWS::Partition}}:logs:eu-west-2:${{AWS::AccountId}}:log-group:{pattern}"
            for pattern in LOG_GROUP_PATTERNS
        )

        events_statement = by_service["events.amazonaws.com"]
        assert set(as_list(events_statement["Action"])) == {DECRYPT, DATA_KEY}
        assert events_statement["Condition"]["StringEquals"] == {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"}
        }
        rules = {
            properties["Name"]
            for _, _, properties in resources(keyed, "AWS::Events::Rule")
            if properties.get("EventBusName", {}).get("Ref", "").startswith("EventsBus")
        }
        assert len(rules) == len(ROUTES)
        assert sorted(
            join(arn) for arn in events_statement["Condition"]["ArnEquals"]["aws:SourceArn"]
        ) == sorted(
            "arn:${AWS::Partition}:events:eu-west-2:${AWS::AccountId}:rule/"
            f"{runtime.event_bus_name('production')}/{rule}"
            for rule in rules
        )

    def test_each_role_may_use_the_key_through_sqs_only_as_its_queues_need(
        self, keyed: Assembly
    ) -> None:
        functions = [runtime.API_FUNCTION, runtime.AUTHORIZER_FUNCTION, runtime.ROTATION_FUNCTION]
        functions += [handler.function for handler in runtime.EVENT_HANDLERS]
        for function in functions:
            granted = function_key_grants(keyed, function)
            through_sqs = {action for action, via in granted if via == SQS}
            assert through_sqs == QUEUE_KEY_GRANTS.get(function, set()), function
        # No other role anywhere (CDK's providers, the site's deployment) may use the key.
        roles = {
            keyed.template("api")["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
            for function in functions
        }
        for stack, logical_id, statement in kms_statements(keyed):
            assert stack == "api", (stack, logical_id, statement)
            policy = keyed.template("api")["Resources"][logical_id]["Properties"]
            assert {role["Ref"] for role in policy["Roles"]} <= roles, logical_id

    def test_cfn_lint_finds_no_errors(self, keyed: Assembly) -> None:
        assert cfn_lint_errors(keyed) == []


def test_a_log_group_the_key_policy_does_not_cover_fails_synthesis() -> None:
    app = cdk.App()
    stack = cdk.Stack(app, "gatehouse-production-api", env=cdk.Environment(region="eu-west-2"))
    key = kms.Key(stack, "Key", enable_key_rotation=True)
    logs.LogGroup(stack, "Covered", log_group_name="/gatehouse/production/Anything")
    logs.LogGroup(stack, "Elsewhere", log_group_name="/aws/apigateway/access")
    cdk.Aspects.of(stack).add(EncryptLogGroups(key, "production"))
    with pytest.raises(Exception, match="log group /aws/apigateway/access"):
        app.synth()
