"""Observability switches: the business-metrics panel (always), CloudFront access logs
(``cloudFrontLogs``: standard logging v2, its fields chosen) and cost anomaly detection (with
``alarmEmail``), off and on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib import metrics as business
from tests.test_cdk import Assembly, cfn_lint_errors, plain, site, synthesize  # noqa: F401

ALARM_EMAIL = "ops@example.com"
ON = {"cloudFrontLogs": True, "alarmEmail": ALARM_EMAIL}


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Assembly:  # noqa: F811
    """Every switch of this part on; cdk-nag fails the synthesis on any finding."""
    return synthesize(tmp_path_factory.mktemp("observed"), site, ON)


def distribution_config(assembly: Assembly) -> dict[str, Any]:
    config: dict[str, Any] = assembly.one("site", "AWS::CloudFront::Distribution")[
        "DistributionConfig"
    ]
    return config


def dashboard_widgets(assembly: Assembly) -> list[dict[str, Any]]:
    """The dashboard's widgets; the body is an Fn::Join whose tokens (names of other resources)
    sit inside JSON strings, read here as ``TOKEN``."""
    body = assembly.one("monitoring", "AWS::CloudWatch::Dashboard")["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    text = "".join(part if isinstance(part, str) else "TOKEN" for part in parts)
    widgets: list[dict[str, Any]] = json.loads(text)["widgets"]
    return widgets


def business_panel(assembly: Assembly) -> dict[str, Any]:
    [panel] = [
        widget
        for widget in dashboard_widgets(assembly)
        if widget["properties"].get("title") == "Sign-ups, logins and security signals"
    ]
    return panel


class TestBusinessMetricsPanel:
    @pytest.mark.parametrize("fixture", ["plain", "observed"])
    def test_the_dashboard_graphs_what_the_app_emits(
        self, fixture: str, request: pytest.FixtureRequest
    ) -> None:
        assembly: Assembly = request.getfixturevalue(fixture)
        panel = business_panel(assembly)
        assert panel["width"] == 24
        lines = panel["properties"]["metrics"]
        # [namespace, name, dimension, value, {options}]: the app's names, its one dimension.
        assert [line[:4] for line in lines] == [
            [business.NAMESPACE, name, business.DIMENSION, "production"]
            for name in business.METRICS
        ]
        axes = [line[4].get("yAxis", "left") for line in lines]
        assert axes == ["left"] * len(business.ACTIVITY) + ["right"] * len(business.SIGNALS)
        assert {line[4]["stat"] for line in lines} == {"Sum"}
        # 5-minute sums: 300 s is the graph's default period, which CDK leaves out.
        assert panel["properties"].get("period", 300) == 300

    def test_every_function_names_its_environment_for_the_dimension(
        self,
        plain: Assembly,  # noqa: F811
    ) -> None:
        functions = plain.resources("api", "AWS::Serverless::Function")
        assert functions
        for function in functions.values():
            assert function["Properties"]["Environment"]["Variables"]["ENVIRONMENT"] == (
                "production"
            )


DELIVERY_TYPES = (
    "AWS::Logs::DeliverySource",
    "AWS::Logs::DeliveryDestination",
    "AWS::Logs::Delivery",
)


def log_bucket(assembly: Assembly) -> tuple[str, dict[str, Any]]:
    [(name, bucket)] = [
        (name, resource)
        for name, resource in assembly.resources("edge-monitoring", "AWS::S3::Bucket").items()
        if name.startswith("CloudFrontLogs")
    ]
    return name, bucket


class TestCloudFrontLogs:
    def test_off_no_logging_no_delivery_and_no_log_bucket(
        self,
        plain: Assembly,  # noqa: F811
    ) -> None:
        assert "Logging" not in distribution_config(plain)
        for stack in plain.stacks():
            kinds = {
                resource["Type"]
                for resource in json.loads((plain.path / stack).read_text())["Resources"].values()
            }
            assert not kinds & set(DELIVERY_TYPES), stack
        assert not plain.resources("edge-monitoring", "AWS::S3::Bucket")
        buckets = plain.resources("data", "AWS::S3::Bucket").values()
        assert all(
            bucket["Properties"].get("OwnershipControls", {}).get("Rules")
            == [{"ObjectOwnership": "BucketOwnerEnforced"}]
            for bucket in buckets
        )

    def test_on_no_legacy_logging_on_the_distribution(self, observed: Assembly) -> None:
        # Legacy standard logs always carry the query string: never configured.
        assert "Logging" not in distribution_config(observed)
        assert not [
            name
            for name in observed.resources("data", "AWS::S3::Bucket")
            if name.startswith("CloudFrontLogs")
        ]

    def test_the_delivery_source_is_the_distribution_in_us_east_1(self, observed: Assembly) -> None:
        source = observed.one("edge-monitoring", "AWS::Logs::DeliverySource")
        assert source["LogType"] == "ACCESS_LOGS"
        assert source["Name"] == "gatehouse-production-cloudfront"
        # arn:<partition>:cloudfront::<account>:distribution/<the site stack's distribution>,
        # its id read across regions.
        parts = source["ResourceArn"]["Fn::Join"][1]
        assert parts[2] == ":cloudfront::"
        assert parts[4] == ":distribution/"
        assert "RefDistribution" in json.dumps(parts[5])
        manifest = json.loads((observed.path / "manifest.json").read_text())
        environment = manifest["artifacts"]["gatehouse-production-edge-monitoring"]["environment"]
        assert environment.endswith("/us-east-1")

    def test_the_delivery_keeps_no_field_that_may_carry_a_credential(
        self, observed: Assembly
    ) -> None:
        delivery = observed.one("edge-monitoring", "AWS::Logs::Delivery")
        fields = delivery["RecordFields"]
        never = {"cs-uri-query", "cs(Cookie)", "cs(Referer)", "x-forwarded-for", "cs-headers"}
        # Nor the real-time logs' spellings of the same fields.
        never |= {"cs-cookie", "cs-referer", "cs-header-names"}
        assert not set(fields) & never
        useful = {
            "date",
            "time",
            "x-edge-location",
            "x-edge-request-id",
            "c-ip",
            "cs-method",
            "cs(Host)",
            "cs-uri-stem",
            "sc-status",
            "sc-bytes",
            "cs-bytes",
            "time-taken",
            "time-to-first-byte",
            "cs(User-Agent)",
            "x-edge-result-type",
            "x-edge-detailed-result-type",
        }
        assert useful <= set(fields)
        assert len(fields) == len(set(fields))
        [source] = observed.resources("edge-monitoring", "AWS::Logs::DeliverySource")
        [destination] = observed.resources("edge-monitoring", "AWS::Logs::DeliveryDestination")
        assert delivery["DeliverySourceName"] == {"Ref": source}
        assert delivery["DeliveryDestinationArn"] == {"Fn::GetAtt": [destination, "Arn"]}

    def test_the_destination_is_a_private_bucket_of_their_own(self, observed: Assembly) -> None:
        name, bucket = log_bucket(observed)
        destination = observed.one("edge-monitoring", "AWS::Logs::DeliveryDestination")
        assert destination["DestinationResourceArn"] == {"Fn::GetAtt": [name, "Arn"]}
        assert destination["OutputFormat"] == "json"
        properties = bucket["Properties"]
        # Vended delivery needs no ACLs: the bucket owns every object.
        assert properties["OwnershipControls"]["Rules"] == [
            {"ObjectOwnership": "BucketOwnerEnforced"}
        ]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        [rule] = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
        [rule] = properties["LifecycleConfiguration"]["Rules"]
        assert (rule["ExpirationInDays"], rule["Status"]) == (90, "Enabled")
        assert bucket["DeletionPolicy"] == "Retain"
        assert {"Key": "Project", "Value": "gatehouse"} in properties["Tags"]

    def test_only_this_delivery_source_may_write_and_only_over_tls(
        self, observed: Assembly
    ) -> None:
        name, _ = log_bucket(observed)
        [(policy_name, policy)] = [
            (policy_name, resource)
            for policy_name, resource in observed.resources(
                "edge-monitoring", "AWS::S3::BucketPolicy"
            ).items()
            if resource["Properties"]["Bucket"] == {"Ref": name}
        ]
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        [tls] = [s for s in statements if s["Effect"] == "Deny"]
        assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        [write] = [s for s in statements if s["Effect"] == "Allow"]
        assert write["Principal"] == {"Service": "delivery.logs.amazonaws.com"}
        assert write["Action"] == "s3:PutObject"
        assert "AWSLogs/" in json.dumps(write["Resource"])
        [source] = observed.resources("edge-monitoring", "AWS::Logs::DeliverySource")
        assert write["Condition"] == {
            "StringEquals": {
                "s3:x-amz-acl": "bucket-owner-full-control",
                "aws:SourceAccount": {"Ref": "AWS::AccountId"},
            },
            "ArnLike": {"aws:SourceArn": {"Fn::GetAtt": [source, "Arn"]}},
        }
        # The policy exists before CloudWatch Logs looks for it (else it writes its own).
        resources = observed.template("edge-monitoring")["Resources"]
        for kind in ("AWS::Logs::DeliveryDestination", "AWS::Logs::Delivery"):
            [resource] = [r for r in resources.values() if r["Type"] == kind]
            assert policy_name in resource["DependsOn"], kind

    def test_the_delivery_resources_are_tagged(self, observed: Assembly) -> None:
        for kind in DELIVERY_TYPES:
            resource = observed.one("edge-monitoring", kind)
            assert {"Key": "Project", "Value": "gatehouse"} in resource["Tags"], kind


class TestCostAnomalies:
    def test_none_without_an_alarm_address(self, plain: Assembly) -> None:  # noqa: F811
        template = plain.template("edge-monitoring")
        kinds = {resource["Type"] for resource in template["Resources"].values()}
        assert not {"AWS::CE::AnomalyMonitor", "AWS::CE::AnomalySubscription"} & kinds
        assert "costalerts" not in json.dumps(template)

    def test_a_monitor_of_the_projects_costs_in_us_east_1(self, observed: Assembly) -> None:
        monitor = observed.one("edge-monitoring", "AWS::CE::AnomalyMonitor")
        assert monitor["MonitorType"] == "CUSTOM"
        # This environment's costs only: another environment in the account has its own.
        assert json.loads(monitor["MonitorSpecification"]) == {
            "And": [
                {"Tags": {"Key": "Project", "Values": ["gatehouse"], "MatchOptions": ["EQUALS"]}},
                {
                    "Tags": {
                        "Key": "Environment",
                        "Values": ["production"],
                        "MatchOptions": ["EQUALS"],
                    }
                },
            ]
        }
        assert {"Key": "Project", "Value": "gatehouse"} in monitor["ResourceTags"]
        manifest = json.loads((observed.path / "manifest.json").read_text())
        environment = manifest["artifacts"]["gatehouse-production-edge-monitoring"]["environment"]
        assert environment.endswith("/us-east-1")

    def test_anomalies_of_10_dollars_go_at_once_to_the_alarm_topic(
        self, observed: Assembly
    ) -> None:
        subscription = observed.one("edge-monitoring", "AWS::CE::AnomalySubscription")
        [topic] = observed.resources("edge-monitoring", "AWS::SNS::Topic")
        assert subscription["Frequency"] == "IMMEDIATE"
        assert subscription["Subscribers"] == [{"Type": "SNS", "Address": {"Ref": topic}}]
        [monitor] = observed.resources("edge-monitoring", "AWS::CE::AnomalyMonitor")
        assert subscription["MonitorArnList"] == [{"Fn::GetAtt": [monitor, "MonitorArn"]}]
        assert json.loads(subscription["ThresholdExpression"]) == {
            "Dimensions": {
                "Key": "ANOMALY_TOTAL_IMPACT_ABSOLUTE",
                "MatchOptions": ["GREATER_THAN_OR_EQUAL"],
                "Values": ["10"],
            }
        }
        email = observed.one("edge-monitoring", "AWS::SNS::Subscription")
        assert (email["Protocol"], email["Endpoint"]) == ("email", ALARM_EMAIL)

    def test_cost_anomaly_detection_may_publish_for_this_account_only(
        self, observed: Assembly
    ) -> None:
        policy = observed.one("edge-monitoring", "AWS::SNS::TopicPolicy")
        [statement] = [
            s
            for s in policy["PolicyDocument"]["Statement"]
            if s["Principal"] == {"Service": "costalerts.amazonaws.com"}
        ]
        assert (statement["Effect"], statement["Action"]) == ("Allow", "sns:Publish")
        assert statement["Condition"] == {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        }


class TestLint:
    def test_cfn_lint_finds_no_errors_with_the_switches_on(self, observed: Assembly) -> None:
        assert cfn_lint_errors(observed) == []
