"""The runtime switches (cdk/README.md, "Deploy switches"): ``vpc``, ``reservedConcurrency``,
``tracing`` and ``apiAccessLogs``, off (the default context, ``plain``) and on (``switched``).

Synthesis runs cdk-nag, which fails it on any unacknowledged finding, so each fixture is also
the cdk-nag check.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_logs as logs

from tests.conftest import ROOT
from tests.test_cdk import (
    SAM_TRANSLATE,
    SAM_TRANSLATE_STAGES,
    Assembly,
    cfn_lint_errors,
    plain,  # noqa: F401
    sam_transform,
    site,  # noqa: F401
    synthesize,
)

sys.path.insert(0, str(ROOT / "cdk"))
from gatehouse_infra import runtime
from gatehouse_infra.api import OUTSIDE_VPC, TRACING_ACTIONS
from gatehouse_infra.network import (
    CIDR,
    EVENTBRIDGE,
    LAMBDA_VPC_ACTIONS,
    SECRETS_MANAGER,
    Network,
)

RESERVED = 5
SWITCHED = {
    "vpc": True,
    "reservedConcurrency": RESERVED,
    "tracing": True,
    "apiAccessLogs": False,
    # Mail on, so the SES endpoint is there too.
    "mailFrom": "Gatehouse <no-reply@example.com>",
    "siteUrl": "https://d111111abcdef8.cloudfront.net",
}
FUNCTIONS = {
    runtime.API_FUNCTION,
    runtime.AUTHORIZER_FUNCTION,
    runtime.ROTATION_FUNCTION,
    *(handler.function for handler in runtime.EVENT_HANDLERS),
}
NOT_THERE = {
    "AWS::EC2::InternetGateway",
    "AWS::EC2::VPCGatewayAttachment",
    "AWS::EC2::NatGateway",
    "AWS::EC2::EIP",
    "AWS::EC2::EgressOnlyInternetGateway",
    "AWS::EC2::Route",  # the gateway endpoints' routes are the endpoints' own, not resources
}
HTTPS = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443}
# What each access log line must say, by the API Gateway variable it comes from.
REST_FIELDS = {
    "$context.requestId",
    "$context.identity.sourceIp",
    "$context.httpMethod",
    "$context.path",
    "$context.status",
    "$context.responseLatency",
    "$context.integrationLatency",
    "$context.authorizer.principalId",
}
WEBSOCKET_FIELDS = {
    "$context.requestId",
    "$context.identity.sourceIp",
    "$context.eventType",
    "$context.routeKey",
    "$context.connectionId",
    "$context.status",
}
PUSH_TO_CLOUDWATCH = "service-role/AmazonAPIGatewayPushToCloudWatchLogs"


@pytest.fixture(scope="module")
def switched(tmp_path_factory: pytest.TempPathFactory, site: Any) -> Assembly:  # noqa: F811
    return synthesize(tmp_path_factory.mktemp("runtime"), site, SWITCHED)


def functions(assembly: Assembly) -> dict[str, dict[str, Any]]:
    found = {
        name: resource["Properties"]
        for name, resource in assembly.resources("api", "AWS::Serverless::Function").items()
    }
    assert set(found) == FUNCTIONS
    return found


def logical_id(reference: Any) -> str:
    """The logical id a Ref or Fn::GetAtt names."""
    if "Ref" in reference:
        return str(reference["Ref"])
    return str(reference["Fn::GetAtt"][0])


def depends_on(assembly: Assembly, name: str) -> list[str]:
    value = assembly.template("api")["Resources"][name].get("DependsOn", [])
    return [value] if isinstance(value, str) else list(value)


def one_named(assembly: Assembly, kind: str, pattern: str) -> tuple[str, dict[str, Any]]:
    found = [
        (name, resource)
        for name, resource in assembly.resources("api", kind).items()
        if re.fullmatch(pattern, name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} named {pattern}"
    return found[0]


class TestOff:
    """The default context: no VPC, no reservations, no X-Ray; access logs on."""

    def test_no_network(self, plain: Assembly) -> None:  # noqa: F811
        types = {resource["Type"] for resource in plain.template("api")["Resources"].values()}
        assert not {kind for kind in types if kind.startswith("AWS::EC2::")}
        for name, properties in functions(plain).items():
            assert "VpcConfig" not in properties, name

    def test_no_reservation_and_no_tracing(self, plain: Assembly) -> None:  # noqa: F811
        for name, properties in functions(plain).items():
            assert "ReservedConcurrentExecutions" not in properties, name
            assert properties.get("Tracing", "PassThrough") != "Active", name
        assert not plain.one("api", "AWS::Serverless::Api").get("TracingEnabled", False)
        policies = plain.resources("api", "AWS::IAM::ManagedPolicy")
        statements = [
            statement
            for policy in policies.values()
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        ]
        assert not [s for s in statements if "xray:PutTraceSegments" in s["Action"]]

    def test_the_queues_pollers_have_no_ceiling(self, plain: Assembly) -> None:  # noqa: F811
        for mapping in sam_transform(plain).values():
            if mapping["Type"] == "AWS::Lambda::EventSourceMapping":
                assert "ScalingConfig" not in mapping["Properties"]

    def test_the_rest_stage_writes_json_access_logs(self, plain: Assembly) -> None:  # noqa: F811
        setting = plain.one("api", "AWS::Serverless::Api")["AccessLogSetting"]
        fields = json.loads(setting["Format"])
        assert set(fields.values()) >= REST_FIELDS
        assert {"requestId", "ip", "method", "path", "status", "latencyMs", "user"} <= set(fields)
        self._retained(plain, setting["DestinationArn"], "rest-access")

    def test_the_websocket_stage_writes_json_access_logs(self, plain: Assembly) -> None:  # noqa: F811
        setting = plain.one("api", "AWS::ApiGatewayV2::Stage")["AccessLogSettings"]
        assert set(json.loads(setting["Format"]).values()) >= WEBSOCKET_FIELDS
        self._retained(plain, setting["DestinationArn"], "websocket-access")

    @staticmethod
    def _retained(assembly: Assembly, arn: Any, name: str) -> None:
        group = assembly.template("api")["Resources"][logical_id(arn)]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert group["Properties"] == {
            "LogGroupName": runtime.log_group_name("production", name),
            "RetentionInDays": runtime.LOG_RETENTION_DAYS,
            "Tags": group["Properties"]["Tags"],
        }

    def test_api_gateway_logs_with_the_accounts_role_kept_on_delete(
        self,
        plain: Assembly,  # noqa: F811
    ) -> None:
        (name, account) = one_named(plain, "AWS::ApiGateway::Account", "ApiGatewayAccount")
        assert account["DeletionPolicy"] == "Retain"
        role = plain.template("api")["Resources"][
            logical_id(account["Properties"]["CloudWatchRoleArn"])
        ]
        assert role["DeletionPolicy"] == "Retain"
        document = role["Properties"]["AssumeRolePolicyDocument"]
        assert [s["Principal"] for s in document["Statement"]] == [
            {"Service": "apigateway.amazonaws.com"}
        ]
        (policy,) = role["Properties"]["ManagedPolicyArns"]
        assert policy["Fn::Join"][1][-1].endswith(PUSH_TO_CLOUDWATCH)
        # A stage may log only once the account's role is set.
        assert name in depends_on(plain, "RestAPI")
        assert name in depends_on(plain, "WebsocketAPIStage")

    def test_after_the_sam_transform_the_stage_logs(self, plain: Assembly) -> None:  # noqa: F811
        made = sam_transform(plain, SAM_TRANSLATE_STAGES)
        (stage,) = [r for r in made.values() if r["Type"] == "AWS::ApiGateway::Stage"]
        assert stage["Properties"]["StageName"] == runtime.STAGE
        assert "AccessLogSetting" in stage["Properties"]
        assert not stage["Properties"].get("TracingEnabled", False)
        rest_api = sam_transform(
            plain, SAM_TRANSLATE.replace("AWS::Events::Rule", "AWS::ApiGateway::RestApi")
        )["RestAPI"]
        assert "ApiGatewayAccount" in rest_api["DependsOn"]


class TestOn:
    """vpc, reservedConcurrency=5, tracing, apiAccessLogs=false, with mail."""

    def test_private_isolated_subnets_in_two_zones(self, switched: Assembly) -> None:
        vpc = switched.one("api", "AWS::EC2::VPC")
        assert vpc["CidrBlock"] == CIDR
        assert vpc["EnableDnsHostnames"] is True
        assert vpc["EnableDnsSupport"] is True
        subnets = switched.resources("api", "AWS::EC2::Subnet")
        assert sorted(
            json.dumps(s["Properties"]["AvailabilityZone"]) for s in subnets.values()
        ) == [json.dumps({"Fn::Select": [i, {"Fn::GetAZs": ""}]}) for i in range(2)]
        for subnet in subnets.values():
            assert subnet["Properties"]["MapPublicIpOnLaunch"] is False
        types = {r["Type"] for r in switched.template("api")["Resources"].values()}
        assert not types & NOT_THERE

    def test_gateway_endpoints_on_every_route_table(self, switched: Assembly) -> None:
        tables = sorted(switched.resources("api", "AWS::EC2::RouteTable"))
        assert len(tables) == 2
        gateways = {}
        for endpoint in switched.resources("api", "AWS::EC2::VPCEndpoint").values():
            properties = endpoint["Properties"]
            if properties.get("VpcEndpointType", "Gateway") == "Gateway":
                service = properties["ServiceName"]["Fn::Join"][1][-1]
                gateways[service] = sorted(logical_id(t) for t in properties["RouteTableIds"])
        assert gateways == {".dynamodb": tables, ".s3": tables}

    def test_interface_endpoints_with_private_dns(self, switched: Assembly) -> None:
        subnets = sorted(switched.resources("api", "AWS::EC2::Subnet"))
        endpoints_sg, _ = one_named(switched, "AWS::EC2::SecurityGroup", "NetworkEndpoints.*")
        services = set()
        for endpoint in switched.resources("api", "AWS::EC2::VPCEndpoint").values():
            properties = endpoint["Properties"]
            if properties.get("VpcEndpointType") != "Interface":
                continue
            services.add(properties["ServiceName"])
            assert properties["PrivateDnsEnabled"] is True
            assert sorted(logical_id(s) for s in properties["SubnetIds"]) == subnets
            assert [logical_id(g) for g in properties["SecurityGroupIds"]] == [endpoints_sg]
        # Every AWS API the functions call but DynamoDB, S3 and @connections (app.py's clients),
        # and X-Ray, where Lambda's daemon sends the traces (tracing is on).
        assert services == {
            "com.amazonaws.eu-west-2.secretsmanager",
            "com.amazonaws.eu-west-2.events",
            "com.amazonaws.eu-west-2.email",
            "com.amazonaws.eu-west-2.xray",
        }

    def test_the_xray_endpoint_only_while_tracing(self) -> None:
        """vpc without tracing (and without mail): no X-Ray endpoint, nor SES's."""
        stack = cdk.Stack(cdk.App(), "network", env=cdk.Environment(region="eu-west-2"))
        network = Network(
            stack,
            "Network",
            environment="production",
            mail=False,
            tracing=False,
            retention=logs.RetentionDays.ONE_MONTH,
        )
        assert sorted(network.interface_endpoints) == sorted((EVENTBRIDGE, SECRETS_MANAGER))

    def test_the_functions_may_reach_the_endpoints_only(self, switched: Assembly) -> None:
        functions_sg, group = one_named(switched, "AWS::EC2::SecurityGroup", "NetworkFunctions.*")
        endpoints_sg, endpoints = one_named(
            switched, "AWS::EC2::SecurityGroup", "NetworkEndpoints.*"
        )
        for properties in (group["Properties"], endpoints["Properties"]):
            assert "SecurityGroupIngress" not in properties
            # No inline rule but CDK's match-nothing placeholder (255.255.255.255/32, ICMP).
            for rule in properties.get("SecurityGroupEgress", []):
                assert rule["CidrIp"] == "255.255.255.255/32"
        egress = [
            r["Properties"]
            for r in switched.resources("api", "AWS::EC2::SecurityGroupEgress").values()
        ]
        assert all(logical_id(rule["GroupId"]) == functions_sg for rule in egress)
        assert all({key: rule[key] for key in HTTPS} == HTTPS for rule in egress)
        to_groups = [
            logical_id(r["DestinationSecurityGroupId"])
            for r in egress
            if "DestinationSecurityGroupId" in r
        ]
        assert to_groups == [endpoints_sg]
        lookups = switched.resources("api", "Custom::AWS")
        prefix_lists = sorted(
            json.loads(lookups[logical_id(r["DestinationPrefixListId"])]["Properties"]["Create"])[
                "parameters"
            ]["Filters"][0]["Values"][0]
            for r in egress
            if "DestinationPrefixListId" in r
        )
        assert prefix_lists == ["com.amazonaws.eu-west-2.dynamodb", "com.amazonaws.eu-west-2.s3"]
        assert len(egress) == 3
        ingress = [
            r["Properties"]
            for r in switched.resources("api", "AWS::EC2::SecurityGroupIngress").values()
        ]
        assert len(ingress) == 1
        assert logical_id(ingress[0]["GroupId"]) == endpoints_sg
        assert logical_id(ingress[0]["SourceSecurityGroupId"]) == functions_sg
        assert {key: ingress[0][key] for key in HTTPS} == HTTPS

    def test_flow_logs_with_the_functions_retention(self, switched: Assembly) -> None:
        flow_log = switched.one("api", "AWS::EC2::FlowLog")
        assert flow_log["TrafficType"] == "ALL"
        assert flow_log["LogDestinationType"] == "cloud-watch-logs"
        group = switched.template("api")["Resources"][logical_id(flow_log["LogGroupName"])]
        assert group["Properties"]["RetentionInDays"] == runtime.LOG_RETENTION_DAYS

    def test_every_function_but_the_notifier_runs_in_the_subnets(self, switched: Assembly) -> None:
        subnets = sorted(switched.resources("api", "AWS::EC2::Subnet"))
        functions_sg, _ = one_named(switched, "AWS::EC2::SecurityGroup", "NetworkFunctions.*")
        for name, properties in functions(switched).items():
            if name in OUTSIDE_VPC:
                assert "VpcConfig" not in properties
                continue
            config = properties["VpcConfig"]
            assert sorted(logical_id(s) for s in config["SubnetIds"]) == subnets, name
            assert [logical_id(g) for g in config["SecurityGroupIds"]] == [functions_sg], name
        assert {runtime.WORKER_HANDLERS["notify"].function} == OUTSIDE_VPC

    def test_reservations_and_tracing_on_every_function(self, switched: Assembly) -> None:
        for name, properties in functions(switched).items():
            assert properties["ReservedConcurrentExecutions"] == RESERVED, name
            assert properties["Tracing"] == "Active", name
        api = switched.one("api", "AWS::Serverless::Api")
        assert api["TracingEnabled"] is True

    def test_the_queues_pollers_stay_within_the_reservation(self, switched: Assembly) -> None:
        mappings = {
            logical_id(mapping["Properties"]["FunctionName"]): mapping["Properties"]
            for mapping in sam_transform(switched).values()
            if mapping["Type"] == "AWS::Lambda::EventSourceMapping"
        }
        workers = {handler.function for handler in runtime.WORKER_HANDLERS.values()}
        assert workers <= set(mappings)
        for function, mapping in mappings.items():
            if function in workers:
                assert mapping["ScalingConfig"] == {"MaximumConcurrency": RESERVED}
            else:  # the stream's: Lambda polls a shard at a time
                assert "ScalingConfig" not in mapping

    def test_the_roles_get_what_lambda_needs_first(self, switched: Assembly) -> None:
        roles = {
            name: logical_id(properties["Role"]) for name, properties in functions(switched).items()
        }
        policies = switched.resources("api", "AWS::IAM::ManagedPolicy")
        by_actions = {}
        for policy_name, policy in policies.items():
            (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
            assert statement["Resource"] == "*"
            actions = statement["Action"]
            by_actions[tuple(sorted(actions if isinstance(actions, list) else [actions]))] = (
                policy_name,
                sorted(logical_id(role) for role in policy["Properties"]["Roles"]),
            )
        tracing, traced_roles = by_actions[tuple(sorted(TRACING_ACTIONS))]
        assert traced_roles == sorted(set(roles.values()))
        vpc_access, vpc_roles = by_actions[tuple(sorted(LAMBDA_VPC_ACTIONS))]
        assert vpc_roles == sorted({roles[f] for f in roles if f not in OUTSIDE_VPC})
        for name in roles:
            needed = {tracing} | ({vpc_access} if name not in OUTSIDE_VPC else set())
            assert needed <= set(depends_on(switched, name)), name

    def test_no_access_logs(self, switched: Assembly) -> None:
        assert "AccessLogSetting" not in switched.one("api", "AWS::Serverless::Api")
        assert "AccessLogSettings" not in switched.one("api", "AWS::ApiGatewayV2::Stage")
        assert not switched.resources("api", "AWS::ApiGateway::Account")

    def test_after_the_sam_transform_the_stage_is_traced(self, switched: Assembly) -> None:
        made = sam_transform(switched, SAM_TRANSLATE_STAGES)
        (stage,) = [r for r in made.values() if r["Type"] == "AWS::ApiGateway::Stage"]
        assert stage["Properties"]["TracingEnabled"] is True
        assert "AccessLogSetting" not in stage["Properties"]

    def test_the_switches_leave_the_code_and_its_layer_alone(
        self,
        switched: Assembly,
        plain: Assembly,  # noqa: F811
    ) -> None:
        """The same code zip and dependencies' layer (Chalice's automatic_layer: named by
        requirements.txt's hash, so only a change there makes a new one)."""
        layers = set()
        code = set()
        for stack in (plain, switched):
            layer = stack.template("api")["Resources"]["ManagedLayer"]["Properties"]
            assert layer["RetentionPolicy"] == "Delete"
            assert layer["LayerName"] == "gatehouse-production-dependencies"
            layers.add(json.dumps(layer["ContentUri"]))
            code |= {json.dumps(p["CodeUri"]) for p in functions(stack).values()}
        assert len(layers) == 1
        assert len(code) == 1

    def test_cfn_lint_is_clean(self, switched: Assembly) -> None:
        assert cfn_lint_errors(switched) == []
