"""Deployment settings, read once from CDK context (``cdk.json``, overridable with ``-c``)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, Literal

import aws_cdk as cdk
from constructs import Node

from gatehouse_infra import runtime
from gatehouse_infra.runtime import PROJECT

BillingMode = Literal["on-demand", "provisioned"]
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,20}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
# DynamoDB's table names; a stream's ARN; S3's bucket names (lower case, no dots: TLS).
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_STREAM_ARN = re.compile(
    r"^arn:aws[a-z-]*:dynamodb:[a-z]{2}(-[a-z]+)+-\d:\d{12}:table/[A-Za-z0-9_.-]{3,255}/stream/\S+$"
)
# A secret's ARN (with Secrets Manager's 6-character suffix); a KMS key's ARN.
_SECRET_ARN = re.compile(
    r"^arn:aws[a-z-]*:secretsmanager:[a-z]{2}(-[a-z]+)+-\d:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$"
)
_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z]{2}(-[a-z]+)+-\d:\d{12}:key/[A-Za-z0-9-]+$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")  # ISO 3166-1 alpha-2, as WAF's geo match takes them
# API Gateway's account-level default; the seed's 10k req/s is a ceiling, not a target.
MAX_THROTTLE_RATE = 10_000


class ConfigError(ValueError):
    """A context value is missing or malformed; the message names it."""


@dataclass(frozen=True)
class DeployConfig:
    environment: str = runtime.DEFAULT_ENVIRONMENT
    owner: str = "platform"
    primary_region: str = "eu-west-2"
    certificate_region: str = "us-east-1"
    domain_name: str | None = None
    api_domain_name: str | None = None
    hosted_zone_id: str | None = None
    hosted_zone_name: str | None = None
    custom_api_domain: bool = False
    enable_waf: bool = False
    billing: BillingMode = "on-demand"
    api_keys: bool = False
    machine_rate_limit: int = 10
    machine_burst_limit: int = 20
    machine_monthly_quota: int = 100_000
    alarm_email: str | None = None
    throttle_rate_limit: int = 50
    throttle_burst_limit: int = 100
    waf_auth_rate_limit: int = 300
    monthly_budget_usd: int = 25
    site_dir: str = "../frontend/build"
    mail_from: str | None = None
    site_url: str | None = None
    # Re-adoption (cdk/README.md, "Redeploy after make destroy"): use a table and an uploads
    # bucket that already exist instead of creating them.
    existing_table_name: str | None = None
    existing_table_stream_arn: str | None = None
    existing_uploads_bucket_name: str | None = None
    # A region-outage deploy (cdk/README.md, "Disaster recovery"): the signing key's replica and
    # the kmsKey's replica in this region, used instead of creating them.
    existing_signing_key_arn: str | None = None
    existing_key_arn: str | None = None
    # Deploy switches (cdk/README.md, "Deploy switches"); each is off, or empty, by default.
    vpc: bool = False
    replica_regions: tuple[str, ...] = ()
    secret_replica_regions: tuple[str, ...] = ()
    kms_key: bool = False
    waf_rate_limit: int = 2_000
    waf_geo_block: tuple[str, ...] = ()
    waf_allow_list: tuple[str, ...] = ()
    waf_bot_control: bool = False
    reserved_concurrency: int = 0
    dynamo_min_capacity: int = 1
    dynamo_max_capacity: int = 10
    api_access_logs: bool = True
    cloudfront_logs: bool = False
    uploads_versioning: bool = False
    tracing: bool = False

    @classmethod
    def from_context(cls, node: Node) -> DeployConfig:
        def value(key: str) -> Any:
            found = node.try_get_context(key)
            return None if found in (None, "") else found

        def number(key: str, default: int, *, maximum: int, minimum: int = 1) -> int:
            return _number(value(key), default, key, maximum=maximum, minimum=minimum)

        config = cls(
            environment=_match(value("environment") or cls.environment, _NAME, "environment"),
            owner=str(value("owner") or cls.owner),
            primary_region=_match(
                value("primaryRegion") or cls.primary_region, _REGION, "primaryRegion"
            ),
            certificate_region=_match(
                value("certificateRegion") or cls.certificate_region, _REGION, "certificateRegion"
            ),
            domain_name=_domain(value("domainName"), "domainName"),
            api_domain_name=_domain(value("apiDomainName"), "apiDomainName"),
            hosted_zone_id=_optional(
                value("hostedZoneId"), re.compile(r"^Z[A-Z0-9]{1,31}$"), "hostedZoneId"
            ),
            hosted_zone_name=_domain(value("hostedZoneName"), "hostedZoneName"),
            custom_api_domain=_flag(value("customApiDomain"), "customApiDomain"),
            enable_waf=_flag(value("enableWaf"), "enableWaf"),
            billing=_billing(value("dynamoBilling")),
            api_keys=_flag(value("apiKeys"), "apiKeys"),
            machine_rate_limit=number(
                "machineRateLimit", cls.machine_rate_limit, maximum=MAX_THROTTLE_RATE
            ),
            machine_burst_limit=number("machineBurstLimit", cls.machine_burst_limit, maximum=5_000),
            machine_monthly_quota=number(
                "machineMonthlyQuota", cls.machine_monthly_quota, maximum=1_000_000_000
            ),
            alarm_email=_optional(value("alarmEmail"), _EMAIL, "alarmEmail"),
            throttle_rate_limit=number(
                "throttleRateLimit", cls.throttle_rate_limit, maximum=MAX_THROTTLE_RATE
            ),
            throttle_burst_limit=number(
                "throttleBurstLimit", cls.throttle_burst_limit, maximum=5_000
            ),
            waf_auth_rate_limit=number(
                "wafAuthRateLimit", cls.waf_auth_rate_limit, maximum=2_000_000_000, minimum=10
            ),
            monthly_budget_usd=number(
                "monthlyBudgetUsd", cls.monthly_budget_usd, maximum=1_000_000
            ),
            site_dir=str(value("siteDir") or cls.site_dir),
            mail_from=_mail_from(value("mailFrom")),
            site_url=_site_url(value("siteUrl")),
            existing_table_name=_optional(
                value("existingTableName"), _TABLE_NAME, "existingTableName"
            ),
            existing_table_stream_arn=_optional(
                value("existingTableStreamArn"), _STREAM_ARN, "existingTableStreamArn"
            ),
            existing_uploads_bucket_name=_optional(
                value("existingUploadsBucketName"), _BUCKET_NAME, "existingUploadsBucketName"
            ),
            existing_signing_key_arn=_optional(
                value("existingSigningKeyArn"), _SECRET_ARN, "existingSigningKeyArn"
            ),
            existing_key_arn=_optional(value("existingKeyArn"), _KEY_ARN, "existingKeyArn"),
            vpc=_flag(value("vpc"), "vpc"),
            replica_regions=_list(value("replicaRegions"), _REGION, "replicaRegions"),
            secret_replica_regions=_list(
                value("secretReplicaRegions"), _REGION, "secretReplicaRegions"
            ),
            kms_key=_flag(value("kmsKey"), "kmsKey"),
            waf_rate_limit=number(
                "wafRateLimit", cls.waf_rate_limit, maximum=2_000_000_000, minimum=10
            ),
            waf_geo_block=_list(
                None if value("wafGeoBlock") is None else str(value("wafGeoBlock")).upper(),
                _COUNTRY,
                "wafGeoBlock",
            ),
            waf_allow_list=_networks(value("wafAllowList")),
            waf_bot_control=_flag(value("wafBotControl"), "wafBotControl"),
            reserved_concurrency=number(
                "reservedConcurrency", cls.reserved_concurrency, maximum=10_000, minimum=0
            ),
            dynamo_min_capacity=number(
                "dynamoMinCapacity", cls.dynamo_min_capacity, maximum=40_000
            ),
            dynamo_max_capacity=number(
                "dynamoMaxCapacity", cls.dynamo_max_capacity, maximum=40_000
            ),
            api_access_logs=_flag(
                cls.api_access_logs if value("apiAccessLogs") is None else value("apiAccessLogs"),
                "apiAccessLogs",
            ),
            cloudfront_logs=_flag(value("cloudFrontLogs"), "cloudFrontLogs"),
            uploads_versioning=_flag(value("uploadsVersioning"), "uploadsVersioning"),
            tracing=_flag(value("tracing"), "tracing"),
        )
        config.check()
        return config

    def check(self) -> None:
        for key, regions in (
            ("replicaRegions", self.replica_regions),
            ("secretReplicaRegions", self.secret_replica_regions),
        ):
            if self.primary_region in regions:
                raise ConfigError(f"{key} names the primary region {self.primary_region}")
        if not self.enable_waf and (
            self.waf_geo_block or self.waf_allow_list or self.waf_bot_control
        ):
            raise ConfigError("wafGeoBlock, wafAllowList and wafBotControl need enableWaf")
        for key, arn in (
            ("existingSigningKeyArn", self.existing_signing_key_arn),
            ("existingKeyArn", self.existing_key_arn),
        ):
            if arn is not None and arn.split(":")[3] != self.primary_region:
                raise ConfigError(f"{key} is not in primaryRegion {self.primary_region}")
        if (
            self.replica_regions or self.secret_replica_regions or self.kms_key
        ) and not _NAME.match(self.recovery_environment):
            raise ConfigError(
                f"environment {self.environment!r} is too long for replicas or kmsKey: its "
                f"region-outage deploy's environment {self.recovery_environment!r} must be a valid "
                "environment name too (21 characters at most)"
            )
        if self.existing_key_arn is not None and not self.kms_key:
            raise ConfigError("existingKeyArn needs kmsKey")
        if self.dynamo_min_capacity > self.dynamo_max_capacity:
            raise ConfigError("dynamoMinCapacity is above dynamoMaxCapacity")
        if (self.existing_table_name is None) != (self.existing_table_stream_arn is None):
            raise ConfigError(
                "existingTableName and existingTableStreamArn go together (the change handler "
                "reads the table's stream)"
            )
        if self.existing_table_stream_arn is not None:
            table = self.existing_table_stream_arn.split(":table/", 1)[1].split("/stream/", 1)[0]
            if table != self.existing_table_name:
                raise ConfigError(
                    f"existingTableStreamArn is a stream of {table}, not of "
                    f"{self.existing_table_name}"
                )
        if self.sender is not None and self.links_origin is None:
            raise ConfigError(
                "mailFrom without domainName needs siteUrl (the SiteUrl output of a first deploy)"
            )
        if self.mail_from is not None and self.domain_name is not None:
            domain = self.sender_address.rpartition("@")[2]
            if domain != self.domain_name and not domain.endswith("." + self.domain_name):
                raise ConfigError(f"mailFrom must be an address in {self.domain_name}")
        if self.domain_name is None:
            if self.custom_api_domain or self.api_domain_name:
                raise ConfigError("customApiDomain and apiDomainName need domainName")
            return
        if not (self.hosted_zone_id and self.hosted_zone_name):
            raise ConfigError("domainName needs hostedZoneId and hostedZoneName (no lookups)")
        for name in (self.domain_name, self.api_domain):
            if name != self.hosted_zone_name and not name.endswith("." + self.hosted_zone_name):
                raise ConfigError(f"{name} is not inside the hosted zone {self.hosted_zone_name}")

    @property
    def prefix(self) -> str:
        """The stem of every name: ``gatehouse-production``."""
        return runtime.prefix(self.environment)

    @property
    def recovery_environment(self) -> str:
        """The environment a region-outage deploy in a replica region uses (cdk/README.md,
        "Disaster recovery"): its own names, beside the replicas of this one's."""
        return f"{self.environment}-dr"

    @property
    def table_name(self) -> str:
        """The app's table: ``existingTableName``, else the prefix."""
        return self.existing_table_name or self.prefix

    @property
    def uploads_bucket_name(self) -> str:
        """``existingUploadsBucketName``, else a new bucket's: bucket names are global, the
        account id keeps this one unique."""
        if self.existing_uploads_bucket_name is not None:
            return self.existing_uploads_bucket_name
        return f"{runtime.uploads_bucket_stem(self.environment)}-{cdk.Aws.ACCOUNT_ID}"

    @property
    def api_domain(self) -> str:
        if self.domain_name is None:
            raise ConfigError("the API domain needs domainName")
        return self.api_domain_name or f"api.{self.domain_name}"

    @property
    def site_origin(self) -> str | None:
        """The site's origin when it has a domain; otherwise CloudFront's name, known at deploy."""
        return f"https://{self.domain_name}" if self.domain_name else None

    @property
    def sender(self) -> str | None:
        """Who mail is from: ``mailFrom``, else no-reply at the domain; None: mail is off."""
        if self.mail_from is not None:
            return self.mail_from
        return f"Gatehouse <no-reply@{self.domain_name}>" if self.domain_name else None

    @property
    def sender_address(self) -> str:
        if self.sender is None:
            raise ConfigError("mail needs mailFrom or domainName")
        return parseaddr(self.sender)[1]

    @property
    def links_origin(self) -> str | None:
        """The site's origin for links in mail (SITE_URL): ``siteUrl``, else the domain's."""
        return self.site_url or self.site_origin

    @property
    def api_cors_origin(self) -> str | None:
        """Only the API's own domain answers cross-origin calls, and only from the site's origin."""
        return self.site_origin if self.custom_api_domain else None

    @property
    def needs_edge_stack(self) -> bool:
        """Certificates and the WAF web ACL for CloudFront live in the certificate region."""
        return self.domain_name is not None or self.enable_waf

    @property
    def tags(self) -> dict[str, str]:
        return {"Project": PROJECT, "Environment": self.environment, "Owner": self.owner}


