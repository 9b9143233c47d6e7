"""The CDK app: synthesized offline (with and without a domain), then checked resource by resource.

Each configuration is synthesized once, in a subprocess as ``cdk synth`` would run it; cdk-nag's
AwsSolutions pack runs during synthesis and fails it on any unacknowledged finding.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from inspect import signature as inspect_signature
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from app import BOTO_CONFIG
from chalicelib.eventroutes import ROUTES
from chalicelib.objectkeys import UPLOAD_PREFIX
from chalicelib.publisher import EventBridgePublisher
from chalicelib.settings import EDGE_HEADER
from chalicelib.table import INDEXES, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE, create_table_request
from tests.conftest import ROOT
from tools.chalice_prod import API_POLICY, AUTHORIZER_POLICY, handler_policy, render
from tools.lambda_package import ELF_MACHINES, find_layers, find_package, inspect

sys.path.insert(0, str(ROOT / "cdk"))
from gatehouse_infra import keys, network, runtime
from gatehouse_infra.config import ConfigError, DeployConfig
from gatehouse_infra.data import UPLOAD_TEMP_PREFIX
from gatehouse_infra.mail import Mail
from gatehouse_infra.site import (
    MACHINE_CLIENTS_ELSEWHERE,
    SITE_ORIGIN,
    SITE_ORIGIN_WITHOUT_KEYS,
    SPA_ROUTING,
)

CFN_LINT = ROOT / ".venv-cfnlint" / "bin" / "cfn-lint"
SAM_PYTHON = ROOT / ".venv-cfnlint" / "bin" / "python"  # aws-sam-translator lives there
# Applies the SAM transform CloudFormation runs at deploy time; prints what the event sources and
# the schedules become.
SAM_TRANSLATE = """
import json, sys
from samtranslator.translator.transform import transform

class NoManagedPolicies:
    def load(self):
        return {}

template = transform(json.load(open(sys.argv[1])), {}, NoManagedPolicies())
print(json.dumps({
    name: resource for name, resource in template["Resources"].items()
    if resource["Type"] in ("AWS::Events::Rule", "AWS::Lambda::EventSourceMapping")
}))
"""

# SAM_TRANSLATE, printing the REST API's stages and deployments instead.
SAM_TRANSLATE_STAGES = SAM_TRANSLATE.replace(
    '("AWS::Events::Rule", "AWS::Lambda::EventSourceMapping")',
    '("AWS::ApiGateway::Stage", "AWS::ApiGateway::Deployment")',
)


def sam_transform(assembly: Assembly, script: str = SAM_TRANSLATE) -> dict[str, Any]:
    """What CloudFormation's SAM transform makes of the API stack, as ``script`` prints it (the
    rules and event source mappings; with SAM_TRANSLATE_STAGES, the REST API's stages and
    deployments)."""
    result = subprocess.run(
        [
            str(SAM_PYTHON),
            "-c",
            script,
            str(assembly.path / "gatehouse-production-api.template.json"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env={**os.environ, "AWS_DEFAULT_REGION": "eu-west-2"},
    )
    made: dict[str, Any] = json.loads(result.stdout)
    return made


EDGE_KEY_REFERENCE = "{{resolve:secretsmanager:gatehouse/production/edge-key:SecretString:::}}"
SITE_KEY_REFERENCE = "{{resolve:secretsmanager:gatehouse/production/site-api-key:SecretString:::}}"
ANNOUNCER = 'style="position: absolute; width: 1px"'  # SvelteKit's route announcer, in its JS
BOOT_SCRIPT = "__sveltekit_boot = { base: '' };"
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
# Every resource type in the templates that accepts tags.
TAGGABLE = frozenset(
    {
        "AWS::ApiGateway::DomainName",
        "AWS::Budgets::Budget",
        "AWS::CertificateManager::Certificate",
        "AWS::CloudFront::Distribution",
        "AWS::CloudFront::Function",
        "AWS::CloudWatch::Alarm",
        "AWS::ApiGatewayV2::Api",
        "AWS::ApiGatewayV2::Stage",
        "AWS::DynamoDB::Table",
        "AWS::Events::EventBus",
        "AWS::Events::Rule",
        "AWS::IAM::Role",
        "AWS::Lambda::Function",
        "AWS::Logs::LogGroup",
        "AWS::S3::Bucket",
        "AWS::SNS::Topic",
        "AWS::SQS::Queue",
        "AWS::SecretsManager::Secret",
        "AWS::Serverless::Api",
        "AWS::Serverless::Function",
        "AWS::WAFv2::WebACL",
    }
)
# CDK creates its cross-region reference helpers while resolving references, after tagging.
UNTAGGABLE_HELPERS = ("CustomCrossRegionExport",)
API_GRANTS = {
    *runtime.TABLE_ACTIONS,
    "secretsmanager:GetSecretValue",
    "s3:PutObject",
    "s3:GetObject",
    "s3:DeleteObject",
    "s3:ListBucket",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
}
CONSUME = set(runtime.CONSUME_ACTIONS)
# What each event handler's code calls (app.py and the chalicelib classes it runs), by function.
EVENT_GRANTS: dict[str, set[str]] = {
    "OnTableChange": {
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:ListStreams",
        "events:PutEvents",
        "sqs:SendMessage",
    },
    "NotifyWorker": CONSUME
    | {
        "dynamodb:Query",
        "dynamodb:BatchWriteItem",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "execute-api:ManageConnections",
    },
    "MailWorker": CONSUME | {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"},
    "PurgeWorker": CONSUME
    | {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:BatchWriteItem",
        "dynamodb:DeleteItem",
        "s3:DeleteObject",
        "s3:ListBucket",
    },
    "WebsocketConnect": {
        "dynamodb:DeleteItem",
        "dynamodb:ConditionCheckItem",
        "dynamodb:PutItem",
    },
    "WebsocketDisconnect": {"dynamodb:DeleteItem"},
    "WebsocketMessage": set(),
    "NightlyBackup": {
        "dynamodb:DescribeTable",
        "dynamodb:ExportTableToPointInTime",
        "dynamodb:ListExports",
        "dynamodb:DescribeExport",
        "s3:AbortMultipartUpload",
        "s3:PutObject",
        "s3:PutObjectAcl",
    },
    "UploadSweep": {
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:DeleteItem",
        "s3:DeleteObject",
    },
}
# The partition keys each handler's item actions on the table may name (dynamodb:LeadingKeys).
LEADING_KEYS: dict[tuple[str, str], list[str]] = {
    ("NotifyWorker", "dynamodb:Query"): ["USER#*"],
    ("NotifyWorker", "dynamodb:BatchWriteItem"): ["USER#*", "CONN#*"],
    ("NotifyWorker", "dynamodb:PutItem"): ["DONE#notify#*"],
    ("NotifyWorker", "dynamodb:DeleteItem"): ["DONE#notify#*"],
    ("MailWorker", "dynamodb:GetItem"): ["USER#*"],
    ("MailWorker", "dynamodb:PutItem"): ["DONE#mail#*"],
    ("MailWorker", "dynamodb:DeleteItem"): ["DONE#mail#*"],
    ("PurgeWorker", "dynamodb:GetItem"): ["USER#*"],
    ("PurgeWorker", "dynamodb:Query"): ["USER#*"],
    ("PurgeWorker", "dynamodb:BatchWriteItem"): ["USER#*"],
    ("PurgeWorker", "dynamodb:DeleteItem"): ["USER#*", "NAME#*", "EMAIL#*"],
    ("WebsocketConnect", "dynamodb:DeleteItem"): ["USER#*"],
    ("WebsocketConnect", "dynamodb:ConditionCheckItem"): ["USER#*"],
    ("WebsocketConnect", "dynamodb:PutItem"): ["USER#*", "CONN#*"],
    ("WebsocketDisconnect", "dynamodb:DeleteItem"): ["USER#*", "CONN#*"],
    ("UploadSweep", "dynamodb:GetItem"): ["USER#*"],
    ("UploadSweep", "dynamodb:DeleteItem"): ["USER#*"],
}
DOMAIN = {
    "domainName": "example.com",
    "hostedZoneId": "Z0123456789ABCDEFGHIJ",
    "hostedZoneName": "example.com",
    "customApiDomain": True,
    "enableWaf": True,
    "dynamoBilling": "provisioned",
    "alarmEmail": "ops@example.com",
    "apiKeys": True,
}
# Every deploy switch on at once (cdk/README.md, "Deploy switches"), over a domain with WAF, the
# API's own domain, API keys and mail: the assembly the switches must synthesize together.
EVERYTHING = {
    **DOMAIN,
    "vpc": True,
    "replicaRegions": "eu-west-1",
    "secretReplicaRegions": "eu-central-1",
    "kmsKey": True,
    "wafRateLimit": 1000,
    "wafGeoBlock": "KP",
    "wafAllowList": "192.0.2.0/24,2001:db8::/32",
    "wafBotControl": True,
    "reservedConcurrency": 5,
    "dynamoMinCapacity": 2,
    "dynamoMaxCapacity": 20,
    "apiAccessLogs": True,
    "cloudFrontLogs": True,
    "uploadsVersioning": True,
    "tracing": True,
}


# Runs cdk/app.py as ``cdk synth`` would, and records which variables of os.environ differ
# afterwards: synthesis must not leave values behind in the process it runs in.
SYNTH_DRIVER = """
import json, os, runpy, sys
app, report = sys.argv[1:]
before = dict(os.environ)
sys.argv = [app]
runpy.run_path(app, run_name="__main__")
after = dict(os.environ)
changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
with open(report, "w") as file:
    json.dump(changed, file)
"""


@dataclass
class Assembly:
    path: Path
    output: str
    environ_changes: list[str]

    def template(self, stack: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.path / f"gatehouse-production-{stack}.template.json").read_text()
        )
        return data

    def resources(self, stack: str, kind: str) -> dict[str, dict[str, Any]]:
        return {
            name: resource
            for name, resource in self.template(stack)["Resources"].items()
            if resource["Type"] == kind
        }

    def one(self, stack: str, kind: str) -> dict[str, Any]:
        found = list(self.resources(stack, kind).values())
        assert len(found) == 1, f"{len(found)} {kind} in {stack}"
        properties: dict[str, Any] = found[0].get("Properties", {})
        return properties

    def stacks(self) -> list[str]:
        return sorted(path.name for path in self.path.glob("*.template.json"))


def synthesize(out: Path, site: Path, overrides: dict[str, Any]) -> Assembly:
    context = json.loads((ROOT / "cdk" / "cdk.json").read_text())["context"]
    context.update(overrides, siteDir=str(site))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "CDK_")) or key == "AWS_DEFAULT_REGION"
    }
    env.update(
        CDK_OUTDIR=str(out / "cdk.out"),
        CDK_CONTEXT_JSON=json.dumps(context),
        AWS_DEFAULT_REGION="eu-west-2",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
    )
    report = out / "environ-changes.json"
    result = subprocess.run(
        [sys.executable, "-c", SYNTH_DRIVER, str(ROOT / "cdk" / "app.py"), str(report)],
        cwd=out,  # chalice.out/ is written here
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return Assembly(
        path=out / "cdk.out", output=output, environ_changes=json.loads(report.read_text())
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built site in miniature: the two HTML shells with SvelteKit's inline boot script."""
    root = tmp_path_factory.mktemp("site")
    for page in ("index.html", "200.html"):
        (root / page).write_text(f"<!doctype html><html><body><script>{BOOT_SCRIPT}</script>")
    (root / "_app" / "immutable").mkdir(parents=True)
    (root / "_app" / "immutable" / "start.js").write_text(f"export const a = '<div {ANNOUNCER}>';")
    return root


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Assembly:
    return synthesize(tmp_path_factory.mktemp("plain"), site, {})


