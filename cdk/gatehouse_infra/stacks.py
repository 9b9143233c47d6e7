"""The stacks: each puts one unit's construct in its region, wires it to the others, and says
what it outputs. Order, regions and tags come from the deploy config.

Each construct has the id ``Default``, which CDK leaves out of logical ids, so every resource
keeps the logical id it had when the stacks built their resources themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct, IConstruct, IValidation

from gatehouse_infra import runtime
from gatehouse_infra.api import RETENTION, Api, SigningKeyOptions
from gatehouse_infra.config import DeployConfig
from gatehouse_infra.data import Data
from gatehouse_infra.edge import ApiFirewall, Edge, WafSettings
from gatehouse_infra.edgelogs import EdgeLogs
from gatehouse_infra.encryption import EncryptLogGroups, allow_services, service_statements
from gatehouse_infra.events import Events
from gatehouse_infra.keys import (
    DYNAMODB,
    S3,
    SECRETS_MANAGER,
    KeyReplica,
    Keys,
    grant_key_use,
    grant_replica_key_use,
    replica_key_arn,
)
from gatehouse_infra.mail import Mail
from gatehouse_infra.monitoring import EdgeMonitoring, Monitoring
from gatehouse_infra.network import AZS, Network
from gatehouse_infra.site import Site

UNIT = "Default"


def hosted_zone(scope: Construct, config: DeployConfig) -> route53.IHostedZone | None:
    """The zone holding the domain, from its attributes: no look-up at synthesis."""
    if config.hosted_zone_id is None or config.hosted_zone_name is None:
        return None
    return route53.HostedZone.from_hosted_zone_attributes(
        scope, "Zone", hosted_zone_id=config.hosted_zone_id, zone_name=config.hosted_zone_name
    )


def waf_settings(config: DeployConfig) -> WafSettings | None:
    """The web ACLs' switches; None without ``enableWaf``."""
    if not config.enable_waf:
        return None
    return WafSettings(
        rate_limit=config.waf_rate_limit,
        auth_rate_limit=config.waf_auth_rate_limit,
        geo_block=config.waf_geo_block,
        allow_list=config.waf_allow_list,
        bot_control=config.waf_bot_control,
    )


class EdgeStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, config: DeployConfig, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        self.edge = Edge(
            self,
            UNIT,
            prefix=config.prefix,
            domain_name=config.domain_name,
            zone=hosted_zone(self, config) if config.domain_name else None,
            waf=waf_settings(config),
        )


