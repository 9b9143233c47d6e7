"""The mail unit: the SES identity the API sends from and the configuration set its mail names.

With a domain, the identity is the domain, signed with Easy DKIM, whose three CNAME records go
into the hosted zone (SES verifies the domain once they resolve). Without one, it is the one
sender address, which SES verifies by mailing it a link to click.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_ses as ses
from constructs import Construct

DKIM_TTL_SECONDS = 1800


class Mail(Construct):
    """An SES identity (domain with DKIM, or one address) and a configuration set."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        configuration_set_name: str,
        sender_address: str,
        domain_name: str | None,
        zone: route53.IHostedZone | None,
    ) -> None:
        super().__init__(scope, id)
        self.configuration_set = ses.ConfigurationSet(
            self,
            "ConfigurationSet",
            configuration_set_name=configuration_set_name,
            reputation_metrics=True,
            # Stop mailing addresses that bounced or complained: it protects the sender's
            # reputation, which SES watches (and can pause sending over).
            suppression_reasons=ses.SuppressionReasons.BOUNCES_AND_COMPLAINTS,
            tls_policy=ses.ConfigurationSetTlsPolicy.REQUIRE,
        )
        self.identity_name = domain_name or sender_address
        self.identity = ses.EmailIdentity(
            self,
            "Identity",
            identity=(
                ses.Identity.domain(domain_name)
                if domain_name
                else ses.Identity.email(sender_address)
            ),
            configuration_set=self.configuration_set,
        )
        if domain_name is not None and zone is not None:
            # A record set of its own: route53.CnameRecord would append the zone's name to
            # the token's name, which SES already gives in full (<token>._domainkey.<domain>).
            for index, record in enumerate(self.identity.dkim_records, start=1):
                route53.CfnRecordSet(
                    self,
                    f"Dkim{index}",
                    hosted_zone_id=zone.hosted_zone_id,
                    name=record.name,
                    type="CNAME",
                    ttl=str(DKIM_TTL_SECONDS),
                    resource_records=[record.value],
                )
        stack = cdk.Stack.of(self)
        # What SendEmail is checked against: the identity and the configuration set named.
        self.send_arns = (
            stack.format_arn(service="ses", resource="identity", resource_name=self.identity_name),
            stack.format_arn(
                service="ses", resource="configuration-set", resource_name=configuration_set_name
            ),
        )
