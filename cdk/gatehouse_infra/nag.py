"""cdk-nag acknowledgements: every one names the rule and says why it does not apply."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(scope: IConstruct, reasons: dict[str, str]) -> None:
    cdk.Validations.of(scope).acknowledge(
        *(
            cdk.Acknowledgment(id=f"AwsSolutions-{rule}", reason=reason)
            for rule, reason in reasons.items()
        )
    )
