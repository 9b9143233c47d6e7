"""The edge unit (certificate region, us-east-1): what CloudFront needs from that region.

The seed's DNS stack: the site's DNS-validated certificate (in the hosted zone, imported from its
attributes, never looked up) and, when ``enableWaf`` is set, a WAF web ACL for CloudFront.

Also the web ACL's rules themselves (``web_acl``), and ``ApiFirewall``, the regional web ACL on
the REST API's stage: it lets through only what carries CloudFront's edge key and, with
``customApiDomain``, what meets the same rules on ``api.<domain>``, whose machine clients never
pass through CloudFront (cdk/README.md, "WAF").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from ipaddress import ip_network

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct, IDependable

from chalicelib.settings import EDGE_HEADER
from gatehouse_infra.gateway import _after_stage
from gatehouse_infra.runtime import STAGE

MANAGED_RULE_GROUPS = (
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
)
BOT_CONTROL = "AWSManagedRulesBotControlRuleSet"
BOT_CONTROL_LEVEL = "COMMON"
# Item bodies may be up to 64 KiB; the common rule set blocks bodies over 8 KiB by default.
COUNT_ONLY_RULES = {"AWSManagedRulesCommonRuleSet": ("SizeRestrictions_BODY",)}
# WAF's rate-based rules count over a window of 1, 2, 5 or 10 minutes; the limits are per 5.
RATE_WINDOW_SECONDS = 300
# The routes only the allow-list may reach, below the stage's path ("/api" through CloudFront,
# nothing on api.<domain>, whose base path mapping is the stage): GET /users, /users/{name},
# /users/{name}/events, and /admin/items. Prefixes: a longer path that is no route costs a block
# of a 404.
ADMIN_PATHS = ("/users", "/admin")
AUTH_PATH = "/auth/"
# How API Gateway reads a path before it routes it, so a spelling WAF would not match cannot
# reach a route: percent-decoded once (as API Gateway decodes it), then "//", "/./" and "/../"
# collapsed, then lower case (a superset: API Gateway's routes are case-sensitive, so
# /API/Users reaches no route and blocking it costs nothing).
PATH_TRANSFORMS = ("URL_DECODE", "NORMALIZE_PATH", "LOWERCASE")
# Fixed priorities, with gaps: a rule keeps its number whichever switches are on, so turning one
# on or off never renumbers (and so never replaces) the others. Cheap, decisive rules first:
# what they block is neither counted by the rate rules nor charged by Bot Control.
PRIORITIES = {
    "edge-key": 0,  # ApiFirewall only: requests CloudFront forwards were inspected there
    "geo-block": 10,
    "admin-allow-list": 20,
    "rate-limit": 30,
    "auth-rate-limit": 40,
    "AWSManagedRulesCommonRuleSet": 50,
    "AWSManagedRulesKnownBadInputsRuleSet": 60,
    "AWSManagedRulesAmazonIpReputationList": 70,
    BOT_CONTROL: 80,  # last: it is charged per request it inspects
    "api-domain": 90,  # ApiFirewall with customApiDomain: what met the rules above, on api.<domain>
}

# What our own rules answer, a {"message"} body like the API's errors, so the site shows why.
# (WAF would prefix any custom header with x-amzn-waf-: none is set.)
TOO_MANY = "Too many requests from your address: try again in a few minutes"
BLOCKED = {
    "geo-block": (403, "Forbidden: the service is not offered in your country"),
    "admin-allow-list": (403, "Forbidden: the admin routes answer listed addresses only"),
    "rate-limit": (429, TOO_MANY),
    "auth-rate-limit": (429, TOO_MANY),
    # ApiFirewall's default action: neither CloudFront's (edge key) nor for api.<domain>. The
    # app's own answer to such a request (chalicelib.web.http.EDGE_REQUIRED_MESSAGE).
    "edge-required": (403, "Forbidden: call the API through the site or its API domain"),
}


@dataclass(frozen=True)
class WafSettings:
    """The web ACL's switches, from the deploy config."""

    rate_limit: int
    auth_rate_limit: int
    geo_block: tuple[str, ...] = ()
    allow_list: tuple[str, ...] = ()
    bot_control: bool = False

    def allowed(self, version: int) -> list[str]:
        return [cidr for cidr in self.allow_list if ip_network(cidr).version == version]


