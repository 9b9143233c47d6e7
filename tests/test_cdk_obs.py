"""Observability switches: the business-metrics panel (always), CloudFront standard logs
(``cloudFrontLogs``) and cost anomaly detection (with ``alarmEmail``), off and on."""

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


class TestCloudFrontLogs:
    def test_off_no_logging_and_no_log_bucket(self, plain: Assembly) -> None:  # noqa: F811
        assert "Logging" not in distribution_config(plain)
        buckets = plain.resources("data", "AWS::S3::Bucket").values()
        assert all(
            bucket["Properties"].get("OwnershipControls", {}).get("Rules")
            == [{"ObjectOwnership": "BucketOwnerEnforced"}]
            for bucket in buckets
        )

    def test_on_logs_without_cookies_to_a_private_bucket_of_their_own(
        self, observed: Assembly
    ) -> None:
        logging = distribution_config(observed)["Logging"]
        assert logging["IncludeCookies"] is False
        assert logging["Prefix"] == "cloudfront/"
        assert "CloudFrontLogs" in json.dumps(logging["Bucket"])
        [(name, bucket)] = [
            (name, resource)
            for name, resource in observed.resources("data", "AWS::S3::Bucket").items()
            if name.startswith("CloudFrontLogs")
        ]
        properties = bucket["Properties"]
        # CloudFront's log delivery writes with an ACL grant: ACLs on, the bucket still private.
        assert properties["OwnershipControls"]["Rules"] == [
            {"ObjectOwnership": "BucketOwnerPreferred"}
        ]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        [rule] = properties["LifecycleConfiguration"]["Rules"]
        assert (rule["ExpirationInDays"], rule["Status"]) == (90, "Enabled")
        assert bucket["DeletionPolicy"] == "Retain"
        policies = observed.resources("data", "AWS::S3::BucketPolicy").values()
        ours = [p for p in policies if p["Properties"]["Bucket"] == {"Ref": name}]
        [statement] = ours[0]["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


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
