"""The data switches (cdk/README.md, "Deploy switches"): ``replicaRegions``,
``secretReplicaRegions``, ``kmsKey``, provisioned auto scaling (``dynamoMinCapacity``,
``dynamoMaxCapacity``), ``uploadsVersioning``, and a region-outage deploy
(``existingSigningKeyArn``, ``existingKeyArn``).

Off is the ``plain`` assembly of tests/test_cdk.py; ``switched`` turns every one of them on at
once; ``recovery`` is the deploy the disaster-recovery runbook makes in a replica region.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest

from chalicelib.objectkeys import UPLOAD_PREFIX
from chalicelib.table import INDEXES
from tests import test_cdk
from tests.conftest import ROOT
from tests.test_cdk import GLOBAL_TABLE, Assembly, cfn_lint_errors, statements, synthesize

sys.path.insert(0, str(ROOT / "cdk"))
from gatehouse_infra import runtime
from gatehouse_infra.config import ConfigError, DeployConfig
from gatehouse_infra.data import NONCURRENT_UPLOAD_DAYS
from gatehouse_infra.stacks import KEY_USES, KEYLESS

# tests/test_cdk.py's fixtures, made fixtures of this module: the built site, and every switch off.
site = test_cdk.site
plain = test_cdk.plain
PRIMARY = "eu-west-2"
TABLE_REPLICAS = ("eu-west-1", "us-east-1")
SECRET_ONLY = ("eu-central-1",)
SWITCHED = {
    "replicaRegions": ",".join(TABLE_REPLICAS),
    "secretReplicaRegions": ",".join(SECRET_ONLY),
    "kmsKey": True,
    "dynamoBilling": "provisioned",
    "dynamoMinCapacity": 2,
    "dynamoMaxCapacity": 20,
    "uploadsVersioning": True,
}
DR_REGION = "eu-west-1"
ACCOUNT = "111122223333"
REPLICA_STREAM = (
    f"arn:aws:dynamodb:{DR_REGION}:{ACCOUNT}:table/gatehouse-production/stream/"
    "2026-12-01T00:00:00.000"
)
REPLICA_SECRET = (
    f"arn:aws:secretsmanager:{DR_REGION}:{ACCOUNT}:secret:"
    "gatehouse/production/jwt-signing-key-AbC123"
)
REPLICA_KEY = f"arn:aws:kms:{DR_REGION}:{ACCOUNT}:key/mrk-0123456789abcdef0123456789abcdef"
# The runbook's deploy in a replica region (cdk/README.md, "Disaster recovery").
RECOVERY = {
    "primaryRegion": DR_REGION,
    "environment": "production-dr",
    "existingTableName": "gatehouse-production",
    "existingTableStreamArn": REPLICA_STREAM,
    "existingSigningKeyArn": REPLICA_SECRET,
    "kmsKey": True,
    "existingKeyArn": REPLICA_KEY,
}
KEY_EXPORT = "gatehouse-production-keys:ExportsOutputFnGetAttKey961B73FDArn5A860C43"


@pytest.fixture(scope="module")
def switched(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Assembly:
    return synthesize(tmp_path_factory.mktemp("switched"), site, SWITCHED)


@pytest.fixture(scope="module")
def recovery(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Assembly:
    return synthesize(tmp_path_factory.mktemp("recovery"), site, RECOVERY)


def table(assembly: Assembly) -> dict[str, Any]:
    return assembly.one("data", GLOBAL_TABLE)


def replicas(assembly: Assembly) -> dict[str, dict[str, Any]]:
    return {replica["Region"]: replica for replica in table(assembly)["Replicas"]}


def buckets(assembly: Assembly, stack: str = "data") -> dict[str, dict[str, Any]]:
    """The data stack's buckets by their logical id's stem (Uploads, Backups, AccessLogs)."""
    return {
        name[:-8]: resource["Properties"]
        for name, resource in assembly.resources(stack, "AWS::S3::Bucket").items()
    }


def signing_key(assembly: Assembly) -> dict[str, Any]:
    secrets: list[dict[str, Any]] = [
        resource["Properties"]
        for resource in assembly.resources("api", "AWS::SecretsManager::Secret").values()
        if resource["Properties"]["Name"] == "gatehouse/production/jwt-signing-key"
    ]
    [secret] = secrets
    return secret


def manifest(assembly: Assembly) -> dict[str, Any]:
    artifacts: dict[str, Any] = json.loads((assembly.path / "manifest.json").read_text())[
        "artifacts"
    ]
    return {
        name: artifact
        for name, artifact in artifacts.items()
        if artifact["type"] == "aws:cloudformation:stack"
    }


def key_statements(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every statement granting a kms: action, by the role (or policy) holding it."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name, statement in statements(template):
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        if any(action.startswith("kms:") for action in actions):
            found.setdefault(name, []).append(statement)
    return found


def role_of(template: dict[str, Any], function: str) -> str:
    role: str = template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    return role


def key_grants_of(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role = role_of(template, function)
    return [
        statement
        for name, found in key_statements(template).items()
        if name.startswith(role.rsplit("Role", 1)[0] + "Role")
        for statement in found
        # The queues' use of the key (through SQS): tests/test_cdk_kms.py.
        if "sqs." not in json.dumps(statement.get("Condition", {}))
    ]


class TestReplicas:
    def test_off_the_table_has_its_primary_replica_only(self, plain: Assembly) -> None:
        assert list(replicas(plain)) == [PRIMARY]
        assert "ReplicaRegions" not in signing_key(plain)

    def test_on_every_replica_has_pitr_deletion_protection_and_tags(
        self, switched: Assembly
    ) -> None:
        found = replicas(switched)
        assert set(found) == {PRIMARY, *TABLE_REPLICAS}
        for region, replica in found.items():
            assert replica["PointInTimeRecoverySpecification"] == {
                "PointInTimeRecoveryEnabled": True
            }, region
            assert replica["DeletionProtectionEnabled"] is True, region
            assert {"Project", "Environment", "Owner"} <= {t["Key"] for t in replica["Tags"]}
        # A global table has one stream setting, which every replica gets (its own stream).
        assert table(switched)["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
        [resource] = switched.resources("data", GLOBAL_TABLE).values()
        assert resource["DeletionPolicy"] == "Retain"

    def test_the_table_keeps_its_logical_id_with_or_without_replicas(
        self, plain: Assembly, switched: Assembly
    ) -> None:
        """Turning replicas on or off updates the global table; it is never replaced."""
        assert list(plain.resources("data", GLOBAL_TABLE)) == list(
            switched.resources("data", GLOBAL_TABLE)
        )

    def test_the_signing_key_is_replicated_to_every_replica_region(
        self, switched: Assembly
    ) -> None:
        regions = [replica["Region"] for replica in signing_key(switched)["ReplicaRegions"]]
        assert regions == [*TABLE_REPLICAS, *SECRET_ONLY]
        # Rotation stays in the primary region: one schedule, on the primary secret.
        assert len(switched.resources("api", "AWS::SecretsManager::RotationSchedule")) == 1

    def test_the_app_reads_the_primary_table_and_its_stream(self, switched: Assembly) -> None:
        function = switched.template("api")["Resources"][runtime.STREAM_HANDLER.function]
        assert "StreamArn" in json.dumps(function["Properties"]["Environment"])

    def test_config_refuses_the_primary_region_as_a_replica(self) -> None:
        app = cdk.App(context={"replicaRegions": "eu-west-2"})
        with pytest.raises(ConfigError, match="primary region"):
            DeployConfig.from_context(app.node)


class TestCapacity:
    def test_provisioned_scales_reads_and_writes_of_the_table_and_index_at_70_percent(
        self, switched: Assembly
    ) -> None:
        scaling = {
            "MinCapacity": 2,
            "MaxCapacity": 20,
            "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 70},
        }
        properties = table(switched)
        assert properties["BillingMode"] == "PROVISIONED"
        assert properties["WriteProvisionedThroughputSettings"] == {
            "WriteCapacityAutoScalingSettings": scaling
        }
        [index] = properties["GlobalSecondaryIndexes"]
        assert index["WriteProvisionedThroughputSettings"] == {
            "WriteCapacityAutoScalingSettings": scaling
        }
        for region, replica in replicas(switched).items():
            assert replica["ReadProvisionedThroughputSettings"] == {
                "ReadCapacityAutoScalingSettings": scaling
            }, region
            assert replica["GlobalSecondaryIndexes"] == [
                {
                    "IndexName": INDEXES[0].name,
                    "ReadProvisionedThroughputSettings": {
                        "ReadCapacityAutoScalingSettings": scaling
                    },
                }
            ], region

    def test_on_demand_has_no_capacity(self, plain: Assembly) -> None:
        properties = table(plain)
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert "ReadProvisionedThroughputSettings" not in replicas(plain)[PRIMARY]

    def test_config_refuses_a_minimum_above_the_maximum(self) -> None:
        app = cdk.App(context={"dynamoMinCapacity": 30, "dynamoMaxCapacity": 20})
        with pytest.raises(ConfigError, match="dynamoMinCapacity"):
            DeployConfig.from_context(app.node)


def rules(bucket: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}


class TestUploadsStorage:
    def test_off_uploads_are_not_versioned(self, plain: Assembly) -> None:
        uploads = buckets(plain)["Uploads"]
        assert "VersioningConfiguration" not in uploads
        assert "noncurrent-versions" not in rules(uploads)

    def test_on_old_versions_expire_and_bare_delete_markers_go(self, switched: Assembly) -> None:
        uploads = buckets(switched)["Uploads"]
        assert uploads["VersioningConfiguration"] == {"Status": "Enabled"}
        rule = rules(uploads)["noncurrent-versions"]
        assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": NONCURRENT_UPLOAD_DAYS}
        assert rule["ExpiredObjectDeleteMarker"] is True
        assert "Prefix" not in rule  # every object, the temporary prefix too

    @pytest.mark.parametrize("fixture", ["plain", "switched"])
    def test_users_files_above_128_kb_move_to_intelligent_tiering(
        self, fixture: str, request: pytest.FixtureRequest
    ) -> None:
        assembly: Assembly = request.getfixturevalue(fixture)
        rule = rules(buckets(assembly)["Uploads"])["intelligent-tiering"]
        assert rule["Prefix"] == UPLOAD_PREFIX
        assert rule["ObjectSizeGreaterThan"] == str(128 * 1024)  # a string in the schema
        assert rule["Transitions"] == [
            {"StorageClass": "INTELLIGENT_TIERING", "TransitionInDays": 0}
        ]
        # The temporary files keep expiring after a day.
        assert rules(buckets(assembly)["Uploads"])["temporary-files"]["ExpirationInDays"] == 1


class TestKey:
    def test_off_there_is_no_key_and_nothing_names_one(self, plain: Assembly) -> None:
        for stack in plain.stacks():
            template = json.loads((plain.path / stack).read_text())
            types = {resource["Type"] for resource in template["Resources"].values()}
            assert not types & {"AWS::KMS::Key", "AWS::KMS::ReplicaKey"}, stack
        assert "gatehouse-production-keys" not in manifest(plain)
        for name, bucket in buckets(plain).items():
            [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}, name
        assert "KMSMasterKeyId" not in json.dumps(table(plain))
        assert "KmsKeyId" not in signing_key(plain)

    def test_one_multi_region_key_with_rotation_kept_on_deletion(self, switched: Assembly) -> None:
        [(name, resource)] = switched.resources("keys", "AWS::KMS::Key").items()
        key = resource["Properties"]
        assert key["EnableKeyRotation"] is True
        assert key["MultiRegion"] is True
        assert resource["DeletionPolicy"] == "Retain"
        assert switched.one("keys", "AWS::KMS::Alias")["AliasName"] == "alias/gatehouse-production"
        # Nothing else in the account gets a key: only this one.
        keys = [
            stack
            for stack in switched.stacks()
            if '"AWS::KMS::Key"' in (switched.path / stack).read_text()
        ]
        assert keys == ["gatehouse-production-keys.template.json"]
        assert name.startswith("Key")

    def test_the_key_policy_trusts_the_account_and_services_only_with_conditions(
        self, switched: Assembly
    ) -> None:
        policy = switched.one("keys", "AWS::KMS::Key")["KeyPolicy"]
        root = {
            "AWS": {
                "Fn::Join": [
                    "",
                    [
                        "arn:",
                        {"Ref": "AWS::Partition"},
                        ":iam::",
                        {"Ref": "AWS::AccountId"},
                        ":root",
                    ],
                ]
            }
        }
        for statement in policy["Statement"]:
            if statement.get("Sid") in ("CloudWatchLogs", "EventBridgeToQueues"):
                continue  # the services' statements (encryption.py): tests/test_cdk_kms.py
            assert statement["Principal"] == root, statement
            if statement["Action"] != "kms:*":
                assert "kms:ViaService" in statement["Condition"]["StringEquals"], statement

    def test_a_replica_of_the_key_in_every_replica_region_before_the_data_stack(
        self, switched: Assembly
    ) -> None:
        stacks = manifest(switched)
        for region in (*TABLE_REPLICAS, *SECRET_ONLY):
            name = f"gatehouse-production-keys-{region}"
            assert stacks[name]["environment"].endswith(f"/{region}")
            assert "gatehouse-production-keys" in stacks[name]["dependencies"]
            assert name in stacks["gatehouse-production-data"]["dependencies"]
            [replica] = switched.resources(f"keys-{region}", "AWS::KMS::ReplicaKey").values()
            assert replica["DeletionPolicy"] == "Retain"
            assert "PrimaryKeyArn" in replica["Properties"]
        assert stacks["gatehouse-production-keys"]["environment"].endswith(f"/{PRIMARY}")

    def test_each_replica_lets_its_regions_logs_and_rules_use_it_for_a_recovery_deploy_too(
        self, switched: Assembly
    ) -> None:
        for region in (*TABLE_REPLICAS, *SECRET_ONLY):
            [replica] = switched.resources(f"keys-{region}", "AWS::KMS::ReplicaKey").values()
            by_sid = {
                statement.get("Sid"): statement
                for statement in replica["Properties"]["KeyPolicy"]["Statement"]
            }
            logs = by_sid["CloudWatchLogs"]
            assert logs["Principal"] == {"Service": f"logs.{region}.amazonaws.com"}
            names = json.dumps(logs["Condition"])
            for environment in ("production", RECOVERY["environment"]):
                assert f"/gatehouse/{environment}/*" in names
            rules = json.dumps(by_sid["EventBridgeToQueues"]["Condition"])
            assert f"gatehouse-{RECOVERY['environment']}-notify" in rules

    def test_the_table_and_each_replica_are_encrypted_under_the_key_in_their_region(
        self, switched: Assembly
    ) -> None:
        properties = table(switched)
        assert properties["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS"}
        found = replicas(switched)
        assert found[PRIMARY]["SSESpecification"] == {
            "KMSMasterKeyId": {"Fn::ImportValue": KEY_EXPORT}
        }
        for region in TABLE_REPLICAS:
            key = json.dumps(found[region]["SSESpecification"]["KMSMasterKeyId"])
            assert f":kms:{region}:" in key, region
            assert "ExportsOutputRefKey" in key, region

    def test_the_data_buckets_use_the_key_with_a_bucket_key_and_access_logs_stay_sse_s3(
        self, switched: Assembly
    ) -> None:
        found = buckets(switched)
        for name in ("Uploads", "Backups"):
            [rule] = found[name]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            assert rule == {
                "BucketKeyEnabled": True,
                "ServerSideEncryptionByDefault": {
                    "KMSMasterKeyID": {"Fn::ImportValue": KEY_EXPORT},
                    "SSEAlgorithm": "aws:kms",
                },
            }, name
        [rule] = found["AccessLogs"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}

    def test_the_signing_key_and_its_replicas_are_encrypted_under_the_key(
        self, switched: Assembly
    ) -> None:
        secret = signing_key(switched)
        assert secret["KmsKeyId"] == {"Fn::ImportValue": KEY_EXPORT}
        for replica in secret["ReplicaRegions"]:
            key = json.dumps(replica["KmsKeyId"])
            assert f":kms:{replica['Region']}:" in key, replica

    def test_each_role_may_use_the_key_only_as_its_calls_need(self, switched: Assembly) -> None:
        template = switched.template("api")
        for function in KEYLESS:
            assert key_grants_of(template, function) == [], function
        for function, (services, write) in KEY_USES.items():
            grants = key_grants_of(template, function)
            [statement] = [
                grant for grant in grants if grant["Resource"] == {"Fn::ImportValue": KEY_EXPORT}
            ]
            actions = set(statement["Action"])
            assert {"kms:Decrypt", "kms:DescribeKey"} <= actions, function
            assert ("kms:GenerateDataKey" in actions) is write, function
            assert not any("*" in action for action in actions), function
            via = statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
            if services:
                named = sorted(value["Fn::Join"][1][0].split(".")[0] for value in via)
                assert named == sorted(services), function
            else:
                assert via is None, function
        # The API signs browsers' upload POSTs: S3 needs it to create data keys for them.
        assert KEY_USES[runtime.API_FUNCTION] == (("dynamodb", "s3", "secretsmanager"), True)
        assert KEY_USES[runtime.BACKUP_HANDLER.function] == (("dynamodb", "s3"), True)

    def test_the_rotation_writes_the_secrets_replicas_under_their_regions_keys(
        self, switched: Assembly
    ) -> None:
        """Putting a new version re-encrypts every replica of the secret in its region."""
        template = switched.template("api")
        [replicated] = [
            grant
            for grant in key_grants_of(template, runtime.ROTATION_FUNCTION)
            if isinstance(grant["Resource"], list)
        ]
        regions = sorted((*TABLE_REPLICAS, *SECRET_ONLY))
        for region, arn in zip(regions, replicated["Resource"], strict=True):
            assert f":kms:{region}:" in json.dumps(arn)
        assert [
            value["Fn::Join"][1][0]
            for value in replicated["Condition"]["StringEquals"]["kms:ViaService"]
        ] == [f"secretsmanager.{region}." for region in regions]
        assert "kms:GenerateDataKey" in replicated["Action"]
        # Nobody else touches the replicas' keys.
        for function in KEY_USES:
            if function != runtime.ROTATION_FUNCTION:
                for grant in key_grants_of(template, function):
                    assert grant["Resource"] == {"Fn::ImportValue": KEY_EXPORT}, function

    def test_data_exposes_the_key_for_the_other_units(self) -> None:
        from gatehouse_infra.stacks import DataStack, KeysStack

        context = json.loads((ROOT / "cdk" / "cdk.json").read_text())["context"]
        app = cdk.App(context={**context, "kmsKey": True})
        config = DeployConfig.from_context(app.node)
        keys = KeysStack(app, "keys", config=config, env=cdk.Environment(region=PRIMARY))
        data = DataStack(
            app, "data", config=config, key=keys.keys.key, env=cdk.Environment(region=PRIMARY)
        )
        assert data.data.key is keys.keys.key


class TestSwitchedAssembly:
    def test_every_taggable_resource_is_tagged_the_keys_too(self, switched: Assembly) -> None:
        test_cdk.TestSynthesis().test_every_taggable_resource_is_tagged(switched)
        keys = [
            resource["Properties"]["Tags"]
            for stack in ("keys", *(f"keys-{region}" for region in (*TABLE_REPLICAS, *SECRET_ONLY)))
            for kind in ("AWS::KMS::Key", "AWS::KMS::ReplicaKey")
            for resource in switched.resources(stack, kind).values()
        ]
        assert len(keys) == 4
        for tags in keys:
            assert {"Project", "Environment", "Owner"} <= {tag["Key"] for tag in tags}

    def test_synthesis_leaves_the_process_environment_unchanged(self, switched: Assembly) -> None:
        assert switched.environ_changes == []


class TestCfnLint:
    def test_switched_is_cfn_lint_clean(self, switched: Assembly) -> None:
        assert cfn_lint_errors(switched) == []

    def test_recovery_is_cfn_lint_clean(self, recovery: Assembly) -> None:
        assert cfn_lint_errors(recovery) == []


class TestRegionOutage:
    """The runbook's deploy in a replica region: the replica table, the replicated signing key
    and the key's replica, none of them created."""

    def test_the_stacks_are_the_dr_environments_in_the_replica_region(
        self, recovery: Assembly
    ) -> None:
        stacks = manifest(recovery)
        for name in ("data", "api", "site", "monitoring"):
            assert stacks[f"gatehouse-production-dr-{name}"]["environment"].endswith(
                f"/{DR_REGION}"
            )
        assert not any("keys" in name for name in stacks)

    def test_nothing_of_the_primary_is_created_again(self, recovery: Assembly) -> None:
        assert recovery.resources("dr-data", GLOBAL_TABLE) == {}
        names = [
            resource["Properties"]["Name"]
            for resource in recovery.resources("dr-api", "AWS::SecretsManager::Secret").values()
        ]
        assert names == ["gatehouse/production-dr/edge-key"]
        assert recovery.resources("dr-api", "AWS::SecretsManager::RotationSchedule") == {}
        assert "SecretsManagerInvokesRotation" not in recovery.template("dr-api")["Resources"]

    def test_the_functions_use_the_replica_table_its_stream_and_the_replicated_key(
        self, recovery: Assembly
    ) -> None:
        template = recovery.template("dr-api")
        variables = template["Resources"][runtime.API_FUNCTION]["Properties"]["Environment"][
            "Variables"
        ]
        assert variables["TABLE_NAME"] == "gatehouse-production"
        assert variables["TABLE_STREAM_ARN"] == REPLICA_STREAM
        assert variables["JWT_SECRET_ID"] == REPLICA_SECRET
        reads = [
            statement
            for name, statement in statements(template)
            if statement["Action"] == "secretsmanager:GetSecretValue"
        ]
        assert reads
        assert all(statement["Resource"] == REPLICA_SECRET for statement in reads)
        for function in (runtime.API_FUNCTION, runtime.AUTHORIZER_FUNCTION):
            [grant] = key_grants_of(template, function)
            assert grant["Resource"] == REPLICA_KEY
            assert f"dynamodb.{DR_REGION}." in json.dumps(grant["Condition"])

    def test_new_buckets_are_encrypted_under_the_keys_replica(self, recovery: Assembly) -> None:
        found = buckets(recovery, "dr-data")
        for name in ("Uploads", "Backups"):
            [rule] = found[name]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == REPLICA_KEY
        assert found["Uploads"]["BucketName"] == {
            "Fn::Join": ["", ["gatehouse-production-dr-uploads-", {"Ref": "AWS::AccountId"}]]
        }

    @pytest.mark.parametrize(
        ("context", "message"),
        [
            (
                {"existingSigningKeyArn": REPLICA_SECRET},
                "existingSigningKeyArn is not in primaryRegion",
            ),
            (
                {"primaryRegion": DR_REGION, "existingKeyArn": REPLICA_KEY},
                "existingKeyArn needs kmsKey",
            ),
            ({"existingSigningKeyArn": "gatehouse/production/jwt-signing-key"}, "not valid"),
        ],
    )
    def test_config_checks_the_replicas_it_is_given(
        self, context: dict[str, Any], message: str
    ) -> None:
        app = cdk.App(context=context)
        with pytest.raises(ConfigError, match=message):
            DeployConfig.from_context(app.node)