class Edge(Construct):
    """The site's certificate when it has a domain; the web ACL when ``waf`` is given."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        domain_name: str | None,
        zone: route53.IHostedZone | None,
        waf: WafSettings | None,
    ) -> None:
        super().__init__(scope, id)
        self.site_certificate: acm.ICertificate | None = None
        self.web_acl_arn: str | None = None
        if domain_name is not None and zone is not None:
            self.site_certificate = acm.Certificate(
                self,
                "SiteCertificate",
                domain_name=domain_name,
                validation=acm.CertificateValidation.from_dns(zone),
            )
        if waf is not None:
            acl = web_acl(
                self, name=f"{prefix}-edge", kind="CLOUDFRONT", path_prefix=f"/{STAGE}", waf=waf
            )
            self.web_acl_arn = acl.attr_arn


class ApiFirewall(Construct):
    """The regional web ACL on the REST API's stage, whenever WAF is on: API Gateway evaluates
    it before its throttle and the authorizer, so a caller that skips CloudFront is refused
    there, not after using up the stage's shared rate.

    First rule (``edge-key``): a request carrying CloudFront's edge key (``edge_key_reference``,
    resolved by CloudFormation at deploy) came through CloudFront and its web ACL: let through,
    never sampled (a sample would show the key). With ``api_domain``, requests for that host
    meet the same rules as at the edge (paths without the stage prefix; no Bot Control: machine
    clients are bots), then are let through (``api-domain``). Everything else is blocked
    (default action) with the app's own ``EDGE_REQUIRED`` answer. The Host header is the
    caller's to choose: forging ``api.<domain>`` only earns the rules; the app's check of
    ``requestContext.domainName`` stays the real one.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        rest_api_id: str,
        edge_key: IDependable,
        edge_key_reference: str,
        waf: WafSettings,
        api_domain: str | None = None,
        machine_rate_limit: int | None = None,
    ) -> None:
        super().__init__(scope, id)
        # Unsampled: a sample would show the key (and, with apiKeys, the site's API key).
        edge_key_rule = _allow_header(
            "edge-key", EDGE_HEADER, edge_key_reference, transform="NONE", sampled=False
        )
        if api_domain is None:
            # Only CloudFront's requests are let through: the rules would only ever answer,
            # 429 instead of 403, requests that are blocked anyway.
            acl = _acl(
                self,
                name=f"{prefix}-api",
                kind="REGIONAL",
                rules=[edge_key_rule],
                default="edge-required",
            )
        else:
            # With apiKeys a machine key may send machineRateLimit a second: the per-address
            # rate there allows at least that, or WAF would cut the plan short.
            rate_limit = max(waf.rate_limit, (machine_rate_limit or 0) * RATE_WINDOW_SECONDS)
            # No Bot Control: api.<domain>'s callers are machine clients.
            regional = replace(waf, rate_limit=rate_limit, bot_control=False)
            api_domain_rule = _allow_header(
                "api-domain", "host", api_domain.lower(), transform="LOWERCASE"
            )
            acl = web_acl(
                self,
                name=f"{prefix}-api",
                kind="REGIONAL",
                path_prefix="",
                waf=regional,
                first=[edge_key_rule],
                last=[api_domain_rule],
                default="edge-required",
            )
        # The reference names the secret, so CloudFormation sees no dependency of its own.
        acl.node.add_dependency(edge_key)
        stack = cdk.Stack.of(self)
        association = wafv2.CfnWebACLAssociation(
            self,
            "Association",
            resource_arn=(
                f"arn:{stack.partition}:apigateway:{stack.region}::/restapis/"
                f"{rest_api_id}/stages/{STAGE}"
            ),
            web_acl_arn=acl.attr_arn,
        )
        _after_stage(association)
        self.web_acl_arn = acl.attr_arn


