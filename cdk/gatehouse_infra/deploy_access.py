"""GitHub Actions' way into the account: an OIDC provider and a deploy role (cdk/README.md, CI/CD).

Built only with ``-c githubRepository=owner/name``, so the default synthesis is unchanged, and
deployed once per account by hand; the workflows then hold no AWS keys. The role trusts tokens of
that repository only, from its deploy branch or its GitHub environments, and may do one thing:
assume the CDK bootstrap roles that deploy stacks and publish their files. Everything a deploy
changes goes through those roles, that is through CloudFormation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct, Node

from gatehouse_infra.config import ConfigError, _match
from gatehouse_infra.nag import acknowledge, finding
from gatehouse_infra.runtime import PROJECT

GITHUB_ISSUER = "token.actions.githubusercontent.com"
AUDIENCE = "sts.amazonaws.com"
STACK_NAME = f"{PROJECT}-deploy-access"
ROLE_NAME = f"{PROJECT}-github-deploy"
# The bootstrap roles a `cdk deploy` of an assembly uses: the deploy role (CloudFormation, the
# bootstrap version) and the file-publishing role (Lambda zips, the site). Not the lookup role
# (ReadOnlyAccess: it could read the table; synthesis needs no look-ups) nor the image-publishing
# role (no Docker assets).
BOOTSTRAP_ROLES = ("deploy-role", "file-publishing-role")
_REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
_BRANCH = re.compile(r"^(?!/)(?!.*\.\.)[A-Za-z0-9._/-]{1,200}(?<!/)$")
_ENVIRONMENT = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_PROVIDER_ARN = re.compile(
    rf"^arn:aws[a-z-]*:iam::\d{{12}}:oidc-provider/{re.escape(GITHUB_ISSUER)}$"
)


@dataclass(frozen=True)
class AccessConfig:
    repository: str
    branch: str = "main"
    environments: tuple[str, ...] = ("staging", "production")
    provider_arn: str | None = None
    qualifier: str = cdk.DefaultStackSynthesizer.DEFAULT_QUALIFIER
    region: str = "eu-west-2"
    owner: str = "platform"

    @classmethod
    def from_context(cls, node: Node) -> AccessConfig | None:
        """None unless ``githubRepository`` is set: the switch that adds the stack."""

        def value(key: str) -> Any:
            found = node.try_get_context(key)
            return None if found in (None, "") else found

        repository = value("githubRepository")
        if repository is None:
            return None
        environments = tuple(
            _match(name, _ENVIRONMENT, "githubEnvironments")
            for name in str(value("githubEnvironments") or ",".join(cls.environments)).split(",")
            if name.strip()
        )
        if not environments:
            raise ConfigError("context githubEnvironments names no environment")
        provider = value("githubOidcProviderArn")
        return cls(
            repository=_match(repository, _REPOSITORY, "githubRepository"),
            branch=_match(value("githubBranch") or cls.branch, _BRANCH, "githubBranch"),
            environments=environments,
            provider_arn=None
            if provider is None
            else _match(provider, _PROVIDER_ARN, "githubOidcProviderArn"),
            qualifier=str(value("@aws-cdk/core:bootstrapQualifier") or cls.qualifier),
            region=str(value("primaryRegion") or cls.region),
            owner=str(value("owner") or cls.owner),
        )

    @property
    def subjects(self) -> list[str]:
        """The ``sub`` claims GitHub puts in the tokens of the jobs that may deploy: a job of the
        deploy branch, and a job of one of the environments (whose rules say who may run it)."""
        repo = f"repo:{self.repository}"
        return [f"{repo}:ref:refs/heads/{self.branch}"] + [
            f"{repo}:environment:{name}" for name in self.environments
        ]


class DeployAccess(Construct):
    def __init__(self, scope: Construct, id: str, *, config: AccessConfig) -> None:
        super().__init__(scope, id)
        if config.provider_arn is None:
            # GitHub's certificate chain is trusted by IAM itself: no thumbprint to pin.
            provider: iam.IOidcProvider = iam.OidcProviderNative(
                self, "GitHub", url=f"https://{GITHUB_ISSUER}", client_ids=[AUDIENCE]
            )
        else:
            # An account has at most one provider per issuer: reuse the one already there.
            provider = iam.OidcProviderNative.from_oidc_provider_arn(
                self, "GitHub", config.provider_arn
            )
        self.provider_arn = provider.oidc_provider_arn
        self.role = iam.Role(
            self,
            "Role",
            role_name=ROLE_NAME,
            description=f"GitHub Actions of {config.repository}: assumes the CDK deploy roles",
            max_session_duration=cdk.Duration.hours(1),
            assumed_by=iam.FederatedPrincipal(
                self.provider_arn,
                conditions={
                    "StringEquals": {
                        f"{GITHUB_ISSUER}:aud": AUDIENCE,
                        f"{GITHUB_ISSUER}:sub": config.subjects,
                    }
                },
                assume_role_action="sts:AssumeRoleWithWebIdentity",
            ),
        )
        stack = cdk.Stack.of(self)
        self.bootstrap_role_arns = [
            stack.format_arn(
                service="iam",
                region="",
                resource="role",
                resource_name=f"cdk-{config.qualifier}-{role}-{stack.account}-*",
            )
            for role in BOOTSTRAP_ROLES
        ]
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="AssumeCdkBootstrapRoles",
                actions=["sts:AssumeRole"],
                resources=self.bootstrap_role_arns,
            )
        )
        acknowledge(
            self.role,
            {
                f"IAM5[Resource::{finding(self, arn)}]": "The bootstrap roles' names end in "
                "their region: one per region a stack is deployed to (primary, certificate, "
                "replicas); only sts:AssumeRole is granted"
                for arn in self.bootstrap_role_arns
            },
        )


class DeployAccessStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, config: AccessConfig, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        self.access = DeployAccess(self, "Default", config=config)
        cdk.CfnOutput(self, "DeployRoleArn", value=self.access.role.role_arn)
        cdk.CfnOutput(self, "OidcProviderArn", value=self.access.provider_arn)
        cdk.Tags.of(self).add("Project", PROJECT)
        cdk.Tags.of(self).add("Owner", config.owner)
        # Shared by every environment the workflows deploy into this account.
        cdk.Tags.of(self).add("Environment", "shared")


def add_deploy_access(app: cdk.App) -> DeployAccessStack | None:
    """The ``gatehouse-deploy-access`` stack, when ``githubRepository`` is set."""
    config = AccessConfig.from_context(app.node)
    if config is None:
        return None
    env = cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=config.region)
    return DeployAccessStack(
        app,
        STACK_NAME,
        config=config,
        env=env,
        description=f"GitHub OIDC deploy access for {config.repository}",
    )
