"""The ``vpc`` switch: a VPC of private isolated subnets for the functions, and the endpoints
through which alone they reach AWS.

No internet gateway and no NAT: the subnets' route tables hold the VPC's own range and the two
gateway endpoints' prefix lists (DynamoDB, S3), nothing else. Every other AWS API the functions
call has an interface endpoint with private DNS, so the SDK's usual host names resolve to it.
The functions' security group may open connections on 443 to those endpoints only.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from gatehouse_infra import runtime
from gatehouse_infra.nag import acknowledge
from gatehouse_infra.site import AWS_CUSTOM_RESOURCE_SINGLETON

AZS = 2
# What the prefix-list look-ups may do: IAM authorizes it on "*" only.
UNSCOPED_ACTIONS = ("ec2:DescribeManagedPrefixLists",)
CIDR = "10.40.0.0/16"
SUBNET_MASK = 20  # 4,091 addresses per subnet: Lambda's network interfaces are shared, few
HTTPS = 443
# The AWS APIs the functions call besides DynamoDB and S3 (app.py's clients), by the service
# whose interface endpoint serves them. SES v2 only while mail is on; X-Ray only while tracing is
# on (Lambda's X-Ray daemon sends the segments from the function's network). The WebSocket API's
# @connections (apigatewaymanagementapi) is not reachable through an endpoint: see
# OUTSIDE_VPC in api.py.
SECRETS_MANAGER = "SecretsManager"
EVENTBRIDGE = "EventBridge"
EMAIL = "Email"
XRAY = "XRay"
INTERFACE_SERVICES = {
    SECRETS_MANAGER: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    EVENTBRIDGE: ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE,
    EMAIL: ec2.InterfaceVpcEndpointAwsService.EMAIL,
    XRAY: ec2.InterfaceVpcEndpointAwsService.XRAY,
}
# By name: the service, and the last part of its managed prefix list's name.
GATEWAY_SERVICES = {
    "DynamoDb": (ec2.GatewayVpcEndpointAwsService.DYNAMODB, "dynamodb"),
    "S3": (ec2.GatewayVpcEndpointAwsService.S3, "s3"),
}
# What Lambda does with a function's role to attach it to the subnets (the actions of AWS's
# AWSLambdaVPCAccessExecutionRole). The EC2 API is unreachable from the subnets (no endpoint),
# so only Lambda itself can use them.
LAMBDA_VPC_ACTIONS = (
    "ec2:AssignPrivateIpAddresses",
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:UnassignPrivateIpAddresses",
)


class Network(Construct):
    """The VPC, its endpoints, the functions' security group and the policy Lambda needs on
    every role of a function placed in it."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        environment: str,
        mail: bool,
        tracing: bool,
        retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, id)
        stack = cdk.Stack.of(self)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            vpc_name=runtime.prefix(environment),
            ip_addresses=ec2.IpAddresses.cidr(CIDR),
            max_azs=AZS,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="Functions",
                    subnet_type=ec2.SubnetType.PRIVATE_ISOLATED,
                    cidr_mask=SUBNET_MASK,
                )
            ],
            gateway_endpoints={
                name: ec2.GatewayVpcEndpointOptions(service=service)
                for name, (service, _) in GATEWAY_SERVICES.items()
            },
        )
        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            log_group_name=runtime.log_group_name(environment, "vpc-flow-logs"),
            retention=retention,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.subnet_ids = self.vpc.select_subnets(
            subnet_type=ec2.SubnetType.PRIVATE_ISOLATED
        ).subnet_ids
        self.functions = ec2.SecurityGroup(
            self,
            "Functions",
            vpc=self.vpc,
            description="Gatehouse functions: HTTPS to the VPC endpoints only",
            allow_all_outbound=False,
        )
        endpoints = ec2.SecurityGroup(
            self,
            "Endpoints",
            vpc=self.vpc,
            description="Gatehouse interface endpoints: HTTPS from the functions only",
            allow_all_outbound=False,
        )
        self.functions.connections.allow_to(
            endpoints, ec2.Port.tcp(HTTPS), "HTTPS to the interface endpoints"
        )
        self.interface_endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        for name, service in INTERFACE_SERVICES.items():
            if (name == EMAIL and not mail) or (name == XRAY and not tracing):
                continue
            self.interface_endpoints[name] = self.vpc.add_interface_endpoint(
                name,
                service=service,
                private_dns_enabled=True,
                security_groups=[endpoints],
                open=False,
                subnets=subnets,
            )
        # The gateway endpoints are reached through their managed prefix lists, whose ids
        # differ per region and account and which CloudFormation cannot name: read at deploy.
        for name, (_, suffix) in GATEWAY_SERVICES.items():
            prefix_list = self._prefix_list_id(name, f"com.amazonaws.{stack.region}.{suffix}")
            self.functions.add_egress_rule(
                ec2.Peer.prefix_list(prefix_list), ec2.Port.tcp(HTTPS), f"HTTPS to {name}"
            )
        singleton = stack.node.try_find_child(AWS_CUSTOM_RESOURCE_SINGLETON)
        if singleton is not None:
            acknowledge(
                singleton,
                {
                    "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole]": "CDK's provider function behind "
                    "AwsCustomResource; its runtime and role come with aws-cdk-lib.",
                },
            )
        self.lambda_access = iam.ManagedPolicy(
            self,
            "LambdaVpcAccess",
            description="Lambda attaches Gatehouse's functions to the VPC with these",
            statements=[
                iam.PolicyStatement(actions=list(LAMBDA_VPC_ACTIONS), resources=["*"]),
            ],
        )
        acknowledge(
            self.lambda_access,
            {
                "IAM5[Resource::*]": "The actions of AWS's AWSLambdaVPCAccessExecutionRole, which "
                "Lambda performs with the function's role when it creates the function's network "
                "interfaces (their ids are unknown in advance; the Describe actions take no "
                "resource). The functions cannot use them: the subnets reach no EC2 endpoint.",
            },
        )

    def _prefix_list_id(self, name: str, prefix_list_name: str) -> str:
        lookup = cr.AwsCustomResource(
            self,
            f"{name}PrefixList",
            on_create=self._describe(prefix_list_name),
            on_update=self._describe(prefix_list_name),
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [iam.PolicyStatement(actions=list(UNSCOPED_ACTIONS), resources=["*"])]
            ),
            install_latest_aws_sdk=False,
        )
        policy = lookup.node.try_find_child("CustomResourcePolicy")
        if policy is not None:
            acknowledge(
                policy,
                {
                    "IAM5[Resource::*]": "DescribeManagedPrefixLists authorizes on no resource "
                    "of its own; it reads the region's AWS-managed prefix list ids, no data.",
                },
            )
        return lookup.get_response_field("PrefixLists.0.PrefixListId")

    @staticmethod
    def _describe(prefix_list_name: str) -> cr.AwsSdkCall:
        return cr.AwsSdkCall(
            service="EC2",
            action="describeManagedPrefixLists",
            parameters={"Filters": [{"Name": "prefix-list-name", "Values": [prefix_list_name]}]},
            physical_resource_id=cr.PhysicalResourceId.of(prefix_list_name),
            output_paths=["PrefixLists.0.PrefixListId"],
        )