def _match(raw: Any, pattern: re.Pattern[str], key: str) -> str:
    text = str(raw).strip()
    if not pattern.match(text):
        raise ConfigError(f"context {key}={raw!r} is not valid")
    return text


def _optional(raw: Any, pattern: re.Pattern[str], key: str) -> str | None:
    return None if raw is None else _match(raw, pattern, key)


def _domain(raw: Any, key: str) -> str | None:
    return None if raw is None else _match(str(raw).lower(), _DOMAIN, key)


def _flag(raw: Any, key: str) -> bool:
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"context {key}={raw!r} is not true or false")


def _number(raw: Any, default: int, key: str, *, maximum: int, minimum: int = 1) -> int:
    if raw is None:
        return default
    try:
        number = int(str(raw))
    except ValueError:
        raise ConfigError(f"context {key}={raw!r} is not a whole number") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"context {key}={number} is outside {minimum}..{maximum}")
    return number


def _list(raw: Any, pattern: re.Pattern[str], key: str) -> tuple[str, ...]:
    """A comma-separated context value: each entry matched, duplicates dropped, order kept."""
    if raw is None:
        return ()
    entries = [_match(part, pattern, key) for part in str(raw).split(",") if part.strip()]
    return tuple(dict.fromkeys(entries))


def _networks(raw: Any) -> tuple[str, ...]:
    """``wafAllowList``: CIDRs (IPv4 or IPv6), normalised as WAF's IP sets store them."""
    if raw is None:
        return ()
    networks: list[str] = []
    for part in str(raw).split(","):
        if not part.strip():
            continue
        try:
            network = ipaddress.ip_network(part.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"context wafAllowList entry {part.strip()!r} is not a CIDR"
            ) from None
        networks.append(network.with_prefixlen)
    return tuple(dict.fromkeys(networks))


def _billing(raw: Any) -> BillingMode:
    if raw is None or raw == "on-demand":
        return "on-demand"
    if raw == "provisioned":
        return "provisioned"
    raise ConfigError(f"context dynamoBilling={raw!r} is not on-demand or provisioned")


def _mail_from(raw: Any) -> str | None:
    if raw is None:
        return None
    text = str(raw).strip()
    if not _EMAIL.match(parseaddr(text)[1]) or not text.isascii() or "\n" in text:
        raise ConfigError(f"context mailFrom={raw!r} is not an address (Name <a@example.com>)")
    return text


def _site_url(raw: Any) -> str | None:
    if raw is None:
        return None
    text = str(raw).strip().removesuffix("/")
    if not re.match(r"^https://[a-z0-9.-]+(:\d+)?$", text.lower()):
        raise ConfigError(f"context siteUrl={raw!r} is not an https origin")
    return text
