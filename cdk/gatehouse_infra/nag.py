"""cdk-nag acknowledgements: every one names the rule and says why it does not apply."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(scope: IConstruct, reasons: dict[str, str]) -> None:
    cdk.Validations.of(scope).acknowledge(
        *(
            cdk.Acknowledgment(id=f"AwsSolutions-{rule}", reason=reason)
            for rule, reason in reasons.items()
        )
    )


def finding(scope: IConstruct, value: str) -> str:
    """How cdk-nag names ``value`` (an ARN with tokens) in a finding: ``<AWS::AccountId>``,
    ``<Resource.Arn>``."""

    def render(part: Any) -> str:
        if isinstance(part, str):
            return part
        if "Ref" in part:
            return f"<{part['Ref']}>"
        if "Fn::ImportValue" in part:  # another stack's export, by its name
            return render(part["Fn::ImportValue"])
        if "Fn::GetAtt" in part:
            return f"<{'.'.join(part['Fn::GetAtt'])}>"
        if "Fn::Join" in part:
            separator, parts = part["Fn::Join"]
            return str(separator).join(render(inner) for inner in parts)
        raise ValueError(f"no cdk-nag rendering for {part}")

    return render(cdk.Stack.of(scope).resolve(value))