def web_acl(
    scope: Construct,
    *,
    name: str,
    kind: str,
    path_prefix: str,
    waf: WafSettings,
    first: list[wafv2.CfnWebACL.RuleProperty] | None = None,
    last: list[wafv2.CfnWebACL.RuleProperty] | None = None,
    default: str | None = None,
) -> wafv2.CfnWebACL:
    """A web ACL in ``scope`` (``kind``: CLOUDFRONT or REGIONAL): geo block, admin allow-list,
    the site-wide and auth rate limits, AWS's managed rule groups and, when asked, Bot Control;
    ``first`` rules go before all of them, ``last`` after. ``path_prefix``: the stage's path in
    the URIs it sees. ``default``: the ``BLOCKED`` answer of a web ACL that blocks what no rule
    allows; without it, what no rule blocks is allowed."""
    rules = list(first or [])
    if waf.geo_block:
        rules.append(
            _rule(
                "geo-block",
                wafv2.CfnWebACL.StatementProperty(
                    geo_match_statement=wafv2.CfnWebACL.GeoMatchStatementProperty(
                        country_codes=list(waf.geo_block)
                    )
                ),
            )
        )
    if waf.allow_list:
        rules.append(_allow_list(scope, name, kind, waf, path_prefix))
    rules.append(_rate_rule("rate-limit", waf.rate_limit))
    rules.append(
        _rate_rule("auth-rate-limit", waf.auth_rate_limit, _path(f"{path_prefix}{AUTH_PATH}"))
    )
    for group in MANAGED_RULE_GROUPS:
        rules.append(_managed(group))
    if waf.bot_control:
        bot_control = wafv2.CfnWebACL.AWSManagedRulesBotControlRuleSetProperty(
            inspection_level=BOT_CONTROL_LEVEL
        )
        rules.append(
            _managed(
                BOT_CONTROL,
                configs=[
                    wafv2.CfnWebACL.ManagedRuleGroupConfigProperty(
                        aws_managed_rules_bot_control_rule_set=bot_control
                    )
                ],
            )
        )
    rules.extend(last or [])
    return _acl(scope, name=name, kind=kind, rules=rules, default=default)


def _acl(
    scope: Construct,
    *,
    name: str,
    kind: str,
    rules: list[wafv2.CfnWebACL.RuleProperty],
    default: str | None,
) -> wafv2.CfnWebACL:
    """The web ACL itself, with a ``{"message"}`` body for each rule that blocks and for a
    blocking default action (``default``, a ``BLOCKED`` key)."""
    answered = {rule.name for rule in rules} | {default}
    return wafv2.CfnWebACL(
        scope,
        "WebAcl",
        name=name,
        scope=kind,
        default_action=(
            wafv2.CfnWebACL.DefaultActionProperty(allow={})
            if default is None
            else wafv2.CfnWebACL.DefaultActionProperty(block=_block(default))
        ),
        visibility_config=_visibility(name),
        rules=rules,
        custom_response_bodies={
            rule: wafv2.CfnWebACL.CustomResponseBodyProperty(
                content=json.dumps({"message": message}), content_type="APPLICATION_JSON"
            )
            for rule, (_, message) in BLOCKED.items()
            if rule in answered
        },
    )


def _allow_list(
    scope: Construct, name: str, kind: str, waf: WafSettings, path_prefix: str
) -> wafv2.CfnWebACL.RuleProperty:
    """Block the admin routes for every address outside the allow-list. WAF's IP sets hold one
    address family each: one set per family the list uses."""
    sets = [
        wafv2.CfnIPSet(
            scope,
            f"AdminAllowList{family}",
            name=f"{name}-admin-{family.lower()}",
            description="Addresses that may reach the admin routes, from context wafAllowList",
            scope=kind,
            ip_address_version=family,
            addresses=addresses,
        )
        for family, addresses in (("IPV4", waf.allowed(4)), ("IPV6", waf.allowed(6)))
        if addresses
    ]
    members = [
        wafv2.CfnWebACL.StatementProperty(
            ip_set_reference_statement=wafv2.CfnWebACL.IPSetReferenceStatementProperty(
                arn=ip_set.attr_arn
            )
        )
        for ip_set in sets
    ]
    allowed = (
        members[0]
        if len(members) == 1
        else wafv2.CfnWebACL.StatementProperty(
            or_statement=wafv2.CfnWebACL.OrStatementProperty(statements=members)
        )
    )
    admin = wafv2.CfnWebACL.StatementProperty(
        or_statement=wafv2.CfnWebACL.OrStatementProperty(
            statements=[_path(f"{path_prefix}{path}") for path in ADMIN_PATHS]
        )
    )
    outside = wafv2.CfnWebACL.StatementProperty(
        not_statement=wafv2.CfnWebACL.NotStatementProperty(statement=allowed)
    )
    return _rule(
        "admin-allow-list",
        wafv2.CfnWebACL.StatementProperty(
            and_statement=wafv2.CfnWebACL.AndStatementProperty(statements=[admin, outside])
        ),
    )


