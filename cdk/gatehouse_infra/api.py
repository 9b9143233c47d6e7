"""The API unit: the Chalice app, its roles and log groups, the signing key and its rotation.

``chalice.cdk.Chalice`` runs ``chalice package`` during synthesis and includes the resulting SAM
template. CDK owns every IAM role (``manage_iam_role: false``), so each function gets exactly the
grants ``runtime.py`` names instead of Chalice's generated policy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

import aws_cdk as cdk
from aws_cdk import aws_apigatewayv2 as apigatewayv2
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from chalice.cdk import Chalice
from constructs import Construct

from chalicelib.objectkeys import UPLOAD_PREFIX
from gatehouse_infra import runtime
from gatehouse_infra.bytecode import compile_zip
from gatehouse_infra.encryption import encrypt_secret, function_grants
from gatehouse_infra.events import Events
from gatehouse_infra.gateway import (
    REST_ACCESS_LOG_FORMAT,
    REST_API,
    WEBSOCKET_ACCESS_LOG_FORMAT,
    access_log_format,
    account_cloudwatch_role,
    configure_rest_api,
    custom_domain,
    usage_plans,
)
from gatehouse_infra.nag import acknowledge, finding
from gatehouse_infra.network import Network
from gatehouse_infra.runtime import (
    API_FUNCTION,
    AUTHORIZER_FUNCTION,
    ROTATION_FUNCTION,
    STAGE,
    Grant,
)

ROOT = Path(__file__).resolve().parents[2]
# What chalice package names the WebSocket API and its stage.
WEBSOCKET_API = "WebsocketAPI"
WEBSOCKET_STAGE_RESOURCE = "WebsocketAPIStage"
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"
MANAGED_LAYER = "ManagedLayer"  # chalice package's layer of requirements.txt (automatic_layer)
SIGNING_KEY_ROTATION = cdk.Duration.days(30)
# The WebSocket @connections API is public and API Gateway's VPC endpoint reaches private APIs
# only (with its private DNS, every *.execute-api name would answer 403): the one function that
# posts to connections stays outside the VPC (cdk/README.md, "Network").
OUTSIDE_VPC = frozenset({runtime.WORKER_HANDLERS["notify"].function})
# The least MaximumConcurrency an SQS event source mapping takes.
MIN_QUEUE_CONCURRENCY = 2
# X-Ray's two write actions: they take no resource, so only "*" matches.
TRACING_ACTIONS = ("xray:PutTelemetryRecords", "xray:PutTraceSegments")
# runtime.LOG_RETENTION_DAYS as CDK's enum (jsii enums are not built from their number).
RETENTION = {
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
}


class SigningKeyOptions(TypedDict, total=False):
    """The ``replicaRegions``/``secretReplicaRegions`` and ``kmsKey`` switches' part of the
    signing key: where Secrets Manager replicates it, and the key encrypting it there."""

    replica_regions: Sequence[secretsmanager.ReplicaRegion]
    encryption_key: kms.IKey | None


class Api(Construct):
    """The API behind CloudFront: handler, ``bearer`` authorizer and key rotation; throttling,
    JSON gateway responses and, as switched on, usage plans and ``api.<domain>``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        environment: str,
        tags: Mapping[str, str],
        table: dynamodb.ITable,
        table_name: str,
        uploads: s3.IBucket,
        allowed_origins: str,
        cors_allow_origin: str | None,
        throttle_rate_limit: int,
        throttle_burst_limit: int,
        api_keys: bool,
        machine_rate_limit: int,
        machine_burst_limit: int,
        machine_monthly_quota: int,
        api_domain: str | None,
        zone: route53.IHostedZone | None,
        mail_from: str,
        mail_configuration_set: str,
        mail_arns: tuple[str, ...],
        site_url: str,
        events: Events,
        backups: s3.IBucket,
        websocket_url: str,
        edge_required: bool = False,
        network: Network | None = None,
        reserved_concurrency: int = 0,
        tracing: bool = False,
        access_logs: bool = False,
        existing_signing_key_arn: str | None = None,
        signing_key_options: SigningKeyOptions | None = None,
        key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, id)
        # Each function's role, by the function's logical id (_function_role fills it).
        self._roles: dict[str, iam.Role] = {}
        self._access_logs = access_logs
        self._environment = environment
        self._prefix = runtime.prefix(environment)
        self.name = f"{self._prefix}-api"
        self._table_name = table_name
        stack = cdk.Stack.of(self)
        # kmsKey: the edge and site keys' secrets under the key; the roles' use of it for the
        # queues (encryption.function_grants).
        self._key = key
        self._key_grants = function_grants(key, self) if key else {}
        self.signing_key = self._signing_key(
            environment, signing_key_arn=existing_signing_key_arn, **(signing_key_options or {})
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
                log_group_name=runtime.log_group_name(environment, name),
                retention=RETENTION[runtime.LOG_RETENTION_DAYS],
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )
            for name in (API_FUNCTION, AUTHORIZER_FUNCTION, ROTATION_FUNCTION)
        }
        signing_key_arn = self.signing_key.secret_arn
        api_role = self._function_role(
            "ApiRole",
            "Gatehouse API handler",
            [API_FUNCTION],
            runtime.api_grants(
                table_arn=table.table_arn,
                signing_key_arn=signing_key_arn,
                uploads_bucket_arn=uploads.bucket_arn,
                mail_arns=mail_arns,
            ),
        )
        # The authorizer only reads: the signing key, a profile and a session.
        authorizer_role = self._function_role(
            "AuthorizerRole",
            "Gatehouse bearer authorizer (read-only)",
            [AUTHORIZER_FUNCTION],
            runtime.authorizer_grants(table_arn=self._table_arn(), signing_key_arn=signing_key_arn),
        )
        rotation_role = self._function_role(
            "RotationRole",
            "Gatehouse signing-key rotation",
            [ROTATION_FUNCTION],
            runtime.rotation_grants(signing_key_arn=signing_key_arn),
        )
        environment_variables = {
            **runtime.environment_variables(
                table_name=table.table_name,
                signing_key_id=signing_key_arn,
                uploads_bucket=uploads.bucket_name,
                # The site's origin: its domain if it has one; otherwise the CloudFront function
                # on /api/* reports the host the browser used (the distribution's own domain).
                allowed_origins=allowed_origins,
                proxy_hops=runtime.API_GATEWAY_HOPS + runtime.CLOUDFRONT_HOPS,
                cors_allow_origin=cors_allow_origin or "",
                api_key_required=api_keys,
                mail_from=mail_from,
                configuration_set=mail_configuration_set,
                site_url=site_url,
            ),
            "SITE_ORIGIN_HEADER": runtime.SITE_ORIGIN_HEADER,
            "EDGE_SECRET": self.edge_key_reference,
            **runtime.edge_variables(required=edge_required, exempt_domain=api_domain),
            **runtime.event_variables(
                environment,
                stream_arn=_stream_arn(table),
                websocket_url=websocket_url,
                backups_bucket=backups.bucket_name,
            ),
        }
        self.chalice = _package(stack, environment_variables, tags, api_role)
        # A new version replaces the layer when requirements.txt changes; none is kept unused.
        layer = self.chalice.get_resource(MANAGED_LAYER)
        layer.add_property_override("RetentionPolicy", "Delete")
        layer.add_property_override("LayerName", f"{self._prefix}-dependencies")
        # Roles with their policies, and the edge key its reference reads, before any function.
        self.chalice.node.add_dependency(api_role, authorizer_role, rotation_role, self.edge_key)
        for name, group in log_groups.items():
            self.chalice.get_resource(name).add_property_override(
                "LoggingConfig", {"LogGroup": group.log_group_name, "LogFormat": "Text"}
            )
        # chalice.cdk passes stage_config as top-level settings only: per-function settings
        # there would be ignored, so the rotation function's role and size are set here.
        self.chalice.get_resource(AUTHORIZER_FUNCTION).add_property_override(
            "Role", authorizer_role.role_arn
        )
        rotation_function = self.chalice.get_resource(ROTATION_FUNCTION)
        rotation_function.add_property_override("Role", rotation_role.role_arn)
        rotation_function.add_property_override("MemorySize", runtime.ROTATION_MEMORY_MB)
        rotation_function.add_property_override("Timeout", runtime.ROTATION_TIMEOUT_SECONDS)
        rest_api = self.chalice.get_resource(REST_API)
        configure_rest_api(
            rest_api,
            name=self.name,
            rate_limit=throttle_rate_limit,
            burst_limit=throttle_burst_limit,
            cors_allow_origin=cors_allow_origin,
        )
        self.rest_api_id = rest_api.ref
        self.execute_api_domain = f"{self.rest_api_id}.execute-api.{stack.region}.amazonaws.com"
        self.url = f"https://{self.execute_api_domain}/{STAGE}/"
        self.function_names = {
            name: self.chalice.get_resource(name).ref
            for name in (API_FUNCTION, AUTHORIZER_FUNCTION, ROTATION_FUNCTION)
        }
        self._event_functions(
            table=table,
            events=events,
            uploads=uploads,
            backups=backups,
            mail_arns=mail_arns,
            throttle_rate_limit=throttle_rate_limit,
            throttle_burst_limit=throttle_burst_limit,
        )
        self._function_switches(
            network=network, reserved_concurrency=reserved_concurrency, tracing=tracing
        )
        if tracing:
            rest_api.add_property_override("TracingEnabled", True)
        if access_logs:
            self._write_access_logs(rest_api)
        if isinstance(self.signing_key, secretsmanager.Secret):
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
                source_account=stack.account,
                # Only the rotation of this secret may invoke it.
                source_arn=self.signing_key.secret_arn,
            )
            # The schedule rotates once on creation: the function and its permission must exist.
            rotation.node.add_dependency(self.chalice, permission)
        self.domain_url: str | None = None
        if api_domain is not None and zone is not None:
            self.domain_url = custom_domain(
                self, domain_name=api_domain, zone=zone, rest_api_id=self.rest_api_id
            )
        self.site_api_key_reference: str | None = None
        self.machine_plan_id: str | None = None
        if api_keys:
            secret, self.site_api_key_reference = self._shared_secret(
                "SiteApiKeyValue", "site-api-key", "The API key CloudFront sends for the site", 40
            )
            self.machine_plan_id = usage_plans(
                self,
                prefix=self._prefix,
                rest_api_id=self.rest_api_id,
                site_key_value=self.site_api_key_reference,
                site_key_secret=secret,
                machine_rate_limit=machine_rate_limit,
                machine_burst_limit=machine_burst_limit,
                machine_monthly_quota=machine_monthly_quota,
            )
        self._acknowledge(uploads)

    def _signing_key(
        self,
        environment: str,
        *,
        signing_key_arn: str | None,
        replica_regions: Sequence[secretsmanager.ReplicaRegion] = (),
        encryption_key: kms.IKey | None = None,
    ) -> secretsmanager.ISecret:
        """The signing key: created here (with its replicas, under ``encryption_key``), or, for
        a deploy in a replica region (``existingSigningKeyArn``), the replica there, read-only
        and rotated by the primary region's stack."""
        if signing_key_arn is not None:
            return secretsmanager.Secret.from_secret_complete_arn(
                self, "SigningKey", signing_key_arn
            )
        return secretsmanager.Secret(
            self,
            "SigningKey",
            secret_name=runtime.signing_key_name(environment),
            description="HS256 key for Gatehouse access tokens (rotated by rotate_signing_key)",
            # 64 characters from 62 symbols: 381 random bits, above the 256 the app requires.
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True, include_space=False
            ),
            encryption_key=encryption_key,
            replica_regions=list(replica_regions) or None,
        )

    def _event_functions(
        self,
        *,
        table: dynamodb.ITable,
        events: Events,
        uploads: s3.IBucket,
        backups: s3.IBucket,
        mail_arns: tuple[str, ...],
        throttle_rate_limit: int,
        throttle_burst_limit: int,
    ) -> None:
        """The event handlers: each function's role, log group and timeout; the real ARNs and
        the failure handling chalice package leaves out of their event sources; the WebSocket
        API on stage ``ws``, throttled, and its @connections endpoint for every function."""
        stack = cdk.Stack.of(self)
        self._require_handlers()
        websocket_api = self.chalice.get_resource(WEBSOCKET_API)
        websocket_api.add_property_override("Name", f"{self._prefix}-websocket")
        stage = self.chalice.get_resource(WEBSOCKET_STAGE_RESOURCE)
        stage.add_property_override("StageName", runtime.WEBSOCKET_STAGE)
        stage.add_property_override(
            "DefaultRouteSettings",
            {
                "ThrottlingRateLimit": throttle_rate_limit,
                "ThrottlingBurstLimit": throttle_burst_limit,
            },
        )
        self.websocket_api_id = websocket_api.ref
        self.websocket_domain = f"{websocket_api.ref}.execute-api.{stack.region}.{stack.url_suffix}"
        endpoint = f"https://{self.websocket_domain}/{runtime.WEBSOCKET_STAGE}"
        self.chalice.sam_template.get_output(
            "WebsocketConnectEndpointURL"
        ).value = f"wss://{self.websocket_domain}/{runtime.WEBSOCKET_STAGE}"
        grants = runtime.event_grants(
            table_arn=self._table_arn(),
            stream_arn=_stream_arn(table),
            bus_arn=events.bus.event_bus_arn,
            stream_failures_arn=events.stream_failures.queue_arn,
            queue_arns={worker: queue.queue_arn for worker, queue in events.queues.items()},
            connections_arn=stack.format_arn(
                service="execute-api",
                resource=websocket_api.ref,
                resource_name=runtime.WEBSOCKET_STAGE,
            ),
            uploads_bucket_arn=uploads.bucket_arn,
            backups_bucket_arn=backups.bucket_arn,
            mail_arns=mail_arns,
        )
        for handler in runtime.EVENT_HANDLERS:
            name = handler.function
            group = logs.LogGroup(
                self,
                f"{name}Logs",
                log_group_name=runtime.log_group_name(self._environment, name),
                retention=RETENTION[runtime.LOG_RETENTION_DAYS],
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )
            role = self._function_role(
                f"{name}Role", f"Gatehouse {handler.name}", [name], grants[name]
            )
            function = self.chalice.get_resource(name)
            function.add_property_override("Role", role.role_arn)
            function.add_property_override("Timeout", handler.timeout)
            function.add_property_override(
                "LoggingConfig", {"LogGroup": group.log_group_name, "LogFormat": "Text"}
            )
            # Its role's policies first: Lambda checks them when it creates the event source.
            function.node.add_dependency(role, *self._unscoped_policy(role, name, grants[name]))
            self._acknowledge_event_role(role, name, grants[name])
        for function in (*self.function_names, *(h.function for h in runtime.EVENT_HANDLERS)):
            self.chalice.get_resource(function).add_property_override(
                "Environment.Variables.WEBSOCKET_ENDPOINT", endpoint
            )
        stream = runtime.STREAM_HANDLER
        self.chalice.get_resource(stream.function).add_property_override(
            f"Events.{stream.event}.Properties",
            {
                "Stream": _stream_arn(table),
                "MaximumRetryAttempts": runtime.STREAM_MAX_RETRY_ATTEMPTS,
                "BisectBatchOnFunctionError": True,
                "MaximumRecordAgeInSeconds": runtime.STREAM_MAX_RECORD_AGE_SECONDS,
                "DestinationConfig": {
                    "OnFailure": {"Type": "SQS", "Destination": events.stream_failures.queue_arn}
                },
                "FunctionResponseTypes": [REPORT_BATCH_ITEM_FAILURES],
            },
        )
        for worker, handler in runtime.WORKER_HANDLERS.items():
            self.chalice.get_resource(handler.function).add_property_override(
                f"Events.{handler.event}.Properties",
                {
                    "Queue": events.queues[worker].queue_arn,
                    "FunctionResponseTypes": [REPORT_BATCH_ITEM_FAILURES],
                },
            )
        self._acknowledge_websocket()
        self.job_function_names = {
            handler.function: self.chalice.get_resource(handler.function).ref
            for handler in runtime.JOB_HANDLERS
        }

    def _require_handlers(self) -> None:
        """Fails synthesis naming every event handler app.py lacks (cdk/README.md, Events)."""
        missing = []
        for handler in runtime.EVENT_HANDLERS:
            try:
                self.chalice.get_resource(handler.function)
            except RuntimeError:
                missing.append(f"{handler.name} ({handler.function})")
        if missing:
            raise ValueError(
                "app.py must define these event handlers, packaged under these names: "
                + ", ".join(missing)
            )

    def _acknowledge_websocket(self) -> None:
        for route in ("Connect", "Disconnect", "Message"):
            acknowledge(
                self.chalice.get_resource(f"Websocket{route}Route"),
                {
                    "APIG4": "$connect is authorized by the one-time ticket its handler consumes "
                    "(POST /auth/ws-ticket needs a bearer token) and refuses without one; "
                    "$disconnect and $default only reach connections $connect accepted.",
                },
            )
        if not self._access_logs:
            acknowledge(
                self.chalice.get_resource(WEBSOCKET_STAGE_RESOURCE),
                {
                    "APIG1": "Access logs are switched off (apiAccessLogs=false); the connect "
                    "handler still logs each connection.",
                },
            )

    def _acknowledge_event_role(self, role: iam.Role, function: str, grants: list[Grant]) -> None:
        """The wildcards: Lambda's log streams, objects under a prefix, exports, connections."""
        reasons = {
            f"IAM5[Resource::{finding(self, self._log_group_arn(function))}:*]": "Lambda names "
            "its log streams at run time; the group is the function's own."
        }
        why = {
            "DeleteObjects": "Users' objects live under uploads/users/{name}/, created at run "
            "time; nothing else in the bucket is granted.",
            "WriteExport": "DynamoDB names each export's objects at run time, under "
            "backups/database/ only.",
            "DescribeExport": "Each export of this table gets an id at run time.",
            "PostToConnections": "API Gateway names each connection at run time; only posting "
            "on this API's stage is granted.",
        }
        for grant in grants:
            for resource in grant.resources:
                if grant.sid in why and "*" in resource and resource != runtime.ANY_RESOURCE:
                    reasons[f"IAM5[Resource::{finding(self, resource)}]"] = why[grant.sid]
        acknowledge(role, reasons)

    def _function_role(
        self, id: str, description: str, functions: list[str], grants: list[Grant]
    ) -> iam.Role:
        """A role for ``functions``: ``grants`` plus writing to their own log groups, and, with
        kmsKey, their use of the key for the queues."""
        for name in functions:
            grants = [*grants, *self._key_grants.get(name, [])]
        role = iam.Role(
            self,
            id,
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=description,
        )
        for grant in grants:
            if grant.resources == (runtime.ANY_RESOURCE,):
                continue  # in a policy of its own (_unscoped_policy)
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=list(grant.actions),
                    resources=list(grant.resources),
                    conditions=dict(grant.conditions) or None,
                )
            )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=list(runtime.LOG_ACTIONS),
                resources=[f"{self._log_group_arn(function)}:*" for function in functions],
            )
        )
        self._roles.update(dict.fromkeys(functions, role))
        return role

    @property
    def functions(self) -> tuple[str, ...]:
        """Every function's logical id."""
        return tuple(self._roles)

    def role(self, function: str) -> iam.Role:
        """The role of the function whose logical id is ``function``."""
        try:
            return self._roles[function]
        except KeyError:
            raise KeyError(f"no function {function}: {sorted(self._roles)}") from None

    def _function_switches(
        self, *, network: Network | None, reserved_concurrency: int, tracing: bool
    ) -> None:
        """The ``vpc``, ``reservedConcurrency`` and ``tracing`` switches, on every function
        (SAM's VpcConfig, ReservedConcurrentExecutions and Tracing) and its role."""
        tracing_policy = None
        if tracing:
            tracing_policy = iam.ManagedPolicy(
                self,
                "Tracing",
                description="Lambda sends the Gatehouse functions' X-Ray traces with these",
                statements=[iam.PolicyStatement(actions=list(TRACING_ACTIONS), resources=["*"])],
            )
            acknowledge(
                tracing_policy,
                {
                    "IAM5[Resource::*]": "X-Ray's PutTraceSegments and PutTelemetryRecords "
                    "authorize on no resource of their own (the Service Authorization Reference "
                    "lists none), so only * matches; they write traces, read nothing.",
                },
            )
        for function, role in self._roles.items():
            resource = self.chalice.get_resource(function)
            policies: list[iam.ManagedPolicy] = []
            if network is not None and function not in OUTSIDE_VPC:
                resource.add_property_override(
                    "VpcConfig",
                    {
                        "SubnetIds": network.subnet_ids,
                        "SecurityGroupIds": [network.functions.security_group_id],
                    },
                )
                policies.append(network.lambda_access)
            if tracing_policy is not None:
                resource.add_property_override("Tracing", "Active")
                policies.append(tracing_policy)
            if reserved_concurrency:
                resource.add_property_override("ReservedConcurrentExecutions", reserved_concurrency)
            for policy in policies:
                policy.attach_to_role(role)
            if policies:  # Lambda checks the role's permissions when it creates the function.
                resource.node.add_dependency(*policies)
        # Lambda's SQS pollers would invoke a worker beyond its reservation, and each throttled
        # batch goes back to the queue with a receive counted, towards the dead-letter queue:
        # the mapping's own ceiling (2 at least) keeps them within it.
        if reserved_concurrency >= MIN_QUEUE_CONCURRENCY:
            for handler in runtime.WORKER_HANDLERS.values():
                self.chalice.get_resource(handler.function).add_property_override(
                    f"Events.{handler.event}.Properties.ScalingConfig",
                    {"MaximumConcurrency": reserved_concurrency},
                )

    def _write_access_logs(self, rest_api: cdk.CfnResource) -> None:
        """``apiAccessLogs``: a JSON line per request of the REST stage and per WebSocket
        message, each into a log group with the functions' retention."""
        account = account_cloudwatch_role(self)

        def group(id: str, name: str) -> logs.LogGroup:
            return logs.LogGroup(
                self,
                id,
                log_group_name=runtime.log_group_name(self._environment, name),
                retention=RETENTION[runtime.LOG_RETENTION_DAYS],
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )

        rest = group("RestAccessLogs", "rest-access")
        rest_api.add_property_override(
            "AccessLogSetting",
            {
                "DestinationArn": rest.log_group_arn,
                "Format": access_log_format(REST_ACCESS_LOG_FORMAT),
            },
        )
        websocket = group("WebsocketAccessLogs", "websocket-access")
        stage = self.chalice.get_resource(WEBSOCKET_STAGE_RESOURCE)
        if not isinstance(stage, apigatewayv2.CfnStage):
            raise TypeError(f"{WEBSOCKET_STAGE_RESOURCE} is not a WebSocket stage")
        # The typed property, which cdk-nag reads (APIG1), rather than an override.
        stage.access_log_settings = apigatewayv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=websocket.log_group_arn,
            format=access_log_format(WEBSOCKET_ACCESS_LOG_FORMAT),
        )
        # The account's role must be set before a stage may log.
        for resource in (rest_api, stage):
            resource.node.add_dependency(account)

    def _unscoped_policy(
        self, role: iam.Role, function: str, grants: list[Grant]
    ) -> list[iam.Policy]:
        """The grants IAM only authorizes on "*" (runtime.UNSCOPED_ACTIONS), in a policy of
        their own whose cdk-nag acknowledgement covers nothing else."""
        unscoped = [grant for grant in grants if grant.resources == (runtime.ANY_RESOURCE,)]
        if not unscoped:
            return []
        actions = sorted(action for grant in unscoped for action in grant.actions)
        if not set(actions) <= set(runtime.UNSCOPED_ACTIONS):
            raise ValueError(f"{function}: only {runtime.UNSCOPED_ACTIONS} may be granted on *")
        policy = iam.Policy(
            self,
            f"{function}Unscoped",
            roles=[role],
            statements=[
                iam.PolicyStatement(actions=list(grant.actions), resources=[runtime.ANY_RESOURCE])
                for grant in unscoped
            ],
        )
        acknowledge(
            policy,
            {
                "IAM5[Resource::*]": f"{', '.join(actions)} authorize on no resource of their "
                "own (the Service Authorization Reference lists none, so only * matches); they "
                "list ARNs, never data, and this policy grants nothing else.",
            },
        )
        return [policy]

    def _table_arn(self) -> str:
        """From the table's name, a literal (no export), like the cdk-nag findings naming it:
        the app's own table or, with ``existingTableName``, the adopted one."""
        return cdk.Stack.of(self).format_arn(
            service="dynamodb", resource="table", resource_name=self._table_name
        )

    def _log_group_arn(self, function: str) -> str:
        return cdk.Stack.of(self).format_arn(
            service="logs",
            resource="log-group",
            resource_name=runtime.log_group_name(self._environment, function),
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )

    def _shared_secret(
        self, id: str, name: str, description: str, length: int
    ) -> tuple[secretsmanager.Secret, str]:
        """A generated value that CloudFront and API Gateway or Lambda both hold.

        Both read it at deploy time through CloudFormation's dynamic reference, so the value
        is in no template. Returns the secret and that reference (by name, a literal: no export).
        """
        secret_name = runtime.secret_name(self._environment, name)
        secret = secretsmanager.Secret(
            self,
            id,
            secret_name=secret_name,
            description=f"Gatehouse: {description}",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=length, exclude_punctuation=True, include_space=False
            ),
        )
        if self._key is not None:
            encrypt_secret(secret, self._key)
        acknowledge(
            secret,
            {
                "SMG4": "Read by CloudFormation into CloudFront and the API at deploy time, so "
                "it cannot rotate on its own; cdk/README.md gives the manual procedure.",
            },
        )
        return secret, cdk.SecretValue.secrets_manager(secret_name).unsafe_unwrap()

    def _acknowledge(self, uploads: s3.IBucket) -> None:
        """The only wildcards: objects under uploads/ and the streams of our own log groups."""
        streams = "Lambda names its log streams at run time; the group is the function's own."

        def log_streams(functions: tuple[str, ...]) -> dict[str, str]:
            return {
                f"IAM5[Resource::{finding(self, self._log_group_arn(name))}:*]": streams
                for name in functions
            }

        acknowledge(
            self.node.find_child("ApiRole"),
            {
                f"IAM5[Resource::{finding(self, uploads.bucket_arn)}/{UPLOAD_PREFIX}*]": "Users' "
                "objects live under uploads/{username}/, created at run time; nothing else in "
                "the bucket is granted.",
                **log_streams((API_FUNCTION,)),
            },
        )
        acknowledge(self.node.find_child("AuthorizerRole"), log_streams((AUTHORIZER_FUNCTION,)))
        acknowledge(self.node.find_child("RotationRole"), log_streams((ROTATION_FUNCTION,)))