class KeysStack(cdk.Stack):
    """``kmsKey``: the multi-Region primary key, before everything it encrypts."""

    def __init__(self, scope: Construct, id: str, *, config: DeployConfig, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        self.keys = Keys(self, UNIT, prefix=config.prefix)
        cdk.CfnOutput(self, "KeyArn", value=self.keys.key.key_arn)


class KeyReplicaStack(cdk.Stack):
    """``kmsKey`` with replicas: the key's replica in one replica region."""

    def __init__(
        self, scope: Construct, id: str, *, config: DeployConfig, key: kms.IKey, **kwargs: Any
    ) -> None:
        super().__init__(scope, id, **kwargs)
        self.replica = KeyReplica(
            self,
            UNIT,
            prefix=config.prefix,
            primary_key_arn=key.key_arn,
            # The region-outage deploy here runs as <env>-dr (cdk/README.md, "Disaster
            # recovery") and encrypts its log groups and queues with this replica.
            statements=service_statements(self, config.environment, config.recovery_environment),
        )
        cdk.CfnOutput(self, "KeyArn", value=self.replica.key_arn)


def key_replica_regions(config: DeployConfig) -> tuple[str, ...]:
    """Every region holding a replica of the table or of the signing key, in order."""
    return tuple(dict.fromkeys((*config.replica_regions, *config.secret_replica_regions)))


class DataStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeployConfig,
        key: kms.IKey | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        if config.existing_key_arn is not None:
            # A deploy in a replica region: the key's replica there (kmsKey, existingKeyArn).
            key = kms.Key.from_key_arn(self, "Key", config.existing_key_arn)
        self.data = Data(
            self,
            UNIT,
            table_name=config.prefix,
            billing=config.billing,
            uploads_bucket_name=config.uploads_bucket_name,
            existing_table=(
                (config.existing_table_name, config.existing_table_stream_arn)
                if config.existing_table_name and config.existing_table_stream_arn
                else None
            ),
            existing_uploads_bucket=config.existing_uploads_bucket_name is not None,
            replica_regions=config.replica_regions,
            min_capacity=config.dynamo_min_capacity,
            max_capacity=config.dynamo_max_capacity,
            uploads_versioning=config.uploads_versioning,
            key=key,
            replica_key_arns=(
                {region: replica_key_arn(key, region) for region in config.replica_regions}
                if key is not None
                else None
            ),
        )
        cdk.CfnOutput(self, "TableName", value=self.data.table.table_name)
        cdk.CfnOutput(self, "UploadsBucketName", value=self.data.uploads.bucket_name)
        cdk.CfnOutput(self, "BackupsBucketName", value=self.data.backups.bucket_name)
        # Exported by names of our own, so the API stack's grants (and the cdk-nag findings
        # naming them) read the same on every synthesis.
        self.backups_arn = self.export_value(
            self.data.backups.bucket_arn, name=f"{self.stack_name}:BackupsBucketArn"
        )
        self.backups_name = self.export_value(
            self.data.backups.bucket_name, name=f"{self.stack_name}:BackupsBucketName"
        )


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
        backups = s3.Bucket.from_bucket_attributes(
            self, "Backups", bucket_arn=data.backups_arn, bucket_name=data.backups_name
        )
        # By its name rather than the Data stack's export, so its ARN in the grants (and the
        # cdk-nag finding naming it) is a literal.
        uploads = s3.Bucket.from_bucket_name(self, "Uploads", config.uploads_bucket_name)
        zone = hosted_zone(self, config) if config.domain_name else None
        # SES identities are regional: the identity lives beside the function that sends.
        self.mail = (
            Mail(
                self,
                "Mail",
                configuration_set_name=runtime.configuration_set_name(config.environment),
                sender_address=config.sender_address,
                domain_name=config.domain_name,
                zone=zone,
            )
            if config.sender is not None
            else None
        )
        network = (
            Network(
                self,
                "Network",
                environment=config.environment,
                mail=config.sender is not None,
                tracing=config.tracing,
                retention=RETENTION[runtime.LOG_RETENTION_DAYS],
            )
            if config.vpc
            else None
        )
        self.events = Events(
            self,
            "Events",
            environment=config.environment,
            worker_timeouts={
                worker: handler.timeout for worker, handler in runtime.WORKER_HANDLERS.items()
            },
            key=data.data.key,
        )
        self.api = Api(
            self,
            UNIT,
            environment=config.environment,
            tags=config.tags,
            table=data.data.table,
            table_name=config.table_name,
            uploads=uploads,
            allowed_origins=config.site_origin or "",
            cors_allow_origin=config.api_cors_origin,
            throttle_rate_limit=config.throttle_rate_limit,
            throttle_burst_limit=config.throttle_burst_limit,
            api_keys=config.api_keys,
            machine_rate_limit=config.machine_rate_limit,
            machine_burst_limit=config.machine_burst_limit,
            machine_monthly_quota=config.machine_monthly_quota,
            api_domain=config.api_domain if config.custom_api_domain else None,
            zone=zone if config.custom_api_domain else None,
            mail_from=config.sender or "",
            mail_configuration_set=(
                self.mail.configuration_set.configuration_set_name if self.mail else ""
            ),
            mail_arns=self.mail.send_arns if self.mail else (),
            site_url=config.links_origin or "",
            events=self.events,
            backups=backups,
            # Without a domain or siteUrl the site's origin is unknown here: no live updates.
            websocket_url=runtime.websocket_url(config.links_origin) if config.links_origin else "",
            edge_required=config.enable_waf,
            network=network,
            reserved_concurrency=config.reserved_concurrency,
            tracing=config.tracing,
            access_logs=config.api_access_logs,
            existing_signing_key_arn=config.existing_signing_key_arn,
            signing_key_options=self._signing_key_options(config, data.data.key),
            key=data.data.key,
        )
        if data.data.key is not None:
            grant_key_uses(self.api, data.data.key)
            if config.existing_signing_key_arn is None:
                grant_replica_key_use(
                    self.api.role(runtime.ROTATION_FUNCTION),
                    {
                        region: replica_key_arn(data.data.key, region)
                        for region in key_replica_regions(config)
                    },
                    service=SECRETS_MANAGER,
                )
        waf = waf_settings(config)
        if waf is not None:
            # On the stage: only CloudFront's requests (edge key) pass, and api.<domain>'s,
            # which are not behind CloudFront, after the same rules.
            ApiFirewall(
                self,
                "Firewall",
                prefix=config.prefix,
                rest_api_id=self.api.rest_api_id,
                edge_key=self.api.edge_key,
                edge_key_reference=self.api.edge_key_reference,
                waf=waf,
                api_domain=config.api_domain if config.custom_api_domain else None,
                machine_rate_limit=config.machine_rate_limit if config.api_keys else None,
            )
        cdk.CfnOutput(self, "RestApiId", value=self.api.rest_api_id)
        cdk.CfnOutput(self, "WebSocketApiId", value=self.api.websocket_api_id)
        cdk.CfnOutput(self, "EventBusName", value=self.events.bus.event_bus_name)
        cdk.CfnOutput(self, "ApiUrl", value=self.api.url)
        cdk.CfnOutput(self, "SigningKeySecretName", value=self.api.signing_key.secret_name)
        if self.api.domain_url is not None:
            cdk.CfnOutput(self, "ApiDomainUrl", value=self.api.domain_url)
        if self.api.machine_plan_id is not None:
            cdk.CfnOutput(self, "MachineUsagePlanId", value=self.api.machine_plan_id)
        if self.mail is not None:
            cdk.CfnOutput(self, "MailIdentity", value=self.mail.identity_name)
            cdk.CfnOutput(
                self,
                "MailConfigurationSet",
                value=self.mail.configuration_set.configuration_set_name,
            )

    @property
    def availability_zones(self) -> list[str]:
        """The VPC's zones from Fn::GetAZs at deploy time: no look-up at synthesis, even when
        the account is known."""
        return [cdk.Fn.select(index, cdk.Fn.get_azs()) for index in range(AZS)]

    def _signing_key_options(self, config: DeployConfig, key: kms.IKey | None) -> SigningKeyOptions:
        """Replicated to every replica region of the table or the secret, each replica under
        the key's replica there."""

        def replica_key(region: str) -> kms.IKey | None:
            if key is None:
                return None
            return kms.Key.from_key_arn(self, f"Key-{region}", replica_key_arn(key, region))

        return {
            "replica_regions": [
                secretsmanager.ReplicaRegion(region=region, encryption_key=replica_key(region))
                for region in key_replica_regions(config)
            ],
            "encryption_key": key,
        }


# What each function's role may ask of the kmsKey: through which services, and whether it
# writes (new data keys) or only reads. The stream handler reads the stream (no service: see
# keys.grant_key_use); the purge and the sweep only delete objects, which needs no key.
# Every function is either here or in KEYLESS.
KEY_USES: dict[str, tuple[tuple[str, ...], bool]] = {
    runtime.API_FUNCTION: ((DYNAMODB, S3, SECRETS_MANAGER), True),
    runtime.AUTHORIZER_FUNCTION: ((DYNAMODB, SECRETS_MANAGER), False),
    runtime.ROTATION_FUNCTION: ((SECRETS_MANAGER,), True),
    runtime.STREAM_HANDLER.function: ((), False),
    "NotifyWorker": ((DYNAMODB,), True),
    "MailWorker": ((DYNAMODB,), True),
    "PurgeWorker": ((DYNAMODB,), True),
    "WebsocketConnect": ((DYNAMODB,), True),
    "WebsocketDisconnect": ((DYNAMODB,), True),
    runtime.BACKUP_HANDLER.function: ((DYNAMODB, S3), True),
    runtime.SWEEP_HANDLER.function: ((DYNAMODB,), True),
}
# The functions that read or write nothing under the key (the WebSocket default route answers
# from the request alone).
KEYLESS = frozenset({"WebsocketMessage"})


def grant_key_uses(api: Api, key: kms.IKey) -> None:
    """Every function's role gets the key's use its calls need (KEY_USES), nothing more."""
    if set(KEY_USES) | KEYLESS != set(api.functions) or set(KEY_USES) & KEYLESS:
        raise ValueError(
            f"KEY_USES and KEYLESS must share out exactly these functions: {sorted(api.functions)}"
        )
    for function, (services, write) in KEY_USES.items():
        grant_key_use(key, api.role(function), services=services, write=write)


class SiteStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeployConfig,
        data: Data,
        api: Api,
        certificate: acm.ICertificate | None,
        web_acl_arn: str | None,
        site_dir: Path,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        self.site = Site(
            self,
            UNIT,
            prefix=config.prefix,
            site_dir=site_dir,
            access_logs=data.access_logs,
            uploads=data.uploads,
            api_origin=api.execute_api_domain,
            websocket_origin=api.websocket_domain,
            edge_key_reference=api.edge_key_reference,
            site_api_key_reference=api.site_api_key_reference,
            domain_name=config.domain_name,
            zone=hosted_zone(self, config) if config.domain_name else None,
            certificate=certificate,
            web_acl_arn=web_acl_arn,
        )
        cdk.CfnOutput(self, "SiteUrl", value=self.site.origin)
        cdk.CfnOutput(self, "DistributionId", value=self.site.distribution.distribution_id)
        cdk.CfnOutput(self, "SiteBucketName", value=self.site.bucket.bucket_name)


class MonitoringStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeployConfig,
        data: Data,
        api: Api,
        events: Events,
        site: Site,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        Monitoring(
            self,
            UNIT,
            prefix=config.prefix,
            environment=config.environment,
            tags=config.tags,
            alarm_email=config.alarm_email,
            monthly_budget_usd=config.monthly_budget_usd,
            function_names=api.function_names,
            job_function_names=api.job_function_names,
            queue_names=events.queue_names,
            dead_letter_names=events.dead_letter_names,
            api_name=api.name,
            table=data.table,
            distribution=site.distribution,
        )


class EdgeMonitoringStack(cdk.Stack):
    def __init__(
        self, scope: Construct, id: str, *, config: DeployConfig, site: Site, **kwargs: Any
    ) -> None:
        super().__init__(scope, id, **kwargs)
        EdgeMonitoring(
            self,
            UNIT,
            prefix=config.prefix,
            tags=config.tags,
            alarm_email=config.alarm_email,
            distribution=site.distribution,
        )
        # cloudFrontLogs: CloudFront's vended logs are configured in us-east-1 only.
        if config.cloudfront_logs:
            EdgeLogs(
                self,
                "CloudFrontLogs",
                prefix=config.prefix,
                distribution_id=site.distribution.distribution_id,
            )


def build(app: cdk.App, *, base_dir: Path) -> list[cdk.Stack]:
    config = DeployConfig.from_context(app.node)
    # Synthesis needs no account: with none configured the templates are account-agnostic.
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    primary = cdk.Environment(account=account, region=config.primary_region)
    edge_env = cdk.Environment(account=account, region=config.certificate_region)
    name = config.prefix

    def stack_id(part: str) -> str:
        return f"{name}-{part}"

    edge = (
        EdgeStack(app, stack_id("edge"), config=config, env=edge_env, cross_region_references=True)
        if config.needs_edge_stack
        else None
    )
    keys = (
        KeysStack(app, stack_id("keys"), config=config, env=primary, cross_region_references=True)
        if config.kms_key and config.existing_key_arn is None
        else None
    )
    primary_key = keys.keys.key if keys is not None else None
    key_replicas = (
        [
            KeyReplicaStack(
                app,
                stack_id(f"keys-{region}"),
                config=config,
                key=keys.keys.key,
                env=cdk.Environment(account=account, region=region),
                cross_region_references=True,
            )
            for region in key_replica_regions(config)
        ]
        if keys is not None
        else []
    )
    data = DataStack(app, stack_id("data"), config=config, key=primary_key, env=primary)
    for replica in key_replicas:
        # The global table and the secret name each replica's key by its ARN, not a reference.
        data.add_dependency(replica)
    api = ApiStack(app, stack_id("api"), config=config, data=data, env=primary)
    site = SiteStack(
        app,
        stack_id("site"),
        config=config,
        data=data.data,
        api=api.api,
        certificate=edge.edge.site_certificate if edge else None,
        web_acl_arn=edge.edge.web_acl_arn if edge else None,
        site_dir=(base_dir / config.site_dir).resolve(),
        env=primary,
        cross_region_references=True,
    )
    monitoring = MonitoringStack(
        app,
        stack_id("monitoring"),
        config=config,
        data=data.data,
        api=api.api,
        events=api.events,
        site=site.site,
        env=primary,
    )
    edge_monitoring = EdgeMonitoringStack(
        app,
        stack_id("edge-monitoring"),
        config=config,
        site=site.site,
        env=edge_env,
        cross_region_references=True,
    )
    built = (edge, keys, *key_replicas, data, api, site, monitoring, edge_monitoring)
    stacks: list[cdk.Stack] = [stack for stack in built if stack is not None]
    # Every statement letting S3's log delivery write, the site bucket's (another stack) too.
    require_source_account(data.data.access_logs)
    # kmsKey: what the services may do with the key; every log group in its region under it.
    if data.data.key is not None:
        allow_services(data.data.key, environment=config.environment)
    for stack in stacks:
        for key, value in config.tags.items():
            cdk.Tags.of(stack).add(key, value)
        log_key = data.data.key if stack.region == config.primary_region else None
        if log_key is not None:
            cdk.Aspects.of(stack).add(EncryptLogGroups(log_key, config.environment))
        provider_logs = ProviderLogGroups(config.tags, log_key)
        cdk.Aspects.of(stack).add(provider_logs)
        # CDK makes the cross-region reference providers after aspects run, before validation.
        stack.node.add_validation(LateProviderLogGroups(stack, provider_logs))
        cdk.Aspects.of(stack).add(TagProviderResources(config.tags))
    return stacks


LOG_DELIVERY = {"Service": "logging.s3.amazonaws.com"}
SOURCE_ACCOUNT = "aws:SourceAccount"


def require_source_account(bucket: s3.Bucket) -> None:
    """CDK adds a source-account condition to S3's log-delivery statement only when the logging
    bucket is in the same stack; the site's bucket is not, so its statement gets it here."""
    if bucket.policy is None:
        raise ValueError("the access-log bucket has no policy")
    policy = bucket.policy.node.default_child
    if not isinstance(policy, s3.CfnBucketPolicy):
        raise TypeError("the access-log bucket's policy is not a CfnBucketPolicy")
    document = cdk.Stack.of(bucket).resolve(bucket.policy.document)
    for index, statement in enumerate(document["Statement"]):
        if statement.get("Principal") != LOG_DELIVERY:
            continue
        if SOURCE_ACCOUNT not in statement.get("Condition", {}).get("StringEquals", {}):
            policy.add_property_override(
                f"PolicyDocument.Statement.{index}.Condition.StringEquals.{SOURCE_ACCOUNT}",
                cdk.Aws.ACCOUNT_ID,
            )


@jsii.implements(cdk.IAspect)
class ProviderLogGroups:
    """Gives each of CDK's own provider functions (bucket deployment, AwsCustomResource, S3
    auto-delete: plain ``AWS::Lambda::Function``s; ours are SAM functions) a log group with the
    functions' retention, set as its ``LoggingConfig``, instead of the never-expiring
    ``/aws/lambda/...`` group Lambda would create. CDK makes its cross-region reference
    providers after aspects run: ``LateProviderLogGroups`` visits those."""

    def __init__(self, tags: dict[str, str], key: kms.IKey | None = None) -> None:
        self._tags = [{"Key": key, "Value": value} for key, value in sorted(tags.items())]
        self._key = key  # kmsKey, in the key's region

    def visit(self, node: IConstruct) -> None:
        if not (
            isinstance(node, cdk.CfnResource)
            and node.cfn_resource_type == "AWS::Lambda::Function"
            and node.node.scope is not None
        ):
            return
        scope = node.node.scope
        if not isinstance(scope, Construct):
            return
        id = f"{node.node.id}LogGroup"
        if scope.node.try_find_child(id) is not None:
            return
        group = logs.LogGroup(
            scope,
            id,
            retention=RETENTION[runtime.LOG_RETENTION_DAYS],
            removal_policy=cdk.RemovalPolicy.DESTROY,
            encryption_key=self._key,
        )
        cfn_group = group.node.default_child
        if isinstance(cfn_group, cdk.CfnResource):
            cfn_group.add_property_override("Tags", self._tags)
        node.add_property_override(
            "LoggingConfig", {"LogGroup": group.log_group_name, "LogFormat": "Text"}
        )


@jsii.implements(cdk.IAspect)
class TagProviderResources:
    """Tags the roles and functions of CDK's custom-resource providers, which cdk.Tags skips:
    they are plain CfnResources, not the taggable L1 classes."""

    TYPES = frozenset({"AWS::IAM::Role", "AWS::Lambda::Function"})

    def __init__(self, tags: dict[str, str]) -> None:
        self._tags = [{"Key": key, "Value": value} for key, value in sorted(tags.items())]

    def visit(self, node: IConstruct) -> None:
        if (
            isinstance(node, cdk.CfnResource)
            and node.cfn_resource_type in self.TYPES
            and not cdk.TagManager.is_taggable(node)
        ):
            node.add_property_override("Tags", self._tags)


@jsii.implements(IValidation)
class LateProviderLogGroups:
    """``ProviderLogGroups`` for the provider functions CDK adds while it prepares the app
    (the cross-region references' reader and writer): validation runs after that, before the
    templates are written. Reports nothing."""

    def __init__(self, stack: cdk.Stack, aspect: ProviderLogGroups) -> None:
        self._stack = stack
        self._aspect = aspect

    def validate(self) -> list[str]:
        for node in self._stack.node.find_all():
            self._aspect.visit(node)
        return []