def _allow_header(
    name: str, header: str, value: str, *, transform: str, sampled: bool = True
) -> wafv2.CfnWebACL.RuleProperty:
    """Allows a request whose ``header`` is exactly ``value`` (after ``transform``)."""
    return wafv2.CfnWebACL.RuleProperty(
        name=name,
        priority=PRIORITIES[name],
        action=wafv2.CfnWebACL.RuleActionProperty(allow={}),
        statement=wafv2.CfnWebACL.StatementProperty(
            byte_match_statement=wafv2.CfnWebACL.ByteMatchStatementProperty(
                field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(single_header={"Name": header}),
                positional_constraint="EXACTLY",
                search_string=value,
                text_transformations=[
                    wafv2.CfnWebACL.TextTransformationProperty(priority=0, type=transform)
                ],
            )
        ),
        visibility_config=_visibility(name, sampled=sampled),
    )


def _visibility(name: str, *, sampled: bool = True) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=sampled
    )


def _block(name: str) -> wafv2.CfnWebACL.BlockActionProperty:
    """Block, answered with ``name``'s ``BLOCKED`` status and body."""
    status, _ = BLOCKED[name]
    return wafv2.CfnWebACL.BlockActionProperty(
        custom_response=wafv2.CfnWebACL.CustomResponseProperty(
            response_code=status, custom_response_body_key=name
        )
    )


def _rule(name: str, statement: wafv2.CfnWebACL.StatementProperty) -> wafv2.CfnWebACL.RuleProperty:
    """A blocking rule, answered with its ``BLOCKED`` status and body."""
    return wafv2.CfnWebACL.RuleProperty(
        name=name,
        priority=PRIORITIES[name],
        action=wafv2.CfnWebACL.RuleActionProperty(block=_block(name)),
        statement=statement,
        visibility_config=_visibility(name),
    )


def _path(prefix: str) -> wafv2.CfnWebACL.StatementProperty:
    """The URI path, read as API Gateway routes it (``PATH_TRANSFORMS``), starts with
    ``prefix``."""
    return wafv2.CfnWebACL.StatementProperty(
        byte_match_statement=wafv2.CfnWebACL.ByteMatchStatementProperty(
            field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(uri_path={}),
            positional_constraint="STARTS_WITH",
            search_string=prefix.lower(),
            text_transformations=[
                wafv2.CfnWebACL.TextTransformationProperty(priority=index, type=transform)
                for index, transform in enumerate(PATH_TRANSFORMS)
            ],
        )
    )


def _rate_rule(
    name: str, limit: int, scope_down: wafv2.CfnWebACL.StatementProperty | None = None
) -> wafv2.CfnWebACL.RuleProperty:
    """Block an address over ``limit`` requests (in scope) per 5 minutes."""
    return _rule(
        name,
        wafv2.CfnWebACL.StatementProperty(
            rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                aggregate_key_type="IP",
                limit=limit,
                evaluation_window_sec=RATE_WINDOW_SECONDS,
                scope_down_statement=scope_down,
            )
        ),
    )


def _managed(
    group: str, configs: list[wafv2.CfnWebACL.ManagedRuleGroupConfigProperty] | None = None
) -> wafv2.CfnWebACL.RuleProperty:
    return wafv2.CfnWebACL.RuleProperty(
        name=group,
        priority=PRIORITIES[group],
        override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
        statement=wafv2.CfnWebACL.StatementProperty(
            managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                vendor_name="AWS",
                name=group,
                managed_rule_group_configs=configs,
                rule_action_overrides=[
                    wafv2.CfnWebACL.RuleActionOverrideProperty(
                        name=rule,
                        action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}),
                    )
                    for rule in COUNT_ONLY_RULES.get(group, ())
                ]
                or None,
            )
        ),
        visibility_config=_visibility(group),
    )
