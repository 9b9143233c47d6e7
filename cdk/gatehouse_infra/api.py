"""API stack (primary region): the Chalice app, its roles, the signing secret and its rotation.

``chalice.cdk.Chalice`` runs ``chalice package`` during synthesis and includes the resulting SAM
template. CDK owns every IAM role (``manage_iam_role: false``), so each function gets exactly the
grants it needs instead of Chalice's generated policy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as targets
from aws_cdk import aws_secretsmanager as secretsmanager
from chalice.cdk import Chalice
from constructs import Construct

from chalicelib.objectkeys import UPLOAD_PREFIX
from chalicelib.settings import authorizer_ttl_seconds
from chalicelib.table import INDEXES
from gatehouse_infra.config import PROJECT, DeployConfig
from gatehouse_infra.data import DataStack
from gatehouse_infra.edge import hosted_zone
from gatehouse_infra.nag import acknowledge

ROOT = Path(__file__).resolve().parents[2]
STAGE = "api"  # the CloudFront behaviour /api/* maps straight onto this stage
ARCHITECTURE = "arm64"
# scrypt at N=2^14, r=8, p=5 needs 16 MiB and is CPU-bound: Lambda's CPU share grows with memory,
# and 1024 MB (about 0.6 vCPU) keeps a login near a quarter of a second (README, "Hashing").
MEMORY_MB = 1024
TIMEOUT_SECONDS = 10
ROTATION_MEMORY_MB = 256
ROTATION_TIMEOUT_SECONDS = 30
LOG_RETENTION = logs.RetentionDays.ONE_WEEK
SIGNING_KEY_ROTATION = cdk.Duration.days(30)
# Logical ids in the template ``chalice package`` writes.
API_FUNCTION = "APIHandler"
AUTHORIZER_FUNCTION = "Bearer"
ROTATION_FUNCTION = "RotateSigningKey"
REST_API = "RestAPI"
TABLE_ACTIONS = [
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:UpdateItem",
]
GATEWAY_RESPONSE_TEMPLATE = '{"message": $context.error.messageString}'
SITE_ORIGIN_HEADER = "x-gatehouse-site-origin"  # set by the Site stack's /api/* edge function


def cors_origin(config: DeployConfig) -> str:
    """Only the API's own domain answers cross-origin calls, and only from the site's origin."""
    return f"https://{config.domain_name}" if config.custom_api_domain else ""


class ApiStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeployConfig,
        data: DataStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        self.config = config
        # Built from the name rather than imported, so the ARN (and its cdk-nag finding) is stable.
        self._uploads_arn = f"arn:{self.partition}:s3:::{config.uploads_bucket_name}"
        self.signing_key = secretsmanager.Secret(
            self,
            "SigningKey",
            secret_name=f"{PROJECT}/{config.environment}/jwt-signing-key",
            description="HS256 key for Gatehouse access tokens (rotated by rotate_signing_key)",
            # 64 characters from 62 symbols: 381 random bits, above the 256 the app requires.
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True, include_space=False
            ),
        )
        # Proves to the API that a request came through CloudFront, which alone may vouch for
        # X-Forwarded-For.
        self.edge_key, self.edge_key_reference = self._shared_secret(
            "EdgeKey", "edge-key", "Shared by CloudFront and the API (x-gatehouse-edge header)", 48
        )
        log_groups = {
            name: logs.LogGroup(
                self,
                f"{name}Logs",
                log_group_name=_log_group_name(config, name),
                retention=LOG_RETENTION,
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )
            for name in (API_FUNCTION, AUTHORIZER_FUNCTION, ROTATION_FUNCTION)
        }
        api_role = self._api_role(data, [API_FUNCTION, AUTHORIZER_FUNCTION])
        rotation_role = self._rotation_role()
        self.chalice = self._package(config, data, api_role)
        # Roles with their policies, and the edge key its reference reads, before any function.
        self.chalice.node.add_dependency(api_role, rotation_role, self.edge_key)
        for name, group in log_groups.items():
            self.chalice.get_resource(name).add_property_override(
                "LoggingConfig", {"LogGroup": group.log_group_name, "LogFormat": "Text"}
            )
        # chalice.cdk passes stage_config as top-level settings only: per-function settings
        # there would be ignored, so the rotation function's role and size are set here.
        rotation_function = self.chalice.get_resource(ROTATION_FUNCTION)
        rotation_function.add_property_override("Role", rotation_role.role_arn)
        rotation_function.add_property_override("MemorySize", ROTATION_MEMORY_MB)
        rotation_function.add_property_override("Timeout", ROTATION_TIMEOUT_SECONDS)
        self._configure_rest_api(config)
        self.rest_api_id = self.chalice.get_resource(REST_API).ref
        self.execute_api_domain = f"{self.rest_api_id}.execute-api.{self.region}.amazonaws.com"
        self.function_names = {
            name: self.chalice.get_resource(name).ref
            for name in (API_FUNCTION, AUTHORIZER_FUNCTION, ROTATION_FUNCTION)
        }
        rotation = self.signing_key.add_rotation_schedule(
            "Rotation",
            rotation_lambda=self.chalice.get_function(ROTATION_FUNCTION),
            automatically_after=SIGNING_KEY_ROTATION,
        )
        permission = lambda_.CfnPermission(
            self,
            "SecretsManagerInvokesRotation",
            action="lambda:InvokeFunction",
            function_name=self.chalice.get_resource(ROTATION_FUNCTION).ref,
            principal="secretsmanager.amazonaws.com",
            source_account=self.account,
        )
        # The schedule rotates once on creation: the function and its permission must exist.
        rotation.node.add_dependency(self.chalice, permission)
        if config.custom_api_domain:
            self._custom_domain(config)
        self.site_api_key_reference: str | None = None
        if config.api_keys:
            self.site_api_key_reference = self._usage_plans(config)
        cdk.CfnOutput(self, "RestApiId", value=self.rest_api_id)
        cdk.CfnOutput(self, "ApiUrl", value=f"https://{self.execute_api_domain}/{STAGE}/")
        cdk.CfnOutput(self, "SigningKeySecretName", value=self.signing_key.secret_name)
        self._acknowledge(config)

    def _api_role(self, data: DataStack, functions: list[str]) -> iam.Role:
        """The API handler and the authorizer: the table, the secret (read), the uploads prefix."""
        table = data.table.table_arn
        return self._function_role(
            "ApiRole",
            "Gatehouse API handler and authorizer",
            functions,
            iam.PolicyStatement(
                actions=TABLE_ACTIONS,
                resources=[table, *(f"{table}/index/{index.name}" for index in INDEXES)],
            ),
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"], resources=[self.signing_key.secret_arn]
            ),
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
                resources=[f"{self._uploads_arn}/{UPLOAD_PREFIX}*"],
            ),
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self._uploads_arn],
                conditions={"StringLike": {"s3:prefix": [f"{UPLOAD_PREFIX}*"]}},
            ),
        )

    def _rotation_role(self) -> iam.Role:
        return self._function_role(
            "RotationRole",
            "Gatehouse signing-key rotation",
            [ROTATION_FUNCTION],
            iam.PolicyStatement(
                actions=[
                    "secretsmanager:DescribeSecret",
                    "secretsmanager:GetSecretValue",
                    "secretsmanager:PutSecretValue",
                    "secretsmanager:UpdateSecretVersionStage",
                ],
                resources=[self.signing_key.secret_arn],
            ),
        )

    def _function_role(
        self, id: str, description: str, functions: list[str], *grants: iam.PolicyStatement
    ) -> iam.Role:
        """A role for ``functions``: ``grants`` plus writing to their own log groups."""
        role = iam.Role(
            self,
            id,
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=description,
        )
        for grant in grants:
            role.add_to_policy(grant)
        self._grant_logging(role, functions)
        return role

    def _grant_logging(self, role: iam.Role, functions: list[str]) -> None:
        groups = [
            self.format_arn(
                service="logs",
                resource="log-group",
                resource_name=_log_group_name(self.config, function),
                arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
            )
            for function in functions
        ]
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[f"{group}:*" for group in groups],  # its streams
            )
        )

    def _package(
        self,
        config: DeployConfig,
        data: DataStack,
        api_role: iam.Role,
    ) -> Chalice:
        # Read when Chalice imports app.py to package it, like AUTHORIZER_TTL_SECONDS.
        os.environ["CORS_ALLOW_ORIGIN"] = cors_origin(config)
        os.environ["API_KEY_REQUIRED"] = "true" if config.api_keys else "false"
        environment = {
            "TABLE_NAME": data.table.table_name,
            "JWT_SECRET_ID": self.signing_key.secret_arn,
            "UPLOADS_BUCKET": data.uploads.bucket_name,
            # The site's origin: its domain if it has one; otherwise the CloudFront function on
            # /api/* reports the host the browser used (the distribution's own domain).
            "ALLOWED_ORIGINS": f"https://{config.domain_name}" if config.domain_name else "",
            "SITE_ORIGIN_HEADER": SITE_ORIGIN_HEADER,
            # Browser -> CloudFront -> API Gateway: the client is the second address from the right.
            "TRUSTED_PROXY_HOPS": "2",
            "AUTHORIZER_TTL_SECONDS": str(authorizer_ttl_seconds(os.environ)),
            "LOG_LEVEL": "INFO",
            "EDGE_SECRET": self.edge_key_reference,
        }
        return Chalice(
            self,
            "App",
            source_dir=str(ROOT),
            stage_config={
                "api_gateway_stage": STAGE,
                "api_gateway_endpoint_type": "REGIONAL",
                "lambda_architecture": ARCHITECTURE,
                "lambda_memory_size": MEMORY_MB,
                "lambda_timeout": TIMEOUT_SECONDS,
                "manage_iam_role": False,
                "iam_role_arn": api_role.role_arn,
                "autogen_policy": False,
                "environment_variables": environment,
                "tags": config.tags,
            },
        )

    def _configure_rest_api(self, config: DeployConfig) -> None:
        rest_api = self.chalice.get_resource(REST_API)
        rest_api.add_property_override("Name", f"{config.prefix}-api")
        rest_api.add_property_override(
            "MethodSettings",
            [
                {
                    "ResourcePath": "/*",
                    "HttpMethod": "*",
                    "ThrottlingRateLimit": config.throttle_rate_limit,
                    "ThrottlingBurstLimit": config.throttle_burst_limit,
                }
            ],
        )
        # API Gateway's own refusals (no token, denied, throttled, ...) carry {"message": ...}
        # like the app's errors. In the definition body so a change redeploys the stage.
        headers = {"gatewayresponse.header.Cache-Control": "'no-store'"}
        origin = cors_origin(config)
        if origin:
            headers["gatewayresponse.header.Access-Control-Allow-Origin"] = f"'{origin}'"
            headers["gatewayresponse.header.Vary"] = "'Origin'"
        rest_api.add_property_override(
            "DefinitionBody.x-amazon-apigateway-gateway-responses",
            {
                kind: {
                    "responseParameters": headers,
                    "responseTemplates": {"application/json": GATEWAY_RESPONSE_TEMPLATE},
                }
                for kind in ("DEFAULT_4XX", "DEFAULT_5XX")
            },
        )

    def _shared_secret(
        self, id: str, name: str, description: str, length: int
    ) -> tuple[secretsmanager.Secret, str]:
        """A generated value that CloudFront and API Gateway or Lambda both hold.

        Both read it at deploy time through CloudFormation's dynamic reference, so the value
        is in no template. Returns the secret and that reference (by name, a literal: no export).
        """
        secret_name = f"{PROJECT}/{self.config.environment}/{name}"
        secret = secretsmanager.Secret(
            self,
            id,
            secret_name=secret_name,
            description=f"Gatehouse: {description}",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=length, exclude_punctuation=True, include_space=False
            ),
        )
        acknowledge(
            secret,
            {
                "SMG4": "Read by CloudFormation into CloudFront and the API at deploy time, so "
                "it cannot rotate on its own; cdk/README.md gives the manual procedure.",
            },
        )
        return secret, cdk.SecretValue.secrets_manager(secret_name).unsafe_unwrap()

    def _after_stage(self, resource: cdk.CfnResource) -> None:
        """Waits for the stage SAM generates (<api><stage>Stage): made earlier, it fails."""
        resource.add_override("DependsOn", [REST_API, f"{REST_API}{STAGE}Stage"])
        cdk.Validations.of(resource).acknowledge(
            cdk.Acknowledgment(
                id="CloudFormation-Validate::E3005",
                reason="The stage exists once the SAM transform has run, before deployment.",
            )
        )

    def _usage_plans(self, config: DeployConfig) -> str:
        """Every route needs an API key: the site's (sent by CloudFront), or a machine client's.

        The site's key value is generated in Secrets Manager and read by CloudFormation, like the
        edge key; machine clients' keys are made by the operator and added to the machine plan
        (cdk/README.md). Returns the reference CloudFront sends as ``x-api-key``.
        """
        secret, reference = self._shared_secret(
            "SiteApiKeyValue", "site-api-key", "The API key CloudFront sends for the site", 40
        )
        key = apigateway.CfnApiKey(
            self, "SiteApiKey", name=f"{config.prefix}-site", enabled=True, value=reference
        )
        key.node.add_dependency(secret)
        stage = [apigateway.CfnUsagePlan.ApiStageProperty(api_id=self.rest_api_id, stage=STAGE)]
        # The site's plan adds no limit of its own: the stage throttle and WAF bound it.
        site_plan = apigateway.CfnUsagePlan(
            self, "SitePlan", usage_plan_name=f"{config.prefix}-site", api_stages=stage
        )
        machine_plan = apigateway.CfnUsagePlan(
            self,
            "MachinePlan",
            usage_plan_name=f"{config.prefix}-machines",
            description="Machine clients: add each client's key to this plan",
            api_stages=stage,
            throttle=apigateway.CfnUsagePlan.ThrottleSettingsProperty(
                rate_limit=config.machine_rate_limit, burst_limit=config.machine_burst_limit
            ),
            quota=apigateway.CfnUsagePlan.QuotaSettingsProperty(
                limit=config.machine_monthly_quota, period="MONTH"
            ),
        )
        for plan in (site_plan, machine_plan):
            self._after_stage(plan)
        apigateway.CfnUsagePlanKey(
            self, "SitePlanKey", key_id=key.ref, key_type="API_KEY", usage_plan_id=site_plan.ref
        )
        cdk.CfnOutput(self, "MachineUsagePlanId", value=machine_plan.ref)
        return reference

    def _custom_domain(self, config: DeployConfig) -> None:
        """``api.<domain>``: a regional endpoint, so its certificate lives in this region."""
        zone = hosted_zone(self, config)
        certificate = acm.Certificate(
            self,
            "ApiCertificate",
            domain_name=config.api_domain,
            validation=acm.CertificateValidation.from_dns(zone),
        )
        domain = apigateway.DomainName(
            self,
            "ApiDomain",
            domain_name=config.api_domain,
            certificate=certificate,
            endpoint_type=apigateway.EndpointType.REGIONAL,
            security_policy=apigateway.SecurityPolicy.TLS_1_2,
        )
        mapping = apigateway.CfnBasePathMapping(
            self,
            "ApiMapping",
            domain_name=domain.domain_name,
            rest_api_id=self.rest_api_id,
            stage=STAGE,
        )
        self._after_stage(mapping)
        alias = route53.RecordTarget.from_alias(targets.ApiGatewayDomain(domain))
        route53.ARecord(self, "ApiAlias", zone=zone, record_name=config.api_domain, target=alias)
        route53.AaaaRecord(
            self, "ApiAliasV6", zone=zone, record_name=config.api_domain, target=alias
        )
        cdk.CfnOutput(self, "ApiDomainUrl", value=f"https://{config.api_domain}/")

    def _acknowledge(self, config: DeployConfig) -> None:
        """The only wildcards: objects under uploads/ and the streams of our own log groups."""
        bucket = f"arn:<AWS::Partition>:s3:::{config.prefix}-uploads-<AWS::AccountId>"
        acknowledge(
            self.node.find_child("ApiRole"),
            {
                f"IAM5[Resource::{bucket}/{UPLOAD_PREFIX}*]": "Users' objects live under "
                "uploads/{username}/, created at run time; nothing else in the bucket is granted.",
                **{
                    f"IAM5[Resource::{_log_group_finding(self, name)}:*]": (
                        "Lambda names its log streams at run time; the group is the function's own."
                    )
                    for name in (API_FUNCTION, AUTHORIZER_FUNCTION)
                },
            },
        )
        acknowledge(
            self.node.find_child("RotationRole"),
            {
                f"IAM5[Resource::{_log_group_finding(self, ROTATION_FUNCTION)}:*]": (
                    "Lambda names its log streams at run time; the group is the function's own."
                )
            },
        )


def _log_group_name(config: DeployConfig, function: str) -> str:
    return f"/{PROJECT}/{config.environment}/{function}"


def _log_group_finding(stack: ApiStack, function: str) -> str:
    """How cdk-nag names the log group's ARN in a finding."""
    name = _log_group_name(stack.config, function)
    return f"arn:<AWS::Partition>:logs:{stack.region}:<AWS::AccountId>:log-group:{name}"
