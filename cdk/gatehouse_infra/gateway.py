"""API Gateway around the packaged app, for the API construct: the stage's throttling and JSON
gateway responses, usage plans and the site's key, the optional ``api.<domain>``.

Functions that build into the API construct's scope, so their resources keep the logical ids
they had when the API stack built them.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_iam as iam
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as targets
from constructs import Construct, IDependable

from chalicelib.web.gateway import GATEWAY_RESPONSES
from gatehouse_infra.nag import acknowledge
from gatehouse_infra.runtime import STAGE

REST_API = "RestAPI"  # the logical id ``chalice package`` gives the API
OPENAPI_VERSION = "2.0"  # what Chalice's definition body is


def configure_rest_api(
    rest_api: cdk.CfnResource,
    *,
    name: str,
    rate_limit: int,
    burst_limit: int,
    cors_allow_origin: str | None,
) -> None:
    rest_api.add_property_override("Name", name)
    # Without OpenApiVersion, SAM also deploys the API to a stage named "Stage": unthrottled,
    # unmonitored, reachable around CloudFront. Any version removes it; the definition body keeps
    # Chalice's Swagger 2.0 (SAM converts only bodies without a "swagger" key).
    rest_api.add_property_override("OpenApiVersion", OPENAPI_VERSION)
    rest_api.add_property_override(
        "MethodSettings",
        [
            {
                "ResourcePath": "/*",
                "HttpMethod": "*",
                "ThrottlingRateLimit": rate_limit,
                "ThrottlingBurstLimit": burst_limit,
            }
        ],
    )
    # API Gateway's own refusals (no token, denied, throttled, ...) carry {"message": ...}
    # like the app's errors. In the definition body so a change redeploys the stage.
    headers = {"gatewayresponse.header.Cache-Control": "'no-store'"}
    if cors_allow_origin:
        headers["gatewayresponse.header.Access-Control-Allow-Origin"] = f"'{cors_allow_origin}'"
        headers["gatewayresponse.header.Vary"] = "'Origin'"
    # The same answers chalice local and the test client give (tools/localgateway.py).
    rest_api.add_property_override(
        "DefinitionBody.x-amazon-apigateway-gateway-responses",
        {
            response.kind: {
                **({"statusCode": str(response.status)} if response.status else {}),
                "responseParameters": headers,
                "responseTemplates": {"application/json": response.template},
            }
            for response in GATEWAY_RESPONSES
        },
    )


def usage_plans(
    scope: Construct,
    *,
    prefix: str,
    rest_api_id: str,
    site_key_value: str,
    site_key_secret: IDependable,
    machine_rate_limit: int,
    machine_burst_limit: int,
    machine_monthly_quota: int,
) -> str:
    """Every route needs an API key: the site's (sent by CloudFront), or a machine client's.

    The site's key has the value CloudFormation reads from ``site_key_secret``; machine clients'
    keys are made by the operator and added to the machine plan (cdk/README.md), whose id this
    returns.
    """
    key = apigateway.CfnApiKey(
        scope, "SiteApiKey", name=f"{prefix}-site", enabled=True, value=site_key_value
    )
    key.node.add_dependency(site_key_secret)
    stage = [apigateway.CfnUsagePlan.ApiStageProperty(api_id=rest_api_id, stage=STAGE)]
    # The site's plan adds no limit of its own: the stage throttle and WAF bound it.
    site_plan = apigateway.CfnUsagePlan(
        scope, "SitePlan", usage_plan_name=f"{prefix}-site", api_stages=stage
    )
    machine_plan = apigateway.CfnUsagePlan(
        scope,
        "MachinePlan",
        usage_plan_name=f"{prefix}-machines",
        description="Machine clients: add each client's key to this plan",
        api_stages=stage,
        throttle=apigateway.CfnUsagePlan.ThrottleSettingsProperty(
            rate_limit=machine_rate_limit, burst_limit=machine_burst_limit
        ),
        quota=apigateway.CfnUsagePlan.QuotaSettingsProperty(
            limit=machine_monthly_quota, period="MONTH"
        ),
    )
    for plan in (site_plan, machine_plan):
        _after_stage(plan)
    apigateway.CfnUsagePlanKey(
        scope, "SitePlanKey", key_id=key.ref, key_type="API_KEY", usage_plan_id=site_plan.ref
    )
    return machine_plan.ref


def custom_domain(
    scope: Construct, *, domain_name: str, zone: route53.IHostedZone, rest_api_id: str
) -> str:
    """``api.<domain>``: a regional endpoint, so its certificate lives in this region. Returns
    its URL."""
    certificate = acm.Certificate(
        scope,
        "ApiCertificate",
        domain_name=domain_name,
        validation=acm.CertificateValidation.from_dns(zone),
    )
    domain = apigateway.DomainName(
        scope,
        "ApiDomain",
        domain_name=domain_name,
        certificate=certificate,
        endpoint_type=apigateway.EndpointType.REGIONAL,
        security_policy=apigateway.SecurityPolicy.TLS_1_2,
    )
    mapping = apigateway.CfnBasePathMapping(
        scope, "ApiMapping", domain_name=domain.domain_name, rest_api_id=rest_api_id, stage=STAGE
    )
    _after_stage(mapping)
    alias = route53.RecordTarget.from_alias(targets.ApiGatewayDomain(domain))
    route53.ARecord(scope, "ApiAlias", zone=zone, record_name=domain_name, target=alias)
    route53.AaaaRecord(scope, "ApiAliasV6", zone=zone, record_name=domain_name, target=alias)
    return f"https://{domain_name}/"


def _after_stage(resource: cdk.CfnResource) -> None:
    """Waits for the stage SAM generates (<api><stage>Stage): made earlier, it fails."""
    resource.add_override("DependsOn", [REST_API, f"{REST_API}{STAGE}Stage"])
    cdk.Validations.of(resource).acknowledge(
        cdk.Acknowledgment(
            id="CloudFormation-Validate::E3005",
            reason="The stage exists once the SAM transform has run, before deployment.",
        )
    )


# One JSON line per request (apiAccessLogs). Every value quoted: API Gateway writes "-" for one it
# lacks (no integration latency on a refusal, no principal without the authorizer). The address
# is the caller API Gateway saw: CloudFront's, for the site's traffic (the viewer's is in the
# app's own request log, which trusts X-Forwarded-For only with the edge key).
REST_ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "time": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "method": "$context.httpMethod",
    "path": "$context.path",
    "route": "$context.resourcePath",
    "status": "$context.status",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "user": "$context.authorizer.principalId",
    "userAgent": "$context.identity.userAgent",
    "responseLength": "$context.responseLength",
    "error": "$context.error.responseType",
}
WEBSOCKET_ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "time": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "event": "$context.eventType",
    "route": "$context.routeKey",
    "connectionId": "$context.connectionId",
    "status": "$context.status",
    "integrationLatencyMs": "$context.integrationLatency",
    "error": "$context.error.messageString",
}
# What API Gateway needs of the account-wide role it writes every API's logs with.
CLOUDWATCH_ROLE_POLICY = "service-role/AmazonAPIGatewayPushToCloudWatchLogs"


def access_log_format(fields: dict[str, str]) -> str:
    return json.dumps(fields, separators=(",", ":"))


def account_cloudwatch_role(scope: Construct) -> cdk.CfnResource:
    """API Gateway writes access logs with one role per account and region (its account
    settings). Each environment's API stack sets its own; both are kept when a stack is deleted,
    so the setting never points at a deleted role (cdk/README.md, "Logs and storage")."""
    role = iam.Role(
        scope,
        "ApiGatewayCloudWatchRole",
        assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
        description="API Gateway's account-wide role for writing CloudWatch logs",
        managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(CLOUDWATCH_ROLE_POLICY)],
    )
    role.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
    acknowledge(
        role,
        {
            f"IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{CLOUDWATCH_ROLE_POLICY}]": (
                "API Gateway uses this one role for every API of the account and region (other "
                "applications' too), which log to groups they name: AWS's policy for it is the "
                "one that serves them all."
            ),
        },
    )
    account = apigateway.CfnAccount(scope, "ApiGatewayAccount", cloud_watch_role_arn=role.role_arn)
    account.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
    return account
