"""The site unit: the built SvelteKit site in a private bucket behind CloudFront, the API under
/api/*.

CloudFront is global; its stack lives in the primary region beside the API. The bucket is read
only through Origin Access Control. Unknown paths get the SPA shell from a viewer-request function
on the site's behaviour alone, so the API's own 403 and 404 answers reach the browser unchanged
(distribution-wide custom error responses would turn them into HTML).
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_iam as iam
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as targets
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import custom_resources as cr
from constructs import Construct

from chalicelib.settings import EDGE_HEADER
from gatehouse_infra.csp import SPA_FALLBACK, content_security_policy
from gatehouse_infra.data import private_bucket
from gatehouse_infra.nag import acknowledge, finding
from gatehouse_infra.runtime import SITE_ORIGIN_HEADER, STAGE, WEBSOCKET_PATH

# The id aws-cdk-lib gives the one function behind every AwsCustomResource in a stack.
AWS_CUSTOM_RESOURCE_SINGLETON = "AWS679f53fac002430cb0da5b7982bd2287"
ALL_VIEWER_EXCEPT_HOST = cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER
IMMUTABLE = "_app/immutable/*"  # content-hashed file names: cache for a year
HSTS_SECONDS = 2 * 365 * 86400
# The WebSocket handshake's headers (CloudFront's guide names these), and the one-time ticket.
WEBSOCKET_HEADERS = (
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Extensions",
)
WEBSOCKET_QUERY = ("ticket",)

# Extension-less paths are client-side routes: serve the shell. Assets keep their own paths.
SPA_ROUTING = f"""
function handler(event) {{
  var request = event.request;
  var uri = request.uri;
  if (uri === "/" || uri === "/index.html") {{
    request.uri = "/index.html";
  }} else if (uri.slice(uri.lastIndexOf("/") + 1).indexOf(".") === -1) {{
    request.uri = "/{SPA_FALLBACK}";
  }}
  return request;
}}
"""

# The API learns the site's origin from the host the browser asked for; a value the client sent
# in the same header is overwritten.
SITE_ORIGIN = f"""
function handler(event) {{
  var request = event.request;
  request.headers["{SITE_ORIGIN_HEADER}"] = {{ value: "https://" + request.headers.host.value }};
  return request;
}}
"""

# With apiKeys, CloudFront sends the site's key as x-api-key on /api/* and would overwrite a
# machine client's own key, metering that client as the site. Machine clients call the API's own
# domain (api.<domain>) instead: through the site a request carrying a key is refused.
MACHINE_CLIENTS_ELSEWHERE = "Machine clients with an API key call the API's own domain"
SITE_ORIGIN_WITHOUT_KEYS = f"""
function handler(event) {{
  var request = event.request;
  if (request.headers["x-api-key"]) {{
    return {{
      statusCode: 403,
      statusDescription: "Forbidden",
      headers: {{
        "content-type": {{ value: "application/json" }},
        "cache-control": {{ value: "no-store" }}
      }},
      body: {{
        encoding: "text",
        data: JSON.stringify({{ message: "{MACHINE_CLIENTS_ELSEWHERE}" }})
      }}
    }};
  }}
  request.headers["{SITE_ORIGIN_HEADER}"] = {{ value: "https://" + request.headers.host.value }};
  return request;
}}
"""


class Site(Construct):
    """The site's bucket and deployment, the distribution (site + ``/api/*``), the security
    headers, the uploads bucket's CORS rule and, with a domain, the DNS aliases."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        site_dir: Path,
        access_logs: s3.IBucket,
        uploads: s3.IBucket,
        api_origin: str,
        websocket_origin: str,
        edge_key_reference: str,
        site_api_key_reference: str | None,
        domain_name: str | None,
        zone: route53.IHostedZone | None,
        certificate: acm.ICertificate | None,
        web_acl_arn: str | None,
    ) -> None:
        super().__init__(scope, id)
        stack = cdk.Stack.of(self)
        bucket = private_bucket(
            self,
            "Content",
            removal_policy=cdk.RemovalPolicy.DESTROY,
            auto_delete_objects=True,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="site/",
        )
        upload_hosts = [
            f"https://{uploads.bucket_name}.s3.{stack.region}.amazonaws.com",
            f"https://{uploads.bucket_name}.s3.amazonaws.com",
        ]
        headers = cloudfront.ResponseHeadersPolicy(
            self,
            "Headers",
            comment=f"{prefix}: HSTS, CSP and friends",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=cdk.Duration.seconds(HSTS_SECONDS),
                    include_subdomains=True,
                    override=True,
                ),
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=content_security_policy(site_dir, upload_hosts),
                    override=True,
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True
                ),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.STRICT_ORIGIN_WHEN_CROSS_ORIGIN,
                    override=True,
                ),
            ),
        )
        routing, site_origin = (
            cloudfront.FunctionAssociation(
                event_type=cloudfront.FunctionEventType.VIEWER_REQUEST,
                function=cloudfront.Function(
                    self,
                    name,
                    code=cloudfront.FunctionCode.from_inline(code),
                    runtime=cloudfront.FunctionRuntime.JS_2_0,
                    comment=comment,
                ),
            )
            for name, code, comment in (
                ("SpaRouting", SPA_ROUTING, "Client-side routes get the SPA shell"),
                (
                    "SiteOrigin",
                    SITE_ORIGIN_WITHOUT_KEYS if site_api_key_reference else SITE_ORIGIN,
                    "Tells the API which origin the browser used",
                ),
            )
        )
        api = origins.HttpOrigin(
            api_origin,
            protocol_policy=cloudfront.OriginProtocolPolicy.HTTPS_ONLY,
            origin_ssl_protocols=[cloudfront.OriginSslPolicy.TLS_V1_2],
            # Lets the API trust X-Forwarded-For and the site-origin header from us alone, and,
            # with usage plans, carries the site's API key.
            custom_headers={
                EDGE_HEADER: edge_key_reference,
                **({"x-api-key": site_api_key_reference} if site_api_key_reference else {}),
            },
        )
        # The WebSocket API's stage is "ws": /ws passes on unchanged, as /api/* does.
        websocket = origins.HttpOrigin(
            websocket_origin,
            protocol_policy=cloudfront.OriginProtocolPolicy.HTTPS_ONLY,
            origin_ssl_protocols=[cloudfront.OriginSslPolicy.TLS_V1_2],
            custom_headers={EDGE_HEADER: edge_key_reference},
        )
        websocket_requests = cloudfront.OriginRequestPolicy(
            self,
            "WebSocketRequests",
            comment=f"{prefix}: the WebSocket handshake and its ticket, nothing else",
            header_behavior=cloudfront.OriginRequestHeaderBehavior.allow_list(*WEBSOCKET_HEADERS),
            query_string_behavior=cloudfront.OriginRequestQueryStringBehavior.allow_list(
                *WEBSOCKET_QUERY
            ),
            cookie_behavior=cloudfront.OriginRequestCookieBehavior.none(),
        )
        domain_names = [domain_name] if domain_name else None
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment=f"{prefix} site and API",
            default_root_object="index.html",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                compress=True,
                response_headers_policy=headers,
                function_associations=[routing],
            ),
            additional_behaviors={
                # The path is passed on as it is: /api/auth/login is stage "api", route /auth/login.
                f"/{STAGE}/*": cloudfront.BehaviorOptions(
                    origin=api,
                    viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                    allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
                    cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
                    # Authorization, cookies, query strings; not Host (API Gateway needs its own).
                    origin_request_policy=ALL_VIEWER_EXCEPT_HOST,
                    # Nothing is cached, and CloudFront compresses only what it caches.
                    compress=False,
                    response_headers_policy=headers,
                    function_associations=[site_origin],
                ),
                WEBSOCKET_PATH: cloudfront.BehaviorOptions(
                    origin=websocket,
                    viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                    allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                    cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
                    origin_request_policy=websocket_requests,
                ),
            },
            domain_names=domain_names,
            certificate=certificate,
            # Only with our own certificate: the default *.cloudfront.net one has a fixed policy.
            minimum_protocol_version=(
                cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021 if certificate else None
            ),
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            enable_ipv6=True,
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            web_acl_id=web_acl_arn,
            # No legacy standard logging: it always writes the query string, where the reset
            # and verification links carry their tokens. cloudFrontLogs delivers standard
            # logging v2 instead, its fields chosen (gatehouse_infra/edgelogs.py, us-east-1).
        )
        self.origin = f"https://{domain_name or self.distribution.distribution_domain_name}"
        self.bucket = bucket
        self._deploy(bucket, site_dir)
        self._uploads_cors(uploads, prefix)
        if domain_name is not None and zone is not None:
            target = route53.RecordTarget.from_alias(targets.CloudFrontTarget(self.distribution))
            route53.ARecord(self, "Alias", zone=zone, record_name=domain_name, target=target)
            route53.AaaaRecord(self, "AliasV6", zone=zone, record_name=domain_name, target=target)
        self._acknowledge(
            bucket,
            waf=web_acl_arn is not None,
            certificate=certificate is not None,
        )

    def _deploy(self, bucket: s3.IBucket, site_dir: Path) -> None:
        """Hashed assets cached for a year; everything else revalidated; then an invalidation."""
        assets = s3deploy.BucketDeployment(
            self,
            "Assets",
            sources=[s3deploy.Source.asset(str(site_dir))],
            destination_bucket=bucket,
            include=[IMMUTABLE],
            exclude=["*"],
            prune=False,
            cache_control=[
                s3deploy.CacheControl.from_string("public, max-age=31536000, immutable")
            ],
            memory_limit=512,
        )
        pages = s3deploy.BucketDeployment(
            self,
            "Pages",
            sources=[s3deploy.Source.asset(str(site_dir))],
            destination_bucket=bucket,
            exclude=[IMMUTABLE],
            prune=False,
            cache_control=[s3deploy.CacheControl.from_string("no-cache")],
            distribution=self.distribution,
            distribution_paths=["/*"],
            memory_limit=512,
        )
        # New pages name new hashed assets: upload those before the pages and the invalidation.
        pages.node.add_dependency(assets)

    def _uploads_cors(self, uploads: s3.IBucket, prefix: str) -> None:
        """Presigned POSTs from the site's origin only; set here because only here is it known."""
        cors = {
            "CORSRules": [
                {
                    "AllowedOrigins": [self.origin],
                    "AllowedMethods": ["POST", "GET"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 600,
                }
            ]
        }
        call = cr.AwsSdkCall(
            service="S3",
            action="putBucketCors",
            parameters={"Bucket": uploads.bucket_name, "CORSConfiguration": cors},
            physical_resource_id=cr.PhysicalResourceId.of(f"{prefix}-uploads-cors"),
        )
        cr.AwsCustomResource(
            self,
            "UploadsCors",
            on_create=call,
            on_update=call,
            on_delete=cr.AwsSdkCall(
                service="S3",
                action="deleteBucketCors",
                parameters={"Bucket": uploads.bucket_name},
            ),
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [iam.PolicyStatement(actions=["s3:PutBucketCORS"], resources=[uploads.bucket_arn])]
            ),
            install_latest_aws_sdk=False,
        )

    def _acknowledge(self, bucket: s3.IBucket, *, waf: bool, certificate: bool) -> None:
        reasons = {
            "CFR1": "No geo restriction: the site serves everyone; add one per deployment.",
            "CFR3": (
                "Legacy standard logging (the distribution's Logging) always writes the query "
                "string, where reset and verification tokens travel. Access logs are the "
                "cloudFrontLogs switch: standard logging v2 from us-east-1, fields chosen; "
                "without it, request metrics and the API's own JSON request log."
            ),
        }
        if not waf:
            reasons["CFR2"] = (
                "WAF is a switch (enableWaf), off by default for cost (about $10/month); "
                "API Gateway throttling and the app's own limits still apply."
            )
        if not certificate:
            reasons["CFR4"] = (
                "Without a domain the distribution uses the default *.cloudfront.net "
                "certificate, for which CloudFront cannot enforce a TLS minimum."
            )
        acknowledge(self, reasons)
        # CDK's own singleton functions behind BucketDeployment and AwsCustomResource, which
        # CDK puts at the stack's root.
        stack = cdk.Stack.of(self)
        runtime = "CDK's provider function; its runtime and role come with aws-cdk-lib."
        content = finding(self, bucket.bucket_arn)
        assets = f"arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-{stack.region}"
        for child in stack.node.children:
            if child.node.id.startswith("Custom::CDKBucketDeployment"):
                copy = "BucketDeployment copies the site from CDK's asset bucket into its own."
                acknowledge(
                    child,
                    {
                        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                        "AWSLambdaBasicExecutionRole]": runtime,
                        "L1": runtime,
                        **{
                            f"IAM5[{finding}]": copy
                            for finding in (
                                "Action::s3:GetObject*",
                                "Action::s3:GetBucket*",
                                "Action::s3:List*",
                                "Action::s3:DeleteObject*",
                                "Action::s3:Abort*",
                                f"Resource::{assets}/*",
                                f"Resource::{content}/*",
                                "Resource::*",
                            )
                        },
                    },
                )
            elif child.node.id == AWS_CUSTOM_RESOURCE_SINGLETON:
                acknowledge(
                    child,
                    {
                        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                        "AWSLambdaBasicExecutionRole]": runtime
                    },
                )