@pytest.fixture(scope="module")
def domain(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Assembly:
    return synthesize(tmp_path_factory.mktemp("domain"), site, DOMAIN)


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Assembly:
    return synthesize(tmp_path_factory.mktemp("everything"), site, EVERYTHING)


@pytest.fixture(params=["plain", "domain", "everything"])
def assembly(request: pytest.FixtureRequest) -> Assembly:
    found: Assembly = request.getfixturevalue(request.param)
    return found


def cfn_lint_errors(assembly: Assembly) -> list[str]:
    """cfn-lint's errors over every template of the assembly (SAM templates translated first)."""
    templates = [str(assembly.path / name) for name in assembly.stacks()]
    result = subprocess.run(
        [str(CFN_LINT), "--format", "parseable", *templates],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    errors = [line for line in result.stdout.splitlines() if ":E" in line]
    # Exit status bit 2 means errors; 4 is warnings.
    if result.returncode & 2 and not errors:
        errors.append(result.stdout + result.stderr)
    return errors


def statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in template["Resources"].items():
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::Role"):
            properties = resource["Properties"]
            documents = [properties.get("PolicyDocument")] + [
                policy["PolicyDocument"] for policy in properties.get("Policies", [])
            ]
            for document in filter(None, documents):
                for statement in document["Statement"]:
                    yield name, statement


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class TestSynthesis:
    def test_every_stack_synthesizes_offline_and_passes_cdk_nag(self, plain: Assembly) -> None:
        assert plain.stacks() == [
            f"gatehouse-production-{name}.template.json"
            for name in ("api", "data", "edge-monitoring", "monitoring", "site")
        ]

    def test_synthesis_leaves_the_process_environment_unchanged(self, assembly: Assembly) -> None:
        """Packaging-time values reach app.py through the stage's variables, not os.environ."""
        assert assembly.environ_changes == []

    def test_every_lambda_dependency_was_installed(self, assembly: Assembly) -> None:
        assert "Could not install dependencies" not in assembly.output

    def test_a_domain_adds_the_edge_stack_in_the_certificate_region(self, domain: Assembly) -> None:
        manifest = json.loads((domain.path / "manifest.json").read_text())
        environments = {
            name: artifact["environment"]
            for name, artifact in manifest["artifacts"].items()
            if artifact["type"] == "aws:cloudformation:stack"
        }
        assert environments["gatehouse-production-edge"].endswith("/us-east-1")
        assert environments["gatehouse-production-edge-monitoring"].endswith("/us-east-1")
        assert environments["gatehouse-production-api"].endswith("/eu-west-2")

    def test_cfn_lint_finds_no_errors(self, assembly: Assembly) -> None:
        assert cfn_lint_errors(assembly) == []

    def test_cdks_own_template_validation_finds_nothing(self, assembly: Assembly) -> None:
        """synthesize() fails on any unacknowledged cdk-nag finding; CDK's template validation
        only reports (its warnings do not fail synthesis)."""
        report = json.loads((assembly.path / "validation-report.json").read_text())
        violations = [v for plugin in report["pluginReports"] for v in plugin["violations"]]
        assert violations == []

    def test_the_lambda_zip_holds_our_code_and_arm64_wheels_only(self, plain: Assembly) -> None:
        """Our code in the functions' zip, requirements.txt's wheels in Chalice's managed layer
        (cdk/README.md, "Lambda layers"), built for arm64."""
        stack = "gatehouse-production-api"
        path, architecture = find_package(plain.path, stack, "APIHandler")
        report = inspect(path, architecture)
        print(report.summary())
        assert report.problems == []
        assert architecture == "arm64"
        assert report.shared_objects == {}  # no wheel: they are in the layer
        assert report.compiled_modules > 50  # every module, with its bytecode (problems: none)
        assert report.compressed_bytes < 1_000_000
        (layer,) = find_layers(plain.path, stack, "APIHandler")
        assert layer.architectures == ["arm64"]
        layer_report = inspect(layer.path, architecture, required=(), root=layer.root)
        print(layer_report.summary())
        assert layer_report.problems == []
        assert layer_report.shared_objects
        assert layer_report.compiled_modules > 100
        assert set(layer_report.shared_objects.values()) == {ELF_MACHINES["arm64"]}
        assert layer_report.compressed_bytes < 10_000_000
        # Every function runs the same code with the same layer.
        functions = plain.resources("api", "AWS::Serverless::Function")
        assert {json.dumps(f["Properties"]["CodeUri"]) for f in functions.values()} == {
            json.dumps(plain.template("api")["Resources"]["APIHandler"]["Properties"]["CodeUri"])
        }
        assert {json.dumps(f["Properties"]["Layers"]) for f in functions.values()} == {
            json.dumps([{"Ref": "ManagedLayer"}])
        }

    def test_every_taggable_resource_is_tagged(self, assembly: Assembly) -> None:
        checked = 0
        for stack in assembly.stacks():
            template = json.loads((assembly.path / stack).read_text())
            for name, resource in template["Resources"].items():
                if resource["Type"] not in TAGGABLE or name.startswith(UNTAGGABLE_HELPERS):
                    continue
                properties = resource["Properties"]
                tags = properties.get("Tags", properties.get("ResourceTags", []))
                keys = set(tags) if isinstance(tags, dict) else {tag["Key"] for tag in tags}
                assert {"Project", "Environment", "Owner"} <= keys, f"{stack} {name}"
                checked += 1
        assert checked > 30


GLOBAL_TABLE = "AWS::DynamoDB::GlobalTable"


def autoscaled(minimum: int, maximum: int) -> dict[str, Any]:
    return {
        "MinCapacity": minimum,
        "MaxCapacity": maximum,
        "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 70},
    }


class TestData:
    def test_the_table_is_the_one_the_app_defines(self, assembly: Assembly) -> None:
        table = assembly.one("data", GLOBAL_TABLE)
        local = create_table_request("gatehouse-production")
        assert table["TableName"] == "gatehouse-production"
        assert table["KeySchema"] == local["KeySchema"]
        assert sorted(table["AttributeDefinitions"], key=str) == sorted(
            local["AttributeDefinitions"], key=str
        )
        [index] = table["GlobalSecondaryIndexes"]
        assert index["IndexName"] == INDEXES[0].name
        assert index["KeySchema"] == local["GlobalSecondaryIndexes"][0]["KeySchema"]
        assert index["Projection"] == {"ProjectionType": "ALL"}
        assert table["TimeToLiveSpecification"] == {
            "AttributeName": TTL_ATTRIBUTE,
            "Enabled": True,
        }
        assert {PARTITION_KEY, SORT_KEY} <= {
            a["AttributeName"] for a in table["AttributeDefinitions"]
        }

    def test_the_table_is_protected(self, assembly: Assembly) -> None:
        """A global table even without replicas: its one replica is the primary region's."""
        [resource] = assembly.resources("data", GLOBAL_TABLE).values()
        table = resource["Properties"]
        assert resource["DeletionPolicy"] == "Retain"
        # The primary region's, and those of replicaRegions (EVERYTHING).
        assert "eu-west-2" in [replica["Region"] for replica in table["Replicas"]]
        for replica in table["Replicas"]:
            recovery = replica["PointInTimeRecoverySpecification"]
            assert recovery["PointInTimeRecoveryEnabled"] is True
            assert replica["DeletionProtectionEnabled"] is True
            assert {"Project", "Environment", "Owner"} <= {tag["Key"] for tag in replica["Tags"]}
        assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
        assert table["SSESpecification"]["SSEEnabled"] is True
        assert assembly.resources("data", "AWS::DynamoDB::Table") == {}

    def test_billing_is_on_demand_unless_provisioned_is_asked_for(
        self, plain: Assembly, domain: Assembly
    ) -> None:
        """Provisioned: auto scaling between dynamoMinCapacity and dynamoMaxCapacity (1 and 10
        by default) at 70 %, on the table and its index, reads and writes."""
        on_demand = plain.one("data", GLOBAL_TABLE)
        assert on_demand["BillingMode"] == "PAY_PER_REQUEST"
        assert "WriteProvisionedThroughputSettings" not in on_demand
        provisioned = domain.one("data", GLOBAL_TABLE)
        assert provisioned["BillingMode"] == "PROVISIONED"
        scaling = autoscaled(1, 10)
        assert provisioned["WriteProvisionedThroughputSettings"] == {
            "WriteCapacityAutoScalingSettings": scaling
        }
        [index] = provisioned["GlobalSecondaryIndexes"]
        assert index["WriteProvisionedThroughputSettings"] == {
            "WriteCapacityAutoScalingSettings": scaling
        }
        [replica] = provisioned["Replicas"]
        assert replica["ReadProvisionedThroughputSettings"] == {
            "ReadCapacityAutoScalingSettings": scaling
        }
        assert replica["GlobalSecondaryIndexes"] == [
            {
                "IndexName": INDEXES[0].name,
                "ReadProvisionedThroughputSettings": {"ReadCapacityAutoScalingSettings": scaling},
            }
        ]

    def test_every_bucket_is_private_encrypted_and_tls_only(self, assembly: Assembly) -> None:
        for stack in ("data", "site"):
            buckets = assembly.resources(stack, "AWS::S3::Bucket")
            policies = assembly.resources(stack, "AWS::S3::BucketPolicy")
            for name, bucket in buckets.items():
                properties = bucket["Properties"]
                assert properties["PublicAccessBlockConfiguration"] == {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                }, name
                assert properties["BucketEncryption"], name
                tls_only = [
                    statement
                    for policy in policies.values()
                    if policy["Properties"]["Bucket"] == {"Ref": name}
                    for statement in policy["Properties"]["PolicyDocument"]["Statement"]
                    if statement["Effect"] == "Deny"
                    and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
                ]
                assert tls_only, f"{name} accepts plain HTTP"

    def test_uploads_expire_temporary_files_and_abandoned_multipart_uploads(
        self, plain: Assembly
    ) -> None:
        uploads = next(
            bucket["Properties"]
            for bucket in plain.resources("data", "AWS::S3::Bucket").values()
            if "BucketName" in bucket["Properties"]
        )
        rules = {rule["Id"]: rule for rule in uploads["LifecycleConfiguration"]["Rules"]}
        assert rules["temporary-files"]["Prefix"] == "uploads/temp/"
        assert rules["temporary-files"]["ExpirationInDays"] == 1
        assert rules["abandoned-multipart"]["AbortIncompleteMultipartUpload"] == {
            "DaysAfterInitiation": 1
        }
        assert "CorsConfiguration" not in uploads  # set by the Site stack, which knows the origin

    def test_backups_move_to_glacier_after_90_days(self, plain: Assembly) -> None:
        rules = [
            rule
            for bucket in plain.resources("data", "AWS::S3::Bucket").values()
            for rule in bucket["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
            if rule.get("Prefix") == "backups/"
        ]
        assert rules[0]["Transitions"] == [{"StorageClass": "GLACIER", "TransitionInDays": 90}]


class TestApi:
    def functions(self, assembly: Assembly) -> dict[str, dict[str, Any]]:
        return {
            name: resource["Properties"]
            for name, resource in assembly.resources("api", "AWS::Serverless::Function").items()
        }

    def test_functions_run_on_arm64_with_memory_for_scrypt(self, plain: Assembly) -> None:
        functions = self.functions(plain)
        assert set(functions) == {
            "APIHandler",
            "Bearer",
            "RotateSigningKey",
            *(handler.function for handler in runtime.EVENT_HANDLERS),
        }
        assert functions["RotateSigningKey"]["Architectures"] == ["arm64"]
        for name in ("APIHandler", "Bearer"):
            assert functions[name]["Architectures"] == ["arm64"]
            assert functions[name]["MemorySize"] == runtime.MEMORY_MB
            assert functions[name]["Timeout"] == runtime.TIMEOUT_SECONDS
            environment = functions[name]["Environment"]["Variables"]
            assert environment["TRUSTED_PROXY_HOPS"] == "2"
            assert environment["SITE_ORIGIN_HEADER"] == runtime.SITE_ORIGIN_HEADER
            assert environment["JWT_SECRET_ID"] == {"Ref": self.secret_name(plain)}
            assert set(environment) >= {"TABLE_NAME", "UPLOADS_BUCKET", "ALLOWED_ORIGINS"}
            assert environment["EDGE_SECRET"] == EDGE_KEY_REFERENCE

    def test_the_edge_key_is_generated_and_only_referenced(self, plain: Assembly) -> None:
        secrets = plain.resources("api", "AWS::SecretsManager::Secret")
        [edge] = [r["Properties"] for n, r in secrets.items() if n != self.secret_name(plain)]
        assert edge["Name"] == "gatehouse/production/edge-key"
        assert edge["GenerateSecretString"]["PasswordLength"] >= 32
        # Its value is never in a template, only CloudFormation's reference to it.
        for stack in ("api", "site"):
            text = json.dumps(plain.template(stack))
            assert text.count(EDGE_KEY_REFERENCE) >= 1

    def test_the_rotation_function_has_its_own_role(self, plain: Assembly) -> None:
        """chalice.cdk ignores per-function stage settings: the role is overridden, not lost."""
        functions = self.functions(plain)
        rotation = functions["RotateSigningKey"]
        [role] = [name for name in plain.resources("api", "AWS::IAM::Role") if "Rotation" in name]
        assert rotation["Role"] == {"Fn::GetAtt": [role, "Arn"]}
        assert functions["APIHandler"]["Role"] != rotation["Role"]
        assert (rotation["MemorySize"], rotation["Timeout"]) == (256, 30)
        [resource] = [
            r for n, r in plain.template("api")["Resources"].items() if n == "RotateSigningKey"
        ]
        assert any(name.startswith("RotationRoleDefaultPolicy") for name in resource["DependsOn"])

    def secret_name(self, assembly: Assembly) -> str:
        """The logical id of the signing key."""
        [name] = [
            n for n in assembly.resources("api", "AWS::SecretsManager::Secret") if "Signing" in n
        ]
        return name

    def test_logs_are_kept_seven_days_in_each_functions_own_group(self, plain: Assembly) -> None:
        groups = plain.resources("api", "AWS::Logs::LogGroup")
        assert {group["Properties"]["RetentionInDays"] for group in groups.values()} == {7}
        for properties in self.functions(plain).values():
            assert properties["LoggingConfig"]["LogGroup"]["Ref"] in groups

    def test_the_signing_key_is_generated_and_rotated_monthly(self, plain: Assembly) -> None:
        secret = plain.resources("api", "AWS::SecretsManager::Secret")[self.secret_name(plain)][
            "Properties"
        ]
        generator = secret["GenerateSecretString"]
        assert generator["PasswordLength"] >= 43  # 62 symbols: 64 characters hold 381 bits
        assert generator["ExcludePunctuation"] is True
        assert secret["Name"] == "gatehouse/production/jwt-signing-key"
        schedule = plain.one("api", "AWS::SecretsManager::RotationSchedule")
        assert schedule["RotationLambdaARN"] == {"Fn::GetAtt": ["RotateSigningKey", "Arn"]}
        assert schedule["RotationRules"] == {"ScheduleExpression": "rate(30 days)"}
        permissions = plain.resources("api", "AWS::Lambda::Permission").values()
        assert any(
            p["Properties"]["Principal"] == "secretsmanager.amazonaws.com"
            and p["Properties"]["FunctionName"] == {"Ref": "RotateSigningKey"}
            for p in permissions
        )

    def test_roles_grant_only_named_actions_on_named_resources(self, assembly: Assembly) -> None:
        template = assembly.template("api")
        grants: dict[str, set[str]] = {}
        for name, statement in statements(template):
            if statement["Effect"] != "Allow" or "Service" in json.dumps(
                statement.get("Principal", {})
            ):
                continue
            actions = as_list(statement["Action"])
            assert all("*" not in action for action in actions), (name, actions)
            # IAM authorizes these on "*" only (runtime's and network's UNSCOPED_ACTIONS).
            if not set(actions) <= {*runtime.UNSCOPED_ACTIONS, *network.UNSCOPED_ACTIONS}:
                assert "*" not in as_list(statement["Resource"]), (name, statement)
            grants.setdefault(name, set()).update(actions)
        api_policy = next(name for name in grants if name.startswith("ApiRoleDefaultPolicy"))
        mail = {"ses:SendEmail"} if assembly.resources("api", "AWS::SES::EmailIdentity") else set()
        # With kmsKey, through the services it calls only (tests/test_cdk_data.py).
        encrypted = "KmsKeyId" in json.dumps(assembly.template("api"))
        key = set(keys.WRITE_ACTIONS) if encrypted else set()
        assert grants[api_policy] == API_GRANTS | mail | key
        rotation = next(name for name in grants if name.startswith("RotationRoleDefaultPolicy"))
        assert "secretsmanager:PutSecretValue" in grants[rotation]
        assert not any(action.startswith(("dynamodb:", "s3:")) for action in grants[rotation])

    def test_chalice_deploy_policy_grants_what_the_cdk_role_grants(self) -> None:
        """``chalice deploy --stage prod`` uses .chalice/policy-prod.json instead of CDK's role."""
        document = json.loads((ROOT / ".chalice" / "policy-prod.json").read_text())
        actions = {action for s in document["Statement"] for action in as_list(s["Action"])}
        # Chalice's functions log to /aws/lambda/..., which Lambda creates on first use.
        assert actions - {"logs:CreateLogGroup"} == API_GRANTS
        resources = [r for s in document["Statement"] for r in as_list(s["Resource"])]
        assert "*" not in resources
        assert any(r.endswith(":table/gatehouse-production") for r in resources)
        assert any(":secret:gatehouse/production/jwt-signing-key-" in r for r in resources)

    def test_chalice_rotation_policy_grants_what_the_cdk_rotation_role_grants(
        self, plain: Assembly
    ) -> None:
        document = json.loads((ROOT / ".chalice" / "policy-prod-rotation.json").read_text())
        actions = {action for s in document["Statement"] for action in as_list(s["Action"])}
        granted = {
            action
            for name, statement in statements(plain.template("api"))
            if name.startswith("RotationRoleDefaultPolicy")
            for action in as_list(statement["Action"])
        }
        assert actions - {"logs:CreateLogGroup"} == granted

    def test_the_chalice_prod_stage_runs_what_cdk_deploys(self, plain: Assembly) -> None:
        """``chalice deploy --stage prod`` and ``cdk deploy`` come from one definition."""
        config = json.loads((ROOT / ".chalice" / "config.json").read_text())
        stage = config["stages"]["prod"]
        functions = self.functions(plain)
        handler = functions["APIHandler"]
        assert [stage["lambda_architecture"]] == handler["Architectures"]
        assert (stage["lambda_memory_size"], stage["lambda_timeout"]) == (
            handler["MemorySize"],
            handler["Timeout"],
        )
        rotation = stage["lambda_functions"]["rotate_signing_key"]
        assert (rotation["lambda_memory_size"], rotation["lambda_timeout"]) == (
            functions["RotateSigningKey"]["MemorySize"],
            functions["RotateSigningKey"]["Timeout"],
        )
        rest_api = plain.one("api", "AWS::Serverless::Api")
        assert stage["api_gateway_endpoint_type"] == rest_api["EndpointConfiguration"]
        assert stage["api_gateway_stage"] == rest_api["StageName"]
        groups = plain.resources("api", "AWS::Logs::LogGroup").values()
        assert {g["Properties"]["RetentionInDays"] for g in groups} == {
            stage["log_retention_in_days"]
        }
        chalice = stage["environment_variables"]
        deployed = handler["Environment"]["Variables"]
        same = ("LOG_LEVEL", "AUTHORIZER_TTL_SECONDS", "API_KEY_REQUIRED", "CORS_ALLOW_ORIGIN")
        for key in (*same, "EVENT_BUS_NAME", "NOTIFY_QUEUE", "MAIL_QUEUE", "PURGE_QUEUE"):
            assert chalice[key] == deployed[key], key
        # CloudFront's own hop, and the edge key that lets the API trust it, exist only in CDK.
        assert int(deployed["TRUSTED_PROXY_HOPS"]) == (
            int(chalice["TRUSTED_PROXY_HOPS"]) + runtime.CLOUDFRONT_HOPS
        )
        # The buckets' names end in the account id or a random suffix, the stream's ARN in its
        # creation time, the WebSocket API's endpoint in its id: only the deployer can name them
        # for chalice (tools/chalice_prod.py takes them as arguments).
        assert set(deployed) - set(chalice) == {
            "SITE_ORIGIN_HEADER",
            "EDGE_SECRET",
            "UPLOADS_BUCKET",
            "TABLE_STREAM_ARN",
            "BACKUPS_BUCKET",
            "WEBSOCKET_ENDPOINT",
        }
        functions_config = stage["lambda_functions"]
        for event_handler in runtime.EVENT_HANDLERS:
            timeout = functions[event_handler.function]["Timeout"]
            assert functions_config[event_handler.name]["lambda_timeout"] == timeout

    def test_packaging_time_settings_are_the_stages_variables(self, domain: Assembly) -> None:
        """What app.py read while Chalice packaged it is what the functions get to run with."""
        for properties in self.functions(domain).values():
            environment = properties["Environment"]["Variables"]
            assert environment["CORS_ALLOW_ORIGIN"] == "https://example.com"
            assert environment["API_KEY_REQUIRED"] == "true"
            assert environment["AUTHORIZER_TTL_SECONDS"] == str(runtime.AUTHORIZER_TTL_SECONDS)

    def test_the_api_role_reaches_only_the_users_uploads(self, plain: Assembly) -> None:
        objects = [
            resource
            for name, statement in statements(plain.template("api"))
            if name.startswith("ApiRole") and "s3:PutObject" in as_list(statement["Action"])
            for resource in as_list(statement["Resource"])
        ]
        assert len(objects) == 1
        assert json.dumps(objects[0]).endswith(f'/{UPLOAD_PREFIX}*"]]}}')
        # The daily expiry of temporary files can never reach a user's objects.
        assert not UPLOAD_PREFIX.startswith(UPLOAD_TEMP_PREFIX)
        assert not UPLOAD_TEMP_PREFIX.startswith(UPLOAD_PREFIX)

    def test_the_stage_is_throttled_and_gateway_errors_are_json(self, plain: Assembly) -> None:
        rest_api = plain.one("api", "AWS::Serverless::Api")
        assert rest_api["StageName"] == "api"
        assert rest_api["EndpointConfiguration"] == "REGIONAL"
        [settings] = rest_api["MethodSettings"]
        assert settings["ThrottlingRateLimit"] == 50
        assert settings["ThrottlingBurstLimit"] == 100
        responses = rest_api["DefinitionBody"]["x-amazon-apigateway-gateway-responses"]
        for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
            template = responses[kind]["responseTemplates"]["application/json"]
            assert template == '{"message": $context.error.messageString}'
        # The authorizer's answers, as the original system's clients expect them.
        unauthorized = responses["UNAUTHORIZED"]
        assert unauthorized["statusCode"] == "401"
        assert json.loads(unauthorized["responseTemplates"]["application/json"]) == {
            "message": "Invalid or expired token"
        }
        denied = responses["ACCESS_DENIED"]
        assert denied["statusCode"] == "403"
        assert "$context.authorizer.message" in denied["responseTemplates"]["application/json"]
        for kind in ("AUTHORIZER_FAILURE", "AUTHORIZER_CONFIGURATION_ERROR"):
            assert responses[kind]["statusCode"] == "503"
        for response in responses.values():
            assert response["responseParameters"]["gatewayresponse.header.Cache-Control"] == (
                "'no-store'"
            )
        authorizer = rest_api["DefinitionBody"]["securityDefinitions"]["bearer"]
        assert authorizer["x-amazon-apigateway-authorizer"]["authorizerResultTtlInSeconds"] == 60

    def test_cors_only_on_the_api_domain_and_only_for_the_site(
        self, plain: Assembly, domain: Assembly
    ) -> None:
        plain_paths = plain.one("api", "AWS::Serverless::Api")["DefinitionBody"]["paths"]
        assert not any("options" in methods for methods in plain_paths.values())
        body = domain.one("api", "AWS::Serverless::Api")["DefinitionBody"]
        options = body["paths"]["/items"]["options"]
        headers = options["x-amazon-apigateway-integration"]["responses"]["default"][
            "responseParameters"
        ]
        assert headers["method.response.header.Access-Control-Allow-Origin"] == (
            "'https://example.com'"
        )
        # Every gateway answer, the authorizer's denials included, is readable by the site.
        for gateway in body["x-amazon-apigateway-gateway-responses"].values():
            assert (
                gateway["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"]
                == "'https://example.com'"
            )

    def test_usage_plans_make_every_route_need_a_key(
        self, plain: Assembly, domain: Assembly
    ) -> None:
        def methods(assembly: Assembly) -> list[dict[str, Any]]:
            paths = assembly.one("api", "AWS::Serverless::Api")["DefinitionBody"]["paths"]
            return [op for ops in paths.values() for m, op in ops.items() if m != "options"]

        assert all({"api_key": []} in op.get("security", []) for op in methods(domain))
        assert not any({"api_key": []} in op.get("security", []) for op in methods(plain))
        assert plain.resources("api", "AWS::ApiGateway::UsagePlan") == {}
        plans = {
            r["Properties"]["UsagePlanName"]: r
            for r in domain.resources("api", "AWS::ApiGateway::UsagePlan").values()
        }
        machines = plans["gatehouse-production-machines"]["Properties"]
        assert machines["Throttle"] == {"RateLimit": 10, "BurstLimit": 20}
        assert machines["Quota"] == {"Limit": 100_000, "Period": "MONTH"}
        assert "Throttle" not in plans["gatehouse-production-site"]["Properties"]
        for plan in plans.values():
            assert "RestAPIapiStage" in plan["DependsOn"]
            assert plan["Properties"]["ApiStages"] == [
                {"ApiId": {"Ref": "RestAPI"}, "Stage": "api"}
            ]
        key = domain.one("api", "AWS::ApiGateway::ApiKey")
        assert key["Value"] == SITE_KEY_REFERENCE
        assert domain.one("api", "AWS::ApiGateway::UsagePlanKey")["KeyType"] == "API_KEY"

    def test_the_api_domain_is_regional_tls_1_2_with_aliases(self, domain: Assembly) -> None:
        name = domain.one("api", "AWS::ApiGateway::DomainName")
        assert name["DomainName"] == "api.example.com"
        assert name["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
        assert name["SecurityPolicy"] == "TLS_1_2"
        [mapping] = domain.resources("api", "AWS::ApiGateway::BasePathMapping").values()
        assert mapping["Properties"]["Stage"] == "api"
        assert "RestAPIapiStage" in mapping["DependsOn"]  # the stage SAM generates
        records = domain.resources("api", "AWS::Route53::RecordSet").values()
        aliases = [r for r in records if r["Properties"]["Type"] != "CNAME"]  # CNAMEs: DKIM
        assert sorted(r["Properties"]["Type"] for r in aliases) == ["A", "AAAA"]
        certificate = domain.one("api", "AWS::CertificateManager::Certificate")
        assert certificate["ValidationMethod"] == "DNS"


class TestSite:
    def distribution(self, assembly: Assembly) -> dict[str, Any]:
        config: dict[str, Any] = assembly.one("site", "AWS::CloudFront::Distribution")[
            "DistributionConfig"
        ]
        return config

    def origin(self, assembly: Assembly, api: str) -> dict[str, Any]:
        """The custom origin whose domain is the execute-api host of ``api`` (its logical id)."""
        found: list[dict[str, Any]] = [
            origin
            for origin in self.distribution(assembly)["Origins"]
            if "CustomOriginConfig" in origin and f"ExportsOutputRef{api}" in json.dumps(origin)
        ]
        assert len(found) == 1
        return found[0]

    def test_websocket_api_is_served_under_ws_on_the_sites_origin(self, assembly: Assembly) -> None:
        config = self.distribution(assembly)
        [behaviour] = [b for b in config["CacheBehaviors"] if b["PathPattern"] == "/ws"]
        origin = self.origin(assembly, "WebsocketAPI")
        assert behaviour["TargetOriginId"] == origin["Id"]
        assert "execute-api" in json.dumps(origin["DomainName"])
        # /ws passes on unchanged and names the stage: wss://<site>/ws is the stage's URL.
        assert origin.get("OriginPath", "") == ""
        assert f"/{runtime.WEBSOCKET_STAGE}" == runtime.WEBSOCKET_PATH
        assert origin["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
        assert origin["OriginCustomHeaders"] == [
            {"HeaderName": EDGE_HEADER, "HeaderValue": EDGE_KEY_REFERENCE}
        ]
        assert behaviour["CachePolicyId"] == CACHING_DISABLED
        assert behaviour["ViewerProtocolPolicy"] == "https-only"
        assert set(behaviour["AllowedMethods"]) == {"GET", "HEAD"}
        policy = assembly.one("site", "AWS::CloudFront::OriginRequestPolicy")[
            "OriginRequestPolicyConfig"
        ]
        assert behaviour["OriginRequestPolicyId"] == {
            "Ref": next(iter(assembly.resources("site", "AWS::CloudFront::OriginRequestPolicy")))
        }
        # The handshake's headers and the ticket; not Host (API Gateway needs its own), no
        # cookies, no other query string.
        assert {"Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Protocol"} <= set(
            policy["HeadersConfig"]["Headers"]
        )
        assert "Host" not in policy["HeadersConfig"]["Headers"]
        assert policy["QueryStringsConfig"] == {
            "QueryStringBehavior": "whitelist",
            "QueryStrings": ["ticket"],
        }
        assert policy["CookiesConfig"] == {"CookieBehavior": "none"}

    def test_the_bucket_is_read_through_origin_access_control_only(self, plain: Assembly) -> None:
        assert plain.resources("site", "AWS::CloudFront::CloudFrontOriginAccessIdentity") == {}
        control = plain.one("site", "AWS::CloudFront::OriginAccessControl")
        assert control["OriginAccessControlConfig"]["SigningBehavior"] == "always"
        grants = [
            statement
            for policy in plain.resources("site", "AWS::S3::BucketPolicy").values()
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if statement["Effect"] == "Allow"
            and statement.get("Principal") == {"Service": "cloudfront.amazonaws.com"}
        ]
        assert [g["Action"] for g in grants] == ["s3:GetObject"]
        assert "AWS:SourceArn" in grants[0]["Condition"]["StringEquals"]

    def test_behaviours_cache_the_site_and_pass_the_api_through(self, plain: Assembly) -> None:
        config = self.distribution(plain)
        default = config["DefaultCacheBehavior"]
        assert default["Compress"] is True
        assert default["CachePolicyId"] == CACHING_OPTIMIZED
        assert default["ViewerProtocolPolicy"] == "redirect-to-https"
        behaviours = {b["PathPattern"]: b for b in config["CacheBehaviors"]}
        assert set(behaviours) == {"/api/*", runtime.WEBSOCKET_PATH}
        api = behaviours["/api/*"]
        assert api["CachePolicyId"] == CACHING_DISABLED
        assert api["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST
        assert set(api["AllowedMethods"]) >= {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
        # No distribution-wide error pages: the API's own 403 and 404 reach the browser.
        assert "CustomErrorResponses" not in config
        assert config["HttpVersion"] == "http2and3"
        assert config["IPV6Enabled"] is True

    def test_the_api_origin_is_the_execute_api_domain_over_tls_1_2(self, plain: Assembly) -> None:
        api = self.origin(plain, "RestAPI")
        assert "execute-api" in json.dumps(api["DomainName"])
        assert "OriginPath" not in api or api["OriginPath"] == ""
        assert api["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
        assert api["CustomOriginConfig"]["OriginSSLProtocols"] == ["TLSv1.2"]
        assert api["OriginCustomHeaders"] == [
            {"HeaderName": EDGE_HEADER, "HeaderValue": EDGE_KEY_REFERENCE}
        ]

    def test_with_usage_plans_cloudfront_sends_the_sites_key(self, domain: Assembly) -> None:
        api = self.origin(domain, "RestAPI")
        assert {"HeaderName": "x-api-key", "HeaderValue": SITE_KEY_REFERENCE} in api[
            "OriginCustomHeaders"
        ]

    def test_with_a_domain_tls_1_2_2021_waf_and_aliases(self, domain: Assembly) -> None:
        config = self.distribution(domain)
        assert config["Aliases"] == ["example.com"]
        assert config["ViewerCertificate"]["MinimumProtocolVersion"] == "TLSv1.2_2021"
        assert config["ViewerCertificate"]["SslSupportMethod"] == "sni-only"
        assert "WebACLId" in config
        records = domain.resources("site", "AWS::Route53::RecordSet").values()
        assert sorted(r["Properties"]["Type"] for r in records) == ["A", "AAAA"]

    def test_security_headers_allow_only_what_the_site_needs(
        self, plain: Assembly, site: Path
    ) -> None:
        policy = plain.one("site", "AWS::CloudFront::ResponseHeadersPolicy")
        headers = policy["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
        hsts = headers["StrictTransportSecurity"]
        assert hsts["AccessControlMaxAgeSec"] >= 365 * 86400
        assert hsts["IncludeSubdomains"] is True
        assert headers["ContentTypeOptions"]["Override"] is True
        assert headers["FrameOptions"]["FrameOption"] == "DENY"
        assert headers["ReferrerPolicy"]["ReferrerPolicy"] == "strict-origin-when-cross-origin"
        csp = json.dumps(headers["ContentSecurityPolicy"]["ContentSecurityPolicy"])
        digest = base64.b64encode(hashlib.sha256(BOOT_SCRIPT.encode()).digest()).decode()
        assert f"script-src 'self' 'sha256-{digest}';" in csp
        style = base64.b64encode(hashlib.sha256(b"position: absolute; width: 1px").digest())
        assert f"style-src 'self' 'unsafe-hashes' 'sha256-{style.decode()}';" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp

    def test_uploads_cors_names_the_sites_origin_only(
        self, plain: Assembly, domain: Assembly
    ) -> None:
        def create(assembly: Assembly) -> Any:
            [resource] = assembly.resources("site", "Custom::AWS").values()
            return resource["Properties"]["Create"]

        assert '\\"AllowedOrigins\\":[\\"https://example.com\\"]' in json.dumps(create(domain))
        # Without a domain: the distribution's own domain, known only once it is created.
        parts = create(plain)["Fn::Join"][1]
        at = parts.index({"Fn::GetAtt": ["Distribution830FAC52", "DomainName"]})
        assert parts[at - 1].endswith('"AllowedOrigins":["https://')
        assert parts[at + 1].startswith('"],')

    def test_the_site_is_deployed_without_docker_and_invalidated(self, plain: Assembly) -> None:
        deployments = plain.resources("site", "Custom::CDKBucketDeployment")
        assert len(deployments) == 2
        [pages] = [d for d in deployments.values() if "DistributionPaths" in d["Properties"]]
        [assets] = [
            name for name, d in deployments.items() if "DistributionPaths" not in d["Properties"]
        ]
        assert assets in pages["DependsOn"]  # hashed assets first, then pages and invalidation
        manifest = json.loads((plain.path / "gatehouse-production-site.assets.json").read_text())
        assert manifest.get("dockerImages", {}) == {}


def run_function(code: str, uri: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Runs a CloudFront Function's handler in node with a viewer-request event."""
    event = {
        "request": {"uri": uri, "headers": headers or {"host": {"value": "d1.cloudfront.net"}}}
    }
    script = f"{code}\nprocess.stdout.write(JSON.stringify(handler({json.dumps(event)})));"
    result = subprocess.run(
        ["node", "-e", script], capture_output=True, text=True, check=True, timeout=30
    )
    request: dict[str, Any] = json.loads(result.stdout)
    return request


class TestEdgeFunctions:
    @pytest.mark.parametrize(
        ("uri", "served"),
        [
            ("/", "/index.html"),
            ("/dashboard", "/200.html"),
            ("/items/abc/edit", "/200.html"),
            ("/_app/immutable/start.js", "/_app/immutable/start.js"),
            ("/favicon.svg", "/favicon.svg"),
        ],
    )
    def test_client_routes_get_the_shell_and_files_stay_files(self, uri: str, served: str) -> None:
        assert run_function(SPA_ROUTING, uri)["uri"] == served

    def test_the_site_origin_header_is_the_host_the_browser_used(self) -> None:
        forged = {
            "host": {"value": "example.com"},
            runtime.SITE_ORIGIN_HEADER: {"value": "https://evil.example"},
        }
        request = run_function(SITE_ORIGIN, "/api/auth/refresh", forged)
        assert request["headers"][runtime.SITE_ORIGIN_HEADER] == {"value": "https://example.com"}


class TestMonitoring:
    def alarms(self, assembly: Assembly, stack: str) -> list[dict[str, Any]]:
        return [
            r["Properties"] for r in assembly.resources(stack, "AWS::CloudWatch::Alarm").values()
        ]

    def test_the_seeds_alarms_and_thresholds(self, plain: Assembly) -> None:
        alarms = self.alarms(plain, "monitoring")
        by_description = {alarm["AlarmDescription"]: alarm for alarm in alarms}
        error_rates = [a for d, a in by_description.items() if "1 % of invocations" in d]
        assert len(error_rates) == 3  # the API handler, the authorizer, the key rotation
        assert {a["Threshold"] for a in error_rates} == {1}
        api = next(a for d, a in by_description.items() if "5XX" in d)
        assert (api["MetricName"], api["Threshold"], api["Period"]) == ("5XXError", 10, 300)
        assert api["ComparisonOperator"] == "GreaterThanThreshold"
        throttles = next(a for d, a in by_description.items() if "throttled" in d)
        assert throttles["Threshold"] == 0
        assert all(alarm["AlarmActions"] for alarm in alarms)
        [cloudfront] = self.alarms(plain, "edge-monitoring")
        assert cloudfront["MetricName"] == "5xxErrorRate"
        assert cloudfront["Threshold"] == 1
        assert {"Name": "Region", "Value": "Global"} in cloudfront["Dimensions"]

    def test_a_dashboard_and_a_monthly_budget(self, plain: Assembly) -> None:
        assert plain.one("monitoring", "AWS::CloudWatch::Dashboard")["DashboardName"] == (
            "gatehouse-production"
        )
        budget = plain.one("monitoring", "AWS::Budgets::Budget")
        assert budget["Budget"]["TimeUnit"] == "MONTHLY"
        assert budget["Budget"]["BudgetLimit"] == {"Amount": 25, "Unit": "USD"}
        kinds = {
            n["Notification"]["NotificationType"] for n in budget["NotificationsWithSubscribers"]
        }
        assert kinds == {"ACTUAL", "FORECASTED"}

    def test_alarm_email_subscribes_to_both_topics(self, plain: Assembly, domain: Assembly) -> None:
        for stack in ("monitoring", "edge-monitoring"):
            assert plain.resources(stack, "AWS::SNS::Subscription") == {}
            assert domain.one(stack, "AWS::SNS::Subscription")["Endpoint"] == "ops@example.com"


class TestEdge:
    def test_site_certificate_is_dns_validated_in_us_east_1(self, domain: Assembly) -> None:
        certificate = domain.one("edge", "AWS::CertificateManager::Certificate")
        assert certificate["DomainName"] == "example.com"
        assert certificate["DomainValidationOptions"] == [
            {"DomainName": "example.com", "HostedZoneId": "Z0123456789ABCDEFGHIJ"}
        ]

    def test_the_web_acl_has_managed_rules_and_an_auth_rate_limit(self, domain: Assembly) -> None:
        acl = domain.one("edge", "AWS::WAFv2::WebACL")
        assert acl["Scope"] == "CLOUDFRONT"
        rules = {rule["Name"]: rule for rule in acl["Rules"]}
        assert {
            "AWSManagedRulesCommonRuleSet",
            "AWSManagedRulesKnownBadInputsRuleSet",
            "AWSManagedRulesAmazonIpReputationList",
        } <= set(rules)
        limit = rules["auth-rate-limit"]["Statement"]["RateBasedStatement"]
        assert limit["ScopeDownStatement"]["ByteMatchStatement"]["SearchString"] == "/api/auth/"
        assert "Block" in rules["auth-rate-limit"]["Action"]


class TestConfig:
    @pytest.mark.parametrize(
        ("context", "complaint"),
        [
            ({"domainName": "example.com"}, "hostedZoneId"),
            ({"customApiDomain": True}, "need domainName"),
            ({"primaryRegion": "mars"}, "primaryRegion"),
            ({"throttleRateLimit": 20000}, "throttleRateLimit"),
            ({"enableWaf": "perhaps"}, "enableWaf"),
            ({"dynamoBilling": "free"}, "dynamoBilling"),
            ({"machineMonthlyQuota": 0}, "machineMonthlyQuota"),
            ({"replicaRegions": "eu-west-1,mars"}, "replicaRegions"),
            ({"secretReplicaRegions": "eu-west-2"}, "names the primary region"),
            ({"environment": "a" * 21, "kmsKey": True}, "too long for replicas or kmsKey"),
            ({"environment": "a" * 19, "replicaRegions": "eu-west-1"}, "too long for replicas"),
            ({"wafGeoBlock": "XX"}, "need enableWaf"),
            ({"enableWaf": True, "wafGeoBlock": "GBR"}, "wafGeoBlock"),
            ({"enableWaf": True, "wafAllowList": "10.0.0.0/33"}, "wafAllowList entry"),
            ({"reservedConcurrency": -1}, "reservedConcurrency"),
            ({"dynamoMinCapacity": 20, "dynamoMaxCapacity": 10}, "above dynamoMaxCapacity"),
            ({"apiAccessLogs": "sometimes"}, "apiAccessLogs"),
            ({"mailFrom": "no-reply@example.com"}, "needs siteUrl"),
            ({"mailFrom": "Gatehouse"}, "mailFrom"),
            ({"mailFrom": "a@example.com", "siteUrl": "http://example.com"}, "siteUrl"),
            (
                {
                    "domainName": "example.com",
                    "hostedZoneId": "Z0123456789ABCDEFGHIJ",
                    "hostedZoneName": "example.com",
                    "mailFrom": "no-reply@example.org",
                },
                "mailFrom must be an address in example.com",
            ),
            (
                {
                    "domainName": "example.org",
                    "hostedZoneId": "Z0123456789ABCDEFGHIJ",
                    "hostedZoneName": "example.com",
                },
                "not inside the hosted zone",
            ),
        ],
    )
    def test_bad_context_is_refused_with_its_name(
        self, context: dict[str, Any], complaint: str
    ) -> None:
        class Node:
            def try_get_context(self, key: str) -> Any:
                return context.get(key)

        with pytest.raises(ConfigError, match=complaint):
            DeployConfig.from_context(Node())  # type: ignore[arg-type]

    def test_lists_are_split_normalised_and_deduplicated(self) -> None:
        context = {
            "enableWaf": True,
            "replicaRegions": "eu-west-1, us-east-1,eu-west-1",
            "wafGeoBlock": "kp,ru",
            "wafAllowList": "192.0.2.7/24,2001:db8::1/64",
        }

        class Node:
            def try_get_context(self, key: str) -> Any:
                return context.get(key)

        config = DeployConfig.from_context(Node())  # type: ignore[arg-type]
        assert config.replica_regions == ("eu-west-1", "us-east-1")
        assert config.waf_geo_block == ("KP", "RU")
        assert config.waf_allow_list == ("192.0.2.0/24", "2001:db8::/64")
        assert config.api_access_logs is True


class TestMail:
    def handler_environment(self, assembly: Assembly) -> dict[str, Any]:
        resources = assembly.resources("api", "AWS::Serverless::Function")
        environment: dict[str, Any] = resources["APIHandler"]["Properties"]["Environment"][
            "Variables"
        ]
        return environment

    def test_without_a_domain_or_a_sender_mail_is_off(self, plain: Assembly) -> None:
        assert not plain.resources("api", "AWS::SES::EmailIdentity")
        assert not plain.resources("api", "AWS::SES::ConfigurationSet")
        environment = self.handler_environment(plain)
        assert (environment["MAIL_FROM"], environment["SES_CONFIGURATION_SET"]) == ("", "")

    def test_a_domain_is_the_identity_signed_with_dkim_in_its_zone(self, domain: Assembly) -> None:
        [(name, identity)] = domain.resources("api", "AWS::SES::EmailIdentity").items()
        assert identity["Properties"]["EmailIdentity"] == "example.com"
        [(set_name, configuration_set)] = domain.resources(
            "api", "AWS::SES::ConfigurationSet"
        ).items()
        assert configuration_set["Properties"]["Name"] == "gatehouse-production"
        assert configuration_set["Properties"]["DeliveryOptions"] == {"TlsPolicy": "REQUIRE"}
        assert identity["Properties"]["ConfigurationSetAttributes"] == {
            "ConfigurationSetName": {"Ref": set_name}
        }
        records = [
            r["Properties"]
            for r in domain.resources("api", "AWS::Route53::RecordSet").values()
            if r["Properties"]["Type"] == "CNAME"
        ]
        assert sorted(json.dumps(r["Name"]) for r in records) == sorted(
            json.dumps({"Fn::GetAtt": [name, f"DkimDNSTokenName{i}"]}) for i in (1, 2, 3)
        )
        assert sorted(json.dumps(r["ResourceRecords"]) for r in records) == sorted(
            json.dumps([{"Fn::GetAtt": [name, f"DkimDNSTokenValue{i}"]}]) for i in (1, 2, 3)
        )
        assert {r["HostedZoneId"] for r in records} == {DOMAIN["hostedZoneId"]}

    def test_the_api_sends_from_the_domain_with_links_to_the_site(self, domain: Assembly) -> None:
        environment = self.handler_environment(domain)
        assert environment["MAIL_FROM"] == "Gatehouse <no-reply@example.com>"
        assert environment["SITE_URL"] == "https://example.com"
        [set_name] = domain.resources("api", "AWS::SES::ConfigurationSet")
        assert environment["SES_CONFIGURATION_SET"] == {"Ref": set_name}

    def test_the_api_may_only_send_from_its_identity_with_its_configuration_set(
        self, domain: Assembly
    ) -> None:
        senders = {
            name: statement
            for name, statement in statements(domain.template("api"))
            if "ses:SendEmail" in as_list(statement["Action"])
        }
        # The API's role and the mail worker's (which sends the security notices).
        assert {name.split("DefaultPolicy")[0] for name in senders} == {
            "ApiRole",
            f"{runtime.WORKER_HANDLERS['mail'].function}Role",
        }
        [statement, *others] = senders.values()
        assert all(other == statement for other in others)
        assert as_list(statement["Action"]) == ["ses:SendEmail"]
        resources = [json.dumps(resource) for resource in statement["Resource"]]
        assert len(resources) == 2
        assert resources[0].endswith(':identity/example.com"]]}')
        assert resources[1].endswith(':configuration-set/gatehouse-production"]]}')

    def test_without_a_domain_the_identity_is_the_sender_address(self) -> None:
        app = cdk.App()
        stack = cdk.Stack(app, "MailOnly")
        Mail(
            stack,
            "Mail",
            configuration_set_name="gatehouse-test",
            sender_address="no-reply@example.org",
            domain_name=None,
            zone=None,
        )
        template = Template.from_stack(stack)
        template.has_resource_properties(
            "AWS::SES::EmailIdentity", {"EmailIdentity": "no-reply@example.org"}
        )
        template.resource_count_is("AWS::Route53::RecordSet", 0)

    def test_chalice_deploy_with_mail_grants_what_cdk_grants(self) -> None:
        files = render(
            (ROOT / ".chalice" / "config.json").read_text(),
            mail_from="Gatehouse <no-reply@example.com>",
            site_url="https://example.com",
        )
        stage = json.loads(files["config.json"])["stages"]["prod"]["environment_variables"]
        assert stage["MAIL_FROM"] == "Gatehouse <no-reply@example.com>"
        assert stage["SES_CONFIGURATION_SET"] == "gatehouse-production"
        assert stage["SITE_URL"] == "https://example.com"
        policy = json.loads(files[API_POLICY])
        [mail] = [s for s in policy["Statement"] if s["Sid"] == "SendMail"]
        assert mail["Action"] == ["ses:SendEmail"]
        assert mail["Resource"] == [
            "arn:aws:ses:*:*:identity/no-reply@example.com",
            "arn:aws:ses:*:*:identity/example.com",
            "arn:aws:ses:*:*:configuration-set/gatehouse-production",
        ]


def is_table(arn: Any) -> bool:
    """Whether ``arn`` (as the template writes it) is the table's, not an index's or export's."""
    return json.dumps(arn).endswith(':table/gatehouse-production"]]}')


def role_statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    """The statements of every policy on the role of ``function`` (a logical id)."""
    role = template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::IAM::Policy"
        and {"Ref": role} in resource["Properties"]["Roles"]
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
    ]


def role_grants(template: dict[str, Any], function: str) -> dict[str, list[Any]]:
    """What the role of ``function`` (a logical id) may do: action -> resources."""
    granted: dict[str, list[Any]] = {}
    for statement in role_statements(template, function):
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            granted.setdefault(action, []).extend(as_list(statement["Resource"]))
    return granted


class TestEvents:
    """The bus, the rules, the queues and the event handlers (docs/EVENTS.md, cdk/README.md).

    The handler functions come from app.py: these tests need its on_table_change, the three
    workers, the WebSocket handlers and the two schedules."""

    def function(self, assembly: Assembly, name: str) -> dict[str, Any]:
        properties: dict[str, Any] = assembly.template("api")["Resources"][name]["Properties"]
        return properties

    def queues(self, assembly: Assembly) -> dict[str, tuple[str, dict[str, Any]]]:
        """Each queue by name: its logical id and properties."""
        return {
            queue["Properties"]["QueueName"]: (name, queue["Properties"])
            for name, queue in assembly.resources("api", "AWS::SQS::Queue").items()
        }

    def test_the_bus_and_one_rule_per_route_to_its_workers_queue(self, plain: Assembly) -> None:
        [(bus, properties)] = plain.resources("api", "AWS::Events::EventBus").items()
        assert properties["Properties"]["Name"] == "gatehouse-production-events"
        rules = {
            rule["Properties"]["Name"]: rule["Properties"]
            for rule in plain.resources("api", "AWS::Events::Rule").values()
            if "EventBusName" in rule["Properties"]  # the schedules are SAM's, on the default bus
        }
        queues = self.queues(plain)
        assert set(rules) == {f"gatehouse-production-{route.worker}" for route in ROUTES}
        for route in ROUTES:
            rule = rules[f"gatehouse-production-{route.worker}"]
            assert rule["EventBusName"] == {"Ref": bus}
            assert rule["EventPattern"] == route.pattern()
            [target] = rule["Targets"]
            queue, _ = queues[f"gatehouse-production-{route.worker}"]
            dead_letters, _ = queues[f"gatehouse-production-{route.worker}-dlq"]
            assert target["Arn"] == {"Fn::GetAtt": [queue, "Arn"]}
            assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dead_letters, "Arn"]}}
        assert rules["gatehouse-production-purge"]["EventPattern"]["detail-type"] == [
            "account.deleted"
        ]

    def test_queues_redrive_after_3_receives_and_outwait_their_worker(
        self, plain: Assembly
    ) -> None:
        queues = self.queues(plain)
        for worker, handler in runtime.WORKER_HANDLERS.items():
            _, queue = queues[f"gatehouse-production-{worker}"]
            dead_letters, _ = queues[f"gatehouse-production-{worker}-dlq"]
            assert queue["RedrivePolicy"] == {
                "deadLetterTargetArn": {"Fn::GetAtt": [dead_letters, "Arn"]},
                "maxReceiveCount": 3,
            }
            timeout = self.function(plain, handler.function)["Timeout"]
            assert timeout == handler.timeout
            assert queue["VisibilityTimeout"] >= 6 * timeout

    def test_every_queue_is_encrypted_and_tls_only(self, plain: Assembly) -> None:
        queues = self.queues(plain)
        assert len(queues) == 2 * len(ROUTES) + 1  # each route's pair, the stream's DLQ
        policies = plain.resources("api", "AWS::SQS::QueuePolicy").values()
        for name, (logical_id, queue) in queues.items():
            assert queue["SqsManagedSseEnabled"] is True, name
            assert any(
                {"Ref": logical_id} in policy["Properties"]["Queues"]
                and statement["Effect"] == "Deny"
                and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                for policy in policies
                for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            ), f"{name} accepts plain HTTP"

    def test_the_stream_source_is_the_tables_stream_bounded_with_a_dead_letter_queue(
        self, plain: Assembly
    ) -> None:
        handler = runtime.STREAM_HANDLER
        source = self.function(plain, handler.function)["Events"][handler.event]
        assert source["Type"] == "DynamoDB"
        properties = source["Properties"]
        stream = json.dumps(properties["Stream"])
        assert "gatehouse-production-data:" in stream
        assert "StreamArn" in stream
        assert properties["MaximumRetryAttempts"] == runtime.STREAM_MAX_RETRY_ATTEMPTS <= 10
        assert properties["BisectBatchOnFunctionError"] is True
        assert 0 < properties["MaximumRecordAgeInSeconds"] < 86400  # inside the stream's day
        assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        dead_letters, _ = self.queues(plain)["gatehouse-production-stream-dlq"]
        assert properties["DestinationConfig"] == {
            "OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": [dead_letters, "Arn"]}}
        }

    def test_workers_read_their_own_queue_and_report_partial_batch_failures(
        self, plain: Assembly
    ) -> None:
        queues = self.queues(plain)
        for worker, handler in runtime.WORKER_HANDLERS.items():
            source = self.function(plain, handler.function)["Events"][handler.event]
            assert source["Type"] == "SQS"
            queue, _ = queues[f"gatehouse-production-{worker}"]
            assert source["Properties"]["Queue"] == {"Fn::GetAtt": [queue, "Arn"]}
            assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]

    def test_the_sam_transform_makes_the_schedules_and_sources_as_overridden(
        self, plain: Assembly
    ) -> None:
        made = sam_transform(plain)
        schedules = {
            r["Properties"]["ScheduleExpression"]
            for r in made.values()
            if r["Type"] == "AWS::Events::Rule" and "ScheduleExpression" in r["Properties"]
        }
        assert schedules == {"cron(0 3 * * ? *)", "rate(1 hour)"}
        mappings = {
            r["Properties"]["FunctionName"]["Ref"]: r["Properties"]
            for r in made.values()
            if r["Type"] == "AWS::Lambda::EventSourceMapping"
        }
        assert set(mappings) == {
            runtime.STREAM_HANDLER.function,
            *(h.function for h in runtime.WORKER_HANDLERS.values()),
        }
        for mapping in mappings.values():
            assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        stream = mappings[runtime.STREAM_HANDLER.function]
        assert stream["BisectBatchOnFunctionError"] is True
        assert "Destination" in stream["DestinationConfig"]["OnFailure"]

    def test_the_jobs_are_scheduled(self, plain: Assembly) -> None:
        """SAM turns each Schedule event into an EventBridge rule on the default bus."""
        expected = {
            runtime.BACKUP_HANDLER: "cron(0 3 * * ? *)",
            runtime.SWEEP_HANDLER: "rate(1 hour)",
        }
        for handler, schedule in expected.items():
            event = self.function(plain, handler.function)["Events"][handler.event]
            assert event == {"Type": "Schedule", "Properties": {"Schedule": schedule}}

    def test_each_handler_runs_with_its_own_role_log_group_and_settings(
        self, plain: Assembly, domain: Assembly
    ) -> None:
        groups = plain.resources("api", "AWS::Logs::LogGroup")
        roles = set()
        for handler in runtime.EVENT_HANDLERS:
            function = self.function(plain, handler.function)
            roles.add(function["Role"]["Fn::GetAtt"][0])
            assert function["LoggingConfig"]["LogGroup"]["Ref"] in groups
            assert function["Timeout"] == handler.timeout
            environment = function["Environment"]["Variables"]
            assert environment["EVENT_BUS_NAME"] == "gatehouse-production-events"
            assert {environment[f"{w.upper()}_QUEUE"] for w in runtime.WORKER_HANDLERS} == {
                f"gatehouse-production-{w}" for w in runtime.WORKER_HANDLERS
            }
            assert "StreamArn" in json.dumps(environment["TABLE_STREAM_ARN"])
            assert "BackupsBucketName" in json.dumps(environment["BACKUPS_BUCKET"])
            endpoint = json.dumps(environment["WEBSOCKET_ENDPOINT"])
            assert endpoint.startswith('{"Fn::Join": ["", ["https://", {"Ref": "WebsocketAPI"}')
            assert endpoint.endswith('"/ws"]]}')
            # Without a domain or siteUrl the site's origin is unknown: tickets answer 503.
            assert "WEBSOCKET_URL" not in environment
        assert len(roles) == len(runtime.EVENT_HANDLERS)
        api = self.function(domain, "APIHandler")["Environment"]["Variables"]
        assert api["WEBSOCKET_URL"] == "wss://example.com/ws"

    def test_the_websocket_api_is_chalices_on_a_throttled_ws_stage(self, plain: Assembly) -> None:
        websocket = plain.one("api", "AWS::ApiGatewayV2::Api")
        assert websocket["ProtocolType"] == "WEBSOCKET"
        assert websocket["Name"] == "gatehouse-production-websocket"
        routes = {
            r["Properties"]["RouteKey"]
            for r in plain.resources("api", "AWS::ApiGatewayV2::Route").values()
        }
        assert routes == {"$connect", "$disconnect", "$default"}
        stage = plain.one("api", "AWS::ApiGatewayV2::Stage")
        assert stage["StageName"] == runtime.WEBSOCKET_STAGE == "ws"
        assert stage["DefaultRouteSettings"] == {
            "ThrottlingRateLimit": 50,
            "ThrottlingBurstLimit": 100,
        }

    def test_each_handler_may_do_what_its_code_calls_and_nothing_more(
        self, plain: Assembly, domain: Assembly
    ) -> None:
        for assembly in (plain, domain):
            template = assembly.template("api")
            mail = {"ses:SendEmail"} if assembly is domain else set()
            for handler, expected in EVENT_GRANTS.items():
                granted = set(role_grants(template, handler)) - set(runtime.LOG_ACTIONS)
                extra = mail if handler == runtime.WORKER_HANDLERS["mail"].function else set()
                assert granted == expected | extra, handler
        assert set(EVENT_GRANTS) == {handler.function for handler in runtime.EVENT_HANDLERS}

    def test_table_grants_reach_only_the_partitions_each_handler_touches(
        self, plain: Assembly
    ) -> None:
        """DynamoDB's fine-grained access: every partition key a request names must match."""
        template = plain.template("api")
        found: dict[tuple[str, str], list[str]] = {}
        for handler in runtime.EVENT_HANDLERS:
            for statement in role_statements(template, handler.function):
                items = [a for a in as_list(statement["Action"]) if a in runtime.TABLE_ACTIONS]
                if not items or not all(map(is_table, as_list(statement["Resource"]))):
                    continue
                [(operator, keys)] = statement["Condition"].items()
                assert operator == "ForAllValues:StringLike"
                for action in items:
                    found[(handler.function, action)] = keys["dynamodb:LeadingKeys"]
        assert found == LEADING_KEYS

    def test_grants_name_their_resources_and_go_to_one_handler_each(self, plain: Assembly) -> None:
        template = plain.template("api")
        grants = {
            handler.function: role_grants(template, handler.function)
            for handler in runtime.EVENT_HANDLERS
        }

        def holders(action: str) -> set[str]:
            return {name for name, granted in grants.items() if action in granted}

        stream = runtime.STREAM_HANDLER.function
        assert holders("events:PutEvents") == {stream}
        [bus] = plain.resources("api", "AWS::Events::EventBus")
        assert grants[stream]["events:PutEvents"] == [{"Fn::GetAtt": [bus, "Arn"]}]
        for action in runtime.STREAM_READ_ACTIONS:
            [arn] = grants[stream][action]
            assert "StreamArn" in json.dumps(arn)
        queues = self.queues(plain)
        assert holders("sqs:ReceiveMessage") == {
            handler.function for handler in runtime.WORKER_HANDLERS.values()
        }
        for worker, handler in runtime.WORKER_HANDLERS.items():
            queue, _ = queues[f"gatehouse-production-{worker}"]
            for action in runtime.CONSUME_ACTIONS:
                assert grants[handler.function][action] == [{"Fn::GetAtt": [queue, "Arn"]}]
        dead_letters, _ = queues["gatehouse-production-stream-dlq"]
        assert holders("sqs:SendMessage") == {stream}
        assert grants[stream]["sqs:SendMessage"] == [{"Fn::GetAtt": [dead_letters, "Arn"]}]
        notify = runtime.WORKER_HANDLERS["notify"].function
        assert holders("execute-api:ManageConnections") == {notify}
        [connections] = [json.dumps(r) for r in grants[notify]["execute-api:ManageConnections"]]
        assert '{"Ref": "WebsocketAPI"}, "/ws/POST/@connections/*"]]}' in connections
        backup = runtime.BACKUP_HANDLER.function
        for action in ("dynamodb:DescribeTable", "dynamodb:ExportTableToPointInTime"):
            assert holders(action) == {backup}
            assert [is_table(arn) for arn in grants[backup][action]] == [True]
        [exports] = grants[backup]["dynamodb:DescribeExport"]
        assert json.dumps(exports).endswith(':table/gatehouse-production/export/*"]]}')
        for action in runtime.EXPORT_WRITE_ACTIONS:
            [objects] = grants[backup][action]
            assert json.dumps(objects).endswith('"/backups/database/*"]]}')
            assert "BackupsBucketArn" in json.dumps(objects)
        assert holders("s3:PutObject") == {backup}
        cleaners = {runtime.WORKER_HANDLERS["purge"].function, runtime.SWEEP_HANDLER.function}
        assert holders("s3:DeleteObject") == cleaners
        for name in cleaners:
            [objects] = grants[name]["s3:DeleteObject"]
            assert json.dumps(objects).endswith(f'/{UPLOAD_PREFIX}*"]]}}')
        purge = runtime.WORKER_HANDLERS["purge"].function
        assert holders("s3:ListBucket") == {purge}
        [listing] = [s for s in role_statements(template, purge) if s["Action"] == "s3:ListBucket"]
        assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{UPLOAD_PREFIX}*"]}}
        sweep = runtime.SWEEP_HANDLER.function
        [index] = grants[sweep]["dynamodb:Query"]
        assert json.dumps(index).endswith(':table/gatehouse-production/index/gsi1"]]}')
        for name, granted in grants.items():
            assert not any("*" in action for action in granted), name
            assert "secretsmanager:GetSecretValue" not in granted, name
            for action, resources in granted.items():
                if action in runtime.UNSCOPED_ACTIONS:
                    assert resources == ["*"], (name, action)
                else:
                    assert "*" not in resources, (name, action)
        assert holders("dynamodb:ListStreams") == {stream}
        assert holders("dynamodb:ListExports") == {backup}

    def test_only_list_actions_are_granted_on_any_resource_in_a_policy_of_their_own(
        self, plain: Assembly
    ) -> None:
        """IAM authorizes ListStreams and ListExports on "*" only; nothing else shares it."""
        template = plain.template("api")
        unscoped = {
            name: resource["Properties"]
            for name, resource in plain.resources("api", "AWS::IAM::Policy").items()
            if any(
                "*" in as_list(s["Resource"])
                for s in resource["Properties"]["PolicyDocument"]["Statement"]
            )
        }
        owners = {}
        for policy in unscoped.values():
            [statement] = policy["PolicyDocument"]["Statement"]
            assert statement["Resource"] == "*"
            [role] = policy["Roles"]
            owners[role["Ref"]] = statement["Action"]
        roles = {
            handler: template["Resources"][handler]["Properties"]["Role"]["Fn::GetAtt"][0]
            for handler in (runtime.STREAM_HANDLER.function, runtime.BACKUP_HANDLER.function)
        }
        assert owners == {
            roles[runtime.STREAM_HANDLER.function]: "dynamodb:ListStreams",
            roles[runtime.BACKUP_HANDLER.function]: "dynamodb:ListExports",
        }
        # Lambda checks the role when it creates the stream's event source: policy first.
        depends = template["Resources"][runtime.STREAM_HANDLER.function]["DependsOn"]
        assert any(name in depends for name in unscoped)

    def test_timeouts_outlast_the_retries_of_a_batch(self, plain: Assembly) -> None:
        """A worker that times out leaves its events' marks claimed: those events are skipped.
        Each timeout leaves room for every message of a batch to meet one throttled AWS call;
        the stream handler, for twice the back-off of a PutEvents call the bus keeps refusing."""
        retries: dict[str, Any] = getattr(BOTO_CONFIG, "retries", None) or {}
        throttled_call = sum(2**attempt for attempt in range(retries["total_max_attempts"] - 1))
        assert retries["mode"] == "standard"
        assert throttled_call == 1  # second: one back-off of up to 1 s for a throttled call
        publisher = inspect_signature(EventBridgePublisher).parameters
        attempts, first = publisher["attempts"].default, publisher["first_delay"].default
        refused_put = attempts * throttled_call + sum(first * 2**i for i in range(attempts - 1))
        stream = runtime.STREAM_HANDLER
        assert self.function(plain, stream.function)["Timeout"] >= 2 * refused_put
        for handler in runtime.WORKER_HANDLERS.values():
            function = self.function(plain, handler.function)
            batch = function["Events"][handler.event]["Properties"]["BatchSize"]
            assert function["Timeout"] >= batch * throttled_call, handler.name
        mail = self.function(plain, runtime.WORKER_HANDLERS["mail"].function)
        # SES's sandbox sends one mail a second: a batch is throttled at every send.
        assert mail["Timeout"] >= 2 * 10 * throttled_call

    def test_chalice_deploy_policies_grant_what_the_cdk_roles_grant(self, plain: Assembly) -> None:
        template = plain.template("api")
        for handler in runtime.EVENT_HANDLERS:
            document = json.loads((ROOT / ".chalice" / handler_policy(handler)).read_text())
            actions = {action for s in document["Statement"] for action in as_list(s["Action"])}
            granted = set(role_grants(template, handler.function))
            assert actions - {"logs:CreateLogGroup"} == granted, handler.name

    def test_alarms_on_dead_letters_queue_age_and_failed_jobs(self, plain: Assembly) -> None:
        alarms = [
            r["Properties"]
            for r in plain.resources("monitoring", "AWS::CloudWatch::Alarm").values()
        ]

        def queue_alarms(metric: str) -> dict[str, dict[str, Any]]:
            return {
                alarm["Dimensions"][0]["Value"]: alarm
                for alarm in alarms
                if alarm.get("MetricName") == metric
            }

        dead = queue_alarms("ApproximateNumberOfMessagesVisible")
        assert set(dead) == {
            *(f"gatehouse-production-{route.worker}-dlq" for route in ROUTES),
            "gatehouse-production-stream-dlq",
        }
        assert {(a["Threshold"], a["ComparisonOperator"]) for a in dead.values()} == {
            (0, "GreaterThanThreshold")
        }
        age = queue_alarms("ApproximateAgeOfOldestMessage")
        assert set(age) == {f"gatehouse-production-{route.worker}" for route in ROUTES}
        jobs = [a for a in alarms if a.get("MetricName") == "Errors"]
        names = sorted(a["Dimensions"][0]["Value"]["Fn::ImportValue"] for a in jobs)
        assert len(names) == 2
        for name, handler in zip(names, runtime.JOB_HANDLERS, strict=True):
            assert name.startswith(f"gatehouse-production-api:ExportsOutputRef{handler.function}")
        assert {a["Threshold"] for a in jobs} == {0}
        [topic] = plain.resources("monitoring", "AWS::SNS::Topic")
        for alarm in [*dead.values(), *age.values(), *jobs]:
            assert alarm["AlarmActions"] == [{"Ref": topic}]


ACCESS = {"githubRepository": "example-org/gatehouse", "githubBranch": "main"}
ACCESS_SUBJECTS = [
    "repo:example-org/gatehouse:ref:refs/heads/main",
    "repo:example-org/gatehouse:environment:staging",
    "repo:example-org/gatehouse:environment:production",
]


@pytest.fixture(scope="module")
def access(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Assembly:
    return synthesize(tmp_path_factory.mktemp("access"), site, ACCESS)


def access_template(context: dict[str, Any]) -> Template:
    """The deploy-access stack alone, in process: for the variants of its context."""
    from gatehouse_infra.deploy_access import add_deploy_access

    app = cdk.App(context=context)
    stack = add_deploy_access(app)
    assert stack is not None
    return Template.from_stack(stack)


class TestDeployAccess:
    """The GitHub OIDC provider and deploy role (cdk/gatehouse_infra/deploy_access.py)."""

    STACK = "gatehouse-deploy-access.template.json"

    def template(self, access: Assembly) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((access.path / self.STACK).read_text())
        return data

    def test_the_stack_is_added_only_by_the_switch(self, access: Assembly) -> None:
        from gatehouse_infra.deploy_access import add_deploy_access

        assert access.stacks() == sorted(
            [
                self.STACK,
                *(
                    f"gatehouse-production-{name}.template.json"
                    for name in ("api", "data", "edge-monitoring", "monitoring", "site")
                ),
            ]
        )
        defaults = json.loads((ROOT / "cdk" / "cdk.json").read_text())["context"]
        app = cdk.App(context={**defaults, "githubRepository": ""})
        assert add_deploy_access(app) is None
        assert app.node.children == []

    def test_the_provider_is_githubs_for_sts(self, access: Assembly) -> None:
        resources = self.template(access)["Resources"]
        [provider] = [r for r in resources.values() if r["Type"] == "AWS::IAM::OIDCProvider"]
        assert provider["Properties"]["Url"] == "https://token.actions.githubusercontent.com"
        assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]

    def test_the_role_trusts_only_the_repositorys_branch_and_environments(
        self, access: Assembly
    ) -> None:
        resources = self.template(access)["Resources"]
        [provider] = [n for n, r in resources.items() if r["Type"] == "AWS::IAM::OIDCProvider"]
        [role] = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::IAM::Role"]
        [trust] = role["AssumeRolePolicyDocument"]["Statement"]
        assert trust == {
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Effect": "Allow",
            "Principal": {"Federated": {"Ref": provider}},
            "Condition": {
                "StringEquals": {
                    "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                    "token.actions.githubusercontent.com:sub": ACCESS_SUBJECTS,
                }
            },
        }
        assert role["RoleName"] == "gatehouse-github-deploy"
        assert role["MaxSessionDuration"] == 3600

    def test_the_role_can_only_assume_the_cdk_deploy_and_publishing_roles(
        self, access: Assembly
    ) -> None:
        template = self.template(access)
        resources = template["Resources"]
        kinds = sorted(r["Type"] for r in resources.values())
        assert kinds == ["AWS::IAM::OIDCProvider", "AWS::IAM::Policy", "AWS::IAM::Role"]
        [role] = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::IAM::Role"]
        assert "ManagedPolicyArns" not in role
        assert "Policies" not in role
        granted = [
            s for name, s in statements(template) if resources[name]["Type"] != "AWS::IAM::Role"
        ]
        assert len(granted) == 1
        [grant] = granted
        assert grant["Effect"] == "Allow"
        assert grant["Action"] == "sts:AssumeRole"
        assert set(grant) == {"Sid", "Effect", "Action", "Resource"}
        rendered = sorted(
            "".join(p if isinstance(p, str) else "<" + p["Ref"] + ">" for p in arn["Fn::Join"][1])
            for arn in grant["Resource"]
        )
        account = "<AWS::AccountId>"
        assert rendered == [
            f"arn:<AWS::Partition>:iam::{account}:role/cdk-hnb659fds-{role}-{account}-*"
            for role in ("deploy-role", "file-publishing-role")
        ]

    def test_cfn_lint_finds_no_errors_and_cdk_nag_passed(self, access: Assembly) -> None:
        assert "AwsSolutions-" not in access.output
        result = subprocess.run(
            [str(CFN_LINT), "--format", "parseable", str(access.path / self.STACK)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_an_existing_provider_is_reused_and_other_environments_named(self) -> None:
        arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
        template = access_template(
            {
                **ACCESS,
                "githubBranch": "release/v2",
                "githubEnvironments": "prod",
                "githubOidcProviderArn": arn,
            }
        )
        template.resource_count_is("AWS::IAM::OIDCProvider", 0)
        [role] = template.find_resources("AWS::IAM::Role").values()
        [trust] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Federated": arn}
        assert trust["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == [
            "repo:example-org/gatehouse:ref:refs/heads/release/v2",
            "repo:example-org/gatehouse:environment:prod",
        ]

    @pytest.mark.parametrize(
        "context",
        [
            {"githubRepository": "gatehouse"},
            {"githubRepository": "org/repo:ref:refs/heads/*"},
            {"githubRepository": "org/*"},
            {**ACCESS, "githubBranch": "*"},
            {**ACCESS, "githubEnvironments": "prod*"},
            {**ACCESS, "githubEnvironments": " , "},
            {**ACCESS, "githubOidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/x"},
        ],
    )
    def test_malformed_or_wildcard_context_is_refused(self, context: dict[str, Any]) -> None:
        from gatehouse_infra.deploy_access import add_deploy_access

        with pytest.raises(ConfigError):
            add_deploy_access(cdk.App(context=context))


ADOPTED_TABLE = "production-data-table"
ADOPTED_STREAM = (
    "arn:aws:dynamodb:eu-west-2:123456789012:table/production-data-table/stream/"
    "2026-01-01T00:00:00.000"
)
ADOPTED_BUCKET = "gatehouse-production-uploads-123456789012"
ADOPTION = {
    "existingTableName": ADOPTED_TABLE,
    "existingTableStreamArn": ADOPTED_STREAM,
    "existingUploadsBucketName": ADOPTED_BUCKET,
}


@pytest.fixture(scope="module")
def adopted(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Assembly:
    return synthesize(tmp_path_factory.mktemp("adopted"), site, ADOPTION)


class TestDeployReadiness:
    """Issue 13's deploy-readiness defects, each as the templates show it."""

    def test_make_bootstrap_names_both_regions_and_runs_no_app(self) -> None:
        result = subprocess.run(
            ["make", "-n", "bootstrap", "ACCOUNT=123456789012", "REGION=eu-west-1"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        command = result.stdout.split("bootstrap", 1)[1]
        assert 'bootstrap  \\\n\t"aws://$account/$region" "aws://$account/$edge"' in result.stdout
        assert "cd / &&" in result.stdout  # no cdk.json there: the CLI runs no app
        assert "node_modules/.bin/cdk" in result.stdout
        assert "python" not in command
        context = json.loads((ROOT / "cdk" / "cdk.json").read_text())["context"]
        assert context["certificateRegion"] == "us-east-1"

    def test_cloudwatch_alarms_of_this_account_may_publish_to_each_topic(
        self, assembly: Assembly
    ) -> None:
        for stack in ("monitoring", "edge-monitoring"):
            policy = assembly.one(stack, "AWS::SNS::TopicPolicy")["PolicyDocument"]
            by_service = {
                statement["Principal"]["Service"]: statement
                for statement in policy["Statement"]
                if statement["Effect"] == "Allow"
            }
            alarms = by_service["cloudwatch.amazonaws.com"]
            assert alarms["Action"] == "sns:Publish"
            assert alarms["Condition"]["StringEquals"] == {
                "aws:SourceAccount": {"Ref": "AWS::AccountId"}
            }
            arn = json.dumps(alarms["Condition"]["ArnLike"]["aws:SourceArn"])
            assert ":cloudwatch:" in arn
            assert ":alarm:*" in arn
            assert "AWS::AccountId" in arn
            if stack == "monitoring":
                budgets = by_service["budgets.amazonaws.com"]
                assert budgets["Condition"]["StringEquals"] == {
                    "aws:SourceAccount": {"Ref": "AWS::AccountId"}
                }
            else:
                # With alarmEmail, cost anomaly detection too (tests/test_cdk_obs.py).
                assert set(by_service) - {"costalerts.amazonaws.com"} == {
                    "cloudwatch.amazonaws.com"
                }

    def test_the_api_is_deployed_to_the_api_stage_only(self, plain: Assembly) -> None:
        rest_api = plain.template("api")["Resources"]["RestAPI"]["Properties"]
        assert rest_api["OpenApiVersion"] == "2.0"
        assert rest_api["DefinitionBody"]["swagger"] == "2.0"
        assert SAM_TRANSLATE_STAGES != SAM_TRANSLATE
        made = sam_transform(plain, SAM_TRANSLATE_STAGES)
        stages = [r["Properties"] for r in made.values() if r["Type"] == "AWS::ApiGateway::Stage"]
        assert [stage["StageName"] for stage in stages] == [runtime.STAGE]
        deployments = [
            r["Properties"] for r in made.values() if r["Type"] == "AWS::ApiGateway::Deployment"
        ]
        assert deployments
        assert all("StageName" not in d for d in deployments)

    def test_a_machine_key_through_the_site_is_refused(
        self, plain: Assembly, domain: Assembly
    ) -> None:
        codes = {
            name: {
                f["Properties"]["FunctionConfig"]["Comment"]: f["Properties"]["FunctionCode"]
                for f in assembly.resources("site", "AWS::CloudFront::Function").values()
            }
            for name, assembly in (("plain", plain), ("domain", domain))
        }
        comment = "Tells the API which origin the browser used"
        assert codes["plain"][comment].strip() == SITE_ORIGIN.strip()
        code = codes["domain"][comment]  # apiKeys on
        assert code.strip() == SITE_ORIGIN_WITHOUT_KEYS.strip()
        refused = run_function(
            code,
            "/api/items",
            {"host": {"value": "example.com"}, "x-api-key": {"value": "machine"}},
        )
        assert refused["statusCode"] == 403
        assert json.loads(refused["body"]["data"]) == {"message": MACHINE_CLIENTS_ELSEWHERE}
        passed = run_function(code, "/api/items", {"host": {"value": "example.com"}})
        assert passed["headers"][runtime.SITE_ORIGIN_HEADER] == {"value": "https://example.com"}

    def test_nothing_is_compressed_on_the_uncached_api(self, plain: Assembly) -> None:
        config = plain.one("site", "AWS::CloudFront::Distribution")["DistributionConfig"]
        api = next(b for b in config["CacheBehaviors"] if b["PathPattern"] == "/api/*")
        assert api.get("Compress", False) is False
        assert config["DefaultCacheBehavior"]["Compress"] is True

    def test_a_hanging_aws_call_ends_before_the_lambda_timeout(self, plain: Assembly) -> None:
        retries: dict[str, Any] = getattr(BOTO_CONFIG, "retries", None) or {}
        attempts = retries["total_max_attempts"]
        options: dict[str, Any] = vars(BOTO_CONFIG)  # botocore sets them as attributes
        per_attempt = options["connect_timeout"] + options["read_timeout"]
        back_off = sum(2**attempt for attempt in range(attempts - 1))  # standard mode's cap
        worst = attempts * per_attempt + back_off
        assert worst == 7
        api = plain.template("api")["Resources"][runtime.API_FUNCTION]["Properties"]
        timeout = api.get("Timeout") or plain.template("api")["Globals"]["Function"]["Timeout"]
        assert worst <= 0.75 * timeout
        # scrypt at one full vCPU (1,769 MB): a verify's 235 ms, not 405 ms at 0.58 vCPU.
        assert runtime.MEMORY_MB == 1769

    def test_the_authorizer_has_a_read_only_role_of_its_own(self, plain: Assembly) -> None:
        template = plain.template("api")
        resources = template["Resources"]
        role = resources[runtime.AUTHORIZER_FUNCTION]["Properties"]["Role"]["Fn::GetAtt"][0]
        assert role != resources[runtime.API_FUNCTION]["Properties"]["Role"]["Fn::GetAtt"][0]
        assert role.startswith("AuthorizerRole")
        granted = role_grants(template, runtime.AUTHORIZER_FUNCTION)
        assert set(granted) == {
            "secretsmanager:GetSecretValue",
            "dynamodb:BatchGetItem",
            "dynamodb:GetItem",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
        }
        for statement in role_statements(template, runtime.AUTHORIZER_FUNCTION):
            if "dynamodb:GetItem" in as_list(statement["Action"]):
                assert statement["Condition"] == {
                    "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["USER#*"]}
                }

    def test_only_the_signing_key_rotation_may_invoke_the_rotation(self, plain: Assembly) -> None:
        permission = plain.template("api")["Resources"]["SecretsManagerInvokesRotation"]
        assert permission["Properties"]["SourceArn"] == {"Ref": "SigningKey98E3D2C9"} or (
            "SigningKey" in json.dumps(permission["Properties"]["SourceArn"])
        )
        assert permission["Properties"]["SourceAccount"] == {"Ref": "AWS::AccountId"}

    def test_s3_log_delivery_is_limited_to_this_account(self, assembly: Assembly) -> None:
        policy = assembly.resources("data", "AWS::S3::BucketPolicy")
        logs = next(p for name, p in policy.items() if name.startswith("AccessLogs"))
        delivery = [
            statement
            for statement in logs["Properties"]["PolicyDocument"]["Statement"]
            if statement["Principal"] == {"Service": "logging.s3.amazonaws.com"}
        ]
        assert len(delivery) == 3  # uploads, backups, the site
        for statement in delivery:
            assert statement["Condition"]["StringEquals"] == {
                "aws:SourceAccount": {"Ref": "AWS::AccountId"}
            }

    def test_cdk_provider_functions_log_with_a_retention(self, assembly: Assembly) -> None:
        checked = 0
        for stack in assembly.stacks():
            template = json.loads((assembly.path / stack).read_text())
            resources = template["Resources"]
            for resource in resources.values():
                if resource["Type"] != "AWS::Lambda::Function":
                    continue  # ours are AWS::Serverless::Function: CDK's providers only
                group = resource["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
                assert resources[group]["Type"] == "AWS::Logs::LogGroup"
                assert resources[group]["Properties"]["RetentionInDays"] == (
                    runtime.LOG_RETENTION_DAYS
                )
                checked += 1
        # bucket deployment, AwsCustomResource, S3 auto-delete, the cross-region reader and
        # writer (made after aspects run)
        assert checked >= 5


class TestReadoption:
    """``existingTableName`` and ``existingUploadsBucketName``: a redeploy after make destroy
    (or the original system's table) uses what exists instead of creating it."""

    def test_the_data_stack_creates_neither_table_nor_uploads_bucket(
        self, adopted: Assembly
    ) -> None:
        assert adopted.resources("data", GLOBAL_TABLE) == {}
        buckets = adopted.resources("data", "AWS::S3::Bucket")
        assert not any(name.startswith("Uploads") for name in buckets)
        assert any(name.startswith("Backups") for name in buckets)
        outputs = adopted.template("data")["Outputs"]
        assert (
            outputs["TableNameOutput" if "TableNameOutput" in outputs else "TableName"]["Value"]
            == ADOPTED_TABLE
        )

    def test_the_functions_use_the_adopted_table_its_stream_and_bucket(
        self, adopted: Assembly
    ) -> None:
        template = adopted.template("api")
        resources = template["Resources"]
        variables = resources[runtime.API_FUNCTION]["Properties"]["Environment"]["Variables"]
        assert variables["TABLE_NAME"] == ADOPTED_TABLE
        assert variables["UPLOADS_BUCKET"] == ADOPTED_BUCKET
        stream = runtime.STREAM_HANDLER
        source = resources[stream.function]["Properties"]["Events"][stream.event]
        assert source["Properties"]["Stream"] == ADOPTED_STREAM
        text = json.dumps(template)
        assert f":table/{ADOPTED_TABLE}" in text
        assert ":table/gatehouse-production" not in text

    def test_cfn_lint_finds_no_errors_when_adopting(self, adopted: Assembly) -> None:
        TestSynthesis().test_cfn_lint_finds_no_errors(adopted)

    def test_the_table_switch_needs_its_stream(self) -> None:
        app = cdk.App(context={"existingTableName": ADOPTED_TABLE})
        with pytest.raises(ConfigError, match="existingTableStreamArn"):
            DeployConfig.from_context(app.node)
        app = cdk.App(
            context={"existingTableName": "other-table", "existingTableStreamArn": ADOPTED_STREAM}
        )
        with pytest.raises(ConfigError, match="not of other-table"):
            DeployConfig.from_context(app.node)


class TestReadoptScript:
    """``cdk/readopt.py`` finds what make destroy retained and prints the switches."""

    def test_it_prints_the_retained_table_its_stream_and_the_bucket(self, aws: Any) -> None:
        spec = importlib.util.spec_from_file_location("readopt", ROOT / "cdk" / "readopt.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        readoption_context = module.readoption_context
        dynamodb, s3 = aws.client("dynamodb"), aws.client("s3")
        account = aws.client("sts").get_caller_identity()["Account"]
        assert readoption_context("staging", dynamodb=dynamodb, s3=s3, account=account) == []
        dynamodb.create_table(**create_table_request("gatehouse-staging"))  # with its stream
        bucket = f"gatehouse-staging-uploads-{account}"
        s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
        )
        stream = dynamodb.describe_table(TableName="gatehouse-staging")["Table"]["LatestStreamArn"]
        context = readoption_context("staging", dynamodb=dynamodb, s3=s3, account=account)
        assert context == [
            "-c",
            "existingTableName=gatehouse-staging",
            "-c",
            f"existingTableStreamArn={stream}",
            "-c",
            f"existingUploadsBucketName={bucket}",
        ]
        switches = dict(part.split("=", 1) for part in context[1::2])
        app = cdk.App(context=switches)
        config = DeployConfig.from_context(app.node)
        assert config.table_name == "gatehouse-staging"
        assert config.uploads_bucket_name == bucket


class TestChaliceAuthorizerPolicy:
    def test_chalice_authorizer_policy_grants_what_the_cdk_authorizer_role_grants(
        self, plain: Assembly
    ) -> None:
        """``chalice deploy --stage prod`` gives ``bearer`` the same read-only grants."""
        config = json.loads((ROOT / ".chalice" / "config.json").read_text())
        functions = config["stages"]["prod"]["lambda_functions"]
        assert functions[runtime.AUTHORIZER_HANDLER] == {"iam_policy_file": AUTHORIZER_POLICY}
        document = json.loads((ROOT / ".chalice" / AUTHORIZER_POLICY).read_text())
        actions = {action for s in document["Statement"] for action in as_list(s["Action"])}
        granted = set(role_grants(plain.template("api"), runtime.AUTHORIZER_FUNCTION))
        assert actions - {"logs:CreateLogGroup"} == granted


class TestEverySwitch:
    """Every deploy switch on at once (``EVERYTHING``): each leaves its mark beside the others.
    cdk-nag ran during synthesis; the ``assembly`` tests (cfn-lint, tags, the environment, the
    Lambda dependencies) run over this assembly too. Each switch's own file tests it in detail:
    tests/test_cdk_{runtime,data,kms,waf,obs}.py."""

    def test_the_key_stacks_join_the_others(self, everything: Assembly) -> None:
        assert everything.stacks() == sorted(
            f"gatehouse-production-{name}.template.json"
            for name in (
                "api",
                "data",
                "edge",
                "edge-monitoring",
                "keys",
                "keys-eu-central-1",
                "keys-eu-west-1",
                "monitoring",
                "site",
            )
        )

    def test_the_table_is_replicated_encrypted_and_scaled(self, everything: Assembly) -> None:
        table = everything.one("data", "AWS::DynamoDB::GlobalTable")
        regions = sorted(replica["Region"] for replica in table["Replicas"])
        assert regions == ["eu-west-1", "eu-west-2"]
        assert table["SSESpecification"]["SSEType"] == "KMS"
        scaling = table["WriteProvisionedThroughputSettings"]["WriteCapacityAutoScalingSettings"]
        assert (scaling["MinCapacity"], scaling["MaxCapacity"]) == (2, 20)
        target = scaling["TargetTrackingScalingPolicyConfiguration"]["TargetValue"]
        assert target == 70

    def test_the_uploads_are_versioned_under_the_key(self, everything: Assembly) -> None:
        [uploads] = [
            bucket
            for name, bucket in everything.resources("data", "AWS::S3::Bucket").items()
            if name.startswith("Uploads")
        ]
        properties = uploads["Properties"]
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
        [rule] = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"

    def test_the_functions_are_in_the_vpc_reserved_and_traced(self, everything: Assembly) -> None:
        api = everything.template("api")["Resources"]
        kinds = {resource["Type"] for resource in api.values()}
        assert "AWS::EC2::VPC" in kinds
        assert not kinds & {"AWS::EC2::NatGateway", "AWS::EC2::InternetGateway"}
        functions = {
            name: resource["Properties"]
            for name, resource in api.items()
            if resource["Type"] == "AWS::Serverless::Function"
        }
        in_vpc = [name for name, properties in functions.items() if "VpcConfig" in properties]
        assert len(in_vpc) == len(functions) - 1  # the notify worker stays out (network.py)
        for name, properties in functions.items():
            assert properties["ReservedConcurrentExecutions"] == 5, name
            assert properties["Tracing"] == "Active", name

    def test_queues_log_groups_and_secrets_are_under_the_key(self, everything: Assembly) -> None:
        for queue in everything.resources("api", "AWS::SQS::Queue").values():
            assert "KmsMasterKeyId" in queue["Properties"]
        groups = everything.resources("api", "AWS::Logs::LogGroup")
        assert groups
        assert all("KmsKeyId" in group["Properties"] for group in groups.values())
        secrets = everything.resources("api", "AWS::SecretsManager::Secret")
        assert all("KmsKeyId" in secret["Properties"] for secret in secrets.values())
        [signing_key] = [
            secret["Properties"]
            for secret in secrets.values()
            if secret["Properties"]["Name"] == runtime.signing_key_name("production")
        ]
        replicas = sorted(replica["Region"] for replica in signing_key["ReplicaRegions"])
        assert replicas == ["eu-central-1", "eu-west-1"]

    def test_the_stage_logs_and_the_api_domain_has_its_web_acl(self, everything: Assembly) -> None:
        assert "AccessLogSetting" in everything.one("api", "AWS::Serverless::Api")
        regional = everything.one("api", "AWS::WAFv2::WebACL")
        assert regional["Scope"] == "REGIONAL"

    def test_the_edge_acl_has_every_rule(self, everything: Assembly) -> None:
        rules = {rule["Name"] for rule in everything.one("edge", "AWS::WAFv2::WebACL")["Rules"]}
        assert {"geo-block", "admin-allow-list", "rate-limit", "auth-rate-limit"} <= rules
        assert "AWSManagedRulesBotControlRuleSet" in rules

    def test_cloudfront_logs_and_cost_anomalies(self, everything: Assembly) -> None:
        # Standard logging v2 from us-east-1, never the legacy Logging (query strings).
        distribution = everything.one("site", "AWS::CloudFront::Distribution")
        assert "Logging" not in distribution["DistributionConfig"]
        assert everything.resources("edge-monitoring", "AWS::Logs::Delivery")
        assert everything.resources("edge-monitoring", "AWS::CE::AnomalyMonitor")
