"""The edge unit (certificate region, us-east-1): what CloudFront needs from that region.

The seed's DNS stack: the site's DNS-validated certificate (in the hosted zone, imported from its
attributes, never looked up) and, when ``enableWaf`` is set, a WAF web ACL for CloudFront.
"""

from __future__ import annotations

from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

MANAGED_RULE_GROUPS = (
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
)
# Item bodies may be up to 64 KiB; the common rule set blocks bodies over 8 KiB by default.
COUNT_ONLY_RULES = {"AWSManagedRulesCommonRuleSet": ("SizeRestrictions_BODY",)}


class Edge(Construct):
    """The site's certificate when it has a domain; the web ACL with ``enable_waf``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        prefix: str,
        domain_name: str | None,
        zone: route53.IHostedZone | None,
        enable_waf: bool,
        waf_auth_rate_limit: int,
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
        if enable_waf:
            self.web_acl_arn = self._web_acl(prefix, waf_auth_rate_limit).attr_arn

    def _web_acl(self, prefix: str, auth_rate_limit: int) -> wafv2.CfnWebACL:
        def visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
            )

        rules = [
            wafv2.CfnWebACL.RuleProperty(
                name="auth-rate-limit",
                priority=0,
                action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                        aggregate_key_type="IP",
                        limit=auth_rate_limit,
                        evaluation_window_sec=300,
                        scope_down_statement=wafv2.CfnWebACL.StatementProperty(
                            byte_match_statement=wafv2.CfnWebACL.ByteMatchStatementProperty(
                                field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(uri_path={}),
                                positional_constraint="STARTS_WITH",
                                search_string="/api/auth/",
                                text_transformations=[
                                    wafv2.CfnWebACL.TextTransformationProperty(
                                        priority=0, type="LOWERCASE"
                                    )
                                ],
                            )
                        ),
                    )
                ),
                visibility_config=visibility("auth-rate-limit"),
            )
        ]
        for priority, group in enumerate(MANAGED_RULE_GROUPS, start=1):
            rules.append(
                wafv2.CfnWebACL.RuleProperty(
                    name=group,
                    priority=priority,
                    override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                            vendor_name="AWS",
                            name=group,
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
                    visibility_config=visibility(group),
                )
            )
        return wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=f"{prefix}-edge",
            scope="CLOUDFRONT",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=visibility(f"{prefix}-edge"),
            rules=rules,
        )