def _stream_arn(table: dynamodb.ITable) -> str:
    if table.table_stream_arn is None:
        raise ValueError("the table needs its stream for the event handlers")
    return table.table_stream_arn


def _package(
    stack: cdk.Stack,
    environment_variables: Mapping[str, str],
    tags: Mapping[str, str],
    role: iam.IRole,
) -> Chalice:
    """Packages the app into the stack itself: chalice.cdk names the Chalice stage after its
    scope, and the stack's name is the stage the functions' ``aws-chalice`` tag has always had.

    To import app.py, Chalice's packaging writes the stage's environment variables into
    ``os.environ`` (that is how CORS_ALLOW_ORIGIN, API_KEY_REQUIRED and AUTHORIZER_TTL_SECONDS
    reach it); they belong to that import, so the rest of synthesis sees the environment it had.
    """
    saved = dict(os.environ)
    try:
        return _CompiledChalice(
            stack,
            "App",
            source_dir=str(ROOT),
            stage_config={
                "api_gateway_stage": STAGE,
                "api_gateway_endpoint_type": runtime.ENDPOINT_TYPE,
                "lambda_architecture": runtime.ARCHITECTURE,
                "lambda_memory_size": runtime.MEMORY_MB,
                "lambda_timeout": runtime.TIMEOUT_SECONDS,
                "manage_iam_role": False,
                "iam_role_arn": role.role_arn,
                "autogen_policy": False,
                # requirements.txt's packages in a layer of their own (cdk/README.md, "Lambda
                # layers"): a deploy that changes only our code uploads only our code.
                "automatic_layer": True,
                "environment_variables": dict(environment_variables),
                "tags": dict(tags),
            },
        )
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


class _CompiledChalice(Chalice):
    """chalice.cdk's construct, with bytecode added to the zips ``chalice package`` writes,
    before the construct makes them assets (gatehouse_infra/bytecode.py). It overrides a private
    method of the pinned Chalice; tests/test_cdk.py checks the synthesized zips hold bytecode."""

    def _package_app(self) -> None:
        super()._package_app()
        out = Path(self._sam_package_dir)
        resources = json.loads((out / "sam.json").read_text())["Resources"]
        (function_runtime,) = {
            resource["Properties"]["Runtime"]
            for resource in resources.values()
            if resource["Type"] == "AWS::Serverless::Function"
        }
        for name in ("deployment.zip", "layer-deployment.zip"):
            if (out / name).exists():
                compile_zip(out / name, function_runtime)
